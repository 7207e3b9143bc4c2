//! `POST /v2/models/{model}/attack`: an Open Inference Protocol-shaped request whose
//! `parameters` choose the attack; answered inline with the report.
//!
//! Inputs by name: `input` (the samples, in the card's domain), `label` (class indices, or FP32
//! targets [n, k] for regression) and optionally `target` (classes for a targeted attack); JSON
//! data or binary data. Parameters, flat for one attack: `attack` (fgsm, pgd, apgd), `norm`,
//! `eps`, `steps`, `step_size`, `random_start`, `restarts`, `loss`, `targeted`,
//! `target_classes`; or `attacks`, a list of such objects (with `method` for `attack`), run as
//! an ensemble. Beside them: `objective` (accuracy, loss), `seed`, and `sample_offset` (the index
//! of the first sample in its data set, which keys the random streams).

use axum::extract::{Path, State};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::error::ErrorBody;
use super::infer::RequestedOutput;
use super::models::model_ref;
use super::oip::{decode_tensors, wants_binary, OipBody, OipOutputs};
use super::{validate, ApiError, AppState};
use crate::attack::{AttackPlan, AttackSettings, Objective};
use crate::engine::{Operation, Work, WorkInputs, WorkResult};
use crate::model::{ModelCard, Task};
use crate::report::Report;
use crate::tensor::{HostTensor, OipTensor};

pub const ADVERSARIAL_NAME: &str = "adversarial";

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct AttackRequest {
    #[serde(default)]
    pub id: Option<String>,
    pub inputs: Vec<OipTensor>,
    #[serde(default)]
    pub parameters: Map<String, Value>,
    #[serde(default)]
    pub outputs: Option<Vec<RequestedOutput>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AttackResponse {
    pub model_name: String,
    pub model_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub report: Report,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<OipTensor>,
}

#[utoipa::path(post, path = "/v2/models/{model}/attack", tag = "attacks", params(("model" = String, Path, description = "Model name")), request_body(content = AttackRequest, description = "Inputs `input`, `label` (and `target`); parameters choose the attack", example = json!({"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": [0.5]}, {"name": "label", "shape": [1], "datatype": "INT64", "data": [8]}], "parameters": {"attack": "pgd", "eps": 0.1, "steps": 10}})), responses((status = 200, description = "The report, and the adversarial examples when asked", body = AttackResponse), (status = 400, description = "A field breaks a rule; the message names the field, the rule and the value", body = ErrorBody, example = json!({"error": "inputs[0].shape: must be [batch, 1, 8, 8], got [1, 1, 8]", "error_type": "invalid_request"})), (status = 404, description = "No such model, data set or evaluation", body = ErrorBody, example = json!({"error": "model \"nope\" is not in the repository", "error_type": "not_found"})), (status = 413, description = "The body is larger than the server accepts", body = ErrorBody), (status = 422, description = "The model failed or is unavailable", body = ErrorBody), (status = 503, description = "The queue is full; retry after the Retry-After header's seconds", body = ErrorBody, headers(("Retry-After" = u32, description = "Seconds to wait"))), (status = 504, description = "The batch ran past the worker deadline", body = ErrorBody), (status = 500, description = "A worker died twice on this request, or another internal failure", body = ErrorBody)))]
pub async fn attack(
    State(state): State<AppState>,
    Path(name): Path<String>,
    OipBody {
        header: mut request,
        binary,
    }: OipBody<AttackRequest>,
) -> Result<Response, ApiError> {
    let entry = state.servable(&name)?;
    let card = &entry.card;
    let binary_output = request
        .parameters
        .remove("binary_data_output")
        .and_then(|v| v.as_bool());
    let (plan, offset) = plan_from(&request.parameters, card)?;
    let decoded = decode_tensors(&request.inputs, &binary)?;
    let named: Vec<(&OipTensor, HostTensor)> = request.inputs.iter().zip(decoded).collect();
    let inputs = tensors_from(named, card, state.config.max_batch_size, offset)?;
    let adversarial_output = adversarial_wanted(&request, binary_output)?;
    let n = inputs.sample_ids.len();

    let started = std::time::Instant::now();
    let work = Work {
        model: model_ref(&entry),
        operation: Operation::Attack(plan.clone()),
        inputs,
    };
    let WorkResult::Attacked {
        samples,
        adversarial,
    } = state.pool.submit(work).await?
    else {
        return Err(ApiError::Internal(
            "the worker answered an attack with no result".to_owned(),
        ));
    };
    let elapsed = started.elapsed();
    super::record_on_span(&name, n as i64, elapsed);

    let report = Report::new(
        &name,
        &entry.sha256,
        &plan,
        card.task,
        samples,
        elapsed.as_millis() as u64,
    );
    let mut outputs = OipOutputs::default();
    if let Some(binary) = adversarial_output {
        outputs.push(ADVERSARIAL_NAME, &adversarial, binary);
    }
    let body = AttackResponse {
        model_name: name,
        model_version: "1".to_owned(),
        id: request.id,
        report,
        outputs: std::mem::take(&mut outputs.tensors),
    };
    Ok(outputs.respond(&body))
}

/// The attack plan and the sample offset from a request's parameters.
pub fn plan_from(
    parameters: &Map<String, Value>,
    card: &ModelCard,
) -> Result<(AttackPlan, u64), ApiError> {
    let mut rest = parameters.clone();
    let invalid =
        |field: &str, e: serde_json::Error| ApiError::Invalid(format!("parameters.{field}: {e}"));
    let objective: Objective = match rest.remove("objective") {
        Some(v) => serde_json::from_value(v).map_err(|e| invalid("objective", e))?,
        None => Objective::default(),
    };
    let seed: u64 = match rest.remove("seed") {
        Some(v) => serde_json::from_value(v).map_err(|e| invalid("seed", e))?,
        None => 0,
    };
    let offset: u64 = match rest.remove("sample_offset") {
        Some(v) => serde_json::from_value(v).map_err(|e| invalid("sample_offset", e))?,
        None => 0,
    };

    let (attacks, flat) = match rest.remove("attacks") {
        Some(list) => {
            if let Some(key) = rest.keys().next() {
                return Err(ApiError::Invalid(format!(
                    "parameters.{key}: give the attack settings flat or inside attacks, not both"
                )));
            }
            let list: Vec<AttackSettings> =
                serde_json::from_value(list).map_err(|e| invalid("attacks", e))?;
            (list, false)
        }
        None => {
            let Some(method) = rest.remove("attack") else {
                return Err(ApiError::Invalid(
                    "parameters.attack: required, one of fgsm, pgd, apgd".to_owned(),
                ));
            };
            rest.insert("method".to_owned(), method);
            let settings: AttackSettings =
                serde_json::from_value(Value::Object(rest)).map_err(|e| {
                    ApiError::Invalid(format!(
                        "parameters: {}",
                        e.to_string().replace("method", "attack")
                    ))
                })?;
            (vec![settings], true)
        }
    };
    let plan = AttackPlan {
        attacks,
        objective,
        seed,
        last_iterate: false,
    };
    plan.validate(card.task, card.num_classes)
        .map_err(|message| {
            let message = if flat {
                message.replacen("attacks[0].", "", 1)
            } else {
                message
            };
            ApiError::Invalid(format!("parameters.{message}"))
        })?;
    Ok((plan, offset))
}

/// The request's tensors by name (`input`, `label`, `target`), checked against the card.
pub fn tensors_from(
    named: Vec<(&OipTensor, HostTensor)>,
    card: &ModelCard,
    max_batch: usize,
    offset: u64,
) -> Result<WorkInputs, ApiError> {
    let mut slots: [Option<(usize, &OipTensor, HostTensor)>; 3] = [None, None, None];
    for (i, (meta, tensor)) in named.into_iter().enumerate() {
        let slot = match meta.name.as_str() {
            "input" => 0,
            "label" => 1,
            "target" => 2,
            other => {
                return Err(ApiError::Invalid(format!(
                    "inputs[{i}].name: must be input, label or target, got {other:?}"
                )))
            }
        };
        if slots[slot].replace((i, meta, tensor)).is_some() {
            return Err(ApiError::Invalid(format!(
                "inputs[{i}].name: {:?} given twice",
                meta.name
            )));
        }
    }
    let [x, labels, targets] = slots;
    let (i, meta, x) =
        x.ok_or_else(|| ApiError::Invalid("inputs: an \"input\" tensor is required".to_owned()))?;
    let x = validate::input(
        x,
        &meta.datatype,
        &format!("inputs[{i}]"),
        card,
        max_batch,
        true,
    )?;
    let n = x.shape[0];
    let (i, meta, labels) = labels.ok_or_else(|| {
        ApiError::Invalid("inputs: a \"label\" tensor is required (one per sample)".to_owned())
    })?;
    let labels = validate::labels(labels, &meta.datatype, &format!("inputs[{i}]"), card, n)?;
    let targets = match targets {
        None => None,
        Some((i, _, _)) if card.task != Task::Classification => {
            return Err(ApiError::Invalid(format!(
                "inputs[{i}]: only classification models take targets"
            )))
        }
        Some((i, meta, t)) => Some(validate::classes(
            t,
            &meta.datatype,
            &format!("inputs[{i}]"),
            card,
            n,
        )?),
    };
    let sample_ids = (0..n as u64).map(|k| offset + k).collect();
    Ok(WorkInputs {
        x,
        labels: Some(labels),
        targets,
        sample_ids,
    })
}

/// Whether the adversarial examples were asked for, and if so whether as binary data.
fn adversarial_wanted(
    request: &AttackRequest,
    binary_all: Option<bool>,
) -> Result<Option<bool>, ApiError> {
    let mut wanted = None;
    for (i, output) in request.outputs.iter().flatten().enumerate() {
        if output.name != ADVERSARIAL_NAME {
            return Err(ApiError::Invalid(format!(
                "outputs[{i}].name: the attack has one output {ADVERSARIAL_NAME:?}, got {:?}",
                output.name
            )));
        }
        let mut request_level = Map::new();
        if let Some(flag) = binary_all {
            request_level.insert("binary_data_output".to_owned(), Value::from(flag));
        }
        wanted = Some(wants_binary(
            Some(&request_level),
            output.parameters.as_ref(),
        ));
    }
    Ok(wanted)
}
