//! The floor: a bare libtorch loop of PGD-K on the TorchScript model, nothing around it. Each step
//! is one forward pass, the loss, the gradient with respect to the input, the sign step, the
//! projection onto the eps-ball and the clip to [0, 1]. No attack can cost less.

use std::path::Path;

use robustd::model::ModelCard;
use tch::{CModule, Device, Kind, Reduction, Tensor};

pub struct Floor {
    module: CModule,
    /// The card's normalisation, [1, C, 1, 1], applied inside the attacked graph.
    mean_std: Option<(Tensor, Tensor)>,
}

impl Floor {
    /// Loads the model as any careful attack would: eval mode, parameters frozen.
    pub fn load(path: &Path, card: &ModelCard, device: Device) -> Self {
        let mut module = CModule::load_on_device(path, device).expect("load the model");
        module.set_eval();
        for (_, parameter) in module.named_parameters().expect("parameters") {
            let _ = parameter.set_requires_grad(false);
        }
        let mean_std = card.normalization.as_ref().map(|norm| {
            let channels = norm.mean.len() as i64;
            let as_tensor = |v: &[f64]| {
                Tensor::from_slice(v)
                    .to_kind(Kind::Float)
                    .view([1, channels, 1, 1])
                    .to_device(device)
            };
            (as_tensor(&norm.mean), as_tensor(&norm.std))
        });
        Self { module, mean_std }
    }

    /// PGD-`steps` with a uniform random start; returns the last iterate.
    pub fn pgd(&self, x: &Tensor, y: &Tensor, eps: f64, alpha: f64, steps: u32) -> Tensor {
        let mut adv = random_start(x, eps);
        for _ in 0..steps {
            adv = self.step(&adv, x, y, eps, alpha);
        }
        adv
    }

    /// PGD with the batch cut to its first `sizes[s]` rows before step `s`: what attacking only
    /// the points still unbroken costs, with nothing spent on finding them.
    pub fn pgd_shrinking(
        &self,
        x: &Tensor,
        y: &Tensor,
        eps: f64,
        alpha: f64,
        sizes: &[usize],
    ) -> Tensor {
        let mut adv = random_start(x, eps);
        let (mut x, mut y) = (x.shallow_clone(), y.shallow_clone());
        for &size in sizes {
            let size = size as i64;
            if size == 0 {
                break;
            }
            if size < x.size()[0] {
                (x, y, adv) = (
                    x.narrow(0, 0, size),
                    y.narrow(0, 0, size),
                    adv.narrow(0, 0, size),
                );
            }
            adv = self.step(&adv, &x, &y, eps, alpha);
        }
        adv
    }

    fn step(&self, adv: &Tensor, x: &Tensor, y: &Tensor, eps: f64, alpha: f64) -> Tensor {
        let input = adv.detach().set_requires_grad(true);
        let normalised = match &self.mean_std {
            Some((mean, std)) => (&input - mean) / std,
            None => input.shallow_clone(),
        };
        let logits = self.module.forward_ts(&[normalised]).expect("forward");
        let loss = logits.cross_entropy_loss::<Tensor>(y, None, Reduction::Sum, -100, 0.0);
        let grad = Tensor::run_backward(&[loss], &[&input], false, false).remove(0);
        let stepped = input.detach() + grad.sign() * alpha;
        (x + (stepped - x).clamp(-eps, eps)).clamp(0.0, 1.0)
    }
}

/// A uniform random point of the eps-ball around `x`, clipped to [0, 1].
fn random_start(x: &Tensor, eps: f64) -> Tensor {
    (x + (x.rand_like() * (2.0 * eps) - eps)).clamp(0.0, 1.0)
}
