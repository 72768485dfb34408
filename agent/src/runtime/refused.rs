//! The OCI `config.json` fields this runtime does not implement. A bundle that sets one is
//! refused with an error naming the field: running it without would be silently weaker
//! than what it asked for (no label, no throttle, a namespace shared that should not be).

use oci_spec::runtime::{LinuxNamespaceType, Spec};

/// A field the runtime does not honour, by its path in config.json.
#[derive(Debug, thiserror::Error)]
#[error("unsupported OCI config field {field}: {reason}")]
pub struct RefusedField {
    pub field: &'static str,
    pub reason: &'static str,
}

fn refuse(field: &'static str, reason: &'static str) -> Result<(), RefusedField> {
    Err(RefusedField { field, reason })
}

const NOT_IMPLEMENTED: &str = "not implemented by this runtime";

/// Refuses the first set field this runtime does not implement.
pub fn check(oci: &Spec) -> Result<(), RefusedField> {
    if !is_spec_1_version(oci.version()) {
        refuse(
            "ociVersion",
            "must be a runtime-spec 1.x version (MAJOR.MINOR.PATCH)",
        )?;
    }
    if let Some(process) = oci.process() {
        let set = |present: bool, field| {
            if present {
                refuse(field, NOT_IMPLEMENTED)
            } else {
                Ok(())
            }
        };
        set(
            process
                .apparmor_profile()
                .as_ref()
                .is_some_and(|p| !p.is_empty()),
            "process.apparmorProfile",
        )?;
        set(
            process
                .selinux_label()
                .as_ref()
                .is_some_and(|l| !l.is_empty()),
            "process.selinuxLabel",
        )?;
        set(process.io_priority().is_some(), "process.ioPriority")?;
        set(process.scheduler().is_some(), "process.scheduler")?;
        set(
            process.exec_cpu_affinity().is_some(),
            "process.execCPUAffinity",
        )?;
    }
    let Some(linux) = oci.linux() else {
        return Ok(());
    };
    if linux.mount_label().as_ref().is_some_and(|l| !l.is_empty()) {
        refuse("linux.mountLabel", NOT_IMPLEMENTED)?;
    }
    if linux.intel_rdt().is_some() {
        refuse("linux.intelRdt", NOT_IMPLEMENTED)?;
    }
    if linux.personality().is_some() {
        refuse("linux.personality", NOT_IMPLEMENTED)?;
    }
    if linux.time_offsets().is_some() {
        refuse("linux.timeOffsets", NOT_IMPLEMENTED)?;
    }
    if linux.memory_policy().is_some() {
        refuse("linux.memoryPolicy", NOT_IMPLEMENTED)?;
    }
    if linux.net_devices().as_ref().is_some_and(|d| !d.is_empty()) {
        refuse("linux.netDevices", NOT_IMPLEMENTED)?;
    }
    let namespaces = linux.namespaces().clone().unwrap_or_default();
    for ns in &namespaces {
        match ns.typ() {
            LinuxNamespaceType::Time => refuse("linux.namespaces[time]", NOT_IMPLEMENTED)?,
            LinuxNamespaceType::User if ns.path().is_some() => refuse(
                "linux.namespaces[user].path",
                "a user namespace is created with linux.uidMappings, never joined",
            )?,
            _ => {}
        }
    }
    let creates_user = namespaces
        .iter()
        .any(|n| n.typ() == LinuxNamespaceType::User && n.path().is_none());
    let joins_other = namespaces
        .iter()
        .any(|n| n.typ() != LinuxNamespaceType::Network && n.path().is_some());
    if creates_user && joins_other {
        refuse(
            "linux.namespaces[].path",
            "joining a namespace from a new user namespace is not implemented",
        )?;
    }
    if !namespaces
        .iter()
        .any(|n| n.typ() == LinuxNamespaceType::Mount)
    {
        refuse(
            "linux.namespaces",
            "the mount namespace cannot be left out (the rootfs is set up in its own)",
        )?;
    }
    if let Some(r) = linux.resources() {
        check_resources(r)?;
    }
    Ok(())
}

/// `1.MINOR.PATCH`, optionally with a pre-release (`1.0.2-dev`).
fn is_spec_1_version(version: &str) -> bool {
    let core = version.split(['-', '+']).next().unwrap_or("");
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts[0] == "1"
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

fn check_resources(r: &oci_spec::runtime::LinuxResources) -> Result<(), RefusedField> {
    if let Some(m) = r.memory() {
        if m.swappiness().is_some() {
            refuse("linux.resources.memory.swappiness", NOT_IMPLEMENTED)?;
        }
        if m.kernel().is_some() || m.kernel_tcp().is_some() {
            refuse("linux.resources.memory.kernel", NOT_IMPLEMENTED)?;
        }
        if m.disable_oom_killer() == Some(true) {
            refuse("linux.resources.memory.disableOOMKiller", NOT_IMPLEMENTED)?;
        }
    }
    if let Some(cpu) = r.cpu() {
        if cpu.realtime_runtime().is_some() || cpu.realtime_period().is_some() {
            refuse("linux.resources.cpu.realtimeRuntime", NOT_IMPLEMENTED)?;
        }
        if cpu.idle().is_some() || cpu.burst().is_some() {
            refuse("linux.resources.cpu.idle", NOT_IMPLEMENTED)?;
        }
    }
    if let Some(b) = r.block_io() {
        let any = |v: &Option<Vec<_>>| v.as_ref().is_some_and(|v: &Vec<_>| !v.is_empty());
        if b.leaf_weight().is_some()
            || b.weight_device().as_ref().is_some_and(|v| !v.is_empty())
            || any(b.throttle_read_bps_device())
            || any(b.throttle_write_bps_device())
            || any(b.throttle_read_iops_device())
            || any(b.throttle_write_iops_device())
        {
            refuse(
                "linux.resources.blockIO",
                "only weight is implemented (no per-device weights or throttles)",
            )?;
        }
    }
    if r.hugepage_limits().as_ref().is_some_and(|v| !v.is_empty()) {
        refuse("linux.resources.hugepageLimits", NOT_IMPLEMENTED)?;
    }
    if r.network().is_some() {
        refuse("linux.resources.network", NOT_IMPLEMENTED)?;
    }
    if r.rdma().as_ref().is_some_and(|v| !v.is_empty()) {
        refuse("linux.resources.rdma", NOT_IMPLEMENTED)?;
    }
    if r.unified().as_ref().is_some_and(|v| !v.is_empty()) {
        refuse("linux.resources.unified", NOT_IMPLEMENTED)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> Spec {
        serde_json::from_str(json).unwrap()
    }

    const BASE: &str = r#""ociVersion": "1.0.2", "root": {"path": "rootfs"}"#;

    #[test]
    fn oci_version_must_be_a_1_x_semver() {
        for good in ["1.0.2", "1.0.2-dev", "1.2.0", "1.0.0-rc.1"] {
            assert!(is_spec_1_version(good), "{good}");
        }
        for bad in ["invalid", "2.0.0", "1.0", "1.x.0", ""] {
            assert!(!is_spec_1_version(bad), "{bad}");
        }
    }

    #[test]
    fn plain_bundle_passes_and_set_unsupported_fields_are_named() {
        let ok = spec(&format!(
            r#"{{{BASE}, "linux": {{"namespaces": [{{"type": "mount"}}],
                "resources": {{"devices": [{{"allow": false, "access": "rwm"}}]}}}}}}"#
        ));
        check(&ok).unwrap();
        for (json, field) in [
            (
                r#""process": {"cwd": "/", "user": {"uid": 0, "gid": 0}, "apparmorProfile": "x"}"#,
                "process.apparmorProfile",
            ),
            (
                r#""linux": {"namespaces": [{"type": "mount"}, {"type": "user", "path": "/proc/1/ns/user"}]}"#,
                "linux.namespaces[user].path",
            ),
            (
                r#""linux": {"namespaces": [{"type": "pid"}]}"#,
                "linux.namespaces",
            ),
            (
                r#""linux": {"namespaces": [{"type": "mount"}], "resources": {"memory": {"swappiness": 10}}}"#,
                "linux.resources.memory.swappiness",
            ),
        ] {
            let err = check(&spec(&format!("{{{BASE}, {json}}}"))).unwrap_err();
            assert_eq!(err.field, field);
            assert!(err.to_string().contains(field));
        }
    }
}
