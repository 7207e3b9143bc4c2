//! What an evaluation runs beyond one attack: every eps of a sweep, the forward-pass probe
//! behind the output checks, and the extra runs of `thorough` checks. Plain descriptions of work:
//! the attack route runs them concurrently, evaluation jobs one after another.

use serde::{Deserialize, Serialize};

use crate::attack::{AttackPlan, AttackSettings, Method, Objective};
use crate::engine::{concat, rows, Operation, Work, WorkInputs};
use crate::model::{ModelCard, Task};
use crate::report::{Gate, OutputProbe};
use crate::tensor::HostTensor;
use crate::worker::protocol::ModelRef;

/// Most eps a sweep may list.
pub const MAX_SWEEP: usize = 16;

/// Samples the forward-pass probe of the output checks runs on, at most, each twice.
pub const PROBE_SAMPLES: usize = 16;

/// An evaluation's settings: the plan, the eps it sweeps, the checks it pays for, its gate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalSpec {
    /// The plan at its headline eps (the largest of a sweep).
    pub plan: AttackPlan,
    /// Every eps, ascending, when the request gave a list; each replaces every attack's eps.
    #[serde(default)]
    pub sweep: Vec<f64>,
    #[serde(default)]
    pub thorough: bool,
    #[serde(default)]
    pub gate: Option<Gate>,
}

/// The extra work behind the checks, on the first `n` samples.
pub struct CheckWorks {
    pub n: usize,
    pub probe: Work,
    pub single_step: Option<Work>,
    pub noise: Option<Work>,
    pub unbounded: Option<(f64, Work)>,
}

impl EvalSpec {
    pub fn single(plan: AttackPlan) -> Self {
        Self {
            plan,
            sweep: Vec::new(),
            thorough: false,
            gate: None,
        }
    }

    /// Whether the request asked for a sweep (eps as a list).
    pub fn swept(&self) -> bool {
        !self.sweep.is_empty()
    }

    /// The plan with every attack at `eps`.
    pub fn plan_at(&self, eps: f64) -> AttackPlan {
        let mut plan = self.plan.clone();
        for attack in &mut plan.attacks {
            attack.eps = eps;
        }
        plan
    }

    /// (eps, plan) per run, ascending; the last is the headline. Without a sweep: the plan,
    /// under its largest attack eps.
    pub fn runs(&self) -> Vec<(f64, AttackPlan)> {
        if self.swept() {
            self.sweep.iter().map(|&e| (e, self.plan_at(e))).collect()
        } else {
            let eps = self.plan.attacks.iter().map(|a| a.eps).fold(0.0, f64::max);
            vec![(eps, self.plan.clone())]
        }
    }

    /// One attack work per eps.
    pub fn attack_works(&self, model: &ModelRef, inputs: &WorkInputs) -> Vec<(f64, Work)> {
        self.runs()
            .into_iter()
            .map(|(eps, plan)| {
                (
                    eps,
                    Work {
                        model: model.clone(),
                        operation: Operation::Attack(plan),
                        inputs: inputs.clone(),
                    },
                )
            })
            .collect()
    }

    /// The probe (always, on at most [`PROBE_SAMPLES`]) and the `thorough` runs, on at most
    /// `limit` leading samples of `inputs`.
    pub fn check_works(
        &self,
        model: &ModelRef,
        inputs: &WorkInputs,
        card: &ModelCard,
        limit: usize,
    ) -> CheckWorks {
        let total = inputs.sample_ids.len();
        let n = total.min(limit.max(1));
        let part = WorkInputs {
            x: rows(&inputs.x, 0, n),
            labels: inputs.labels.as_ref().map(|t| rows(t, 0, n)),
            targets: None,
            sample_ids: inputs.sample_ids[..n].to_vec(),
        };
        // Two copies of each input in one batch: a deterministic model gives equal rows. A
        // model that randomises its outputs or gives probabilities shows it on any few rows.
        let half = n.min(limit / 2).clamp(1, PROBE_SAMPLES);
        let probe_x = rows(&inputs.x, 0, half);
        let probe = Work {
            model: model.clone(),
            operation: Operation::Infer,
            inputs: WorkInputs {
                x: concat([&probe_x, &probe_x].into_iter()),
                labels: None,
                targets: None,
                sample_ids: (0..2 * half as u64).collect(),
            },
        };
        let mut works = CheckWorks {
            n,
            probe,
            single_step: None,
            noise: None,
            unbounded: None,
        };
        if !self.thorough {
            return works;
        }
        let attack = |plan: AttackPlan| Work {
            model: model.clone(),
            operation: Operation::Attack(plan),
            inputs: part.clone(),
        };
        let headline = self
            .runs()
            .pop()
            .map(|(_, p)| p)
            .unwrap_or(self.plan.clone());
        let objective = if card.task == Task::Regression {
            Objective::Loss
        } else {
            Objective::Accuracy
        };
        let plan = |settings: AttackSettings| AttackPlan {
            attacks: vec![settings],
            objective,
            seed: self.plan.seed,
            last_iterate: false,
        };
        let first = &headline.attacks[0];
        let mut noise = AttackSettings::new(Method::Noise, first.norm, first.eps, 0);
        noise.loss = first.loss.filter(|_| !first.targeted);
        works.noise = Some(attack(plan(noise)));

        let iterative = headline
            .attacks
            .iter()
            .find(|a| matches!(a.method, Method::Pgd | Method::Apgd));
        if let Some(base) = iterative {
            let mut fgsm = AttackSettings::new(Method::Fgsm, base.norm, base.eps, 1);
            fgsm.loss = base.loss.filter(|_| !base.targeted);
            works.single_step = Some(attack(plan(fgsm)));
            if card.task != Task::Regression {
                let eps = unbounded_eps(card, base.norm);
                let mut wide = base.clone();
                wide.eps = eps;
                wide.random_start = false;
                wide.restarts = 1;
                wide.step_size = None;
                wide.targeted = false;
                wide.target_classes = None;
                if wide.loss == Some(crate::attack::LossKind::Dlr)
                    && card.num_classes.unwrap_or(0) < 3
                {
                    wide.loss = None;
                }
                works.unbounded = Some((eps, attack(plan(wide))));
            }
        }
        works
    }
}

/// An eps whose ball covers the whole input domain.
pub fn unbounded_eps(card: &ModelCard, norm: crate::attack::Norm) -> f64 {
    let [lo, hi] = card.input.domain;
    let width = hi - lo;
    match norm {
        crate::attack::Norm::Linf => width,
        crate::attack::Norm::L2 => {
            let d: i64 = card.input.shape.iter().product();
            width * (d.max(1) as f64).sqrt()
        }
    }
}

/// What the duplicated forward pass shows: `output` holds 2 * half rows, the second half a
/// repeat of the first.
pub fn output_probe(output: &HostTensor) -> OutputProbe {
    let values = output.as_f32().unwrap_or(&[]);
    let rows = output.shape.first().copied().unwrap_or(0).max(0) as usize;
    let half = rows / 2;
    let width = values.len().checked_div(rows).unwrap_or(0);
    let (first, second) = values.split_at(half * width);
    let scale = first
        .iter()
        .map(|v| f64::from(v.abs()))
        .fold(0.0, f64::max)
        .max(1.0);
    let max_change = first
        .iter()
        .zip(second)
        .map(|(a, b)| {
            if a.is_nan() != b.is_nan() {
                f64::INFINITY
            } else if a.is_nan() {
                0.0
            } else {
                f64::from((a - b).abs())
            }
        })
        .fold(0.0, f64::max)
        / scale;
    let in_unit = first.iter().all(|v| (0.0..=1.0).contains(v));
    let probabilities = !first.is_empty()
        && in_unit
        && (width == 1
            || first.chunks(width).all(|row| {
                let sum: f64 = row.iter().map(|&v| f64::from(v)).sum();
                (sum - 1.0).abs() < 1e-3
            }));
    OutputProbe {
        n: half,
        max_change,
        probabilities,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_tells_logits_probabilities_and_randomness_apart() {
        let logits = HostTensor::f32(vec![4, 2], vec![3.0, -1.0, 0.5, 2.0, 3.0, -1.0, 0.5, 2.0]);
        let p = output_probe(&logits);
        assert_eq!((p.n, p.probabilities), (2, false));
        assert_eq!(p.max_change, 0.0);
        let probs = HostTensor::f32(vec![2, 2], vec![0.25, 0.75, 0.25, 0.75]);
        assert!(output_probe(&probs).probabilities);
        let noisy = HostTensor::f32(vec![2, 2], vec![3.0, -1.0, 3.1, -1.0]);
        assert!((output_probe(&noisy).max_change - 0.1 / 3.0).abs() < 1e-6);
    }
}
