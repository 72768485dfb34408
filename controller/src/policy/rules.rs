//! The rules: one service against the grants in force for its device. Pure; the first
//! request no grant covers is refused, naming the service, the compose key, the value as
//! compose writes it and the rule.

use coracle_proto::{
    canonical_capability, ServiceSpec, Tuning, VolumeMount, VolumeSource, DEFAULT_CAPABILITIES,
};

use super::config::{Grants, PRIVILEGED_BELOW};
use super::paths::{is_under, normalise};

/// A service asked for something the policy does not grant it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("service {service:?}: {key} {value:?}: {rule}")]
pub struct Refusal {
    pub service: String,
    /// The compose key: `volumes`, `cap_add`, `devices`, `ports`, `network_mode`,
    /// `privileged`.
    pub key: &'static str,
    /// The refused entry as compose writes it (`/:/host`, `SYS_ADMIN`).
    pub value: String,
    /// The rule it broke, naming the policy key that would grant it.
    pub rule: String,
}

/// Checks one service. `asks_host_network`: its compose entry says `network_mode: host`.
pub fn check_service(
    grants: &Grants,
    service: &ServiceSpec,
    asks_host_network: bool,
) -> Result<(), Refusal> {
    let refuse = |key: &'static str, value: String, rule: String| Refusal {
        service: service.name.to_string(),
        key,
        value,
        rule,
    };
    for volume in &service.volumes {
        if let Err(rule) = check_volume(grants, volume) {
            return Err(refuse("volumes", volume_text(volume), rule));
        }
    }
    for name in &service.cap_add {
        if let Err(rule) = check_capability(grants, name) {
            return Err(refuse("cap_add", name.clone(), rule));
        }
    }
    for device in &service.devices {
        let allowed = normalise(&device.host_path)
            .is_some_and(|path| grants.devices.iter().any(|p| is_under(&path, p)));
        if !allowed {
            let text = format!(
                "{}:{}:{}",
                device.host_path, device.container_path, device.permissions
            );
            let rule = format!(
                "host device {:?} is not under any policy.devices entry",
                device.host_path
            );
            return Err(refuse("devices", text, rule));
        }
    }
    // A port below 1024 is one the device's own services (sshd, DNS, a web UI) may need:
    // taking it is a grant, as Docker needs root or CAP_NET_BIND_SERVICE for it.
    for port in service.tuning.iter().filter_map(|t| match t {
        Tuning::Publish(port) => Some(port),
        _ => None,
    }) {
        let granted =
            port.host_port >= PRIVILEGED_BELOW || grants.host_ports.contains(&port.host_port);
        if !granted {
            let rule = format!(
                "host port {} is privileged (below 1024): needs it in policy.host_ports",
                port.host_port
            );
            return Err(refuse("ports", port.to_string(), rule));
        }
    }
    if asks_host_network && !grants.host_network {
        return Err(refuse(
            "network_mode",
            "host".into(),
            "the host's network needs policy.host_network = true".into(),
        ));
    }
    // Docker's `--privileged`: every capability, every device, no seccomp filter: the
    // same grant as `cap_add: [ALL]`.
    let privileged = service
        .tuning
        .iter()
        .any(|t| matches!(t, Tuning::Privileged { .. }));
    if privileged && !grants.privileged {
        return Err(refuse(
            "privileged",
            "true".into(),
            "a privileged container has every capability and host device: needs policy.privileged = true"
                .into(),
        ));
    }
    Ok(())
}

/// A named volume is always allowed (its name was validated); a host path must be under a
/// granted prefix, and under a read-only one only with `:ro`.
fn check_volume(grants: &Grants, volume: &VolumeMount) -> Result<(), String> {
    let VolumeSource::HostPath(path) = &volume.source else {
        return Ok(());
    };
    let Some(normal) = normalise(path) else {
        return Err(format!("host path {path:?} is not absolute"));
    };
    let under = |prefixes: &[String]| prefixes.iter().any(|p| is_under(&normal, p));
    if under(&grants.bind_paths) {
        return Ok(());
    }
    if under(&grants.read_only_bind_paths) {
        if volume.read_only {
            return Ok(());
        }
        return Err(format!(
            "host path {normal:?} is under a policy.read_only_bind_paths entry: mount it \":ro\""
        ));
    }
    Err(format!(
        "host path {normal:?} is not under any policy.bind_paths entry"
    ))
}

/// Docker's default capabilities may always be named; `ALL` is privileged; any other must
/// be in `policy.capabilities` (or that list holds `ALL`).
fn check_capability(grants: &Grants, name: &str) -> Result<(), String> {
    let canonical = canonical_capability(name);
    if canonical == "ALL" {
        if grants.privileged || grants.capabilities.iter().any(|c| c == "ALL") {
            return Ok(());
        }
        return Err(
            "every capability makes the container privileged: needs policy.privileged = true"
                .into(),
        );
    }
    let granted = DEFAULT_CAPABILITIES.contains(&canonical.as_str())
        || grants.privileged
        || grants
            .capabilities
            .iter()
            .any(|c| c == "ALL" || *c == canonical);
    if granted {
        return Ok(());
    }
    Err(format!(
        "{canonical} is not in Docker's default set nor in policy.capabilities"
    ))
}

/// `SOURCE:TARGET[:ro]`, as in the compose file.
fn volume_text(volume: &VolumeMount) -> String {
    let source = match &volume.source {
        VolumeSource::Named(name) => name,
        VolumeSource::HostPath(path) => path,
    };
    let mode = if volume.read_only { ":ro" } else { "" };
    format!("{source}:{}{mode}", volume.target)
}
