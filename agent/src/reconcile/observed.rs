//! What the supervisor observed, in the plain shapes the planner reads.

use std::collections::{BTreeMap, BTreeSet};

use coracle_proto::{Digest, Health, ServiceName, ServiceSpec};
use sha2::{Digest as _, Sha256};

/// Identity of the spec a container was created from: sha256 of the encoded
/// `ServiceSpec`. A container whose fingerprint differs from the desired spec is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fingerprint(pub [u8; 32]);

/// The fingerprint of a service spec (stable: postcard of a fixed type).
pub fn fingerprint(spec: &ServiceSpec) -> Fingerprint {
    Fingerprint(Sha256::digest(coracle_proto::encode(spec)).into())
}

/// A container's lifecycle phase as the runtime reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Created,
    Running {
        since_ms: u64,
    },
    Exited {
        code: i32,
        at_ms: u64,
        oom: bool,
    },
    /// Stopped by the agent or the operator; not restarted by `unless-stopped`.
    Stopped,
}

/// One container that exists on the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedContainer {
    pub fingerprint: Fingerprint,
    pub phase: Phase,
    pub health: Health,
    /// Restarts since it last ran long enough to count as stable (drives the backoff).
    pub restarts: u32,
    /// What its last failed health check said (an exec check's exit code and output tail),
    /// until a check passes: the health gate puts it in its rollback reason.
    pub last_failed_check: Option<String>,
}

/// Everything the planner needs to know about the device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    pub containers: BTreeMap<ServiceName, ObservedContainer>,
    /// Manifest digests of the images in the store.
    pub images: BTreeSet<Digest>,
    /// When the health gate of the pending generation started (monotonic ms), if it did.
    pub gate_started_ms: Option<u64>,
}
