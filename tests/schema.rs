//! Property tests of the whole API against its own OpenAPI document: schemathesis (from the
//! project's virtual environment) generates requests for every operation from the served
//! document and checks that no answer is a server error and that every answer matches the
//! documented schema of its status. A real server with real workers, with tight limits so that
//! generated attack settings stay cheap.

mod common;

use std::path::PathBuf;

use common::TestServer;

const ADMIN: &str = "admin-token-for-the-schema-test";

fn schemathesis() -> PathBuf {
    common::python().with_file_name("schemathesis")
}

#[tokio::test(flavor = "multi_thread")]
async fn every_operation_answers_within_its_documented_schema_and_never_with_a_5xx() {
    let server = TestServer::start(&[
        "--admin-token",
        ADMIN,
        "--max-steps",
        "10",
        "--max-restarts",
        "2",
        "--max-batch-size",
        "8",
        "--max-elements",
        "20000",
        "--max-job-samples",
        "50",
        "--max-jobs-per-token",
        "1000",
        "--request-timeout-s",
        "30",
    ])
    .await;
    // Real names and a finished job for the path parameters, so that operations are tested
    // on things that exist, not only answered 404.
    let job: serde_json::Value = server
        .post_json(
            "/v2/evaluations",
            &serde_json::json!({
                "model": "digits_cnn", "dataset": "digits_test", "limit": 8,
                "parameters": {"attack": "pgd", "eps": 0.1, "steps": 2}
            }),
        )
        .await;
    let id = job["id"].as_str().unwrap().to_owned();
    server
        .wait_for_job(&id, std::time::Duration::from_secs(120), |job| {
            job["status"] == "succeeded"
        })
        .await;
    let report = std::env::temp_dir().join(format!("robustd-schema-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&report).unwrap();
    let config = report.join("schemathesis.toml");
    std::fs::write(
        &config,
        format!(
            "[parameters]\n\"path.model\" = \"digits_cnn\"\n\"path.name\" = \"digits_test\"\n\
             \"path.id\" = \"{id}\"\n"
        ),
    )
    .unwrap();
    let output = std::process::Command::new(schemathesis())
        .arg("--config-file")
        .arg(&config)
        .args(["run", &server.url("/openapi.json")])
        .args(["--checks", "not_a_server_error,response_schema_conformance"])
        .args(["--phases", "examples,coverage,fuzzing"])
        // One worker: with two, both threads describe strategies through `ast.parse`, whose
        // recursion counter Python 3.11 keeps per interpreter, and a race between them stops
        // the run with "AST constructor recursion depth mismatch" (seen here, one run in a few).
        .args(["--max-examples", "40", "--seed", "7", "--workers", "1"])
        .args(["--suppress-health-check", "all", "--request-timeout", "60"])
        .args(["--header", &format!("Authorization: Bearer {ADMIN}")])
        .arg("--report-dir")
        .arg(report.join("reports"))
        .env("NO_COLOR", "1")
        // Its cache of past runs goes beside the report, not into the checkout.
        .current_dir(&report)
        .output()
        .expect("run schemathesis from the project's virtual environment");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{stdout}\n{stderr}");
    assert!(
        output.status.success(),
        "schemathesis found answers that break the document (see above)"
    );
    // It did test the operations, not just read the document.
    assert!(stdout.contains("passed"), "{stdout}");
    let _ = std::fs::remove_dir_all(report);
}
