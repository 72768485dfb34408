//! The background encoders' queue (repositories to plan, pairs to encode, each once) and
//! the counters of delta work since start behind `/metrics` (verdicts themselves are on
//! disk).

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use super::catalogue::LayerRef;
use super::gate::lock;
use super::{pair_key, DeltaOutcome};

/// One encode job: the key names the pair, the layers say where the blobs are.
#[derive(Debug, Clone)]
pub(super) struct Job {
    pub repository: String,
    pub target: LayerRef,
    pub base: LayerRef,
}

impl Job {
    pub fn key(&self) -> String {
        pair_key(&self.target.diff_id, &self.base.diff_id)
    }
}

/// What a worker does next.
pub(super) enum Work {
    Plan(String),
    Encode(Job),
}

#[derive(Debug, Default)]
struct Pending {
    /// Repositories whose pairs should be planned again (a push, an import, a rescan).
    plans: VecDeque<String>,
    jobs: VecDeque<Job>,
    /// Keys of `jobs`, so a pair is queued once.
    queued: HashSet<String>,
}

#[derive(Debug, Default)]
pub(super) struct Queue {
    pending: Mutex<Pending>,
    wake: Condvar,
}

impl Queue {
    /// Asks the workers to plan `repository`'s pairs again.
    pub fn plan(&self, repository: &str) {
        let mut pending = lock(&self.pending);
        if !pending.plans.iter().any(|r| r == repository) {
            pending.plans.push_back(repository.to_string());
        }
        drop(pending);
        self.wake.notify_all();
    }

    /// Queues a job unless its pair is queued already.
    pub fn push(&self, job: Job) -> bool {
        let mut pending = lock(&self.pending);
        if !pending.queued.insert(job.key()) {
            return false;
        }
        pending.jobs.push_back(job);
        drop(pending);
        self.wake.notify_all();
        true
    }

    pub fn contains(&self, key: &str) -> bool {
        lock(&self.pending).queued.contains(key)
    }

    pub fn len(&self) -> usize {
        lock(&self.pending).jobs.len()
    }

    /// The next thing to do: planning first; `None` after `idle` without work.
    pub fn next(&self, idle: Duration) -> Option<Work> {
        let mut pending = lock(&self.pending);
        loop {
            if let Some(repo) = pending.plans.pop_front() {
                return Some(Work::Plan(repo));
            }
            if let Some(job) = pending.jobs.pop_front() {
                pending.queued.remove(&job.key());
                return Some(Work::Encode(job));
            }
            let (guard, timeout) = self
                .wake
                .wait_timeout(pending, idle)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            pending = guard;
            if timeout.timed_out() && pending.plans.is_empty() && pending.jobs.is_empty() {
                return None;
            }
        }
    }
}

/// Counters of delta work since start.
#[derive(Debug, Default)]
pub(super) struct DeltaCounters {
    pub encoded: AtomicU64,
    pub not_worth: AtomicU64,
    pub failed: AtomicU64,
    pub bytes_saved: AtomicU64,
    pub requests_cached: AtomicU64,
    pub requests_waited: AtomicU64,
    pub requests_encoded: AtomicU64,
    /// Requests that gave up waiting for an encode (the device pulled the full layer).
    pub requests_timed_out: AtomicU64,
}

impl DeltaCounters {
    /// An encode's verdict against the `full` bytes of the target's blob.
    pub fn count_encode(&self, outcome: &DeltaOutcome, full: u64) {
        self.encoded.fetch_add(1, Ordering::Relaxed);
        match outcome {
            DeltaOutcome::Delta { bytes, .. } => {
                self.bytes_saved
                    .fetch_add(full.saturating_sub(*bytes), Ordering::Relaxed);
            }
            DeltaOutcome::NotWorth { .. } => {
                self.not_worth.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// A snapshot for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeltaMetrics {
    pub encoded: u64,
    pub not_worth: u64,
    pub failed: u64,
    pub bytes_saved: u64,
    pub requests_cached: u64,
    pub requests_waited: u64,
    pub requests_encoded: u64,
    pub requests_timed_out: u64,
    pub queued: u64,
    pub in_flight: u64,
}

impl DeltaMetrics {
    pub(super) fn read(counters: &DeltaCounters, queued: usize, in_flight: usize) -> Self {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Self {
            encoded: get(&counters.encoded),
            not_worth: get(&counters.not_worth),
            failed: get(&counters.failed),
            bytes_saved: get(&counters.bytes_saved),
            requests_cached: get(&counters.requests_cached),
            requests_waited: get(&counters.requests_waited),
            requests_encoded: get(&counters.requests_encoded),
            requests_timed_out: get(&counters.requests_timed_out),
            queued: queued as u64,
            in_flight: in_flight as u64,
        }
    }
}
