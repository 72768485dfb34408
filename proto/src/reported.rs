//! `ReportedState`: what a device observes, published retained on change.

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::ids::{DeviceId, Generation, ServiceName};
use crate::signed::KeyId;

/// The device's view of itself, compared by the controller with what it asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportedState {
    pub device: DeviceId,
    /// The last generation the device verified and committed (0: none yet).
    pub applied: Generation,
    pub update: UpdateStatus,
    pub services: Vec<ServiceStatus>,
    /// diff_ids of the layers in the device's store, so the controller can pick delta bases.
    pub layers: Vec<Digest>,
    pub conditions: Vec<Condition>,
    pub agent_version: String,
    /// The platform the device runs images of, as OCI spells it (`linux/arm64`,
    /// `linux/arm/v7`); the controller refuses to deploy images without it. Empty in states
    /// stored before devices reported it.
    #[serde(default)]
    pub platform: String,
    /// Hex of the device's X25519 sealing key (see `sealed`): the controller seals pull
    /// credentials for direct registries to it. Empty until the device reports one.
    #[serde(default)]
    pub sealing_key: String,
    /// Which deployment key and pull token the device holds now, so the controller can list
    /// who has followed a rotation. All zero from agents before it was reported.
    #[serde(default)]
    pub credentials: HeldCredentials,
}

/// The credentials a device holds, by epoch (see `key_rollover` and the registry's pull
/// tokens); epoch 0 is what its bootstrap file carried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldCredentials {
    /// Epoch of the deployment key it verifies desired states with.
    pub deployment_key_epoch: u32,
    /// Short id of that key (`None` from agents that did not report it).
    pub deployment_key: Option<KeyId>,
    /// Epoch of the registry pull token it pulls with.
    pub pull_token_epoch: u32,
}

/// The layout of [`ReportedState`] before `credentials`; see [`ReportedState::decode`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportedStateV3 {
    pub device: DeviceId,
    pub applied: Generation,
    pub update: UpdateStatus,
    pub services: Vec<ServiceStatus>,
    pub layers: Vec<Digest>,
    pub conditions: Vec<Condition>,
    pub agent_version: String,
    pub platform: String,
    pub sealing_key: String,
}

impl From<ReportedStateV3> for ReportedState {
    fn from(old: ReportedStateV3) -> Self {
        Self {
            device: old.device,
            applied: old.applied,
            update: old.update,
            services: old.services,
            layers: old.layers,
            conditions: old.conditions,
            agent_version: old.agent_version,
            platform: old.platform,
            sealing_key: old.sealing_key,
            credentials: HeldCredentials::default(),
        }
    }
}

/// The layout of [`ReportedState`] before `sealing_key`, as agents older than direct
/// registries send it; see [`ReportedState::decode`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportedStateV2 {
    pub device: DeviceId,
    pub applied: Generation,
    pub update: UpdateStatus,
    pub services: Vec<ServiceStatus>,
    pub layers: Vec<Digest>,
    pub conditions: Vec<Condition>,
    pub agent_version: String,
    pub platform: String,
}

impl From<ReportedStateV2> for ReportedState {
    fn from(old: ReportedStateV2) -> Self {
        Self {
            device: old.device,
            applied: old.applied,
            update: old.update,
            services: old.services,
            layers: old.layers,
            conditions: old.conditions,
            agent_version: old.agent_version,
            platform: old.platform,
            sealing_key: String::new(),
            credentials: HeldCredentials::default(),
        }
    }
}

impl ReportedState {
    /// Decodes a coracle body holding a reported state, in the current layout or, when the
    /// body ends where a newer field would start, as older agents sent it (without
    /// `credentials`, then without `sealing_key` too).
    pub fn decode(body: &[u8]) -> Result<Self, crate::codec::DecodeError> {
        use crate::codec::ended_early;
        let current = crate::codec::decode::<Self>(body);
        if !ended_early(&current) {
            return current;
        }
        let v3 = crate::codec::decode::<ReportedStateV3>(body).map(Self::from);
        if !ended_early(&v3) {
            return v3;
        }
        crate::codec::decode::<ReportedStateV2>(body).map(Self::from)
    }
}

/// Where the device is in applying its latest desired state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum UpdateStatus {
    /// Running the applied generation; nothing pending.
    Idle,
    /// Pulling images or switching containers for this generation.
    Applying { generation: Generation },
    /// Switched; waiting for the health gate before committing.
    Verifying { generation: Generation },
    /// The generation failed its health gate; the previous one runs again. The agent does
    /// not retry this generation.
    RolledBack {
        generation: Generation,
        reason: String,
    },
    /// The generation could not be applied at all (e.g. no disk space, pull refused).
    Failed {
        generation: Generation,
        reason: String,
    },
}

/// One service's container as the device sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: ServiceName,
    /// Manifest digest of the image the container runs.
    pub image: Digest,
    pub state: ContainerState,
    pub restart_count: u32,
    pub last_exit_code: Option<i32>,
    /// The last exit was an OOM kill by the memory limit.
    pub oom_killed: bool,
    pub health: Health,
}

/// A container's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerState {
    /// Waiting for its image or its dependencies.
    Pending,
    Pulling,
    Created,
    Running,
    /// Exited and waiting for its restart backoff.
    Restarting,
    Exited,
    Stopped,
}

/// A container's health as its check reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Health {
    /// The service has no health check.
    #[default]
    None,
    /// Within the start period, no verdict yet.
    Starting,
    Healthy,
    Unhealthy,
}

/// Something about the device that limits what it can do, reported until it clears.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Condition {
    /// The kernel lacks a cgroup controller (Pi kernels ship with `memory` off), so limits
    /// that need it are not enforced.
    CgroupControllerMissing { controller: String },
    /// Free disk is below what a pending pull needs plus the reserve.
    DiskLow { free_bytes: u64, needed_bytes: u64 },
    /// The SoC reports under-voltage or thermal throttling (Raspberry Pi `get_throttled` bits).
    Throttled { flags: u32 },
    /// The agent tried `version` (an `AgentUpdate`) and went back to the build before it;
    /// it will not try that binary again. Controllers before over-the-air updates cannot
    /// decode it, but only a newer controller sends updates.
    AgentUpdateAbandoned { version: String, reason: String },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::samples;

    #[test]
    fn a_report_without_a_sealing_key_still_decodes() {
        let current = samples::reported_state(2);
        let old = ReportedStateV2 {
            device: current.device.clone(),
            applied: current.applied,
            update: current.update.clone(),
            services: current.services.clone(),
            layers: current.layers.clone(),
            conditions: current.conditions.clone(),
            agent_version: current.agent_version.clone(),
            platform: current.platform.clone(),
        };
        let decoded = ReportedState::decode(&crate::codec::encode(&old)).unwrap();
        assert_eq!(decoded, current);
        let mut keyed = current;
        keyed.sealing_key = "ab".repeat(32);
        let body = crate::codec::encode(&keyed);
        assert_eq!(ReportedState::decode(&body).unwrap(), keyed);
    }

    #[test]
    fn a_report_without_credentials_still_decodes() {
        let mut current = samples::reported_state(2);
        current.sealing_key = "cd".repeat(32);
        let old = ReportedStateV3 {
            device: current.device.clone(),
            applied: current.applied,
            update: current.update.clone(),
            services: current.services.clone(),
            layers: current.layers.clone(),
            conditions: current.conditions.clone(),
            agent_version: current.agent_version.clone(),
            platform: current.platform.clone(),
            sealing_key: current.sealing_key.clone(),
        };
        assert_eq!(
            ReportedState::decode(&crate::codec::encode(&old)).unwrap(),
            current
        );
        current.credentials = HeldCredentials {
            deployment_key_epoch: 3,
            deployment_key: Some(KeyId([7; 8])),
            pull_token_epoch: 12,
        };
        let body = crate::codec::encode(&current);
        assert_eq!(ReportedState::decode(&body).unwrap(), current);
        // A body cut inside the credentials is an error, not an older layout.
        assert!(ReportedState::decode(&body[..body.len() - 1]).is_err());
    }
}
