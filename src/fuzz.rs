//! Entry points for fuzzing every decoder that reads bytes from outside the server: Open
//! Inference Protocol JSON and binary tensors, `.npy`, safetensors data sets, worker protocol
//! frames and the model-file check. Each takes arbitrary bytes and must return, never panic or
//! allocate beyond what the bytes justify.
//!
//! `fuzz/` holds cargo-fuzz targets that call these for long coverage-guided runs; the test
//! command runs them briefly on mutated seeds (`tests/fuzz.rs`).

use bytes::Bytes;

use crate::api::decode_tensors;
use crate::config::Limits;
use crate::dataset::Dataset;
use crate::model::{check_archive, ArchiveLimits};
use crate::tensor::{decode_oip, read_npy, OipTensor};
use crate::worker::protocol::{read_frame, Reply, Request};

/// A fuzz target: arbitrary bytes in, nothing out.
pub type Target = fn(&[u8]);

/// Every target by name, as `fuzz/fuzz_targets/` and the test runner know them.
pub const TARGETS: &[(&str, Target)] = &[
    ("oip_json", oip_json),
    ("oip_binary", oip_binary),
    ("npy", npy),
    ("safetensors", safetensors),
    ("worker_frame", worker_frame),
    ("model_archive", model_archive),
];

/// OIP JSON tensors: the bytes as a JSON list of tensors, each decoded.
pub fn oip_json(data: &[u8]) {
    if let Ok(tensors) = serde_json::from_slice::<Vec<OipTensor>>(data) {
        for (i, tensor) in tensors.iter().enumerate() {
            let _ = decode_oip(tensor, &format!("inputs[{i}]"));
        }
    }
}

/// The binary tensor extension: a 2-byte header length, the JSON tensor list, then the binary
/// data, decoded as a request's inputs are.
pub fn oip_binary(data: &[u8]) {
    let Some((length, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let length = usize::from(u16::from_le_bytes(*length)).min(rest.len());
    let (header, binary) = rest.split_at(length);
    if let Ok(tensors) = serde_json::from_slice::<Vec<OipTensor>>(header) {
        let _ = decode_tensors(
            &tensors,
            &Bytes::copy_from_slice(binary),
            &Limits::default(),
        );
    }
}

pub fn npy(data: &[u8]) {
    let _ = read_npy(data);
}

pub fn safetensors(data: &[u8]) {
    let _ = Dataset::from_safetensors(data);
}

/// A frame as either side of the pipe reads it.
pub fn worker_frame(data: &[u8]) {
    let _ = read_frame::<Request>(&mut &data[..]);
    let _ = read_frame::<Reply>(&mut &data[..]);
}

pub fn model_archive(data: &[u8]) {
    let _ = check_archive(data, &ArchiveLimits::default());
}
