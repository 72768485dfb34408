//! One encode per (target, base) pair however many ask for it at once: the first caller
//! leads the encode, the others wait on its slot (a device's request at most a bound,
//! leaving it running). The pair's verdict lives on disk in
//! `deltas/<target hex>-<base hex>.v<delta format>` (a delta blob digest, or `none <delta
//! bytes>` when the delta does not pay), written before the pair leaves the in-flight map;
//! a caller checks the record under the same lock, so a pair is encoded at most once per
//! data dir and never again after a restart. Pairs that failed in this run are remembered
//! and not encoded again for every device that asks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use coracle_images::Digest;

use super::catalogue::LayerRef;
use super::{pair_key, Deltas, RegistryError};
use crate::registry::SharedError;

/// Marker recorded when no delta pays, so the encoder does not run again for the pair.
const NO_DELTA: &str = "none";

/// What the encoder decided for one (target, base) pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeltaOutcome {
    /// A delta blob smaller than the target's layer blob.
    Delta { digest: Digest, bytes: u64 },
    /// The delta was not smaller than the layer (size unknown for records of older builds).
    NotWorth { delta_bytes: Option<u64> },
}

impl DeltaOutcome {
    fn record(&self) -> String {
        match self {
            Self::Delta { digest, .. } => digest.to_string(),
            Self::NotWorth {
                delta_bytes: Some(n),
            } => format!("{NO_DELTA} {n}"),
            Self::NotWorth { delta_bytes: None } => NO_DELTA.to_string(),
        }
    }
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

/// Who asks for a pair: a device's request or a background worker (counted apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Caller {
    Request,
    Background,
}

/// A pair being encoded; followers wait on it for the leader's verdict.
#[derive(Debug, Default)]
struct Slot {
    verdict: Mutex<Option<Result<DeltaOutcome, SharedError>>>,
    done: Condvar,
}

/// The pairs in flight and those that failed in this run.
#[derive(Debug, Default)]
pub(super) struct Gate {
    in_flight: Mutex<HashMap<String, Arc<Slot>>>,
    failed: Mutex<HashMap<String, SharedError>>,
    /// When set, the next encode waits for a message (or the sender's drop) before it
    /// starts: tests hold an encode in flight with it, deterministically.
    #[cfg(test)]
    pub encode_gate: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking encode cannot leave these maps half-updated: every update is one call.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Gate {
    /// Whether the pair is being encoded, or failed in this run (then it is not queued).
    pub fn busy_or_failed(&self, key: &str) -> bool {
        lock(&self.failed).contains_key(key) || lock(&self.in_flight).contains_key(key)
    }

    pub fn in_flight(&self) -> usize {
        lock(&self.in_flight).len()
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
        let pending = |v: &mut Option<Result<DeltaOutcome, SharedError>>| v.is_none();
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
            .map(|verdict| verdict.map_err(RegistryError::DeltaShared))
    }
}

impl Deltas {
    /// The stored verdict, or the pair's slot: the encode in flight, else a new one this
    /// caller leads. Counts device requests by how they were served.
    fn join(&self, key: &str, caller: Caller) -> Joined {
        let counters = &self.counters;
        let count = |counter: &AtomicU64| {
            if caller == Caller::Request {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        };
        let mut in_flight = lock(&self.gate.in_flight);
        if let Some(outcome) = self.read_record(key) {
            count(&counters.requests_cached);
            return Joined::Verdict(outcome);
        }
        // A pair that failed in this run (a bad layer) is not encoded again for every
        // device that asks: they get the full layer until a restart.
        if caller == Caller::Request && lock(&self.gate.failed).contains_key(key) {
            count(&counters.requests_cached);
            return Joined::Verdict(DeltaOutcome::NotWorth { delta_bytes: None });
        }
        match in_flight.get(key) {
            Some(slot) => {
                count(&counters.requests_waited);
                Joined::Slot {
                    slot: slot.clone(),
                    leader: false,
                }
            }
            None => {
                count(&counters.requests_encoded);
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
            } => slot
                .verdict(None)
                .unwrap_or(Err(RegistryError::DeltaAbandoned)),
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
                self.counters
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
        let (deltas, key_owned, target_owned, base_owned, slot_owned) = (
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
                let _ = deltas.lead(&key_owned, &target_owned, &base_owned, &slot_owned);
            });
        if let Err(source) = spawned {
            let shared =
                SharedError::new(RegistryError::delta("start delta encode thread", source));
            self.post(key, slot, Err(shared.clone()));
            return Err(RegistryError::DeltaShared(shared));
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
            let gate = lock(&self.gate.encode_gate).take();
            if let Some(gate) = gate {
                let _ = gate.recv();
            }
        }
        let verdict = match self.encode_and_record(key, target, base) {
            Ok(outcome) => {
                lock(&self.gate.failed).remove(key);
                Ok(outcome)
            }
            Err(err) => {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                let shared = SharedError::new(err);
                lock(&self.gate.failed).insert(key.to_string(), shared.clone());
                Err(shared)
            }
        };
        self.post(key, slot, verdict.clone());
        verdict.map_err(RegistryError::DeltaShared)
    }

    /// Publishes a verdict to the slot's waiters and takes the pair out of flight (the
    /// record, if any, is already written).
    fn post(&self, key: &str, slot: &Slot, verdict: Result<DeltaOutcome, SharedError>) {
        *lock(&slot.verdict) = Some(verdict);
        slot.done.notify_all();
        lock(&self.gate.in_flight).remove(key);
    }

    fn encode_and_record(
        &self,
        key: &str,
        target: &LayerRef,
        base: &LayerRef,
    ) -> Result<DeltaOutcome, RegistryError> {
        let outcome = self.encode(target, base)?;
        let full = self.blobs.size_of(&target.blob).unwrap_or(0);
        self.counters.count_encode(&outcome, full);
        let record = self.records.join(key);
        crate::datadir::write_public(&record, outcome.record().as_bytes()).map_err(|err| {
            RegistryError::delta(format!("record delta {}", record.display()), err)
        })?;
        Ok(outcome)
    }

    /// A stored verdict, if any (a delta whose blob is gone counts as none: encode again).
    pub(super) fn read_record(&self, key: &str) -> Option<DeltaOutcome> {
        let text = std::fs::read_to_string(self.records.join(key)).ok()?;
        let text = text.trim();
        if let Some(rest) = text.strip_prefix(NO_DELTA) {
            return Some(DeltaOutcome::NotWorth {
                delta_bytes: rest.trim().parse().ok(),
            });
        }
        let digest: Digest = text.parse().ok()?;
        let bytes = self.blobs.size_of(&digest)?;
        Some(DeltaOutcome::Delta { digest, bytes })
    }

    /// The delta blobs the stored verdicts name (kept by the registry's GC).
    pub(in crate::registry) fn recorded_blobs(&self) -> Result<Vec<Digest>, RegistryError> {
        let entries = std::fs::read_dir(&self.records)
            .map_err(crate::registry::io("list deltas", &self.records))?;
        Ok(entries
            .filter_map(|e| {
                let text = std::fs::read_to_string(e.ok()?.path()).ok()?;
                text.split_whitespace().next()?.parse().ok()
            })
            .collect())
    }

    /// Where the pair (target, base) stands.
    pub fn pair_state(&self, target: &Digest, base: &Digest) -> PairState {
        let key = pair_key(target, base);
        if let Some(outcome) = self.read_record(&key) {
            return PairState::Done(outcome);
        }
        if lock(&self.gate.in_flight).contains_key(&key) {
            return PairState::Computing;
        }
        if self.queue.contains(&key) {
            return PairState::Queued;
        }
        match lock(&self.gate.failed).get(&key) {
            Some(failure) => PairState::Failed(crate::api::error::error_chain(failure)),
            None => PairState::NotPlanned,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::registry::{BlobDigest, BlobStore};

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

    /// Deltas over a blob store holding two versions of one 256 KiB layer (uncompressed
    /// tars, so the blob digest is the diff_id), 100 bytes apart.
    fn deltas_with_two_versions(dir: &std::path::Path) -> (Deltas, LayerRef, LayerRef) {
        let blobs = BlobStore::open(dir.join("blobs"), dir.join("uploads")).unwrap();
        let deltas = Deltas::open(blobs.clone(), dir.join("repos"), dir.join("deltas")).unwrap();
        let old = noise(256 << 10, 1);
        let mut new = old.clone();
        new[1000..1100].copy_from_slice(&noise(100, 2));
        let put = |content: &[u8]| {
            let tar = layer_tar(content);
            let digest = Digest::of(&tar);
            blobs
                .import_blocking(&BlobDigest::from(digest), tar.len() as u64, &mut &tar[..])
                .unwrap();
            LayerRef {
                diff_id: digest,
                blob: digest,
            }
        };
        let (base, target) = (put(&old), put(&new));
        (deltas, target, base)
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
        let (deltas, target, base) = deltas_with_two_versions(dir.path());
        let (release, gate) = std::sync::mpsc::channel();
        *lock(&deltas.gate.encode_gate) = Some(gate);
        // The background worker starts the encode, which the gate holds in flight.
        let worker = {
            let (deltas, target, base) = (deltas.clone(), target.clone(), base.clone());
            std::thread::spawn(move || deltas.delta_once(&target, &base, Caller::Background))
        };
        until("the encode in flight", || deltas.metrics().in_flight == 1);
        let request = {
            let (deltas, target, base) = (deltas.clone(), target.clone(), base.clone());
            std::thread::spawn(move || deltas.delta_within(&target, &base, Duration::from_secs(60)))
        };
        until("the request waiting", || {
            deltas.metrics().requests_waited == 1
        });
        release.send(()).unwrap();
        let served = request.join().unwrap().unwrap();
        assert!(
            matches!(served, Some(DeltaOutcome::Delta { bytes, .. }) if bytes < 10_000),
            "{served:?}"
        );
        assert_eq!(Some(worker.join().unwrap().unwrap()), served);
        let metrics = deltas.metrics();
        assert_eq!((metrics.encoded, metrics.requests_timed_out), (1, 0));
        // The verdict is on disk: asked again, nothing is encoded.
        assert_eq!(
            deltas.pair_state(&target.diff_id, &base.diff_id),
            PairState::Done(served.unwrap())
        );
    }

    #[test]
    fn a_request_whose_encode_outlasts_the_wait_gets_the_full_layer_and_the_next_the_delta() {
        let dir = tempfile::tempdir().unwrap();
        let (deltas, target, base) = deltas_with_two_versions(dir.path());
        let (release, gate) = std::sync::mpsc::channel();
        *lock(&deltas.gate.encode_gate) = Some(gate);
        // Nothing encoded yet: the request starts the encode, which the gate holds past
        // the request's wait.
        let first = deltas
            .delta_within(&target, &base, Duration::from_millis(50))
            .unwrap();
        assert_eq!(first, None, "not ready within the wait: the full layer");
        let metrics = deltas.metrics();
        assert_eq!((metrics.requests_timed_out, metrics.in_flight), (1, 1));
        assert_eq!(
            deltas.pair_state(&target.diff_id, &base.diff_id),
            PairState::Computing
        );
        // The encode goes on without the request; the next device gets its delta.
        release.send(()).unwrap();
        let next = deltas
            .delta_within(&target, &base, Duration::from_secs(60))
            .unwrap();
        assert!(matches!(next, Some(DeltaOutcome::Delta { .. })), "{next:?}");
        until("the encode to leave the in-flight map", || {
            deltas.metrics().in_flight == 0
        });
        assert_eq!(deltas.metrics().encoded, 1);
    }
    #[test]
    fn a_failed_encode_reaches_every_waiter_with_its_causes() {
        let dir = tempfile::tempdir().unwrap();
        let (deltas, target, _) = deltas_with_two_versions(dir.path());
        // A base whose blob is no tar: unpacking it fails.
        let garbage = noise(4096, 3);
        let digest = Digest::of(&garbage);
        deltas
            .blobs
            .import_blocking(&BlobDigest::from(digest), 4096, &mut &garbage[..])
            .unwrap();
        let base = LayerRef {
            diff_id: digest,
            blob: digest,
        };
        let (release, gate) = std::sync::mpsc::channel();
        *lock(&deltas.gate.encode_gate) = Some(gate);
        let leader = {
            let (deltas, target, base) = (deltas.clone(), target.clone(), base.clone());
            std::thread::spawn(move || deltas.delta_once(&target, &base, Caller::Background))
        };
        until("the encode in flight", || deltas.metrics().in_flight == 1);
        let follower = {
            let (deltas, target, base) = (deltas.clone(), target.clone(), base.clone());
            std::thread::spawn(move || deltas.delta_within(&target, &base, Duration::from_secs(60)))
        };
        until("the request waiting", || {
            deltas.metrics().requests_waited == 1
        });
        release.send(()).unwrap();
        let led = leader.join().unwrap().unwrap_err();
        let followed = follower.join().unwrap().unwrap_err();
        let chain = crate::api::error::error_chain(&led);
        assert!(chain.contains("unpack base"), "{chain}");
        assert!(
            std::error::Error::source(&led).is_some(),
            "the cause is kept as a source: {led:?}"
        );
        assert_eq!(crate::api::error::error_chain(&followed), chain);
        assert_eq!(
            deltas.pair_state(&target.diff_id, &base.diff_id),
            PairState::Failed(chain)
        );
        assert_eq!(deltas.metrics().failed, 1);
    }
}
