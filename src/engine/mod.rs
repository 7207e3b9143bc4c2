//! Work for the worker processes: the dynamic batcher (`queue`), the supervised pool of
//! `robustd worker` children (`pool`), and their metrics.

mod metrics;
mod pool;
pub mod queue;
mod work;

pub use metrics::Metrics;
pub use pool::{proc_status_bytes, EngineError, PoolSettings, SlotSettings, WorkerPool};
pub use queue::BatcherSettings;
pub use work::{concat, rows, Operation, Work, WorkInputs, WorkResult};
