//! Per-sample bookkeeping across the attacks of a plan: the point each sample keeps, its loss,
//! and what broke it.

use tch::{Device, Tensor};

use super::probe::Probe;
use super::AttackError;

/// What first misclassified a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Breach {
    /// Misclassified before any attack.
    Clean,
    /// Attack `attack` of the plan, at iterate `step` (0: its start point).
    Attack { attack: usize, step: u32 },
}

pub struct Tracker {
    /// Points drop out of the attack once broken (the `accuracy` objective).
    stops_early: bool,
    /// Keep each sample's latest point instead of its best one.
    last_iterate: bool,
    /// The point each sample keeps, [N, ...].
    pub kept: Tensor,
    /// The task loss at `kept`.
    pub kept_loss: Vec<f32>,
    /// The model's prediction at `kept` (none for regression).
    pub kept_prediction: Option<Vec<i64>>,
    /// Some kept point was taken from a probe of only some of the rows. A smaller batch can round
    /// the loss differently in the last bits, so such points are measured again on the whole
    /// batch at the end.
    pub partial: bool,
    pub breach: Vec<Option<Breach>>,
    pub zero_grad: Vec<bool>,
    pub nan_grad: Vec<bool>,
}

impl Tracker {
    /// Starts from the clean points and their probe.
    pub fn new(clean: &Tensor, probe: &Probe, stops_early: bool, last_iterate: bool) -> Self {
        Self {
            stops_early,
            last_iterate,
            kept: clean.shallow_clone(),
            kept_loss: probe.task_loss.clone(),
            kept_prediction: probe.prediction.clone(),
            partial: false,
            breach: probe
                .wrong
                .iter()
                .map(|&w| w.then_some(Breach::Clean))
                .collect(),
            zero_grad: vec![false; probe.wrong.len()],
            nan_grad: vec![false; probe.wrong.len()],
        }
    }

    /// Rows an attack should work on: the unbroken ones when stopping early, else all.
    pub fn attackable(&self) -> Vec<i64> {
        (0..self.breach.len() as i64)
            .filter(|&i| !self.stops_early || self.breach[i as usize].is_none())
            .collect()
    }

    pub fn stops_early(&self) -> bool {
        self.stops_early
    }

    /// Takes in the points `x` of rows `rows` reached at `step` of attack `attack`.
    pub fn record(
        &mut self,
        rows: &[i64],
        x: &Tensor,
        probe: &Probe,
        attack: usize,
        step: u32,
    ) -> Result<(), AttackError> {
        let mut take = Vec::new();
        for (j, &row) in rows.iter().enumerate() {
            let i = row as usize;
            self.zero_grad[i] |= probe.zero_grad[j];
            self.nan_grad[i] |= probe.nan_grad[j];
            let newly_broken = probe.wrong[j] && self.breach[i].is_none();
            if newly_broken {
                self.breach[i] = Some(Breach::Attack { attack, step });
            }
            let better = probe.task_loss[j] > self.kept_loss[i];
            // Stopping early, a broken point keeps the example that broke it.
            let keep = if self.last_iterate {
                true
            } else if self.stops_early {
                newly_broken || (self.breach[i].is_none() && better)
            } else {
                better
            };
            if keep {
                self.kept_loss[i] = probe.task_loss[j];
                if let (Some(kept), Some(seen)) = (&mut self.kept_prediction, &probe.prediction) {
                    kept[i] = seen[j];
                }
                take.push((row, j as i64));
            }
        }
        if take.is_empty() {
            return Ok(());
        }
        self.partial |= rows.len() != self.breach.len();
        let (to, from): (Vec<i64>, Vec<i64>) = take.into_iter().unzip();
        // Every row of the batch, in order: `x` is the whole kept tensor (no copy).
        let n = self.breach.len();
        if whole_in_order(&to, n) && whole_in_order(&from, n) {
            self.kept = x.shallow_clone();
            return Ok(());
        }
        let device = x.device();
        let to = index(&to, device)?;
        let from = index(&from, device)?;
        self.kept = self
            .kept
            .f_index_copy(0, &to, &x.f_index_select(0, &from)?)?;
        Ok(())
    }
}

/// Whether `rows` are 0, 1, .., n - 1: every row of a batch of `n`, in order.
pub fn whole_in_order(rows: &[i64], n: usize) -> bool {
    rows.len() == n && rows.iter().enumerate().all(|(k, &row)| row == k as i64)
}

/// An index tensor on `device`.
pub fn index(rows: &[i64], device: Device) -> Result<Tensor, tch::TchError> {
    Tensor::f_from_slice(rows)?.f_to_device(device)
}
