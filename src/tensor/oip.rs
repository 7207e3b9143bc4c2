//! Open Inference Protocol (KServe v2) JSON tensors: `{name, shape, datatype, parameters, data}`,
//! with `data` flat or nested in row-major order.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{element_count, HostTensor, TensorError, Values};

/// A tensor as the Open Inference Protocol writes it in JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OipTensor {
    pub name: String,
    pub shape: Vec<i64>,
    pub datatype: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<serde_json::Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

/// Decodes an OIP JSON tensor. Floating datatypes become FP32, integer and boolean ones INT64.
/// `field` names the tensor in errors, e.g. `inputs[0]`.
pub fn decode_oip(tensor: &OipTensor, field: &str) -> Result<HostTensor, TensorError> {
    let err = |message: String| TensorError::new(field, message);
    let count = element_count(&tensor.shape).ok_or_else(|| {
        err(format!(
            "shape must hold non-negative dimensions, got {:?}",
            tensor.shape
        ))
    })?;
    let data = tensor
        .data
        .as_ref()
        .ok_or_else(|| err("data is required".to_owned()))?;

    // The shape is the client's word: reserve no more than a small body could fill.
    let mut flat = Vec::with_capacity(count.min(1 << 16));
    flatten(data, &mut flat, count).map_err(|m| err(format!("data {m}")))?;
    if flat.len() != count {
        return Err(err(format!(
            "data holds {} values but shape {:?} needs {count}",
            flat.len(),
            tensor.shape
        )));
    }

    let values = match tensor.datatype.as_str() {
        "FP32" | "FP64" | "FP16" | "BF16" => Values::F32(
            flat.iter()
                .enumerate()
                .map(|(i, v)| {
                    v.as_f64()
                        .map(|x| x as f32)
                        .ok_or_else(|| err(format!("data[{i}] must be a number, got {v}")))
                })
                .collect::<Result<_, _>>()?,
        ),
        "INT8" | "INT16" | "INT32" | "INT64" | "UINT8" | "UINT16" | "UINT32" | "UINT64" => {
            Values::I64(
                flat.iter()
                    .enumerate()
                    .map(|(i, v)| {
                        v.as_i64()
                            .ok_or_else(|| err(format!("data[{i}] must be an integer, got {v}")))
                    })
                    .collect::<Result<_, _>>()?,
            )
        }
        "BOOL" => Values::I64(
            flat.iter()
                .enumerate()
                .map(|(i, v)| {
                    v.as_bool()
                        .map(i64::from)
                        .ok_or_else(|| err(format!("data[{i}] must be true or false, got {v}")))
                })
                .collect::<Result<_, _>>()?,
        ),
        other => {
            return Err(err(format!(
                "datatype must be one of FP32, FP64, FP16, BF16, INT8..INT64, UINT8..UINT64, \
                 BOOL; got {other}"
            )))
        }
    };
    Ok(HostTensor {
        shape: tensor.shape.clone(),
        values,
    })
}

/// Appends the leaves of `value` to `out`, refusing more than `limit` of them.
fn flatten<'a>(value: &'a Value, out: &mut Vec<&'a Value>, limit: usize) -> Result<(), String> {
    match value {
        Value::Array(items) => {
            for item in items {
                flatten(item, out, limit)?;
            }
            Ok(())
        }
        Value::Object(_) | Value::String(_) | Value::Null => {
            Err(format!("must hold numbers or booleans, got {value}"))
        }
        leaf => {
            if out.len() == limit {
                return Err(format!("holds more values than the shape's {limit}"));
            }
            out.push(leaf);
            Ok(())
        }
    }
}

/// Encodes a host tensor as an OIP JSON tensor with flat data.
pub fn encode_oip(name: &str, tensor: &HostTensor) -> OipTensor {
    let data = match &tensor.values {
        Values::F32(v) => Value::from(v.iter().map(|&x| json_f32(x)).collect::<Vec<_>>()),
        Values::I64(v) => Value::from(v.clone()),
    };
    OipTensor {
        name: name.to_owned(),
        shape: tensor.shape.clone(),
        datatype: tensor.datatype().to_owned(),
        parameters: None,
        data: Some(data),
    }
}

/// JSON has no NaN or infinity: they are written as null.
fn json_f32(x: f32) -> Value {
    serde_json::Number::from_f64(f64::from(x)).map_or(Value::Null, Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tensor(shape: Vec<i64>, datatype: &str, data: Value) -> OipTensor {
        OipTensor {
            name: "x".into(),
            shape,
            datatype: datatype.into(),
            parameters: None,
            data: Some(data),
        }
    }

    #[test]
    fn flat_and_nested_data_decode_alike() {
        let flat = decode_oip(&tensor(vec![2, 2], "FP32", json!([1, 2, 3, 4.5])), "x").unwrap();
        let nested =
            decode_oip(&tensor(vec![2, 2], "FP32", json!([[1, 2], [3, 4.5]])), "x").unwrap();
        assert_eq!(flat, nested);
        assert_eq!(flat.as_f32().unwrap(), &[1.0, 2.0, 3.0, 4.5]);
    }

    #[test]
    fn a_count_that_does_not_match_the_shape_names_both() {
        let err = decode_oip(&tensor(vec![2, 3], "FP32", json!([1, 2])), "inputs[0]").unwrap_err();
        assert_eq!(err.field, "inputs[0]");
        assert!(
            err.message
                .contains("holds 2 values but shape [2, 3] needs 6"),
            "{err}"
        );
        let err = decode_oip(&tensor(vec![1], "FP32", json!([1, 2])), "x").unwrap_err();
        assert!(
            err.message.contains("more values than the shape's 1"),
            "{err}"
        );
    }

    #[test]
    fn wrong_leaf_types_and_datatypes_are_refused() {
        let err = decode_oip(&tensor(vec![2], "INT64", json!([1, 2.5])), "y").unwrap_err();
        assert!(err.message.contains("data[1] must be an integer"), "{err}");
        let err = decode_oip(&tensor(vec![1], "FP32", json!(["a"])), "x").unwrap_err();
        assert!(err.message.contains("must hold numbers"), "{err}");
        let err = decode_oip(&tensor(vec![1], "BYTES", json!([1])), "x").unwrap_err();
        assert!(err.message.contains("got BYTES"), "{err}");
    }

    #[test]
    fn encode_writes_flat_data_and_null_for_nan() {
        let t = HostTensor::f32(vec![1, 2], vec![0.5, f32::NAN]);
        let oip = encode_oip("y", &t);
        assert_eq!(oip.data, Some(json!([0.5, null])));
        assert_eq!(oip.datatype, "FP32");
    }
}
