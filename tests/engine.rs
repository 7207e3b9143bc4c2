//! Worker processes and dynamic batching, with real worker processes behind real HTTP.

mod common;

use std::time::{Duration, Instant};

use common::{Digits, TestServer};
use serde_json::{json, Value};

/// A PGD request on digits `range` (no random start, so results are deterministic).
fn pgd_request(digits: &Digits, range: std::ops::Range<usize>, steps: u32) -> Value {
    let n = range.len();
    json!({
        "inputs": [
            { "name": "input", "shape": [n, 1, 8, 8], "datatype": "FP32", "data": digits.inputs(range.clone()) },
            { "name": "label", "shape": [n], "datatype": "INT64", "data": digits.y[range.clone()] },
        ],
        "parameters": { "attack": "pgd", "eps": 0.1, "steps": steps, "step_size": 0.02, "random_start": false,
                        "sample_offset": range.start },
        "outputs": [{ "name": "adversarial" }],
    })
}

/// A request that keeps a CPU worker busy for a long time: many PGD steps on the ResNet.
fn long_request(steps: u32) -> Value {
    let n = 32;
    json!({
        "inputs": [
            { "name": "input", "shape": [n, 3, 32, 32], "datatype": "FP32", "data": vec![0.5f32; n * 3 * 32 * 32] },
            { "name": "label", "shape": [n], "datatype": "INT64", "data": vec![0; n] },
        ],
        "parameters": { "attack": "pgd", "eps": 0.03, "steps": steps, "objective": "loss" },
    })
}

async fn metric(server: &TestServer, name: &str) -> f64 {
    let text = reqwest::get(server.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

async fn wait_for_metric(server: &TestServer, name: &str, at_least: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let value = metric(server, name).await;
        if value >= at_least || Instant::now() > deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_requests_merge_into_fewer_batches_and_each_caller_gets_its_own_results() {
    let server = TestServer::start(&[
        "--max-batch-size",
        "64",
        "--max-queue-delay-microseconds",
        "200000",
    ])
    .await;
    let digits = Digits::load();
    let client = reqwest::Client::new();
    let attack_url = server.url("/v2/models/digits_cnn/attack");

    // The reference: all 32 samples in one request.
    let whole: Value = server
        .post_json(
            "/v2/models/digits_cnn/attack",
            &pgd_request(&digits, 0..32, 10),
        )
        .await;
    // A lone request waits the delay for others once; the report's checks, which run after
    // the attack as parts of the same request, do not wait again.
    let lone: Value = server
        .post_json(
            "/v2/models/digits_cnn/attack",
            &pgd_request(&digits, 0..1, 10),
        )
        .await;
    let timings = &lone["report"]["timings"];
    assert!(timings["attack_ms"].as_u64().unwrap() >= 200, "{timings}");
    assert!(timings["checks_ms"].as_u64().unwrap() < 200, "{timings}");
    let batches_before = metric(&server, "robustd_batches_total").await;

    // 32 single-sample requests at once.
    let calls = (0..32).map(|i| {
        let client = client.clone();
        let url = attack_url.clone();
        let body = pgd_request(&digits, i..i + 1, 10);
        tokio::spawn(async move {
            client
                .post(url)
                .json(&body)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    });
    let answers: Vec<Value> = futures_join(calls).await;
    let batches = metric(&server, "robustd_batches_total").await - batches_before;
    assert!(
        batches <= 8.0,
        "32 concurrent requests ran as {batches} batches"
    );

    for (i, answer) in answers.iter().enumerate() {
        assert_eq!(answer["report"]["summary"]["n"], 1, "request {i}: {answer}");
        assert_eq!(
            answer["report"]["samples"][0], whole["report"]["samples"][i],
            "request {i} got another sample's row"
        );
        let ours = answer["outputs"][0]["data"].as_array().unwrap();
        let reference = &whole["outputs"][0]["data"].as_array().unwrap()[i * 64..(i + 1) * 64];
        for (a, b) in ours.iter().zip(reference) {
            assert!(
                (a.as_f64().unwrap() - b.as_f64().unwrap()).abs() < 1e-5,
                "request {i}: adversarial example differs"
            );
        }
    }
}

async fn futures_join<T: Send + 'static>(
    tasks: impl Iterator<Item = tokio::task::JoinHandle<T>>,
) -> Vec<T> {
    let mut out = Vec::new();
    for task in tasks.collect::<Vec<_>>() {
        out.push(task.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_worker_is_replaced_and_its_request_retried() {
    let server = TestServer::start(&[]).await;
    let client = reqwest::Client::new();
    let digits = Digits::load();
    let url = server.url("/v2/models/digits_cnn/attack");

    // Killed between requests: the next request succeeds on the new worker.
    let worker = common::children_of(server.pid())[0];
    std::process::Command::new("kill")
        .args(["-KILL", &worker.to_string()])
        .status()
        .unwrap();
    let response = client
        .post(&url)
        .json(&pgd_request(&digits, 0..4, 5))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(wait_for_metric(&server, "robustd_worker_restarts_total", 1.0).await >= 1.0);

    // Killed while running a request: the request is run again by the replacement.
    let long = tokio::spawn({
        let client = client.clone();
        let url = server.url("/v2/models/cifar_resnet/attack");
        async move {
            client
                .post(url)
                .json(&long_request(40))
                .send()
                .await
                .unwrap()
        }
    });
    wait_for_metric(
        &server,
        "robustd_batches_total",
        metric(&server, "robustd_batches_total").await + 1.0,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let worker = common::children_of(server.pid())[0];
    std::process::Command::new("kill")
        .args(["-KILL", &worker.to_string()])
        .status()
        .unwrap();
    let response = long.await.unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    assert!(metric(&server, "robustd_worker_restarts_total").await >= 2.0);
    let died = metric(&server, "robustd_failures_total{reason=\"worker_died\"}").await;
    assert!(died >= 1.0, "the crash should be counted");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_queue_answers_503_with_retry_after() {
    let server = TestServer::start(&["--max-queue-size", "1"]).await;
    // The shipped models load through the same queue at start: let them all finish first.
    server.wait_all_ready().await;
    let client = reqwest::Client::new();
    let busy = tokio::spawn({
        let client = client.clone();
        let url = server.url("/v2/models/cifar_resnet/attack");
        async move {
            client
                .post(url)
                .timeout(Duration::from_secs(60))
                .json(&long_request(2000))
                .send()
                .await
        }
    });
    // Wait until the worker has taken the long batch, then fill the one queue place.
    let loads = metric(&server, "robustd_batches_total").await;
    wait_for_metric(&server, "robustd_batches_total", loads + 1.0).await;
    let digits = Digits::load();
    let url = server.url("/v2/models/digits_cnn/attack");
    let queued = tokio::spawn({
        let client = client.clone();
        let (url, body) = (url.clone(), pgd_request(&digits, 0..1, 5));
        async move {
            client
                .post(url)
                .timeout(Duration::from_secs(60))
                .json(&body)
                .send()
                .await
        }
    });
    wait_for_metric(&server, "robustd_queue_depth", 1.0).await;
    let refused = client
        .post(&url)
        .json(&pgd_request(&digits, 1..2, 5))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("queue is full"),
        "{body}"
    );
    drop((busy, queued));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_in_a_long_batch_exits_soon_after_its_server_is_killed() {
    let mut server = TestServer::start(&[]).await;
    server.wait_all_ready().await;
    let batches = metric(&server, "robustd_batches_total").await;
    let long = tokio::spawn({
        let url = server.url("/v2/models/cifar_resnet/attack");
        async move {
            reqwest::Client::new()
                .post(url)
                .json(&long_request(5000))
                .send()
                .await
        }
    });
    wait_for_metric(&server, "robustd_batches_total", batches + 1.0).await;
    let worker = common::children_of(server.pid())[0];
    // SIGKILL: the server gets no chance to stop its worker.
    server.kill_hard();
    assert!(long.await.unwrap().is_err(), "the server is gone");
    let deadline = Instant::now() + Duration::from_secs(30);
    while common::is_running(worker) {
        assert!(
            Instant::now() < deadline,
            "worker {worker} still runs its batch 30 s after its server was killed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_goes_away_cancels_its_running_attack_within_a_step() {
    let server = TestServer::start(&[]).await;
    let client = reqwest::Client::new();
    let loads = metric(&server, "robustd_batches_total").await;
    // A batch of thousands of steps; the client gives up after a second.
    let gone = client
        .post(server.url("/v2/models/cifar_resnet/attack"))
        .timeout(Duration::from_secs(1))
        .json(&long_request(5000))
        .send()
        .await;
    assert!(
        gone.is_err(),
        "the long attack should not have finished in a second"
    );
    assert!(
        metric(&server, "robustd_batches_total").await >= loads + 1.0,
        "the batch ran"
    );
    let cancelled =
        wait_for_metric(&server, "robustd_failures_total{reason=\"cancelled\"}", 1.0).await;
    assert_eq!(
        cancelled, 1.0,
        "the worker should report the batch cancelled"
    );
    // The same worker is free again and serves the next request.
    let digits = Digits::load();
    let response = client
        .post(server.url("/v2/models/digits_cnn/attack"))
        .json(&pgd_request(&digits, 0..2, 5))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(metric(&server, "robustd_worker_restarts_total").await, 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_past_its_deadline_fails_with_504_and_the_worker_is_restarted() {
    // Long enough for the replacement's first request (it loads the model) on a loaded machine.
    let server = TestServer::start(&["--worker-timeout-s", "3"]).await;
    let client = reqwest::Client::new();
    let response = client
        .post(server.url("/v2/models/cifar_resnet/attack"))
        .json(&long_request(5000))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 504);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("3s deadline"),
        "{body}"
    );
    assert!(wait_for_metric(&server, "robustd_worker_restarts_total", 1.0).await >= 1.0);
    server.wait_ready("digits_cnn").await;
    let digits = Digits::load();
    let response = client
        .post(server.url("/v2/models/digits_cnn/attack"))
        .json(&pgd_request(&digits, 0..2, 5))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}
