//! The layouts of [`DesiredState`] written by older builds, for decoding their bytes.
//! postcard has no field defaults, so each field added to the wire (`registries`, then
//! `ServiceSpec::seccomp`, `ServiceSpec::lifecycle`, `ServiceSpec::tuning`) needs the
//! layout before it (later settings are new `Tuning` variants, which need none):
//!
//! | layout | `ServiceSpec` | `DesiredState::registries` |
//! |---|---|---|
//! | [`DesiredStateV1`] | [`ServiceSpecV1`] | absent |
//! | [`DesiredStateV2`] | [`ServiceSpecV1`] | present |
//! | [`DesiredStateV3`] | [`ServiceSpecV2`] (with `seccomp`) | present |
//! | [`DesiredStateV4`] | [`ServiceSpecV3`] (with `seccomp` and `lifecycle`) | present |
//! | current | with `seccomp`, `lifecycle` and `tuning` | present |
//!
//! [`decode_desired`] tries the current layout, then V4, V3, V2, V1. Bytes of one layout do not
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
#[cfg(test)]
use crate::tuning::Tuning;

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

/// [`ServiceSpec`] with `seccomp` and `lifecycle`, before `tuning`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpecV3 {
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
    pub lifecycle: Lifecycle,
}

/// [`DesiredState`] with [`ServiceSpecV3`] services (before `tuning`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredStateV4 {
    pub device: DeviceId,
    pub generation: Generation,
    pub services: Vec<ServiceSpecV3>,
    pub registries: Vec<RegistryAccess>,
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
            tuning: Vec::new(),
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
            tuning: Vec::new(),
        }
    }
}

impl From<ServiceSpecV3> for ServiceSpec {
    fn from(old: ServiceSpecV3) -> Self {
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
            lifecycle: old.lifecycle,
            tuning: Vec::new(),
        }
    }
}

impl ServiceSpec {
    /// The bytes older builds hashed for this service: the oldest layout that loses nothing
    /// of it (V1 with the default policy and lifecycle, V2 with the default lifecycle, V3
    /// without tuning), else the current one. The agent fingerprints these, so an upgraded
    /// agent adopts the containers it finds instead of replacing them.
    pub fn fingerprint_body(&self) -> Vec<u8> {
        if let Some(v1) = self.legacy_layout() {
            return crate::codec::encode(&v1);
        }
        if let Some(v2) = self.layout_v2() {
            return crate::codec::encode(&v2);
        }
        match self.layout_v3() {
            Some(v3) => crate::codec::encode(&v3),
            None => crate::codec::encode(self),
        }
    }

    /// The same service in the layout before `tuning`, when that loses nothing.
    pub fn layout_v3(&self) -> Option<ServiceSpecV3> {
        if !self.tuning.is_empty() {
            return None;
        }
        let s = self.clone();
        Some(ServiceSpecV3 {
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
            lifecycle: s.lifecycle,
        })
    }

    /// The same service in the layout before `lifecycle`, when that loses nothing.
    pub fn layout_v2(&self) -> Option<ServiceSpecV2> {
        if self.lifecycle != Lifecycle::default() || !self.tuning.is_empty() {
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
        if self.seccomp != SeccompPolicy::Default
            || self.lifecycle != Lifecycle::default()
            || !self.tuning.is_empty()
        {
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

impl From<DesiredStateV4> for DesiredState {
    fn from(old: DesiredStateV4) -> Self {
        Self {
            device: old.device,
            generation: old.generation,
            services: old.services.into_iter().map(ServiceSpec::from).collect(),
            registries: old.registries,
        }
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
    if let Ok(old) = decode::<DesiredStateV4>(body) {
        return Ok(old.into());
    }
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
    fn states_before_tuning_still_decode_and_tuning_round_trips() {
        for current in states() {
            let mut with_init = current.clone();
            with_init.services[0].lifecycle.init = true;
            let v4 = DesiredStateV4 {
                device: current.device.clone(),
                generation: current.generation,
                services: with_init
                    .services
                    .iter()
                    .map(|s| s.layout_v3().unwrap())
                    .collect(),
                registries: Vec::new(),
            };
            assert_eq!(decode_desired(&encode(&v4)).unwrap(), with_init);

            let mut tuned = with_init.clone();
            let last = tuned.services.len() - 1;
            tuned.services[last].tuning = vec![
                Tuning::Sysctl {
                    name: "net.core.somaxconn".into(),
                    value: "1024".into(),
                },
                Tuning::Ulimit {
                    name: "nofile".into(),
                    soft: 1024,
                    hard: 4096,
                },
                Tuning::OomScoreAdj(-500),
                Tuning::Hostname("gw".into()),
            ];
            let body = encode(&tuned);
            assert_eq!(decode_desired(&body).unwrap(), tuned);
            assert_truncation_changes_nothing(&body, &tuned);
        }
    }

    #[test]
    fn tuning_changes_the_fingerprint_and_none_keeps_the_old_one() {
        let mut spec = samples::desired_with_services(1).services.remove(0);
        spec.lifecycle.init = true;
        assert_eq!(spec.fingerprint_body(), encode(&spec.layout_v3().unwrap()));
        spec.tuning.push(Tuning::OomScoreAdj(100));
        assert!(spec.layout_v3().is_none() && spec.layout_v2().is_none());
        assert_eq!(spec.fingerprint_body(), encode(&spec));
        spec.lifecycle.init = false;
        assert!(spec.legacy_layout().is_none(), "tuning would be lost");
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
            assert_truncation_changes_nothing(&body, &state);
        }
    }

    /// A body cut short is an error, or (cut just before an empty trailing list, such as
    /// the last service's `tuning`) the very same state in the layout without that list:
    /// never a different state.
    fn assert_truncation_changes_nothing(body: &[u8], state: &DesiredState) {
        for cut in 1..=2 {
            if let Ok(decoded) = decode_desired(&body[..body.len() - cut]) {
                assert_eq!(&decoded, state, "cut {cut} bytes");
            }
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
        assert_eq!(spec.fingerprint_body(), encode(&spec.layout_v3().unwrap()));
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
