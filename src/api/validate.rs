//! Checks on request tensors against a model card, before any of them reaches a worker. Every
//! error names the field, the rule and the value it got.

use super::ApiError;
use crate::model::{ModelCard, Task};
use crate::tensor::{HostTensor, Values};

/// The model's input: floats of shape [batch, ...card shape], finite, 1 to `max_batch` samples;
/// with `in_domain`, every value inside the card's domain. `datatype` is what the client sent.
pub fn input(
    decoded: HostTensor,
    datatype: &str,
    field: &str,
    card: &ModelCard,
    max_batch: usize,
    in_domain: bool,
) -> Result<HostTensor, ApiError> {
    let values = decoded.as_f32().ok_or_else(|| {
        ApiError::Invalid(format!(
            "{field}.datatype: the model takes FP32, got {datatype}"
        ))
    })?;
    let sample = &card.input.shape;
    if decoded.shape.len() != sample.len() + 1 || decoded.shape[1..] != sample[..] {
        let dims: Vec<String> = sample.iter().map(|d| d.to_string()).collect();
        return Err(ApiError::Invalid(format!(
            "{field}.shape: must be [batch, {}], got {:?}",
            dims.join(", "),
            decoded.shape
        )));
    }
    let batch = decoded.shape[0];
    if batch < 1 || batch as usize > max_batch {
        return Err(ApiError::Invalid(format!(
            "{field}.shape[0]: the batch must hold 1 to {max_batch} samples, got {batch}"
        )));
    }
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(ApiError::Invalid(format!(
            "{field}.data[{i}]: values must be finite numbers, got {}",
            values[i]
        )));
    }
    if in_domain {
        let [lo, hi] = card.input.domain;
        let outside = values
            .iter()
            .position(|&v| f64::from(v) < lo || f64::from(v) > hi);
        if let Some(i) = outside {
            return Err(ApiError::Invalid(format!(
                "{field}.data[{i}]: values must lie in the model's input domain [{lo}, {hi}], \
                 got {}",
                values[i]
            )));
        }
    }
    Ok(decoded)
}

/// Labels for `n` samples: class indices in range for classification and binary models, float
/// targets [n, k] for regression.
pub fn labels(
    decoded: HostTensor,
    datatype: &str,
    field: &str,
    card: &ModelCard,
    n: i64,
) -> Result<HostTensor, ApiError> {
    if card.task != Task::Regression {
        return classes(decoded, datatype, field, card, n);
    }
    let ok = decoded.shape.len() == 2 && decoded.shape[0] == n && decoded.as_f32().is_some();
    if !ok {
        return Err(ApiError::Invalid(format!(
            "{field}: a regression model takes FP32 targets of shape [{n}, k], got {datatype} {:?}",
            decoded.shape
        )));
    }
    if let Some(i) = decoded
        .as_f32()
        .unwrap_or_default()
        .iter()
        .position(|v| !v.is_finite())
    {
        return Err(ApiError::Invalid(format!(
            "{field}.data[{i}]: targets must be finite"
        )));
    }
    Ok(decoded)
}

/// Class indices for `n` samples, each in 0..classes.
pub fn classes(
    decoded: HostTensor,
    datatype: &str,
    field: &str,
    card: &ModelCard,
    n: i64,
) -> Result<HostTensor, ApiError> {
    let Values::I64(values) = &decoded.values else {
        return Err(ApiError::Invalid(format!(
            "{field}.datatype: class labels must be an integer type, got {datatype}"
        )));
    };
    if decoded.shape != [n] {
        return Err(ApiError::Invalid(format!(
            "{field}.shape: must be [{n}], one class per sample, got {:?}",
            decoded.shape
        )));
    }
    let count = if card.task == Task::Binary {
        2
    } else {
        card.num_classes.unwrap_or(2)
    };
    if let Some(i) = values.iter().position(|c| !(0..count).contains(c)) {
        return Err(ApiError::Invalid(format!(
            "{field}.data[{i}]: must be a class index in 0..{count}, got {}",
            values[i]
        )));
    }
    Ok(decoded)
}
