//! Persistence: SQLite for records, a content-addressed blob folder for model files, data sets
//! and adversarial examples. Everything lives under one data folder; migrations run at start.
//!
//! NOTE: the queries keep to SQL that PostgreSQL also speaks, so a fleet can move to it behind
//! this same interface; only the connection and the job queue's locking would change.

mod blobs;

use std::path::Path;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

pub use blobs::{BlobError, Blobs};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(transparent)]
    Blob(#[from] BlobError),
    #[error("stored record is unreadable: {0}")]
    Decode(#[from] serde_json::Error),
}

/// An uploaded model.
#[derive(Debug, Clone)]
pub struct ModelRecord {
    pub name: String,
    pub sha256: String,
    pub card: String,
}

/// A stored data set: inputs and labels as `.npy` blobs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatasetRecord {
    pub name: String,
    pub x_sha256: String,
    pub y_sha256: String,
    pub n: i64,
    pub x_shape: Vec<i64>,
    pub created_at: i64,
}

/// An evaluation job's row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: String,
    pub model: String,
    pub model_sha256: String,
    pub spec: serde_json::Value,
    pub status: String,
    pub done: i64,
    pub total: i64,
    pub correct: i64,
    pub robust: i64,
    pub error: Option<String>,
    pub report: Option<serde_json::Value>,
    pub adversarial_sha256: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// One finished chunk of a job.
#[derive(Debug, Clone)]
pub struct ChunkRecord {
    pub chunk: i64,
    pub samples: serde_json::Value,
    pub adversarial_sha256: String,
}

#[derive(Debug, Clone)]
pub struct Store {
    db: SqlitePool,
    pub blobs: Blobs,
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Store {
    /// Opens (creating if needed) the store in `folder` and brings its schema up to date.
    pub async fn open(folder: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(folder).map_err(BlobError::Io)?;
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(folder.join("robustd.sqlite"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true);
        let db = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations").run(&db).await?;
        let blobs = Blobs::open(&folder.join("blobs")).map_err(BlobError::Io)?;
        Ok(Self { db, blobs })
    }

    // Models.

    pub async fn put_model(&self, name: &str, sha256: &str, card: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO models (name, sha256, card, created_at) VALUES (?, ?, ?, ?)
             ON CONFLICT (name) DO UPDATE SET sha256 = excluded.sha256, card = excluded.card",
        )
        .bind(name)
        .bind(sha256)
        .bind(card)
        .bind(now())
        .execute(&self.db)
        .await?;
        Ok(())
    }

    pub async fn models(&self) -> Result<Vec<ModelRecord>, StoreError> {
        let rows = sqlx::query("SELECT name, sha256, card FROM models ORDER BY name")
            .fetch_all(&self.db)
            .await?;
        Ok(rows
            .iter()
            .map(|r| ModelRecord {
                name: r.get(0),
                sha256: r.get(1),
                card: r.get(2),
            })
            .collect())
    }

    pub async fn delete_model(&self, name: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM models WHERE name = ?")
            .bind(name)
            .execute(&self.db)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    // Data sets.

    pub async fn put_dataset(&self, record: &DatasetRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO datasets (name, x_sha256, y_sha256, n, x_shape, created_at)
             VALUES (?, ?, ?, ?, ?, ?)
             ON CONFLICT (name) DO UPDATE SET x_sha256 = excluded.x_sha256,
               y_sha256 = excluded.y_sha256, n = excluded.n, x_shape = excluded.x_shape",
        )
        .bind(&record.name)
        .bind(&record.x_sha256)
        .bind(&record.y_sha256)
        .bind(record.n)
        .bind(serde_json::to_string(&record.x_shape)?)
        .bind(record.created_at)
        .execute(&self.db)
        .await?;
        Ok(())
    }

    pub async fn datasets(&self) -> Result<Vec<DatasetRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, x_sha256, y_sha256, n, x_shape, created_at FROM datasets ORDER BY name",
        )
        .fetch_all(&self.db)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DatasetRecord {
                    name: r.get(0),
                    x_sha256: r.get(1),
                    y_sha256: r.get(2),
                    n: r.get(3),
                    x_shape: serde_json::from_str(r.get::<&str, _>(4))?,
                    created_at: r.get(5),
                })
            })
            .collect()
    }

    pub async fn dataset(&self, name: &str) -> Result<Option<DatasetRecord>, StoreError> {
        Ok(self.datasets().await?.into_iter().find(|d| d.name == name))
    }

    pub async fn delete_dataset(&self, name: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM datasets WHERE name = ?")
            .bind(name)
            .execute(&self.db)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    // Jobs.

    pub async fn insert_job(&self, job: &JobRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO jobs (id, model, model_sha256, spec, status, done, total, correct, robust,
               created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, 0, ?, 0, 0, ?, ?)",
        )
        .bind(&job.id)
        .bind(&job.model)
        .bind(&job.model_sha256)
        .bind(job.spec.to_string())
        .bind(&job.status)
        .bind(job.total)
        .bind(job.created_at)
        .bind(job.updated_at)
        .execute(&self.db)
        .await?;
        Ok(())
    }

    pub async fn set_job_status(
        &self,
        id: &str,
        status: &str,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE jobs SET status = ?, error = ?, updated_at = ? WHERE id = ?")
            .bind(status)
            .bind(error)
            .bind(now())
            .bind(id)
            .execute(&self.db)
            .await?;
        Ok(())
    }

    /// Records a finished chunk and the job's progress in one transaction.
    pub async fn add_chunk(
        &self,
        id: &str,
        chunk: &ChunkRecord,
        samples: i64,
        correct: i64,
        robust: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.db.begin().await?;
        sqlx::query(
            "INSERT INTO job_chunks (job_id, chunk, samples, adversarial_sha256) VALUES (?, ?, ?, ?)",
        )
        .bind(id)
        .bind(chunk.chunk)
        .bind(chunk.samples.to_string())
        .bind(&chunk.adversarial_sha256)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE jobs SET done = done + ?, correct = correct + ?, robust = robust + ?,
               updated_at = ? WHERE id = ?",
        )
        .bind(samples)
        .bind(correct)
        .bind(robust)
        .bind(now())
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn chunks(&self, id: &str) -> Result<Vec<ChunkRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT chunk, samples, adversarial_sha256 FROM job_chunks WHERE job_id = ? ORDER BY chunk",
        )
        .bind(id)
        .fetch_all(&self.db)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ChunkRecord {
                    chunk: r.get(0),
                    samples: serde_json::from_str(r.get::<&str, _>(1))?,
                    adversarial_sha256: r.get(2),
                })
            })
            .collect()
    }

    /// Marks a job finished with its report, in one transaction.
    pub async fn finish_job(
        &self,
        id: &str,
        report: &serde_json::Value,
        adversarial_sha256: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE jobs SET status = 'succeeded', report = ?, adversarial_sha256 = ?,
               updated_at = ? WHERE id = ?",
        )
        .bind(report.to_string())
        .bind(adversarial_sha256)
        .bind(now())
        .bind(id)
        .execute(&self.db)
        .await?;
        Ok(())
    }

    pub async fn job(&self, id: &str) -> Result<Option<JobRecord>, StoreError> {
        let rows = self.query_jobs("WHERE id = ?", Some(id)).await?;
        Ok(rows.into_iter().next())
    }

    pub async fn jobs(&self) -> Result<Vec<JobRecord>, StoreError> {
        self.query_jobs("ORDER BY created_at DESC, id", None).await
    }

    /// A succeeded job of the same model file and the same spec, whose report can be reused.
    pub async fn reusable_job(
        &self,
        model_sha256: &str,
        spec: &serde_json::Value,
    ) -> Result<Option<JobRecord>, StoreError> {
        let jobs = self
            .query_jobs("WHERE status = 'succeeded' ORDER BY created_at DESC", None)
            .await?;
        Ok(jobs
            .into_iter()
            .find(|j| j.model_sha256 == model_sha256 && &j.spec == spec))
    }

    /// Drops the adversarial examples of finished jobs last updated before `before` (unix
    /// seconds), oldest first, and then more until the examples left take at most `max_bytes`.
    /// Reports stay. Returns the jobs pruned and the bytes freed.
    pub async fn prune_adversarial(
        &self,
        before: Option<i64>,
        max_bytes: Option<u64>,
    ) -> Result<(usize, u64), StoreError> {
        let jobs = self
            .query_jobs(
                "WHERE adversarial_sha256 IS NOT NULL ORDER BY updated_at, id",
                None,
            )
            .await?;
        let mut blobs_of = Vec::new();
        for job in &jobs {
            let mut shas = vec![job.adversarial_sha256.clone().unwrap_or_default()];
            shas.extend(
                self.chunks(&job.id)
                    .await?
                    .into_iter()
                    .map(|c| c.adversarial_sha256),
            );
            shas.retain(|s| !s.is_empty());
            let size: u64 = shas
                .iter()
                .filter_map(|s| std::fs::metadata(self.blobs.path(s)).ok())
                .map(|m| m.len())
                .sum();
            blobs_of.push((job, shas, size));
        }
        let mut total: u64 = blobs_of.iter().map(|(_, _, size)| size).sum();
        let mut pruned = Vec::new();
        for (job, shas, size) in &blobs_of {
            let old = before.is_some_and(|b| job.updated_at < b);
            let over = max_bytes.is_some_and(|m| total > m);
            if !(old || over) {
                continue;
            }
            total -= size;
            pruned.push((job.id.clone(), shas.clone(), *size));
        }

        let mut freed = 0u64;
        for (id, shas, size) in &pruned {
            let mut tx = self.db.begin().await?;
            sqlx::query("UPDATE jobs SET adversarial_sha256 = NULL WHERE id = ?")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("UPDATE job_chunks SET adversarial_sha256 = '' WHERE job_id = ?")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            for sha in shas {
                // Blobs are shared by content: remove only what nothing else refers to.
                let users: i64 = sqlx::query_scalar(
                    "SELECT (SELECT COUNT(*) FROM jobs WHERE adversarial_sha256 = ?1)
                          + (SELECT COUNT(*) FROM job_chunks WHERE adversarial_sha256 = ?1)
                          + (SELECT COUNT(*) FROM datasets WHERE x_sha256 = ?1 OR y_sha256 = ?1)
                          + (SELECT COUNT(*) FROM models WHERE sha256 = ?1)",
                )
                .bind(sha)
                .fetch_one(&self.db)
                .await?;
                if users == 0 {
                    self.blobs.remove(sha).map_err(BlobError::Io)?;
                }
            }
            freed += size;
        }
        Ok((pruned.len(), freed))
    }

    /// Jobs left queued or running by an earlier run of the server.
    pub async fn unfinished_jobs(&self) -> Result<Vec<JobRecord>, StoreError> {
        self.query_jobs(
            "WHERE status IN ('queued', 'running') ORDER BY created_at",
            None,
        )
        .await
    }

    async fn query_jobs(&self, tail: &str, id: Option<&str>) -> Result<Vec<JobRecord>, StoreError> {
        let sql = format!(
            "SELECT id, model, model_sha256, spec, status, done, total, correct, robust, error,
               report, adversarial_sha256, created_at, updated_at FROM jobs {tail}"
        );
        let mut query = sqlx::query(&sql);
        if let Some(id) = id {
            query = query.bind(id);
        }
        let rows = query.fetch_all(&self.db).await?;
        rows.iter()
            .map(|r| {
                let report: Option<String> = r.get(10);
                Ok(JobRecord {
                    id: r.get(0),
                    model: r.get(1),
                    model_sha256: r.get(2),
                    spec: serde_json::from_str(r.get::<&str, _>(3))?,
                    status: r.get(4),
                    done: r.get(5),
                    total: r.get(6),
                    correct: r.get(7),
                    robust: r.get(8),
                    error: r.get(9),
                    report: report.map(|r| serde_json::from_str(&r)).transpose()?,
                    adversarial_sha256: r.get(11),
                    created_at: r.get(12),
                    updated_at: r.get(13),
                })
            })
            .collect()
    }
}
