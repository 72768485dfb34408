//! The short syntax of `volumes:` (`NAME:/path[:ro|rw]`, `/host:/path[:ro|rw]`) and
//! `devices:` (`HOST[:CONTAINER[:PERMISSIONS]]`). The long volume syntax is read
//! by `long_volumes`; the long device syntax is refused by name (`refused`).

use coracle_proto::{DeviceMapping, VolumeMount, VolumeSource};

pub(super) fn volume(text: &str) -> Result<VolumeMount, String> {
    let parts: Vec<&str> = text.split(':').collect();
    let (source, target, mode) = match parts.as_slice() {
        [s, t] => (*s, *t, None),
        [s, t, m] => (*s, *t, Some(*m)),
        _ => return Err(format!("{text:?} must be SOURCE:TARGET[:ro|rw]")),
    };
    if !target.starts_with('/') {
        return Err(format!("{text:?}: target must be an absolute path"));
    }
    let read_only = match mode {
        None | Some("rw") => false,
        Some("ro") => true,
        Some(other) => return Err(format!("{text:?}: mode {other:?} is not ro or rw")),
    };
    let source = if source.starts_with('/') {
        VolumeSource::HostPath(source.into())
    } else if source.starts_with('.') {
        return Err(format!(
            "{text:?}: relative host paths are not supported on devices"
        ));
    } else {
        VolumeSource::Named(source.into())
    };
    Ok(VolumeMount {
        source,
        target: target.into(),
        read_only,
    })
}

pub(super) fn device(text: &str) -> Result<DeviceMapping, String> {
    let parts: Vec<&str> = text.split(':').collect();
    let (host, container, permissions) = match parts.as_slice() {
        [h] => (*h, *h, "rwm"),
        [h, c] => (*h, *c, "rwm"),
        [h, c, p] => (*h, *c, *p),
        _ => return Err(format!("{text:?} must be HOST[:CONTAINER[:PERMISSIONS]]")),
    };
    if !host.starts_with("/dev/") || !container.starts_with('/') {
        return Err(format!(
            "{text:?}: device paths must be absolute, under /dev on the host"
        ));
    }
    if permissions.is_empty() || !permissions.chars().all(|c| "rwm".contains(c)) {
        return Err(format!("{text:?}: permissions must be a subset of rwm"));
    }
    Ok(DeviceMapping {
        host_path: host.into(),
        container_path: container.into(),
        permissions: permissions.into(),
    })
}
