//! The model repository, in Triton's model-repository extension's words: the index, load and
//! unload; plus a streaming raw upload and removal. Uploads and removals are admin actions.
//!
//! `POST /v2/repository/models/{m}/load` may carry the model as Triton's load does:
//! `{"parameters": {"config": "<model card JSON>", "file:model.pt": "<base64 TorchScript>"}}`.
//! `PUT /v2/repository/models/{m}` streams a large TorchScript file as the raw body, with the
//! model card as JSON in the `Model-Card` header.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use base64::Engine as _;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::error::ErrorBody;
use super::{load_model, ApiError, AppState, ModelState};
use crate::model::{check_archive, ArchiveLimits, ModelCard, ModelEntry, Origin, ReadAt};

/// `POST /v2/repository/index`: every model with its state.
#[utoipa::path(post, path = "/v2/repository/index", tag = "repository", responses((status = 200, description = "Every model with its state", body = [Object])))]
pub async fn index(State(state): State<AppState>) -> Json<Value> {
    let models: Vec<Value> = state
        .catalog
        .all()
        .into_iter()
        .map(|(entry, origin)| {
            let (label, reason) = match state.model_state(&entry.card.name) {
                Some(ModelState::Ready) => ("READY", None),
                Some(ModelState::Unavailable(reason)) => ("UNAVAILABLE", Some(reason)),
                _ => ("LOADING", None),
            };
            let mut row = json!({
                "name": entry.card.name, "version": "1", "state": label, "origin": origin,
            });
            if let Some(reason) = reason {
                row["reason"] = json!(reason);
            }
            row
        })
        .collect();
    Json(Value::Array(models))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct LoadRequest {
    #[serde(default)]
    pub parameters: Map<String, Value>,
}

/// `POST /v2/repository/models/{m}/load`: (re)load a model, storing it first when the request
/// carries its card and file.
#[utoipa::path(post, path = "/v2/repository/models/{model}/load", tag = "repository", params(("model" = String, Path, description = "Model name")), request_body(content = Option<LoadRequest>, description = "Optional: `parameters.config` (the model card as a JSON string) and `parameters.file:model.pt` (base64 TorchScript) to store the model first; that is an admin action"), responses((status = 200, description = "Loaded", body = Object), (status = 400, description = "A field breaks a rule; the message names the field, the rule and the value", body = ErrorBody, example = json!({"error": "inputs[0].shape: must be [batch, 1, 8, 8], got [1, 1, 8]", "error_type": "invalid_request"})), (status = 401, description = "An admin action without the admin token", body = ErrorBody), (status = 404, description = "No such model, data set or evaluation", body = ErrorBody, example = json!({"error": "model \"nope\" is not in the repository", "error_type": "not_found"})), (status = 422, description = "The model failed or is unavailable", body = ErrorBody)))]
pub async fn load(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let request: LoadRequest = if body.iter().all(u8::is_ascii_whitespace) {
        LoadRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::Invalid(format!("request body: {e}")))?
    };
    let has_files = request
        .parameters
        .keys()
        .any(|k| k == "config" || k.starts_with("file:"));
    let entry = if has_files {
        let card = card_from(request.parameters.get("config"), &name)?;
        let files: Vec<(&String, &Value)> = request
            .parameters
            .iter()
            .filter(|(k, _)| k.starts_with("file:"))
            .collect();
        let [(key, content)] = files.as_slice() else {
            return Err(ApiError::Invalid(format!(
                "parameters: give exactly one \"file:<name>.pt\" with the TorchScript file, got {}",
                files.len()
            )));
        };
        let bytes = content
            .as_str()
            .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
            .ok_or_else(|| ApiError::Invalid(format!("parameters.{key}: must be base64 text")))?;
        check_model_file(bytes.as_slice(), &format!("parameters.{key}"))?;
        let sha256 = state
            .store
            .blobs
            .put(&bytes)
            .map_err(crate::store::StoreError::from)?;
        register(&state, card, sha256).await?
    } else {
        state
            .catalog
            .get(&name)
            .ok_or_else(|| ApiError::unknown_model(&name))?
    };
    let result = load_model(&state, &entry).await;
    let ModelState::Unavailable(reason) = result else {
        return Ok(Json(
            json!({ "name": name, "state": "READY", "sha256": entry.sha256 }),
        ));
    };
    Err(ApiError::Model(format!(
        "model {name:?} could not be loaded: {reason}"
    )))
}

/// `POST /v2/repository/models/{m}/unload`: stop serving a model (it stays in the repository).
#[utoipa::path(post, path = "/v2/repository/models/{model}/unload", tag = "repository", params(("model" = String, Path, description = "Model name")), responses((status = 200, description = "No longer served", body = Object), (status = 401, description = "An admin action without the admin token", body = ErrorBody), (status = 404, description = "No such model, data set or evaluation", body = ErrorBody, example = json!({"error": "model \"nope\" is not in the repository", "error_type": "not_found"}))))]
pub async fn unload(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    state
        .catalog
        .get(&name)
        .ok_or_else(|| ApiError::unknown_model(&name))?;
    state.set_model_state(
        &name,
        ModelState::Unavailable("unloaded; load it to serve it again".to_owned()),
    );
    Ok(Json(json!({ "name": name, "state": "UNAVAILABLE" })))
}

/// `PUT /v2/repository/models/{m}`: a raw TorchScript body streamed to the store, with the card
/// in the `Model-Card` header.
#[utoipa::path(put, path = "/v2/repository/models/{model}", tag = "repository", params(("model" = String, Path, description = "Model name"), ("Model-Card" = String, Header, description = "The model card as JSON")), request_body(content = Vec<u8>, description = "The TorchScript file, streamed", content_type = "application/octet-stream"), responses((status = 201, description = "Stored and loaded", body = Object), (status = 400, description = "A field breaks a rule; the message names the field, the rule and the value", body = ErrorBody, example = json!({"error": "inputs[0].shape: must be [batch, 1, 8, 8], got [1, 1, 8]", "error_type": "invalid_request"})), (status = 401, description = "An admin action without the admin token", body = ErrorBody), (status = 409, description = "The resource's state does not allow this", body = ErrorBody), (status = 413, description = "The body is larger than the server accepts", body = ErrorBody)))]
pub async fn upload(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let card_header = headers
        .get("model-card")
        .map(|v| Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()));
    let card = card_from(card_header.as_ref(), &name)?;

    // Stream to a temporary blob, hashing on the way.
    let temp = state.store.blobs.temp_path();
    let result = stream_to(&temp, body, state.config.limits.max_upload_bytes).await;
    let (sha256, size) = match result {
        Ok(done) => done,
        Err(e) => {
            let _ = tokio::fs::remove_file(&temp).await;
            return Err(e);
        }
    };
    let checked = match std::fs::File::open(&temp) {
        Ok(file) => check_model_file(&file, "body"),
        Err(e) => Err(ApiError::Internal(format!("reading the upload back: {e}"))),
    };
    if let Err(e) = checked {
        let _ = tokio::fs::remove_file(&temp).await;
        return Err(e);
    }
    state
        .store
        .blobs
        .commit_temp(&temp, &sha256)
        .map_err(crate::store::StoreError::from)?;
    let entry = register(&state, card, sha256.clone()).await?;
    let loaded = load_model(&state, &entry).await;
    let body = json!({
        "name": name, "sha256": sha256, "bytes": size,
        "state": if loaded == ModelState::Ready { "READY" } else { "UNAVAILABLE" },
        "reason": match loaded { ModelState::Unavailable(r) => Some(r), _ => None },
    });
    Ok((StatusCode::CREATED, Json(body)))
}

/// `DELETE /v2/repository/models/{m}`: remove an uploaded model.
#[utoipa::path(delete, path = "/v2/repository/models/{model}", tag = "repository", params(("model" = String, Path, description = "Model name")), responses((status = 204, description = "Removed"), (status = 401, description = "An admin action without the admin token", body = ErrorBody), (status = 404, description = "No such model, data set or evaluation", body = ErrorBody, example = json!({"error": "model \"nope\" is not in the repository", "error_type": "not_found"})), (status = 409, description = "The resource's state does not allow this", body = ErrorBody)))]
pub async fn remove(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    match state
        .catalog
        .remove_uploaded(&name)
        .map_err(ApiError::Conflict)?
    {
        None => Err(ApiError::unknown_model(&name)),
        Some(_) => {
            state.store.delete_model(&name).await?;
            state
                .model_states
                .write()
                .expect("state lock")
                .remove(&name);
            Ok(StatusCode::NO_CONTENT)
        }
    }
}

async fn stream_to(
    path: &std::path::Path,
    body: Body,
    limit: u64,
) -> Result<(String, u64), ApiError> {
    let io = |e: std::io::Error| ApiError::Internal(format!("storing the upload: {e}"));
    let mut file = tokio::fs::File::create(path).await.map_err(io)?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::Invalid(format!("body: {e}")))?;
        size += chunk.len() as u64;
        if size > limit {
            return Err(ApiError::TooLarge(format!(
                "body: a model file may hold at most {limit} bytes (--max-upload-bytes)"
            )));
        }
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(io)?;
    }
    file.sync_all().await.map_err(io)?;
    if size == 0 {
        return Err(ApiError::Invalid(
            "body: the TorchScript file is empty".to_owned(),
        ));
    }
    Ok((hex::encode(hasher.finalize()), size))
}

/// The model card from a JSON string, checked, named `name`.
fn card_from(config: Option<&Value>, name: &str) -> Result<ModelCard, ApiError> {
    let text = config.and_then(Value::as_str).ok_or_else(|| {
        ApiError::Invalid("config: the model card is required, as a JSON string".to_owned())
    })?;
    let mut card: ModelCard =
        serde_json::from_str(text).map_err(|e| ApiError::Invalid(format!("config: {e}")))?;
    if card.name.is_empty() {
        card.name = name.to_owned();
    }
    if card.name != name {
        return Err(ApiError::Invalid(format!(
            "config.name: must be the model's name in the path ({name:?}), got {:?}",
            card.name
        )));
    }
    super::datasets::check_name("model", name)?;
    card.validate()
        .map_err(|e| ApiError::Invalid(format!("config.{e}")))?;
    Ok(card)
}

/// The archive check every uploaded model file passes before a worker loads it.
fn check_model_file(file: &(impl ReadAt + ?Sized), field: &str) -> Result<(), ApiError> {
    check_archive(file, &ArchiveLimits::default())
        .map(|_| ())
        .map_err(|e| ApiError::Invalid(format!("{field}: {e}")))
}

/// Records an uploaded model in the store and the catalog.
async fn register(
    state: &AppState,
    card: ModelCard,
    sha256: String,
) -> Result<ModelEntry, ApiError> {
    if state.catalog.origin(&card.name) == Some(Origin::Shipped) {
        return Err(ApiError::Conflict(format!(
            "model {:?} is shipped with the server and cannot be replaced",
            card.name
        )));
    }
    let card_json = serde_json::to_string(&card).expect("cards serialise");
    state
        .store
        .put_model(&card.name, &sha256, &card_json)
        .await?;
    let entry = ModelEntry {
        path: state.store.blobs.path(&sha256),
        sha256,
        card,
    };
    state
        .catalog
        .insert_uploaded(entry.clone())
        .map_err(ApiError::Conflict)?;
    tracing::info!(model = %entry.card.name, sha256 = %entry.sha256, "model stored");
    Ok(entry)
}
