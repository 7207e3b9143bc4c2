//! Throughput of the dynamic batcher: 64 concurrent single-sample PGD requests (Linf, 10 steps)
//! on digits_cnn, one CPU worker, with batching on (`--max-batch-size 64`) and off
//! (`--max-batch-size 1`), in one run. Prints requests per second and their ratio.
//!
//!     cargo bench --bench batching

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{Digits, TestServer};
use serde_json::{json, Value};

const REQUESTS: usize = 64;
const ROUNDS: usize = 5;

fn request(digits: &Digits, i: usize) -> Value {
    json!({
        "inputs": [
            { "name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": digits.inputs(i..i + 1) },
            { "name": "label", "shape": [1], "datatype": "INT64", "data": [digits.y[i]] },
        ],
        "parameters": { "attack": "pgd", "eps": 0.1, "steps": 10, "sample_offset": i },
    })
}

/// Median wall time of `ROUNDS` rounds of `REQUESTS` concurrent requests.
async fn measure(server: &TestServer, digits: &Digits) -> Duration {
    let client = reqwest::Client::new();
    let url = server.url("/v2/models/digits_cnn/attack");
    // Warm up: load the model and the code paths.
    client
        .post(&url)
        .json(&request(digits, 0))
        .send()
        .await
        .unwrap();
    let mut times = Vec::new();
    for _ in 0..ROUNDS {
        let started = Instant::now();
        let calls: Vec<_> = (0..REQUESTS)
            .map(|i| {
                let (client, url, body) = (client.clone(), url.clone(), request(digits, i));
                tokio::spawn(async move {
                    let response = client.post(url).json(&body).send().await.unwrap();
                    assert_eq!(response.status(), 200);
                })
            })
            .collect();
        for call in calls {
            call.await.unwrap();
        }
        times.push(started.elapsed());
    }
    times.sort();
    times[ROUNDS / 2]
}

#[tokio::main]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("batching: run with `cargo bench --bench batching`");
        return;
    }
    // Keep the servers' start lines, not a line per request.
    std::env::set_var("ROBUSTD_TEST_SERVER_LOG", "warn,robustd=info");
    let digits = Digits::load();
    let mut results = Vec::new();
    for (label, batch) in [("on", "64"), ("off", "1")] {
        let server = TestServer::spawn(&[
            "--max-batch-size",
            batch,
            "--max-queue-delay-microseconds",
            "2000",
            "--max-queue-size",
            "256",
        ]);
        server.wait_ready("digits_cnn").await;
        let time = measure(&server, &digits).await;
        let rate = REQUESTS as f64 / time.as_secs_f64();
        println!("batching {label:>3}: {REQUESTS} concurrent requests in {time:>10.1?} ({rate:8.1} requests/s)");
        results.push(rate);
    }
    println!(
        "throughput ratio, batching on / off: {:.1}x",
        results[0] / results[1]
    );
}
