//! The geometry of the threat model: steps, projections onto the eps-ball, the input domain.

use tch::{Kind, Tensor};

use super::spec::Norm;

/// Guards divisions by a norm that may be zero, as torchattacks' PGDL2 does.
const TINY: f64 = 1e-10;

/// The eps-ball around clean inputs, inside the domain [lo, hi].
#[derive(Debug, Clone, Copy)]
pub struct Ball {
    pub norm: Norm,
    pub eps: f64,
    pub lo: f64,
    pub hi: f64,
}

/// Per-sample L2 norm over all but the first dimension, shaped [batch, 1, 1, ...] to broadcast.
pub fn l2_norms(t: &Tensor) -> Result<Tensor, tch::TchError> {
    let batch = t.size()[0];
    let norms = t
        .f_reshape([batch, -1])?
        .f_norm_scalaropt_dim(2, [1i64].as_slice(), false)?;
    norms.f_reshape(broadcast_shape(t))
}

/// Per-sample Linf norm over all but the first dimension, shape `[batch]`.
pub fn linf_norms(t: &Tensor) -> Result<Tensor, tch::TchError> {
    let batch = t.size()[0];
    t.f_reshape([batch, -1])?
        .f_abs()?
        .f_amax([1i64].as_slice(), false)
}

/// [batch, 1, 1, ...] for a tensor of shape [batch, ...].
pub fn broadcast_shape(t: &Tensor) -> Vec<i64> {
    let mut shape = vec![1i64; t.dim()];
    shape[0] = t.size()[0];
    shape
}

impl Ball {
    /// Keeps values inside the input domain.
    pub fn clip(&self, x: &Tensor) -> Result<Tensor, tch::TchError> {
        x.f_clamp(self.lo, self.hi)
    }

    /// One ascent step of length `step` (per-sample [batch, 1, ...] or a scalar tensor):
    /// `step * sign(g)` for Linf, `step * g / ||g||_2` for L2.
    pub fn ascend(
        &self,
        x: &Tensor,
        grad: &Tensor,
        step: &Tensor,
    ) -> Result<Tensor, tch::TchError> {
        let direction = match self.norm {
            Norm::Linf => grad.f_sign()?,
            Norm::L2 => grad.f_div(&l2_norms(grad)?.f_add_scalar(TINY)?)?,
        };
        x.f_add(&direction.f_mul(step)?)
    }

    /// Projects `x` onto the ball around `clean`, then clips to the domain: for Linf the
    /// perturbation is clamped to [-eps, eps], for L2 rescaled to norm at most eps.
    pub fn project(&self, x: &Tensor, clean: &Tensor) -> Result<Tensor, tch::TchError> {
        let delta = x.f_sub(clean)?;
        let delta = match self.norm {
            Norm::Linf => delta.f_clamp(-self.eps, self.eps)?,
            Norm::L2 => {
                let norms = l2_norms(&delta)?;
                let factor = norms
                    .f_reciprocal()?
                    .f_mul_scalar(self.eps)?
                    .f_clamp_max(1.0)?;
                delta.f_mul(&factor)?
            }
        };
        self.clip(&clean.f_add(&delta)?)
    }

    /// A random start: `noise` holds per-sample uniforms in [0, 1) (Linf) or, for L2, standard
    /// normals followed by one uniform radius per sample as the last column.
    pub fn random_start(&self, clean: &Tensor, noise: &Tensor) -> Result<Tensor, tch::TchError> {
        let delta = match self.norm {
            Norm::Linf => noise
                .f_reshape(clean.size())?
                .f_mul_scalar(2.0 * self.eps)?
                .f_sub_scalar(self.eps)?,
            Norm::L2 => {
                let columns = noise.size()[1];
                let normal = noise.f_narrow(1, 0, columns - 1)?.f_reshape(clean.size())?;
                let radius = noise
                    .f_narrow(1, columns - 1, 1)?
                    .f_reshape(broadcast_shape(clean))?;
                let unit = normal.f_div(&l2_norms(&normal)?)?;
                unit.f_mul(&radius)?.f_mul_scalar(self.eps)?
            }
        };
        self.clip(&clean.f_add(&delta.f_to_kind(Kind::Float)?)?)
    }

    /// A random point on the ball's surface, from the same `noise` as `random_start`: random
    /// signs times eps (Linf), or a random direction of norm eps (L2); then clipped.
    pub fn random_surface(&self, clean: &Tensor, noise: &Tensor) -> Result<Tensor, tch::TchError> {
        let delta = match self.norm {
            Norm::Linf => noise
                .f_reshape(clean.size())?
                .f_sub_scalar(0.5)?
                .f_sign()?
                .f_mul_scalar(self.eps)?,
            Norm::L2 => {
                let columns = noise.size()[1];
                let normal = noise.f_narrow(1, 0, columns - 1)?.f_reshape(clean.size())?;
                normal.f_div(&l2_norms(&normal)?)?.f_mul_scalar(self.eps)?
            }
        };
        self.clip(&clean.f_add(&delta.f_to_kind(Kind::Float)?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn l2_projection_rescales_only_what_leaves_the_ball() {
        let ball = Ball {
            norm: Norm::L2,
            eps: 1.0,
            lo: -10.0,
            hi: 10.0,
        };
        let clean = Tensor::zeros([2, 2], (Kind::Float, tch::Device::Cpu));
        let x = Tensor::from_slice(&[3.0f32, 4.0, 0.3, 0.4]).view([2, 2]);
        let projected = Vec::<f32>::try_from(ball.project(&x, &clean).unwrap().view(-1)).unwrap();
        let expected = [0.6, 0.8, 0.3, 0.4];
        for (p, e) in projected.iter().zip(expected) {
            assert!((p - e).abs() < 1e-6, "{projected:?}");
        }
    }

    #[test]
    fn linf_projection_clamps_then_clips_to_the_domain() {
        let ball = Ball {
            norm: Norm::Linf,
            eps: 0.1,
            lo: 0.0,
            hi: 1.0,
        };
        let clean = Tensor::from_slice(&[0.5f32, 0.95, 0.05]);
        let x = Tensor::from_slice(&[0.9f32, 1.2, -0.3]);
        let projected = Vec::<f32>::try_from(ball.project(&x, &clean).unwrap()).unwrap();
        assert_eq!(projected, [0.6, 1.0, 0.0]);
    }
}
