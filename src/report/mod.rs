//! Reports: what an evaluation found, with its uncertainty, assembled from per-sample rows.

pub mod checks;
pub mod gate;

use serde::{Deserialize, Serialize};

use crate::attack::{AttackPlan, SampleResult};
use crate::model::Task;
pub use checks::{Check, CheckStatus, ExtraRuns, OutputProbe};
pub use gate::{Baseline, Gate, Verdict};

/// Version of the report's JSON shape.
pub const REPORT_SCHEMA: u32 = 2;

/// A share of n with its 95% confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Proportion {
    pub value: f64,
    /// Wilson score interval, 95%.
    pub ci95: [f64; 2],
    pub count: usize,
    pub n: usize,
}

impl Proportion {
    pub fn new(count: usize, n: usize) -> Self {
        let value = if n == 0 { 0.0 } else { count as f64 / n as f64 };
        Self {
            value,
            ci95: wilson(count, n),
            count,
            n,
        }
    }
}

/// The Wilson score interval for `count` successes in `n` trials, at 95%.
pub fn wilson(count: usize, n: usize) -> [f64; 2] {
    if n == 0 {
        return [0.0, 1.0];
    }
    let z = 1.959_963_984_540_054;
    let (n, p) = (n as f64, count as f64 / n as f64);
    let centre = (p + z * z / (2.0 * n)) / (1.0 + z * z / n);
    let half = z / (1.0 + z * z / n) * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt();
    [(centre - half).max(0.0), (centre + half).min(1.0)]
}

/// Points first broken by each attack of an ensemble.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AttackBreakdown {
    pub attack: String,
    pub broke: usize,
}

/// Aggregates over per-sample rows.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Summary {
    pub n: usize,
    /// Classification and binary models only.
    pub clean_accuracy: Option<Proportion>,
    pub robust_accuracy: Option<Proportion>,
    pub mean_clean_loss: f64,
    pub mean_robust_loss: f64,
    pub max_robust_loss: f64,
    /// Mean robust loss minus mean clean loss.
    pub loss_gap: f64,
    pub by_attack: Vec<AttackBreakdown>,
    /// Samples with an all-zero or a NaN input gradient at some step.
    pub zero_gradient: usize,
    pub nan_gradient: usize,
}

impl Summary {
    pub fn of(samples: &[SampleResult], plan: &AttackPlan, task: Task) -> Self {
        let n = samples.len();
        let classifies = task != Task::Regression;
        let count = |f: &dyn Fn(&SampleResult) -> bool| samples.iter().filter(|s| f(s)).count();
        let mean = |f: &dyn Fn(&SampleResult) -> f32| {
            if n == 0 {
                0.0
            } else {
                samples.iter().map(|s| f64::from(f(s))).sum::<f64>() / n as f64
            }
        };
        let mean_clean_loss = mean(&|s| s.clean_loss);
        let mean_robust_loss = mean(&|s| s.robust_loss);
        let by_attack = plan
            .attacks
            .iter()
            .map(|a| {
                let label = a.label(task);
                let broke = count(&|s| s.broken_by.as_deref() == Some(label.as_str()));
                AttackBreakdown {
                    attack: label,
                    broke,
                }
            })
            .collect();
        Self {
            n,
            clean_accuracy: classifies
                .then(|| Proportion::new(count(&|s| s.clean_correct == Some(true)), n)),
            robust_accuracy: classifies
                .then(|| Proportion::new(count(&|s| s.robust == Some(true)), n)),
            mean_clean_loss,
            mean_robust_loss,
            max_robust_loss: samples
                .iter()
                .map(|s| f64::from(s.robust_loss))
                .fold(if n == 0 { 0.0 } else { f64::MIN }, f64::max),
            loss_gap: mean_robust_loss - mean_clean_loss,
            by_attack,
            zero_gradient: count(&|s| s.zero_gradient),
            nan_gradient: count(&|s| s.nan_gradient),
        }
    }
}

/// One eps of a sweep.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SweepRow {
    pub eps: f64,
    pub summary: Summary,
}

/// Where the time went, in milliseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Timings {
    /// The attacks of the plan (every eps of a sweep).
    pub attack_ms: u64,
    /// Forward-pass probes and the extra runs of `thorough` checks.
    pub checks_ms: u64,
    pub total_ms: u64,
}

/// Everything an evaluation found: settings, versions, aggregates with their intervals, sanity
/// checks, the gate's verdict, per-sample rows and timings. `summary` and `samples` belong to
/// the plan's eps, or to the largest eps of a sweep; `sweep` has one row per eps.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Report {
    pub schema: u32,
    pub model: String,
    pub model_sha256: String,
    pub plan: AttackPlan,
    /// Every eps the plan ran at, ascending, when it was a sweep.
    pub sweep: Vec<SweepRow>,
    pub thorough: bool,
    pub robustd_version: String,
    pub libtorch_version: String,
    pub summary: Summary,
    pub checks: Vec<Check>,
    /// Present when the request set a gate.
    pub gate: Option<Verdict>,
    pub samples: Vec<SampleResult>,
    pub timings: Timings,
}

/// What a report is assembled from.
pub struct ReportInputs<'a> {
    pub model: &'a str,
    pub model_sha256: &'a str,
    pub task: Task,
    pub num_classes: Option<i64>,
    /// The plan at its headline eps.
    pub plan: &'a AttackPlan,
    /// (eps, rows) per eps of a sweep, ascending; one entry without a sweep.
    pub runs: Vec<(f64, Vec<SampleResult>)>,
    pub swept: bool,
    pub thorough: bool,
    pub probe: Option<&'a OutputProbe>,
    pub extra: Option<&'a ExtraRuns>,
    pub gate: Option<&'a Gate>,
    pub timings: Timings,
}

impl Report {
    pub fn assemble(mut inputs: ReportInputs) -> Self {
        let (task, plan) = (inputs.task, inputs.plan);
        let sweep: Vec<SweepRow> = if inputs.swept {
            inputs
                .runs
                .iter()
                .map(|(eps, rows)| SweepRow {
                    eps: *eps,
                    summary: Summary::of(rows, plan, task),
                })
                .collect()
        } else {
            Vec::new()
        };
        let sweep_samples: Vec<Vec<SampleResult>> = if inputs.swept {
            inputs.runs.iter().map(|(_, rows)| rows.clone()).collect()
        } else {
            Vec::new()
        };
        let samples = inputs.runs.pop().map(|(_, rows)| rows).unwrap_or_default();
        let summary = Summary::of(&samples, plan, task);
        let checks = checks::run_all(&checks::CheckInputs {
            task,
            num_classes: inputs.num_classes,
            samples: &samples,
            summary: &summary,
            sweep: &sweep,
            sweep_samples: &sweep_samples,
            probe: inputs.probe,
            extra: inputs.extra,
        });
        let gate = inputs.gate.map(|g| g.decide(&summary, &checks));
        Self {
            schema: REPORT_SCHEMA,
            model: inputs.model.to_owned(),
            model_sha256: inputs.model_sha256.to_owned(),
            plan: plan.clone(),
            sweep,
            thorough: inputs.thorough,
            robustd_version: env!("CARGO_PKG_VERSION").to_owned(),
            libtorch_version: LIBTORCH_VERSION.to_owned(),
            summary,
            checks,
            gate,
            samples,
            timings: inputs.timings,
        }
    }
}

/// The libtorch robustd is built against (tch 0.26 requires exactly this one).
pub const LIBTORCH_VERSION: &str = "2.13.0";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_intervals_match_known_values() {
        // 50 of 100: 0.4038 to 0.5962; 0 of 10: 0 to 0.2775; 10 of 10: 0.7225 to 1.
        let close =
            |a: [f64; 2], b: [f64; 2]| (a[0] - b[0]).abs() < 1e-4 && (a[1] - b[1]).abs() < 1e-4;
        assert!(
            close(wilson(50, 100), [0.4038, 0.5962]),
            "{:?}",
            wilson(50, 100)
        );
        assert!(close(wilson(0, 10), [0.0, 0.2775]), "{:?}", wilson(0, 10));
        assert!(close(wilson(10, 10), [0.7225, 1.0]), "{:?}", wilson(10, 10));
        // Newcombe (1998), Statistics in Medicine 17, table I, method 3 (Wilson score).
        for (count, n, expected) in [
            (81, 263, [0.2553, 0.3662]),
            (15, 148, [0.0624, 0.1605]),
            (0, 20, [0.0, 0.1611]),
            (1, 29, [0.0061, 0.1718]),
            (29, 29, [0.8830, 1.0]),
        ] {
            let got = wilson(count, n);
            assert!(close(got, expected), "{count}/{n}: {got:?}");
        }
        assert_eq!(wilson(0, 0), [0.0, 1.0]);
        let p = Proportion::new(81, 263);
        assert!((p.value - 0.30798).abs() < 1e-5 && p.ci95[0] < p.value && p.value < p.ci95[1]);
    }
}
