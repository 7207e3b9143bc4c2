//! Data sets: labelled tensor sets uploaded once and evaluated against by name. The shipped
//! digits test split is there from the start.
//!
//! `PUT /v2/datasets/{name}` takes a safetensors file with tensors `x` (inputs) and `y` (labels)
//! as the raw body, or a multipart form with two `.npy` files in parts named `x` and `y`.

use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{header, StatusCode};
use axum::Json;
use serde_json::{json, Value};

use super::error::ErrorBody;
use super::{ApiError, AppState};
use crate::dataset::{Dataset, DatasetInfo};
use crate::store::{now, DatasetRecord};
use crate::tensor::{read_npy, write_npy};

/// Names of models and data sets: 1 to 64 of `A-Z a-z 0-9 _ . -`, not starting with a dot.
pub fn check_name(what: &str, name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !ok {
        return Err(ApiError::Invalid(format!(
            "{what} name: 1 to 64 of A-Z a-z 0-9 _ . - (not starting with a dot), got {name:?}"
        )));
    }
    Ok(())
}

/// `GET /v2/datasets`.
#[utoipa::path(get, path = "/v2/datasets", tag = "datasets", responses((status = 200, description = "Shipped and uploaded data sets", body = [DatasetInfo])))]
pub async fn list(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(state.datasets.list().await?)))
}

/// `GET /v2/datasets/{name}`.
#[utoipa::path(get, path = "/v2/datasets/{name}", tag = "datasets", params(("name" = String, Path, description = "Data set name")), responses((status = 200, description = "One data set", body = DatasetInfo), (status = 404, description = "No such model, data set or evaluation", body = ErrorBody, example = json!({"error": "model \"nope\" is not in the repository", "error_type": "not_found"}))))]
pub async fn describe(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let all = state.datasets.list().await?;
    let info = all
        .into_iter()
        .find(|d| d.name == name)
        .ok_or_else(|| ApiError::NotFound(format!("data set {name:?} does not exist")))?;
    Ok(Json(json!(info)))
}

/// `PUT /v2/datasets/{name}`: safetensors body, or multipart `.npy` parts `x` and `y`.
#[utoipa::path(put, path = "/v2/datasets/{name}", tag = "datasets", params(("name" = String, Path, description = "Data set name")), request_body(content = Vec<u8>, description = "A safetensors file with `x` and `y`, or multipart/form-data with .npy parts `x` and `y`", content_type = "application/octet-stream"), responses((status = 201, description = "Stored", body = Object), (status = 400, description = "A field breaks a rule; the message names the field, the rule and the value", body = ErrorBody, example = json!({"error": "inputs[0].shape: must be [batch, 1, 8, 8], got [1, 1, 8]", "error_type": "invalid_request"})), (status = 409, description = "The resource's state does not allow this", body = ErrorBody), (status = 413, description = "The body is larger than the server accepts", body = ErrorBody)))]
pub async fn upload(
    State(state): State<AppState>,
    Path(name): Path<String>,
    request: Request,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    check_name("data set", &name)?;
    if state.datasets.is_shipped(&name) {
        return Err(ApiError::Conflict(format!(
            "data set {name:?} is shipped and cannot be replaced"
        )));
    }
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let data = if content_type.starts_with("multipart/form-data") {
        let multipart = Multipart::from_request(request, &state)
            .await
            .map_err(|e| ApiError::Invalid(format!("body: {}", e.body_text())))?;
        from_multipart(multipart).await?
    } else {
        let bytes = Bytes::from_request(request, &state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::TooLarge(format!("body: {} (--max-body-bytes)", e.body_text()))
            } else {
                ApiError::Invalid(format!("body: {}", e.body_text()))
            }
        })?;
        Dataset::from_safetensors(&bytes).map_err(|e| ApiError::Invalid(format!("body: {e}")))?
    };

    let x_sha256 = state
        .store
        .blobs
        .put(&write_npy(&data.x))
        .map_err(crate::store::StoreError::from)?;
    let y_sha256 = state
        .store
        .blobs
        .put(&write_npy(&data.y))
        .map_err(crate::store::StoreError::from)?;
    let record = DatasetRecord {
        name: name.clone(),
        x_sha256,
        y_sha256,
        n: data.len() as i64,
        x_shape: data.x.shape.clone(),
        created_at: now(),
    };
    state.store.put_dataset(&record).await?;
    tracing::info!(dataset = %name, n = record.n, "data set stored");
    Ok((
        StatusCode::CREATED,
        Json(json!({ "name": name, "n": record.n, "x_shape": record.x_shape })),
    ))
}

async fn from_multipart(mut multipart: Multipart) -> Result<Dataset, ApiError> {
    let (mut x, mut y) = (None, None);
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| ApiError::Invalid(format!("body: {e}")))?
    {
        let name = field.name().unwrap_or_default().to_owned();
        let bytes = field
            .bytes()
            .await
            .map_err(|e| ApiError::Invalid(format!("body: {e}")))?;
        let tensor = read_npy(&bytes).map_err(|e| ApiError::Invalid(format!("{name}: {e}")))?;
        match name.as_str() {
            "x" => x = Some(tensor),
            "y" => y = Some(tensor),
            other => {
                return Err(ApiError::Invalid(format!(
                    "body: parts must be named x and y, got {other:?}"
                )))
            }
        }
    }
    let (Some(x), Some(y)) = (x, y) else {
        return Err(ApiError::Invalid(
            "body: a part x and a part y (.npy files) are required".to_owned(),
        ));
    };
    Dataset::new(x, y).map_err(ApiError::Invalid)
}

/// `DELETE /v2/datasets/{name}`: remove an uploaded data set.
#[utoipa::path(delete, path = "/v2/datasets/{name}", tag = "datasets", params(("name" = String, Path, description = "Data set name")), responses((status = 204, description = "Removed"), (status = 404, description = "No such model, data set or evaluation", body = ErrorBody, example = json!({"error": "model \"nope\" is not in the repository", "error_type": "not_found"})), (status = 409, description = "The resource's state does not allow this", body = ErrorBody)))]
pub async fn remove(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    if state.datasets.is_shipped(&name) {
        return Err(ApiError::Conflict(format!(
            "data set {name:?} is shipped and cannot be removed"
        )));
    }
    if !state.store.delete_dataset(&name).await? {
        return Err(ApiError::NotFound(format!(
            "data set {name:?} does not exist"
        )));
    }
    Ok(StatusCode::NO_CONTENT)
}
