//! Nothing a user gave robustd or got from it is lost when the server stops or crashes.

mod common;

use std::time::Duration;

use common::{Digits, TestServer};
use robustd::dataset::Dataset;
use robustd::tensor::HostTensor;
use serde_json::{json, Value};

struct Folder(std::path::PathBuf);

impl Drop for Folder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// How long an evaluation of the whole test split may take on a loaded machine.
const JOB_TIME: Duration = Duration::from_secs(300);

fn blob_path(data: &std::path::Path, sha: &str) -> std::path::PathBuf {
    data.join("blobs").join(&sha[..2]).join(&sha[2..])
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_server_resumes_its_evaluation_and_keeps_everything_else() {
    let data =
        Folder(std::env::temp_dir().join(format!("robustd-persist-{}", uuid::Uuid::new_v4())));
    let data_arg = data.0.to_str().unwrap().to_owned();
    let client = reqwest::Client::new();
    let mut server = TestServer::start(&["--data-dir", &data_arg]).await;

    // A model, a data set and a finished evaluation.
    let models = common::repo_root().join("models");
    let card = common::card("digits_cnn", "mine");
    let response = client
        .put(server.url("/v2/repository/models/mine"))
        .header("Model-Card", card.to_string())
        .body(std::fs::read(models.join("digits_cnn.pt")).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let digits = Digits::load();
    let x = HostTensor::f32(vec![24, 1, 8, 8], digits.inputs(0..24));
    let y = HostTensor::i64(vec![24], digits.y[..24].to_vec());
    let response = client
        .put(server.url("/v2/datasets/few"))
        .body(Dataset::to_safetensors(&[("x", &x), ("y", &y)]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let first: Value = server.post_json("/v2/evaluations", &json!({ "model": "mine", "dataset": "few", "parameters": { "attack": "pgd", "eps": 0.1, "steps": 5 } })).await;
    let first_id = first["id"].as_str().unwrap().to_owned();
    let first = server
        .wait_for_job(&first_id, JOB_TIME, |j| j["status"] == "succeeded")
        .await;
    assert_eq!(first["status"], "succeeded");

    // A long evaluation, killed with the server part-way.
    let long: Value = server.post_json("/v2/evaluations", &json!({
            "model": "digits_cnn", "dataset": "digits_test", "chunk_size": 8,
            "parameters": { "attack": "apgd", "eps": 0.1, "steps": 100, "objective": "loss", "seed": 9 },
        })).await;
    let long_id = long["id"].as_str().unwrap().to_owned();
    let progress = server
        .wait_for_job(&long_id, JOB_TIME, |j| {
            j["done"].as_i64().unwrap_or(0) >= 16
        })
        .await;
    assert!(progress["done"].as_i64().unwrap() >= 16);
    server.kill_hard();
    let job_before = {
        // What the store held at the crash: done so far (read after restart below).
        progress["done"].as_i64().unwrap()
    };

    // Start again on the same data folder.
    let server = TestServer::start(&["--data-dir", &data_arg]).await;
    server.wait_ready("mine").await;
    let resumed = server.get_json(&format!("/v2/evaluations/{long_id}")).await;
    assert!(
        resumed["done"].as_i64().unwrap() >= job_before,
        "finished chunks were kept: {resumed}"
    );
    assert_ne!(resumed["status"], "failed", "{resumed}");
    let finished = server
        .wait_for_job(&long_id, JOB_TIME, |j| {
            j["status"] == "succeeded" || j["status"] == "failed"
        })
        .await;
    assert_eq!(finished["status"], "succeeded", "{finished}");
    assert_eq!(finished["done"], 360);
    assert_eq!(finished["report"]["samples"].as_array().unwrap().len(), 360);

    // Everything from before the crash is intact.
    let again = server
        .get_json(&format!("/v2/evaluations/{first_id}"))
        .await;
    assert_eq!(again["report"], first["report"]);
    let datasets = server.get_json("/v2/datasets").await;
    assert!(datasets
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["name"] == "few" && d["n"] == 24));
    let index: Value = client
        .post(server.url("/v2/repository/index"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        index
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "mine" && m["state"] == "READY"),
        "{index}"
    );

    // Asking for reuse returns the earlier report instead of computing it again.
    let reused = client
        .post(server.url("/v2/evaluations"))
        .json(&json!({ "model": "mine", "dataset": "few", "reuse": true, "parameters": { "attack": "pgd", "eps": 0.1, "steps": 5 } }))
        .send()
        .await
        .unwrap();
    assert_eq!(reused.status(), 200);
    let reused: Value = reused.json().await.unwrap();
    assert_eq!(reused["id"], first_id);
    assert_eq!(reused["reused"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_or_missing_blob_fails_that_item_alone() {
    let data =
        Folder(std::env::temp_dir().join(format!("robustd-corrupt-{}", uuid::Uuid::new_v4())));
    let data_arg = data.0.to_str().unwrap().to_owned();
    let client = reqwest::Client::new();
    let mut server = TestServer::start(&["--data-dir", &data_arg]).await;

    let digits = Digits::load();
    let x = HostTensor::f32(vec![8, 1, 8, 8], digits.inputs(0..8));
    let y = HostTensor::i64(vec![8], digits.y[..8].to_vec());
    for name in ["good", "bad"] {
        let response = client
            .put(server.url(&format!("/v2/datasets/{name}")))
            .body(Dataset::to_safetensors(&[("x", &x), ("y", &y)]))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }
    // Same content, same blobs: corrupting them would hit both. Give `bad` its own samples.
    let x_bad = HostTensor::f32(vec![8, 1, 8, 8], digits.inputs(8..16));
    let response = client
        .put(server.url("/v2/datasets/bad"))
        .body(Dataset::to_safetensors(&[("x", &x_bad), ("y", &y)]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let models = common::repo_root().join("models");
    let card = common::card("digits_parity", "fragile");
    let stored: Value = client
        .put(server.url("/v2/repository/models/fragile"))
        .header("Model-Card", card.to_string())
        .body(std::fs::read(models.join("digits_parity.pt")).unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    server.kill_hard();

    // Damage the blobs behind `bad` (one corrupt, one gone) and the uploaded model.
    let x_sha = sha256_hex(&robustd::tensor::write_npy(&x_bad));
    std::fs::write(blob_path(&data.0, &x_sha), b"bit rot").unwrap();
    std::fs::remove_file(blob_path(&data.0, stored["sha256"].as_str().unwrap())).unwrap();

    let server = TestServer::start(&["--data-dir", &data_arg]).await;
    let response = client
        .post(server.url("/v2/evaluations"))
        .json(&json!({ "model": "digits_cnn", "dataset": "bad", "parameters": { "attack": "fgsm", "eps": 0.1 } }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let error: Value = response.json().await.unwrap();
    let message = error["error"].as_str().unwrap();
    assert!(
        message.contains("data set \"bad\"") && message.contains("corrupt"),
        "{message}"
    );

    let response = client
        .post(server.url("/v2/evaluations"))
        .json(&json!({ "model": "digits_cnn", "dataset": "good", "parameters": { "attack": "fgsm", "eps": 0.1 } }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let missing = client
        .get(server.url("/v2/models/fragile"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        missing.status(),
        404,
        "a model whose file is gone is not served"
    );
    // The shipped model with the same file is loaded from its own folder, not the lost blob.
    // Models load one after another at start, so wait for it rather than ask once.
    server.wait_ready("digits_parity").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pruning_drops_examples_but_keeps_reports() {
    let data = Folder(std::env::temp_dir().join(format!("robustd-prune-{}", uuid::Uuid::new_v4())));
    let data_arg = data.0.to_str().unwrap().to_owned();
    let client = reqwest::Client::new();
    let server = TestServer::start(&["--data-dir", &data_arg]).await;
    let job: Value = server.post_json("/v2/evaluations", &json!({ "model": "digits_cnn", "dataset": "digits_test", "limit": 32, "parameters": { "attack": "fgsm", "eps": 0.1 } })).await;
    let id = job["id"].as_str().unwrap().to_owned();
    let done = server
        .wait_for_job(&id, JOB_TIME, |j| j["status"] == "succeeded")
        .await;
    let npy = client
        .get(server.url(&format!("/v2/evaluations/{id}/adversarial.npy")))
        .send()
        .await
        .unwrap();
    assert_eq!(npy.status(), 200);

    let output = common::robustd()
        .args(["prune", "--data-dir", &data_arg, "--max-mb", "0"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout)
        .contains("pruned the adversarial examples of 1 evaluations"));

    let gone = client
        .get(server.url(&format!("/v2/evaluations/{id}/adversarial.npy")))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 410);
    let after = server.get_json(&format!("/v2/evaluations/{id}")).await;
    assert_eq!(after["report"], done["report"]);
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
