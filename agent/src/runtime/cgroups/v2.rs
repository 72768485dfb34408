//! cgroup v2: one unified tree; controllers are handed down through `cgroup.subtree_control`.

use std::fs;

use super::limits::LimitWrite;
use super::{
    create_dir, write_file, CgroupConfig, CgroupError, CgroupVersion, Condition, ContainerCgroup,
};
use crate::runtime::id::ContainerId;

const CONTROLLERS: &[&str] = &["memory", "cpu", "pids", "io", "cpuset"];

pub(super) fn create(
    config: &CgroupConfig,
    id: &ContainerId,
    writes: &[LimitWrite],
) -> Result<(ContainerCgroup, Vec<Condition>), CgroupError> {
    let available = fs::read_to_string(config.root.join("cgroup.controllers")).unwrap_or_default();
    let available: Vec<&str> = available.split_whitespace().collect();
    let mut conditions = Vec::new();
    let mut enable = Vec::new();
    for &controller in CONTROLLERS {
        if available.contains(&controller) {
            enable.push(format!("+{controller}"));
        } else if writes.iter().any(|w| w.controller == controller) {
            conditions.push(Condition::MissingController {
                controller: controller.into(),
            });
        }
    }
    let parent = config.root.join(&config.parent);
    create_dir(&parent)?;
    let enable = enable.join(" ");
    if !enable.is_empty() {
        write_file(&config.root.join("cgroup.subtree_control"), &enable)?;
        write_file(&parent.join("cgroup.subtree_control"), &enable)?;
    }
    let leaf = parent.join(id.as_str());
    create_dir(&leaf)?;
    Ok((
        ContainerCgroup {
            version: CgroupVersion::V2,
            dirs: vec![(String::new(), leaf)],
        },
        conditions,
    ))
}
