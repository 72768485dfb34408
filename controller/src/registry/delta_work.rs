//! Delta work shared by the request path and the background workers: one encode per
//! (target, base) pair however many ask for it at once (`Registry::delta_once`; a device's
//! request, `delta_within`, waits for it at most a bound and leaves it running), the queue
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
    /// Requests that gave up waiting for an encode (the device pulled the full layer).
    pub requests_timed_out: AtomicU64,
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
    /// When set, the next encode waits for a message (or the sender's drop) before it
    /// starts: tests hold an encode in flight with it, deterministically.
    #[cfg(test)]
    encode_gate: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
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
            requests_timed_out: get(&c.requests_timed_out),
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

/// How a caller joined a pair: it found the verdict, or a slot to wait on (leading the
/// encode or following another caller's).
enum Joined {
    Verdict(DeltaOutcome),
    Slot { slot: Arc<Slot>, leader: bool },
}

impl Slot {
    /// Waits for the verdict, at most `wait` (forever with `None`); `None` when it did not
    /// come in time.
    fn verdict(&self, wait: Option<Duration>) -> Option<Result<DeltaOutcome, RegistryError>> {
        let pending = |v: &mut Option<Result<DeltaOutcome, String>>| v.is_none();
        let guard = lock(&self.verdict);
        let guard = match wait {
            Some(wait) => {
                self.done
                    .wait_timeout_while(guard, wait, pending)
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .0
            }
            None => self
                .done
                .wait_while(guard, pending)
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        };
        (*guard)
            .clone()
            .map(|verdict| verdict.map_err(|reason| RegistryError::DeltaFailed { reason }))
    }
}

impl Registry {
    /// The stored verdict, or the pair's slot: the encode in flight, else a new one this
    /// caller leads. Counts device requests by how they were served.
    fn join(&self, key: &str, caller: Caller) -> Joined {
        let work = &self.work;
        let count = |counter: &AtomicU64| {
            if caller == Caller::Request {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        };
        let mut in_flight = lock(&work.in_flight);
        if let Some(outcome) = self.read_record(key) {
            count(&work.counters.requests_cached);
            return Joined::Verdict(outcome);
        }
        // A pair that failed in this run (a bad layer) is not encoded again for every
        // device that asks: they get the full layer until a restart.
        if caller == Caller::Request && lock(&work.failed).contains_key(key) {
            count(&work.counters.requests_cached);
            return Joined::Verdict(DeltaOutcome::NotWorth { delta_bytes: None });
        }
        match in_flight.get(key) {
            Some(slot) => {
                count(&work.counters.requests_waited);
                Joined::Slot {
                    slot: slot.clone(),
                    leader: false,
                }
            }
            None => {
                count(&work.counters.requests_encoded);
                let slot = Arc::new(Slot::default());
                in_flight.insert(key.to_string(), slot.clone());
                Joined::Slot { slot, leader: true }
            }
        }
    }

    /// The verdict for (target, base): the stored record, else the encode another caller is
    /// running (waited for), else an encode run here. Blocking; call off the async runtime.
    pub(super) fn delta_once(
        &self,
        target: &LayerRef,
        base: &LayerRef,
        caller: Caller,
    ) -> Result<DeltaOutcome, RegistryError> {
        let key = pair_key(&target.diff_id, &base.diff_id);
        match self.join(&key, caller) {
            Joined::Verdict(outcome) => Ok(outcome),
            Joined::Slot {
                slot,
                leader: false,
            } => slot.verdict(None).unwrap_or_else(|| {
                Err(RegistryError::DeltaFailed {
                    reason: "delta encode ended without a verdict".into(),
                })
            }),
            Joined::Slot { slot, leader: true } => self.lead(&key, target, base, &slot),
        }
    }

    /// A device's request: the verdict as `delta_once` finds it, but waiting at most `wait`
    /// for the encode (another caller's, or one started here on its own thread, which goes
    /// on after the wait so the next device gets the delta). `None` when the encode outlasted
    /// the wait: the device pulls the full layer.
    pub(super) fn delta_within(
        &self,
        target: &LayerRef,
        base: &LayerRef,
        wait: Duration,
    ) -> Result<Option<DeltaOutcome>, RegistryError> {
        let key = pair_key(&target.diff_id, &base.diff_id);
        let slot = match self.join(&key, Caller::Request) {
            Joined::Verdict(outcome) => return Ok(Some(outcome)),
            Joined::Slot { slot, leader } => {
                if leader {
                    self.lead_in_background(&key, target, base, &slot)?;
                }
                slot
            }
        };
        match slot.verdict(Some(wait)) {
            Some(verdict) => verdict.map(Some),
            None => {
                self.work
                    .counters
                    .requests_timed_out
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(layer = %target.diff_id, base = %base.diff_id, wait_ms = wait.as_millis() as u64, "delta not ready in time; the device pulls the full layer");
                Ok(None)
            }
        }
    }

    /// Runs the encode the caller leads on a thread of its own.
    fn lead_in_background(
        &self,
        key: &str,
        target: &LayerRef,
        base: &LayerRef,
        slot: &Arc<Slot>,
    ) -> Result<(), RegistryError> {
        let (registry, key_owned, target_owned, base_owned, slot_owned) = (
            self.clone(),
            key.to_string(),
            target.clone(),
            base.clone(),
            slot.clone(),
        );
        let spawned = std::thread::Builder::new()
            .name("coracle-delta-request".into())
            .spawn(move || {
                // The verdict reaches the waiters through the slot; errors are counted there.
                let _ = registry.lead(&key_owned, &target_owned, &base_owned, &slot_owned);
            });
        if let Err(source) = spawned {
            let reason = format!("start delta encode thread: {source}");
            self.post(key, slot, Err(reason.clone()));
            return Err(RegistryError::DeltaFailed { reason });
        }
        Ok(())
    }

    /// Encodes the pair this caller leads and hands the verdict to whoever waits.
    fn lead(
        &self,
        key: &str,
        target: &LayerRef,
        base: &LayerRef,
        slot: &Arc<Slot>,
    ) -> Result<DeltaOutcome, RegistryError> {
        #[cfg(test)]
        {
            let gate = lock(&self.work.encode_gate).take();
            if let Some(gate) = gate {
                let _ = gate.recv();
            }
        }
        let result = self.encode_and_record(key, target, base);
        let shared = match &result {
            Ok(outcome) => {
                lock(&self.work.failed).remove(key);
                Ok(outcome.clone())
            }
            Err(err) => {
                self.work.counters.failed.fetch_add(1, Ordering::Relaxed);
                let reason = crate::api::error::error_chain(&err);
                lock(&self.work.failed).insert(key.to_string(), reason.clone());
                Err(reason)
            }
        };
        self.post(key, slot, shared);
        result
    }

    /// Publishes a verdict to the slot's waiters and takes the pair out of flight (the
    /// record, if any, is already written).
    fn post(&self, key: &str, slot: &Slot, verdict: Result<DeltaOutcome, String>) {
        *lock(&slot.verdict) = Some(verdict);
        slot.done.notify_all();
        lock(&self.work.in_flight).remove(key);
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

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::registry::BlobStore;

    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn layer_tar(content: &[u8]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, "app/data.bin", content)
            .unwrap();
        builder.into_inner().unwrap()
    }

    /// A registry holding two versions of one 256 KiB layer (uncompressed tars, so the
    /// blob digest is the diff_id), 100 bytes apart.
    fn registry_with_two_versions(dir: &std::path::Path) -> (Registry, LayerRef, LayerRef) {
        let blobs = BlobStore::open(dir.join("blobs"), dir.join("uploads")).unwrap();
        let registry = Registry::open(
            dir.join("registry"),
            blobs,
            crate::access::AdminToken::new("token", None),
        )
        .unwrap();
        let old = noise(256 << 10, 1);
        let mut new = old.clone();
        new[1000..1100].copy_from_slice(&noise(100, 2));
        let put = |content: &[u8]| {
            let tar = layer_tar(content);
            let digest = BlobDigest::parse(&format!("sha256:{}", Digest::of(&tar).hex())).unwrap();
            registry
                .blobs
                .import_blocking(&digest, tar.len() as u64, &mut &tar[..])
                .unwrap();
            LayerRef {
                diff_id: digest.as_str().parse().unwrap(),
                blob: digest,
            }
        };
        let (base, target) = (put(&old), put(&new));
        (registry, target, base)
    }

    fn until(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::yield_now();
        }
    }

    #[test]
    fn a_request_arriving_while_the_delta_is_encoded_waits_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let (registry, target, base) = registry_with_two_versions(dir.path());
        let (release, gate) = std::sync::mpsc::channel();
        *lock(&registry.work.encode_gate) = Some(gate);
        // The background worker starts the encode, which the gate holds in flight.
        let worker = {
            let (registry, target, base) = (registry.clone(), target.clone(), base.clone());
            std::thread::spawn(move || registry.delta_once(&target, &base, Caller::Background))
        };
        until("the encode in flight", || {
            registry.delta_metrics().in_flight == 1
        });
        let request = {
            let (registry, target, base) = (registry.clone(), target.clone(), base.clone());
            std::thread::spawn(move || {
                registry.delta_within(&target, &base, Duration::from_secs(60))
            })
        };
        until("the request waiting", || {
            registry.delta_metrics().requests_waited == 1
        });
        release.send(()).unwrap();
        let served = request.join().unwrap().unwrap();
        assert!(
            matches!(served, Some(DeltaOutcome::Delta { bytes, .. }) if bytes < 10_000),
            "{served:?}"
        );
        assert_eq!(Some(worker.join().unwrap().unwrap()), served);
        let metrics = registry.delta_metrics();
        assert_eq!((metrics.encoded, metrics.requests_timed_out), (1, 0));
    }

    #[test]
    fn a_request_whose_encode_outlasts_the_wait_gets_the_full_layer_and_the_next_the_delta() {
        let dir = tempfile::tempdir().unwrap();
        let (registry, target, base) = registry_with_two_versions(dir.path());
        let (release, gate) = std::sync::mpsc::channel();
        *lock(&registry.work.encode_gate) = Some(gate);
        // Nothing encoded yet: the request starts the encode, which the gate holds past
        // the request's wait.
        let first = registry
            .delta_within(&target, &base, Duration::from_millis(50))
            .unwrap();
        assert_eq!(first, None, "not ready within the wait: the full layer");
        let metrics = registry.delta_metrics();
        assert_eq!((metrics.requests_timed_out, metrics.in_flight), (1, 1));
        // The encode goes on without the request; the next device gets its delta.
        release.send(()).unwrap();
        let next = registry
            .delta_within(&target, &base, Duration::from_secs(60))
            .unwrap();
        assert!(matches!(next, Some(DeltaOutcome::Delta { .. })), "{next:?}");
        until("the encode to leave the in-flight map", || {
            registry.delta_metrics().in_flight == 0
        });
        assert_eq!(registry.delta_metrics().encoded, 1);
    }
}
