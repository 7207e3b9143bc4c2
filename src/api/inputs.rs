//! The clean inputs an evaluation ran on, beside its adversarial examples: what a gallery needs
//! to show a sample, its perturbation and its true label. Read-only.

use axum::extract::{Path, State};
use axum::response::Response;

use super::error::ErrorBody;
use super::evaluations::{download, job};
use super::{ApiError, AppState};
use crate::dataset::Dataset;
use crate::jobs::JobSpec;

/// `GET /v2/evaluations/{id}/inputs.safetensors`: `x`, the clean inputs, and `y`, the labels,
/// one row per sample in the report's order (the rows of `adversarial.safetensors`); `target`
/// too when the request gave target classes.
#[utoipa::path(get, path = "/v2/evaluations/{id}/inputs.safetensors", tag = "evaluations", params(("id" = String, Path, description = "Evaluation id")), responses((status = 200, description = "`x` (clean inputs), `y` (labels) and, when given, `target`, as safetensors, in the report's sample order", body = Vec<u8>, content_type = "application/octet-stream"), (status = 404, description = "No such model, data set or evaluation", body = ErrorBody, example = json!({"error": "evaluation \"nope\" does not exist", "error_type": "not_found"})), (status = 410, description = "The data set or the stored inputs are gone", body = ErrorBody)))]
pub async fn inputs_safetensors(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let record = job(&state, &id).await?;
    let spec: JobSpec = serde_json::from_value(record.spec)
        .map_err(|e| ApiError::Internal(format!("evaluation {id:?}: unreadable job: {e}")))?;

    let (data, targets) = state
        .jobs
        .load_data(&spec.data)
        .await
        .map_err(|e| ApiError::Gone(format!("evaluation {id:?}: its inputs are gone: {e}")))?;

    let mut tensors = vec![("x", &data.x), ("y", &data.y)];
    if let Some(targets) = &targets {
        tensors.push(("target", targets));
    }
    let bytes = Dataset::to_safetensors(&tensors);
    Ok(download(bytes, format!("{id}-inputs.safetensors")))
}
