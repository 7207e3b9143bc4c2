//! A load test from a second process (this test) on loopback against a real server with a small
//! queue: sustained concurrent attack requests past capacity, and evaluation jobs beside them.
//! Bounded in count (240 requests, 6 jobs) and time (each phase has a deadline).

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Digits, TestServer};
use futures_util::StreamExt;
use serde_json::{json, Value};

const REQUESTS: usize = 240;
const CONCURRENCY: usize = 48;
const JOBS: usize = 6;

/// Resident memory of a process and its children, in bytes.
fn resident(pid: u32) -> u64 {
    let one = |pid: u32| -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/statm"))
            .ok()
            .and_then(|s| {
                s.split_whitespace()
                    .nth(1)
                    .and_then(|p| p.parse::<u64>().ok())
            })
            .map_or(0, |pages| pages * 4096)
    };
    one(pid) + common::children_of(pid).into_iter().map(one).sum::<u64>()
}

fn request(digits: &Digits, i: usize) -> Value {
    json!({
        "id": format!("load-{i}"),
        "inputs": [
            { "name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": digits.inputs(i..i + 1) },
            { "name": "label", "shape": [1], "datatype": "INT64", "data": [digits.y[i]] },
        ],
        "parameters": { "attack": "pgd", "eps": 0.1, "steps": 10, "sample_offset": i },
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn past_capacity_the_server_sheds_load_answers_every_accepted_request_and_loses_no_job() {
    let server = TestServer::start(&[
        "--max-queue-size",
        "16",
        "--max-batch-size",
        "16",
        "--max-jobs-per-token",
        "2",
    ])
    .await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let digits = Digits::load();
    let url = server.url("/v2/models/digits_cnn/attack");
    for i in 0..5 {
        let warm = client
            .post(&url)
            .json(&request(&digits, i))
            .send()
            .await
            .unwrap();
        assert_eq!(warm.status(), 200);
    }
    let baseline = resident(server.pid());

    // Watch memory while the load runs.
    let peak = Arc::new(AtomicU64::new(baseline));
    let watching = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = tokio::spawn({
        let (peak, watching, pid) = (peak.clone(), watching.clone(), server.pid());
        async move {
            while watching.load(Ordering::SeqCst) {
                peak.fetch_max(resident(pid), Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });

    // Jobs beside the load: two at a time per token, the others told to come back.
    let jobs = tokio::spawn({
        let client = client.clone();
        let base = server.base.clone();
        async move {
            let mut accepted = Vec::new();
            let mut told_to_wait = 0;
            let deadline = Instant::now() + Duration::from_secs(240);
            for j in 0..JOBS {
                loop {
                    assert!(Instant::now() < deadline, "jobs were not accepted in time");
                    let response = client
                        .post(format!("{base}/v2/evaluations"))
                        .json(&json!({
                            "model": "digits_cnn", "dataset": "digits_test",
                            "start": j * 20, "limit": 20, "chunk_size": 10,
                            "parameters": {"attack": "pgd", "eps": 0.1, "steps": 5}
                        }))
                        .send()
                        .await
                        .unwrap();
                    match response.status().as_u16() {
                        202 => {
                            let body: Value = response.json().await.unwrap();
                            accepted.push(body["id"].as_str().unwrap().to_owned());
                            break;
                        }
                        429 | 503 => {
                            told_to_wait += 1;
                            let wait: u64 = response.headers()["retry-after"]
                                .to_str()
                                .unwrap()
                                .parse()
                                .unwrap();
                            tokio::time::sleep(Duration::from_secs(wait.min(2))).await;
                        }
                        other => panic!(
                            "a job was answered {other}: {}",
                            response.text().await.unwrap()
                        ),
                    }
                }
            }
            (accepted, told_to_wait)
        }
    });

    // The load: 48 clients at once, each retrying a refused request after 50 ms (sooner than
    // Retry-After asks, to keep the pressure on) until it is served, for at most two minutes. Every
    // answer is the caller's own result or a refusal with Retry-After.
    let started = Instant::now();
    let outcomes: Vec<(usize, u32, Value)> = futures_util::stream::iter(0..REQUESTS)
        .map(|i| {
            let client = client.clone();
            let url = url.clone();
            let body = request(&digits, i % digits.len());
            async move {
                let started = Instant::now();
                let mut refused = 0;
                loop {
                    let response = client.post(&url).json(&body).send().await.unwrap();
                    let status = response.status().as_u16();
                    let retry = response.headers().get("retry-after").is_some();
                    let answer: Value = response.json().await.unwrap();
                    match status {
                        200 => return (i, refused, answer),
                        503 | 429 => {
                            assert!(retry, "a refusal without Retry-After: {answer}");
                            refused += 1;
                            assert!(
                                started.elapsed() < Duration::from_secs(120),
                                "request {i} was never served"
                            );
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        other => panic!("request {i} was answered {other}: {answer}"),
                    }
                }
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let load_time = started.elapsed();

    let mut refusals = 0;
    for (i, refused, body) in &outcomes {
        refusals += refused;
        assert_eq!(body["id"], format!("load-{i}"));
        let sample = &body["report"]["samples"][0];
        assert_eq!(sample["index"], i % digits.len(), "request {i}");
        assert_eq!(sample["label"], digits.y[i % digits.len()], "request {i}");
        assert_eq!(body["report"]["summary"]["n"], 1);
    }
    eprintln!("{REQUESTS} requests served in {load_time:?}, after {refusals} refusals");
    assert_eq!(outcomes.len(), REQUESTS, "every request was answered");
    assert!(
        refusals > REQUESTS as u32,
        "the load stayed past capacity: {refusals} refusals"
    );

    // Every accepted job ends, succeeded, and is listed.
    let (accepted, told_to_wait) = jobs.await.unwrap();
    assert_eq!(accepted.len(), JOBS);
    assert!(told_to_wait > 0, "the per-token job limit was reached");
    for id in &accepted {
        let job = server
            .wait_for_job(id, Duration::from_secs(300), |job| {
                let status = job["status"].as_str().unwrap();
                assert!(
                    ["queued", "running", "succeeded"].contains(&status),
                    "job {id}: {job}"
                );
                status == "succeeded"
            })
            .await;
        assert_eq!(job["done"], 20);
    }
    let listed: Value = server.get_json("/v2/evaluations").await;
    let listed: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    for id in &accepted {
        assert!(listed.contains(&id.as_str()), "job {id} is listed");
    }

    // Memory stayed bounded: the peak during the load, and what is left after it.
    watching.store(false, Ordering::SeqCst);
    watcher.await.unwrap();
    let after = resident(server.pid());
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    eprintln!(
        "resident memory: {:.0} MiB after warm-up, {:.0} MiB peak, {:.0} MiB after",
        mib(baseline),
        mib(peak.load(Ordering::SeqCst)),
        mib(after)
    );
    assert!(
        peak.load(Ordering::SeqCst) < baseline + (1 << 30),
        "the load grew memory by more than 1 GiB"
    );
    assert!(
        after < baseline + (300 << 20),
        "memory kept after the load grew by over 300 MiB"
    );
    let ready = client
        .get(server.url("/v2/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
}
