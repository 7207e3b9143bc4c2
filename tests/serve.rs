//! The whole path HTTP -> server -> worker process -> libtorch, on the shipped models.

mod common;

use common::{Digits, TestServer};
use serde_json::{json, Value};

fn argmax(row: &[Value]) -> usize {
    let values: Vec<f64> = row.iter().map(|v| v.as_f64().unwrap()).collect();
    (0..values.len())
        .max_by(|&a, &b| values[a].total_cmp(&values[b]))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn health_metadata_and_a_real_inference_on_the_digits_model() {
    let server = TestServer::start(&[]).await;
    let client = reqwest::Client::new();

    let live: Value = server.get_json("/v2/health/live").await;
    assert_eq!(live, json!({ "live": true }));
    let ready = client
        .get(server.url("/v2/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);

    let meta: Value = server.get_json("/v2/models/digits_cnn").await;
    assert_eq!(meta["inputs"][0]["shape"], json!([-1, 1, 8, 8]));
    assert_eq!(meta["outputs"][0]["shape"], json!([-1, 10]));
    assert_eq!(meta["sha256"].as_str().unwrap().len(), 64);

    // 64 test digits through the model: predictions must match the labels as the card says.
    let digits = Digits::load();
    let n = 64;
    let request = json!({
        "id": "req-1",
        "inputs": [{
            "name": "input", "shape": [n, 1, 8, 8], "datatype": "FP32",
            "data": digits.inputs(0..n),
        }],
    });
    let response = client
        .post(server.url("/v2/models/digits_cnn/infer"))
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("x-request-id"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["id"], "req-1");
    assert_eq!(body["model_name"], "digits_cnn");
    let output = &body["outputs"][0];
    assert_eq!(output["shape"], json!([n, 10]));
    let logits = output["data"].as_array().unwrap();
    let correct = (0..n)
        .filter(|&i| argmax(&logits[i * 10..(i + 1) * 10]) as i64 == digits.y[i])
        .count();
    assert!(
        correct >= 60,
        "only {correct} of {n} test digits classified correctly"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_infer_requests_name_the_field_and_the_rule() {
    let server = TestServer::start(&[]).await;
    let client = reqwest::Client::new();
    let infer = |model: &str, body: Value| {
        client
            .post(server.url(&format!("/v2/models/{model}/infer")))
            .json(&body)
            .send()
    };
    let input = |shape: Value, data: Value| json!({ "inputs": [{ "name": "input", "shape": shape, "datatype": "FP32", "data": data }] });

    let cases = [
        (
            "digits_cnn",
            input(json!([1, 1, 8]), json!(vec![0.0; 8])),
            400,
            "inputs[0].shape: must be [batch, 1, 8, 8]",
        ),
        (
            "digits_cnn",
            input(json!([1, 1, 8, 8]), json!(vec![0.0; 10])),
            400,
            "data holds 10 values but shape [1, 1, 8, 8] needs 64",
        ),
        (
            "digits_cnn",
            json!({ "inputs": [] }),
            400,
            "exactly one input tensor",
        ),
        (
            "digits_cnn",
            json!({ "input": [] }),
            400,
            "missing field `inputs`",
        ),
        (
            "no_such_model",
            input(json!([1, 1, 8, 8]), json!(vec![0.0; 64])),
            404,
            "\"no_such_model\" is not in the repository",
        ),
    ];
    for (model, body, status, needle) in cases {
        let response = infer(model, body).await.unwrap();
        assert_eq!(response.status(), status, "{needle}");
        let error: Value = response.json().await.unwrap();
        let message = error["error"].as_str().unwrap();
        assert!(
            message.contains(needle),
            "{message:?} should contain {needle:?}"
        );
    }

    let response = infer(
        "digits_cnn",
        json!({ "inputs": [{ "name": "input", "shape": [1, 1, 8, 8], "datatype": "INT32", "data": vec![0; 64] }] }),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error_type"], "invalid_request");
    assert!(error["error"]
        .as_str()
        .unwrap()
        .contains("inputs[0].datatype: the model takes FP32, got INT32"));
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_the_server_and_its_workers() {
    let mut server = TestServer::start(&[]).await;
    let worker_pids = common::children_of(server.pid());
    assert!(
        !worker_pids.is_empty(),
        "serve should have started a worker process"
    );

    assert_eq!(server.terminate(), Some(0));
    for pid in worker_pids {
        assert!(!common::is_running(pid), "worker {pid} outlived the server");
    }
}

#[test]
fn a_missing_model_folder_is_one_clear_error_line() {
    let output = common::robustd()
        .args(["serve", "--port", "0", "--models", "/no/such/folder"])
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: model folder /no/such/folder: No such file or directory"),
        "{stderr}"
    );
}

#[test]
fn a_port_in_use_is_one_clear_error_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let output = common::robustd()
        .args(["serve", "--port", &port, "--models"])
        .arg(common::repo_root().join("models"))
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "error: cannot listen on 127.0.0.1:{port}: Address already in use"
        )),
        "{stderr}"
    );
}

#[test]
fn a_model_card_that_breaks_a_rule_is_named() {
    let folder = std::env::temp_dir().join(format!("robustd-card-{}", std::process::id()));
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(
        folder.join("broken.json"),
        r#"{"name": "broken", "task": "classification", "input": {"shape": [1, 8, 8]}, "num_classes": 1}"#,
    )
    .unwrap();
    let output = common::robustd()
        .args(["serve", "--port", "0", "--models"])
        .arg(&folder)
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    std::fs::remove_dir_all(&folder).unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("broken.json: num_classes must be at least 2"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_model_file_libtorch_cannot_load_is_unavailable_not_fatal() {
    let folder = std::env::temp_dir().join(format!("robustd-bad-model-{}", std::process::id()));
    std::fs::create_dir_all(&folder).unwrap();
    let models = common::repo_root().join("models");
    std::fs::copy(models.join("digits_cnn.pt"), folder.join("digits_cnn.pt")).unwrap();
    std::fs::copy(
        models.join("digits_cnn.json"),
        folder.join("digits_cnn.json"),
    )
    .unwrap();
    let card = std::fs::read_to_string(models.join("digits_cnn.json"))
        .unwrap()
        .replace("\"digits_cnn\"", "\"garbage\"");
    std::fs::write(folder.join("garbage.json"), card).unwrap();
    std::fs::write(folder.join("garbage.pt"), b"this is not a zip archive").unwrap();

    let server = TestServer::spawn(&["--models", common::path_str(&folder)]);
    server.wait_ready("digits_cnn").await;
    let client = reqwest::Client::new();
    // The broken model is reported, the good one still serves.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let body = loop {
        let response = client
            .get(server.url("/v2/models/garbage/ready"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
        let body: Value = response.json().await.unwrap();
        if body.get("reason").is_some() || std::time::Instant::now() > deadline {
            break body;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .contains("not a TorchScript archive"),
        "{body}"
    );
    drop(server);
    std::fs::remove_dir_all(&folder).unwrap();
}
