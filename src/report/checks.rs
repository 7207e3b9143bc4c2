//! Sanity checks: the signs that an evaluation is broken (gradient masking, a randomised model,
//! probabilities where logits belong, an attack weaker than noise or than one step). Each check
//! is decided from figures alone, so it can be tested without a model.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Summary, SweepRow};
use crate::attack::SampleResult;
use crate::model::Task;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    Pass,
    Warn,
    Fail,
    /// Not run: the request did not ask for it (`thorough`), or it does not apply.
    Skipped,
}

/// One sanity check: its verdict, the figures behind it and a sentence saying what it means.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Check {
    pub name: String,
    pub status: CheckStatus,
    pub message: String,
    pub figures: BTreeMap<String, f64>,
}

impl Check {
    fn new(name: &str, status: CheckStatus, message: String, figures: &[(&str, f64)]) -> Self {
        Self {
            name: name.to_owned(),
            status,
            message,
            figures: figures.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
        }
    }

    fn skipped(name: &str, why: &str) -> Self {
        Self::new(name, CheckStatus::Skipped, why.to_owned(), &[])
    }
}

/// What two forward passes of the same clean inputs showed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputProbe {
    /// Samples probed.
    pub n: usize,
    /// Largest difference between the two passes, relative to the outputs' scale.
    pub max_change: f64,
    /// Every output row is non-negative and sums to 1 (one output: every value in [0, 1]).
    pub probabilities: bool,
}

/// Extra attack runs a `thorough` request pays for, on the first `n` samples.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExtraRuns {
    pub n: usize,
    /// FGSM with the first iterative attack's norm, eps and loss (none when the plan has no
    /// iterative attack).
    pub single_step: Option<Vec<SampleResult>>,
    /// Random perturbations of full size eps.
    pub noise: Option<Vec<SampleResult>>,
    /// The first iterative attack, no random start, eps covering the whole input domain.
    pub unbounded: Option<Vec<SampleResult>>,
    pub unbounded_eps: f64,
}

/// Everything the checks look at.
pub struct CheckInputs<'a> {
    pub task: Task,
    pub num_classes: Option<i64>,
    /// The headline rows (the largest eps of a sweep).
    pub samples: &'a [SampleResult],
    pub summary: &'a Summary,
    /// One row per eps of a sweep, ascending; empty without a sweep.
    pub sweep: &'a [SweepRow],
    /// Per-sample rows of each eps of the sweep, in the same order.
    pub sweep_samples: &'a [Vec<SampleResult>],
    pub probe: Option<&'a OutputProbe>,
    /// Present when the request was `thorough`.
    pub extra: Option<&'a ExtraRuns>,
}

/// Share of zero-gradient samples above which the masking warning is raised, and the failure.
const ZERO_GRADIENT_WARN: f64 = 0.1;
const ZERO_GRADIENT_FAIL: f64 = 0.5;
/// Relative change between identical forward passes taken for randomness.
const RANDOM_TOLERANCE: f64 = 1e-4;
/// Share of points the single step breaks and the iterative attack misses that fails the check.
const SINGLE_STEP_FAIL: f64 = 0.02;

pub fn run_all(inputs: &CheckInputs) -> Vec<Check> {
    vec![
        gradients(inputs),
        randomised(inputs),
        logits(inputs),
        monotonic(inputs),
        single_step(inputs),
        noise(inputs),
        unbounded(inputs),
    ]
}

fn share(count: usize, n: usize) -> f64 {
    if n == 0 {
        0.0
    } else {
        count as f64 / n as f64
    }
}

fn percent(x: f64) -> String {
    format!("{:.2}%", 100.0 * x)
}

/// Zero or NaN input gradients.
pub fn gradients(inputs: &CheckInputs) -> Check {
    let name = "input_gradients";
    let n = inputs.samples.len();
    let zero = inputs.samples.iter().filter(|s| s.zero_gradient).count();
    let nan = inputs.samples.iter().filter(|s| s.nan_gradient).count();
    let zero_share = share(zero, n);
    let figures = [
        ("n", n as f64),
        ("zero_gradient", zero as f64),
        ("zero_gradient_share", zero_share),
        ("nan_gradient", nan as f64),
    ];
    if nan > 0 {
        return Check::new(
            name,
            CheckStatus::Fail,
            format!(
                "{nan} of {n} samples had a NaN input gradient: the loss is not differentiable \
                 there, so the attack steps are meaningless and the robust figures unreliable"
            ),
            &figures,
        );
    }
    let status = if zero_share >= ZERO_GRADIENT_FAIL {
        CheckStatus::Fail
    } else if zero_share > ZERO_GRADIENT_WARN {
        CheckStatus::Warn
    } else {
        CheckStatus::Pass
    };
    let message = match status {
        CheckStatus::Pass => {
            format!("{zero} of {n} samples had an all-zero input gradient; gradients carry signal")
        }
        _ => format!(
            "{} of samples had an all-zero input gradient at some step: gradient masking is \
             likely (a non-differentiable step, a detached graph, or an output so saturated \
             that float32 rounds its loss gradient to zero; a margin or DLR loss avoids the \
             last), and gradient attacks then overstate robustness",
            percent(zero_share)
        ),
    };
    Check::new(name, status, message, &figures)
}

/// Identical inputs, different outputs.
pub fn randomised(inputs: &CheckInputs) -> Check {
    let name = "deterministic_outputs";
    let Some(probe) = inputs.probe else {
        return Check::skipped(name, "no forward passes were probed");
    };
    let figures = [("n", probe.n as f64), ("max_change", probe.max_change)];
    if probe.max_change > RANDOM_TOLERANCE {
        Check::new(
            name,
            CheckStatus::Warn,
            format!(
                "two forward passes of the same inputs differed by up to {:.3e} (relative): the \
                 model is randomised at inference, so each attack step sees one random draw and \
                 the robust accuracy is likely overstated; average gradients over draws (EOT)",
                probe.max_change
            ),
            &figures,
        )
    } else {
        Check::new(
            name,
            CheckStatus::Pass,
            "two forward passes of the same inputs gave the same outputs".to_owned(),
            &figures,
        )
    }
}

/// Probabilities where logits belong.
pub fn logits(inputs: &CheckInputs) -> Check {
    let name = "outputs_are_logits";
    if inputs.task == Task::Regression {
        return Check::skipped(name, "a regression model's outputs are values");
    }
    let Some(probe) = inputs.probe else {
        return Check::skipped(name, "no forward passes were probed");
    };
    let figures = [("n", probe.n as f64)];
    if probe.probabilities {
        Check::new(
            name,
            CheckStatus::Warn,
            "the outputs look like probabilities (non-negative, summing to 1), not logits: a \
             loss on probabilities saturates, its gradients vanish and attacks look weaker than \
             they are; serve the logits"
                .to_owned(),
            &figures,
        )
    } else {
        Check::new(
            name,
            CheckStatus::Pass,
            "the outputs look like logits".to_owned(),
            &figures,
        )
    }
}

/// Robust accuracy must not rise with eps (the loss must not fall).
pub fn monotonic(inputs: &CheckInputs) -> Check {
    let name = "monotonic_in_eps";
    if inputs.sweep.len() < 2 {
        return Check::skipped(name, "one eps; give eps as a list to sweep");
    }
    let classifies = inputs.task != Task::Regression;
    let value = |row: &SweepRow| match (&row.summary.robust_accuracy, classifies) {
        (Some(p), true) => p.value,
        _ => row.summary.mean_robust_loss,
    };
    let mut figures: Vec<(String, f64)> = inputs
        .sweep
        .iter()
        .map(|row| (format!("eps={}", row.eps), value(row)))
        .collect();
    let worse = inputs.sweep.windows(2).find(|pair| {
        let (a, b) = (value(&pair[0]), value(&pair[1]));
        if classifies {
            b > a
        } else {
            b < a - 1e-6 * a.abs()
        }
    });
    // Points robust at a larger eps but broken at a smaller one: the larger ball holds the
    // smaller one's example, so the attack missed it.
    let mut missed = 0;
    if classifies {
        for pair in inputs.sweep_samples.windows(2) {
            missed += pair[0]
                .iter()
                .zip(&pair[1])
                .filter(|(small, large)| {
                    small.clean_correct == Some(true)
                        && small.robust == Some(false)
                        && large.robust == Some(true)
                })
                .count();
        }
    }
    figures.push(("points_missed_at_larger_eps".to_owned(), missed as f64));
    let figures: Vec<(&str, f64)> = figures.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    let what = if classifies {
        "robust accuracy"
    } else {
        "mean robust loss"
    };
    match worse {
        Some(pair) => Check::new(
            name,
            CheckStatus::Fail,
            format!(
                "{what} {} from {:.4} at eps {} to {:.4} at eps {}: a larger ball holds every \
                 example of a smaller one, so the attack is failing to find them",
                if classifies { "rose" } else { "fell" },
                value(&pair[0]),
                pair[0].eps,
                value(&pair[1]),
                pair[1].eps
            ),
            &figures,
        ),
        None if missed > 0 => Check::new(
            name,
            CheckStatus::Warn,
            format!(
                "{what} moves the right way with eps, but {missed} points broken at a smaller eps \
                 survived a larger one: the attack is not reliable point by point"
            ),
            &figures,
        ),
        None => Check::new(
            name,
            CheckStatus::Pass,
            format!("{what} moves the right way with eps"),
            &figures,
        ),
    }
}

/// Points the extra run broke that the attack did not (clean-correct points only).
fn broken_not_by_attack(extra: &[SampleResult], main: &[SampleResult]) -> usize {
    extra
        .iter()
        .zip(main)
        .filter(|(e, m)| {
            e.clean_correct == Some(true) && e.robust == Some(false) && m.robust == Some(true)
        })
        .count()
}

fn robust_share(rows: &[SampleResult]) -> f64 {
    share(
        rows.iter().filter(|s| s.robust == Some(true)).count(),
        rows.len(),
    )
}

fn mean_loss(rows: &[SampleResult]) -> f64 {
    if rows.is_empty() {
        return 0.0;
    }
    rows.iter().map(|s| f64::from(s.robust_loss)).sum::<f64>() / rows.len() as f64
}

/// A single step must not break what the iterative attack missed.
pub fn single_step(inputs: &CheckInputs) -> Check {
    let name = "single_step_weaker";
    let Some(extra) = inputs.extra else {
        return Check::skipped(name, "costs an FGSM run; ask with thorough: true");
    };
    let Some(fgsm) = &extra.single_step else {
        return Check::skipped(
            name,
            "the plan has no iterative attack to compare with FGSM",
        );
    };
    let main = &inputs.samples[..extra.n.min(inputs.samples.len())];
    if inputs.task == Task::Regression {
        let (one, many) = (mean_loss(fgsm), mean_loss(main));
        let figures = [
            ("n", extra.n as f64),
            ("fgsm_mean_loss", one),
            ("attack_mean_loss", many),
        ];
        return if one > many * (1.0 + 1e-6) {
            Check::new(
                name,
                CheckStatus::Fail,
                format!(
                    "one FGSM step reached a higher mean loss ({one:.4}) than the iterative \
                     attack ({many:.4}): its step size or step count is wrong"
                ),
                &figures,
            )
        } else {
            Check::new(
                name,
                CheckStatus::Pass,
                "the iterative attack reaches at least the loss of one FGSM step".to_owned(),
                &figures,
            )
        };
    }
    let missed = broken_not_by_attack(fgsm, main);
    let figures = [
        ("n", extra.n as f64),
        ("fgsm_robust_accuracy", robust_share(fgsm)),
        ("attack_robust_accuracy", robust_share(main)),
        ("broken_by_fgsm_only", missed as f64),
    ];
    let missed_share = share(missed, extra.n);
    let status = if missed == 0 {
        CheckStatus::Pass
    } else if missed_share < SINGLE_STEP_FAIL {
        CheckStatus::Warn
    } else {
        CheckStatus::Fail
    };
    let message = if missed == 0 {
        "every point one FGSM step broke, the iterative attack broke too".to_owned()
    } else {
        format!(
            "one FGSM step broke {missed} of {} points that the iterative attack missed: its step \
             size or step count is too small, or its gradients mislead it",
            extra.n
        )
    };
    Check::new(name, status, message, &figures)
}

/// Random noise of the same size must break fewer points than the attack.
pub fn noise(inputs: &CheckInputs) -> Check {
    let name = "noise_weaker";
    let Some(extra) = inputs.extra else {
        return Check::skipped(name, "costs a noise run; ask with thorough: true");
    };
    let Some(noise) = &extra.noise else {
        return Check::skipped(name, "no noise run");
    };
    let main = &inputs.samples[..extra.n.min(inputs.samples.len())];
    if inputs.task == Task::Regression {
        let (random, attack) = (mean_loss(noise), mean_loss(main));
        let figures = [
            ("n", extra.n as f64),
            ("noise_mean_loss", random),
            ("attack_mean_loss", attack),
        ];
        return if random > attack * (1.0 + 1e-6) {
            Check::new(
                name,
                CheckStatus::Fail,
                format!(
                    "random noise of the same size reached a higher mean loss ({random:.4}) than \
                     the attack ({attack:.4}): the attack's gradients mislead it"
                ),
                &figures,
            )
        } else {
            Check::new(
                name,
                CheckStatus::Pass,
                "the attack reaches a higher loss than random noise of the same size".to_owned(),
                &figures,
            )
        };
    }
    let (random, attack) = (robust_share(noise), robust_share(main));
    let missed = broken_not_by_attack(noise, main);
    let figures = [
        ("n", extra.n as f64),
        ("noise_robust_accuracy", random),
        ("attack_robust_accuracy", attack),
        ("broken_by_noise_only", missed as f64),
    ];
    if random < attack {
        Check::new(
            name,
            CheckStatus::Fail,
            format!(
                "random noise of the same size left {} robust, the attack {}: the attack's \
                 gradients mislead it (gradient masking or obfuscation)",
                percent(random),
                percent(attack)
            ),
            &figures,
        )
    } else if missed > 0 {
        Check::new(
            name,
            CheckStatus::Warn,
            format!(
                "the attack beats random noise overall, but noise broke {missed} points the \
                 attack missed"
            ),
            &figures,
        )
    } else {
        Check::new(
            name,
            CheckStatus::Pass,
            "the attack broke every point random noise of the same size broke".to_owned(),
            &figures,
        )
    }
}

/// At an eps that covers the whole domain, accuracy must fall to chance.
pub fn unbounded(inputs: &CheckInputs) -> Check {
    let name = "unbounded_eps";
    if inputs.task == Task::Regression {
        return Check::skipped(name, "a regression model has no chance level");
    }
    let Some(extra) = inputs.extra else {
        return Check::skipped(name, "costs an attack run; ask with thorough: true");
    };
    let Some(rows) = &extra.unbounded else {
        return Check::skipped(name, "the plan has no iterative attack");
    };
    let chance = match inputs.task {
        Task::Binary => 0.5,
        _ => 1.0 / inputs.num_classes.unwrap_or(2).max(2) as f64,
    };
    let accuracy = robust_share(rows);
    let figures = [
        ("n", extra.n as f64),
        ("eps", extra.unbounded_eps),
        ("robust_accuracy", accuracy),
        ("chance", chance),
    ];
    if accuracy > chance {
        Check::new(
            name,
            CheckStatus::Warn,
            format!(
                "with eps {} (the whole input domain) {} of points stayed robust, above chance \
                 ({}): the attack cannot move the model's decisions, so gradient masking is likely",
                extra.unbounded_eps,
                percent(accuracy),
                percent(chance)
            ),
            &figures,
        )
    } else {
        Check::new(
            name,
            CheckStatus::Pass,
            format!(
                "with eps covering the whole input domain robust accuracy fell to {} (chance: {})",
                percent(accuracy),
                percent(chance)
            ),
            &figures,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Proportion;

    fn row(clean_correct: bool, robust: bool) -> SampleResult {
        SampleResult {
            index: 0,
            label: Some(0),
            clean_prediction: Some(0),
            adversarial_prediction: Some(0),
            clean_correct: Some(clean_correct),
            robust: Some(robust),
            clean_loss: 0.1,
            robust_loss: if robust { 0.5 } else { 3.0 },
            linf: 0.1,
            l2: 0.5,
            broken_by: None,
            broken_at_step: None,
            zero_gradient: false,
            nan_gradient: false,
        }
    }

    fn summary(robust: usize, n: usize) -> Summary {
        Summary {
            n,
            clean_accuracy: Some(Proportion::new(n, n)),
            robust_accuracy: Some(Proportion::new(robust, n)),
            mean_clean_loss: 0.1,
            mean_robust_loss: 1.0,
            max_robust_loss: 2.0,
            loss_gap: 0.9,
            by_attack: vec![],
            zero_gradient: 0,
            nan_gradient: 0,
        }
    }

    fn inputs<'a>(
        samples: &'a [SampleResult],
        summary: &'a Summary,
        sweep: &'a [SweepRow],
        sweep_samples: &'a [Vec<SampleResult>],
        extra: Option<&'a ExtraRuns>,
    ) -> CheckInputs<'a> {
        CheckInputs {
            task: Task::Classification,
            num_classes: Some(10),
            samples,
            summary,
            sweep,
            sweep_samples,
            probe: None,
            extra,
        }
    }

    #[test]
    fn accuracy_that_rises_with_eps_fails() {
        let rows = [row(true, true)];
        let s = summary(1, 1);
        let sweep = [
            SweepRow {
                eps: 0.1,
                summary: summary(50, 100),
            },
            SweepRow {
                eps: 0.2,
                summary: summary(60, 100),
            },
        ];
        let check = monotonic(&inputs(&rows, &s, &sweep, &[], None));
        assert_eq!(check.status, CheckStatus::Fail, "{check:?}");
        assert!(check.message.contains("rose"), "{}", check.message);

        let sweep = [
            SweepRow {
                eps: 0.1,
                summary: summary(60, 100),
            },
            SweepRow {
                eps: 0.2,
                summary: summary(50, 100),
            },
        ];
        // Falling accuracy, but one point broken at 0.1 survives 0.2.
        let per_eps = vec![vec![row(true, false)], vec![row(true, true)]];
        let check = monotonic(&inputs(&rows, &s, &sweep, &per_eps, None));
        assert_eq!(check.status, CheckStatus::Warn, "{check:?}");
        assert_eq!(check.figures["points_missed_at_larger_eps"], 1.0);
    }

    #[test]
    fn noise_stronger_than_the_attack_fails_and_one_step_misses_warn_then_fail() {
        let main: Vec<SampleResult> = (0..100).map(|i| row(true, i < 80)).collect();
        let s = summary(80, 100);
        let mut noise: Vec<SampleResult> = (0..100).map(|i| row(true, i < 70)).collect();
        let extra = ExtraRuns {
            n: 100,
            noise: Some(noise.clone()),
            single_step: Some((0..100).map(|i| row(true, i != 5)).collect()),
            ..Default::default()
        };
        let both = inputs(&main, &s, &[], &[], Some(&extra));
        assert_eq!(noise_check(&both), CheckStatus::Fail);
        // One point of 100 broken by FGSM only: a warning (under 2%).
        assert_eq!(single_step(&both).status, CheckStatus::Warn);
        let extra = ExtraRuns {
            single_step: Some((0..100).map(|i| row(true, i % 40 != 0)).collect()),
            ..extra
        };
        let check = single_step(&inputs(&main, &s, &[], &[], Some(&extra)));
        assert_eq!(check.status, CheckStatus::Fail, "{check:?}");
        assert_eq!(check.figures["broken_by_fgsm_only"], 2.0);

        noise = (0..100).map(|i| row(true, i < 80 || i == 85)).collect();
        noise[3] = row(true, false);
        let extra = ExtraRuns {
            n: 100,
            noise: Some(noise),
            ..Default::default()
        };
        let check = super::noise(&inputs(&main, &s, &[], &[], Some(&extra)));
        assert_eq!(check.status, CheckStatus::Warn, "{check:?}");
    }

    fn noise_check(inputs: &CheckInputs) -> CheckStatus {
        noise(inputs).status
    }

    #[test]
    fn thorough_checks_are_skipped_without_their_runs() {
        let rows = [row(true, true)];
        let s = summary(1, 1);
        let all = run_all(&inputs(&rows, &s, &[], &[], None));
        for name in [
            "monotonic_in_eps",
            "single_step_weaker",
            "noise_weaker",
            "unbounded_eps",
        ] {
            let check = all.iter().find(|c| c.name == name).unwrap();
            assert_eq!(check.status, CheckStatus::Skipped, "{check:?}");
        }
    }

    #[test]
    fn nan_gradients_fail_and_zero_gradients_warn_of_masking() {
        let mut rows: Vec<SampleResult> = (0..20).map(|_| row(true, true)).collect();
        let s = summary(20, 20);
        for row in &mut rows[..3] {
            row.zero_gradient = true;
        }
        let check = gradients(&inputs(&rows, &s, &[], &[], None));
        assert_eq!(check.status, CheckStatus::Warn);
        assert!(check.message.contains("gradient masking"));
        rows[2].nan_gradient = true;
        assert_eq!(
            gradients(&inputs(&rows, &s, &[], &[], None)).status,
            CheckStatus::Fail
        );
    }
}
