//! What the supervisor observed, in the plain shapes the planner reads.

use std::collections::{BTreeMap, BTreeSet};

use coracle_proto::{Digest, Health, ServiceName, ServiceSpec};
use sha2::{Digest as _, Sha256};

/// Identity of the spec a container was created from: sha256 of the encoded
/// `ServiceSpec`. A container whose fingerprint differs from the desired spec is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fingerprint(pub [u8; 32]);

/// The fingerprint of a service spec (stable: postcard of a fixed type). A spec with the
/// default seccomp policy is hashed in the layout before `seccomp` existed, as older agents
/// hashed it, so an upgraded agent adopts their containers instead of replacing them.
pub fn fingerprint(spec: &ServiceSpec) -> Fingerprint {
    let body = match spec.legacy_layout() {
        Some(old) => coracle_proto::encode(&old),
        None => coracle_proto::encode(spec),
    };
    Fingerprint(Sha256::digest(body).into())
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

#[cfg(test)]
mod tests {
    use super::*;
    use coracle_proto::{samples, SeccompPolicy};

    #[test]
    fn a_default_policy_fingerprints_as_older_agents_did_and_a_policy_change_replaces() {
        let spec = samples::desired_with_services(1).services.remove(0);
        let old = spec.legacy_layout().unwrap();
        let before = Fingerprint(Sha256::digest(coracle_proto::encode(&old)).into());
        assert_eq!(fingerprint(&spec), before);
        let mut unconfined = spec.clone();
        unconfined.seccomp = SeccompPolicy::Unconfined;
        assert_ne!(fingerprint(&unconfined), before);
    }
}
