//! Delta work shared by the request path and the background workers: one encode per
//! (target, base) pair however many ask for it at once (`Registry::delta_once`), the queue
//! the workers take jobs from, the verdicts that failed this run, and the counters behind
//! `/metrics`.
//!
//! A pair's verdict lives on disk in `deltas/<target hex>-<base hex>.v<delta format>` (a
//! delta blob digest, or `none <delta bytes>` when the delta does not pay), written before
//! the pair leaves the in-flight map; a reader checks the record under the same lock, so a pair is encoded at
//! most once per data dir and never again after a restart.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use coracle_images::Digest;

use super::deltas::LayerRef;
use super::{BlobDigest, Registry, RegistryError};

/// Marker recorded when no delta pays, so the encoder does not run again for the pair.
pub(super) const NO_DELTA: &str = "none";

/// What the encoder decided for one (target, base) pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeltaOutcome {
    /// A delta blob smaller than the target's layer blob.
    Delta { digest: BlobDigest, bytes: u64 },
    /// The delta was not smaller than the layer (size unknown for records of older builds).
    NotWorth { delta_bytes: Option<u64> },
}

impl DeltaOutcome {
    pub(super) fn record(&self) -> String {
        match self {
            Self::Delta { digest, .. } => digest.as_str().to_string(),
            Self::NotWorth {
                delta_bytes: Some(n),
            } => format!("{NO_DELTA} {n}"),
            Self::NotWorth { delta_bytes: None } => NO_DELTA.to_string(),
        }
    }
}

/// Who asks for a pair: a device's request or a background worker (counted apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    Request,
    Background,
}

/// One encode job: the key names the pair, the layers say where the blobs are.
#[derive(Debug, Clone)]
pub(super) struct Job {
    pub repository: String,
    pub target: LayerRef,
    pub base: LayerRef,
}

/// A pair being encoded; followers wait on it for the leader's verdict.
#[derive(Debug, Default)]
struct Slot {
    verdict: Mutex<Option<Result<DeltaOutcome, String>>>,
    done: Condvar,
}

#[derive(Debug, Default)]
struct Queue {
    /// Repositories whose pairs should be planned again (a push, an import, a rescan).
    plans: VecDeque<String>,
    jobs: VecDeque<Job>,
    /// Keys of `jobs`, so a pair is queued once.
    queued: HashSet<String>,
}

/// Counters of delta work since start (the verdicts themselves are on disk).
#[derive(Debug, Default)]
pub struct DeltaCounters {
    pub encoded: AtomicU64,
    pub not_worth: AtomicU64,
    pub failed: AtomicU64,
    pub bytes_saved: AtomicU64,
    pub requests_cached: AtomicU64,
    pub requests_waited: AtomicU64,
    pub requests_encoded: AtomicU64,
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
    pub queued: u64,
    pub in_flight: u64,
}

/// In-flight pairs, the queue and the counters; one per registry, shared by clones.
#[derive(Debug, Default)]
pub struct DeltaWork {
    in_flight: Mutex<HashMap<String, Arc<Slot>>>,
    queue: Mutex<Queue>,
    wake: Condvar,
    /// Pairs whose encode failed in this run: not retried until a restart; devices asking
    /// for one get the full layer.
    failed: Mutex<HashMap<String, String>>,
    pub counters: DeltaCounters,
}

/// Where a pair stands, for the image listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PairState {
    Done(DeltaOutcome),
    Computing,
    Queued,
    Failed(String),
    /// Neither encoded nor queued (e.g. older than the planning window).
    NotPlanned,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking encode cannot leave these maps half-updated: every update is one call.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The pair's record name. The delta format version is part of it, so a delta cached by a
/// build with another format is not served (it is encoded again).
pub(super) fn pair_key(target: &Digest, base: &Digest) -> String {
    format!(
        "{}-{}.v{}",
        target.hex(),
        base.hex(),
        coracle_images::delta::FORMAT_VERSION
    )
}

impl DeltaWork {
    pub fn metrics(&self) -> DeltaMetrics {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        DeltaMetrics {
            encoded: get(&c.encoded),
            not_worth: get(&c.not_worth),
            failed: get(&c.failed),
            bytes_saved: get(&c.bytes_saved),
            requests_cached: get(&c.requests_cached),
            requests_waited: get(&c.requests_waited),
            requests_encoded: get(&c.requests_encoded),
            queued: lock(&self.queue).jobs.len() as u64,
            in_flight: lock(&self.in_flight).len() as u64,
        }
    }

    /// Asks the workers to plan `repository`'s pairs again.
    pub fn plan(&self, repository: &str) {
        let mut queue = lock(&self.queue);
        if !queue.plans.iter().any(|r| r == repository) {
            queue.plans.push_back(repository.to_string());
        }
        drop(queue);
        self.wake.notify_all();
    }

    /// Queues a job unless its pair is queued, in flight or failed in this run.
    pub(super) fn enqueue(&self, job: Job) -> bool {
        let key = pair_key(&job.target.diff_id, &job.base.diff_id);
        if lock(&self.failed).contains_key(&key) || lock(&self.in_flight).contains_key(&key) {
            return false;
        }
        let mut queue = lock(&self.queue);
        if !queue.queued.insert(key) {
            return false;
        }
        queue.jobs.push_back(job);
        drop(queue);
        self.wake.notify_all();
        true
    }

    /// The next thing to do: a repository to plan or a job; `None` after `idle` without work.
    pub(super) fn next(&self, idle: Duration) -> Option<Result<String, Job>> {
        let mut queue = lock(&self.queue);
        loop {
            if let Some(repo) = queue.plans.pop_front() {
                return Some(Ok(repo));
            }
            if let Some(job) = queue.jobs.pop_front() {
                queue
                    .queued
                    .remove(&pair_key(&job.target.diff_id, &job.base.diff_id));
                return Some(Err(job));
            }
            let (guard, timeout) = self
                .wake
                .wait_timeout(queue, idle)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            queue = guard;
            if timeout.timed_out() && queue.plans.is_empty() && queue.jobs.is_empty() {
                return None;
            }
        }
    }

    pub(super) fn state_without_record(&self, key: &str) -> PairState {
        if lock(&self.in_flight).contains_key(key) {
            return PairState::Computing;
        }
        if lock(&self.queue).queued.contains(key) {
            return PairState::Queued;
        }
        if let Some(reason) = lock(&self.failed).get(key) {
            return PairState::Failed(reason.clone());
        }
        PairState::NotPlanned
    }
}

impl Registry {
    /// The verdict for (target, base): the stored record, else the encode another caller is
    /// running (waited for), else an encode run here. Blocking; call off the async runtime.
    pub(super) fn delta_once(
        &self,
        target: &LayerRef,
        base: &LayerRef,
        caller: Caller,
    ) -> Result<DeltaOutcome, RegistryError> {
        let work = &self.work;
        let key = pair_key(&target.diff_id, &base.diff_id);
        let count = |counter: &AtomicU64| {
            if caller == Caller::Request {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        };
        let (slot, leader) = {
            let mut in_flight = lock(&work.in_flight);
            if let Some(outcome) = self.read_record(&key) {
                count(&work.counters.requests_cached);
                return Ok(outcome);
            }
            // A pair that failed in this run (a bad layer) is not encoded again for every
            // device that asks: they get the full layer until a restart.
            if caller == Caller::Request && lock(&work.failed).contains_key(&key) {
                count(&work.counters.requests_cached);
                return Ok(DeltaOutcome::NotWorth { delta_bytes: None });
            }
            match in_flight.get(&key) {
                Some(slot) => (slot.clone(), false),
                None => {
                    let slot = Arc::new(Slot::default());
                    in_flight.insert(key.clone(), slot.clone());
                    (slot, true)
                }
            }
        };
        if !leader {
            count(&work.counters.requests_waited);
            let mut verdict = lock(&slot.verdict);
            while verdict.is_none() {
                verdict = slot
                    .done
                    .wait(verdict)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            return match verdict.clone() {
                Some(Ok(outcome)) => Ok(outcome),
                Some(Err(reason)) => Err(RegistryError::DeltaFailed { reason }),
                None => Err(RegistryError::DeltaFailed {
                    reason: "delta encode ended without a verdict".into(),
                }),
            };
        }
        count(&work.counters.requests_encoded);
        let result = self.encode_and_record(&key, target, base);
        let shared = match &result {
            Ok(outcome) => {
                lock(&work.failed).remove(&key);
                Ok(outcome.clone())
            }
            Err(err) => {
                work.counters.failed.fetch_add(1, Ordering::Relaxed);
                let reason = format!("{err:#}");
                lock(&work.failed).insert(key.clone(), reason.clone());
                Err(reason)
            }
        };
        *lock(&slot.verdict) = Some(shared);
        slot.done.notify_all();
        lock(&work.in_flight).remove(&key);
        result
    }

    fn encode_and_record(
        &self,
        key: &str,
        target: &LayerRef,
        base: &LayerRef,
    ) -> Result<DeltaOutcome, RegistryError> {
        let counters = &self.work.counters;
        let outcome = self.encode_delta(target, base)?;
        counters.encoded.fetch_add(1, Ordering::Relaxed);
        match &outcome {
            DeltaOutcome::Delta { bytes, .. } => {
                let full = self.blobs.size(&target.blob).unwrap_or(0);
                counters
                    .bytes_saved
                    .fetch_add(full.saturating_sub(*bytes), Ordering::Relaxed);
            }
            DeltaOutcome::NotWorth { .. } => {
                counters.not_worth.fetch_add(1, Ordering::Relaxed);
            }
        }
        let record = self.deltas.join(key);
        crate::datadir::write_public(&record, outcome.record().as_bytes()).map_err(|err| {
            RegistryError::DeltaFailed {
                reason: format!("record delta {}: {err}", record.display()),
            }
        })?;
        Ok(outcome)
    }

    /// A stored verdict, if any (a delta whose blob is gone counts as none: encode again).
    pub(super) fn read_record(&self, key: &str) -> Option<DeltaOutcome> {
        let text = std::fs::read_to_string(self.deltas.join(key)).ok()?;
        let text = text.trim();
        if let Some(rest) = text.strip_prefix(NO_DELTA) {
            return Some(DeltaOutcome::NotWorth {
                delta_bytes: rest.trim().parse().ok(),
            });
        }
        let digest = BlobDigest::parse(text).ok()?;
        let bytes = self.blobs.size(&digest)?;
        Some(DeltaOutcome::Delta { digest, bytes })
    }

    /// Where the pair (target, base) stands.
    pub fn pair_state(&self, target: &Digest, base: &Digest) -> PairState {
        let key = pair_key(target, base);
        match self.read_record(&key) {
            Some(outcome) => PairState::Done(outcome),
            None => self.work.state_without_record(&key),
        }
    }

    /// Asks the background workers (if started) to plan `repository`'s deltas.
    pub fn plan_deltas(&self, repository: &str) {
        self.work.plan(repository);
    }

    pub fn delta_metrics(&self) -> DeltaMetrics {
        self.work.metrics()
    }
}
