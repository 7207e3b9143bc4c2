//! Settings of `robustd serve`, every one a flag and an environment variable, with defaults that
//! run on a laptop.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::Args;

use crate::engine::SlotSettings;

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

    /// Samples in one request, at most.
    #[arg(long, env = "ROBUSTD_MAX_BATCH_SIZE", default_value_t = 1024)]
    pub max_batch_size: usize,

    /// Request bodies larger than this many bytes are refused.
    #[arg(long, env = "ROBUSTD_MAX_BODY_BYTES", default_value_t = 64 << 20)]
    pub max_body_bytes: usize,
}

impl ServeConfig {
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
