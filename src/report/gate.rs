//! The robustness gate: thresholds a request sets, decided against the report. CI pipelines pass
//! or fail on the verdict.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::checks::{Check, CheckStatus};
use super::Summary;
use crate::model::Task;

/// Thresholds; every one is optional. Accuracies and drops are shares in [0, 1].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Gate {
    /// Robust accuracy must be at least this.
    #[serde(default)]
    pub min_robust_accuracy: Option<f64>,
    /// Compare the lower end of the 95% interval, not the point estimate, with
    /// `min_robust_accuracy`.
    #[serde(default)]
    pub on_lower_bound: bool,
    /// Mean robust loss must be at most this.
    #[serde(default)]
    pub max_robust_loss: Option<f64>,
    /// Clean accuracy minus robust accuracy must be at most this.
    #[serde(default)]
    pub max_accuracy_drop: Option<f64>,
    /// An earlier result to compare with: an evaluation id on this server, a report as robustd
    /// wrote it, or `{"robust_accuracy": ..., "mean_robust_loss": ...}`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub baseline: Option<Baseline>,
    /// How far robust accuracy may fall below the baseline's (a share; regression models: how
    /// far the mean robust loss may rise above it).
    #[serde(default)]
    pub max_regression: f64,
    /// Fail when a sanity check fails (default true).
    #[serde(default = "yes")]
    pub fail_on_failed_checks: bool,
    /// Fail when a sanity check warns.
    #[serde(default)]
    pub fail_on_warnings: bool,
}

fn yes() -> bool {
    true
}

/// The figures of an earlier result the gate compares with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Value")]
pub struct Baseline {
    /// The evaluation it came from, when named by id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evaluation: Option<String>,
    pub robust_accuracy: Option<f64>,
    pub mean_robust_loss: Option<f64>,
}

impl Baseline {
    /// The figures of a report as robustd writes it.
    pub fn from_report(report: &Value, evaluation: Option<String>) -> Result<Self, String> {
        let summary = report
            .get("summary")
            .ok_or("a report has a summary; this one has none")?;
        Ok(Self {
            evaluation,
            robust_accuracy: summary["robust_accuracy"]["value"].as_f64(),
            mean_robust_loss: summary["mean_robust_loss"].as_f64(),
        })
    }

    /// Whether the figures still have to be fetched (named by evaluation id only).
    pub fn unresolved(&self) -> Option<&str> {
        match (self.robust_accuracy, self.mean_robust_loss) {
            (None, None) => self.evaluation.as_deref(),
            _ => None,
        }
    }
}

impl TryFrom<Value> for Baseline {
    type Error = String;

    fn try_from(value: Value) -> Result<Self, String> {
        match value {
            Value::String(id) => Ok(Self {
                evaluation: Some(id),
                robust_accuracy: None,
                mean_robust_loss: None,
            }),
            Value::Object(ref map) if map.contains_key("summary") => {
                Self::from_report(&value, None)
            }
            Value::Object(map) => {
                let number = |key: &str| -> Result<Option<f64>, String> {
                    match map.get(key) {
                        None | Some(Value::Null) => Ok(None),
                        Some(v) => v
                            .as_f64()
                            .map(Some)
                            .ok_or_else(|| format!("{key}: must be a number, got {v}")),
                    }
                };
                if let Some(key) = map.keys().find(|k| {
                    !matches!(
                        k.as_str(),
                        "evaluation" | "robust_accuracy" | "mean_robust_loss"
                    )
                }) {
                    return Err(format!(
                        "unknown field {key:?}; a baseline has robust_accuracy and mean_robust_loss"
                    ));
                }
                Ok(Self {
                    evaluation: map
                        .get("evaluation")
                        .and_then(|v| v.as_str())
                        .map(str::to_owned),
                    robust_accuracy: number("robust_accuracy")?,
                    mean_robust_loss: number("mean_robust_loss")?,
                })
            }
            other => Err(format!(
                "must be an evaluation id, a report or robust_accuracy and mean_robust_loss, got \
                 {other}"
            )),
        }
    }
}

/// One rule of the gate and how the report fared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RuleOutcome {
    pub rule: String,
    pub passed: bool,
    pub threshold: Option<f64>,
    pub actual: Option<f64>,
    pub message: String,
}

/// The gate's verdict: passed only if every rule passed; `failed` repeats the failed rules'
/// messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Verdict {
    pub passed: bool,
    pub rules: Vec<RuleOutcome>,
    pub failed: Vec<String>,
}

impl Gate {
    /// Checks the thresholds for a model of `task`, naming the field.
    pub fn validate(&self, task: Task) -> Result<(), String> {
        let share = |field: &str, v: Option<f64>| match v {
            Some(x) if !(x.is_finite() && (0.0..=1.0).contains(&x)) => Err(format!(
                "gate.{field}: must be a share between 0 and 1, got {x}"
            )),
            _ => Ok(()),
        };
        share("min_robust_accuracy", self.min_robust_accuracy)?;
        share("max_accuracy_drop", self.max_accuracy_drop)?;
        if let Some(x) = self.max_robust_loss {
            if !(x.is_finite() && x >= 0.0) {
                return Err(format!(
                    "gate.max_robust_loss: must be a finite number >= 0, got {x}"
                ));
            }
        }
        if !(self.max_regression.is_finite() && self.max_regression >= 0.0) {
            return Err(format!(
                "gate.max_regression: must be a finite number >= 0, got {}",
                self.max_regression
            ));
        }
        if task == Task::Regression {
            for (field, set) in [
                ("min_robust_accuracy", self.min_robust_accuracy.is_some()),
                ("max_accuracy_drop", self.max_accuracy_drop.is_some()),
            ] {
                if set {
                    return Err(format!(
                        "gate.{field}: a regression model has no accuracy; use max_robust_loss"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Decides every rule against the headline summary and the checks.
    pub fn decide(&self, summary: &Summary, checks: &[Check]) -> Verdict {
        let mut rules = Vec::new();
        let robust = summary.robust_accuracy.as_ref();
        if let Some(min) = self.min_robust_accuracy {
            let (actual, what) = match (robust, self.on_lower_bound) {
                (Some(p), true) => (Some(p.ci95[0]), "the lower 95% bound of robust accuracy"),
                (Some(p), false) => (Some(p.value), "robust accuracy"),
                (None, _) => (None, "robust accuracy"),
            };
            rules.push(threshold_rule(
                "min_robust_accuracy",
                what,
                actual,
                min,
                true,
            ));
        }
        if let Some(max) = self.max_robust_loss {
            rules.push(threshold_rule(
                "max_robust_loss",
                "mean robust loss",
                Some(summary.mean_robust_loss),
                max,
                false,
            ));
        }
        if let Some(max) = self.max_accuracy_drop {
            let drop = match (&summary.clean_accuracy, robust) {
                (Some(c), Some(r)) => Some(c.value - r.value),
                _ => None,
            };
            rules.push(threshold_rule(
                "max_accuracy_drop",
                "the drop from clean to robust accuracy",
                drop,
                max,
                false,
            ));
        }
        if let Some(base) = &self.baseline {
            let from = base
                .evaluation
                .as_deref()
                .map(|id| format!(" (evaluation {id})"))
                .unwrap_or_default();
            match (base.robust_accuracy, robust) {
                (Some(b), Some(r)) => rules.push(threshold_rule(
                    "no_regression",
                    &format!("robust accuracy against the baseline's {b:.4}{from}"),
                    Some(r.value),
                    b - self.max_regression,
                    true,
                )),
                _ => match base.mean_robust_loss {
                    Some(b) => rules.push(threshold_rule(
                        "no_regression",
                        &format!("mean robust loss against the baseline's {b:.4}{from}"),
                        Some(summary.mean_robust_loss),
                        b + self.max_regression,
                        false,
                    )),
                    None => rules.push(RuleOutcome {
                        rule: "no_regression".to_owned(),
                        passed: false,
                        threshold: None,
                        actual: None,
                        message: format!("the baseline{from} has no figure to compare with"),
                    }),
                },
            }
        }
        for check in checks {
            let fails = match check.status {
                CheckStatus::Fail => self.fail_on_failed_checks,
                CheckStatus::Warn => self.fail_on_warnings,
                _ => false,
            };
            let counts = match check.status {
                CheckStatus::Fail => self.fail_on_failed_checks,
                CheckStatus::Warn => self.fail_on_warnings,
                CheckStatus::Pass => self.fail_on_failed_checks || self.fail_on_warnings,
                CheckStatus::Skipped => false,
            };
            if counts {
                rules.push(RuleOutcome {
                    rule: format!("check:{}", check.name),
                    passed: !fails,
                    threshold: None,
                    actual: None,
                    message: format!(
                        "sanity check {} {}: {}",
                        check.name,
                        match check.status {
                            CheckStatus::Pass => "passed",
                            CheckStatus::Warn => "warned",
                            CheckStatus::Fail => "failed",
                            CheckStatus::Skipped => "was skipped",
                        },
                        check.message
                    ),
                });
            }
        }
        let failed: Vec<String> = rules
            .iter()
            .filter(|r| !r.passed)
            .map(|r| r.message.clone())
            .collect();
        Verdict {
            passed: failed.is_empty(),
            rules,
            failed,
        }
    }
}

fn threshold_rule(
    rule: &str,
    what: &str,
    actual: Option<f64>,
    threshold: f64,
    at_least: bool,
) -> RuleOutcome {
    let (passed, message) = match actual {
        None => (false, format!("{what}: the model has no such figure")),
        Some(a) => {
            let passed = if at_least {
                a >= threshold
            } else {
                a <= threshold
            };
            let relation = match (at_least, passed) {
                (true, true) => "is at least",
                (true, false) => "is below",
                (false, true) => "is at most",
                (false, false) => "is above",
            };
            (passed, format!("{what} {a:.4} {relation} {threshold:.4}"))
        }
    };
    RuleOutcome {
        rule: rule.to_owned(),
        passed,
        threshold: Some(threshold),
        actual,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Proportion;

    fn summary(correct: usize, robust: usize, n: usize, loss: f64) -> Summary {
        Summary {
            n,
            clean_accuracy: Some(Proportion::new(correct, n)),
            robust_accuracy: Some(Proportion::new(robust, n)),
            mean_clean_loss: 0.1,
            mean_robust_loss: loss,
            max_robust_loss: loss * 2.0,
            loss_gap: loss - 0.1,
            by_attack: vec![],
            zero_gradient: 0,
            nan_gradient: 0,
        }
    }

    fn gate(json: Value) -> Gate {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn thresholds_pass_and_fail_on_the_right_side() {
        let s = summary(95, 80, 100, 0.7);
        let verdict = gate(
            serde_json::json!({"min_robust_accuracy": 0.8, "max_robust_loss": 0.7,
            "max_accuracy_drop": 0.15}),
        )
        .decide(&s, &[]);
        assert!(verdict.passed, "{verdict:?}");
        assert_eq!(verdict.rules.len(), 3);

        // The lower bound of 80/100 is about 0.711.
        let verdict =
            gate(serde_json::json!({"min_robust_accuracy": 0.75, "on_lower_bound": true}))
                .decide(&s, &[]);
        assert!(!verdict.passed);
        assert!(
            verdict.failed[0].contains("lower 95% bound"),
            "{:?}",
            verdict.failed
        );
        let drop = gate(serde_json::json!({"max_accuracy_drop": 0.1})).decide(&s, &[]);
        assert!(!drop.passed && drop.rules[0].actual.unwrap() > 0.149);
    }

    #[test]
    fn baselines_from_reports_ids_and_figures() {
        let s = summary(95, 80, 100, 0.7);
        let report = serde_json::json!({"summary": {"robust_accuracy": {"value": 0.83},
            "mean_robust_loss": 0.6}});
        let fail = gate(serde_json::json!({"baseline": report, "max_regression": 0.02}));
        assert!(!fail.decide(&s, &[]).passed);
        let pass = gate(serde_json::json!({"baseline": report, "max_regression": 0.03}));
        assert!(pass.decide(&s, &[]).passed);
        let id = gate(serde_json::json!({"baseline": "abc"}));
        assert_eq!(id.baseline.as_ref().unwrap().unresolved(), Some("abc"));
        let bad: Result<Gate, _> = serde_json::from_value(serde_json::json!({"baseline": 3}));
        assert!(bad.unwrap_err().to_string().contains("evaluation id"));
    }

    #[test]
    fn failed_checks_fail_the_gate_unless_told_otherwise() {
        let s = summary(95, 80, 100, 0.7);
        let failed = Check {
            name: "noise_weaker".to_owned(),
            status: CheckStatus::Fail,
            message: "noise broke more".to_owned(),
            figures: Default::default(),
        };
        let warned = Check {
            status: CheckStatus::Warn,
            name: "unbounded_eps".to_owned(),
            ..failed.clone()
        };
        let verdict = gate(serde_json::json!({})).decide(&s, &[failed.clone(), warned.clone()]);
        assert!(!verdict.passed);
        assert_eq!(verdict.failed.len(), 1, "{:?}", verdict.failed);
        let lenient = gate(serde_json::json!({"fail_on_failed_checks": false}))
            .decide(&s, &[failed.clone(), warned.clone()]);
        assert!(lenient.passed, "{lenient:?}");
        let strict =
            gate(serde_json::json!({"fail_on_warnings": true})).decide(&s, &[failed, warned]);
        assert_eq!(strict.failed.len(), 2);
    }
}
