//! Semantic checks of a `DesiredState` that the type system cannot express: unique service
//! names, dependencies that exist and form no cycle, sane limits.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use crate::desired::{DesiredState, HealthProbe, ServiceSpec};
use crate::ids::ServiceName;
use crate::seccomp::{ProfileError, SeccompPolicy};

/// Why a desired state is inconsistent; each names the service at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidDesired {
    #[error("service {service} is listed twice")]
    DuplicateService { service: ServiceName },
    #[error("service {service} depends on {dependency}, which is not in the desired state")]
    UnknownDependency {
        service: ServiceName,
        dependency: ServiceName,
    },
    #[error("service {service} is part of a depends_on cycle")]
    DependencyCycle { service: ServiceName },
    #[error("service {service}: {field} must be {rule}")]
    Field {
        service: ServiceName,
        field: &'static str,
        rule: &'static str,
    },
    #[error("service {service}: path {path:?} must be absolute")]
    RelativePath { service: ServiceName, path: String },
    #[error("registry {host}: {rule}")]
    Registry { host: String, rule: &'static str },
    #[error("service {service}: seccomp profile")]
    SeccompProfile {
        service: ServiceName,
        #[source]
        source: ProfileError,
    },
}

impl DesiredState {
    /// Checks the state as a whole; the device runs this after verifying the signature.
    pub fn validate(&self) -> Result<(), InvalidDesired> {
        let mut index = BTreeMap::new();
        for (i, service) in self.services.iter().enumerate() {
            if index.insert(&service.name, i).is_some() {
                return Err(InvalidDesired::DuplicateService {
                    service: service.name.clone(),
                });
            }
            validate_service(service)?;
        }
        for service in &self.services {
            for dep in &service.depends_on {
                if !index.contains_key(&dep.service) {
                    return Err(InvalidDesired::UnknownDependency {
                        service: service.name.clone(),
                        dependency: dep.service.clone(),
                    });
                }
            }
        }
        self.validate_registries()?;
        self.start_order().map(|_| ())
    }

    /// Direct registries: named once, non-empty, reached over http(s).
    fn validate_registries(&self) -> Result<(), InvalidDesired> {
        for (i, access) in self.registries.iter().enumerate() {
            let bad = |rule| InvalidDesired::Registry {
                host: access.host.clone(),
                rule,
            };
            if access.host.is_empty() {
                return Err(bad("host must not be empty"));
            }
            if self.registries[..i].iter().any(|a| a.host == access.host) {
                return Err(bad("is listed twice"));
            }
            if !(access.url.starts_with("https://") || access.url.starts_with("http://")) {
                return Err(bad("url must start with http:// or https://"));
            }
        }
        Ok(())
    }

    /// Indexes of the services in an order where every service comes after the ones it
    /// depends on (Kahn's algorithm; ties keep the listed order).
    pub fn start_order(&self) -> Result<Vec<usize>, InvalidDesired> {
        let index: BTreeMap<&ServiceName, usize> = self
            .services
            .iter()
            .enumerate()
            .map(|(i, s)| (&s.name, i))
            .collect();
        let mut pending: Vec<usize> = vec![0; self.services.len()];
        for (i, service) in self.services.iter().enumerate() {
            pending[i] = service
                .depends_on
                .iter()
                .filter(|d| index.contains_key(&d.service))
                .count();
        }
        let mut order = Vec::with_capacity(self.services.len());
        let mut done = vec![false; self.services.len()];
        while order.len() < self.services.len() {
            let Some(next) = (0..self.services.len()).find(|&i| !done[i] && pending[i] == 0) else {
                let stuck = (0..self.services.len()).find(|&i| !done[i]).unwrap_or(0);
                return Err(InvalidDesired::DependencyCycle {
                    service: self.services[stuck].name.clone(),
                });
            };
            done[next] = true;
            order.push(next);
            let name = &self.services[next].name;
            for (i, service) in self.services.iter().enumerate() {
                pending[i] -= service
                    .depends_on
                    .iter()
                    .filter(|d| &d.service == name)
                    .count();
            }
        }
        Ok(order)
    }
}

fn validate_service(service: &ServiceSpec) -> Result<(), InvalidDesired> {
    let field = |field, rule| InvalidDesired::Field {
        service: service.name.clone(),
        field,
        rule,
    };
    if let SeccompPolicy::Profile(profile) = &service.seccomp {
        profile
            .validate()
            .map_err(|source| InvalidDesired::SeccompProfile {
                service: service.name.clone(),
                source,
            })?;
    }
    let r = &service.resources;
    if r.cpu_millicores == Some(0) {
        return Err(field("cpus", "greater than 0"));
    }
    if r.memory_max_bytes.is_some_and(|m| m < 1 << 20) {
        return Err(field("mem_limit", "at least 1 MiB"));
    }
    if let (Some(max), Some(swap)) = (r.memory_max_bytes, r.memory_swap_max_bytes) {
        if swap < max {
            return Err(field("memswap_limit", "at least mem_limit"));
        }
    }
    if r.cpu_weight.is_some_and(|w| !(1..=10_000).contains(&w)) {
        return Err(field("cpu_weight", "between 1 and 10000"));
    }
    if r.io_weight.is_some_and(|w| !(1..=10_000).contains(&w)) {
        return Err(field("io_weight", "between 1 and 10000"));
    }
    if r.pids_max == Some(0) {
        return Err(field("pids_limit", "greater than 0"));
    }
    if let Some(health) = &service.health {
        if health.interval_ms == 0 || health.timeout_ms == 0 {
            return Err(field(
                "healthcheck",
                "given a non-zero interval and timeout",
            ));
        }
        match &health.probe {
            HealthProbe::Exec(argv) if argv.is_empty() => {
                return Err(field("healthcheck.test", "a non-empty command"))
            }
            HealthProbe::Http { port: 0, .. } | HealthProbe::Tcp { port: 0 } => {
                return Err(field("healthcheck.port", "between 1 and 65535"))
            }
            _ => {}
        }
    }
    let absolute = |path: &String| -> Result<(), InvalidDesired> {
        if path.starts_with('/') {
            Ok(())
        } else {
            Err(InvalidDesired::RelativePath {
                service: service.name.clone(),
                path: path.clone(),
            })
        }
    };
    for volume in &service.volumes {
        absolute(&volume.target)?;
    }
    for device in &service.devices {
        absolute(&device.host_path)?;
        absolute(&device.container_path)?;
        if device.permissions.is_empty()
            || !device
                .permissions
                .chars()
                .all(|c| matches!(c, 'r' | 'w' | 'm'))
        {
            return Err(field(
                "devices.permissions",
                "a non-empty subset of \"rwm\"",
            ));
        }
    }
    if service.depends_on.iter().any(|d| d.service == service.name) {
        return Err(InvalidDesired::DependencyCycle {
            service: service.name.clone(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{Dependency, DependencyCondition, DeviceMapping};
    use crate::samples;

    #[test]
    fn registries_are_checked_by_host() {
        use crate::desired::RegistryAccess;
        let access = |host: &str, url: &str| RegistryAccess {
            host: host.into(),
            url: url.into(),
            ca_pem: None,
            sealed_credentials: None,
        };
        let table = [
            (vec![access("lan:5000", "http://lan:5000")], None),
            (
                vec![access("", "https://x")],
                Some("host must not be empty"),
            ),
            (
                vec![access("lan", "ftp://lan")],
                Some("url must start with http:// or https://"),
            ),
            (
                vec![access("lan", "https://a"), access("lan", "https://b")],
                Some("is listed twice"),
            ),
        ];
        for (registries, expected) in table {
            let mut state = samples::desired_with_services(1);
            state.registries = registries;
            let got = state.validate().err().map(|e| match e {
                InvalidDesired::Registry { rule, .. } => rule,
                other => panic!("unexpected {other}"),
            });
            assert_eq!(got, expected);
        }
    }

    fn dep(name: &str) -> Dependency {
        Dependency {
            service: name.parse().unwrap(),
            condition: DependencyCondition::Healthy,
        }
    }

    #[test]
    fn sample_state_is_valid_and_orders_dependencies_first() {
        let state = samples::desired_with_services(5);
        state.validate().unwrap();
        let order = state.start_order().unwrap();
        let names: Vec<_> = order
            .iter()
            .map(|&i| state.services[i].name.as_str())
            .collect();
        let pos = |n: &str| names.iter().position(|x| *x == n).unwrap();
        assert!(pos("db") < pos("svc-1"));
    }

    #[test]
    fn validate_names_each_inconsistency() {
        let base = samples::desired_with_services(3);

        let mut dup = base.clone();
        dup.services[1].name = dup.services[0].name.clone();
        assert!(matches!(
            dup.validate(),
            Err(InvalidDesired::DuplicateService { .. })
        ));

        let mut unknown = base.clone();
        unknown.services[0].depends_on = vec![dep("ghost")];
        assert!(matches!(
            unknown.validate(),
            Err(InvalidDesired::UnknownDependency { .. })
        ));

        let mut cycle = base.clone();
        let (a, b) = (
            cycle.services[0].name.clone(),
            cycle.services[1].name.clone(),
        );
        cycle.services[0].depends_on = vec![dep(b.as_str())];
        cycle.services[1].depends_on = vec![dep(a.as_str())];
        assert!(matches!(
            cycle.validate(),
            Err(InvalidDesired::DependencyCycle { .. })
        ));

        let mut selfdep = base.clone();
        let own = selfdep.services[2].name.clone();
        selfdep.services[2].depends_on = vec![dep(own.as_str())];
        assert!(selfdep.validate().is_err());

        let mut zero_cpu = base.clone();
        zero_cpu.services[0].resources.cpu_millicores = Some(0);
        let err = zero_cpu.validate().unwrap_err().to_string();
        assert!(err.contains("cpus"), "{err}");

        let mut relative = base.clone();
        relative.services[0].devices = vec![DeviceMapping {
            host_path: "dev/i2c-1".into(),
            container_path: "/dev/i2c-1".into(),
            permissions: "rw".into(),
        }];
        assert!(matches!(
            relative.validate(),
            Err(InvalidDesired::RelativePath { .. })
        ));
    }
}
