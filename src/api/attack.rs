//! `POST /v2/models/{model}/attack`: an Open Inference Protocol-shaped request whose
//! `parameters` choose the attack; answered inline with per-sample results and a summary.
//!
//! Inputs by name: `input` (the samples, in the card's domain), `label` (class indices, or FP32
//! targets [n, k] for regression) and optionally `target` (classes for a targeted attack).
//! Parameters, flat for one attack: `attack` (fgsm, pgd, apgd), `norm`, `eps`, `steps`,
//! `step_size`, `random_start`, `restarts`, `loss`, `targeted`, `target_classes`; or `attacks`,
//! a list of such objects (with `method` for `attack`), run as an ensemble. Beside them:
//! `objective` (accuracy, loss), `seed`, and `sample_offset` (the index of the first sample in
//! its data set, which keys the random streams).

use axum::extract::{Path, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::infer::RequestedOutput;
use super::models::model_ref;
use super::{validate, ApiError, ApiJson, AppState, ModelState};
use crate::attack::{AttackPlan, AttackSettings, Objective, SampleResult};
use crate::engine::{Operation, Work, WorkInputs, WorkResult};
use crate::model::{ModelCard, Task};
use crate::tensor::{encode_oip, OipTensor};

pub const ADVERSARIAL_NAME: &str = "adversarial";

#[derive(Debug, Deserialize)]
pub struct AttackRequest {
    #[serde(default)]
    pub id: Option<String>,
    pub inputs: Vec<OipTensor>,
    #[serde(default)]
    pub parameters: Map<String, Value>,
    #[serde(default)]
    pub outputs: Option<Vec<RequestedOutput>>,
}

/// Aggregates over the request's samples.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub n: usize,
    pub attacks: Vec<String>,
    pub objective: Objective,
    pub seed: u64,
    pub clean_accuracy: Option<f64>,
    pub robust_accuracy: Option<f64>,
    pub mean_clean_loss: f64,
    pub mean_robust_loss: f64,
    pub max_robust_loss: f64,
    pub compute_ms: u64,
}

#[derive(Debug, Serialize)]
pub struct AttackResponse {
    pub model_name: String,
    pub model_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub summary: Summary,
    pub samples: Vec<SampleResult>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<OipTensor>,
}

pub async fn attack(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiJson(request): ApiJson<AttackRequest>,
) -> Result<Json<AttackResponse>, ApiError> {
    let entry = state
        .repository
        .get(&name)
        .ok_or_else(|| ApiError::unknown_model(&name))?;
    if let Some(ModelState::Unavailable(reason)) = state.model_state(&name) {
        return Err(ApiError::Model(format!(
            "model {name:?} is unavailable: {reason}"
        )));
    }
    let card = &entry.card;
    let (plan, offset) = plan_from(&request.parameters, card)?;
    let inputs = tensors_from(&request.inputs, card, state.config.max_batch_size, offset)?;
    let want_adversarial = wants_adversarial(&request)?;
    let n = inputs.sample_ids.len();

    let started = std::time::Instant::now();
    let work = Work {
        model: model_ref(entry),
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

    let summary = summarise(&samples, &plan, card.task, elapsed.as_millis() as u64);
    let outputs = if want_adversarial {
        vec![encode_oip(ADVERSARIAL_NAME, &adversarial)]
    } else {
        vec![]
    };
    Ok(Json(AttackResponse {
        model_name: name,
        model_version: "1".to_owned(),
        id: request.id,
        summary,
        samples,
        outputs,
    }))
}

/// The attack plan and the sample offset from the request's parameters.
fn plan_from(
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

/// The request's tensors by name, checked against the card.
fn tensors_from(
    inputs: &[OipTensor],
    card: &ModelCard,
    max_batch: usize,
    offset: u64,
) -> Result<WorkInputs, ApiError> {
    let mut x = None;
    let mut labels = None;
    let mut targets = None;
    for (i, tensor) in inputs.iter().enumerate() {
        let slot = match tensor.name.as_str() {
            "input" => &mut x,
            "label" => &mut labels,
            "target" => &mut targets,
            other => {
                return Err(ApiError::Invalid(format!(
                    "inputs[{i}].name: must be input, label or target, got {other:?}"
                )))
            }
        };
        if slot.replace((i, tensor)).is_some() {
            return Err(ApiError::Invalid(format!(
                "inputs[{i}].name: {:?} given twice",
                tensor.name
            )));
        }
    }
    let (i, x) =
        x.ok_or_else(|| ApiError::Invalid("inputs: an \"input\" tensor is required".to_owned()))?;
    let x = validate::input(x, &format!("inputs[{i}]"), card, max_batch, true)?;
    let n = x.shape[0];
    let (i, label) = labels.ok_or_else(|| {
        ApiError::Invalid("inputs: a \"label\" tensor is required (class per sample)".to_owned())
    })?;
    let labels = validate::labels(label, &format!("inputs[{i}]"), card, n)?;
    let targets = match targets {
        None => None,
        Some((i, t)) => {
            if card.task != Task::Classification {
                return Err(ApiError::Invalid(format!(
                    "inputs[{i}]: only classification models take targets"
                )));
            }
            let decoded = crate::tensor::decode_oip(t, &format!("inputs[{i}]"))?;
            Some(validate::classes(
                decoded,
                t,
                &format!("inputs[{i}]"),
                card,
                n,
            )?)
        }
    };
    let sample_ids = (0..n as u64).map(|k| offset + k).collect();
    Ok(WorkInputs {
        x,
        labels: Some(labels),
        targets,
        sample_ids,
    })
}

fn wants_adversarial(request: &AttackRequest) -> Result<bool, ApiError> {
    let mut wants = false;
    for (i, output) in request.outputs.iter().flatten().enumerate() {
        if output.name != ADVERSARIAL_NAME {
            return Err(ApiError::Invalid(format!(
                "outputs[{i}].name: the attack has one output {ADVERSARIAL_NAME:?}, got {:?}",
                output.name
            )));
        }
        wants = true;
    }
    Ok(wants)
}

fn summarise(samples: &[SampleResult], plan: &AttackPlan, task: Task, compute_ms: u64) -> Summary {
    let n = samples.len();
    let share = |f: &dyn Fn(&SampleResult) -> Option<bool>| {
        (task != Task::Regression)
            .then(|| samples.iter().filter(|s| f(s) == Some(true)).count() as f64 / n as f64)
    };
    let mean = |f: &dyn Fn(&SampleResult) -> f32| {
        samples.iter().map(|s| f64::from(f(s))).sum::<f64>() / n as f64
    };
    Summary {
        n,
        attacks: plan.attacks.iter().map(|a| a.label(task)).collect(),
        objective: plan.objective,
        seed: plan.seed,
        clean_accuracy: share(&|s| s.clean_correct),
        robust_accuracy: share(&|s| s.robust),
        mean_clean_loss: mean(&|s| s.clean_loss),
        mean_robust_loss: mean(&|s| s.robust_loss),
        max_robust_loss: samples
            .iter()
            .map(|s| f64::from(s.robust_loss))
            .fold(f64::MIN, f64::max),
        compute_ms,
    }
}
