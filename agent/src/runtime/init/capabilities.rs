//! Capabilities: the bounding set is cut to the spec's list (or Docker's default); after
//! the uid change the inheritable, effective and permitted sets are set (by default:
//! effective = permitted = bounding, inheritable = ambient) and the ambient ones raised, so
//! a non-root user keeps them across exec.

use caps::{CapSet, Capability, CapsHashSet};

use crate::runtime::spec::{Process, DEFAULT_CAPABILITIES};

/// Failures parsing or applying capabilities.
#[derive(Debug, thiserror::Error)]
pub enum CapabilityError {
    #[error("unknown capability {name:?}")]
    Unknown { name: String },
    #[error("read the runtime's own bounding set (for ALL)")]
    ReadBounding {
        #[source]
        source: caps::errors::CapsError,
    },
    #[error("drop {capability} from the bounding set")]
    DropBounding {
        capability: Capability,
        #[source]
        source: caps::errors::CapsError,
    },
    #[error("raise {capability} into the ambient set (it must be permitted and inheritable)")]
    Ambient {
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

/// Every set of one process, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapabilityPlan {
    pub bounding: CapsHashSet,
    pub effective: CapsHashSet,
    pub permitted: CapsHashSet,
    pub inheritable: CapsHashSet,
    pub ambient: CapsHashSet,
}

/// The process's sets, defaults filled in (see the module doc).
pub fn plan(process: &Process) -> Result<CapabilityPlan, CapabilityError> {
    let bounding = parse(process.capabilities.as_deref())?;
    let sets = &process.capability_sets;
    let or_bounding = |set: &Option<Vec<String>>| match set {
        Some(names) => parse(Some(names)),
        None => Ok(bounding.clone()),
    };
    let ambient = parse(Some(&sets.ambient))?;
    let permitted = or_bounding(&sets.permitted)?;
    let inheritable = match &sets.inheritable {
        Some(names) => parse(Some(names))?,
        None => ambient.clone(),
    };
    // The kernel raises an ambient capability only when it is both permitted and
    // inheritable. Like runc and crun, one named without both is left out rather than
    // failing the container: `crun spec` itself names three ambient capabilities with an
    // empty inheritable set.
    let ambient = ambient
        .into_iter()
        .filter(|c| permitted.contains(c) && inheritable.contains(c))
        .collect();
    Ok(CapabilityPlan {
        effective: or_bounding(&sets.effective)?,
        permitted,
        inheritable,
        ambient,
        bounding,
    })
}

/// In a list, every capability in the runtime's own bounding set (a privileged container's
/// sets): the kernel refuses to grant any other — one it does not know (an older kernel),
/// or one the agent itself was started without. Beside it, `-NAME` takes one out (compose
/// `cap_add: [ALL]` with `cap_drop: [NAME]`).
pub const ALL: &str = "ALL";

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
    if names.iter().any(|name| name == ALL) {
        let mut all = caps::read(None, CapSet::Bounding)
            .map_err(|source| CapabilityError::ReadBounding { source })?;
        for name in names.iter().filter_map(|name| name.strip_prefix('-')) {
            let capability = name
                .parse::<Capability>()
                .map_err(|_| CapabilityError::Unknown {
                    name: name.to_string(),
                })?;
            all.remove(&capability);
        }
        return Ok(all);
    }
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

/// Sets inheritable (while permitted is still whole), effective, permitted (effective must
/// stay within it), then the ambient set exactly.
pub fn apply(plan: &CapabilityPlan) -> Result<(), CapabilityError> {
    for (set, value) in [
        (CapSet::Inheritable, &plan.inheritable),
        (CapSet::Effective, &plan.effective),
        (CapSet::Permitted, &plan.permitted),
    ] {
        caps::set(None, set, value).map_err(|source| CapabilityError::Set { set, source })?;
    }
    let ambient = CapSet::Ambient;
    caps::clear(None, ambient).map_err(|source| CapabilityError::Set {
        set: ambient,
        source,
    })?;
    for capability in &plan.ambient {
        caps::raise(None, ambient, *capability).map_err(|source| CapabilityError::Ambient {
            capability: *capability,
            source,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_means_every_capability_of_the_runtimes_bounding_set() {
        let set = parse(Some(&["CAP_CHOWN".into(), ALL.into()])).unwrap();
        assert_eq!(set, caps::read(None, CapSet::Bounding).unwrap());
    }

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
    fn by_default_effective_and_permitted_follow_bounding_and_inheritable_the_ambient_list() {
        let mut spec = crate::runtime::spec::ContainerSpec::new(
            crate::runtime::spec::Rootfs::Directory("/".into()),
            vec!["true".into()],
        );
        spec.process.capabilities = Some(vec!["CAP_CHOWN".into(), "CAP_NET_BIND_SERVICE".into()]);
        spec.process.capability_sets.ambient = vec!["CAP_NET_BIND_SERVICE".into()];
        let first = plan(&spec.process).unwrap();
        assert_eq!(first.effective, first.bounding);
        assert_eq!(first.permitted, first.bounding);
        let ambient: CapsHashSet = [Capability::CAP_NET_BIND_SERVICE].into();
        assert_eq!((&first.inheritable, &first.ambient), (&ambient, &ambient));

        spec.process.capability_sets.effective = Some(Vec::new());
        spec.process.capability_sets.inheritable = Some(vec!["CAP_CHOWN".into()]);
        let second = plan(&spec.process).unwrap();
        assert!(second.effective.is_empty());
        assert_eq!(second.inheritable, [Capability::CAP_CHOWN].into());
        spec.process.capability_sets.ambient = vec!["CAP_FLY".into()];
        assert!(plan(&spec.process).is_err());
    }

    #[test]
    fn ambient_capabilities_not_permitted_and_inheritable_are_left_out() {
        // `crun spec`'s own default: three ambient capabilities, inheritable empty.
        let mut spec = crate::runtime::spec::ContainerSpec::new(
            crate::runtime::spec::Rootfs::Directory("/".into()),
            vec!["true".into()],
        );
        let three: Vec<String> = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
            .map(String::from)
            .to_vec();
        spec.process.capabilities = Some(three.clone());
        spec.process.capability_sets.ambient = three.clone();
        spec.process.capability_sets.inheritable = Some(Vec::new());
        assert!(plan(&spec.process).unwrap().ambient.is_empty());
        // Inheritable but not permitted: left out too; both: kept.
        spec.process.capability_sets.inheritable = Some(three);
        spec.process.capability_sets.permitted = Some(vec!["CAP_KILL".into()]);
        let plan = plan(&spec.process).unwrap();
        assert_eq!(plan.ambient, [Capability::CAP_KILL].into());
    }

    #[test]
    fn unknown_capability_is_named() {
        let err = parse(Some(&["CAP_FLY".to_string()])).unwrap_err();
        assert!(err.to_string().contains("CAP_FLY"));
    }
}
