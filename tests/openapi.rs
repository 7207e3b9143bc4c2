//! The committed OpenAPI document is what the code generates, and the server serves it with a
//! docs page that works offline.

mod common;

#[test]
fn the_committed_openapi_document_matches_the_code() {
    let output = common::robustd().arg("openapi").output().unwrap();
    assert!(output.status.success());
    let generated = String::from_utf8(output.stdout).unwrap();
    let committed =
        std::fs::read_to_string(common::repo_root().join("openapi/openapi.json")).unwrap();
    assert!(
        generated == committed,
        "openapi/openapi.json is stale: run `./dev openapi` and commit the result"
    );
    let document: serde_json::Value = serde_json::from_str(&generated).unwrap();
    for path in [
        "/v2/models/{model}/infer",
        "/v2/models/{model}/attack",
        "/v2/evaluations/{id}/events",
    ] {
        assert!(document["paths"][path].is_object(), "{path} is documented");
    }
    let attack = &document["paths"]["/v2/models/{model}/attack"]["post"]["responses"];
    for status in ["200", "400", "404", "413", "422", "503", "504", "500"] {
        assert!(
            attack[status].is_object(),
            "the attack route documents {status}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_serves_the_document_and_a_docs_page() {
    let server = common::TestServer::start(&[]).await;
    let served: serde_json::Value = reqwest::get(server.url("/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let committed: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(common::repo_root().join("openapi/openapi.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(served, committed);
    let page = reqwest::get(server.url("/docs/")).await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "{html}");
    let script = reqwest::get(server.url("/docs/swagger-ui-bundle.js"))
        .await
        .unwrap();
    assert_eq!(
        script.status(),
        200,
        "the docs page's script is served by robustd itself"
    );
}
