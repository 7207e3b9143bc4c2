//! Running a plan on a batch: the clean pass, the attacks in order (an ensemble keeps, per
//! sample, the first example that breaks it, or the highest-loss one), and the per-sample rows.

use std::sync::atomic::{AtomicBool, Ordering};

use tch::{Kind, Tensor};

use super::ball::{l2_norms, linf_norms, Ball};
use super::probe::{probe, Goal, Labels};
use super::spec::{AttackPlan, AttackSettings, LossKind, Method, Norm, SampleResult};
use super::tracker::{index, whole_in_order, Breach, Tracker};
use super::{apgd, pgd, stream, AttackError, AttackedModel};
use crate::model::Task;

/// A batch to attack, on the model's device.
pub struct Batch {
    /// Clean inputs [N, ...], inside the model's domain.
    pub x: Tensor,
    pub labels: Labels,
    /// Each sample's index in its data set: the key of its random streams.
    pub sample_ids: Vec<u64>,
    /// Target classes `[N]` for targeted attacks; derived from the clean logits when absent.
    pub targets: Option<Tensor>,
}

/// The plan's result on a batch.
pub struct Evaluation {
    pub samples: Vec<SampleResult>,
    /// The example each sample keeps, [N, ...].
    pub adversarial: Tensor,
}

/// What the attacks share while running on one batch.
pub struct Context<'a> {
    pub model: &'a AttackedModel,
    pub batch: &'a Batch,
    pub seed: u64,
    pub cancel: Option<&'a AtomicBool>,
}

impl Context<'_> {
    pub fn ball(&self, settings: &AttackSettings) -> Ball {
        let [lo, hi] = self.model.card().input.domain;
        Ball {
            norm: settings.norm,
            eps: settings.eps,
            lo,
            hi,
        }
    }

    pub fn check_cancelled(&self) -> Result<(), AttackError> {
        match self.cancel {
            Some(flag) if flag.load(Ordering::Relaxed) => Err(AttackError::Cancelled),
            _ => Ok(()),
        }
    }

    /// Start noise for `rows` from their own streams: uniforms [b, d] for Linf, normals and a
    /// radius [b, d + 1] for L2.
    pub fn start_noise(
        &self,
        rows: &[i64],
        norm: Norm,
        attack: u64,
        restart: u64,
    ) -> Result<Tensor, tch::TchError> {
        let ids: Vec<u64> = rows
            .iter()
            .map(|&r| self.batch.sample_ids[r as usize])
            .collect();
        let d = self.model.card().sample_len();
        let (values, width) = match norm {
            Norm::Linf => (stream::uniforms(&ids, d, self.seed, attack, restart), d),
            Norm::L2 => (
                stream::normals_and_radius(&ids, d, self.seed, attack, restart),
                d + 1,
            ),
        };
        Tensor::f_from_slice(&values)?
            .f_reshape([ids.len() as i64, width as i64])?
            .f_to_device(self.model.device())
    }
}

/// The rows an attack works on and their slices of the batch; shrinks as points break.
pub struct Rows {
    pub ids: Vec<i64>,
    pub clean: Tensor,
    pub labels: Labels,
    pub targets: Option<Tensor>,
}

impl Rows {
    pub fn new(
        ctx: &Context,
        ids: Vec<i64>,
        targets: Option<&Tensor>,
    ) -> Result<Option<Self>, tch::TchError> {
        if ids.is_empty() {
            return Ok(None);
        }
        // The whole batch in order: its tensors as they are, no copies.
        if whole_in_order(&ids, ctx.batch.sample_ids.len()) {
            return Ok(Some(Self {
                clean: ctx.batch.x.shallow_clone(),
                labels: ctx.batch.labels.shallow_clone(),
                targets: targets.map(Tensor::shallow_clone),
                ids,
            }));
        }
        let at = index(&ids, ctx.model.device())?;
        Ok(Some(Self {
            clean: ctx.batch.x.f_index_select(0, &at)?,
            labels: ctx.batch.labels.select(&at)?,
            targets: targets.map(|t| t.f_index_select(0, &at)).transpose()?,
            ids,
        }))
    }

    /// Keeps positions `keep` (into the current rows); returns their index tensor for the
    /// caller's own per-row tensors.
    pub fn retain(&mut self, keep: &[usize]) -> Result<Tensor, tch::TchError> {
        let positions: Vec<i64> = keep.iter().map(|&j| j as i64).collect();
        let at = index(&positions, self.clean.device())?;
        self.ids = keep.iter().map(|&j| self.ids[j]).collect();
        self.clean = self.clean.f_index_select(0, &at)?;
        self.labels = self.labels.select(&at)?;
        self.targets = self
            .targets
            .as_ref()
            .map(|t| t.f_index_select(0, &at))
            .transpose()?;
        Ok(at)
    }
}

/// Runs `plan` on `batch`. `cancel`, when set, stops the run between two steps.
pub fn evaluate(
    model: &AttackedModel,
    batch: &Batch,
    plan: &AttackPlan,
    cancel: Option<&AtomicBool>,
) -> Result<Evaluation, AttackError> {
    let card = model.card();
    plan.validate(card.task, card.num_classes)
        .map_err(AttackError::Input)?;
    check_batch(model, batch)?;

    let task_goal = Goal {
        loss: LossKind::task_default(card.task),
        targets: None,
    };
    let clean = probe(model, &batch.x, &batch.labels, task_goal, false)?;
    if clean.task_loss.iter().any(|l| l.is_nan()) {
        return Err(AttackError::Model(
            "the model's output on clean inputs holds NaN".to_owned(),
        ));
    }
    let ctx = Context {
        model,
        batch,
        seed: plan.seed,
        cancel,
    };
    let mut tracker = Tracker::new(&batch.x, &clean, plan.stops_early(), plan.last_iterate);

    for (a, settings) in plan.attacks.iter().enumerate() {
        let goal_loss = settings.loss(card.task);
        let rounds = target_rounds(&ctx, settings, &clean.output)?;
        for (round, targets) in rounds.iter().enumerate() {
            for restart in 0..settings.restarts {
                let stream = (round as u64) * u64::from(settings.restarts) + u64::from(restart);
                let targets = targets.as_ref();
                match settings.method {
                    Method::Fgsm | Method::Pgd | Method::Noise => {
                        pgd::run(&ctx, a, settings, goal_loss, targets, stream, &mut tracker)?
                    }
                    Method::Apgd => {
                        apgd::run(&ctx, a, settings, goal_loss, targets, stream, &mut tracker)?
                    }
                }
                // Without randomness another restart would repeat the same run.
                if settings.method == Method::Fgsm
                    || (settings.method == Method::Pgd && !settings.random_start)
                {
                    break;
                }
            }
        }
    }

    // The tracker measured each kept point when it took it; only when some were taken from a
    // probe of part of the batch is the whole batch measured again.
    let adversarial = tracker.kept.shallow_clone();
    let (kept_prediction, kept_loss) = if tracker.partial {
        let attacked = probe(model, &adversarial, &batch.labels, task_goal, false)?;
        (attacked.prediction, attacked.task_loss)
    } else {
        (
            tracker.kept_prediction.take(),
            std::mem::take(&mut tracker.kept_loss),
        )
    };
    let delta = adversarial.f_sub(&batch.x)?;
    let linf = Vec::<f32>::try_from(&linf_norms(&delta)?)?;
    let l2 = Vec::<f32>::try_from(&l2_norms(&delta)?.f_view(-1)?)?;
    let labels: Vec<String> = plan.attacks.iter().map(|s| s.label(card.task)).collect();
    let classes = match &batch.labels {
        Labels::Classes(y) => Some(Vec::<i64>::try_from(y)?),
        Labels::Values(_) => None,
    };

    let samples = (0..batch.sample_ids.len())
        .map(|i| {
            let classifies = card.task != Task::Regression;
            let (broken_by, broken_at_step) = match tracker.breach[i] {
                None => (None, None),
                Some(Breach::Clean) => (Some("clean".to_owned()), Some(0)),
                Some(Breach::Attack { attack, step }) => (Some(labels[attack].clone()), Some(step)),
            };
            SampleResult {
                index: batch.sample_ids[i],
                label: classes.as_ref().map(|c| c[i]),
                clean_prediction: clean.prediction.as_ref().map(|p| p[i]),
                adversarial_prediction: kept_prediction.as_ref().map(|p| p[i]),
                clean_correct: classifies.then_some(!clean.wrong[i]),
                robust: classifies.then_some(tracker.breach[i].is_none()),
                clean_loss: clean.task_loss[i],
                robust_loss: kept_loss[i],
                linf: linf[i],
                l2: l2[i],
                broken_by,
                broken_at_step,
                zero_gradient: tracker.zero_grad[i],
                nan_gradient: tracker.nan_grad[i],
            }
        })
        .collect();
    Ok(Evaluation {
        samples,
        adversarial,
    })
}

/// The targets of each round of a targeted attack: the given ones, or AutoAttack's choice of the
/// 2nd, 3rd, ... most likely class on the clean input.
fn target_rounds(
    ctx: &Context,
    settings: &AttackSettings,
    clean_output: &Tensor,
) -> Result<Vec<Option<Tensor>>, AttackError> {
    if !settings.targeted {
        return Ok(vec![None]);
    }
    if let Some(targets) = &ctx.batch.targets {
        return Ok(vec![Some(targets.shallow_clone())]);
    }
    let classes = ctx.model.card().num_classes.unwrap_or(2);
    let rounds = i64::from(settings.target_classes.unwrap_or(9)).min(classes - 1);
    let (_, order) = clean_output.f_sort(1, true)?;
    (1..=rounds)
        .map(|r| Ok(Some(order.f_select(1, r)?)))
        .collect()
}

/// Refuses a batch that does not fit the model before any attack runs.
fn check_batch(model: &AttackedModel, batch: &Batch) -> Result<(), AttackError> {
    let card = model.card();
    let size = batch.x.size();
    let n = batch.sample_ids.len() as i64;
    if size.len() != card.input.shape.len() + 1 || size[1..] != card.input.shape[..] {
        return Err(AttackError::Input(format!(
            "inputs: shape must be [batch, {:?}], got {size:?}",
            card.input.shape
        )));
    }
    if size[0] != n || n == 0 {
        return Err(AttackError::Input(format!(
            "inputs: {} samples but {n} sample ids",
            size[0]
        )));
    }
    let [lo, hi] = card.input.domain;
    let min = batch.x.f_min()?.f_double_value(&[])?;
    let max = batch.x.f_max()?.f_double_value(&[])?;
    if !(min >= lo - 1e-6 && max <= hi + 1e-6) {
        return Err(AttackError::Input(format!(
            "inputs: values must lie in the model's domain [{lo}, {hi}], got [{min}, {max}]"
        )));
    }
    match (&batch.labels, card.task) {
        (Labels::Classes(y), Task::Classification | Task::Binary) => {
            let classes = if card.task == Task::Binary {
                2
            } else {
                card.num_classes.unwrap_or(2)
            };
            check_classes("labels", y, n, classes)?;
            if let Some(t) = &batch.targets {
                check_classes("targets", t, n, classes)?;
            }
        }
        (Labels::Values(v), Task::Regression) => {
            if v.size().len() != 2 || v.size()[0] != n {
                return Err(AttackError::Input(format!(
                    "labels: a regression model takes float targets [batch, k], got {:?}",
                    v.size()
                )));
            }
        }
        _ => {
            return Err(AttackError::Input(format!(
                "labels: a {:?} model takes {}",
                card.task,
                if card.task == Task::Regression {
                    "float targets"
                } else {
                    "class indices"
                }
            )))
        }
    }
    Ok(())
}

fn check_classes(field: &str, y: &Tensor, n: i64, classes: i64) -> Result<(), AttackError> {
    if y.size() != [n] || y.kind() != Kind::Int64 {
        return Err(AttackError::Input(format!(
            "{field}: must be {n} integer class indices, got shape {:?}",
            y.size()
        )));
    }
    let values = Vec::<i64>::try_from(y)?;
    if let Some(i) = values.iter().position(|&c| !(0..classes).contains(&c)) {
        return Err(AttackError::Input(format!(
            "{field}[{i}]: must be a class index in 0..{classes}, got {}",
            values[i]
        )));
    }
    Ok(())
}
