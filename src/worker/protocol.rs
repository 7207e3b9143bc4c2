//! The pipe protocol between `robustd serve` and its `robustd worker` children.
//!
//! A frame is `[u32 header length][header JSON][u64 payload length][payload]`, lengths little
//! endian. The header carries the message and the datatype and shape of each tensor; the payload
//! carries the tensors' raw little-endian bytes back to back, so tensors never pass through JSON.

use std::io::{self, Read, Write};
use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::attack::{AttackPlan, SampleResult};
use crate::model::ModelCard;
use crate::tensor::{element_count, HostTensor};

/// Largest header a peer may send; headers hold settings and per-sample rows, not tensors.
pub const MAX_HEADER_BYTES: u32 = 64 << 20;
/// Largest payload a peer may send.
pub const MAX_PAYLOAD_BYTES: u64 = 16 << 30;

/// The model a request runs on. Workers cache loaded models by `sha256`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelRef {
    pub name: String,
    pub path: PathBuf,
    pub sha256: String,
    pub card: ModelCard,
}

/// What the server asks a worker to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Load the model into the worker's cache without running it.
    Load { model: ModelRef },
    /// A forward pass on one input tensor; the reply carries the output tensor.
    Infer { model: ModelRef },
    /// Attack a batch. Tensors: inputs, labels, then target classes when the plan has them.
    Attack {
        model: ModelRef,
        plan: AttackPlan,
        sample_ids: Vec<u64>,
    },
    /// Finish and exit.
    Shutdown,
}

/// Why a worker could not do what it was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The model file could not be loaded or run.
    Model,
    /// The request's tensors do not fit the model.
    Input,
    /// The caller cancelled the work while it ran.
    Cancelled,
    /// Anything else inside the worker.
    Internal,
}

/// What a worker answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    /// Sent once when the worker has started.
    Hello {
        pid: u32,
        device: String,
        threads: i32,
    },
    Loaded,
    /// A forward pass finished; the output is the frame's only tensor.
    Output,
    /// An attack finished: a row per sample; the adversarial examples are the frame's tensor.
    Attacked {
        samples: Vec<SampleResult>,
    },
    Failed {
        kind: FailureKind,
        message: String,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct Envelope<H> {
    message: H,
    tensors: Vec<TensorMeta>,
}

#[derive(Debug, Serialize, Deserialize)]
struct TensorMeta {
    datatype: String,
    shape: Vec<i64>,
}

/// Encodes a message and its tensors as one frame.
pub fn encode_frame<H: Serialize>(message: &H, tensors: &[HostTensor]) -> io::Result<Vec<u8>> {
    let metas = tensors
        .iter()
        .map(|t| TensorMeta {
            datatype: t.datatype().to_owned(),
            shape: t.shape.clone(),
        })
        .collect();
    let header = serde_json::to_vec(&Envelope {
        message,
        tensors: metas,
    })?;
    let header_len = u32::try_from(header.len()).map_err(|_| invalid("header too large"))?;
    let payload_len: usize = tensors.iter().map(|t| t.len() * element_width(t)).sum();

    let mut frame = Vec::with_capacity(12 + header.len() + payload_len);
    frame.extend_from_slice(&header_len.to_le_bytes());
    frame.extend_from_slice(&header);
    frame.extend_from_slice(&(payload_len as u64).to_le_bytes());
    for tensor in tensors {
        frame.extend_from_slice(&tensor.to_le_bytes());
    }
    Ok(frame)
}

fn element_width(tensor: &HostTensor) -> usize {
    if tensor.as_f32().is_some() {
        4
    } else {
        8
    }
}

/// Writes one frame and flushes it.
pub fn write_frame<H: Serialize>(
    out: &mut impl Write,
    message: &H,
    tensors: &[HostTensor],
) -> io::Result<()> {
    out.write_all(&encode_frame(message, tensors)?)?;
    out.flush()
}

/// Reads one frame from a blocking reader (the worker's side).
pub fn read_frame<H: DeserializeOwned>(input: &mut impl Read) -> io::Result<(H, Vec<HostTensor>)> {
    let mut len = [0u8; 4];
    input.read_exact(&mut len)?;
    let header = read_exact_vec(input, checked_header_len(u32::from_le_bytes(len))?)?;
    let mut len = [0u8; 8];
    input.read_exact(&mut len)?;
    let payload = read_exact_vec(input, checked_payload_len(u64::from_le_bytes(len))?)?;
    parse_frame(&header, &payload)
}

/// Reads one frame from an async reader (the server's side).
pub async fn read_frame_async<H: DeserializeOwned>(
    input: &mut (impl AsyncRead + Unpin),
) -> io::Result<(H, Vec<HostTensor>)> {
    let header_len = checked_header_len(input.read_u32_le().await?)?;
    let mut header = vec![0u8; header_len];
    input.read_exact(&mut header).await?;
    let payload_len = checked_payload_len(input.read_u64_le().await?)?;
    let mut payload = vec![0u8; payload_len];
    input.read_exact(&mut payload).await?;
    parse_frame(&header, &payload)
}

fn checked_header_len(len: u32) -> io::Result<usize> {
    if len > MAX_HEADER_BYTES {
        return Err(invalid(format!(
            "frame header of {len} bytes exceeds {MAX_HEADER_BYTES}"
        )));
    }
    Ok(len as usize)
}

fn checked_payload_len(len: u64) -> io::Result<usize> {
    if len > MAX_PAYLOAD_BYTES {
        return Err(invalid(format!(
            "frame payload of {len} bytes exceeds {MAX_PAYLOAD_BYTES}"
        )));
    }
    usize::try_from(len).map_err(|_| invalid("frame payload does not fit in memory"))
}

/// Reads `len` bytes, growing the buffer as they arrive rather than trusting the declared length
/// with one allocation.
fn read_exact_vec(input: &mut impl Read, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(len.min(1 << 20));
    input.take(len as u64).read_to_end(&mut buf)?;
    if buf.len() != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("frame cut short: {} of {len} bytes", buf.len()),
        ));
    }
    Ok(buf)
}

fn parse_frame<H: DeserializeOwned>(
    header: &[u8],
    payload: &[u8],
) -> io::Result<(H, Vec<HostTensor>)> {
    let envelope: Envelope<H> = serde_json::from_slice(header)?;
    let mut tensors = Vec::with_capacity(envelope.tensors.len());
    let mut offset = 0usize;
    for meta in envelope.tensors {
        let width = if meta.datatype == "FP32" { 4 } else { 8 };
        let len = element_count(&meta.shape)
            .and_then(|n| n.checked_mul(width))
            .ok_or_else(|| invalid(format!("bad tensor shape {:?}", meta.shape)))?;
        let end = offset
            .checked_add(len)
            .filter(|&end| end <= payload.len())
            .ok_or_else(|| invalid("tensors overrun the frame payload"))?;
        let tensor = HostTensor::from_le_bytes(&meta.datatype, meta.shape, &payload[offset..end])
            .map_err(invalid)?;
        tensors.push(tensor);
        offset = end;
    }
    if offset != payload.len() {
        return Err(invalid("frame payload has bytes no tensor claims"));
    }
    Ok((envelope.message, tensors))
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_round_trips_message_and_tensors() {
        let tensors = vec![
            HostTensor::f32(vec![2, 3], vec![0.0, 1.0, 2.0, 3.0, 4.0, -5.5]),
            HostTensor::i64(vec![2], vec![7, 9]),
        ];
        let reply = Reply::Failed {
            kind: FailureKind::Input,
            message: "x".into(),
        };
        let frame = encode_frame(&reply, &tensors).unwrap();
        let (back, back_tensors): (Reply, _) = read_frame(&mut frame.as_slice()).unwrap();
        assert!(matches!(
            back,
            Reply::Failed {
                kind: FailureKind::Input,
                ..
            }
        ));
        assert_eq!(back_tensors, tensors);
    }

    #[test]
    fn a_frame_whose_payload_disagrees_with_its_shapes_is_refused() {
        let frame =
            encode_frame(&Reply::Loaded, &[HostTensor::f32(vec![2], vec![1.0, 2.0])]).unwrap();
        // Claim one float more than the payload holds.
        let text = String::from_utf8_lossy(&frame[4..frame.len() - 16]).replace("[2]", "[3]");
        let mut forged = (text.len() as u32).to_le_bytes().to_vec();
        forged.extend_from_slice(text.as_bytes());
        forged.extend_from_slice(&frame[frame.len() - 16..]);
        let err = read_frame::<Reply>(&mut forged.as_slice()).unwrap_err();
        assert!(err.to_string().contains("overrun"), "{err}");
    }

    #[test]
    fn an_oversized_header_length_is_refused_before_allocating() {
        let bytes = (MAX_HEADER_BYTES + 1).to_le_bytes();
        let err = read_frame::<Reply>(&mut bytes.as_slice()).unwrap_err();
        assert!(err.to_string().contains("exceeds"), "{err}");
    }
}
