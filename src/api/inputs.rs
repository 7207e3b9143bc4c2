//! The clean inputs an evaluation ran on, beside its adversarial examples: what a gallery needs
//! to show a sample, its perturbation and its true label. Read-only.

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::error::ErrorBody;
use super::{ApiError, AppState};
use crate::dataset::Dataset;
use crate::jobs::{DataSource, JobSpec};
use crate::tensor::{read_npy, HostTensor};

/// `GET /v2/evaluations/{id}/inputs.safetensors`: `x`, the clean inputs, and `y`, the labels,
/// one row per sample in the report's order (the rows of `adversarial.safetensors`); `target`
/// too when the request gave target classes.
#[utoipa::path(get, path = "/v2/evaluations/{id}/inputs.safetensors", tag = "evaluations", params(("id" = String, Path, description = "Evaluation id")), responses((status = 200, description = "`x` (clean inputs), `y` (labels) and, when given, `target`, as safetensors, in the report's sample order", body = Vec<u8>, content_type = "application/octet-stream"), (status = 404, description = "No such model, data set or evaluation", body = ErrorBody, example = json!({"error": "evaluation \"nope\" does not exist", "error_type": "not_found"})), (status = 410, description = "The data set or the stored inputs are gone", body = ErrorBody)))]
pub async fn inputs_safetensors(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let record = state
        .store
        .job(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("evaluation {id:?} does not exist")))?;
    let spec: JobSpec = serde_json::from_value(record.spec)
        .map_err(|e| ApiError::Internal(format!("evaluation {id:?}: unreadable job: {e}")))?;
    let gone = |e: String| ApiError::Gone(format!("evaluation {id:?}: its inputs are gone: {e}"));

    let (data, targets) = match &spec.data {
        DataSource::Dataset { name, start, n } => {
            let data = state.datasets.load(name).await.map_err(gone)?;
            if start + n > data.len() {
                return Err(gone(format!(
                    "data set {name:?} now holds {} samples, the evaluation used {}",
                    data.len(),
                    start + n
                )));
            }
            (data.slice(*start, *n), None)
        }
        DataSource::Inline {
            x_sha256,
            y_sha256,
            targets_sha256,
        } => {
            let read = |sha: &str| -> Result<HostTensor, ApiError> {
                let bytes = state
                    .store
                    .blobs
                    .get(sha)
                    .map_err(|e| gone(e.to_string()))?;
                read_npy(&bytes).map_err(gone)
            };
            let data = Dataset::new(read(x_sha256)?, read(y_sha256)?).map_err(gone)?;
            let targets = targets_sha256.as_deref().map(read).transpose()?;
            (data, targets)
        }
    };

    let mut tensors = vec![("x", &data.x), ("y", &data.y)];
    if let Some(targets) = &targets {
        tensors.push(("target", targets));
    }
    let bytes = Dataset::to_safetensors(&tensors);
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{id}-inputs.safetensors\""),
            ),
        ],
        bytes,
    )
        .into_response())
}
