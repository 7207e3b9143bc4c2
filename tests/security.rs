//! Security: tokens and scopes on every route, the refusal to open an unauthenticated server to
//! the network, hostile model files, and the limits on what one request may ask for. Real
//! servers, real worker processes, real HTTP.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{Digits, TestServer};
use reqwest::Method;
use serde_json::{json, Value};

const READ: &str = "read-token-0123456789abcdef";
const ADMIN: &str = "admin-token-0123456789abcdef";
const WRONG: &str = "wrong-token-0123456789abcdef";

/// The hostile files of tests/reference/hostile_models.py, made once per test.
fn hostile_models() -> PathBuf {
    let out = std::env::temp_dir().join(format!("robustd-hostile-{}", uuid::Uuid::new_v4()));
    let status = std::process::Command::new(common::python())
        .arg(common::repo_root().join("tests/reference/hostile_models.py"))
        .arg(&out)
        .status()
        .expect("run hostile_models.py");
    assert!(status.success());
    out
}

/// A server with one read and one admin token, from a tokens file.
async fn server_with_tokens(extra: &[&str]) -> (TestServer, PathBuf) {
    let file = std::env::temp_dir().join(format!("robustd-tokens-{}", uuid::Uuid::new_v4()));
    std::fs::write(
        &file,
        format!("# test tokens\nread:{READ}\nadmin:{ADMIN}\n"),
    )
    .unwrap();
    let mut args = vec!["--tokens-file", common::path_str(&file)];
    args.extend_from_slice(extra);
    let mut server = TestServer::spawn(&args);
    // The helpers of `TestServer` send this token; the tests below send their own.
    server.token = Some(READ.to_owned());
    server.wait_ready("digits_cnn").await;
    (server, file)
}

/// Every operation of the served OpenAPI document, with its path parameters filled in.
async fn operations(server: &TestServer) -> Vec<(Method, String, String)> {
    let document: Value = reqwest::get(server.url("/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut operations = Vec::new();
    for (template, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let Ok(method) = method.to_uppercase().parse::<Method>() else {
                continue;
            };
            let path = template
                .replace("{model}", "digits_cnn")
                .replace("{name}", "digits_test")
                .replace("{id}", "00000000-0000-0000-0000-000000000000");
            operations.push((method, template.clone(), path));
        }
    }
    operations
}

fn is_public(template: &str) -> bool {
    matches!(template, "/v2/health/live" | "/v2/health/ready")
}

fn is_admin(method: &Method, template: &str) -> bool {
    template.starts_with("/v2/repository/models/")
        || (template == "/v2/datasets/{name}" && *method != Method::GET)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_route_in_the_document_goes_through_the_token_check() {
    let (server, tokens) = server_with_tokens(&[]).await;
    let client = reqwest::Client::new();
    let operations = operations(&server).await;
    assert!(operations.len() >= 20, "{} operations", operations.len());

    let send = |method: &Method, path: &str, token: Option<&str>| {
        let mut request = client.request(method.clone(), server.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        // A body that no handler accepts: the check must answer before any handler runs.
        request
            .header("content-type", "application/json")
            .body("{}")
            .send()
    };
    let mut checked = BTreeSet::new();
    for (method, template, path) in &operations {
        let none = send(method, path, None).await.unwrap();
        let wrong = send(method, path, Some(WRONG)).await.unwrap();
        let read = send(method, path, Some(READ)).await.unwrap();
        let what = format!("{method} {template}");
        if is_public(template) {
            assert_ne!(none.status(), 401, "{what} is public");
            continue;
        }
        assert_eq!(none.status(), 401, "{what} without a token");
        assert!(
            none.headers().contains_key("www-authenticate"),
            "{what}: a 401 names the scheme"
        );
        let body: Value = none.json().await.unwrap();
        assert_eq!(body["error_type"], "unauthorized", "{what}: {body}");
        assert_eq!(wrong.status(), 401, "{what} with a wrong token");
        if is_admin(method, template) {
            assert_eq!(read.status(), 403, "{what} with a read token");
            let admin = send(method, path, Some(ADMIN)).await.unwrap();
            assert!(
                ![401, 403].contains(&admin.status().as_u16()),
                "{what} with the admin token: {}",
                admin.status()
            );
        } else {
            assert!(
                ![401, 403].contains(&read.status().as_u16()),
                "{what} with a read token: {}",
                read.status()
            );
        }
        checked.insert(what);
    }
    // The docs stay open; an unknown route is still a plain 404.
    for path in ["/openapi.json", "/docs/", "/v2/health/live"] {
        let response = client.get(server.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    let unknown = client
        .get(server.url("/v2/nothing/here"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    assert!(
        checked.contains("POST /v2/models/{model}/attack"),
        "{checked:?}"
    );

    drop(server);
    let _ = std::fs::remove_file(tokens);
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_never_appear_in_the_log() {
    let (mut server, tokens) = server_with_tokens(&[]).await;
    let client = reqwest::Client::new();
    for token in [READ, ADMIN, WRONG] {
        let _ = client
            .get(server.url("/v2/models/digits_cnn"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let _ = client
            .put(server.url("/v2/datasets/mine"))
            .bearer_auth(token)
            .body("not a data set")
            .send()
            .await
            .unwrap();
    }
    server.terminate();
    let lines: Vec<String> = server.log.try_iter().collect();
    assert!(
        lines.iter().any(|l| l.contains("/v2/datasets/mine")),
        "the requests were logged"
    );
    for token in [READ, ADMIN, WRONG] {
        assert!(
            lines.iter().all(|l| !l.contains(token)),
            "a token reached the log"
        );
    }
    let _ = std::fs::remove_file(tokens);
}

#[test]
fn a_non_loopback_address_needs_tokens_or_the_explicit_flag() {
    let output = common::robustd()
        .args(["serve", "--host", "0.0.0.0", "--port", "0", "--models"])
        .arg(common::repo_root().join("models"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains("refusing to listen on 0.0.0.0 without tokens"),
        "{stderr}"
    );
    assert!(errors[0].contains("--allow-unauthenticated"), "{stderr}");

    let output = common::robustd()
        .args(["serve", "--port", "0", "--tokens", "read:short"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("at least 16 characters"), "{stderr}");
    assert!(
        !stderr.contains("short"),
        "the token itself is not echoed: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_explicit_flag_opens_a_non_loopback_address_with_a_warning() {
    let server = TestServer::spawn(&["--host", "0.0.0.0", "--allow-unauthenticated"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut warned = false;
    while !warned && Instant::now() < deadline {
        if let Ok(line) = server.log.recv_timeout(Duration::from_millis(200)) {
            warned = line.contains("WARN") && line.contains("no tokens and a non-loopback address");
        }
    }
    assert!(warned, "a warning names the open address");
    // The listening line names 0.0.0.0; talk to it over loopback.
    let port = server.base.rsplit(':').next().unwrap().to_owned();
    let response = reqwest::get(format!("http://127.0.0.1:{port}/v2/health/live"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

async fn upload(server: &TestServer, name: &str, file: &std::path::Path) -> (u16, Value) {
    let card = common::card("digits_cnn", name);
    let response = reqwest::Client::new()
        .put(server.url(&format!("/v2/repository/models/{name}")))
        .bearer_auth(ADMIN)
        .header("Model-Card", card.to_string())
        .body(std::fs::read(file).unwrap())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_model_files_are_refused_before_libtorch_and_a_runaway_one_costs_one_worker() {
    let hostile = hostile_models();
    let (server, tokens) = server_with_tokens(&["--worker-memory-mb", "900"]).await;
    let client = reqwest::Client::new();

    // Structural attacks: refused in Rust, named, nothing stored or loaded.
    for (file, rule) in [
        ("climb.pt", "may not climb with \"..\""),
        ("absolute.pt", "absolute names are not accepted"),
        ("bomb.pt", "would inflate"),
        ("lying.pt", "run into the central directory"),
        ("not_torchscript.pt", "not a TorchScript archive: it has no"),
    ] {
        let name = file.trim_end_matches(".pt");
        let (status, body) = upload(&server, name, &hostile.join(file)).await;
        assert_eq!(status, 400, "{file}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(rule),
            "{file}: {body}"
        );
        let meta = client
            .get(server.url(&format!("/v2/models/{name}")))
            .bearer_auth(READ)
            .send()
            .await
            .unwrap();
        assert_eq!(meta.status(), 404, "{file} was not registered");
    }

    // A model that passes the check but runs away with memory: its worker is killed, the
    // request gets a clear error, and the next request on another model succeeds.
    let (status, body) = upload(&server, "memory_hog", &hostile.join("memory_hog.pt")).await;
    assert_eq!(status, 201, "{body}");
    let digits = Digits::load();
    let infer = |model: &str| {
        client
            .post(server.url(&format!("/v2/models/{model}/infer")))
            .bearer_auth(READ)
            .json(&json!({ "inputs": [{ "name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": digits.inputs(0..1) }] }))
            .send()
    };
    let response = infer("memory_hog").await.unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("memory limit"),
        "{body}"
    );
    let response = infer("digits_cnn").await.unwrap();
    assert_eq!(response.status(), 200);
    let health = client
        .get(server.url("/v2/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    drop(server);
    let _ = std::fs::remove_file(tokens);
    let _ = std::fs::remove_dir_all(hostile);
}

fn attack_body(digits: &Digits, n: usize, parameters: Value) -> Value {
    json!({
        "inputs": [
            { "name": "input", "shape": [n, 1, 8, 8], "datatype": "FP32", "data": digits.inputs(0..n) },
            { "name": "label", "shape": [n], "datatype": "INT64", "data": digits.y[..n].to_vec() },
        ],
        "parameters": parameters,
    })
}

/// Checks that `response` has `status` and an error message that contains `needle`.
async fn refused(response: reqwest::Response, status: u16, needle: &str) {
    assert_eq!(response.status().as_u16(), status);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains(needle), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_limit_is_a_setting_and_names_itself_when_refused() {
    let server = TestServer::start(&[
        "--max-steps",
        "40",
        "--max-restarts",
        "2",
        "--max-tensor-rank",
        "4",
        "--max-elements",
        "2000",
        "--max-job-samples",
        "100",
        "--max-jobs-per-token",
        "1",
        "--max-upload-bytes",
        "4096",
        "--request-timeout-s",
        "2",
    ])
    .await;
    let client = reqwest::Client::new();
    let digits = Digits::load();
    let attack = |body: Value| {
        client
            .post(server.url("/v2/models/digits_cnn/attack"))
            .json(&body)
            .send()
    };
    let ok = attack(attack_body(
        &digits,
        2,
        json!({"attack": "pgd", "eps": 0.1, "steps": 40}),
    ))
    .await
    .unwrap();
    assert_eq!(ok.status(), 200);
    refused(
        attack(attack_body(
            &digits,
            2,
            json!({"attack": "pgd", "eps": 0.1, "steps": 41}),
        ))
        .await
        .unwrap(),
        400,
        "parameters.steps: must be at most 40 on this server (--max-steps), got 41",
    )
    .await;
    let restarts = json!({"attacks": [{"method": "fgsm", "eps": 0.1}, {"method": "pgd", "eps": 0.1, "restarts": 3}]});
    refused(
        attack(attack_body(&digits, 2, restarts)).await.unwrap(),
        400,
        "parameters.attacks[1].restarts: must be at most 2",
    )
    .await;
    let mut deep = attack_body(&digits, 1, json!({"attack": "fgsm", "eps": 0.1}));
    deep["inputs"][0]["shape"] = json!([1, 1, 1, 1, 8, 8]);
    refused(
        attack(deep).await.unwrap(),
        400,
        "inputs[0].shape: a tensor may have at most 4 dimensions (--max-tensor-rank), got 6",
    )
    .await;
    refused(
        attack(attack_body(
            &digits,
            32,
            json!({"attack": "fgsm", "eps": 0.1}),
        ))
        .await
        .unwrap(),
        413,
        "at most 2000 elements in all (--max-elements)",
    )
    .await;

    // Samples per job, and jobs per token: the second running job is answered 429.
    let job = |limit: usize, steps: u32| {
        client
            .post(server.url("/v2/evaluations"))
            .json(&json!({
                "model": "digits_cnn", "dataset": "digits_test", "limit": limit, "chunk_size": 1,
                "parameters": {"attack": "pgd", "eps": 0.1, "steps": steps}
            }))
            .send()
    };
    refused(
        job(101, 5).await.unwrap(),
        400,
        "at most 100 samples (--max-job-samples), got 101",
    )
    .await;
    let first = job(100, 40).await.unwrap();
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    let second = job(10, 5).await.unwrap();
    assert_eq!(second.status(), 429);
    assert!(second.headers().contains_key("retry-after"));
    let body: Value = second.json().await.unwrap();
    assert_eq!(body["error_type"], "too_many_requests", "{body}");
    let cancel = client
        .delete(server.url(&format!(
            "/v2/evaluations/{}",
            first["id"].as_str().unwrap()
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 202);

    // Upload size.
    let models = common::repo_root().join("models");
    let card = common::card("digits_cnn", "too_big");
    let response = client
        .put(server.url("/v2/repository/models/too_big"))
        .header("Model-Card", card.to_string())
        .body(std::fs::read(models.join("digits_cnn.pt")).unwrap())
        .send()
        .await
        .unwrap();
    refused(response, 413, "at most 4096 bytes (--max-upload-bytes)").await;

    // The request timeout: a long inline attack on the ResNet is cut at 2 s with a 504.
    let resnet = json!({
        "inputs": [
            { "name": "input", "shape": [4, 3, 32, 32], "datatype": "FP32", "data": vec![0.5f32; 4 * 3 * 32 * 32] },
            { "name": "label", "shape": [4], "datatype": "INT64", "data": [0, 1, 2, 3] },
        ],
        "parameters": {"attack": "pgd", "eps": 0.03, "steps": 200, "restarts": 2, "objective": "loss"},
    });
    let long_server =
        TestServer::start(&["--request-timeout-s", "1", "--max-elements", "100000"]).await;
    let started = Instant::now();
    let response = client
        .post(long_server.url("/v2/models/cifar_resnet/attack"))
        .json(&resnet)
        .send()
        .await
        .unwrap();
    refused(
        response,
        504,
        "request timeout of 1 s (--request-timeout-s)",
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(30));
}
