//! A pool of worker processes, one per slot. Each slot is a task that owns one child process,
//! takes work from a shared queue, and starts a new child when its child dies.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio::task::JoinHandle;

use crate::tensor::HostTensor;
use crate::worker::protocol::{self, Reply, Request};

/// How long a new worker may take to say hello (loading libtorch, initialising CUDA).
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// Pause before starting a worker again after a failed start, so a broken setup does not spin.
const RESTART_BACKOFF: Duration = Duration::from_secs(1);

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
    /// Work waiting for a free worker, at most.
    pub queue_size: usize,
    /// Models each worker keeps loaded.
    pub model_cache: usize,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("the queue is full ({0} waiting); retry later")]
    QueueFull(usize),
    #[error("the worker process died while running this request: {0}")]
    WorkerDied(String),
}

type Outcome = Result<(Reply, Vec<HostTensor>), EngineError>;

struct Work {
    request: Request,
    tensors: Vec<HostTensor>,
    reply: oneshot::Sender<Outcome>,
}

/// The running pool. Cloning shares it.
#[derive(Clone)]
pub struct WorkerPool {
    queue: Arc<std::sync::Mutex<Option<mpsc::Sender<Work>>>>,
    ready: Arc<AtomicUsize>,
    slots: Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
    queue_size: usize,
}

impl WorkerPool {
    /// Starts one task per slot; each starts its worker process in the background.
    pub fn start(settings: PoolSettings) -> Self {
        let (sender, receiver) = mpsc::channel(settings.queue_size.max(1));
        let receiver = Arc::new(Mutex::new(receiver));
        let ready = Arc::new(AtomicUsize::new(0));
        let settings = Arc::new(settings);
        let slots = (0..settings.slots.len())
            .map(|i| {
                let slot = Slot {
                    index: i,
                    settings: settings.clone(),
                    queue: receiver.clone(),
                    ready: ready.clone(),
                };
                tokio::spawn(slot.run())
            })
            .collect();
        Self {
            queue: Arc::new(std::sync::Mutex::new(Some(sender))),
            ready,
            slots: Arc::new(std::sync::Mutex::new(slots)),
            queue_size: settings.queue_size,
        }
    }

    /// Workers started and waiting for work or running it.
    pub fn ready_workers(&self) -> usize {
        self.ready.load(Ordering::SeqCst)
    }

    /// Runs one request on the next free worker and waits for its reply.
    pub async fn call(&self, request: Request, tensors: Vec<HostTensor>) -> Outcome {
        let sender = self.queue.lock().expect("pool lock").clone();
        let sender = sender.ok_or(EngineError::ShuttingDown)?;
        let (reply, answer) = oneshot::channel();
        sender
            .try_send(Work {
                request,
                tensors,
                reply,
            })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => EngineError::QueueFull(self.queue_size),
                mpsc::error::TrySendError::Closed(_) => EngineError::ShuttingDown,
            })?;
        drop(sender);
        answer.await.unwrap_or(Err(EngineError::ShuttingDown))
    }

    /// Stops taking work, lets the workers finish what is queued, and waits for them to exit.
    pub async fn shutdown(&self) {
        self.queue.lock().expect("pool lock").take();
        let slots = std::mem::take(&mut *self.slots.lock().expect("pool lock"));
        for slot in slots {
            let _ = slot.await;
        }
    }
}

struct Slot {
    index: usize,
    settings: Arc<PoolSettings>,
    queue: Arc<Mutex<mpsc::Receiver<Work>>>,
    ready: Arc<AtomicUsize>,
}

impl Slot {
    async fn run(self) {
        let slot = &self.settings.slots[self.index];
        loop {
            let mut process = match WorkerProcess::start(&self.settings, slot).await {
                Ok(process) => process,
                Err(e) => {
                    tracing::error!(slot = self.index, device = %slot.device, "worker did not start: {e}");
                    tokio::time::sleep(RESTART_BACKOFF).await;
                    continue;
                }
            };
            tracing::info!(slot = self.index, device = %slot.device, pid = process.pid, "worker started");
            self.ready.fetch_add(1, Ordering::SeqCst);
            let finished = self.serve(&mut process).await;
            self.ready.fetch_sub(1, Ordering::SeqCst);
            if finished {
                process.stop().await;
                return;
            }
            process.kill().await;
        }
    }

    /// Feeds work to one process. True when the queue closed (shutdown), false when the process
    /// died and must be replaced.
    async fn serve(&self, process: &mut WorkerProcess) -> bool {
        loop {
            let work = self.queue.lock().await.recv().await;
            let Some(work) = work else { return true };
            // The caller has gone away: skip the work rather than compute for no one.
            if work.reply.is_closed() {
                continue;
            }
            match process.call(&work.request, &work.tensors).await {
                Ok(answer) => {
                    let _ = work.reply.send(Ok(answer));
                }
                Err(e) => {
                    let status = process.exit_status().await;
                    tracing::error!(slot = self.index, pid = process.pid, %status, "worker died: {e}");
                    let _ = work.reply.send(Err(EngineError::WorkerDied(status)));
                    return false;
                }
            }
        }
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

    /// How the process ended, as words, after its pipe broke.
    async fn exit_status(&mut self) -> String {
        match tokio::time::timeout(Duration::from_secs(2), self.child.wait()).await {
            Ok(Ok(status)) => status.to_string(),
            _ => "still running, killed".to_owned(),
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
