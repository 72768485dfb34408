//! Semantic checks of a `DesiredState` that the type system cannot express: unique service
//! names, dependencies that exist and form no cycle, direct registries, and each service's
//! own fields (`service_rules`).

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use crate::desired::DesiredState;
use crate::ids::ServiceName;
use crate::seccomp::ProfileError;

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
    /// `field` is the key as compose spells it; `rule` reads on from the value.
    #[error("service {service}: {field}: {value:?} {rule}")]
    Field {
        service: ServiceName,
        field: &'static str,
        value: String,
        rule: &'static str,
    },
    #[error("service {service}: {field}: unknown capability {name:?}")]
    UnknownCapability {
        service: ServiceName,
        field: &'static str,
        name: String,
    },
    #[error("registry {host}: {rule}")]
    Registry { host: String, rule: &'static str },
    #[error("service {service}: seccomp profile")]
    SeccompProfile {
        service: ServiceName,
        #[source]
        source: ProfileError,
    },
}

impl InvalidDesired {
    /// The service at fault, if the problem is one service's.
    pub fn service(&self) -> Option<&ServiceName> {
        match self {
            Self::DuplicateService { service }
            | Self::UnknownDependency { service, .. }
            | Self::DependencyCycle { service }
            | Self::Field { service, .. }
            | Self::UnknownCapability { service, .. }
            | Self::SeccompProfile { service, .. } => Some(service),
            Self::Registry { .. } => None,
        }
    }

    /// The compose key at fault (`cap_add`, `volumes`, `depends_on`), if there is one.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            Self::Field { field, .. } | Self::UnknownCapability { field, .. } => Some(field),
            Self::SeccompProfile { .. } => Some("security_opt"),
            Self::UnknownDependency { .. } | Self::DependencyCycle { .. } => Some("depends_on"),
            Self::DuplicateService { .. } | Self::Registry { .. } => None,
        }
    }
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
            service.validate()?;
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
        self.validate_networks()?;
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
        let err = relative.validate().unwrap_err().to_string();
        assert!(err.contains("devices: \"dev/i2c-1\""), "{err}");
    }
}
