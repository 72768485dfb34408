//! The deploy policy: which host paths an app may bind, which capabilities it may add,
//! which host devices it may pass, which host ports below 1024 it may publish, whether it
//! may use the host's network or run privileged — per device, from `[policy]` in the serve config widened by the
//! `[[policy.allow]]` entries whose tag or device id matches. The API checks it before a
//! deploy is stored (`api/deploy.rs`) and for every selected device when a rollout is
//! created (`rollout/control.rs`); a refusal is a 403 `policy_refused` naming the device,
//! the service, the key, the value and the rule.
//!
//! `config` reads and normalises the section, `paths` compares host paths, `rules` checks a
//! service, `request` is what is judged. All pure: the store lookup of a device's tags is
//! `Fleet::check_policy`'s.

pub mod config;
pub mod paths;
pub mod request;
pub mod rules;

use std::collections::BTreeMap;

use coracle_proto::DeviceId;

pub use config::{AllowEntry, Grants, PolicySection, Scope};
pub use request::{host_network_services, AppRequest};
pub use rules::Refusal;

/// The compiled policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    base: Grants,
    entries: Vec<(Scope, Grants)>,
}

/// A device's app was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the deploy policy refuses the app for device {device}")]
pub struct PolicyRefusal {
    pub device: DeviceId,
    #[source]
    pub refusal: Refusal,
}

impl Policy {
    /// Compiles `[policy]` (normalised paths, canonical capability names).
    pub fn new(section: &PolicySection) -> Result<Self, crate::config::ConfigError> {
        let (base, entries) = section.compile()?;
        Ok(Self { base, entries })
    }

    /// The grants in force for a device: the base's and every matching entry's.
    pub fn grants_for(&self, device: &DeviceId, tags: &BTreeMap<String, String>) -> Grants {
        let mut grants = self.base.clone();
        for (scope, more) in &self.entries {
            if scope.covers(device, tags) {
                grants.widen(more);
            }
        }
        grants
    }

    /// Whether a non-admin caller may exec into the device with `tags` (`exec = true` in
    /// `[policy]` or a matching `[[policy.allow]]`).
    pub fn allows_exec(&self, device: &DeviceId, tags: &BTreeMap<String, String>) -> bool {
        self.grants_for(device, tags).exec
    }

    /// Checks every service of `app` for the device with `tags`.
    pub fn check(
        &self,
        device: &DeviceId,
        tags: &BTreeMap<String, String>,
        app: &AppRequest<'_>,
    ) -> Result<(), PolicyRefusal> {
        let grants = self.grants_for(device, tags);
        for service in app.services {
            rules::check_service(&grants, service, app.asks_host_network(service)).map_err(
                |refusal| PolicyRefusal {
                    device: device.clone(),
                    refusal,
                },
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
