//! HTTP: the axum router, its handlers and the request/response types.

mod attack;
pub mod auth;
mod datasets;
mod error;
mod evaluations;
mod health;
mod infer;
mod inputs;
mod models;
mod oip;
pub mod openapi;
mod repository;
mod validate;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::HeaderName;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnFailure, DefaultOnResponse, TraceLayer};
use tracing::Level;

pub use auth::{Caller, Tokens};
pub use error::ApiError;
pub use oip::decode_tensors;

use crate::config::ServeConfig;
use crate::dataset::Datasets;
use crate::engine::{Operation, Work, WorkInputs, WorkerPool};
use crate::jobs::Jobs;
use crate::model::{Catalog, ModelEntry};
use crate::store::Store;
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
    pub catalog: Catalog,
    pub store: Store,
    pub datasets: Datasets,
    pub pool: WorkerPool,
    pub jobs: Jobs,
    pub model_states: Arc<RwLock<HashMap<String, ModelState>>>,
    /// The bearer tokens the server accepts; none: every route is open.
    pub tokens: Arc<Tokens>,
    /// The evaluation jobs each caller started in this process, for the per-token limit.
    pub job_owners: Arc<Mutex<HashMap<String, Vec<String>>>>,
}

impl AppState {
    pub fn new(
        config: ServeConfig,
        tokens: Tokens,
        catalog: Catalog,
        store: Store,
        datasets: Datasets,
        pool: WorkerPool,
    ) -> Self {
        let jobs = Jobs::new(
            store.clone(),
            pool.clone(),
            catalog.clone(),
            datasets.clone(),
        );
        let states = catalog
            .all()
            .iter()
            .map(|(m, _)| (m.card.name.clone(), ModelState::Loading))
            .collect();
        Self {
            config: Arc::new(config),
            catalog,
            store,
            datasets,
            pool,
            jobs,
            model_states: Arc::new(RwLock::new(states)),
            tokens: Arc::new(tokens),
            job_owners: Default::default(),
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

    /// The model `name` if it exists and can take requests.
    pub fn servable(&self, name: &str) -> Result<ModelEntry, ApiError> {
        let entry = self
            .catalog
            .get(name)
            .ok_or_else(|| ApiError::unknown_model(name))?;
        if let Some(ModelState::Unavailable(reason)) = self.model_state(name) {
            return Err(ApiError::Model(format!(
                "model {name:?} is unavailable: {reason}"
            )));
        }
        Ok(entry)
    }

    /// Counts `caller`'s queued or running jobs; refuses a new one past the limit.
    ///
    /// NOTE: the count and the recording of the new job are two steps, so two requests of one
    /// caller that arrive together may both pass at the last free slot; the limit is a guard
    /// against runaway clients, not an exact quota. Jobs resumed after a restart count for no one.
    pub fn reserve_job_slot(&self, caller: &Caller) -> Result<(), ApiError> {
        let limit = self.config.limits.max_jobs_per_token;
        let mut owners = self.job_owners.lock().expect("owners lock");
        let jobs = owners.entry(caller.name.clone()).or_default();
        jobs.retain(|id| {
            self.jobs
                .live(id)
                .is_some_and(|live| !live.events_after(u64::MAX).1)
        });
        if jobs.len() >= limit {
            return Err(ApiError::TooManyRequests {
                message: format!(
                    "evaluations: this token already has {} queued or running, the most it may \
                     have at once (--max-jobs-per-token); wait for one to end",
                    jobs.len()
                ),
                retry_after_s: 5,
            });
        }
        Ok(())
    }

    /// Records that `caller` started job `id`.
    pub fn record_job_owner(&self, caller: &Caller, id: &str) {
        self.job_owners
            .lock()
            .expect("owners lock")
            .entry(caller.name.clone())
            .or_default()
            .push(id.to_owned());
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
        )
        // The error itself was logged once where it was handled; the response line has the
        // status.
        .on_failure(DefaultOnFailure::new().level(Level::DEBUG));

    // Raw uploads stream to disk and carry their own limit. These routes and the event streams
    // have no request timeout (`untimed` says so to the OpenAPI document).
    let uploads = Router::new()
        .route(
            "/v2/repository/models/{model}",
            axum::routing::put(repository::upload).delete(repository::remove),
        )
        .layer(DefaultBodyLimit::disable());

    // Event streams last as long as their job: no request timeout.
    let streams = Router::new().route("/v2/evaluations/{id}/events", get(evaluations::events));
    let timeout = Duration::from_secs(state.config.limits.request_timeout_s.max(1));

    Router::new()
        .route("/v2", get(health::server_metadata))
        .route("/v2/health/live", get(health::live))
        .route("/v2/health/ready", get(health::ready))
        .route("/v2/repository/index", post(repository::index))
        .route("/v2/repository/models/{model}/load", post(repository::load))
        .route(
            "/v2/repository/models/{model}/unload",
            post(repository::unload),
        )
        .route("/v2/models/{model}", get(models::metadata))
        .route("/v2/models/{model}/ready", get(models::ready))
        .route("/v2/models/{model}/infer", post(infer::infer))
        .route("/v2/models/{model}/attack", post(attack::attack))
        .route("/v2/datasets", get(datasets::list))
        .route(
            "/v2/datasets/{name}",
            get(datasets::describe)
                .put(datasets::upload)
                .delete(datasets::remove),
        )
        .route(
            "/v2/evaluations",
            post(evaluations::create).get(evaluations::list),
        )
        .route(
            "/v2/evaluations/{id}",
            get(evaluations::status).delete(evaluations::cancel),
        )
        .route(
            "/v2/evaluations/{id}/adversarial.npy",
            get(evaluations::adversarial_npy),
        )
        .route(
            "/v2/evaluations/{id}/adversarial.safetensors",
            get(evaluations::adversarial_safetensors),
        )
        .route(
            "/v2/evaluations/{id}/inputs.safetensors",
            get(inputs::inputs_safetensors),
        )
        .route("/metrics", get(health::metrics))
        .route(
            "/openapi.json",
            get(|| async {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    openapi::document(),
                )
            }),
        )
        .layer(middleware::from_fn_with_state(timeout, request_timeout))
        .layer(RequestBodyLimitLayer::new(body_limit))
        .layer(DefaultBodyLimit::max(body_limit))
        .merge(streams)
        .merge(uploads)
        .merge(crate::web::router())
        .merge(utoipa_swagger_ui::SwaggerUi::new("/docs").url(
            "/docs/openapi.json",
            <openapi::ApiDoc as utoipa::OpenApi>::openapi(),
        ))
        // Every route, whatever its router, passes the one access check.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authorize,
        ))
        .with_state(state)
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(trace)
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

/// Answers 504 when a request runs past the request timeout; dropping the handler's future drops
/// its queued work, and a batch whose callers are all gone is cancelled between attack steps.
async fn request_timeout(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout(format!(
            "request: took longer than the server's request timeout of {} s \
             (--request-timeout-s); use an evaluation job for long work",
            limit.as_secs()
        ))
        .into_response(),
    }
}

/// Whether the request timeout leaves a route alone: the raw model upload and removal, and event
/// streams, which last as long as their job (the `uploads` and `streams` routers of `app`).
pub fn untimed(method: &axum::http::Method, route: &str) -> bool {
    use axum::http::Method;
    route == "/v2/evaluations/{id}/events"
        || (route == "/v2/repository/models/{model}"
            && (method == Method::PUT || method == Method::DELETE))
}

/// Fills the request span's model, batch and compute time, which its closing log line shows.
pub fn record_on_span(model: &str, batch: i64, compute: Duration) {
    let span = tracing::Span::current();
    span.record("model", model);
    span.record("batch", batch);
    span.record("compute_ms", compute.as_millis() as u64);
}

/// Asks a worker to load a model, and records whether it could.
pub async fn load_model(state: &AppState, entry: &ModelEntry) -> ModelState {
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
    let model_state = match state.pool.submit_own(work).await {
        Ok(_) => ModelState::Ready,
        Err(e) => ModelState::Unavailable(e.to_string()),
    };
    match &model_state {
        ModelState::Unavailable(reason) => {
            tracing::error!(model = %name, "model unavailable: {reason}")
        }
        _ => tracing::info!(model = %name, sha256 = %entry.sha256, "model ready"),
    }
    state.set_model_state(&name, model_state.clone());
    model_state
}

/// Loads every model once at start, so the first request does not pay for it and a model that
/// cannot load is reported at once.
pub async fn load_models(state: AppState) {
    for (entry, _) in state.catalog.all() {
        load_model(&state, &entry).await;
    }
}
