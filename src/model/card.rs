use serde::{Deserialize, Serialize};

/// What a model computes, which decides the losses an attack may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// Logits over `num_classes` classes.
    Classification,
    /// One logit; a positive logit means class 1 (trained with BCE with logits).
    Binary,
    /// Real-valued outputs compared with float targets (MSE).
    Regression,
}

/// The per-sample input a model accepts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InputSpec {
    /// Shape of one sample, without the batch dimension.
    pub shape: Vec<i64>,
    /// Only `FP32` is served today.
    #[serde(default = "default_datatype")]
    pub datatype: String,
    /// The input domain `[lo, hi]`: clean inputs and adversarial examples stay inside it.
    #[serde(default = "default_domain")]
    pub domain: [f64; 2],
}

fn default_datatype() -> String {
    "FP32".to_owned()
}

fn default_domain() -> [f64; 2] {
    [0.0, 1.0]
}

/// Per-channel normalisation applied inside the attacked graph: the model sees `(x - mean) / std`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Normalization {
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
}

/// A model card: the JSON file beside a TorchScript file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ModelCard {
    pub name: String,
    pub task: Task,
    pub input: InputSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_classes: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub class_names: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalization: Option<Normalization>,
    /// Everything else the card says (training, accuracies, dataset), kept as written.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl ModelCard {
    /// Checks the rules every card must follow, naming the field that breaks one.
    pub fn validate(&self) -> Result<(), String> {
        if self.input.shape.is_empty() || self.input.shape.iter().any(|&d| d <= 0) {
            return Err(format!(
                "input.shape must list positive dimensions, got {:?}",
                self.input.shape
            ));
        }
        if self.input.datatype != "FP32" {
            return Err(format!(
                "input.datatype must be FP32, got {}",
                self.input.datatype
            ));
        }
        let [lo, hi] = self.input.domain;
        if !(lo.is_finite() && hi.is_finite() && lo < hi) {
            return Err(format!(
                "input.domain must be finite with lo < hi, got [{lo}, {hi}]"
            ));
        }
        if self.task == Task::Classification && !matches!(self.num_classes, Some(n) if n >= 2) {
            let got = self
                .num_classes
                .map_or("none".to_owned(), |n| n.to_string());
            return Err(format!(
                "num_classes must be at least 2 for a classification model, got {got}"
            ));
        }
        if let Some(norm) = &self.normalization {
            let channels = self.input.shape[0] as usize;
            let fits = |v: &Vec<f64>| v.len() == 1 || v.len() == channels;
            if !fits(&norm.mean) || !fits(&norm.std) {
                return Err(format!(
                    "normalization.mean and normalization.std must have 1 or {channels} values"
                ));
            }
            if norm.std.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
                return Err("normalization.std must be positive".to_owned());
            }
        }
        Ok(())
    }

    /// Number of values in one sample.
    pub fn sample_len(&self) -> usize {
        self.input.shape.iter().product::<i64>() as usize
    }
}
