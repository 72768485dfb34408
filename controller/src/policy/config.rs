//! The `[policy]` section of the serve config and its `[[policy.allow]]` entries, as
//! written; `validate` normalises every path and capability name once, so the rules compare
//! plain strings.

use std::collections::BTreeMap;

use coracle_proto::{canonical_capability, capability_name, DeviceId};
use serde::Deserialize;

use super::paths::normalise;
use crate::config::ConfigError;

/// `[policy]`: what any deploy may ask for. The default allows ordinary apps (named
/// volumes, the default capabilities, host ports from 1024 up; no host paths, no host
/// devices, no privileged host port, no explicit host network, nothing privileged) and
/// refuses the rest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicySection {
    /// Host path prefixes that may be bind-mounted, read-write or read-only.
    pub bind_paths: Vec<String>,
    /// Host path prefixes that may be bind-mounted read-only (`:ro`) only.
    pub read_only_bind_paths: Vec<String>,
    /// Capabilities `cap_add` may add beyond Docker's default set (`NET_ADMIN`,
    /// `CAP_SYS_TIME`, …; `ALL` for any).
    pub capabilities: Vec<String>,
    /// Host device paths (or directories of them, `/dev/bus/usb`) `devices` may pass.
    pub devices: Vec<String>,
    /// Host ports below 1024 (privileged ports: sshd, DNS, HTTP live there) that `ports`
    /// may publish; ports from 1024 up need no grant.
    pub host_ports: Vec<u16>,
    /// `network_mode: host`.
    pub host_network: bool,
    /// Privileged containers: compose `privileged: true`, and `cap_add: [ALL]`.
    pub privileged: bool,
    /// `coracle exec` (and the dashboard's terminal) by tokens other than the admin's:
    /// a shell in a container is more than a deploy, so it is granted per tag or device.
    pub exec: bool,
    /// Wider rules for the devices with a tag or one device.
    pub allow: Vec<AllowEntry>,
}

/// `[[policy.allow]]`: grants added to `[policy]`'s for the devices it names, by `tag =
/// "key=value"` or `device = "id"` (exactly one).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AllowEntry {
    pub tag: Option<String>,
    pub device: Option<String>,
    pub bind_paths: Vec<String>,
    pub read_only_bind_paths: Vec<String>,
    pub capabilities: Vec<String>,
    pub devices: Vec<String>,
    pub host_ports: Vec<u16>,
    pub host_network: bool,
    pub privileged: bool,
    pub exec: bool,
}

/// Which devices an `[[policy.allow]]` entry widens the rules for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Tag { key: String, value: String },
    Device(DeviceId),
}

impl Scope {
    /// Whether the device with `id` and `tags` is in scope.
    pub fn covers(&self, id: &DeviceId, tags: &BTreeMap<String, String>) -> bool {
        match self {
            Scope::Tag { key, value } => tags.get(key) == Some(value),
            Scope::Device(device) => device == id,
        }
    }
}

/// What a set of rules grants, paths normalised and capabilities canonical.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    pub bind_paths: Vec<String>,
    pub read_only_bind_paths: Vec<String>,
    pub capabilities: Vec<String>,
    pub devices: Vec<String>,
    /// Privileged host ports (below 1024) that may be published.
    pub host_ports: Vec<u16>,
    pub host_network: bool,
    pub privileged: bool,
    /// Remote exec by non-admin callers.
    pub exec: bool,
}

impl Grants {
    /// Adds `other`'s grants to these.
    pub fn widen(&mut self, other: &Grants) {
        self.bind_paths.extend(other.bind_paths.iter().cloned());
        self.read_only_bind_paths
            .extend(other.read_only_bind_paths.iter().cloned());
        self.capabilities.extend(other.capabilities.iter().cloned());
        self.devices.extend(other.devices.iter().cloned());
        self.host_ports.extend(other.host_ports.iter().copied());
        self.host_network |= other.host_network;
        self.privileged |= other.privileged;
        self.exec |= other.exec;
    }
}

/// Why a `[policy]` section was refused: the config's own error, naming the field
/// (`policy.bind_paths`, `policy.allow[2].tag`, ...) and what was wrong.
fn refused(at: impl Into<String>, reason: String) -> ConfigError {
    ConfigError::Invalid {
        field: at.into(),
        reason,
    }
}

fn paths(at: &str, list: &[String]) -> Result<Vec<String>, ConfigError> {
    list.iter()
        .map(|p| normalise(p).ok_or_else(|| refused(at, format!("{p:?} is not an absolute path"))))
        .collect()
}

fn capabilities(at: &str, list: &[String]) -> Result<Vec<String>, ConfigError> {
    list.iter()
        .map(|c| match capability_name(c) {
            Some(_) => Ok(canonical_capability(c)),
            None => Err(refused(at, format!("{c:?} is not a Linux capability"))),
        })
        .collect()
}

/// Only privileged ports are granted: a port from 1024 up in the list is a mistake (it
/// needs no grant), and port 0 is no port.
fn privileged_ports(at: &str, list: &[u16]) -> Result<Vec<u16>, ConfigError> {
    match list.iter().find(|p| !(1..PRIVILEGED_BELOW).contains(*p)) {
        Some(port) => Err(refused(
            at,
            format!(
                "{port} is not a privileged port (1 to 1023; ports from 1024 up need no grant)"
            ),
        )),
        None => Ok(list.to_vec()),
    }
}

/// Host ports below this are privileged: publishing one needs `host_ports`.
pub const PRIVILEGED_BELOW: u16 = 1024;

/// The grants of one section or entry, checked, named `at` in errors.
#[allow(clippy::too_many_arguments)]
fn grants(
    at: &str,
    bind_paths: &[String],
    read_only_bind_paths: &[String],
    caps: &[String],
    devices: &[String],
    host_ports: &[u16],
    host_network: bool,
    privileged: bool,
) -> Result<Grants, ConfigError> {
    Ok(Grants {
        bind_paths: paths(&format!("{at}.bind_paths"), bind_paths)?,
        read_only_bind_paths: paths(&format!("{at}.read_only_bind_paths"), read_only_bind_paths)?,
        capabilities: capabilities(&format!("{at}.capabilities"), caps)?,
        devices: paths(&format!("{at}.devices"), devices)?,
        host_ports: privileged_ports(&format!("{at}.host_ports"), host_ports)?,
        host_network,
        privileged,
        exec: false,
    })
}

impl PolicySection {
    /// The base grants and each entry's scope and grants, or the first error.
    pub fn compile(&self) -> Result<(Grants, Vec<(Scope, Grants)>), ConfigError> {
        let base = grants(
            "policy",
            &self.bind_paths,
            &self.read_only_bind_paths,
            &self.capabilities,
            &self.devices,
            &self.host_ports,
            self.host_network,
            self.privileged,
        )
        .map(|g| Grants {
            exec: self.exec,
            ..g
        })?;
        let entries = self
            .allow
            .iter()
            .enumerate()
            .map(|(i, entry)| entry.compile(&format!("policy.allow[{i}]")))
            .collect::<Result<_, _>>()?;
        Ok((base, entries))
    }
}

impl AllowEntry {
    fn compile(&self, at: &str) -> Result<(Scope, Grants), ConfigError> {
        let error = |field: &str, reason: String| refused(format!("{at}{field}"), reason);
        let scope = match (&self.tag, &self.device) {
            (Some(tag), None) => {
                let (key, value) = tag
                    .split_once('=')
                    .ok_or_else(|| error(".tag", format!("{tag:?} must be key=value")))?;
                crate::fleet::check_tag(key, value).map_err(|e| error(".tag", e.to_string()))?;
                Scope::Tag {
                    key: key.to_string(),
                    value: value.to_string(),
                }
            }
            (None, Some(device)) => Scope::Device(
                device
                    .parse()
                    .map_err(|e: coracle_proto::IdError| error(".device", e.to_string()))?,
            ),
            _ => {
                return Err(error(
                    "",
                    "needs exactly one of tag = \"key=value\" or device = \"id\"".into(),
                ))
            }
        };
        let grants = grants(
            at,
            &self.bind_paths,
            &self.read_only_bind_paths,
            &self.capabilities,
            &self.devices,
            &self.host_ports,
            self.host_network,
            self.privileged,
        )
        .map(|g| Grants {
            exec: self.exec,
            ..g
        })?;
        Ok((scope, grants))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(text: &str) -> PolicySection {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn compile_normalises_paths_and_capability_names() {
        let policy = section(
            "bind_paths = [\"/srv/data/\", \"/opt//x/../y\"]\ncapabilities = [\"net_admin\", \"CAP_SYS_TIME\"]\n",
        );
        let (base, entries) = policy.compile().unwrap();
        assert_eq!(base.bind_paths, ["/srv/data", "/opt/y"]);
        assert_eq!(base.capabilities, ["CAP_NET_ADMIN", "CAP_SYS_TIME"]);
        assert!(entries.is_empty());
    }

    #[test]
    fn compile_refuses_bad_entries_naming_where() {
        let cases = [
            ("bind_paths = [\"srv\"]", "policy.bind_paths"),
            ("capabilities = [\"FLY\"]", "policy.capabilities"),
            ("[[allow]]\nbind_paths = [\"/x\"]", "policy.allow[0]"),
            (
                "[[allow]]\ntag = \"a=b\"\ndevice = \"pi-1\"",
                "policy.allow[0]",
            ),
            ("[[allow]]\ntag = \"nokey\"", "policy.allow[0].tag"),
            ("[[allow]]\ndevice = \"Bad Id\"", "policy.allow[0].device"),
            (
                "[[allow]]\ndevice = \"pi-1\"\ndevices = [\"dev/x\"]",
                "policy.allow[0].devices",
            ),
            ("host_ports = [8080]", "policy.host_ports"),
            (
                "[[allow]]\ndevice = \"pi-1\"\nhost_ports = [0]",
                "policy.allow[0].host_ports",
            ),
        ];
        for (text, at) in cases {
            let err = section(text).compile().unwrap_err();
            assert!(
                matches!(&err, ConfigError::Invalid { field, .. } if field == at),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<PolicySection>("bind_path = []").is_err());
        assert!(toml::from_str::<PolicySection>("[[allow]]\ntags = \"a=b\"").is_err());
    }
}
