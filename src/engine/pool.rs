//! The worker pool: one task per slot, each owning one `robustd worker` child process. Free slots
//! pull batches from the shared queue, so a batch is cut only when a worker can take it.
//!
//! Supervision: a worker whose pipe breaks (it crashed or was killed), that runs past the batch
//! deadline, or whose resident memory passes the limit is killed and started again. Its batch
//! fails with a clear error; after a crash, each request of the batch is queued once more, since
//! a crash may not be the request's fault (a request that crashes a second worker fails).

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::{oneshot, Mutex, Notify};
use tokio::task::JoinHandle;

use super::metrics::Metrics;
use super::queue::{BatcherSettings, Next, Queue, Queued};
use super::work::{self, Work, WorkResult};
use crate::tensor::HostTensor;
use crate::worker::protocol::{self, FailureKind, Reply, Request};

/// How long a new worker may take to say hello (loading libtorch, initialising CUDA).
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// Pause before starting a worker again after a failed start, so a broken setup does not spin.
const RESTART_BACKOFF: Duration = Duration::from_secs(1);
/// How often a running batch is checked for memory use and abandoned callers.
const WATCH_INTERVAL: Duration = Duration::from_millis(50);

/// One worker process: where it runs and how many threads it may use.
#[derive(Debug, Clone)]
pub struct SlotSettings {
    pub device: String,
    pub threads: i32,
}

#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// The `robustd` executable to start as `robustd worker`.
    pub executable: PathBuf,
    pub slots: Vec<SlotSettings>,
    pub batcher: BatcherSettings,
    /// Models each worker keeps loaded.
    pub model_cache: usize,
    /// A batch running longer is abandoned and its worker killed.
    pub batch_timeout: Duration,
    /// A worker whose resident memory passes this many bytes is killed.
    pub memory_limit: Option<u64>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("the queue is full ({0} requests waiting); retry later")]
    QueueFull(usize),
    #[error("the worker process died while running this request ({0})")]
    WorkerDied(String),
    #[error("the batch ran past the {}s deadline; its worker was stopped", .0.as_secs())]
    Timeout(Duration),
    #[error("the worker passed its memory limit of {} MiB; it was stopped", .0 >> 20)]
    MemoryLimit(u64),
    #[error("{message}")]
    Failed { kind: FailureKind, message: String },
}

type Answer = Result<WorkResult, EngineError>;

struct Pending {
    work: Work,
    reply: oneshot::Sender<Answer>,
    /// Runs that ended with the worker dying.
    crashes: u8,
    /// When it joined the queue (its `arrived` may be earlier: see [`WorkerPool::submit_since`]).
    queued: Instant,
}

/// Whether a full queue may refuse a piece of work.
enum Admission {
    Client,
    Own,
}

struct Shared {
    settings: PoolSettings,
    queue: std::sync::Mutex<Queue<Pending>>,
    arrived: Notify,
    closed: AtomicBool,
    ready: AtomicUsize,
    metrics: Arc<Metrics>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue<Pending>> {
        self.queue.lock().expect("queue lock")
    }

    /// Waits for the next batch a free worker should run; None once shut down and drained.
    async fn next_batch(&self) -> Option<Vec<Queued<Pending>>> {
        loop {
            // Registered before looking, so an arrival in between is not missed.
            let arrived = self.arrived.notified();
            let (next, left) = {
                let mut queue = self.lock();
                queue.drop_abandoned(|p| p.reply.is_closed());
                let next = queue.next(Instant::now());
                (next, queue.len())
            };
            self.metrics.queue_depth.set(left as i64);
            match next {
                Next::Run(batch) => {
                    if left > 0 {
                        self.arrived.notify_waiters();
                    }
                    return Some(batch);
                }
                Next::WaitUntil(at) => {
                    tokio::select! {
                        _ = arrived => {}
                        _ = tokio::time::sleep_until(at.into()) => {}
                    }
                }
                Next::Idle if self.closed.load(Ordering::SeqCst) => return None,
                Next::Idle => arrived.await,
            }
        }
    }
}

/// The running pool. Cloning shares it.
#[derive(Clone)]
pub struct WorkerPool {
    shared: Arc<Shared>,
    slots: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl WorkerPool {
    /// Starts one task per slot; each starts its worker process in the background.
    pub fn start(settings: PoolSettings, metrics: Arc<Metrics>) -> Self {
        let shared = Arc::new(Shared {
            queue: std::sync::Mutex::new(Queue::new(settings.batcher)),
            settings,
            arrived: Notify::new(),
            closed: AtomicBool::new(false),
            ready: AtomicUsize::new(0),
            metrics,
        });
        let slots = (0..shared.settings.slots.len())
            .map(|index| {
                tokio::spawn(
                    Slot {
                        index,
                        shared: shared.clone(),
                    }
                    .run(),
                )
            })
            .collect();
        Self {
            shared,
            slots: Arc::new(Mutex::new(slots)),
        }
    }

    /// Workers started and waiting for work or running it.
    pub fn ready_workers(&self) -> usize {
        self.shared.ready.load(Ordering::SeqCst)
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    /// Queues one request and waits for its result. Dropping the future abandons the request:
    /// it is skipped if still queued, and a running batch of only abandoned requests is
    /// cancelled between two attack steps.
    pub async fn submit(&self, work: Work) -> Answer {
        self.enqueue(work, Instant::now(), Admission::Client).await
    }

    /// [`WorkerPool::submit`] for a later part of a request that arrived at `arrived`: the
    /// batching delay counts from then, so a request whose parts run one after another waits
    /// for others to join it once, not once per part.
    pub async fn submit_since(&self, work: Work, arrived: Instant) -> Answer {
        self.enqueue(work, arrived, Admission::Client).await
    }

    /// The server's own work (loading a model): queued even when the queue is full, since
    /// refusing it would leave the model unavailable, and run without a batching delay.
    pub async fn submit_own(&self, work: Work) -> Answer {
        let long_ago = Instant::now()
            .checked_sub(self.shared.settings.batcher.max_queue_delay)
            .unwrap_or_else(Instant::now);
        self.enqueue(work, long_ago, Admission::Own).await
    }

    async fn enqueue(&self, work: Work, arrived: Instant, admission: Admission) -> Answer {
        if self.shared.closed.load(Ordering::SeqCst) {
            return Err(EngineError::ShuttingDown);
        }
        let (reply, answer) = oneshot::channel();
        let queued = Queued {
            key: work.batch_key(),
            samples: work.samples(),
            arrived,
            item: Pending {
                work,
                reply,
                crashes: 0,
                queued: Instant::now(),
            },
        };
        let depth = {
            let mut queue = self.shared.lock();
            match admission {
                Admission::Client => queue
                    .push(queued)
                    .map_err(|full| EngineError::QueueFull(full.0))?,
                Admission::Own => queue.push_anyway(queued),
            }
            queue.len()
        };
        self.shared.metrics.queue_depth.set(depth as i64);
        self.shared.arrived.notify_waiters();
        answer.await.unwrap_or(Err(EngineError::ShuttingDown))
    }

    /// Stops taking work, lets the workers finish what is queued, and waits for them to exit.
    pub async fn shutdown(&self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        self.shared.arrived.notify_waiters();
        let slots = std::mem::take(&mut *self.slots.lock().await);
        for slot in slots {
            let _ = slot.await;
        }
    }
}

struct Slot {
    index: usize,
    shared: Arc<Shared>,
}

/// How a batch ended for the worker that ran it.
enum Health {
    Fine,
    /// The process must be replaced.
    Broken,
}

/// Why a supervised call did not return a reply.
enum Failure {
    Died(String),
    Timeout,
    Memory(u64),
}

impl Slot {
    async fn run(self) {
        let settings = &self.shared.settings;
        let slot = &settings.slots[self.index];
        let mut first = true;
        loop {
            if self.shared.closed.load(Ordering::SeqCst) && self.shared.lock().is_empty() {
                return;
            }
            let mut process = match WorkerProcess::start(settings, slot).await {
                Ok(process) => process,
                Err(e) => {
                    tracing::error!(slot = self.index, device = %slot.device, "worker did not start: {e}");
                    tokio::time::sleep(RESTART_BACKOFF).await;
                    continue;
                }
            };
            if !first {
                self.shared.metrics.worker_restarts.inc();
            }
            first = false;
            tracing::info!(slot = self.index, device = %slot.device, pid = process.pid, "worker started");
            self.shared.ready.fetch_add(1, Ordering::SeqCst);
            loop {
                let Some(batch) = self.shared.next_batch().await else {
                    self.shared.ready.fetch_sub(1, Ordering::SeqCst);
                    process.stop().await;
                    return;
                };
                if let Health::Broken = self.run_batch(&mut process, batch).await {
                    break;
                }
            }
            self.shared.ready.fetch_sub(1, Ordering::SeqCst);
            process.kill().await;
        }
    }

    async fn run_batch(&self, process: &mut WorkerProcess, batch: Vec<Queued<Pending>>) -> Health {
        let metrics = &self.shared.metrics;
        let started = Instant::now();
        let samples: usize = batch.iter().map(|q| q.samples).sum();
        for queued in &batch {
            metrics
                .queue_seconds
                .observe((started - queued.item.queued).as_secs_f64());
        }
        metrics.batch_size.observe(samples as f64);
        metrics.batches.inc();

        let works: Vec<&Work> = batch.iter().map(|q| &q.item.work).collect();
        let (request, tensors) = work::merge(&works);
        let abandoned = || batch.iter().all(|q| q.item.reply.is_closed());
        let outcome = process
            .supervised_call(&self.shared.settings, &request, &tensors, abandoned)
            .await;
        metrics
            .compute_seconds
            .observe(started.elapsed().as_secs_f64());
        tracing::debug!(
            slot = self.index,
            requests = batch.len(),
            samples,
            "batch done"
        );

        match outcome {
            Ok((reply, outputs)) => {
                deliver(batch, reply, outputs, metrics);
                Health::Fine
            }
            Err(Failure::Died(status)) => {
                metrics.fail("worker_died");
                tracing::error!(
                    slot = self.index,
                    pid = process.pid,
                    "worker died: {status}"
                );
                let mut retry = Vec::new();
                for mut queued in batch {
                    if queued.item.crashes == 0 {
                        queued.item.crashes = 1;
                        retry.push(queued);
                    } else {
                        let _ = queued
                            .item
                            .reply
                            .send(Err(EngineError::WorkerDied(status.clone())));
                    }
                }
                if !retry.is_empty() {
                    self.shared.lock().requeue_front(retry);
                    self.shared.arrived.notify_waiters();
                }
                Health::Broken
            }
            Err(failure) => {
                let error = match failure {
                    Failure::Timeout => {
                        metrics.fail("timeout");
                        EngineError::Timeout(self.shared.settings.batch_timeout)
                    }
                    Failure::Memory(limit) => {
                        metrics.fail("memory_limit");
                        EngineError::MemoryLimit(limit)
                    }
                    Failure::Died(_) => unreachable!("handled above"),
                };
                tracing::error!(slot = self.index, pid = process.pid, "{error}");
                for queued in batch {
                    let _ = queued.item.reply.send(Err(error.clone()));
                }
                Health::Broken
            }
        }
    }
}

/// Splits a worker's reply among the requests of its batch.
fn deliver(batch: Vec<Queued<Pending>>, reply: Reply, outputs: Vec<HostTensor>, metrics: &Metrics) {
    let mut start = 0usize;
    for queued in batch {
        let n = queued.samples;
        let answer = match (&reply, outputs.first()) {
            (Reply::Loaded, _) => Ok(WorkResult::Loaded),
            (Reply::Output, Some(y)) => Ok(WorkResult::Output(work::rows(y, start, n))),
            (Reply::Attacked { samples }, Some(adversarial)) => Ok(WorkResult::Attacked {
                samples: samples[start..start + n].to_vec(),
                adversarial: work::rows(adversarial, start, n),
            }),
            (Reply::Failed { kind, message }, _) => Err(EngineError::Failed {
                kind: *kind,
                message: message.clone(),
            }),
            (other, _) => Err(EngineError::Failed {
                kind: FailureKind::Internal,
                message: format!("unexpected worker reply {other:?}"),
            }),
        };
        if let Err(EngineError::Failed { kind, .. }) = &answer {
            metrics.fail(match kind {
                FailureKind::Model => "model",
                FailureKind::Input => "input",
                FailureKind::Cancelled => "cancelled",
                FailureKind::Internal => "internal",
            });
        }
        let _ = queued.item.reply.send(answer);
        start += n;
    }
}

/// One `robustd worker` child and its pipes.
struct WorkerProcess {
    child: Child,
    pid: u32,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl WorkerProcess {
    async fn start(settings: &PoolSettings, slot: &SlotSettings) -> std::io::Result<Self> {
        let mut child = Command::new(&settings.executable)
            .arg("worker")
            .args(["--device", &slot.device])
            .args(["--threads", &slot.threads.to_string()])
            .args(["--model-cache", &settings.model_cache.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        let pid = child.id().unwrap_or_default();
        let stdin = child.stdin.take().expect("piped stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let hello = tokio::time::timeout(START_TIMEOUT, protocol::read_frame_async(&mut stdout));
        match hello.await {
            Ok(Ok((Reply::Hello { .. }, _))) => Ok(Self {
                child,
                pid,
                stdin,
                stdout,
            }),
            Ok(Ok((other, _))) => Err(std::io::Error::other(format!("unexpected hello {other:?}"))),
            Ok(Err(e)) => {
                let status = child
                    .wait()
                    .await
                    .map(|s| s.to_string())
                    .unwrap_or_default();
                Err(std::io::Error::other(format!("{e} ({status})")))
            }
            Err(_) => Err(std::io::Error::other("no hello within the start timeout")),
        }
    }

    async fn call(
        &mut self,
        request: &Request,
        tensors: &[HostTensor],
    ) -> std::io::Result<(Reply, Vec<HostTensor>)> {
        let frame = protocol::encode_frame(request, tensors)?;
        self.stdin.write_all(&frame).await?;
        self.stdin.flush().await?;
        protocol::read_frame_async(&mut self.stdout).await
    }

    /// A call watched for the batch deadline, the memory limit and abandonment (then the worker
    /// is asked, once, to cancel between two attack steps).
    async fn supervised_call(
        &mut self,
        settings: &PoolSettings,
        request: &Request,
        tensors: &[HostTensor],
        abandoned: impl Fn() -> bool,
    ) -> Result<(Reply, Vec<HostTensor>), Failure> {
        let pid = self.pid;
        let deadline = tokio::time::sleep(settings.batch_timeout);
        let mut watch = tokio::time::interval(WATCH_INTERVAL);
        let mut cancel_sent = false;
        let outcome = {
            let call = self.call(request, tensors);
            tokio::pin!(call, deadline);
            loop {
                tokio::select! {
                    result = &mut call => break result.map_err(|e| Failure::Died(e.to_string())),
                    _ = &mut deadline => break Err(Failure::Timeout),
                    _ = watch.tick() => {
                        if let Some(limit) = settings.memory_limit {
                            if resident_bytes(pid).is_some_and(|rss| rss > limit) {
                                break Err(Failure::Memory(limit));
                            }
                        }
                        if !cancel_sent && abandoned() {
                            signal(pid, libc::SIGUSR1);
                            cancel_sent = true;
                        }
                    }
                }
            }
        };
        match outcome {
            Err(Failure::Died(e)) => {
                Err(Failure::Died(format!("{e}; {}", self.exit_status().await)))
            }
            other => other,
        }
    }

    /// How the process ended, as words, after its pipe broke.
    async fn exit_status(&mut self) -> String {
        match tokio::time::timeout(Duration::from_secs(2), self.child.wait()).await {
            Ok(Ok(status)) => status.to_string(),
            _ => "still running".to_owned(),
        }
    }

    /// Asks the process to exit, and kills it if it does not.
    async fn stop(mut self) {
        if let Ok(frame) = protocol::encode_frame(&Request::Shutdown, &[]) {
            let _ = self.stdin.write_all(&frame).await;
            let _ = self.stdin.flush().await;
        }
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            self.kill().await;
        }
    }

    async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Resident memory of a process, from /proc.
fn resident_bytes(pid: u32) -> Option<u64> {
    proc_status_bytes(pid, "VmRSS:")
}

/// A field of /proc/PID/status in bytes (`VmRSS:` resident now, `VmHWM:` peak resident).
pub fn proc_status_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own child's.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}
