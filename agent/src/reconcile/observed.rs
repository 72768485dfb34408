//! What the supervisor observed, in the plain shapes the planner reads.

use std::collections::{BTreeMap, BTreeSet};

use coracle_proto::{Digest, Health, ServiceName, ServiceSpec};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// Identity of the spec a container was created from: sha256 of the encoded
/// `ServiceSpec`. A container whose fingerprint differs from the desired spec is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fingerprint(pub [u8; 32]);

/// The fingerprint of a service spec (stable: postcard of a fixed type). A spec is hashed
/// in the oldest layout that holds all of it (`ServiceSpec::fingerprint_body`: with the
/// default seccomp policy and lifecycle, the layout before both existed), as older agents
/// hashed it, so an upgraded agent adopts their containers instead of replacing them.
pub fn fingerprint(spec: &ServiceSpec) -> Fingerprint {
    Fingerprint(Sha256::digest(spec.fingerprint_body()).into())
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
    /// What the container said when it last ended: why its start failed, else the tail of
    /// its output. The gate puts it in its rollback reason.
    pub exit_detail: Option<String>,
}

/// Which of a service's containers: the one serving, the successor a `start-first` update
/// starts beside it, or the old one a promotion retired. The successor takes the service's
/// names and published ports when it is up (`Action::Promote`); the retired container then
/// stops in its own job, which holds up neither the service nor its dependents.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub enum Role {
    #[default]
    Current,
    Next,
    Retired,
}

/// Everything the planner needs to know about the device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    pub containers: BTreeMap<ServiceName, ObservedContainer>,
    /// Successors started beside a serving container (`Role::Next`). They are never
    /// restarted: one that fails before it takes over is dropped, and the old one serves on.
    pub successors: BTreeMap<ServiceName, ObservedContainer>,
    /// Containers a promotion replaced, still stopping (`Role::Retired`).
    pub retired: BTreeMap<ServiceName, ObservedContainer>,
    /// Manifest digests of the images in the store.
    pub images: BTreeSet<Digest>,
    /// When the health gate of the pending generation started (monotonic ms), if it did.
    pub gate_started_ms: Option<u64>,
    /// Engine work in flight: the planner leaves these subjects alone until it ends.
    pub busy: Busy,
}

impl Observed {
    /// The containers in `role`, by service.
    pub fn of(&self, role: Role) -> &BTreeMap<ServiceName, ObservedContainer> {
        match role {
            Role::Current => &self.containers,
            Role::Next => &self.successors,
            Role::Retired => &self.retired,
        }
    }

    pub fn of_mut(&mut self, role: Role) -> &mut BTreeMap<ServiceName, ObservedContainer> {
        match role {
            Role::Current => &mut self.containers,
            Role::Next => &mut self.successors,
            Role::Retired => &mut self.retired,
        }
    }
}

/// The subjects of the supervisor's jobs still running (a pull, a service's stop-remove-
/// create-start chain, an image collection). Their containers and images are changing
/// under the observation, so nothing new is planned for them, for what depends on them,
/// or for the health gate, until the job reports back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Busy {
    pub services: BTreeSet<ServiceName>,
    /// Services whose retired container is being stopped and removed.
    pub retiring: BTreeSet<ServiceName>,
    pub images: BTreeSet<Digest>,
    pub gc: bool,
}

impl Busy {
    /// True when a pull is in flight.
    pub fn pulling(&self) -> bool {
        !self.images.is_empty()
    }
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
        // A lifecycle added to an unconfined spec: the layout before lifecycles, then not.
        let v2 = unconfined.layout_v2().unwrap();
        let before_lifecycle = Fingerprint(Sha256::digest(coracle_proto::encode(&v2)).into());
        assert_eq!(fingerprint(&unconfined), before_lifecycle);
        let mut with_init = unconfined.clone();
        with_init.lifecycle.init = true;
        assert_ne!(fingerprint(&with_init), before_lifecycle);
    }
}
