//! Work for the worker processes: the pool of supervised `robustd worker` children.

mod pool;

pub use pool::{EngineError, PoolSettings, SlotSettings, WorkerPool};
