//! Attack settings as requests carry them. Plain data: no libtorch here, so the server can
//! validate a request before any of it reaches a worker.

use serde::{Deserialize, Serialize};

use crate::model::Task;

/// The attack algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// One signed-gradient step of size eps (`x' = clip(x + eps * sign(grad))`); for L2 the step
    /// is the gradient rescaled to norm eps.
    Fgsm,
    /// Projected gradient descent (Madry et al.), step for step as torchattacks' PGD and PGDL2.
    Pgd,
    /// Auto-PGD (Croce and Hein, 2020): step-size halving at checkpoints, momentum 0.75.
    Apgd,
    /// No gradient: a random perturbation of full size eps (random signs times eps for Linf, a
    /// random direction of norm eps for L2), one draw per restart. A baseline any gradient attack
    /// must beat.
    Noise,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Norm {
    Linf,
    L2,
}

/// The loss the attack climbs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LossKind {
    /// Cross-entropy of the logits (classification).
    CrossEntropy,
    /// Carlini-Wagner margin: best other logit minus the true one (classification).
    Margin,
    /// Difference of logits ratio (Croce and Hein, 2020); needs 3 classes, 4 when targeted.
    Dlr,
    /// Binary cross-entropy with logits (binary models with one logit).
    Bce,
    /// Mean squared error against float targets (regression).
    Mse,
}

impl LossKind {
    /// The loss a model is trained with, which reports call the clean and robust loss.
    pub fn task_default(task: Task) -> Self {
        match task {
            Task::Classification => Self::CrossEntropy,
            Task::Binary => Self::Bce,
            Task::Regression => Self::Mse,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::CrossEntropy => "ce",
            Self::Margin => "margin",
            Self::Dlr => "dlr",
            Self::Bce => "bce",
            Self::Mse => "mse",
        }
    }
}

/// What the attack maximises per sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// Stop attacking a point once it is misclassified (fast robust accuracy).
    #[default]
    Accuracy,
    /// Run every step and keep the highest-loss point (the robust loss of the minimax objective).
    Loss,
}

/// One attack of a plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttackSettings {
    pub method: Method,
    #[serde(default = "default_norm")]
    pub norm: Norm,
    /// Radius of the perturbation ball, in input units.
    pub eps: f64,
    /// Gradient steps (FGSM: always 1).
    #[serde(default = "default_steps")]
    pub steps: u32,
    /// PGD step size; default 2.5 * eps / steps. FGSM steps eps; APGD starts at 2 * eps.
    #[serde(default)]
    pub step_size: Option<f64>,
    /// PGD: start from a uniform point of the ball (Linf) or a random direction (L2).
    #[serde(default = "default_true")]
    pub random_start: bool,
    /// Runs from fresh random starts; a point is broken if any run breaks it.
    #[serde(default = "default_one")]
    pub restarts: u32,
    /// Default: the model's task loss (cross-entropy, BCE or MSE).
    #[serde(default)]
    pub loss: Option<LossKind>,
    /// Push toward a target class instead of away from the label.
    #[serde(default)]
    pub targeted: bool,
    /// Targeted without explicit targets: attack the k most likely wrong classes in turn
    /// (AutoAttack's APGD-T); default 9, at most classes - 1.
    #[serde(default)]
    pub target_classes: Option<u32>,
}

fn default_norm() -> Norm {
    Norm::Linf
}

fn default_steps() -> u32 {
    10
}

fn default_true() -> bool {
    true
}

fn default_one() -> u32 {
    1
}

impl AttackSettings {
    pub fn new(method: Method, norm: Norm, eps: f64, steps: u32) -> Self {
        Self {
            method,
            norm,
            eps,
            steps,
            step_size: None,
            random_start: method == Method::Pgd,
            restarts: 1,
            loss: None,
            targeted: false,
            target_classes: None,
        }
    }

    /// A short name for reports: `pgd-linf-ce`, `apgd-t-l2-dlr`.
    pub fn label(&self, task: Task) -> String {
        let method = match (self.method, self.targeted) {
            (Method::Fgsm, _) => "fgsm",
            (Method::Pgd, false) => "pgd",
            (Method::Pgd, true) => "pgd-t",
            (Method::Apgd, false) => "apgd",
            (Method::Apgd, true) => "apgd-t",
            (Method::Noise, _) => "noise",
        };
        let norm = match self.norm {
            Norm::Linf => "linf",
            Norm::L2 => "l2",
        };
        format!("{method}-{norm}-{}", self.loss(task).name())
    }

    pub fn loss(&self, task: Task) -> LossKind {
        self.loss.unwrap_or(LossKind::task_default(task))
    }

    /// Steps the attack takes: FGSM always one, noise none.
    pub fn step_count(&self) -> u32 {
        match self.method {
            Method::Fgsm => 1,
            Method::Noise => 0,
            _ => self.steps,
        }
    }

    /// The PGD step size (FGSM: eps).
    pub fn pgd_step_size(&self) -> f64 {
        match self.method {
            Method::Fgsm | Method::Noise => self.eps,
            _ => self
                .step_size
                .unwrap_or(2.5 * self.eps / f64::from(self.steps.max(1))),
        }
    }

    /// Checks the settings for a model, naming the field (`attacks[i].eps`) and the rule.
    pub fn validate(
        &self,
        field: &str,
        task: Task,
        num_classes: Option<i64>,
    ) -> Result<(), String> {
        if !(self.eps.is_finite() && self.eps >= 0.0) {
            return Err(format!(
                "{field}.eps: must be a finite number >= 0, got {}",
                self.eps
            ));
        }
        if matches!(self.method, Method::Pgd | Method::Apgd) && self.steps == 0 {
            return Err(format!("{field}.steps: must be at least 1, got 0"));
        }
        if self.steps > 100_000 {
            return Err(format!(
                "{field}.steps: must be at most 100000, got {}",
                self.steps
            ));
        }
        if let Some(step) = self.step_size {
            if !(step.is_finite() && step > 0.0) {
                return Err(format!(
                    "{field}.step_size: must be a finite number > 0, got {step}"
                ));
            }
        }
        if self.restarts == 0 || self.restarts > 1000 {
            return Err(format!(
                "{field}.restarts: must be 1 to 1000, got {}",
                self.restarts
            ));
        }
        let loss = self.loss(task);
        let fits = match task {
            Task::Classification => {
                matches!(
                    loss,
                    LossKind::CrossEntropy | LossKind::Margin | LossKind::Dlr
                )
            }
            Task::Binary => loss == LossKind::Bce,
            Task::Regression => loss == LossKind::Mse,
        };
        if !fits {
            let allowed = match task {
                Task::Classification => "ce, margin or dlr",
                Task::Binary => "bce",
                Task::Regression => "mse",
            };
            return Err(format!(
                "{field}.loss: a {task:?} model takes {allowed}, got {}",
                loss.name()
            ));
        }
        if self.targeted && self.method == Method::Noise {
            return Err(format!("{field}.targeted: noise has no target"));
        }
        if self.targeted && task != Task::Classification {
            return Err(format!(
                "{field}.targeted: only classification models can be targeted"
            ));
        }
        let classes = num_classes.unwrap_or(0);
        let needed = if self.targeted { 4 } else { 3 };
        if loss == LossKind::Dlr && classes < needed {
            return Err(format!(
                "{field}.loss: dlr needs at least {needed} classes, the model has {classes}"
            ));
        }
        if let Some(k) = self.target_classes {
            if k == 0 || i64::from(k) >= classes.max(1) {
                return Err(format!(
                    "{field}.target_classes: must be 1 to {}, got {k}",
                    classes - 1
                ));
            }
        }
        Ok(())
    }
}

/// What a worker runs on one batch: attacks in order (an ensemble when more than one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AttackPlan {
    pub attacks: Vec<AttackSettings>,
    #[serde(default)]
    pub objective: Objective,
    /// Seeds every random start, together with the sample's index, the attack and the restart.
    #[serde(default)]
    pub seed: u64,
    /// Keep each sample's final iterate instead of the best one, as reference implementations
    /// (torchattacks) return it; used to compare step for step. Implies every step runs.
    #[serde(default)]
    pub last_iterate: bool,
}

impl AttackPlan {
    pub fn single(settings: AttackSettings, objective: Objective, seed: u64) -> Self {
        Self {
            attacks: vec![settings],
            objective,
            seed,
            last_iterate: false,
        }
    }

    pub fn validate(&self, task: Task, num_classes: Option<i64>) -> Result<(), String> {
        if self.attacks.is_empty() || self.attacks.len() > 16 {
            return Err(format!(
                "attacks: must list 1 to 16 attacks, got {}",
                self.attacks.len()
            ));
        }
        if task == Task::Regression && self.objective == Objective::Accuracy {
            return Err("objective: a regression model has no accuracy; use loss".to_owned());
        }
        for (i, attack) in self.attacks.iter().enumerate() {
            attack.validate(&format!("attacks[{i}]"), task, num_classes)?;
        }
        Ok(())
    }

    /// Whether points drop out of the attack once misclassified.
    pub fn stops_early(&self) -> bool {
        self.objective == Objective::Accuracy && !self.last_iterate
    }
}

/// One sample's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SampleResult {
    /// The sample's index in its data set (the key of its random streams).
    #[serde(default)]
    pub index: u64,
    /// Its true class (classification and binary models; none for regression).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<i64>,
    /// Predicted class on the clean input (binary: 0 or 1; regression: none).
    pub clean_prediction: Option<i64>,
    /// Predicted class on the adversarial example.
    pub adversarial_prediction: Option<i64>,
    pub clean_correct: Option<bool>,
    /// Correct on the clean input and on every point any attack reached.
    pub robust: Option<bool>,
    /// The task loss (cross-entropy, BCE, MSE) on the clean input.
    pub clean_loss: f32,
    /// The task loss on the adversarial example.
    pub robust_loss: f32,
    /// Linf norm of the perturbation.
    pub linf: f32,
    /// L2 norm of the perturbation.
    pub l2: f32,
    /// The attack (label) that first misclassified the point, or `clean` when it was never right.
    pub broken_by: Option<String>,
    /// The iterate at which it did (0: the start point).
    pub broken_at_step: Option<u32>,
    /// Some input gradient of this sample was zero everywhere.
    pub zero_gradient: bool,
    /// Some input gradient of this sample held NaN.
    pub nan_gradient: bool,
}
