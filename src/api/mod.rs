//! HTTP: the axum router, its handlers and the request/response types.

mod attack;
mod error;
mod health;
mod infer;
mod models;
mod validate;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::{FromRequest, Request};
use axum::http::HeaderName;
use axum::routing::{get, post};
use axum::Router;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

pub use error::ApiError;

use crate::config::ServeConfig;
use crate::engine::{Operation, Work, WorkInputs, WorkerPool};
use crate::model::Repository;
use crate::tensor::HostTensor;

/// Whether a model can take requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelState {
    Loading,
    Ready,
    Unavailable(String),
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<ServeConfig>,
    pub repository: Arc<Repository>,
    pub pool: WorkerPool,
    pub model_states: Arc<RwLock<HashMap<String, ModelState>>>,
}

impl AppState {
    pub fn new(config: ServeConfig, repository: Repository, pool: WorkerPool) -> Self {
        let states = repository
            .iter()
            .map(|m| (m.card.name.clone(), ModelState::Loading))
            .collect();
        Self {
            config: Arc::new(config),
            repository: Arc::new(repository),
            pool,
            model_states: Arc::new(RwLock::new(states)),
        }
    }

    pub fn model_state(&self, name: &str) -> Option<ModelState> {
        self.model_states
            .read()
            .expect("state lock")
            .get(name)
            .cloned()
    }

    pub fn set_model_state(&self, name: &str, state: ModelState) {
        self.model_states
            .write()
            .expect("state lock")
            .insert(name.to_owned(), state);
    }
}

/// A JSON body whose rejections come back in the API's error shape.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The whole HTTP surface, with request ids, one log line per request and a body size limit.
pub fn app(state: AppState) -> Router {
    let body_limit = state.config.max_body_bytes;
    let trace = TraceLayer::new_for_http()
        .make_span_with(|request: &Request| {
            let id = request
                .headers()
                .get(&REQUEST_ID)
                .and_then(|v| v.to_str().ok());
            tracing::info_span!(
                "request",
                id = id.unwrap_or_default(),
                method = %request.method(),
                path = %request.uri().path(),
                model = tracing::field::Empty,
                batch = tracing::field::Empty,
                compute_ms = tracing::field::Empty,
            )
        })
        .on_response(
            DefaultOnResponse::new()
                .level(Level::INFO)
                .latency_unit(tower_http::LatencyUnit::Millis),
        );

    Router::new()
        .route("/v2", get(health::server_metadata))
        .route("/v2/health/live", get(health::live))
        .route("/v2/health/ready", get(health::ready))
        .route("/v2/repository/index", post(models::repository_index))
        .route("/v2/models/{model}", get(models::metadata))
        .route("/v2/models/{model}/ready", get(models::ready))
        .route("/v2/models/{model}/infer", post(infer::infer))
        .route("/v2/models/{model}/attack", post(attack::attack))
        .route("/metrics", get(health::metrics))
        .with_state(state)
        .layer(RequestBodyLimitLayer::new(body_limit))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(trace)
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

/// Fills the request span's model, batch and compute time, which its closing log line shows.
pub fn record_on_span(model: &str, batch: i64, compute: Duration) {
    let span = tracing::Span::current();
    span.record("model", model);
    span.record("batch", batch);
    span.record("compute_ms", compute.as_millis() as u64);
}

/// Asks a worker to load each model once, so the first request does not pay for it and a model
/// that cannot load is reported at start.
pub async fn load_models(state: AppState) {
    for entry in state.repository.iter() {
        let name = entry.card.name.clone();
        let work = Work {
            model: models::model_ref(entry),
            operation: Operation::Load,
            inputs: WorkInputs {
                x: HostTensor::f32(vec![0], vec![]),
                labels: None,
                targets: None,
                sample_ids: vec![],
            },
        };
        let model_state = match state.pool.submit(work).await {
            Ok(_) => ModelState::Ready,
            Err(e) => ModelState::Unavailable(e.to_string()),
        };
        match &model_state {
            ModelState::Unavailable(reason) => {
                tracing::error!(model = %name, "model unavailable: {reason}")
            }
            _ => tracing::info!(model = %name, sha256 = %entry.sha256, "model ready"),
        }
        state.set_model_state(&name, model_state);
    }
}
