//! Tensors as the server holds them (plain host memory, no libtorch) and their encodings:
//! Open Inference Protocol JSON, its binary extension, raw little-endian bytes, `.npy`.

mod binary;
mod npy;
mod oip;

pub use binary::{decode_binary, element_size};
pub use npy::{read_npy, write_npy};
pub use oip::{decode_oip, encode_oip, OipTensor};

/// Values of a host tensor, in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

/// A dense tensor in host memory.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<i64>,
    pub values: Values,
}

/// A tensor that is not what a field demands: the field, the rule and what it got.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct TensorError {
    pub field: String,
    pub message: String,
}

impl TensorError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl HostTensor {
    pub fn f32(shape: Vec<i64>, values: Vec<f32>) -> Self {
        debug_assert_eq!(element_count(&shape), Some(values.len()));
        Self {
            shape,
            values: Values::F32(values),
        }
    }

    pub fn i64(shape: Vec<i64>, values: Vec<i64>) -> Self {
        debug_assert_eq!(element_count(&shape), Some(values.len()));
        Self {
            shape,
            values: Values::I64(values),
        }
    }

    pub fn len(&self) -> usize {
        match &self.values {
            Values::F32(v) => v.len(),
            Values::I64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The OIP datatype name of the values.
    pub fn datatype(&self) -> &'static str {
        match self.values {
            Values::F32(_) => "FP32",
            Values::I64(_) => "INT64",
        }
    }

    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.values {
            Values::F32(v) => Some(v),
            Values::I64(_) => None,
        }
    }

    pub fn as_i64(&self) -> Option<&[i64]> {
        match &self.values {
            Values::I64(v) => Some(v),
            Values::F32(_) => None,
        }
    }

    /// The values as little-endian bytes.
    pub fn to_le_bytes(&self) -> Vec<u8> {
        match &self.values {
            Values::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Values::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }

    /// Rebuilds a tensor from its datatype name, shape and little-endian bytes.
    pub fn from_le_bytes(datatype: &str, shape: Vec<i64>, bytes: &[u8]) -> Result<Self, String> {
        let count = element_count(&shape).ok_or_else(|| format!("bad shape {shape:?}"))?;
        let width = match datatype {
            "FP32" => 4,
            "INT64" => 8,
            other => return Err(format!("unsupported datatype {other}")),
        };
        if bytes.len() != count * width {
            return Err(format!(
                "shape {shape:?} of {datatype} needs {} bytes, got {}",
                count * width,
                bytes.len()
            ));
        }
        let values = if width == 4 {
            Values::F32(
                bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
            )
        } else {
            Values::I64(
                bytes
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
            )
        };
        Ok(Self { shape, values })
    }
}

/// Number of elements of a shape, or None when a dimension is negative or the product overflows.
pub fn element_count(shape: &[i64]) -> Option<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| usize::try_from(d).ok()?.checked_mul(acc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip_keeps_values_and_shape() {
        let t = HostTensor::f32(vec![2, 2], vec![1.5, -2.0, 0.0, f32::MAX]);
        let back = HostTensor::from_le_bytes("FP32", t.shape.clone(), &t.to_le_bytes()).unwrap();
        assert_eq!(back, t);
        let l = HostTensor::i64(vec![3], vec![-1, 0, i64::MAX]);
        assert_eq!(
            HostTensor::from_le_bytes("INT64", vec![3], &l.to_le_bytes()).unwrap(),
            l
        );
    }

    #[test]
    fn bytes_of_the_wrong_length_are_refused() {
        let err = HostTensor::from_le_bytes("FP32", vec![2], &[0u8; 7]).unwrap_err();
        assert!(err.contains("needs 8 bytes, got 7"), "{err}");
    }

    #[test]
    fn element_count_refuses_negative_and_overflowing_shapes() {
        assert_eq!(element_count(&[2, 3]), Some(6));
        assert_eq!(element_count(&[]), Some(1));
        assert_eq!(element_count(&[2, -1]), None);
        assert_eq!(element_count(&[i64::MAX, i64::MAX]), None);
    }
}
