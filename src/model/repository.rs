use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::ModelCard;

/// One servable model: its card and its TorchScript file.
#[derive(Debug, Clone)]
pub struct ModelEntry {
    pub card: ModelCard,
    pub path: PathBuf,
    /// Hex sha256 of the TorchScript file: the identity workers cache loaded models by.
    pub sha256: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RepositoryError {
    #[error("model folder {path}: {source}")]
    Folder {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("model card {path}: {message}")]
    Card { path: PathBuf, message: String },
}

/// The models found in the model folder: `NAME.json` (the card) beside `NAME.pt`.
#[derive(Debug, Default, Clone)]
pub struct Repository {
    models: BTreeMap<String, ModelEntry>,
}

impl Repository {
    /// Reads every card in `folder`. A card that is unreadable or breaks a rule fails the whole
    /// scan, so a typo in a shipped card is seen at start rather than at the first request.
    pub fn scan(folder: &Path) -> Result<Self, RepositoryError> {
        let folder_error = |source| RepositoryError::Folder {
            path: folder.to_owned(),
            source,
        };
        let mut models = BTreeMap::new();
        let mut paths: Vec<PathBuf> = std::fs::read_dir(folder)
            .map_err(folder_error)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        paths.sort();
        for card_path in paths {
            let entry = read_entry(&card_path)?;
            models.insert(entry.card.name.clone(), entry);
        }
        Ok(Self { models })
    }

    pub fn get(&self, name: &str) -> Option<&ModelEntry> {
        self.models.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &ModelEntry> {
        self.models.values()
    }

    pub fn len(&self) -> usize {
        self.models.len()
    }

    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }
}

fn read_entry(card_path: &Path) -> Result<ModelEntry, RepositoryError> {
    let card_error = |message: String| RepositoryError::Card {
        path: card_path.to_owned(),
        message,
    };
    let text = std::fs::read_to_string(card_path).map_err(|e| card_error(e.to_string()))?;
    let card: ModelCard = serde_json::from_str(&text).map_err(|e| card_error(e.to_string()))?;
    card.validate().map_err(card_error)?;

    let path = card_path.with_extension("pt");
    let bytes = std::fs::read(&path)
        .map_err(|e| card_error(format!("TorchScript file {}: {e}", path.display())))?;
    let sha256 = hex::encode(Sha256::digest(&bytes));
    Ok(ModelEntry { card, path, sha256 })
}
