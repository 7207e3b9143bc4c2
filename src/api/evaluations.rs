//! Evaluation jobs: `POST /v2/evaluations` answers 202 with `Location`; `GET` shows status,
//! progress and, when done, the report; `GET .../events` streams progress as Server-Sent Events
//! with ids (a client resumes with `Last-Event-ID`); `DELETE` cancels; the adversarial examples
//! download as `.npy` or safetensors.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, Stream};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::attack::{plan_from, resolve_baseline, tensors_from};
use super::error::ErrorBody;
use super::models::model_ref;
use super::oip::{decode_tensors, OipBody};
use super::{ApiError, AppState, Caller};
use crate::dataset::Dataset;
use crate::jobs::{is_terminal, progress_data, DataSource, JobSpec};
use crate::store::{JobRecord, StoreError};
use crate::tensor::{read_npy, write_npy, HostTensor, OipTensor};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EvaluationRequest {
    pub model: String,
    /// A stored or shipped data set; or give `inputs`.
    #[serde(default)]
    pub dataset: Option<String>,
    /// First sample of the data set to use.
    #[serde(default)]
    pub start: Option<usize>,
    /// How many samples of the data set, at most.
    #[serde(default)]
    pub limit: Option<usize>,
    /// Inline tensors `input`, `label` (and `target`), as for an attack.
    #[serde(default)]
    pub inputs: Option<Vec<OipTensor>>,
    /// The attack settings, as for `POST /v2/models/{m}/attack`.
    #[serde(default)]
    pub parameters: Map<String, Value>,
    /// Samples per batch sent to a worker; default and maximum: the server's max batch size.
    #[serde(default)]
    pub chunk_size: Option<usize>,
    /// Answer with an earlier succeeded evaluation of the same model file, settings and data
    /// instead of computing it again.
    #[serde(default)]
    pub reuse: bool,
}

/// `POST /v2/evaluations`.
#[utoipa::path(post, path = "/v2/evaluations", tag = "evaluations", request_body = EvaluationRequest, responses((status = 202, description = "Queued; Location names the job", body = Object, headers(("Location" = String, description = "The job's URL"))), (status = 200, description = "An earlier identical evaluation, reused (`reuse: true`)", body = Object), (status = 400, description = "A field breaks a rule; the message names the field, the rule and the value", body = ErrorBody, example = json!({"error": "inputs[0].shape: must be [batch, 1, 8, 8], got [1, 1, 8]", "error_type": "invalid_request"})), (status = 404, description = "No such model, data set or evaluation", body = ErrorBody, example = json!({"error": "model \"nope\" is not in the repository", "error_type": "not_found"})), (status = 422, description = "The model failed or is unavailable", body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    OipBody {
        header: request,
        binary,
    }: OipBody<EvaluationRequest>,
) -> Result<Response, ApiError> {
    let entry = state.servable(&request.model)?;
    let card = &entry.card;
    let (mut eval, offset) = plan_from(&request.parameters, card, &state.config.limits)?;
    resolve_baseline(&state, &mut eval).await?;
    let max = state.config.max_batch_size;
    let chunk_size = match request.chunk_size {
        None => max,
        Some(c) if (1..=max).contains(&c) => c,
        Some(c) => {
            return Err(ApiError::Invalid(format!(
                "chunk_size: must be 1 to {max}, got {c}"
            )))
        }
    };

    let (data, total) = match (&request.dataset, &request.inputs) {
        (Some(name), None) => {
            let data = state
                .datasets
                .load(name)
                .await
                .map_err(ApiError::NotFound)?;
            let start = request.start.unwrap_or(0);
            if start >= data.len() {
                return Err(ApiError::Invalid(format!(
                    "start: must be below the data set's {} samples, got {start}",
                    data.len()
                )));
            }
            let n = request.limit.unwrap_or(usize::MAX).min(data.len() - start);
            if n == 0 {
                return Err(ApiError::Invalid(
                    "limit: must be at least 1, got 0".to_owned(),
                ));
            }
            check_dataset(&data.slice(start, n), card, &format!("dataset {name:?}"))?;
            (
                DataSource::Dataset {
                    name: name.clone(),
                    start,
                    n,
                },
                n,
            )
        }
        (None, Some(inputs)) => {
            let decoded = decode_tensors(inputs, &binary, &state.config.limits)?;
            let named = inputs.iter().zip(decoded).collect();
            let work = tensors_from(named, card, usize::MAX, offset)?;
            let put = |t: &HostTensor| {
                state
                    .store
                    .blobs
                    .put(&write_npy(t))
                    .map_err(StoreError::from)
            };
            let labels = work.labels.as_ref().expect("tensors_from requires labels");
            let source = DataSource::Inline {
                x_sha256: put(&work.x)?,
                y_sha256: put(labels)?,
                targets_sha256: work.targets.as_ref().map(put).transpose()?,
            };
            (source, work.sample_ids.len())
        }
        _ => {
            return Err(ApiError::Invalid(
                "dataset, inputs: give exactly one of a data set name or inline inputs".to_owned(),
            ))
        }
    };

    let max_samples = state.config.limits.max_job_samples;
    if total > max_samples {
        return Err(ApiError::Invalid(format!(
            "limit: an evaluation may hold at most {max_samples} samples (--max-job-samples), \
             got {total}; use start and limit to split it"
        )));
    }

    let spec = JobSpec {
        eval,
        data,
        chunk_size,
        sample_offset: offset,
    };
    if request.reuse {
        let key = serde_json::to_value(&spec).expect("specs serialise");
        if let Some(earlier) = state.store.reusable_job(&entry.sha256, &key).await? {
            tracing::info!(job = %earlier.id, model = %earlier.model, "evaluation reused");
            let mut body = view(&earlier, true);
            body["reused"] = json!(true);
            let location = format!("/v2/evaluations/{}", earlier.id);
            let mut response = (StatusCode::OK, Json(body)).into_response();
            response.headers_mut().insert(
                header::LOCATION,
                location.parse().expect("ids are header-safe"),
            );
            return Ok(response);
        }
    }
    state.reserve_job_slot(&caller)?;
    let job = state
        .jobs
        .submit(&model_ref(&entry), spec, total)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    state.record_job_owner(&caller, &job.id);
    let location = format!("/v2/evaluations/{}", job.id);
    let mut response = (StatusCode::ACCEPTED, Json(view(&job, false))).into_response();
    response.headers_mut().insert(
        header::LOCATION,
        location.parse().expect("ids are header-safe"),
    );
    Ok(response)
}

/// The data set's samples checked as an attack's inputs would be.
fn check_dataset(
    data: &Dataset,
    card: &crate::model::ModelCard,
    what: &str,
) -> Result<(), ApiError> {
    let label_type = if data.y.as_i64().is_some() {
        "INT64"
    } else {
        "FP32"
    };
    super::validate::input(data.x.clone(), "FP32", what, card, usize::MAX, true)?;
    super::validate::labels(
        data.y.clone(),
        label_type,
        &format!("{what} labels"),
        card,
        data.x.shape[0],
    )?;
    Ok(())
}

/// What a client sees of a job.
fn view(job: &JobRecord, with_report: bool) -> Value {
    let mut body = progress_data(job);
    body["model"] = json!(job.model);
    body["model_sha256"] = json!(job.model_sha256);
    body["created_at"] = json!(job.created_at);
    body["updated_at"] = json!(job.updated_at);
    body["links"] = json!({
        "self": format!("/v2/evaluations/{}", job.id),
        "events": format!("/v2/evaluations/{}/events", job.id),
        "adversarial_npy": format!("/v2/evaluations/{}/adversarial.npy", job.id),
        "adversarial_safetensors": format!("/v2/evaluations/{}/adversarial.safetensors", job.id),
    });
    if with_report {
        if let Some(report) = &job.report {
            body["report"] = report.clone();
        }
    }
    body
}

pub(super) async fn job(state: &AppState, id: &str) -> Result<JobRecord, ApiError> {
    state
        .store
        .job(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("evaluation {id:?} does not exist")))
}

/// One Server-Sent Event of a job's stream, field by field (the OpenAPI form of an event).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct JobStreamEvent {
    /// Grows by one per event; send the last one seen back as `Last-Event-ID` to resume.
    id: String,
    /// queued, running, progress, succeeded, failed or cancelled.
    event: String,
    /// The job's progress as JSON: id, status, done, total, accuracies so far, error.
    data: String,
}

/// `GET /v2/evaluations`: every job, newest first, without reports.
#[utoipa::path(get, path = "/v2/evaluations", tag = "evaluations", responses((status = 200, description = "Every job, newest first, without reports", body = [Object])))]
pub async fn list(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let jobs = state.store.jobs().await?;
    Ok(Json(Value::Array(
        jobs.iter().map(|j| view(j, false)).collect(),
    )))
}

/// `GET /v2/evaluations/{id}`.
#[utoipa::path(get, path = "/v2/evaluations/{id}", tag = "evaluations", params(("id" = String, Path, description = "Evaluation id")), responses((status = 200, description = "Status, progress and, when it succeeded, the report", body = Object), (status = 404, description = "No such model, data set or evaluation", body = ErrorBody, example = json!({"error": "model \"nope\" is not in the repository", "error_type": "not_found"}))))]
pub async fn status(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(view(&job(&state, &id).await?, true)))
}

/// `DELETE /v2/evaluations/{id}`: cancel a queued or running job.
#[utoipa::path(delete, path = "/v2/evaluations/{id}", tag = "evaluations", params(("id" = String, Path, description = "Evaluation id")), responses((status = 202, description = "Cancelling: the running batch stops between two attack steps", body = Object), (status = 404, description = "No such model, data set or evaluation", body = ErrorBody, example = json!({"error": "model \"nope\" is not in the repository", "error_type": "not_found"})), (status = 409, description = "The resource's state does not allow this", body = ErrorBody)))]
pub async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let record = job(&state, &id).await?;
    if is_terminal(&record.status) {
        return Err(ApiError::Conflict(format!(
            "evaluation {id:?} has already {}",
            record.status
        )));
    }
    if !state.jobs.cancel(&id) {
        state.store.set_job_status(&id, "cancelled", None).await?;
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "id": id, "status": "cancelling" })),
    ))
}

/// `GET /v2/evaluations/{id}/events`: progress as Server-Sent Events. Each event's id grows by
/// one; a client that reconnects with `Last-Event-ID` gets only what it missed. The stream ends
/// after the event that ends the job.
#[utoipa::path(get, path = "/v2/evaluations/{id}/events", tag = "evaluations", params(("id" = String, Path, description = "Evaluation id"), ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this event")), responses((status = 200, description = "Server-Sent Events: queued, running, progress..., then succeeded, failed or cancelled; ids grow by one", body = JobStreamEvent, content_type = "text/event-stream"), (status = 404, description = "No such model, data set or evaluation", body = ErrorBody, example = json!({"error": "model \"nope\" is not in the repository", "error_type": "not_found"}))))]
pub async fn events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let record = job(&state, &id).await?;
    let after: u64 = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let live = state.jobs.live(&id);

    // A job that does not run here any more: one event with where it ended.
    let final_event = match &live {
        None => Some(
            Event::default()
                .event(record.status.clone())
                .data(progress_data(&record).to_string()),
        ),
        Some(_) => None,
    };
    let stream = stream::unfold(
        (live, after, final_event, false),
        |(live, after, final_event, done)| async move {
            if done {
                return None;
            }
            if let Some(event) = final_event {
                return Some((vec![Ok(event)], (live, after, None, true)));
            }
            let live = live?;
            loop {
                let changed = live.changed.notified();
                let (events, finished) = live.events_after(after);
                if !events.is_empty() {
                    drop(changed);
                    let last = events.last().map_or(after, |e| e.id);
                    let out = events
                        .into_iter()
                        .map(|e| {
                            Ok(Event::default()
                                .id(e.id.to_string())
                                .event(e.kind)
                                .data(e.data.to_string()))
                        })
                        .collect();
                    return Some((out, (Some(live), last, None, finished)));
                }
                if finished {
                    return None;
                }
                changed.await;
            }
        },
    )
    .flat_map(stream::iter);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

async fn adversarial(
    state: &AppState,
    id: &str,
) -> Result<(JobRecord, HostTensor, Vec<u8>), ApiError> {
    let record = job(state, id).await?;
    let sha = match (&record.adversarial_sha256, record.status.as_str()) {
        (Some(sha), _) => sha.clone(),
        (None, "succeeded") => {
            return Err(ApiError::Gone(format!(
                "evaluation {id:?}: its adversarial examples were pruned; the report remains"
            )))
        }
        (None, status) => {
            return Err(ApiError::Conflict(format!(
                "evaluation {id:?} is {status}; its examples come when it succeeds"
            )))
        }
    };
    let bytes = state
        .store
        .blobs
        .get(&sha)
        .map_err(|e| ApiError::Internal(format!("evaluation {id:?}: {e}")))?;
    let tensor =
        read_npy(&bytes).map_err(|e| ApiError::Internal(format!("evaluation {id:?}: {e}")))?;
    Ok((record, tensor, bytes))
}

pub(super) fn download(bytes: Vec<u8>, filename: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        ],
        bytes,
    )
        .into_response()
}

/// `GET /v2/evaluations/{id}/adversarial.npy`: the adversarial examples, one per sample.
#[utoipa::path(get, path = "/v2/evaluations/{id}/adversarial.npy", tag = "evaluations", params(("id" = String, Path, description = "Evaluation id")), responses((status = 200, description = "The adversarial examples as .npy", body = Vec<u8>, content_type = "application/octet-stream"), (status = 404, description = "No such model, data set or evaluation", body = ErrorBody, example = json!({"error": "model \"nope\" is not in the repository", "error_type": "not_found"})), (status = 409, description = "The resource's state does not allow this", body = ErrorBody), (status = 410, description = "Pruned; the report remains", body = ErrorBody)))]
pub async fn adversarial_npy(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (_, _, bytes) = adversarial(&state, &id).await?;
    Ok(download(bytes, format!("{id}-adversarial.npy")))
}

/// `GET /v2/evaluations/{id}/adversarial.safetensors`: `adversarial` and, per sample, `robust`
/// (1 when no attack broke it).
#[utoipa::path(get, path = "/v2/evaluations/{id}/adversarial.safetensors", tag = "evaluations", params(("id" = String, Path, description = "Evaluation id")), responses((status = 200, description = "`adversarial` and per-sample `robust` as safetensors", body = Vec<u8>, content_type = "application/octet-stream"), (status = 404, description = "No such model, data set or evaluation", body = ErrorBody, example = json!({"error": "model \"nope\" is not in the repository", "error_type": "not_found"})), (status = 409, description = "The resource's state does not allow this", body = ErrorBody), (status = 410, description = "Pruned; the report remains", body = ErrorBody)))]
pub async fn adversarial_safetensors(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (record, tensor, _) = adversarial(&state, &id).await?;
    let robust: Vec<i64> = record
        .report
        .as_ref()
        .and_then(|r| r["samples"].as_array())
        .map(|rows| {
            rows.iter()
                .map(|s| i64::from(s["robust"].as_bool() == Some(true)))
                .collect()
        })
        .unwrap_or_default();
    let robust = HostTensor::i64(vec![robust.len() as i64], robust);
    let bytes = Dataset::to_safetensors(&[("adversarial", &tensor), ("robust", &robust)]);
    Ok(download(bytes, format!("{id}-adversarial.safetensors")))
}
