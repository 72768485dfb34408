//! Delta layers: a device asks for a layer it lacks together with the layers it holds, and
//! gets a delta from the best of them when one pays (else a 404, and it pulls the layer).
//!
//! Where to read, in the order a request goes:
//! - `request.rs` — the endpoint's side: `have` parsing, the base choice, the wait bound.
//! - `catalogue.rs` — a repository's images as layer lists (`LayerRef`), cached per
//!   repository until its manifests change; `choose_base`, `plan_pairs`.
//! - `gate.rs` — one encode per (target, base) pair however many ask at once; verdicts
//!   recorded on disk (`DeltaOutcome`), so a pair is encoded at most once per data dir.
//! - `encode.rs` — the encode itself: unpack the base, encode, keep the blob if smaller.
//! - `queue.rs`, `workers.rs` — the background encoders (nice 19) and their queue/counters.
//! - `report.rs` — what the image listing shows per tag (`LayerDelta`).

mod catalogue;
mod encode;
mod gate;
mod queue;
mod report;
mod request;
mod workers;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use coracle_images::Digest;

pub use gate::{DeltaOutcome, PairState};
pub use queue::DeltaMetrics;
pub use report::LayerDelta;
pub use request::parse_have;
pub use workers::WorkerSettings;

use super::{BlobStore, RegistryError};

/// How long a delta request waits for an encode unless configured.
pub const DEFAULT_DELTA_WAIT: Duration = Duration::from_secs(20);

/// The delta subsystem of one registry, shared by its clones.
#[derive(Debug, Clone)]
pub struct Deltas {
    blobs: BlobStore,
    /// `repos/` of the registry's layout: the catalogue reads each repository's manifests.
    repos: PathBuf,
    /// Verdict records per (target, base) pair; the deltas themselves are blobs.
    records: PathBuf,
    /// Pairs in flight and pairs that failed in this run.
    gate: Arc<gate::Gate>,
    /// The background encoders' work.
    queue: Arc<queue::Queue>,
    counters: Arc<queue::DeltaCounters>,
    catalogues: Arc<catalogue::Catalogues>,
    /// How long a device's request waits for its pair's encode.
    wait: Duration,
}

impl Deltas {
    /// The delta state under `records`, reading images from `repos` and `blobs`.
    pub(super) fn open(
        blobs: BlobStore,
        repos: PathBuf,
        records: PathBuf,
    ) -> Result<Self, RegistryError> {
        std::fs::create_dir_all(&records).map_err(super::io("create deltas dir", &records))?;
        Ok(Self {
            blobs,
            repos,
            records,
            gate: Arc::default(),
            queue: Arc::default(),
            counters: Arc::default(),
            catalogues: Arc::default(),
            wait: DEFAULT_DELTA_WAIT,
        })
    }

    pub(super) fn set_wait(&mut self, wait: Duration) {
        self.wait = wait;
    }

    /// `repository` has a new tag (a push, an import): forget its catalogue and ask the
    /// background workers (if started) to plan its pairs again.
    pub fn plan(&self, repository: &str) {
        self.forget(repository);
        self.queue.plan(repository);
    }

    /// `repository`'s manifests changed: its catalogue is read again on next use.
    pub fn forget(&self, repository: &str) {
        self.catalogues.forget(repository);
    }

    pub fn metrics(&self) -> DeltaMetrics {
        DeltaMetrics::read(&self.counters, self.queue.len(), self.gate.in_flight())
    }
}

/// The pair's record name. The delta format version is part of it, so a delta cached by a
/// build with another format is not served (it is encoded again).
fn pair_key(target: &Digest, base: &Digest) -> String {
    format!(
        "{}-{}.v{}",
        target.hex(),
        base.hex(),
        coracle_images::delta::FORMAT_VERSION
    )
}
