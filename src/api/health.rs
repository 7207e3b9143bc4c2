//! Server health and metadata (Open Inference Protocol).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::AppState;

/// `GET /v2`: server metadata.
#[utoipa::path(get, path = "/v2", tag = "health", responses((status = 200, description = "Server name, version and extensions", body = Object, example = json!({"name": "robustd", "version": "0.1.0", "extensions": ["model_repository"]}))))]
pub async fn server_metadata() -> Json<Value> {
    Json(json!({
        "name": "robustd",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["model_repository"],
    }))
}

/// `GET /v2/health/live`: the process answers.
#[utoipa::path(get, path = "/v2/health/live", tag = "health", responses((status = 200, description = "The process answers", body = Object, example = json!({"live": true}))))]
pub async fn live() -> Json<Value> {
    Json(json!({ "live": true }))
}

/// `GET /v2/health/ready`: at least one worker process is up to take requests.
#[utoipa::path(get, path = "/v2/health/ready", tag = "health", responses((status = 200, description = "A worker is up", body = Object, example = json!({"ready": true})), (status = 400, description = "No worker is up yet (the Open Inference Protocol answers false with a 4xx, as Triton does with 400)", body = Object, example = json!({"ready": false}))))]
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let ready = state.pool.ready_workers() > 0;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    (status, Json(json!({ "ready": ready })))
}

/// `GET /metrics`: Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "health", responses((status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        state.pool.metrics().render(),
    )
}
