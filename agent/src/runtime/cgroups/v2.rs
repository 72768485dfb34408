//! cgroup v2: one unified tree; controllers are handed down through `cgroup.subtree_control`.

use std::fs;
use std::path::Path;

use nix::sys::statfs::{statfs, CGROUP2_SUPER_MAGIC};

use super::bpf;
use super::device_bpf;
use super::limits::{DeviceRule, LimitWrite};
use super::{
    create_dir, write_file, CgroupConfig, CgroupError, CgroupVersion, Condition, ContainerCgroup,
};
use crate::runtime::id::ContainerId;

const CONTROLLERS: &[&str] = &["memory", "cpu", "pids", "io", "cpuset"];

pub(super) fn create(
    config: &CgroupConfig,
    id: &ContainerId,
    writes: &[LimitWrite],
    devices: &[DeviceRule],
) -> Result<(ContainerCgroup, Vec<Condition>), CgroupError> {
    let available = fs::read_to_string(config.root.join("cgroup.controllers")).unwrap_or_default();
    let available: Vec<&str> = available.split_whitespace().collect();
    let mut conditions = Vec::new();
    let mut enable = Vec::new();
    for &controller in CONTROLLERS {
        if available.contains(&controller) {
            enable.push(controller);
        } else if writes.iter().any(|w| w.controller == controller) {
            conditions.push(Condition::MissingController {
                controller: controller.into(),
            });
        }
    }
    let parent = config.root.join(&config.parent);
    enable_down_to(&config.root, &parent, &enable)?;
    let leaf = parent.join(id.as_str());
    create_dir(&leaf)?;
    let cgroup = ContainerCgroup {
        version: CgroupVersion::V2,
        dirs: vec![(String::new(), leaf.clone())],
    };
    let guarded =
        group_oom_kills(&leaf, &enable).and_then(|()| install_device_filter(&leaf, devices));
    match guarded {
        Ok(true) => {}
        Ok(false) => conditions.push(Condition::MissingController {
            controller: "devices".into(),
        }),
        Err(err) => {
            let _ = cgroup.remove();
            return Err(err);
        }
    }
    Ok((cgroup, conditions))
}

/// Hands `controllers` down from `root` to the containers' parent: each cgroup from the
/// root to `parent` (created where missing) enables them in its `cgroup.subtree_control`,
/// so the parent's children, the containers, have their files.
fn enable_down_to(root: &Path, parent: &Path, controllers: &[&str]) -> Result<(), CgroupError> {
    let line = controllers
        .iter()
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(" ");
    let below = parent.strip_prefix(root).unwrap_or(Path::new(""));
    let mut dir = root.to_path_buf();
    let levels = std::iter::once(None).chain(below.components().map(Some));
    for component in levels {
        if let Some(component) = component {
            dir.push(component);
            create_dir(&dir)?;
        }
        if !line.is_empty() {
            write_file(&dir.join("cgroup.subtree_control"), &line)?;
        }
    }
    Ok(())
}

/// An OOM kill takes the whole container (`memory.oom.group`), as it would take a VM:
/// half a container, its init alive and a worker gone, is worse than a restart. A kernel
/// without the memory controller has no such file, and no memory limit to run into.
fn group_oom_kills(leaf: &Path, enabled: &[&str]) -> Result<(), CgroupError> {
    let file = leaf.join("memory.oom.group");
    if enabled.contains(&"memory") && file.exists() {
        write_file(&file, "1")?;
    }
    Ok(())
}

/// v2's device controller: an eBPF program allowing the default and passed-through
/// devices, attached to the container's cgroup. `Ok(false)` when `leaf` is not on a cgroup2
/// filesystem (a fake tree), where nothing can enforce it. A real cgroup that refuses the
/// program is an error: the container must not run with every device open.
pub fn install_device_filter(leaf: &Path, devices: &[DeviceRule]) -> Result<bool, CgroupError> {
    let on_cgroup2 = statfs(leaf).is_ok_and(|s| s.filesystem_type() == CGROUP2_SUPER_MAGIC);
    if !on_cgroup2 {
        return Ok(false);
    }
    let program = device_bpf::program_for(devices);
    let loaded =
        bpf::load_device_program(&program).map_err(|failure| CgroupError::LoadDeviceFilter {
            path: leaf.to_owned(),
            verifier_log: failure.verifier_log,
            source: failure.errno,
        })?;
    bpf::attach_device_program(leaf, &loaded).map_err(|source| {
        CgroupError::AttachDeviceFilter {
            path: leaf.to_owned(),
            source,
        }
    })?;
    Ok(true)
}
