//! The math of robustd, on tch only: the attacked model and (with the attack engine) losses,
//! norms, projections and the attacks themselves. Nothing here knows about HTTP or processes.

mod model;

pub use model::{AttackedModel, ModelFileError};

/// Why an attack or a forward pass could not run.
#[derive(Debug, thiserror::Error)]
pub enum AttackError {
    /// The model misbehaves: wrong output shape, NaN outputs, not differentiable.
    #[error("model: {0}")]
    Model(String),
    /// The inputs or settings do not fit the model.
    #[error("{0}")]
    Input(String),
    /// libtorch refused an operation.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}
