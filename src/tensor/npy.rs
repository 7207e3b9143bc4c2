//! NumPy's `.npy` format (version 1.0 and 2.0 headers), for data sets and adversarial examples.

use super::{element_count, HostTensor, Values};

const MAGIC: &[u8] = b"\x93NUMPY";

/// Writes a tensor as `.npy`: `<f4` for FP32, `<i8` for INT64.
pub fn write_npy(tensor: &HostTensor) -> Vec<u8> {
    let descr = match tensor.values {
        Values::F32(_) => "<f4",
        Values::I64(_) => "<i8",
    };
    let dims: Vec<String> = tensor.shape.iter().map(|d| d.to_string()).collect();
    let shape = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // Magic, version and length take 10 bytes; the header ends in a newline and the data starts
    // on a 64-byte boundary.
    let padding = (64 - (10 + header.len() + 1) % 64) % 64;
    header.push_str(&" ".repeat(padding));
    header.push('\n');

    let mut out = Vec::with_capacity(10 + header.len() + tensor.len() * 8);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&tensor.to_le_bytes());
    out
}

/// Reads a `.npy` file of little-endian floats or integers in C order. Floats become FP32,
/// integers INT64.
pub fn read_npy(bytes: &[u8]) -> Result<HostTensor, String> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err("not a .npy file (no \\x93NUMPY magic)".to_owned());
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize,
            12,
        ),
        v => return Err(format!(".npy version {v} is not supported")),
    };
    let header = bytes
        .get(start..start + header_len)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or("the .npy header is cut short or not text")?;
    let descr = field(header, "descr")
        .map(|d| d.trim_matches(|c| c == '\'' || c == '"').to_owned())
        .ok_or("the .npy header has no descr")?;
    if field(header, "fortran_order").is_some_and(|f| f.starts_with("True")) {
        return Err("Fortran-ordered arrays are not supported; save with C order".to_owned());
    }
    let shape_text = header
        .split("'shape':")
        .nth(1)
        .and_then(|rest| rest.split_once('(').and_then(|(_, r)| r.split_once(')')))
        .map(|(inside, _)| inside)
        .ok_or("the .npy header has no shape")?;
    let shape: Vec<i64> = shape_text
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| {
            d.parse::<i64>()
                .map_err(|_| format!("bad dimension {d:?} in the .npy shape"))
        })
        .collect::<Result<_, _>>()?;
    let count = element_count(&shape).ok_or("the .npy shape is too large")?;
    let data = &bytes[start + header_len..];

    let (width, to_values): (usize, fn(&[u8]) -> Values) = match descr.as_str() {
        "<f4" => (4, |d| {
            Values::F32(
                d.chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
            )
        }),
        "<f8" => (8, |d| {
            Values::F32(
                d.chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
                    .collect(),
            )
        }),
        "<i8" => (8, |d| {
            Values::I64(
                d.chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
            )
        }),
        "<i4" => (4, |d| {
            Values::I64(
                d.chunks_exact(4)
                    .map(|c| i64::from(i32::from_le_bytes(c.try_into().unwrap())))
                    .collect(),
            )
        }),
        "|u1" | "|i1" | "|b1" => (1, |d| {
            Values::I64(d.iter().map(|&b| i64::from(b)).collect())
        }),
        other => {
            return Err(format!(
                "dtype {other} is not supported (use float32, float64, int32, int64 or uint8)"
            ))
        }
    };
    if data.len() != count * width {
        return Err(format!(
            "the .npy data holds {} bytes but shape {shape:?} of {descr} needs {}",
            data.len(),
            count * width
        ));
    }
    Ok(HostTensor {
        shape,
        values: to_values(data),
    })
}

/// The text after `'name':` up to the next comma outside parentheses.
fn field<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    let rest = header.split(&format!("'{name}':")).nth(1)?.trim_start();
    Some(rest.split(',').next().unwrap_or(rest).trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_round_trips_and_aligns_its_data() {
        let t = HostTensor::f32(vec![2, 3], vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.5]);
        let bytes = write_npy(&t);
        assert_eq!((bytes.len() - t.len() * 4) % 64, 0);
        assert_eq!(read_npy(&bytes).unwrap(), t);
        let labels = HostTensor::i64(vec![3], vec![1, 2, 3]);
        let bytes = write_npy(&labels);
        assert!(String::from_utf8_lossy(&bytes).contains("'shape': (3,)"));
        assert_eq!(read_npy(&bytes).unwrap(), labels);
    }

    #[test]
    fn unsupported_or_broken_files_are_named() {
        assert!(read_npy(b"hello").unwrap_err().contains("magic"));
        let mut bytes = write_npy(&HostTensor::f32(vec![2], vec![1.0, 2.0]));
        bytes.truncate(bytes.len() - 1);
        assert!(read_npy(&bytes).unwrap_err().contains("needs 8"));
    }
}
