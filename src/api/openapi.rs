//! The OpenAPI document, collected from the handlers' annotations; `robustd openapi` prints it
//! and `openapi/openapi.json` is its committed copy.

use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::auth::{access, Access, Scope};

use super::error::ErrorBody;
use super::{attack, datasets, evaluations, health, infer, inputs, models, repository};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "robustd",
        description = "Adversarial-robustness evaluation: the worst-case loss of a TorchScript \
            model under bounded input perturbations (FGSM, PGD, APGD, ensembles), robust accuracy \
            with confidence intervals, and the adversarial examples. Open Inference Protocol \
            (KServe v2) routes where the protocol has a word.\n\nAttack conventions: the attacker \
            works in the model card's input domain; the card's normalisation is applied inside \
            the attacked graph; FGSM is x' = clip(x + eps sign(grad)); PGD steps alpha sign(grad) \
            (Linf) or alpha grad / ||grad|| (L2), projects onto the eps-ball and clips, as \
            torchattacks' PGD and PGDL2; APGD follows Croce and Hein (2020); an ensemble keeps \
            each sample's first breaking example; random starts depend only on (seed, sample \
            index, attack, restart).\n\nEvery report carries its schema version, the settings, \
            robust accuracy with a 95% Wilson interval, sanity checks (pass, warn, fail or \
            skipped) and, when the request's `parameters.gate` (schema `Gate`) sets thresholds, \
            the verdict. `parameters.eps` may be a list: a sweep, judged at its largest eps; \
            `parameters.thorough` adds the checks that cost extra attack runs.",
        license(name = "Apache-2.0")
    ),
    paths(
        health::server_metadata, health::live, health::ready, health::metrics,
        models::metadata, models::ready, infer::infer, attack::attack,
        repository::index, repository::load, repository::unload, repository::upload, repository::remove,
        datasets::list, datasets::describe, datasets::upload, datasets::remove,
        evaluations::create, evaluations::list, evaluations::status, evaluations::cancel,
        evaluations::events, evaluations::adversarial_npy, evaluations::adversarial_safetensors,
        inputs::inputs_safetensors,
    ),
    components(schemas(ErrorBody, crate::report::Gate, crate::report::Report)),
    modifiers(&AccessDocs),
    tags(
        (name = "health", description = "Server health and metadata"),
        (name = "models", description = "Model metadata and readiness"),
        (name = "inference", description = "Plain forward passes"),
        (name = "attacks", description = "Attacks answered inline"),
        (name = "evaluations", description = "Evaluation jobs for work too large to wait for"),
        (name = "datasets", description = "Labelled tensor sets"),
        (name = "repository", description = "Triton's model-repository extension, plus raw upload"),
    )
)]
pub struct ApiDoc;

/// Adds what the one access check and the request timeout answer to every operation they cover:
/// the bearer scheme, 401 (and 403 for admin routes), 504; 429 where a caller's jobs are counted.
/// The access of each operation comes from the same table the middleware reads.
struct AccessDocs;

impl Modify for AccessDocs {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "bearer",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        for (path, item) in openapi.paths.paths.iter_mut() {
            for (method, operation) in operations(item) {
                let Some(operation) = operation else {
                    continue;
                };
                let needed = access(&method, path);
                if let Access::Needs(scope) = needed {
                    operation.security = Some(vec![SecurityRequirement::new(
                        "bearer",
                        Vec::<String>::new(),
                    )]);
                    add_error(
                        operation,
                        "401",
                        "No token, or one the server does not accept",
                    );
                    if scope == Scope::Admin {
                        add_error(
                            operation,
                            "403",
                            "The token's scope does not cover the route",
                        );
                    }
                }
                if !super::untimed(&method, path) {
                    add_error(operation, "504", "The request ran past the request timeout");
                }
                if path == "/v2/evaluations" && method == axum::http::Method::POST {
                    add_error(
                        operation,
                        "429",
                        "The token already has as many jobs queued or running as it may",
                    );
                }
            }
        }
    }
}

fn operations(item: &mut PathItem) -> [(axum::http::Method, Option<&mut Operation>); 4] {
    use axum::http::Method;
    [
        (Method::GET, item.get.as_mut()),
        (Method::POST, item.post.as_mut()),
        (Method::PUT, item.put.as_mut()),
        (Method::DELETE, item.delete.as_mut()),
    ]
}

fn add_error(operation: &mut Operation, status: &str, description: &str) {
    let responses = &mut operation.responses.responses;
    if responses.contains_key(status) {
        return;
    }
    let content = ContentBuilder::new()
        .schema(Some(Ref::from_schema_name("ErrorBody")))
        .build();
    let response = ResponseBuilder::new()
        .description(description)
        .content("application/json", content)
        .build();
    responses.insert(status.to_owned(), RefOr::T(response));
}

/// The document as pretty JSON with a final newline.
pub fn document() -> String {
    let mut text = ApiDoc::openapi()
        .to_pretty_json()
        .expect("the document serialises");
    text.push('\n');
    text
}
