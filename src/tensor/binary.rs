//! The Open Inference Protocol's binary tensor extension: raw little-endian bytes after the JSON
//! header, `Inference-Header-Content-Length` giving the header's length and each tensor's
//! `parameters.binary_data_size` its share of the bytes, in order.

use super::{element_count, HostTensor, TensorError, Values};

/// Bytes per element of an OIP datatype, for the datatypes robustd reads.
pub fn element_size(datatype: &str) -> Option<usize> {
    Some(match datatype {
        "BOOL" | "INT8" | "UINT8" => 1,
        "INT16" | "UINT16" | "FP16" | "BF16" => 2,
        "INT32" | "UINT32" | "FP32" => 4,
        "INT64" | "UINT64" | "FP64" => 8,
        _ => return None,
    })
}

/// Decodes raw little-endian bytes of `datatype` and `shape`. Floating datatypes become FP32,
/// integer and boolean ones INT64.
pub fn decode_binary(
    datatype: &str,
    shape: &[i64],
    bytes: &[u8],
    field: &str,
) -> Result<HostTensor, TensorError> {
    let err = |m: String| TensorError::new(field, m);
    let width = element_size(datatype).ok_or_else(|| {
        err(format!(
            "datatype {datatype} cannot be sent as binary data to robustd"
        ))
    })?;
    let count = element_count(shape).ok_or_else(|| {
        err(format!(
            "shape must hold non-negative dimensions, got {shape:?}"
        ))
    })?;
    if count.checked_mul(width) != Some(bytes.len()) {
        return Err(err(format!(
            "binary_data_size is {} bytes but shape {shape:?} of {datatype} needs {}",
            bytes.len(),
            count.saturating_mul(width)
        )));
    }
    let chunks = bytes.chunks_exact(width);
    let values = match datatype {
        "FP32" => Values::F32(
            chunks
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
        ),
        "FP64" => Values::F32(
            chunks
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
                .collect(),
        ),
        "FP16" => Values::F32(
            chunks
                .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
        ),
        "BF16" => Values::F32(
            chunks
                .map(|c| f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16))
                .collect(),
        ),
        "BOOL" | "UINT8" => Values::I64(chunks.map(|c| i64::from(c[0])).collect()),
        "INT8" => Values::I64(chunks.map(|c| i64::from(c[0] as i8)).collect()),
        "INT16" => Values::I64(
            chunks
                .map(|c| i64::from(i16::from_le_bytes([c[0], c[1]])))
                .collect(),
        ),
        "UINT16" => Values::I64(
            chunks
                .map(|c| i64::from(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
        ),
        "INT32" => Values::I64(
            chunks
                .map(|c| i64::from(i32::from_le_bytes(c.try_into().unwrap())))
                .collect(),
        ),
        "UINT32" => Values::I64(
            chunks
                .map(|c| i64::from(u32::from_le_bytes(c.try_into().unwrap())))
                .collect(),
        ),
        "INT64" => Values::I64(
            chunks
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
        ),
        "UINT64" => Values::I64(
            chunks
                .map(|c| {
                    let v = u64::from_le_bytes(c.try_into().unwrap());
                    i64::try_from(v).map_err(|_| err(format!("UINT64 value {v} is too large")))
                })
                .collect::<Result<_, _>>()?,
        ),
        _ => unreachable!("element_size knows the datatype"),
    };
    Ok(HostTensor {
        shape: shape.to_vec(),
        values,
    })
}

/// IEEE half precision to single.
fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exponent = u32::from((h >> 10) & 0x1f);
    let mantissa = u32::from(h & 0x3ff);
    let bits = match (exponent, mantissa) {
        (0, 0) => sign,
        (0, m) => {
            // Subnormal: normalise.
            let shift = m.leading_zeros() - 21;
            sign | ((113 - shift) << 23) | (((m << shift) & 0x3ff) << 13)
        }
        (0x1f, m) => sign | 0x7f80_0000 | (m << 13),
        (e, m) => sign | ((e + 112) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fp32_and_int64_decode_from_little_endian_bytes() {
        let bytes: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let t = decode_binary("FP32", &[2], &bytes, "x").unwrap();
        assert_eq!(t.as_f32().unwrap(), &[1.5, -2.0]);
        let bytes: Vec<u8> = [7i32, -1].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(
            decode_binary("INT32", &[2], &bytes, "y")
                .unwrap()
                .as_i64()
                .unwrap(),
            &[7, -1]
        );
    }

    #[test]
    fn a_size_that_does_not_match_the_shape_is_refused() {
        let err = decode_binary("FP32", &[3], &[0u8; 8], "inputs[0]").unwrap_err();
        assert!(
            err.to_string()
                .contains("is 8 bytes but shape [3] of FP32 needs 12"),
            "{err}"
        );
        let err = decode_binary("BYTES", &[1], &[0u8; 8], "inputs[0]").unwrap_err();
        assert!(
            err.to_string().contains("cannot be sent as binary"),
            "{err}"
        );
    }

    #[test]
    fn half_precision_values_convert_exactly() {
        for (bits, value) in [
            (0x3c00u16, 1.0f32),
            (0xc000, -2.0),
            (0x3555, 0.333_251_95),
            (0x0001, 5.960_464_5e-8),
            (0, 0.0),
        ] {
            assert_eq!(f16_to_f32(bits), value, "{bits:#x}");
        }
    }
}
