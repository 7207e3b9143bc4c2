//! Prometheus metrics of the engine: queue depth, batch sizes, queue and compute time, worker
//! restarts and failures by reason.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of the failure counter.
pub type ReasonLabels = Vec<(&'static str, &'static str)>;

pub struct Metrics {
    registry: Registry,
    pub queue_depth: Gauge,
    pub batch_size: Histogram,
    pub queue_seconds: Histogram,
    pub compute_seconds: Histogram,
    pub batches: Counter,
    pub worker_restarts: Counter,
    pub failures: Family<ReasonLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("robustd");
        let queue_depth = Gauge::default();
        let batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        let queue_seconds = Histogram::new(exponential_buckets(1e-4, 4.0, 12));
        let compute_seconds = Histogram::new(exponential_buckets(1e-3, 4.0, 12));
        let batches = Counter::default();
        let worker_restarts = Counter::default();
        let failures = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "queue_depth",
            "Requests waiting for a worker",
            queue_depth.clone(),
        );
        registry.register(
            "batch_size",
            "Samples per batch sent to a worker",
            batch_size.clone(),
        );
        registry.register(
            "queue_seconds",
            "Time a request waited in the queue",
            queue_seconds.clone(),
        );
        registry.register(
            "compute_seconds",
            "Time a worker spent on a batch",
            compute_seconds.clone(),
        );
        registry.register("batches", "Batches run by workers", batches.clone());
        registry.register(
            "worker_restarts",
            "Worker processes started again after a failure",
            worker_restarts.clone(),
        );
        registry.register("failures", "Failed batches by reason", failures.clone());
        Self {
            registry,
            queue_depth,
            batch_size,
            queue_seconds,
            compute_seconds,
            batches,
            worker_restarts,
            failures,
        }
    }
}

impl Metrics {
    pub fn fail(&self, reason: &'static str) {
        self.failures.get_or_create(&vec![("reason", reason)]).inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}
