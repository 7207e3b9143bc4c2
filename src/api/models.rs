//! Model metadata and readiness (Open Inference Protocol) and the repository index (Triton's
//! model-repository extension).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::{ApiError, AppState, ModelState};
use crate::model::ModelEntry;
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

fn entry<'a>(state: &'a AppState, name: &str) -> Result<&'a ModelEntry, ApiError> {
    state
        .repository
        .get(name)
        .ok_or_else(|| ApiError::unknown_model(name))
}

/// `GET /v2/models/{model}`: inputs and outputs with their shapes, the model card and sha256.
pub async fn metadata(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let entry = entry(&state, &name)?;
    let card = &entry.card;
    let mut input_shape = vec![-1i64];
    input_shape.extend(&card.input.shape);
    let width = match card.task {
        crate::model::Task::Classification => card.num_classes.unwrap_or(-1),
        crate::model::Task::Binary => 1,
        crate::model::Task::Regression => -1,
    };
    Ok(Json(json!({
        "name": card.name,
        "versions": ["1"],
        "platform": "pytorch_torchscript",
        "inputs": [{ "name": INPUT_NAME, "datatype": "FP32", "shape": input_shape }],
        "outputs": [{ "name": OUTPUT_NAME, "datatype": "FP32", "shape": [-1, width] }],
        "sha256": entry.sha256,
        "card": card,
    })))
}

/// `GET /v2/models/{model}/ready`: 200 when the model is loaded, 503 while loading or broken.
pub async fn ready(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    entry(&state, &name)?;
    let model_state = state.model_state(&name).unwrap_or(ModelState::Loading);
    let ready = model_state == ModelState::Ready && state.pool.ready_workers() > 0;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body = json!({ "name": name, "ready": ready });
    if let ModelState::Unavailable(reason) = model_state {
        body["reason"] = json!(reason);
    }
    Ok((status, Json(body)))
}

/// `POST /v2/repository/index`: every model with its state.
pub async fn repository_index(State(state): State<AppState>) -> Json<Value> {
    let models: Vec<Value> = state
        .repository
        .iter()
        .map(|entry| {
            let (label, reason) = match state.model_state(&entry.card.name) {
                Some(ModelState::Ready) => ("READY", None),
                Some(ModelState::Unavailable(reason)) => ("UNAVAILABLE", Some(reason)),
                _ => ("LOADING", None),
            };
            let mut row = json!({ "name": entry.card.name, "version": "1", "state": label });
            if let Some(reason) = reason {
                row["reason"] = json!(reason);
            }
            row
        })
        .collect();
    Json(Value::Array(models))
}
