//! One look at the model at a batch of points: losses, verdicts and the input gradient.

use tch::{Kind, Tensor};

use super::loss::{self, Target};
use super::spec::LossKind;
use super::{AttackError, AttackedModel};
use crate::model::Task;

/// What the loss compares outputs with, on the model's device.
pub enum Labels {
    /// Class indices `[batch]`, i64 (binary models: 0 or 1).
    Classes(Tensor),
    /// Float targets [batch, k] (regression).
    Values(Tensor),
}

impl Labels {
    pub fn select(&self, rows: &Tensor) -> Result<Self, tch::TchError> {
        Ok(match self {
            Self::Classes(y) => Self::Classes(y.f_index_select(0, rows)?),
            Self::Values(v) => Self::Values(v.f_index_select(0, rows)?),
        })
    }

    pub fn shallow_clone(&self) -> Self {
        match self {
            Self::Classes(y) => Self::Classes(y.shallow_clone()),
            Self::Values(v) => Self::Values(v.shallow_clone()),
        }
    }

    pub fn target(&self) -> Target<'_> {
        match self {
            Self::Classes(y) => Target::Classes(y),
            Self::Values(v) => Target::Values(v),
        }
    }
}

/// The loss an attack climbs and the targets it climbs toward.
#[derive(Clone, Copy)]
pub struct Goal<'a> {
    pub loss: LossKind,
    pub targets: Option<&'a Tensor>,
}

/// The model's answer at a batch of points.
pub struct Probe {
    /// Loss the attack climbs, per sample.
    pub attack_loss: Vec<f32>,
    /// The task loss (cross-entropy, BCE, MSE), per sample: what reports call the robust loss.
    pub task_loss: Vec<f32>,
    /// Predicted class (binary: 0 or 1); none for regression.
    pub prediction: Option<Vec<i64>>,
    /// Misclassified; always false for regression.
    pub wrong: Vec<bool>,
    /// Gradient of the summed attack loss with respect to the points, when asked for.
    pub grad: Option<Tensor>,
    pub zero_grad: Vec<bool>,
    pub nan_grad: Vec<bool>,
    /// The raw outputs, detached.
    pub output: Tensor,
}

/// Runs the model at `x`; with `need_grad`, also the gradient of the attack loss with respect to
/// `x` alone (parameters never accumulate gradients).
pub fn probe(
    model: &AttackedModel,
    x: &Tensor,
    labels: &Labels,
    goal: Goal,
    need_grad: bool,
) -> Result<Probe, AttackError> {
    let task = model.card().task;
    let input = x.f_detach()?.f_set_requires_grad(need_grad)?;
    let output = if need_grad {
        model.forward(&input)?
    } else {
        tch::no_grad(|| model.forward(&input))?
    };

    let target = labels.target();
    let task_kind = LossKind::task_default(task);
    let task_loss = loss::per_sample(task_kind, &output, &target, None)?;
    let same_loss = goal.loss == task_kind && goal.targets.is_none();
    let attack_loss = if same_loss {
        task_loss.shallow_clone()
    } else {
        loss::per_sample(goal.loss, &output, &target, goal.targets)?
    };

    let batch = x.size()[0] as usize;
    let (grad, zero_grad, nan_grad) = if need_grad {
        if !attack_loss.requires_grad() {
            return Err(AttackError::Model(
                "the output does not depend differentiably on the input (no gradient)".to_owned(),
            ));
        }
        let total = attack_loss.f_sum(Kind::Float)?;
        let grad = Tensor::f_run_backward(&[total], &[&input], false, false)?.remove(0);
        // Each sample's least and greatest entry, in one pass: its gradient is all zero when
        // both are zero, and holds NaN when they are NaN (min and max propagate it).
        // Both come back to the host in one copy, [least, greatest] per sample.
        let (least, greatest) = grad.f_reshape([batch as i64, -1])?.f_aminmax(1, false)?;
        let bounds = Vec::<f32>::try_from(&Tensor::f_stack(&[least, greatest], 1)?.f_view(-1)?)?;
        let zero = bounds
            .chunks(2)
            .map(|b| b[0] == 0.0 && b[1] == 0.0)
            .collect();
        let nan = bounds
            .chunks(2)
            .map(|b| b[0].is_nan() || b[1].is_nan())
            .collect();
        (Some(grad), zero, nan)
    } else {
        (None, vec![false; batch], vec![false; batch])
    };

    let output = output.f_detach()?;
    let prediction = match task {
        Task::Classification => Some(Vec::<i64>::try_from(&output.f_argmax(1, false)?)?),
        Task::Binary => Some(Vec::<i64>::try_from(
            &output.f_select(1, 0)?.f_gt(0.0)?.f_to_kind(Kind::Int64)?,
        )?),
        Task::Regression => None,
    };
    let wrong = match (&prediction, labels) {
        (Some(pred), Labels::Classes(y)) => {
            let y = Vec::<i64>::try_from(y)?;
            pred.iter().zip(&y).map(|(p, y)| p != y).collect()
        }
        _ => vec![false; batch],
    };
    let task_loss = Vec::<f32>::try_from(&task_loss)?;
    let attack_loss = if same_loss {
        task_loss.clone()
    } else {
        Vec::<f32>::try_from(&attack_loss)?
    };
    Ok(Probe {
        attack_loss,
        task_loss,
        prediction,
        wrong,
        grad,
        zero_grad,
        nan_grad,
        output,
    })
}
