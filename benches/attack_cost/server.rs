//! The whole server as a contender: attack requests over HTTP (Open Inference Protocol binary
//! tensors), through the batcher, to a worker process; and the memory of those processes.

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{json, Value};

/// One attack request, encoded once and sent as often as needed.
#[derive(Clone)]
pub struct AttackRequest {
    body: Bytes,
    header_length: usize,
}

impl AttackRequest {
    /// Inputs `x` of shape `shape` and labels `y`, as binary tensors, with attack `parameters`.
    pub fn new(x: &[f32], shape: &[i64], y: &[i64], parameters: Value) -> Self {
        let x: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
        let y: Vec<u8> = y.iter().flat_map(|v| v.to_le_bytes()).collect();
        let header = json!({
            "inputs": [
                { "name": "input", "shape": shape, "datatype": "FP32",
                  "parameters": { "binary_data_size": x.len() } },
                { "name": "label", "shape": [shape[0]], "datatype": "INT64",
                  "parameters": { "binary_data_size": y.len() } },
            ],
            "parameters": parameters,
        });
        let mut body = serde_json::to_vec(&header).expect("header");
        let header_length = body.len();
        body.extend(x);
        body.extend(y);
        Self {
            body: body.into(),
            header_length,
        }
    }
}

/// An HTTP client with its own single-threaded runtime, so the benchmark's own work stays on the
/// main thread.
pub struct Http {
    runtime: tokio::runtime::Runtime,
    client: reqwest::Client,
}

impl Http {
    pub fn new() -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        Self {
            runtime,
            client: reqwest::Client::new(),
        }
    }

    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// Sends one request and reads the whole answer; its wall time.
    pub fn attack(&self, url: &str, request: &AttackRequest) -> Duration {
        self.block_on(async {
            let started = Instant::now();
            send(&self.client, url, request).await;
            started.elapsed()
        })
    }

    /// Sends all `requests` at once; the wall time until the last answer.
    pub fn concurrent(&self, url: &str, requests: &[AttackRequest]) -> Duration {
        self.block_on(async {
            let started = Instant::now();
            let calls = requests.iter().map(|r| send(&self.client, url, r));
            futures_util::future::join_all(calls).await;
            started.elapsed()
        })
    }

    /// Sends `requests` in groups of `in_flight` at a time, calling `every` with the number done
    /// each time that number passes a multiple of `period`.
    pub fn stream(
        &self,
        url: &str,
        requests: &[AttackRequest],
        in_flight: usize,
        period: usize,
        mut every: impl FnMut(usize),
    ) {
        self.block_on(async {
            let mut done = 0;
            for group in requests.chunks(in_flight) {
                let calls = group.iter().map(|r| send(&self.client, url, r));
                futures_util::future::join_all(calls).await;
                let before = done;
                done += group.len();
                if done / period > before / period {
                    every(done);
                }
            }
        })
    }
}

async fn send(client: &reqwest::Client, url: &str, request: &AttackRequest) -> Bytes {
    let response = client
        .post(url)
        .header("Inference-Header-Content-Length", request.header_length)
        .header("content-type", "application/octet-stream")
        .body(request.body.clone())
        .send()
        .await
        .expect("the server answers");
    let status = response.status();
    let body = response.bytes().await.expect("the whole answer");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    body
}

/// Resets a process's peak resident memory to its current one (Linux: `5` to clear_refs).
pub fn reset_peak(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}
