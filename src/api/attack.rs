//! `POST /v2/models/{model}/attack`: an Open Inference Protocol-shaped request whose
//! `parameters` choose the attack; answered inline with the report.
//!
//! Inputs by name: `input` (the samples, in the card's domain), `label` (class indices, or FP32
//! targets [n, k] for regression) and optionally `target` (classes for a targeted attack); JSON
//! data or binary data. Parameters, flat for one attack: `attack` (fgsm, pgd, apgd, noise),
//! `norm`, `eps`, `steps`, `step_size`, `random_start`, `restarts`, `loss`, `targeted`,
//! `target_classes`; or `attacks`, a list of such objects (with `method` for `attack`), run as
//! an ensemble. `eps` may be a list: a sweep, one run per eps (for every attack of an
//! ensemble). Beside them: `objective` (accuracy, loss), `seed`, `sample_offset` (the index of
//! the first sample in its data set, which keys the random streams), `thorough` (also run the
//! sanity checks that cost extra attack runs) and `gate` (thresholds the report is judged by).

use axum::extract::{Path, State};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::error::ErrorBody;
use super::infer::RequestedOutput;
use super::models::model_ref;
use super::oip::{decode_tensors, wants_binary, OipBody, OipOutputs};
use super::{validate, ApiError, AppState};
use futures_util::future::join_all;

use crate::attack::{AttackPlan, AttackSettings, Objective, SampleResult};
use crate::config::Limits;
use crate::engine::{Work, WorkInputs, WorkResult};
use crate::evaluation::{output_probe, EvalSpec, MAX_SWEEP};
use crate::model::{ModelCard, Task};
use crate::report::{Baseline, ExtraRuns, Gate, Report, ReportInputs, Timings};
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
    let (mut spec, offset) = plan_from(&request.parameters, card, &state.config.limits)?;
    resolve_baseline(&state, &mut spec).await?;
    let decoded = decode_tensors(&request.inputs, &binary, &state.config.limits)?;
    let named: Vec<(&OipTensor, HostTensor)> = request.inputs.iter().zip(decoded).collect();
    let inputs = tensors_from(named, card, state.config.max_batch_size, offset)?;
    let adversarial_output = adversarial_wanted(&request, binary_output)?;
    let n = inputs.sample_ids.len();
    let model = model_ref(&entry);

    // Every eps of a sweep at once: with several workers they run side by side.
    let started = std::time::Instant::now();
    let runs = spec.attack_works(&model, &inputs);
    let results = join_all(runs.into_iter().map(|(eps, work)| {
        let pool = state.pool.clone();
        async move { (eps, pool.submit_since(work, started).await) }
    }))
    .await;
    let mut per_eps = Vec::with_capacity(results.len());
    let mut adversarial = None;
    for (eps, result) in results {
        let (samples, adv) = attacked(result?)?;
        per_eps.push((eps, samples));
        adversarial = Some(adv);
    }
    let adversarial = adversarial.expect("a plan runs at least once");
    let attack_ms = started.elapsed().as_millis() as u64;

    // The checks are later parts of the same request: they wait for no batching delay again.
    let checks_started = std::time::Instant::now();
    let works = spec.check_works(&model, &inputs, card, state.config.max_batch_size);
    let pool = &state.pool;
    let extra_run = |work: Option<Work>| async move {
        match work {
            None => Ok(None),
            Some(work) => {
                attacked(pool.submit_since(work, started).await?).map(|(rows, _)| Some(rows))
            }
        }
    };
    let unbounded_eps = works.unbounded.as_ref().map_or(0.0, |(eps, _)| *eps);
    let (probe, single_step, noise, unbounded) = tokio::join!(
        pool.submit_since(works.probe, started),
        extra_run(works.single_step),
        extra_run(works.noise),
        extra_run(works.unbounded.map(|(_, w)| w)),
    );
    let probe = match probe? {
        WorkResult::Output(output) => output_probe(&output),
        _ => {
            return Err(ApiError::Internal(
                "the worker answered a forward pass with no output".to_owned(),
            ))
        }
    };
    let extra = spec.thorough.then(|| -> Result<ExtraRuns, ApiError> {
        Ok(ExtraRuns {
            n: works.n,
            single_step: single_step?,
            noise: noise?,
            unbounded: unbounded?,
            unbounded_eps,
        })
    });
    let extra = extra.transpose()?;
    let elapsed = started.elapsed();
    super::record_on_span(&name, n as i64, elapsed);

    let headline = spec
        .runs()
        .pop()
        .map(|(_, p)| p)
        .unwrap_or(spec.plan.clone());
    let report = Report::assemble(ReportInputs {
        model: &name,
        model_sha256: &entry.sha256,
        task: card.task,
        num_classes: card.num_classes,
        plan: &headline,
        runs: per_eps,
        swept: spec.swept(),
        thorough: spec.thorough,
        probe: Some(&probe),
        extra: extra.as_ref(),
        gate: spec.gate.as_ref(),
        timings: Timings {
            attack_ms,
            checks_ms: checks_started.elapsed().as_millis() as u64,
            total_ms: elapsed.as_millis() as u64,
        },
    });
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

/// The evaluation settings and the sample offset from a request's parameters: the attack (flat)
/// or `attacks` (an ensemble), `eps` as a number or a list (a sweep, which then applies to
/// every attack), `objective`, `seed`, `sample_offset`, `thorough` and `gate`.
pub fn plan_from(
    parameters: &Map<String, Value>,
    card: &ModelCard,
    limits: &Limits,
) -> Result<(EvalSpec, u64), ApiError> {
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
    let thorough: bool = match rest.remove("thorough") {
        Some(v) => serde_json::from_value(v).map_err(|e| invalid("thorough", e))?,
        None => false,
    };
    let gate: Option<Gate> = match rest.remove("gate") {
        Some(v) => Some(serde_json::from_value(v).map_err(|e| invalid("gate", e))?),
        None => None,
    };
    if let Some(gate) = &gate {
        gate.validate(card.task)
            .map_err(|m| ApiError::Invalid(format!("parameters.{m}")))?;
    }
    // eps: a number, or a list for a sweep.
    let mut sweep: Vec<f64> = Vec::new();
    let mut eps: Option<Value> = None;
    match rest.remove("eps") {
        None => {}
        Some(Value::Array(list)) => {
            if list.is_empty() || list.len() > MAX_SWEEP {
                return Err(ApiError::Invalid(format!(
                    "parameters.eps: a sweep lists 1 to {MAX_SWEEP} values, got {}",
                    list.len()
                )));
            }
            for (i, v) in list.iter().enumerate() {
                match v.as_f64() {
                    Some(x) if x.is_finite() && x >= 0.0 => sweep.push(x),
                    _ => {
                        return Err(ApiError::Invalid(format!(
                            "parameters.eps[{i}]: must be a finite number >= 0, got {v}"
                        )))
                    }
                }
            }
            sweep.sort_by(f64::total_cmp);
            sweep.dedup();
            eps = sweep.last().map(|&x| Value::from(x));
        }
        Some(v) => eps = Some(v),
    }

    let (attacks, flat) = match rest.remove("attacks") {
        Some(list) => {
            if let Some(key) = rest.keys().next() {
                return Err(ApiError::Invalid(format!(
                    "parameters.{key}: give the attack settings flat or inside attacks, not both"
                )));
            }
            let mut list = match list {
                Value::Array(list) => list,
                other => {
                    return Err(ApiError::Invalid(format!(
                        "parameters.attacks: must be a list of attacks, got {other}"
                    )))
                }
            };
            // A top-level eps (or sweep) applies to every attack of the ensemble.
            if let Some(eps) = &eps {
                for attack in list.iter_mut() {
                    if let Value::Object(map) = attack {
                        map.insert("eps".to_owned(), eps.clone());
                    }
                }
            }
            let list: Vec<AttackSettings> =
                serde_json::from_value(Value::Array(list)).map_err(|e| invalid("attacks", e))?;
            (list, false)
        }
        None => {
            let Some(method) = rest.remove("attack") else {
                return Err(ApiError::Invalid(
                    "parameters.attack: required, one of fgsm, pgd, apgd, noise".to_owned(),
                ));
            };
            rest.insert("method".to_owned(), method);
            if let Some(eps) = eps {
                rest.insert("eps".to_owned(), eps);
            }
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
    for (i, attack) in plan.attacks.iter().enumerate() {
        let field = if flat {
            "parameters".to_owned()
        } else {
            format!("parameters.attacks[{i}]")
        };
        if attack.steps > limits.max_steps {
            return Err(ApiError::Invalid(format!(
                "{field}.steps: must be at most {} on this server (--max-steps), got {}",
                limits.max_steps, attack.steps
            )));
        }
        if attack.restarts > limits.max_restarts {
            return Err(ApiError::Invalid(format!(
                "{field}.restarts: must be at most {} on this server (--max-restarts), got {}",
                limits.max_restarts, attack.restarts
            )));
        }
    }
    let spec = EvalSpec {
        plan,
        sweep,
        thorough,
        gate,
    };
    Ok((spec, offset))
}

/// Fetches the figures of a gate's baseline named by evaluation id.
pub async fn resolve_baseline(state: &AppState, spec: &mut EvalSpec) -> Result<(), ApiError> {
    let Some(baseline) = spec.gate.as_mut().and_then(|g| g.baseline.as_mut()) else {
        return Ok(());
    };
    let Some(id) = baseline.unresolved().map(str::to_owned) else {
        return Ok(());
    };
    let job = state.store.job(&id).await?.ok_or_else(|| {
        ApiError::Invalid(format!(
            "parameters.gate.baseline: evaluation {id:?} does not exist"
        ))
    })?;
    let report = job.report.as_ref().ok_or_else(|| {
        ApiError::Invalid(format!(
            "parameters.gate.baseline: evaluation {id:?} is {}, it has no report",
            job.status
        ))
    })?;
    *baseline = Baseline::from_report(report, Some(id))
        .map_err(|m| ApiError::Invalid(format!("parameters.gate.baseline: {m}")))?;
    Ok(())
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

/// The rows and examples of an attack's result.
pub fn attacked(result: WorkResult) -> Result<(Vec<SampleResult>, HostTensor), ApiError> {
    match result {
        WorkResult::Attacked {
            samples,
            adversarial,
        } => Ok((samples, adversarial)),
        _ => Err(ApiError::Internal(
            "the worker answered an attack with no result".to_owned(),
        )),
    }
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
