//! Reports and the gate against a real server: sweeps, each sanity check on a model built to
//! trip it, gate verdicts, and the `robustd gate` command's exit codes and files.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{path_str, repo_root, Digits, TestServer};
use serde_json::{json, Value};

/// A model folder with digits_cnn, the shipped data sets and the models that trip the checks.
fn trip_models() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("robustd-trip-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(dir.join("datasets")).unwrap();
    let models = repo_root().join("models");
    for file in ["digits_cnn.pt", "digits_cnn.json"] {
        std::fs::copy(models.join(file), dir.join(file)).unwrap();
    }
    std::fs::copy(
        models.join("datasets/digits_test.safetensors"),
        dir.join("datasets/digits_test.safetensors"),
    )
    .unwrap();
    let status = Command::new(common::python())
        .arg(repo_root().join("tests/reference/trip_models.py"))
        .arg(&models)
        .arg(&dir)
        .status()
        .expect("run trip_models.py");
    assert!(status.success());
    dir
}

async fn attack(server: &TestServer, model: &str, n: usize, parameters: Value) -> (u16, Value) {
    let digits = Digits::load();
    let body = json!({
        "inputs": [
            {"name": "input", "shape": [n, 1, 8, 8], "datatype": "FP32", "data": digits.inputs(0..n)},
            {"name": "label", "shape": [n], "datatype": "INT64", "data": digits.y[..n]},
        ],
        "parameters": parameters,
    });
    let response = reqwest::Client::new()
        .post(server.url(&format!("/v2/models/{model}/attack")))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {}", report["checks"]))
}

fn status(report: &Value, name: &str) -> String {
    check(report, name)["status"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn each_sanity_check_trips_on_a_model_built_to_trip_it() {
    let dir = trip_models();
    let server = TestServer::start(&["--models", path_str(&dir)]).await;
    for model in [
        "digits_step",
        "digits_random",
        "digits_softmax",
        "digits_reversed",
    ] {
        server.wait_ready(model).await;
    }
    let pgd = |extra: Value| {
        let mut p = json!({"attack": "pgd", "eps": 0.2, "steps": 10, "random_start": false,
            "thorough": true});
        p.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        p
    };

    // A sound model and attack: no check fails or warns.
    let (code, body) = attack(&server, "digits_cnn", 100, pgd(json!({}))).await;
    assert_eq!(code, 200, "{body}");
    let report = &body["report"];
    for c in report["checks"].as_array().unwrap() {
        let expected = if c["name"] == "monotonic_in_eps" {
            "skipped"
        } else {
            "pass"
        };
        assert_eq!(c["status"], expected, "digits_cnn: {c}");
    }
    assert_eq!(report["schema"], 2);
    assert_eq!(check(report, "unbounded_eps")["figures"]["eps"], 1.0);

    // A step in front of the network: zero gradients, and at an eps covering the whole domain
    // the attack still cannot move it: the gradient-masking warning.
    let (_, body) = attack(&server, "digits_step", 100, pgd(json!({}))).await;
    let report = &body["report"];
    let unbounded = check(report, "unbounded_eps");
    assert_eq!(unbounded["status"], "warn", "{unbounded}");
    assert!(unbounded["message"]
        .as_str()
        .unwrap()
        .contains("gradient masking"));
    assert_eq!(status(report, "input_gradients"), "fail");
    assert!(report["summary"]["zero_gradient"].as_u64().unwrap() > 90);

    // Noise on every forward pass.
    let (_, body) = attack(&server, "digits_random", 50, pgd(json!({}))).await;
    let randomised = check(&body["report"], "deterministic_outputs");
    assert_eq!(randomised["status"], "warn", "{randomised}");
    assert!(randomised["figures"]["max_change"].as_f64().unwrap() > 1e-3);

    // Probabilities instead of logits.
    let (_, body) = attack(&server, "digits_softmax", 50, pgd(json!({}))).await;
    assert_eq!(status(&body["report"], "outputs_are_logits"), "warn");
    assert_eq!(status(&body["report"], "deterministic_outputs"), "pass");

    // A reversed gradient: random noise of the same size breaks more than the attack.
    let (_, body) = attack(&server, "digits_reversed", 100, pgd(json!({"eps": 0.3}))).await;
    let noise = check(&body["report"], "noise_weaker");
    assert_eq!(noise["status"], "fail", "{noise}");
    let figures = &noise["figures"];
    assert!(figures["noise_robust_accuracy"].as_f64() < figures["attack_robust_accuracy"].as_f64());

    // A step size far too small: one FGSM step breaks what ten tiny steps miss.
    let (_, body) = attack(&server, "digits_cnn", 100, pgd(json!({"step_size": 1e-4}))).await;
    let single = check(&body["report"], "single_step_weaker");
    assert_eq!(single["status"], "fail", "{single}");
    assert!(single["figures"]["broken_by_fgsm_only"].as_f64().unwrap() >= 2.0);

    // Without `thorough` the checks that cost attack runs are skipped.
    let (_, body) = attack(&server, "digits_cnn", 20, pgd(json!({"thorough": false}))).await;
    for name in ["single_step_weaker", "noise_weaker", "unbounded_eps"] {
        assert_eq!(status(&body["report"], name), "skipped", "{name}");
    }
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn sweeps_and_gates_come_back_in_the_report() {
    let server = TestServer::start(&[]).await;
    let (code, body) = attack(
        &server,
        "digits_cnn",
        60,
        json!({"attack": "pgd", "eps": [0.2, 0.05, 0.1], "steps": 10,
               "gate": {"min_robust_accuracy": 0.99, "max_accuracy_drop": 0.99}}),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let report = &body["report"];
    let sweep = report["sweep"].as_array().unwrap();
    let eps: Vec<f64> = sweep.iter().map(|r| r["eps"].as_f64().unwrap()).collect();
    assert_eq!(eps, [0.05, 0.1, 0.2]);
    let accuracy: Vec<f64> = sweep
        .iter()
        .map(|r| r["summary"]["robust_accuracy"]["value"].as_f64().unwrap())
        .collect();
    assert!(
        accuracy[0] >= accuracy[1] && accuracy[1] >= accuracy[2],
        "{accuracy:?}"
    );
    assert!(accuracy[0] > accuracy[2], "{accuracy:?}");
    // The headline is the largest eps.
    assert_eq!(report["plan"]["attacks"][0]["eps"], 0.2);
    assert_eq!(report["summary"], sweep[2]["summary"]);
    assert_eq!(status(report, "monotonic_in_eps"), "pass");
    let gate = &report["gate"];
    assert_eq!(gate["passed"], false);
    let failed = gate["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{gate}");
    assert!(failed[0].as_str().unwrap().contains("robust accuracy"));
    let ci = &report["summary"]["robust_accuracy"]["ci95"];
    assert!(ci[0].as_f64() <= report["summary"]["robust_accuracy"]["value"].as_f64());

    // An ensemble under one swept eps.
    let (code, body) = attack(
        &server,
        "digits_cnn",
        20,
        json!({"eps": [0.05, 0.1], "attacks": [{"method": "fgsm"}, {"method": "apgd", "steps": 5}]}),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let attacks = body["report"]["plan"]["attacks"].as_array().unwrap();
    assert!(attacks.iter().all(|a| a["eps"] == 0.1));
    assert_eq!(
        body["report"]["summary"]["by_attack"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // Rules break with the field named.
    for (parameters, field) in [
        (
            json!({"attack": "pgd", "eps": [0.1, -1]}),
            "parameters.eps[1]",
        ),
        (json!({"attack": "pgd", "eps": []}), "parameters.eps"),
        (
            json!({"attack": "pgd", "eps": 0.1, "gate": {"min_robust_accuracy": 1.5}}),
            "parameters.gate.min_robust_accuracy",
        ),
        (
            json!({"attack": "pgd", "eps": 0.1, "gate": {"baseline": "no-such-job"}}),
            "parameters.gate.baseline",
        ),
        (
            json!({"attack": "pgd", "eps": 0.1, "gate": {"min_accuracy": 0.5}}),
            "parameters.gate",
        ),
    ] {
        let (code, body) = attack(&server, "digits_cnn", 2, parameters.clone()).await;
        assert_eq!(code, 400, "{parameters}: {body}");
        assert!(
            body["error"].as_str().unwrap().starts_with(field),
            "{parameters}: {body}"
        );
    }
}

fn gate(server: &str, args: &[&str]) -> (i32, String) {
    let output = common::robustd()
        .arg("gate")
        .args(["--server", server])
        .args(args)
        .output()
        .expect("run robustd gate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), text)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gate_command_exits_0_on_pass_1_on_fail_2_on_error() {
    let server = TestServer::start(&[]).await;
    let out = std::env::temp_dir().join(format!("robustd-gate-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&out).unwrap();
    let (junit, markdown, report) = (
        out.join("junit.xml"),
        out.join("summary.md"),
        out.join("report.json"),
    );
    let common_args = [
        "--model",
        "digits_cnn_at",
        "--attack",
        "pgd",
        "--steps",
        "10",
        "--limit",
        "60",
        "--chunk-size",
        "25",
    ];

    // Pass: the adversarially trained model keeps well over half its points at eps 0.1, on a
    // sweep run as an evaluation job in chunks.
    let (code, text) = gate(
        &server.base,
        &[
            &common_args[..],
            &[
                "--eps",
                "0.05,0.1",
                "--min-robust-accuracy",
                "0.5",
                "--on-lower-bound",
                "--junit",
                path_str(&junit),
                "--markdown",
                path_str(&markdown),
                "--report",
                path_str(&report),
            ],
        ]
        .concat(),
    );
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("verdict: PASSED"), "{text}");
    assert!(text.contains("robust accuracy at eps=0.05"), "{text}");
    let xml = read(&junit);
    assert!(xml.contains("failures=\"0\""), "{xml}");
    assert!(xml.contains("name=\"min_robust_accuracy\""), "{xml}");
    assert!(read(&markdown).contains("passed"));
    let saved: Value = serde_json::from_str(&read(&report)).unwrap();
    assert_eq!(saved["summary"]["n"], 60);
    assert_eq!(saved["sweep"].as_array().unwrap().len(), 2);
    assert_eq!(saved["gate"]["passed"], true);

    // Fail: a threshold it cannot meet; the JUnit file carries the failure.
    let (code, text) = gate(
        &server.base,
        &[
            &common_args[..],
            &[
                "--eps",
                "0.1",
                "--min-robust-accuracy",
                "0.99",
                "--junit",
                path_str(&junit),
            ],
        ]
        .concat(),
    );
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("verdict: FAILED"), "{text}");
    let xml = read(&junit);
    assert!(
        xml.contains("failures=\"1\"") && xml.contains("<failure"),
        "{xml}"
    );

    // The same settings against the saved report as a baseline: no regression (same seed, same
    // numbers); a stronger attack regresses beyond a zero margin.
    let (code, text) = gate(
        &server.base,
        &[
            &common_args[..],
            &["--eps", "0.05,0.1", "--baseline", path_str(&report)],
        ]
        .concat(),
    );
    assert_eq!(code, 0, "{text}");
    let (code, text) = gate(
        &server.base,
        &[
            &common_args[..],
            &["--eps", "0.2", "--baseline", path_str(&report)],
        ]
        .concat(),
    );
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("no_regression"), "{text}");

    // Errors: an unknown model, a bad flag value the server refuses, no server at all.
    let (code, text) = gate(&server.base, &["--model", "nope", "--eps", "0.1"]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("nope"), "{text}");
    let (code, text) = gate(
        &server.base,
        &["--model", "digits_cnn", "--eps", "0.1", "--steps", "0"],
    );
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("parameters.steps"), "{text}");
    let (code, text) = gate(
        "http://127.0.0.1:9",
        &["--model", "digits_cnn", "--eps", "0.1"],
    );
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("unreachable"), "{text}");
    let _ = std::fs::remove_dir_all(out);
}
