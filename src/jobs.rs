//! Evaluation jobs: work too large to wait for, run in chunks through the worker pool, with
//! progress kept in the store after every chunk so that a job resumes where it stopped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::attack::SampleResult;
use crate::dataset::{Dataset, Datasets};
use crate::engine::{concat, EngineError, Work, WorkInputs, WorkResult, WorkerPool};
use crate::evaluation::{output_probe, EvalSpec};
use crate::model::Catalog;
use crate::report::{ExtraRuns, Report, ReportInputs, Timings};
use crate::store::{now, ChunkRecord, JobRecord, Store, StoreError};
use crate::tensor::{read_npy, write_npy, HostTensor};
use crate::worker::protocol::ModelRef;

/// Where a job's samples come from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DataSource {
    /// A stored or shipped data set, samples `start..start + n`.
    Dataset {
        name: String,
        start: usize,
        n: usize,
    },
    /// Tensors sent with the request, kept as `.npy` blobs.
    Inline {
        x_sha256: String,
        y_sha256: String,
        targets_sha256: Option<String>,
    },
}

/// A job as it is stored: everything needed to run it again after a restart.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobSpec {
    /// The plan, its sweep, checks and gate.
    #[serde(flatten)]
    pub eval: EvalSpec,
    pub data: DataSource,
    pub chunk_size: usize,
    /// Index of the first sample in its data set (keys the random streams).
    pub sample_offset: u64,
}

/// A status change or progress, as Server-Sent Events carry them.
#[derive(Debug, Clone)]
pub struct JobEvent {
    pub id: u64,
    pub kind: &'static str,
    pub data: Value,
}

/// A job running in this process: its cancel flag and its events.
#[derive(Default)]
pub struct LiveJob {
    cancelled: AtomicBool,
    cancel: Notify,
    events: Mutex<Vec<JobEvent>>,
    next_id: AtomicU64,
    pub changed: Notify,
}

impl LiveJob {
    fn emit(&self, kind: &'static str, data: Value) {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst) + 1;
        self.events
            .lock()
            .expect("events lock")
            .push(JobEvent { id, kind, data });
        self.changed.notify_waiters();
    }

    /// Events after `after`, and whether the last one ends the job.
    pub fn events_after(&self, after: u64) -> (Vec<JobEvent>, bool) {
        let events = self.events.lock().expect("events lock");
        let finished = events.last().is_some_and(|e| is_terminal(e.kind));
        (
            events.iter().filter(|e| e.id > after).cloned().collect(),
            finished,
        )
    }

    async fn cancelled(&self) {
        loop {
            let notified = self.cancel.notified();
            if self.cancelled.load(Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    }
}

pub fn is_terminal(status: &str) -> bool {
    matches!(status, "succeeded" | "failed" | "cancelled")
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Data(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("cancelled")]
    Cancelled,
}

/// Runs jobs and knows the live ones.
#[derive(Clone)]
pub struct Jobs {
    store: Store,
    pool: WorkerPool,
    catalog: Catalog,
    datasets: Datasets,
    live: Arc<Mutex<HashMap<String, Arc<LiveJob>>>>,
}

impl Jobs {
    pub fn new(store: Store, pool: WorkerPool, catalog: Catalog, datasets: Datasets) -> Self {
        Self {
            store,
            pool,
            catalog,
            datasets,
            live: Default::default(),
        }
    }

    /// Stores a new job and starts it.
    pub async fn submit(
        &self,
        model: &ModelRef,
        spec: JobSpec,
        total: usize,
    ) -> Result<JobRecord, JobError> {
        let record = JobRecord {
            id: uuid::Uuid::new_v4().to_string(),
            model: model.name.clone(),
            model_sha256: model.sha256.clone(),
            spec: serde_json::to_value(&spec).expect("specs serialise"),
            status: "queued".to_owned(),
            done: 0,
            total: total as i64,
            correct: 0,
            robust: 0,
            error: None,
            report: None,
            adversarial_sha256: None,
            created_at: now(),
            updated_at: now(),
        };
        self.store.insert_job(&record).await?;
        tracing::info!(job = %record.id, model = %record.model, samples = total, "job queued");
        self.start(record.clone());
        Ok(record)
    }

    /// Starts the runner of a stored job (new, or left unfinished by an earlier run).
    pub fn start(&self, record: JobRecord) {
        let live = Arc::new(LiveJob::default());
        live.emit("queued", progress_data(&record));
        self.live
            .lock()
            .expect("live lock")
            .insert(record.id.clone(), live.clone());
        let jobs = self.clone();
        tokio::spawn(async move { jobs.run(record, live).await });
    }

    /// Picks up the jobs an earlier run left queued or running: each resumes from its last
    /// finished chunk, or fails with the reason when it cannot.
    pub async fn resume_unfinished(&self) -> Result<usize, StoreError> {
        let unfinished = self.store.unfinished_jobs().await?;
        for record in &unfinished {
            tracing::info!(job = %record.id, done = record.done, total = record.total, "job resumed");
            self.start(record.clone());
        }
        Ok(unfinished.len())
    }

    pub fn live(&self, id: &str) -> Option<Arc<LiveJob>> {
        self.live.lock().expect("live lock").get(id).cloned()
    }

    /// Asks a running job to stop; false when it is not running here.
    pub fn cancel(&self, id: &str) -> bool {
        match self.live(id) {
            Some(live) => {
                live.cancelled.store(true, Ordering::SeqCst);
                live.cancel.notify_waiters();
                true
            }
            None => false,
        }
    }

    async fn run(self, record: JobRecord, live: Arc<LiveJob>) {
        let id = record.id.clone();
        let outcome = self.execute(&record, &live).await;
        let (status, error) = match &outcome {
            Ok(()) => ("succeeded", None),
            Err(JobError::Cancelled) => ("cancelled", None),
            Err(e) => ("failed", Some(e.to_string())),
        };
        if status != "succeeded" {
            if let Err(e) = self
                .store
                .set_job_status(&id, status, error.as_deref())
                .await
            {
                tracing::error!(job = %id, "could not record the job's end: {e}");
            }
        }
        let snapshot = match self.store.job(&id).await {
            Ok(Some(job)) => progress_data(&job),
            _ => json!({ "id": id, "status": status, "error": error }),
        };
        tracing::info!(job = %id, status, error = error.as_deref().unwrap_or(""), "job ended");
        live.emit(status, snapshot);
        // Keep the finished job's events a while for clients that reconnect, then forget it.
        let jobs = self.live.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(600)).await;
            jobs.lock().expect("live lock").remove(&id);
        });
    }

    async fn execute(&self, record: &JobRecord, live: &LiveJob) -> Result<(), JobError> {
        let spec: JobSpec = serde_json::from_value(record.spec.clone())
            .map_err(|e| JobError::Data(format!("the stored job cannot be read: {e}")))?;
        let entry = self
            .catalog
            .get(&record.model)
            .filter(|e| e.sha256 == record.model_sha256)
            .ok_or_else(|| {
                JobError::Data(format!(
                    "model {:?} with sha256 {} is no longer in the repository",
                    record.model, record.model_sha256
                ))
            })?;
        let model = ModelRef {
            name: entry.card.name.clone(),
            path: entry.path.clone(),
            sha256: entry.sha256.clone(),
            card: entry.card.clone(),
        };
        let (data, targets) = self.load_data(&spec.data).await?;
        self.store
            .set_job_status(&record.id, "running", None)
            .await?;

        let started = std::time::Instant::now();
        let n = data.len();
        let chunks = n.div_ceil(spec.chunk_size.max(1));
        let finished: Vec<i64> = self
            .store
            .chunks(&record.id)
            .await?
            .iter()
            .map(|c| c.chunk)
            .collect();
        let mut progress = self
            .store
            .job(&record.id)
            .await?
            .unwrap_or_else(|| record.clone());
        progress.status = "running".to_owned();
        live.emit("running", progress_data(&progress));

        let chunk_inputs = |start: usize, len: usize| {
            let part = data.slice(start, len);
            let offset = spec.sample_offset + start as u64;
            WorkInputs {
                x: part.x,
                labels: Some(part.y),
                targets: targets.as_ref().map(|t| crate::engine::rows(t, start, len)),
                sample_ids: (offset..offset + len as u64).collect(),
            }
        };
        for chunk in 0..chunks {
            if finished.contains(&(chunk as i64)) {
                continue;
            }
            let start = chunk * spec.chunk_size;
            let len = spec.chunk_size.min(n - start);
            let inputs = chunk_inputs(start, len);
            // Every eps of a sweep; the last (largest) is the headline.
            let mut per_eps: Vec<Vec<SampleResult>> = Vec::new();
            let mut adversarial = None;
            for (_, work) in spec.eval.attack_works(&model, &inputs) {
                let (samples, adv) = self.run_chunk(work, live).await?;
                per_eps.push(samples);
                adversarial = Some(adv);
            }
            let adversarial = adversarial.expect("a plan runs at least once");
            let samples = per_eps.last().expect("a plan runs at least once");
            let correct = samples
                .iter()
                .filter(|s| s.clean_correct == Some(true))
                .count() as i64;
            let robust = samples.iter().filter(|s| s.robust == Some(true)).count() as i64;
            let adversarial_sha256 = self
                .store
                .blobs
                .put(&write_npy(&adversarial))
                .map_err(StoreError::from)?;
            let record = ChunkRecord {
                chunk: chunk as i64,
                samples: serde_json::to_value(&per_eps).expect("rows serialise"),
                adversarial_sha256,
            };
            self.store
                .add_chunk(&progress.id, &record, len as i64, correct, robust)
                .await?;
            progress.done += len as i64;
            progress.correct += correct;
            progress.robust += robust;
            live.emit("progress", progress_data(&progress));
        }

        // Assemble every eps's rows from every chunk, in order.
        let chunks = self.store.chunks(&record.id).await?;
        let runs = spec.eval.runs();
        let mut per_eps: Vec<Vec<SampleResult>> = vec![Vec::with_capacity(n); runs.len()];
        let mut parts = Vec::with_capacity(chunks.len());
        for chunk in &chunks {
            let rows: Vec<Vec<SampleResult>> =
                serde_json::from_value(chunk.samples.clone()).map_err(StoreError::from)?;
            if rows.len() != runs.len() {
                return Err(JobError::Data(format!(
                    "chunk {} holds {} runs, the job has {}",
                    chunk.chunk,
                    rows.len(),
                    runs.len()
                )));
            }
            for (all, part) in per_eps.iter_mut().zip(rows) {
                all.extend(part);
            }
            let bytes = self
                .store
                .blobs
                .get(&chunk.adversarial_sha256)
                .map_err(StoreError::from)?;
            parts.push(read_npy(&bytes).map_err(JobError::Data)?);
        }
        let adversarial = concat(parts.iter());
        let adversarial_sha256 = self
            .store
            .blobs
            .put(&write_npy(&adversarial))
            .map_err(StoreError::from)?;
        let attack_ms = started.elapsed().as_millis() as u64;

        // The checks' probe and extra runs, on the first chunk's samples.
        let checks_started = std::time::Instant::now();
        let first = chunk_inputs(0, spec.chunk_size.min(n));
        let works = spec
            .eval
            .check_works(&model, &first, &model.card, spec.chunk_size);
        let probe = match self.run_work(works.probe, live).await? {
            WorkResult::Output(output) => output_probe(&output),
            _ => {
                return Err(JobError::Data(
                    "the worker answered a forward pass with no output".to_owned(),
                ))
            }
        };
        let extra = if spec.eval.thorough {
            let mut extra = ExtraRuns {
                n: works.n,
                ..Default::default()
            };
            if let Some(work) = works.single_step {
                extra.single_step = Some(self.run_chunk(work, live).await?.0);
            }
            if let Some(work) = works.noise {
                extra.noise = Some(self.run_chunk(work, live).await?.0);
            }
            if let Some((eps, work)) = works.unbounded {
                extra.unbounded = Some(self.run_chunk(work, live).await?.0);
                extra.unbounded_eps = eps;
            }
            Some(extra)
        } else {
            None
        };
        let headline = runs
            .last()
            .map(|(_, p)| p.clone())
            .expect("one run at least");
        let report = Report::assemble(ReportInputs {
            model: &model.name,
            model_sha256: &model.sha256,
            task: model.card.task,
            num_classes: model.card.num_classes,
            plan: &headline,
            runs: runs.iter().map(|(eps, _)| *eps).zip(per_eps).collect(),
            swept: spec.eval.swept(),
            thorough: spec.eval.thorough,
            probe: Some(&probe),
            extra: extra.as_ref(),
            gate: spec.eval.gate.as_ref(),
            timings: Timings {
                attack_ms,
                checks_ms: checks_started.elapsed().as_millis() as u64,
                total_ms: started.elapsed().as_millis() as u64,
            },
        });
        let report = serde_json::to_value(&report).expect("reports serialise");
        self.store
            .finish_job(&record.id, &report, &adversarial_sha256)
            .await?;
        Ok(())
    }

    /// One chunk through the pool; a full queue is waited out, a cancel drops the work (which
    /// stops the worker between two attack steps).
    async fn run_chunk(
        &self,
        work: Work,
        live: &LiveJob,
    ) -> Result<(Vec<SampleResult>, HostTensor), JobError> {
        match self.run_work(work, live).await? {
            WorkResult::Attacked {
                samples,
                adversarial,
            } => Ok((samples, adversarial)),
            _ => Err(JobError::Data(
                "the worker answered with no attack result".to_owned(),
            )),
        }
    }

    async fn run_work(&self, work: Work, live: &LiveJob) -> Result<WorkResult, JobError> {
        loop {
            let submitted = tokio::select! {
                result = self.pool.submit(work.clone()) => result,
                _ = live.cancelled() => return Err(JobError::Cancelled),
            };
            match submitted {
                Ok(result) => return Ok(result),
                Err(EngineError::QueueFull(_)) => {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                        _ = live.cancelled() => return Err(JobError::Cancelled),
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// A job's samples (and target classes, when it was given them), as it runs them.
    pub async fn load_data(
        &self,
        source: &DataSource,
    ) -> Result<(Dataset, Option<HostTensor>), JobError> {
        match source {
            DataSource::Dataset { name, start, n } => {
                let data = self.datasets.load(name).await.map_err(JobError::Data)?;
                if start + n > data.len() {
                    return Err(JobError::Data(format!(
                        "data set {name:?} holds {} samples, the job needs {}",
                        data.len(),
                        start + n
                    )));
                }
                Ok((data.slice(*start, *n), None))
            }
            DataSource::Inline {
                x_sha256,
                y_sha256,
                targets_sha256,
            } => {
                let read = |sha: &str| -> Result<HostTensor, JobError> {
                    let bytes = self.store.blobs.get(sha).map_err(StoreError::from)?;
                    read_npy(&bytes).map_err(JobError::Data)
                };
                let data =
                    Dataset::new(read(x_sha256)?, read(y_sha256)?).map_err(JobError::Data)?;
                let targets = targets_sha256.as_deref().map(read).transpose()?;
                Ok((data, targets))
            }
        }
    }
}

/// What clients see of a job's progress.
pub fn progress_data(job: &JobRecord) -> Value {
    let share = |count: i64| (job.done > 0).then(|| count as f64 / job.done as f64);
    json!({
        "id": job.id,
        "status": job.status,
        "done": job.done,
        "total": job.total,
        "clean_accuracy_so_far": share(job.correct),
        "robust_accuracy_so_far": share(job.robust),
        "error": job.error,
    })
}
