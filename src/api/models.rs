//! Model metadata and readiness (Open Inference Protocol).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::error::ErrorBody;
use super::{ApiError, AppState, ModelState};
use crate::model::{ModelEntry, Task};
use crate::worker::protocol::ModelRef;

pub const INPUT_NAME: &str = "input";
pub const OUTPUT_NAME: &str = "output";

pub fn model_ref(entry: &ModelEntry) -> ModelRef {
    ModelRef {
        name: entry.card.name.clone(),
        path: entry.path.clone(),
        sha256: entry.sha256.clone(),
        card: entry.card.clone(),
    }
}

/// `GET /v2/models/{model}`: inputs and outputs with their shapes, the model card and sha256.
#[utoipa::path(get, path = "/v2/models/{model}", tag = "models", params(("model" = String, Path, description = "Model name")), responses((status = 200, description = "Inputs, outputs, card and sha256", body = Object), (status = 404, description = "No such model, data set or evaluation", body = ErrorBody, example = json!({"error": "model \"nope\" is not in the repository", "error_type": "not_found"}))))]
pub async fn metadata(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let entry = state
        .catalog
        .get(&name)
        .ok_or_else(|| ApiError::unknown_model(&name))?;
    let card = &entry.card;
    let mut input_shape = vec![-1i64];
    input_shape.extend(&card.input.shape);
    let width = match card.task {
        Task::Classification => card.num_classes.unwrap_or(-1),
        Task::Binary => 1,
        Task::Regression => -1,
    };
    Ok(Json(json!({
        "name": card.name,
        "versions": ["1"],
        "platform": "pytorch_torchscript",
        "inputs": [{ "name": INPUT_NAME, "datatype": "FP32", "shape": input_shape }],
        "outputs": [{ "name": OUTPUT_NAME, "datatype": "FP32", "shape": [-1, width] }],
        "sha256": entry.sha256,
        "origin": state.catalog.origin(&name),
        "card": card,
    })))
}

/// `GET /v2/models/{model}/ready`: 200 when the model is loaded; 400 (the protocol's 4xx for false) while loading or broken.
#[utoipa::path(get, path = "/v2/models/{model}/ready", tag = "models", params(("model" = String, Path, description = "Model name")), responses((status = 200, description = "Loaded and a worker is up", body = Object, example = json!({"name": "digits_cnn", "ready": true})), (status = 400, description = "Loading or unavailable, with the reason (false is a 4xx in the Open Inference Protocol)", body = Object), (status = 404, description = "No such model, data set or evaluation", body = ErrorBody, example = json!({"error": "model \"nope\" is not in the repository", "error_type": "not_found"}))))]
pub async fn ready(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    state
        .catalog
        .get(&name)
        .ok_or_else(|| ApiError::unknown_model(&name))?;
    let model_state = state.model_state(&name).unwrap_or(ModelState::Loading);
    let ready = model_state == ModelState::Ready && state.pool.ready_workers() > 0;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    let mut body = json!({ "name": name, "ready": ready });
    if let ModelState::Unavailable(reason) = model_state {
        body["reason"] = json!(reason);
    }
    Ok((status, Json(body)))
}
