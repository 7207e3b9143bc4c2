//! `POST /v2/models/{model}/infer`: a plain forward pass in Open Inference Protocol JSON.

use axum::extract::{Path, State};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::models::{model_ref, INPUT_NAME, OUTPUT_NAME};
use super::validate;
use super::{ApiError, ApiJson, AppState, ModelState};
use crate::engine::{Operation, Work, WorkInputs, WorkResult};
use crate::model::ModelEntry;
use crate::tensor::{encode_oip, HostTensor, OipTensor};

#[derive(Debug, Deserialize)]
pub struct InferRequest {
    #[serde(default)]
    pub id: Option<String>,
    /// Accepted as the protocol allows; no infer parameter changes behaviour yet.
    #[serde(default)]
    #[allow(dead_code)]
    pub parameters: Option<serde_json::Map<String, serde_json::Value>>,
    pub inputs: Vec<OipTensor>,
    #[serde(default)]
    pub outputs: Option<Vec<RequestedOutput>>,
}

#[derive(Debug, Deserialize)]
pub struct RequestedOutput {
    pub name: String,
}

#[derive(Debug, Serialize)]
pub struct InferResponse {
    pub model_name: String,
    pub model_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub outputs: Vec<OipTensor>,
}

pub async fn infer(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiJson(request): ApiJson<InferRequest>,
) -> Result<Json<InferResponse>, ApiError> {
    let entry = state
        .repository
        .get(&name)
        .ok_or_else(|| ApiError::unknown_model(&name))?;
    if let Some(ModelState::Unavailable(reason)) = state.model_state(&name) {
        return Err(ApiError::Model(format!(
            "model {name:?} is unavailable: {reason}"
        )));
    }
    let input = validate(&request, entry, state.config.max_batch_size)?;

    let started = std::time::Instant::now();
    let batch = input.shape[0];
    let work = Work {
        model: model_ref(entry),
        operation: Operation::Infer,
        inputs: WorkInputs {
            x: input,
            labels: None,
            targets: None,
            sample_ids: vec![],
        },
    };
    let WorkResult::Output(output) = state.pool.submit(work).await? else {
        return Err(ApiError::Internal(
            "the worker answered an infer with no output".to_owned(),
        ));
    };
    super::record_on_span(&name, batch, started.elapsed());

    Ok(Json(InferResponse {
        model_name: name,
        model_version: "1".to_owned(),
        id: request.id,
        outputs: vec![encode_oip(OUTPUT_NAME, &output)],
    }))
}

/// Checks the request against the model card before any of it reaches a worker.
fn validate(
    request: &InferRequest,
    entry: &ModelEntry,
    max_batch_size: usize,
) -> Result<HostTensor, ApiError> {
    if request.inputs.len() != 1 {
        return Err(ApiError::Invalid(format!(
            "inputs: the model takes exactly one input tensor ({INPUT_NAME:?}), got {}",
            request.inputs.len()
        )));
    }
    for (i, output) in request.outputs.iter().flatten().enumerate() {
        if output.name != OUTPUT_NAME {
            return Err(ApiError::Invalid(format!(
                "outputs[{i}].name: the model has one output {OUTPUT_NAME:?}, got {:?}",
                output.name
            )));
        }
    }
    validate::input(
        &request.inputs[0],
        "inputs[0]",
        &entry.card,
        max_batch_size,
        false,
    )
}
