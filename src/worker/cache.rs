//! Loaded models, least recently used dropped first.

use tch::Device;

use super::protocol::{FailureKind, ModelRef, Reply};
use crate::attack::AttackedModel;

pub struct ModelCache {
    capacity: usize,
    /// By file sha256 and card, most recently used last.
    entries: Vec<(String, AttackedModel)>,
}

impl ModelCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: Vec::new(),
        }
    }

    /// The model for `model`, loading it on first use. A load failure comes back as the reply.
    pub fn get_or_load(
        &mut self,
        model: &ModelRef,
        device: Device,
    ) -> Result<&AttackedModel, Reply> {
        // The card is part of the key: the same file uploaded under another card (another
        // normalisation, domain or input shape) is another model.
        let key = format!(
            "{}\n{}",
            model.sha256,
            serde_json::to_string(&model.card).unwrap_or_default()
        );
        if let Some(i) = self.entries.iter().position(|(k, _)| *k == key) {
            let entry = self.entries.remove(i);
            self.entries.push(entry);
        } else {
            let loaded =
                AttackedModel::load(&model.path, model.card.clone(), device).map_err(|e| {
                    Reply::Failed {
                        kind: FailureKind::Model,
                        message: e.to_string(),
                    }
                })?;
            tracing::info!(model = %model.name, sha256 = %model.sha256, "model loaded");
            if self.entries.len() == self.capacity {
                self.entries.remove(0);
            }
            self.entries.push((key, loaded));
        }
        Ok(&self.entries.last().expect("just pushed").1)
    }
}
