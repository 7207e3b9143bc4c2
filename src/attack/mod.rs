//! The math of robustd, on tch only: the attacked model, losses, the eps-ball, per-sample random
//! streams, and the attacks (FGSM, PGD, APGD, ensembles). Nothing here knows about HTTP or
//! processes.
//!
//! Conventions (the API documents the same):
//! - the attacker works in input space, inside the card's domain `[lo, hi]`; the card's
//!   normalisation is applied inside the attacked graph;
//! - gradients are taken with respect to the input only, the model in eval mode;
//! - a sample's random start depends only on (seed, sample index, attack, restart);
//! - an ensemble runs its attacks in order, each from the clean input; under the `accuracy`
//!   objective each attack only sees the points still robust (AutoAttack's semantics).

mod apgd;
pub mod ball;
pub mod loss;
mod model;
mod pgd;
pub mod probe;
mod run;
pub mod spec;
pub mod stream;
mod tracker;

pub use model::{AttackedModel, ModelFileError, GRAPH_EXECUTOR_OPTIMIZE};
pub use probe::Labels;
pub use run::{evaluate, Batch, Evaluation};
pub use spec::{AttackPlan, AttackSettings, LossKind, Method, Norm, Objective, SampleResult};

/// Why an attack or a forward pass could not run.
#[derive(Debug, thiserror::Error)]
pub enum AttackError {
    /// The model misbehaves: wrong output shape, NaN outputs, not differentiable.
    #[error("model: {0}")]
    Model(String),
    /// The inputs or settings do not fit the model.
    #[error("{0}")]
    Input(String),
    /// The run was cancelled between two steps.
    #[error("cancelled")]
    Cancelled,
    /// libtorch refused an operation.
    #[error("libtorch: {}", first_line(.0))]
    Torch(#[from] tch::TchError),
}

/// libtorch's messages carry a C++ backtrace after the first line; the first line is the message.
fn first_line(error: &tch::TchError) -> String {
    error
        .to_string()
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}
