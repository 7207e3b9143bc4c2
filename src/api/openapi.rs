//! The OpenAPI document, collected from the handlers' annotations; `robustd openapi` prints it
//! and `openapi/openapi.json` is its committed copy.

use utoipa::OpenApi;

use super::error::ErrorBody;
use super::{attack, datasets, evaluations, health, infer, models, repository};

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
    ),
    components(schemas(ErrorBody, crate::report::Gate, crate::report::Report)),
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

/// The document as pretty JSON with a final newline.
pub fn document() -> String {
    let mut text = ApiDoc::openapi()
        .to_pretty_json()
        .expect("the document serialises");
    text.push('\n');
    text
}
