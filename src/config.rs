//! Settings of `robustd serve`, every one a flag and an environment variable, with defaults that
//! run on a laptop.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::Args;

use crate::engine::{BatcherSettings, PoolSettings, SlotSettings};

#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Address to listen on.
    #[arg(long, env = "ROBUSTD_HOST", default_value = "127.0.0.1")]
    pub host: IpAddr,

    /// Port to listen on.
    #[arg(long, env = "ROBUSTD_PORT", default_value_t = 8000)]
    pub port: u16,

    /// Folder of model cards (NAME.json) beside TorchScript files (NAME.pt).
    #[arg(long, env = "ROBUSTD_MODELS", default_value = "models")]
    pub models: PathBuf,

    /// Folder of the store: the SQLite database and the blobs (uploaded models, data sets,
    /// adversarial examples).
    #[arg(long, env = "ROBUSTD_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,

    /// A file of bearer tokens, one `scope:token` a line (scope `read` or `admin`; `#` starts
    /// a comment). With any token configured, every route but health and the docs needs one.
    #[arg(long, env = "ROBUSTD_TOKENS_FILE")]
    pub tokens_file: Option<PathBuf>,

    /// Bearer tokens as `scope:token` entries separated by commas (prefer the file or the
    /// environment: a flag shows in the process list).
    #[arg(long, env = "ROBUSTD_TOKENS", hide_env_values = true)]
    pub tokens: Option<String>,

    /// One admin token, beside any others.
    #[arg(long, env = "ROBUSTD_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Listen on a non-loopback address with no token configured (every route open to the
    /// network); without it such a start is refused.
    #[arg(long, env = "ROBUSTD_ALLOW_UNAUTHENTICATED")]
    pub allow_unauthenticated: bool,

    /// Devices to start workers on, comma separated: `cpu`, `cuda:0`, `cuda:0,cuda:1`.
    #[arg(
        long,
        env = "ROBUSTD_DEVICES",
        default_value = "cpu",
        value_delimiter = ','
    )]
    pub devices: Vec<String>,

    /// Worker processes per device.
    #[arg(long, env = "ROBUSTD_SLOTS_PER_DEVICE", default_value_t = 1)]
    pub slots_per_device: usize,

    /// libtorch threads per worker; 0 shares the machine's cores among the CPU workers.
    #[arg(long, env = "ROBUSTD_WORKER_THREADS", default_value_t = 0)]
    pub worker_threads: usize,

    /// Models each worker keeps loaded (least recently used dropped first).
    #[arg(long, env = "ROBUSTD_MODEL_CACHE", default_value_t = 8)]
    pub model_cache: usize,

    /// Requests waiting for a worker, at most; more are answered 503 with Retry-After.
    #[arg(long, env = "ROBUSTD_MAX_QUEUE_SIZE", default_value_t = 256)]
    pub max_queue_size: usize,

    /// Samples in one batch, at most; requests of the same model and settings are merged up to
    /// it, and a larger request is refused.
    #[arg(long, env = "ROBUSTD_MAX_BATCH_SIZE", default_value_t = 256)]
    pub max_batch_size: usize,

    /// How long a request may wait for others to join its batch, in microseconds.
    #[arg(
        long,
        env = "ROBUSTD_MAX_QUEUE_DELAY_MICROSECONDS",
        default_value_t = 1000
    )]
    pub max_queue_delay_microseconds: u64,

    /// A batch running longer than this many seconds is abandoned and its worker restarted.
    #[arg(long, env = "ROBUSTD_WORKER_TIMEOUT_S", default_value_t = 600)]
    pub worker_timeout_s: u64,

    /// A worker whose resident memory passes this many MiB is restarted; 0: no limit.
    #[arg(long, env = "ROBUSTD_WORKER_MEMORY_MB", default_value_t = 8192)]
    pub worker_memory_mb: u64,

    /// Request bodies larger than this many bytes are refused (uploads have their own limit).
    #[arg(long, env = "ROBUSTD_MAX_BODY_BYTES", default_value_t = 64 << 20)]
    pub max_body_bytes: usize,

    #[command(flatten)]
    pub limits: Limits,
}

/// Limits on what one request or job may ask for, each refused with a message that names the
/// field and the limit.
#[derive(Debug, Clone, Args)]
pub struct Limits {
    /// Bytes of one uploaded model file or data set, at most.
    #[arg(long, env = "ROBUSTD_MAX_UPLOAD_BYTES", default_value_t = 1 << 30)]
    pub max_upload_bytes: u64,

    /// Dimensions of a request tensor, at most.
    #[arg(long, env = "ROBUSTD_MAX_TENSOR_RANK", default_value_t = 8)]
    pub max_tensor_rank: usize,

    /// Tensor elements in one request, all tensors together, at most.
    #[arg(long, env = "ROBUSTD_MAX_ELEMENTS", default_value_t = 1 << 24)]
    pub max_elements: usize,

    /// Samples in one evaluation job, at most.
    #[arg(long, env = "ROBUSTD_MAX_JOB_SAMPLES", default_value_t = 100_000)]
    pub max_job_samples: usize,

    /// Gradient steps of one attack, at most.
    #[arg(long, env = "ROBUSTD_MAX_STEPS", default_value_t = 10_000)]
    pub max_steps: u32,

    /// Random restarts of one attack, at most.
    #[arg(long, env = "ROBUSTD_MAX_RESTARTS", default_value_t = 100)]
    pub max_restarts: u32,

    /// Evaluation jobs one token may have queued or running at once; more are answered 429.
    #[arg(long, env = "ROBUSTD_MAX_JOBS_PER_TOKEN", default_value_t = 4)]
    pub max_jobs_per_token: usize,

    /// Seconds a request may take before it is answered 504 and its work dropped (event
    /// streams and uploads excepted).
    #[arg(long, env = "ROBUSTD_REQUEST_TIMEOUT_S", default_value_t = 300)]
    pub request_timeout_s: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_upload_bytes: 1 << 30,
            max_tensor_rank: 8,
            max_elements: 1 << 24,
            max_job_samples: 100_000,
            max_steps: 10_000,
            max_restarts: 100,
            max_jobs_per_token: 4,
            request_timeout_s: 300,
        }
    }
}

impl ServeConfig {
    /// The worker pool these settings describe, started from `executable`.
    pub fn pool(&self, executable: std::path::PathBuf) -> PoolSettings {
        PoolSettings {
            executable,
            slots: self.slots(),
            batcher: BatcherSettings {
                max_batch_size: self.max_batch_size.max(1),
                max_queue_delay: std::time::Duration::from_micros(
                    self.max_queue_delay_microseconds,
                ),
                max_queue_size: self.max_queue_size.max(1),
            },
            model_cache: self.model_cache,
            batch_timeout: std::time::Duration::from_secs(self.worker_timeout_s.max(1)),
            memory_limit: (self.worker_memory_mb > 0).then_some(self.worker_memory_mb << 20),
        }
    }

    /// One worker slot per device and slot index, CPU threads shared among the CPU slots.
    pub fn slots(&self) -> Vec<SlotSettings> {
        let per_device = self.slots_per_device.max(1);
        let cpu_slots = self.devices.iter().filter(|d| *d == "cpu").count() * per_device;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = match self.worker_threads {
            0 => (cores / cpu_slots.max(1)).max(1),
            n => n,
        };
        self.devices
            .iter()
            .flat_map(|device| {
                let threads = if device == "cpu" { threads } else { 1 };
                std::iter::repeat_n(
                    SlotSettings {
                        device: device.clone(),
                        threads: threads as i32,
                    },
                    per_device,
                )
            })
            .collect()
    }
}
