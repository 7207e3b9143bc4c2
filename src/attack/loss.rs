//! Per-sample losses, each a tensor of shape `[batch]`; higher means more adversarial.

use tch::{Kind, Reduction, Tensor};

use super::spec::LossKind;

/// What a loss compares the model's output with.
pub enum Target<'a> {
    /// Class indices `[batch]` (binary models: 0 or 1).
    Classes(&'a Tensor),
    /// Float targets [batch, k] (regression).
    Values(&'a Tensor),
}

/// The loss per sample. `target_classes` turns classification losses into their targeted form
/// (the attack then climbs toward those classes).
pub fn per_sample(
    kind: LossKind,
    output: &Tensor,
    target: &Target,
    target_classes: Option<&Tensor>,
) -> Result<Tensor, tch::TchError> {
    match (kind, target, target_classes) {
        (LossKind::CrossEntropy, Target::Classes(y), None) => cross_entropy(output, y),
        (LossKind::CrossEntropy, Target::Classes(_), Some(t)) => cross_entropy(output, t)?.f_neg(),
        (LossKind::Margin, Target::Classes(y), None) => margin(output, y),
        (LossKind::Margin, Target::Classes(_), Some(t)) => margin(output, t)?.f_neg(),
        (LossKind::Dlr, Target::Classes(y), None) => dlr(output, y),
        (LossKind::Dlr, Target::Classes(y), Some(t)) => dlr_targeted(output, y, t),
        (LossKind::Bce, Target::Classes(y), None) => bce(output, y),
        (LossKind::Mse, Target::Values(v), None) => mse(output, v),
        _ => Err(tch::TchError::Kind(format!(
            "loss {} does not apply to these targets",
            kind.name()
        ))),
    }
}

pub fn cross_entropy(logits: &Tensor, y: &Tensor) -> Result<Tensor, tch::TchError> {
    logits.f_cross_entropy_loss::<Tensor>(y, None, Reduction::None, -100, 0.0)
}

/// The value of each row's logit at `y`, shape [batch].
fn pick(logits: &Tensor, y: &Tensor) -> Result<Tensor, tch::TchError> {
    logits
        .f_gather(1, &y.f_unsqueeze(1)?, false)?
        .f_squeeze_dim(1)
}

/// Carlini-Wagner margin: the best other logit minus the true one.
pub fn margin(logits: &Tensor, y: &Tensor) -> Result<Tensor, tch::TchError> {
    let true_logit = pick(logits, y)?;
    let mask = logits
        .f_zeros_like()?
        .f_scatter_value(1, &y.f_unsqueeze(1)?, f64::INFINITY)?;
    let (best_other, _) = logits.f_sub(&mask)?.f_max_dim(1, false)?;
    best_other.f_sub(&true_logit)
}

/// Difference of logits ratio: -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3).
pub fn dlr(logits: &Tensor, y: &Tensor) -> Result<Tensor, tch::TchError> {
    let (sorted, order) = logits.f_sort(1, false)?;
    let top = sorted.f_select(1, -1)?;
    let second = sorted.f_select(1, -2)?;
    let third = sorted.f_select(1, -3)?;
    let y_is_top = order
        .f_select(1, -1)?
        .f_eq_tensor(y)?
        .f_to_kind(Kind::Float)?;
    // The best logit other than y's: the second when y is on top, else the top.
    let best_other = second
        .f_mul(&y_is_top)?
        .f_add(&top.f_mul(&y_is_top.f_neg()?.f_add_scalar(1.0)?)?)?;
    let numerator = pick(logits, y)?.f_sub(&best_other)?;
    numerator
        .f_div(&top.f_sub(&third)?.f_add_scalar(1e-12)?)?
        .f_neg()
}

/// Targeted DLR: -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2).
pub fn dlr_targeted(logits: &Tensor, y: &Tensor, t: &Tensor) -> Result<Tensor, tch::TchError> {
    let (sorted, _) = logits.f_sort(1, false)?;
    let top = sorted.f_select(1, -1)?;
    let third = sorted.f_select(1, -3)?;
    let fourth = sorted.f_select(1, -4)?;
    let scale = top
        .f_sub(&third.f_add(&fourth)?.f_mul_scalar(0.5)?)?
        .f_add_scalar(1e-12)?;
    pick(logits, y)?
        .f_sub(&pick(logits, t)?)?
        .f_div(&scale)?
        .f_neg()
}

/// Binary cross-entropy with logits for a one-logit model.
pub fn bce(logit: &Tensor, y: &Tensor) -> Result<Tensor, tch::TchError> {
    let z = logit.f_select(1, 0)?;
    z.f_binary_cross_entropy_with_logits::<Tensor>(
        &y.f_to_kind(Kind::Float)?,
        None,
        None,
        Reduction::None,
    )
}

/// Mean squared error over each row.
pub fn mse(output: &Tensor, target: &Tensor) -> Result<Tensor, tch::TchError> {
    output
        .f_sub(target)?
        .f_square()?
        .f_mean_dim(1, false, Kind::Float)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &Tensor, b: &[f32]) {
        let a = Vec::<f32>::try_from(a).unwrap();
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-5, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn margin_and_dlr_follow_their_definitions() {
        let logits = Tensor::from_slice(&[3.0f32, 1.0, 0.0, -1.0, 0.0, 2.0, 5.0, 1.0]).view([2, 4]);
        let y = Tensor::from_slice(&[0i64, 1]);
        // Row 0: best other 1 - 3; row 1: best other 5 - 2.
        close(&margin(&logits, &y).unwrap(), &[-2.0, 3.0]);
        // Row 0: y on top, -(3 - 1) / (3 - 0); row 1: -(2 - 5) / (5 - 1).
        close(&dlr(&logits, &y).unwrap(), &[-2.0 / 3.0, 0.75]);
        // Targeted at class 2: -(z_y - z_t) / (z1 - (z3 + z4) / 2).
        let t = Tensor::from_slice(&[2i64, 2]);
        close(
            &dlr_targeted(&logits, &y, &t).unwrap(),
            &[-3.0 / 3.5, 3.0 / 4.5],
        );
    }

    #[test]
    fn cross_entropy_bce_and_mse_are_per_sample() {
        let logits = Tensor::from_slice(&[0.0f32, 0.0, 10.0, 0.0]).view([2, 2]);
        let y = Tensor::from_slice(&[1i64, 0]);
        let ce = cross_entropy(&logits, &y).unwrap();
        close(&ce, &[std::f32::consts::LN_2, 4.54e-5]);
        let one = Tensor::from_slice(&[0.0f32, 2.0]).view([2, 1]);
        close(
            &bce(&one, &y).unwrap(),
            &[std::f32::consts::LN_2, 2.126_928],
        );
        let target = Tensor::from_slice(&[1.0f32, 2.0]).view([2, 1]);
        close(&mse(&one, &target).unwrap(), &[1.0, 0.0]);
    }
}
