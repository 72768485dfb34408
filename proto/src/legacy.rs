//! The layouts of [`DesiredState`] written by older builds, for decoding their bytes.
//! postcard has no field defaults, so each field added to the wire (`registries`, then
//! `ServiceSpec::seccomp`, then `ServiceSpec::lifecycle`) needs the layout before it:
//!
//! | layout | `ServiceSpec` | `DesiredState::registries` |
//! |---|---|---|
//! | [`DesiredStateV1`] | [`ServiceSpecV1`] | absent |
//! | [`DesiredStateV2`] | [`ServiceSpecV1`] | present |
//! | [`DesiredStateV3`] | [`ServiceSpecV2`] (with `seccomp`) | present |
//! | current | with `seccomp` and `lifecycle` | present |
//!
//! [`decode_desired`] tries the current layout, then V3, V2, V1. Bytes of one layout do not
//! decode as another: an older body read as a newer layout runs out of bytes or meets a
//! service name where a policy tag or a lifecycle should be (its length byte is no policy
//! tag above 2 and no option tag above 1, and a 1- or 2-byte name leaves the rest
//! misaligned, which the validated ids refuse).

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::codec::{decode, DecodeError};
use crate::desired::{
    Dependency, DesiredState, DeviceMapping, HealthCheck, NetworkMode, RegistryAccess, Resources,
    RestartPolicy, ServiceSpec, UpdateStrategy, VolumeMount,
};
use crate::digest::ImageRef;
use crate::ids::{DeviceId, Generation, ServiceName};
use crate::lifecycle::Lifecycle;
use crate::seccomp::SeccompPolicy;

/// [`ServiceSpec`] before `seccomp`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpecV1 {
    pub name: ServiceName,
    pub image: ImageRef,
    pub entrypoint: Vec<String>,
    pub command: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub resources: Resources,
    pub restart: RestartPolicy,
    pub health: Option<HealthCheck>,
    pub volumes: Vec<VolumeMount>,
    pub devices: Vec<DeviceMapping>,
    pub network: NetworkMode,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub read_only_rootfs: bool,
    pub update: UpdateStrategy,
    pub depends_on: Vec<Dependency>,
}

/// [`ServiceSpec`] with `seccomp`, before `lifecycle`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpecV2 {
    pub name: ServiceName,
    pub image: ImageRef,
    pub entrypoint: Vec<String>,
    pub command: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub resources: Resources,
    pub restart: RestartPolicy,
    pub health: Option<HealthCheck>,
    pub volumes: Vec<VolumeMount>,
    pub devices: Vec<DeviceMapping>,
    pub network: NetworkMode,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub read_only_rootfs: bool,
    pub update: UpdateStrategy,
    pub depends_on: Vec<Dependency>,
    pub seccomp: SeccompPolicy,
}

/// [`DesiredState`] with [`ServiceSpecV2`] services (before `lifecycle`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredStateV3 {
    pub device: DeviceId,
    pub generation: Generation,
    pub services: Vec<ServiceSpecV2>,
    pub registries: Vec<RegistryAccess>,
}

/// [`DesiredState`] with [`ServiceSpecV1`] services and `registries`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredStateV2 {
    pub device: DeviceId,
    pub generation: Generation,
    pub services: Vec<ServiceSpecV1>,
    pub registries: Vec<RegistryAccess>,
}

/// [`DesiredState`] before `registries` existed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredStateV1 {
    pub device: DeviceId,
    pub generation: Generation,
    pub services: Vec<ServiceSpecV1>,
}

impl From<ServiceSpecV1> for ServiceSpec {
    fn from(old: ServiceSpecV1) -> Self {
        Self {
            name: old.name,
            image: old.image,
            entrypoint: old.entrypoint,
            command: old.command,
            env: old.env,
            working_dir: old.working_dir,
            user: old.user,
            resources: old.resources,
            restart: old.restart,
            health: old.health,
            volumes: old.volumes,
            devices: old.devices,
            network: old.network,
            cap_add: old.cap_add,
            cap_drop: old.cap_drop,
            read_only_rootfs: old.read_only_rootfs,
            update: old.update,
            depends_on: old.depends_on,
            seccomp: SeccompPolicy::Default,
            lifecycle: Lifecycle::default(),
        }
    }
}

impl From<ServiceSpecV2> for ServiceSpec {
    fn from(old: ServiceSpecV2) -> Self {
        Self {
            name: old.name,
            image: old.image,
            entrypoint: old.entrypoint,
            command: old.command,
            env: old.env,
            working_dir: old.working_dir,
            user: old.user,
            resources: old.resources,
            restart: old.restart,
            health: old.health,
            volumes: old.volumes,
            devices: old.devices,
            network: old.network,
            cap_add: old.cap_add,
            cap_drop: old.cap_drop,
            read_only_rootfs: old.read_only_rootfs,
            update: old.update,
            depends_on: old.depends_on,
            seccomp: old.seccomp,
            lifecycle: Lifecycle::default(),
        }
    }
}

impl ServiceSpec {
    /// The bytes older builds hashed for this service: the oldest layout that loses nothing
    /// of it (V1 with the default policy and lifecycle, V2 with the default lifecycle),
    /// else the current one. The agent fingerprints these, so an upgraded agent adopts the
    /// containers it finds instead of replacing them.
    pub fn fingerprint_body(&self) -> Vec<u8> {
        if let Some(v1) = self.legacy_layout() {
            return crate::codec::encode(&v1);
        }
        match self.layout_v2() {
            Some(v2) => crate::codec::encode(&v2),
            None => crate::codec::encode(self),
        }
    }

    /// The same service in the layout before `lifecycle`, when that loses nothing.
    pub fn layout_v2(&self) -> Option<ServiceSpecV2> {
        if self.lifecycle != Lifecycle::default() {
            return None;
        }
        let s = self.clone();
        Some(ServiceSpecV2 {
            name: s.name,
            image: s.image,
            entrypoint: s.entrypoint,
            command: s.command,
            env: s.env,
            working_dir: s.working_dir,
            user: s.user,
            resources: s.resources,
            restart: s.restart,
            health: s.health,
            volumes: s.volumes,
            devices: s.devices,
            network: s.network,
            cap_add: s.cap_add,
            cap_drop: s.cap_drop,
            read_only_rootfs: s.read_only_rootfs,
            update: s.update,
            depends_on: s.depends_on,
            seccomp: s.seccomp,
        })
    }

    /// The same service in the layout before `seccomp`, when that loses nothing (the
    /// default policy and lifecycle).
    pub fn legacy_layout(&self) -> Option<ServiceSpecV1> {
        if self.seccomp != SeccompPolicy::Default || self.lifecycle != Lifecycle::default() {
            return None;
        }
        let s = self.clone();
        Some(ServiceSpecV1 {
            name: s.name,
            image: s.image,
            entrypoint: s.entrypoint,
            command: s.command,
            env: s.env,
            working_dir: s.working_dir,
            user: s.user,
            resources: s.resources,
            restart: s.restart,
            health: s.health,
            volumes: s.volumes,
            devices: s.devices,
            network: s.network,
            cap_add: s.cap_add,
            cap_drop: s.cap_drop,
            read_only_rootfs: s.read_only_rootfs,
            update: s.update,
            depends_on: s.depends_on,
        })
    }
}

impl From<DesiredStateV3> for DesiredState {
    fn from(old: DesiredStateV3) -> Self {
        Self {
            device: old.device,
            generation: old.generation,
            services: old.services.into_iter().map(ServiceSpec::from).collect(),
            registries: old.registries,
        }
    }
}

impl From<DesiredStateV2> for DesiredState {
    fn from(old: DesiredStateV2) -> Self {
        Self {
            device: old.device,
            generation: old.generation,
            services: old.services.into_iter().map(ServiceSpec::from).collect(),
            registries: old.registries,
        }
    }
}

impl From<DesiredStateV1> for DesiredState {
    fn from(old: DesiredStateV1) -> Self {
        DesiredStateV2 {
            device: old.device,
            generation: old.generation,
            services: old.services,
            registries: Vec::new(),
        }
        .into()
    }
}

/// A coracle body holding a desired state in any layout; the current layout's error when
/// none fits.
pub fn decode_desired(body: &[u8]) -> Result<DesiredState, DecodeError> {
    let current = match decode::<DesiredState>(body) {
        Ok(state) => return Ok(state),
        // Not a layout question: the body is no coracle body at all.
        Err(err @ (DecodeError::Empty | DecodeError::TooLarge { .. })) => return Err(err),
        Err(err @ DecodeError::UnsupportedVersion { .. }) => return Err(err),
        Err(err) => err,
    };
    if let Ok(old) = decode::<DesiredStateV3>(body) {
        return Ok(old.into());
    }
    if let Ok(old) = decode::<DesiredStateV2>(body) {
        return Ok(old.into());
    }
    if let Ok(old) = decode::<DesiredStateV1>(body) {
        return Ok(old.into());
    }
    Err(current)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::encode;
    use crate::samples;
    use crate::seccomp::{SeccompAction, SeccompProfile};

    fn old_services(state: &DesiredState) -> Vec<ServiceSpecV1> {
        state
            .services
            .iter()
            .map(|s| s.legacy_layout().unwrap())
            .collect()
    }

    /// Services named 1, 2 and more characters: a name's length byte is where a newer
    /// layout looks for the seccomp policy's tag.
    fn states() -> Vec<DesiredState> {
        let mut out = Vec::new();
        for names in [&["a", "bb"][..], &["db", "web", "x"], &["gateway"]] {
            let mut state = samples::desired_with_services(names.len());
            for (service, name) in state.services.iter_mut().zip(names) {
                service.name = name.parse().unwrap();
                service.depends_on.clear();
            }
            out.push(state);
        }
        out
    }

    #[test]
    fn states_in_older_layouts_still_decode() {
        for current in states() {
            let v1 = DesiredStateV1 {
                device: current.device.clone(),
                generation: current.generation,
                services: old_services(&current),
            };
            assert_eq!(decode_desired(&encode(&v1)).unwrap(), current);
            let mut with_registry = current.clone();
            with_registry.registries.push(RegistryAccess {
                host: "lan:5000".into(),
                url: "http://lan:5000".into(),
                ca_pem: None,
                sealed_credentials: None,
            });
            let v2 = DesiredStateV2 {
                device: current.device.clone(),
                generation: current.generation,
                services: old_services(&current),
                registries: with_registry.registries.clone(),
            };
            assert_eq!(decode_desired(&encode(&v2)).unwrap(), with_registry);
            let mut unconfined = with_registry.clone();
            unconfined.services[0].seccomp = SeccompPolicy::Unconfined;
            let v3 = DesiredStateV3 {
                device: current.device.clone(),
                generation: current.generation,
                services: unconfined
                    .services
                    .iter()
                    .map(|s| s.layout_v2().unwrap())
                    .collect(),
                registries: with_registry.registries.clone(),
            };
            assert_eq!(decode_desired(&encode(&v3)).unwrap(), unconfined);
            let v3_plain = DesiredStateV3 {
                registries: Vec::new(),
                ..v3
            };
            let mut plain = unconfined.clone();
            plain.registries.clear();
            assert_eq!(decode_desired(&encode(&v3_plain)).unwrap(), plain);
        }
    }

    #[test]
    fn the_current_layout_round_trips_every_lifecycle() {
        for mut state in states() {
            let lifecycles = [
                Lifecycle {
                    stop_signal: Some(2),
                    stop_grace_ms: Some(90_000),
                    init: true,
                    min_uptime_ms: Some(0),
                },
                Lifecycle {
                    init: true,
                    ..Lifecycle::default()
                },
                Lifecycle::default(),
            ];
            for (service, lifecycle) in state.services.iter_mut().zip(lifecycles) {
                service.lifecycle = lifecycle;
            }
            let body = encode(&state);
            assert_eq!(decode_desired(&body).unwrap(), state);
            assert!(decode_desired(&body[..body.len() - 1]).is_err());
        }
    }

    #[test]
    fn a_default_lifecycle_fingerprints_in_the_layout_before_it() {
        let mut spec = samples::desired_with_services(1).services.remove(0);
        assert_eq!(
            spec.fingerprint_body(),
            encode(&spec.legacy_layout().unwrap())
        );
        spec.seccomp = SeccompPolicy::Unconfined;
        assert_eq!(spec.fingerprint_body(), encode(&spec.layout_v2().unwrap()));
        spec.lifecycle.init = true;
        assert!(spec.layout_v2().is_none() && spec.legacy_layout().is_none());
        assert_eq!(spec.fingerprint_body(), encode(&spec));
    }

    #[test]
    fn the_current_layout_round_trips_every_policy() {
        for mut state in states() {
            let profile = SeccompProfile {
                default_action: SeccompAction::Errno(1),
                rules: Vec::new(),
            };
            let policies = [
                SeccompPolicy::Unconfined,
                SeccompPolicy::Profile(profile),
                SeccompPolicy::Default,
            ];
            for (service, policy) in state.services.iter_mut().zip(policies) {
                service.seccomp = policy;
            }
            let body = encode(&state);
            assert_eq!(decode_desired(&body).unwrap(), state);
            // A truncated body is still an error, not an old state.
            assert!(decode_desired(&body[..body.len() / 2]).is_err());
        }
    }

    #[test]
    fn only_a_default_policy_has_a_legacy_layout() {
        let mut spec = samples::desired_with_services(1).services.remove(0);
        assert!(spec.legacy_layout().is_some());
        spec.seccomp = SeccompPolicy::Unconfined;
        assert!(spec.legacy_layout().is_none());
    }
}
