//! A content-addressed blob folder: each blob is stored once, under its sha256, written to a
//! temporary file and renamed into place so a crash never leaves half a blob under a real name.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob {0} is missing")]
    Missing(String),
    #[error("blob {0} is corrupt: its content no longer matches its sha256")]
    Corrupt(String),
    #[error("blob store: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Debug, Clone)]
pub struct Blobs {
    root: PathBuf,
}

impl Blobs {
    pub fn open(root: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(root.join("tmp"))?;
        Ok(Self {
            root: root.to_owned(),
        })
    }

    pub fn path(&self, sha256: &str) -> PathBuf {
        let (a, b) = sha256.split_at(2.min(sha256.len()));
        self.root.join(a).join(b)
    }

    /// Stores `bytes`; returns their sha256.
    pub fn put(&self, bytes: &[u8]) -> Result<String, BlobError> {
        let sha256 = hex::encode(Sha256::digest(bytes));
        let path = self.path(&sha256);
        if path.exists() {
            return Ok(sha256);
        }
        let temp = self.temp_path();
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        self.commit(&temp, &path)?;
        Ok(sha256)
    }

    /// A fresh temporary file inside the store (same file system, so renames are atomic).
    pub fn temp_path(&self) -> PathBuf {
        self.root.join("tmp").join(uuid::Uuid::new_v4().to_string())
    }

    /// Moves a fully written temporary file into place under `sha256`.
    pub fn commit_temp(&self, temp: &Path, sha256: &str) -> Result<PathBuf, BlobError> {
        let path = self.path(sha256);
        if path.exists() {
            std::fs::remove_file(temp)?;
        } else {
            self.commit(temp, &path)?;
        }
        Ok(path)
    }

    fn commit(&self, temp: &Path, path: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(path.parent().expect("blob paths have a parent"))?;
        std::fs::rename(temp, path)
    }

    /// Reads a blob and checks it against its sha256.
    pub fn get(&self, sha256: &str) -> Result<Vec<u8>, BlobError> {
        let bytes = match std::fs::read(self.path(sha256)) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(BlobError::Missing(sha256.to_owned()))
            }
            Err(e) => return Err(e.into()),
        };
        if hex::encode(Sha256::digest(&bytes)) != sha256 {
            return Err(BlobError::Corrupt(sha256.to_owned()));
        }
        Ok(bytes)
    }

    /// Checks a blob without keeping its bytes.
    pub fn verify(&self, sha256: &str) -> Result<PathBuf, BlobError> {
        self.get(sha256).map(|_| self.path(sha256))
    }

    pub fn remove(&self, sha256: &str) -> std::io::Result<()> {
        match std::fs::remove_file(self.path(sha256)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_are_stored_once_and_checked_on_read() {
        let root = std::env::temp_dir().join(format!("robustd-blobs-{}", uuid::Uuid::new_v4()));
        let blobs = Blobs::open(&root).unwrap();
        let sha = blobs.put(b"hello").unwrap();
        assert_eq!(blobs.put(b"hello").unwrap(), sha);
        assert_eq!(blobs.get(&sha).unwrap(), b"hello");

        std::fs::write(blobs.path(&sha), b"jello").unwrap();
        assert!(matches!(blobs.get(&sha), Err(BlobError::Corrupt(_))));
        blobs.remove(&sha).unwrap();
        assert!(matches!(blobs.get(&sha), Err(BlobError::Missing(_))));
        std::fs::remove_dir_all(root).unwrap();
    }
}
