//! Every model the server can serve: the shipped ones from the model folder (read-only) and the
//! ones uploaded through the API (kept in the store).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use super::{ModelEntry, Repository};

/// Where a model came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    Shipped,
    Uploaded,
}

#[derive(Debug, Clone, Default)]
pub struct Catalog {
    inner: Arc<RwLock<BTreeMap<String, (ModelEntry, Origin)>>>,
}

impl Catalog {
    pub fn new(shipped: &Repository) -> Self {
        let models = shipped
            .iter()
            .map(|entry| (entry.card.name.clone(), (entry.clone(), Origin::Shipped)))
            .collect();
        Self {
            inner: Arc::new(RwLock::new(models)),
        }
    }

    pub fn get(&self, name: &str) -> Option<ModelEntry> {
        self.inner
            .read()
            .expect("catalog lock")
            .get(name)
            .map(|(e, _)| e.clone())
    }

    pub fn origin(&self, name: &str) -> Option<Origin> {
        self.inner
            .read()
            .expect("catalog lock")
            .get(name)
            .map(|(_, o)| *o)
    }

    pub fn all(&self) -> Vec<(ModelEntry, Origin)> {
        self.inner
            .read()
            .expect("catalog lock")
            .values()
            .cloned()
            .collect()
    }

    /// Adds or replaces an uploaded model. Shipped models cannot be replaced.
    pub fn insert_uploaded(&self, entry: ModelEntry) -> Result<(), String> {
        let mut models = self.inner.write().expect("catalog lock");
        let name = entry.card.name.clone();
        if let Some((_, Origin::Shipped)) = models.get(&name) {
            return Err(format!(
                "model {name:?} is shipped with the server and cannot be replaced"
            ));
        }
        models.insert(name, (entry, Origin::Uploaded));
        Ok(())
    }

    pub fn remove_uploaded(&self, name: &str) -> Result<Option<ModelEntry>, String> {
        let mut models = self.inner.write().expect("catalog lock");
        match models.get(name) {
            Some((_, Origin::Shipped)) => Err(format!(
                "model {name:?} is shipped with the server and cannot be removed"
            )),
            Some(_) => Ok(models.remove(name).map(|(e, _)| e)),
            None => Ok(None),
        }
    }
}
