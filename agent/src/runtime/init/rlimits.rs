//! Resource limits by their OCI names. Raising a hard limit needs CAP_SYS_RESOURCE, which
//! some hosts (this build machine) do not grant even to root: that is a clear error.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

use crate::runtime::spec::Rlimit;

/// Failures parsing or setting rlimits.
#[derive(Debug, thiserror::Error)]
pub enum RlimitError {
    #[error("unknown rlimit {name:?}")]
    Unknown { name: String },
    #[error("rlimit {name}: soft limit {soft} is above hard limit {hard}")]
    SoftAboveHard { name: String, soft: u64, hard: u64 },
    #[error("raise hard limit of {name} from {current} to {requested}: needs CAP_SYS_RESOURCE, which this host does not grant")]
    RaiseHardLimit {
        name: String,
        current: u64,
        requested: u64,
    },
    #[error("set rlimit {name}")]
    Set {
        name: String,
        #[source]
        source: nix::Error,
    },
}

/// Maps an OCI name (`RLIMIT_NOFILE`) to the kernel resource, checking soft ≤ hard.
pub fn parse(limit: &Rlimit) -> Result<Resource, RlimitError> {
    let resource = match limit.kind.as_str() {
        "RLIMIT_AS" => Resource::RLIMIT_AS,
        "RLIMIT_CORE" => Resource::RLIMIT_CORE,
        "RLIMIT_CPU" => Resource::RLIMIT_CPU,
        "RLIMIT_DATA" => Resource::RLIMIT_DATA,
        "RLIMIT_FSIZE" => Resource::RLIMIT_FSIZE,
        "RLIMIT_LOCKS" => Resource::RLIMIT_LOCKS,
        "RLIMIT_MEMLOCK" => Resource::RLIMIT_MEMLOCK,
        "RLIMIT_MSGQUEUE" => Resource::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => Resource::RLIMIT_NICE,
        "RLIMIT_NOFILE" => Resource::RLIMIT_NOFILE,
        "RLIMIT_NPROC" => Resource::RLIMIT_NPROC,
        "RLIMIT_RSS" => Resource::RLIMIT_RSS,
        "RLIMIT_RTPRIO" => Resource::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => Resource::RLIMIT_RTTIME,
        "RLIMIT_SIGPENDING" => Resource::RLIMIT_SIGPENDING,
        "RLIMIT_STACK" => Resource::RLIMIT_STACK,
        _ => {
            return Err(RlimitError::Unknown {
                name: limit.kind.clone(),
            })
        }
    };
    if limit.soft > limit.hard {
        return Err(RlimitError::SoftAboveHard {
            name: limit.kind.clone(),
            soft: limit.soft,
            hard: limit.hard,
        });
    }
    Ok(resource)
}

// rlim_t is 32 bits on 32-bit ARM: larger values mean "unlimited" there.
#[allow(clippy::useless_conversion, clippy::unnecessary_fallible_conversions)]
fn narrow(value: u64) -> libc::rlim_t {
    value.try_into().unwrap_or(libc::RLIM_INFINITY)
}

#[allow(clippy::useless_conversion)]
fn widen(value: libc::rlim_t) -> u64 {
    u64::from(value)
}

/// Sets each limit on the calling process.
pub fn apply(limits: &[Rlimit]) -> Result<(), RlimitError> {
    for limit in limits {
        let resource = parse(limit)?;
        let name = || limit.kind.clone();
        let (_, current) = getrlimit(resource).map_err(|source| RlimitError::Set {
            name: name(),
            source,
        })?;
        let current = widen(current);
        match setrlimit(resource, narrow(limit.soft), narrow(limit.hard)) {
            Ok(()) => {}
            Err(nix::Error::EPERM) if limit.hard > current => {
                return Err(RlimitError::RaiseHardLimit {
                    name: name(),
                    current,
                    requested: limit.hard,
                })
            }
            Err(source) => {
                return Err(RlimitError::Set {
                    name: name(),
                    source,
                })
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(kind: &str, soft: u64, hard: u64) -> Rlimit {
        Rlimit {
            kind: kind.into(),
            soft,
            hard,
        }
    }

    #[test]
    fn parse_knows_oci_names_and_rejects_others() {
        assert_eq!(
            parse(&limit("RLIMIT_NOFILE", 1, 2)).unwrap(),
            Resource::RLIMIT_NOFILE
        );
        assert!(matches!(
            parse(&limit("RLIMIT_FUN", 1, 1)),
            Err(RlimitError::Unknown { .. })
        ));
        assert!(matches!(
            parse(&limit("RLIMIT_NOFILE", 3, 2)),
            Err(RlimitError::SoftAboveHard { .. })
        ));
    }
}
