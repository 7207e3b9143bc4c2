//! The REST API over real HTTP against a real server with real worker processes: the Open
//! Inference Protocol (with its official client), the binary extension, attacks, data sets,
//! evaluation jobs with Server-Sent Events and cancellation, and the model repository.

mod common;

use std::time::{Duration, Instant};

use common::{Digits, TestServer};
use robustd::dataset::Dataset;
use robustd::tensor::{write_npy, HostTensor};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread")]
async fn the_official_oip_client_works_unchanged() {
    let server = TestServer::start(&[]).await;
    let output = std::process::Command::new(common::python())
        .arg(common::repo_root().join("tests/reference/oip_client.py"))
        .arg(server.base.trim_start_matches("http://"))
        .arg(common::repo_root().join("models/datasets/digits_test.safetensors"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(seen["live"], true);
    assert_eq!(seen["ready"], true);
    assert_eq!(seen["model_ready"], true);
    assert_eq!(seen["metadata_inputs"][0]["shape"], json!([-1, 1, 8, 8]));
    for key in ["binary=False", "binary=True"] {
        assert_eq!(seen[key]["shape"], json!([16, 10]), "{key}");
        assert!(
            seen[key]["accuracy"].as_f64().unwrap() >= 0.9,
            "{key}: {seen}"
        );
    }
    assert_eq!(seen["binary=True"]["id"], "req-True");
}

/// A JSON header followed by raw bytes, as the binary extension frames a body.
fn binary_body(header: &Value, tensors: &[&[u8]]) -> (Vec<u8>, usize) {
    let json = serde_json::to_vec(header).unwrap();
    let length = json.len();
    let mut body = json;
    for bytes in tensors {
        body.extend_from_slice(bytes);
    }
    (body, length)
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn attacks_take_and_give_binary_tensors_and_refuse_what_would_reach_libtorch_unchecked() {
    let server = TestServer::start(&[]).await;
    let client = reqwest::Client::new();
    let digits = Digits::load();
    let n = 8;
    let x = f32_bytes(&digits.inputs(0..n));
    let y: Vec<u8> = digits.y[..n]
        .iter()
        .flat_map(|v| (*v as i32).to_le_bytes())
        .collect();
    let header = json!({
        "inputs": [
            { "name": "input", "shape": [n, 1, 8, 8], "datatype": "FP32", "parameters": { "binary_data_size": x.len() } },
            { "name": "label", "shape": [n], "datatype": "INT32", "parameters": { "binary_data_size": y.len() } },
        ],
        "parameters": { "attack": "fgsm", "eps": 0.1, "binary_data_output": true },
        "outputs": [{ "name": "adversarial" }],
    });
    let (body, length) = binary_body(&header, &[&x, &y]);
    let response = client
        .post(server.url("/v2/models/digits_cnn/attack"))
        .header("Inference-Header-Content-Length", length)
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let length: usize = response.headers()["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let bytes = response.bytes().await.unwrap();
    let answer: Value = serde_json::from_slice(&bytes[..length]).unwrap();
    let size = answer["outputs"][0]["parameters"]["binary_data_size"]
        .as_u64()
        .unwrap() as usize;
    assert_eq!(size, n * 64 * 4);
    assert_eq!(bytes.len(), length + size);
    let adversarial: Vec<f32> = bytes[length..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let clean = digits.inputs(0..n);
    let linf = adversarial
        .iter()
        .zip(&clean)
        .map(|(a, c)| (a - c).abs())
        .fold(0.0, f32::max);
    assert!(
        linf <= 0.1 + 1e-6 && linf > 0.05,
        "FGSM perturbation {linf}"
    );
    assert_eq!(answer["report"]["summary"]["n"], n);

    // A NaN can only arrive as binary data; it is refused before any worker sees it.
    let mut poisoned = digits.inputs(0..1);
    poisoned[5] = f32::NAN;
    let x = f32_bytes(&poisoned);
    let header = json!({
        "inputs": [
            { "name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32", "parameters": { "binary_data_size": x.len() } },
            { "name": "label", "shape": [1], "datatype": "INT64", "data": [0] },
        ],
        "parameters": { "attack": "pgd", "eps": 0.1 },
    });
    let (body, length) = binary_body(&header, &[&x]);
    let response = client
        .post(server.url("/v2/models/digits_cnn/attack"))
        .header("Inference-Header-Content-Length", length)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert_eq!(
        error["error"],
        "inputs[0].data[5]: values must be finite numbers, got NaN"
    );

    // Field, rule and value for the usual mistakes.
    let good_x = json!({ "name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": digits.inputs(0..1) });
    let cases = [
        (
            json!({ "inputs": [good_x, { "name": "label", "shape": [1], "datatype": "INT64", "data": [10] }], "parameters": { "attack": "pgd", "eps": 0.1 } }),
            "inputs[1].data[0]: must be a class index in 0..10, got 10",
        ),
        (
            json!({ "inputs": [good_x, { "name": "label", "shape": [1], "datatype": "INT64", "data": [1] }], "parameters": { "attack": "pgd", "eps": 2e9 , "steps": 0} }),
            "parameters.steps: must be at least 1, got 0",
        ),
        (
            json!({ "inputs": [good_x, { "name": "label", "shape": [1], "datatype": "INT64", "data": [1] }], "parameters": { "attack": "cw", "eps": 0.1 } }),
            "unknown variant `cw`",
        ),
        (
            json!({ "inputs": [{ "name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": vec![1.5; 64] }, { "name": "label", "shape": [1], "datatype": "INT64", "data": [1] }], "parameters": { "attack": "pgd", "eps": 0.1 } }),
            "inputs[0].data[0]: values must lie in the model's input domain [0, 1], got 1.5",
        ),
        (
            json!({ "inputs": [good_x], "parameters": { "attack": "pgd", "eps": 0.1 } }),
            "a \"label\" tensor is required",
        ),
    ];
    for (body, needle) in cases {
        let response = client
            .post(server.url("/v2/models/digits_cnn/attack"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{needle}");
        let error: Value = response.json().await.unwrap();
        assert!(
            error["error"].as_str().unwrap().contains(needle),
            "{} should contain {needle:?}",
            error["error"]
        );
    }
}

/// Reads a Server-Sent Events stream to its end: (id, event, data) triples.
async fn read_events(response: reqwest::Response) -> Vec<(Option<u64>, String, Value)> {
    let text = tokio::time::timeout(Duration::from_secs(120), response.text())
        .await
        .expect("the stream ends")
        .unwrap();
    text.split("\n\n")
        .filter(|block| block.contains("data:"))
        .map(|block| {
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.trim().to_owned())
            };
            (
                field("id:").and_then(|v| v.parse().ok()),
                field("event:").unwrap_or_default(),
                serde_json::from_str(&field("data:").unwrap()).unwrap(),
            )
        })
        .collect()
}

/// Waits until evaluation `id` has `status`.
async fn wait_for_status(server: &TestServer, id: &str, status: &str) -> Value {
    server
        .wait_for_job(id, Duration::from_secs(120), |job| job["status"] == status)
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn an_evaluation_job_streams_progress_resumes_events_and_serves_its_examples() {
    let server = TestServer::start(&[]).await;
    let client = reqwest::Client::new();
    let response = client
        .post(server.url("/v2/evaluations"))
        .json(&json!({
            "model": "digits_cnn", "dataset": "digits_test", "limit": 96, "chunk_size": 32,
            "parameters": { "attack": "pgd", "eps": 0.1, "steps": 10, "seed": 3 },
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let job: Value = response.json().await.unwrap();
    assert_eq!(
        location,
        format!("/v2/evaluations/{}", job["id"].as_str().unwrap())
    );
    assert_eq!(job["total"], 96);

    let events = read_events(
        client
            .get(server.url(&format!("{location}/events")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let kinds: Vec<&str> = events.iter().map(|(_, kind, _)| kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "queued",
            "running",
            "progress",
            "progress",
            "progress",
            "succeeded"
        ],
        "{events:?}"
    );
    let ids: Vec<u64> = events.iter().map(|(id, _, _)| id.unwrap()).collect();
    assert_eq!(ids, [1, 2, 3, 4, 5, 6]);
    let done: Vec<i64> = events[2..5]
        .iter()
        .map(|(_, _, d)| d["done"].as_i64().unwrap())
        .collect();
    assert_eq!(done, [32, 64, 96]);

    // A client that saw event 4 gets only what came after.
    let resumed = read_events(
        client
            .get(server.url(&format!("{location}/events")))
            .header("Last-Event-ID", "4")
            .send()
            .await
            .unwrap(),
    )
    .await;
    let ids: Vec<u64> = resumed.iter().map(|(id, _, _)| id.unwrap()).collect();
    assert_eq!(ids, [5, 6]);

    let job: Value = server.get_json(&location).await;
    assert_eq!(job["status"], "succeeded");
    let report = &job["report"];
    assert_eq!(report["summary"]["n"], 96);
    assert_eq!(report["samples"].as_array().unwrap().len(), 96);
    let robust = report["summary"]["robust_accuracy"]["value"]
        .as_f64()
        .unwrap();
    assert_eq!(job["robust_accuracy_so_far"].as_f64().unwrap(), robust);
    let [lo, hi] = [0, 1].map(|i| {
        report["summary"]["robust_accuracy"]["ci95"][i]
            .as_f64()
            .unwrap()
    });
    assert!(lo < robust && robust < hi);

    // The same samples through the synchronous route give the same verdicts (same seed, same
    // sample indices).
    let digits = Digits::load();
    let sync: Value = server.post_json("/v2/models/digits_cnn/attack", &json!({
            "inputs": [
                { "name": "input", "shape": [32, 1, 8, 8], "datatype": "FP32", "data": digits.inputs(32..64) },
                { "name": "label", "shape": [32], "datatype": "INT64", "data": digits.y[32..64] },
            ],
            "parameters": { "attack": "pgd", "eps": 0.1, "steps": 10, "seed": 3, "sample_offset": 32 },
        })).await;
    for i in 0..32 {
        assert_eq!(
            sync["report"]["samples"][i]["robust"],
            report["samples"][32 + i]["robust"],
            "sample {}",
            32 + i
        );
    }

    let npy = client
        .get(server.url(&format!("{location}/adversarial.npy")))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let adversarial = robustd::tensor::read_npy(&npy).unwrap();
    assert_eq!(adversarial.shape, [96, 1, 8, 8]);
    let st = client
        .get(server.url(&format!("{location}/adversarial.safetensors")))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let st = safetensors::SafeTensors::deserialize(&st).unwrap();
    assert_eq!(st.tensor("adversarial").unwrap().shape(), [96, 1, 8, 8]);
    let flags = st.tensor("robust").unwrap();
    let robust_count: i64 = flags
        .data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .sum();
    assert_eq!(
        robust_count,
        report["summary"]["robust_accuracy"]["count"]
            .as_i64()
            .unwrap()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_job_stops_within_an_attack_step() {
    let server = TestServer::start(&["--max-steps", "20000"]).await;
    let client = reqwest::Client::new();
    let n = 16;
    let response = client
        .post(server.url("/v2/evaluations"))
        .json(&json!({
            "model": "cifar_resnet",
            "inputs": [
                { "name": "input", "shape": [n, 3, 32, 32], "datatype": "FP32", "data": vec![0.5f32; n * 3 * 32 * 32] },
                { "name": "label", "shape": [n], "datatype": "INT64", "data": vec![1; n] },
            ],
            "parameters": { "attack": "pgd", "eps": 0.03, "steps": 20000, "objective": "loss" },
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let job: Value = response.json().await.unwrap();
    let id = job["id"].as_str().unwrap().to_owned();
    wait_for_status(&server, &id, "running").await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let response = client
        .delete(server.url(&format!("/v2/evaluations/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let job = wait_for_status(&server, &id, "cancelled").await;
    assert_eq!(job["status"], "cancelled", "{job}");
    // The worker stopped the batch between two steps (not by being killed) and is free again.
    let deadline = Instant::now() + Duration::from_secs(30);
    let metrics = loop {
        let metrics = client
            .get(server.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if metrics.contains("reason=\"cancelled\"") || Instant::now() > deadline {
            break metrics;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        metrics.contains("robustd_failures_total{reason=\"cancelled\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("robustd_worker_restarts_total 0"),
        "{metrics}"
    );
    let digits = Digits::load();
    let infer = client
        .post(server.url("/v2/models/digits_cnn/infer"))
        .json(&json!({ "inputs": [{ "name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": digits.inputs(0..1) }] }))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap();
    assert_eq!(infer.status(), 200);

    let again = client
        .delete(server.url(&format!("/v2/evaluations/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
}

#[tokio::test(flavor = "multi_thread")]
async fn data_sets_upload_as_safetensors_or_npy_and_evaluate_by_name() {
    let server = TestServer::start(&[]).await;
    let client = reqwest::Client::new();
    let digits = Digits::load();
    let x = HostTensor::f32(vec![20, 1, 8, 8], digits.inputs(100..120));
    let y = HostTensor::i64(vec![20], digits.y[100..120].to_vec());

    let body = Dataset::to_safetensors(&[("x", &x), ("y", &y)]);
    let response = client
        .put(server.url("/v2/datasets/digits_small"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);

    let form = reqwest::multipart::Form::new()
        .part(
            "x",
            reqwest::multipart::Part::bytes(write_npy(&x)).file_name("x.npy"),
        )
        .part(
            "y",
            reqwest::multipart::Part::bytes(write_npy(&y)).file_name("y.npy"),
        );
    let response = client
        .put(server.url("/v2/datasets/digits_npy"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());

    let list: Value = server.get_json("/v2/datasets").await;
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["digits_test", "digits_npy", "digits_small"]);

    let mut verdicts = Vec::new();
    for name in ["digits_small", "digits_npy"] {
        let job: Value = server.post_json("/v2/evaluations", &json!({ "model": "digits_cnn_at", "dataset": name, "parameters": { "attack": "fgsm", "eps": 0.1 } })).await;
        let job = wait_for_status(&server, job["id"].as_str().unwrap(), "succeeded").await;
        assert_eq!(job["report"]["summary"]["n"], 20);
        verdicts.push(job["report"]["samples"].clone());
    }
    assert_eq!(
        verdicts[0], verdicts[1],
        "the two uploads hold the same samples"
    );

    let bad = client
        .put(server.url("/v2/datasets/..bad"))
        .body(vec![1, 2, 3])
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let only_x = Dataset::to_safetensors(&[("x", &x)]);
    let response = client
        .put(server.url("/v2/datasets/broken"))
        .body(only_x)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("no tensor named \"y\""),
        "{error}"
    );
    let shipped = client
        .delete(server.url("/v2/datasets/digits_test"))
        .send()
        .await
        .unwrap();
    assert_eq!(shipped.status(), 409);
}

const ADMIN: &str = "admin-token-for-the-upload-test";

#[tokio::test(flavor = "multi_thread")]
async fn models_upload_through_triton_load_or_a_raw_stream_and_only_with_the_admin_token() {
    let server = TestServer::start(&["--admin-token", ADMIN]).await;
    let client = reqwest::Client::new();
    let models = common::repo_root().join("models");
    let file = std::fs::read(models.join("digits_cnn_at.pt")).unwrap();
    let mut card = common::card("digits_cnn_at", "robust_upload");

    // Triton's load with the files in the request, as its model-repository extension defines.
    use base64::Engine as _;
    let load = json!({ "parameters": {
        "config": card.to_string(),
        "file:model.pt": base64::engine::general_purpose::STANDARD.encode(&file),
    }});
    let url = server.url("/v2/repository/models/robust_upload/load");
    let refused = client.post(&url).json(&load).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    let response = client
        .post(&url)
        .bearer_auth(ADMIN)
        .json(&load)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());

    // The raw stream, card in a header.
    card["name"] = json!("streamed");
    let response = client
        .put(server.url("/v2/repository/models/streamed"))
        .bearer_auth(ADMIN)
        .header("Model-Card", card.to_string())
        .body(file.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    let stored: Value = response.json().await.unwrap();
    assert_eq!(stored["state"], "READY");

    // Same file twice, stored once; both serve the same answers as the shipped original.
    let index: Value = client
        .post(server.url("/v2/repository/index"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sha = |name: &str| {
        index
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .map(|m| m["state"].clone())
    };
    assert_eq!(sha("robust_upload"), Some(json!("READY")));
    assert_eq!(sha("streamed"), Some(json!("READY")));
    let digits = Digits::load();
    let infer = |name: &str| {
        client
            .post(server.url(&format!("/v2/models/{name}/infer")))
            .bearer_auth(ADMIN)
            .json(&json!({ "inputs": [{ "name": "input", "shape": [4, 1, 8, 8], "datatype": "FP32", "data": digits.inputs(0..4) }] }))
            .send()
    };
    let a: Value = infer("streamed").await.unwrap().json().await.unwrap();
    let b: Value = infer("digits_cnn_at").await.unwrap().json().await.unwrap();
    assert_eq!(a["outputs"][0]["data"], b["outputs"][0]["data"]);
    let meta_a: Value = server.get_json("/v2/models/streamed").await;
    let meta_b: Value = server.get_json("/v2/models/robust_upload").await;
    assert_eq!(meta_a["sha256"], meta_b["sha256"]);

    // Not a TorchScript archive: refused before libtorch sees it.
    card["name"] = json!("garbage");
    let response = client
        .put(server.url("/v2/repository/models/garbage"))
        .bearer_auth(ADMIN)
        .header("Model-Card", card.to_string())
        .body(b"definitely not a zip".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    // A shipped model cannot be replaced or removed.
    let response = client
        .delete(server.url("/v2/repository/models/digits_cnn"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 409);
    // Unload, then load again.
    let response = client
        .post(server.url("/v2/repository/models/streamed/unload"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(infer("streamed").await.unwrap().status(), 422);
    let response = client
        .post(server.url("/v2/repository/models/streamed/load"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(infer("streamed").await.unwrap().status(), 200);
    let response = client
        .delete(server.url("/v2/repository/models/streamed"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(infer("streamed").await.unwrap().status(), 404);
}
