//! Capabilities: the bounding set is cut to the spec's list (or Docker's default), and the
//! effective and permitted sets are set to it after the uid change.

use std::collections::HashSet;

use caps::{CapSet, Capability, CapsHashSet};

use crate::runtime::spec::DEFAULT_CAPABILITIES;

/// Failures parsing or applying capabilities.
#[derive(Debug, thiserror::Error)]
pub enum CapabilityError {
    #[error("unknown capability {name:?}")]
    Unknown { name: String },
    #[error("drop {capability} from the bounding set")]
    DropBounding {
        capability: Capability,
        #[source]
        source: caps::errors::CapsError,
    },
    #[error("set {set:?} capabilities")]
    Set {
        set: CapSet,
        #[source]
        source: caps::errors::CapsError,
    },
}

/// The spec's list, or Docker's default set when the spec says nothing.
pub fn parse(names: Option<&[String]>) -> Result<CapsHashSet, CapabilityError> {
    let owned: Vec<String>;
    let names: &[String] = match names {
        Some(names) => names,
        None => {
            owned = DEFAULT_CAPABILITIES.iter().map(|s| s.to_string()).collect();
            &owned
        }
    };
    names
        .iter()
        .map(|name| {
            name.parse::<Capability>()
                .map_err(|_| CapabilityError::Unknown { name: name.clone() })
        })
        .collect()
}

/// Removes everything outside `keep` from the bounding set (needs CAP_SETPCAP, so it runs
/// before the final sets are applied).
pub fn limit_bounding(keep: &CapsHashSet) -> Result<(), CapabilityError> {
    for capability in caps::all() {
        if !keep.contains(&capability)
            && caps::has_cap(None, CapSet::Bounding, capability).unwrap_or(false)
        {
            caps::drop(None, CapSet::Bounding, capability)
                .map_err(|source| CapabilityError::DropBounding { capability, source })?;
        }
    }
    Ok(())
}

/// Sets effective, permitted (in that order: effective must stay within permitted) and
/// clears inheritable and ambient.
pub fn apply(keep: &CapsHashSet) -> Result<(), CapabilityError> {
    let none = HashSet::new();
    for (set, value) in [
        (CapSet::Effective, keep),
        (CapSet::Permitted, keep),
        (CapSet::Inheritable, &none),
    ] {
        caps::set(None, set, value).map_err(|source| CapabilityError::Set { set, source })?;
    }
    caps::clear(None, CapSet::Ambient).map_err(|source| CapabilityError::Set {
        set: CapSet::Ambient,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_list_means_docker_defaults() {
        let set = parse(None).unwrap();
        assert_eq!(set.len(), DEFAULT_CAPABILITIES.len());
        assert!(set.contains(&Capability::CAP_CHOWN));
        assert!(!set.contains(&Capability::CAP_SYS_ADMIN));
    }

    #[test]
    fn the_proto_table_is_the_kernel_table_this_runtime_applies() {
        // `coracle_proto::CAPABILITIES` is what controller and agent validate against; every
        // name there must parse here, and this runtime must know no other.
        let mut ours: Vec<String> = caps::all().iter().map(|c| c.to_string()).collect();
        ours.sort();
        let mut proto: Vec<String> = coracle_proto::CAPABILITIES
            .iter()
            .map(|c| c.to_string())
            .collect();
        proto.sort();
        assert_eq!(proto, ours);
        parse(Some(&proto)).unwrap();
    }

    #[test]
    fn unknown_capability_is_named() {
        let err = parse(Some(&["CAP_FLY".to_string()])).unwrap_err();
        assert!(err.to_string().contains("CAP_FLY"));
    }
}
