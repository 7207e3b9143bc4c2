//! The dynamic batcher's state: a bounded FIFO of requests, each for one model and one setting,
//! from which batches of at most `max_batch_size` samples are cut. Plain data driven by calls;
//! time is passed in, so it is tested without clocks, tch or HTTP.
//!
//! A batch is cut for a free worker from the oldest request and the requests behind it with the
//! same key, in arrival order. It is ready when it is full (the next request of that key would
//! not fit) or when its oldest request has waited `max_queue_delay` (Triton's dynamic batcher).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Settings of the batcher, with Triton's names.
#[derive(Debug, Clone, Copy)]
pub struct BatcherSettings {
    /// Samples in one batch, at most; a single larger request still runs, alone.
    pub max_batch_size: usize,
    /// How long the oldest request may wait for others to join its batch.
    pub max_queue_delay: Duration,
    /// Requests waiting, at most; more are refused.
    pub max_queue_size: usize,
}

/// A waiting request.
#[derive(Debug)]
pub struct Queued<T> {
    /// Requests batch together only when their keys are equal.
    pub key: String,
    pub samples: usize,
    pub arrived: Instant,
    pub item: T,
}

/// The queue refused a request because it holds `max_queue_size` already.
#[derive(Debug, PartialEq, Eq)]
pub struct QueueFull(pub usize);

#[derive(Debug)]
pub struct Queue<T> {
    settings: BatcherSettings,
    waiting: VecDeque<Queued<T>>,
}

/// What a free worker should do next.
#[derive(Debug)]
pub enum Next<T> {
    /// Run this batch.
    Run(Vec<Queued<T>>),
    /// Nothing is ready; look again at this instant or when a request arrives.
    WaitUntil(Instant),
    /// The queue is empty; look again when a request arrives.
    Idle,
}

impl<T> Queue<T> {
    pub fn new(settings: BatcherSettings) -> Self {
        Self {
            settings,
            waiting: VecDeque::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    pub fn push(&mut self, request: Queued<T>) -> Result<(), QueueFull> {
        if self.waiting.len() >= self.settings.max_queue_size {
            return Err(QueueFull(self.settings.max_queue_size));
        }
        self.waiting.push_back(request);
        Ok(())
    }

    /// Queues a request whatever the queue holds: the server's own work (loading a model),
    /// which a queue full of clients' requests must not refuse. It counts towards the limit
    /// while it waits.
    pub fn push_anyway(&mut self, request: Queued<T>) {
        self.waiting.push_back(request);
    }

    /// Puts requests back at the front, in their order, whatever the queue holds: they were
    /// admitted once already (a retry after a worker died).
    pub fn requeue_front(&mut self, requests: Vec<Queued<T>>) {
        for request in requests.into_iter().rev() {
            self.waiting.push_front(request);
        }
    }

    /// Drops the requests `gone` says no one waits for any more (client left, job cancelled);
    /// returns how many.
    pub fn drop_abandoned(&mut self, gone: impl Fn(&T) -> bool) -> usize {
        let before = self.waiting.len();
        self.waiting.retain(|q| !gone(&q.item));
        before - self.waiting.len()
    }

    /// Cuts the next batch for a free worker, if one is ready at `now`.
    pub fn next(&mut self, now: Instant) -> Next<T> {
        let Some(oldest) = self.waiting.front() else {
            return Next::Idle;
        };
        let key = oldest.key.clone();
        let deadline = oldest.arrived + self.settings.max_queue_delay;

        // Which requests of this key fit, in arrival order, and whether the batch is full.
        let mut chosen = Vec::new();
        let mut samples = 0usize;
        let mut full = false;
        for (i, q) in self
            .waiting
            .iter()
            .enumerate()
            .filter(|(_, q)| q.key == key)
        {
            if !chosen.is_empty() && samples + q.samples > self.settings.max_batch_size {
                full = true;
                break;
            }
            chosen.push(i);
            samples += q.samples;
            if samples >= self.settings.max_batch_size {
                full = true;
                break;
            }
        }
        if !full && now < deadline {
            return Next::WaitUntil(deadline);
        }
        let mut batch = Vec::with_capacity(chosen.len());
        for i in chosen.into_iter().rev() {
            batch.push(self.waiting.remove(i).expect("index from this queue"));
        }
        batch.reverse();
        Next::Run(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(max_batch_size: usize, delay_ms: u64, max_queue_size: usize) -> BatcherSettings {
        BatcherSettings {
            max_batch_size,
            max_queue_delay: Duration::from_millis(delay_ms),
            max_queue_size,
        }
    }

    fn request(key: &str, samples: usize, arrived: Instant, id: u32) -> Queued<u32> {
        Queued {
            key: key.to_owned(),
            samples,
            arrived,
            item: id,
        }
    }

    fn ids(next: Next<u32>) -> Vec<u32> {
        match next {
            Next::Run(batch) => batch.into_iter().map(|q| q.item).collect(),
            other => panic!("expected a batch, got {other:?}"),
        }
    }

    #[test]
    fn a_lone_request_waits_for_the_delay_then_runs() {
        let t0 = Instant::now();
        let mut q = Queue::new(settings(8, 5, 10));
        q.push(request("a", 1, t0, 1)).unwrap();
        assert!(matches!(q.next(t0), Next::WaitUntil(d) if d == t0 + Duration::from_millis(5)));
        assert_eq!(ids(q.next(t0 + Duration::from_millis(5))), [1]);
        assert!(matches!(q.next(t0), Next::Idle));
    }

    #[test]
    fn requests_of_one_key_merge_up_to_the_batch_size_in_arrival_order() {
        let t0 = Instant::now();
        let mut q = Queue::new(settings(4, 5, 10));
        for id in 0..6 {
            q.push(request("a", 1, t0, id)).unwrap();
        }
        // Full at once: no waiting.
        assert_eq!(ids(q.next(t0)), [0, 1, 2, 3]);
        assert!(matches!(q.next(t0), Next::WaitUntil(_)));
        assert_eq!(ids(q.next(t0 + Duration::from_millis(5))), [4, 5]);
    }

    #[test]
    fn other_keys_never_join_and_do_not_block_the_oldest() {
        let t0 = Instant::now();
        let mut q = Queue::new(settings(4, 5, 10));
        q.push(request("a", 2, t0, 1)).unwrap();
        q.push(request("b", 3, t0, 2)).unwrap();
        q.push(request("a", 2, t0, 3)).unwrap();
        assert_eq!(ids(q.next(t0)), [1, 3]);
        assert_eq!(ids(q.next(t0 + Duration::from_millis(5))), [2]);
    }

    #[test]
    fn a_request_that_would_overflow_the_batch_waits_for_the_next() {
        let t0 = Instant::now();
        let mut q = Queue::new(settings(4, 5, 10));
        q.push(request("a", 3, t0, 1)).unwrap();
        q.push(request("a", 2, t0, 2)).unwrap();
        assert_eq!(ids(q.next(t0)), [1]);
        // A request larger than the batch size still runs, alone.
        q.push(request("a", 9, t0, 3)).unwrap();
        assert_eq!(ids(q.next(t0)), [2]);
        assert_eq!(ids(q.next(t0)), [3]);
    }

    #[test]
    fn a_full_queue_refuses_and_abandoned_requests_are_dropped() {
        let t0 = Instant::now();
        let mut q = Queue::new(settings(4, 5, 2));
        q.push(request("a", 1, t0, 1)).unwrap();
        q.push(request("a", 1, t0, 2)).unwrap();
        assert_eq!(q.push(request("a", 1, t0, 3)), Err(QueueFull(2)));
        assert_eq!(q.drop_abandoned(|&id| id == 1), 1);
        q.push(request("a", 1, t0, 3)).unwrap();
        assert_eq!(ids(q.next(t0 + Duration::from_millis(5))), [2, 3]);
    }

    #[test]
    fn the_servers_own_work_joins_even_a_full_queue() {
        let t0 = Instant::now();
        let mut q = Queue::new(settings(4, 5, 1));
        q.push(request("a", 1, t0, 1)).unwrap();
        q.push_anyway(request("load", 0, t0, 2));
        assert_eq!(q.len(), 2);
        assert_eq!(q.push(request("a", 1, t0, 3)), Err(QueueFull(1)));
        assert_eq!(ids(q.next(t0 + Duration::from_millis(5))), [1]);
        assert_eq!(ids(q.next(t0 + Duration::from_millis(5))), [2]);
        q.push(request("a", 1, t0, 3)).unwrap();
    }
}
