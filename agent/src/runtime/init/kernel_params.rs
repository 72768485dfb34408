//! Kernel parameters a container may set for itself: namespaced sysctls (OCI
//! `linux.sysctl`, compose `sysctls`) and its OOM score adjustment (`process.oomScoreAdj`).
//! Only sysctls that belong to one of the container's own namespaces are accepted
//! (`coracle_proto::tuning::sysctl_namespace`, the rule the controller checks too: IPC's
//! `kernel.msg*`, `kernel.sem`, `kernel.shm*`, `fs.mqueue.*`, and `net.*` with the
//! container's own network); anything else would change the host and is refused before any
//! process exists.

use std::collections::BTreeMap;

use coracle_proto::tuning::{sysctl_namespace, SysctlRefusal};

use crate::runtime::spec::Network;

/// Why a kernel parameter was refused or could not be written.
#[derive(Debug, thiserror::Error)]
pub enum KernelParamError {
    #[error("sysctl {name} {}", refusal.rule())]
    Refused {
        name: String,
        refusal: SysctlRefusal,
    },
    #[error("sysctl {name}: the value {value:?} is not one line")]
    Malformed { name: String, value: String },
    #[error("write sysctl {name} = {value:?}")]
    Write {
        name: String,
        value: String,
        #[source]
        source: std::io::Error,
    },
    #[error("oom_score_adj {value} is outside -1000..=1000")]
    OomRange { value: i32 },
    #[error("write oom_score_adj {value} (lowering it needs CAP_SYS_RESOURCE on the host)")]
    OomWrite {
        value: i32,
        #[source]
        source: std::io::Error,
    },
}

/// Refuses what `apply` would refuse, before any process exists.
pub fn check(
    sysctl: &BTreeMap<String, String>,
    network: &Network,
    oom_score_adj: Option<i32>,
) -> Result<(), KernelParamError> {
    for (name, value) in sysctl {
        sysctl_namespace(name, *network == Network::Host).map_err(|refusal| {
            KernelParamError::Refused {
                name: name.clone(),
                refusal,
            }
        })?;
        if value.contains('\n') {
            return Err(KernelParamError::Malformed {
                name: name.clone(),
                value: value.clone(),
            });
        }
    }
    match oom_score_adj {
        Some(value) if !(-1000..=1000).contains(&value) => {
            Err(KernelParamError::OomRange { value })
        }
        _ => Ok(()),
    }
}

/// Writes the sysctls through the container's own /proc (its namespaces decide what they
/// change). Runs after the switch of root, before /proc/sys is made read-only.
pub fn apply_sysctls(sysctl: &BTreeMap<String, String>) -> Result<(), KernelParamError> {
    for (name, value) in sysctl {
        let path = format!("/proc/sys/{}", name.replace('.', "/"));
        std::fs::write(&path, value).map_err(|source| KernelParamError::Write {
            name: name.clone(),
            value: value.clone(),
            source,
        })?;
    }
    Ok(())
}

/// Sets the OOM score adjustment of the process (inherited by what it execs).
pub fn apply_oom_score_adj(value: Option<i32>) -> Result<(), KernelParamError> {
    let Some(value) = value else {
        return Ok(());
    };
    std::fs::write("/proc/self/oom_score_adj", value.to_string())
        .map_err(|source| KernelParamError::OomWrite { value, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(name: &str) -> BTreeMap<String, String> {
        [(name.to_string(), "1".to_string())].into()
    }

    #[test]
    fn only_namespaced_sysctls_pass() {
        let own = Network::None;
        for name in ["net.ipv4.ip_forward", "kernel.shmmax", "fs.mqueue.msg_max"] {
            check(&one(name), &own, None).unwrap();
        }
        let err = check(&one("kernel.panic"), &own, None).unwrap_err();
        assert!(
            err.to_string().contains("kernel.panic is not namespaced"),
            "{err}"
        );
        let refused = |name: &str, network: &Network| match check(&one(name), network, None) {
            Err(KernelParamError::Refused { refusal, .. }) => Some(refusal),
            _ => None,
        };
        assert_eq!(
            refused("vm.swappiness", &own),
            Some(SysctlRefusal::NotNamespaced)
        );
        assert_eq!(
            refused("net.ipv4.ip_forward", &Network::Host),
            Some(SysctlRefusal::HostNetwork)
        );
        assert_eq!(
            refused("net/../../kernel.panic", &own),
            Some(SysctlRefusal::Malformed)
        );
    }

    #[test]
    fn oom_score_adj_is_bounded() {
        let none = BTreeMap::new();
        check(&none, &Network::None, Some(-1000)).unwrap();
        check(&none, &Network::None, Some(1000)).unwrap();
        let err = check(&none, &Network::None, Some(1001)).unwrap_err();
        assert!(err.to_string().contains("1001"), "{err}");
    }
}
