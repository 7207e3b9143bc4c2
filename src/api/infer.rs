//! `POST /v2/models/{model}/infer`: a plain forward pass, Open Inference Protocol JSON or its
//! binary tensor extension.

use axum::extract::{Path, State};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::error::ErrorBody;
use super::models::{model_ref, INPUT_NAME, OUTPUT_NAME};
use super::oip::{decode_tensors, wants_binary, OipBody, OipOutputs};
use super::{validate, ApiError, AppState};
use crate::engine::{Operation, Work, WorkInputs, WorkResult};
use crate::tensor::OipTensor;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct InferRequest {
    #[serde(default)]
    pub id: Option<String>,
    /// `binary_data_output: true` asks for every output as binary data.
    #[serde(default)]
    pub parameters: Option<Map<String, Value>>,
    pub inputs: Vec<OipTensor>,
    #[serde(default)]
    pub outputs: Option<Vec<RequestedOutput>>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct RequestedOutput {
    pub name: String,
    #[serde(default)]
    pub parameters: Option<Map<String, Value>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct InferResponse {
    pub model_name: String,
    pub model_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub outputs: Vec<OipTensor>,
}

#[utoipa::path(post, path = "/v2/models/{model}/infer", tag = "inference", params(("model" = String, Path, description = "Model name")), request_body(content = InferRequest, description = "OIP JSON; with the binary tensor extension, the JSON is followed by raw tensor bytes and Inference-Header-Content-Length gives its length"), responses((status = 200, description = "The model's output", body = InferResponse), (status = 400, description = "A field breaks a rule; the message names the field, the rule and the value", body = ErrorBody, example = json!({"error": "inputs[0].shape: must be [batch, 1, 8, 8], got [1, 1, 8]", "error_type": "invalid_request"})), (status = 404, description = "No such model, data set or evaluation", body = ErrorBody, example = json!({"error": "model \"nope\" is not in the repository", "error_type": "not_found"})), (status = 413, description = "The body is larger than the server accepts", body = ErrorBody), (status = 422, description = "The model failed or is unavailable", body = ErrorBody), (status = 503, description = "The queue is full; retry after the Retry-After header's seconds", body = ErrorBody, headers(("Retry-After" = u32, description = "Seconds to wait"))), (status = 504, description = "The batch ran past the worker deadline", body = ErrorBody), (status = 500, description = "A worker died twice on this request, or another internal failure", body = ErrorBody)))]
pub async fn infer(
    State(state): State<AppState>,
    Path(name): Path<String>,
    OipBody {
        header: request,
        binary,
    }: OipBody<InferRequest>,
) -> Result<Response, ApiError> {
    let entry = state.servable(&name)?;
    if request.inputs.len() != 1 {
        return Err(ApiError::Invalid(format!(
            "inputs: the model takes exactly one input tensor ({INPUT_NAME:?}), got {}",
            request.inputs.len()
        )));
    }
    let mut binary_output = wants_binary(request.parameters.as_ref(), None);
    for (i, output) in request.outputs.iter().flatten().enumerate() {
        if output.name != OUTPUT_NAME {
            return Err(ApiError::Invalid(format!(
                "outputs[{i}].name: the model has one output {OUTPUT_NAME:?}, got {:?}",
                output.name
            )));
        }
        binary_output = wants_binary(request.parameters.as_ref(), output.parameters.as_ref());
    }
    let decoded = decode_tensors(&request.inputs, &binary, &state.config.limits)?.remove(0);
    let datatype = &request.inputs[0].datatype;
    let max = state.config.max_batch_size;
    let input = validate::input(decoded, datatype, "inputs[0]", &entry.card, max, false)?;

    let started = std::time::Instant::now();
    let batch = input.shape[0];
    let work = Work {
        model: model_ref(&entry),
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

    let mut outputs = OipOutputs::default();
    outputs.push(OUTPUT_NAME, &output, binary_output);
    let body = InferResponse {
        model_name: name,
        model_version: "1".to_owned(),
        id: request.id,
        outputs: std::mem::take(&mut outputs.tensors),
    };
    Ok(outputs.respond(&body))
}
