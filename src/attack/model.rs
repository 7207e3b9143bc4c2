//! A TorchScript model as the attacks see it: eval mode, the card's normalisation applied inside
//! the graph, outputs checked.

use std::path::Path;

use tch::{CModule, Device, Kind, Tensor};

use super::AttackError;
use crate::model::{ModelCard, Task};

/// Whether libtorch's graph executor optimises the models robustd runs; set for the loading
/// thread when a model loads ([`AttackedModel::load`]). Off, gradient loops took 0.88-0.99 of
/// the time they take with it on, a model's first calls no longer spend tens of milliseconds
/// being optimised, and a call's speed no longer depends on the calls before it (on, one forward
/// pass without gradients made the gradient steps after it up to 18% faster). Results were bit
/// for bit the same either way.
pub const GRAPH_EXECUTOR_OPTIMIZE: bool = false;

/// The file is not a TorchScript archive robustd will hand to libtorch.
#[derive(Debug, thiserror::Error)]
pub enum ModelFileError {
    #[error("model file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("model file {path}: {reason}")]
    NotArchive { path: String, reason: String },
    #[error("model file {path}: libtorch could not load it: {message}")]
    Load { path: String, message: String },
}

/// A loaded model with what the attacks need from its card.
pub struct AttackedModel {
    module: CModule,
    card: ModelCard,
    device: Device,
    /// Normalisation as broadcastable tensors of shape [1, C, 1, ...], on `device`.
    mean_std: Option<(Tensor, Tensor)>,
}

impl AttackedModel {
    /// Loads a TorchScript file onto `device` in eval mode.
    pub fn load(path: &Path, card: ModelCard, device: Device) -> Result<Self, ModelFileError> {
        let shown = path.display().to_string();
        check_archive(path, &shown)?;
        // The setting is per thread: set once here, on the thread that loads and then runs the
        // model (the worker's one thread), rather than before every forward pass of every step.
        tch::jit::f_set_graph_executor_optimize(GRAPH_EXECUTOR_OPTIMIZE).map_err(|e| {
            ModelFileError::Load {
                path: shown.clone(),
                message: first_line(&e),
            }
        })?;
        let mut module =
            CModule::load_on_device(path, device).map_err(|e| ModelFileError::Load {
                path: shown.clone(),
                message: first_line(&e),
            })?;
        module.set_eval();
        // Gradients are taken with respect to the input only: parameters never need them.
        let parameters = module
            .named_parameters()
            .map_err(|e| ModelFileError::Load {
                path: shown.clone(),
                message: first_line(&e),
            })?;
        for (_, parameter) in parameters {
            let _ = parameter.set_requires_grad(false);
        }
        let mean_std = card.normalization.as_ref().map(|norm| {
            let mut shape = vec![1i64; card.input.shape.len() + 1];
            shape[1] = if norm.mean.len() == 1 {
                1
            } else {
                card.input.shape[0]
            };
            let as_tensor = |v: &[f64]| {
                Tensor::from_slice(v)
                    .to_kind(Kind::Float)
                    .reshape(&shape)
                    .to_device(device)
            };
            (as_tensor(&norm.mean), as_tensor(&norm.std))
        });
        Ok(Self {
            module,
            card,
            device,
            mean_std,
        })
    }

    pub fn card(&self) -> &ModelCard {
        &self.card
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// Runs the model on inputs in the card's domain (normalised here) and checks that the output
    /// is `[batch, k]` with the k the card implies, as float.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, AttackError> {
        let input = match &self.mean_std {
            Some((mean, std)) => x.f_sub(mean)?.f_div(std)?,
            None => x.shallow_clone(),
        };
        let output = self.module.forward_ts(&[input])?;
        self.check_output(&output, x.size()[0])?;
        Ok(output.f_to_kind(Kind::Float)?)
    }

    /// Width of the output the card promises.
    pub fn output_width(&self) -> Option<i64> {
        match self.card.task {
            Task::Classification => self.card.num_classes,
            Task::Binary => Some(1),
            Task::Regression => None,
        }
    }

    fn check_output(&self, output: &Tensor, batch: i64) -> Result<(), AttackError> {
        let size = output.size();
        let expected = self.output_width();
        let fits = size.len() == 2
            && size[0] == batch
            && expected.is_none_or(|k| size[1] == k)
            && output.is_floating_point();
        if !fits {
            let want = match expected {
                Some(k) => format!("[{batch}, {k}]"),
                None => format!("[{batch}, k]"),
            };
            return Err(AttackError::Model(format!(
                "output must be a float tensor of shape {want}, got {:?} of {:?}",
                size,
                output.kind()
            )));
        }
        Ok(())
    }
}

/// The archive check of [`crate::model::archive`], in the worker too: whatever the file's way in,
/// libtorch's reader only sees archives that passed it.
fn check_archive(path: &Path, shown: &str) -> Result<(), ModelFileError> {
    let file = std::fs::File::open(path).map_err(|source| ModelFileError::Read {
        path: shown.to_owned(),
        source,
    })?;
    crate::model::check_archive(&file, &crate::model::ArchiveLimits::default())
        .map(|_| ())
        .map_err(|reason| ModelFileError::NotArchive {
            path: shown.to_owned(),
            reason,
        })
}

/// libtorch errors carry a C++ backtrace after the first line; the first line is the message.
fn first_line(error: &tch::TchError) -> String {
    let text = error.to_string();
    text.lines().next().unwrap_or_default().to_owned()
}
