//! `ContainerId`: the name a container is known by, validated once at the edge because it
//! becomes a directory name in the state dir and the cgroup tree.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A container id: `[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}`. Service names are the same set
/// without `+` and at most 63 long, so the agent names a `start-first` successor
/// `<service>+2` without meeting another service. The OCI command line's ids and cgroup
/// leaves are longer: podman's cgroup leaf is `libpod-<64 hex digits>` (71).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ContainerId(String);

/// Why a string is not a container id.
#[derive(Debug, thiserror::Error)]
#[error(
    "invalid container id {id:?}: use 1-128 of [A-Za-z0-9_.+-], starting with a letter or digit"
)]
pub struct InvalidContainerId {
    pub id: String,
}

/// The longest id: far below a file name's 255 bytes, and room for podman's cgroup leaves.
const MAX_LEN: usize = 128;

impl FromStr for ContainerId {
    type Err = InvalidContainerId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut chars = s.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
        let rest_ok =
            chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '+' | '-'));
        if first_ok && rest_ok && s.len() <= MAX_LEN {
            Ok(Self(s.to_owned()))
        } else {
            Err(InvalidContainerId { id: s.to_owned() })
        }
    }
}

impl TryFrom<String> for ContainerId {
    type Error = InvalidContainerId;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<ContainerId> for String {
    fn from(id: ContainerId) -> Self {
        id.0
    }
}

impl ContainerId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_id_accepts_names_and_rejects_paths() {
        let successor = format!("{}+2", "x".repeat(63));
        let podman_leaf = format!("libpod-{}", "f".repeat(64));
        for ok in ["web", "a", "app-1.v2_x", "web+2", &successor, &podman_leaf] {
            assert!(ok.parse::<ContainerId>().is_ok(), "{ok}");
        }
        for bad in [
            "",
            "../etc",
            "a/b",
            "-x",
            ".hidden",
            &"x".repeat(129),
            "+x",
            "sp ace",
        ] {
            let err = bad.parse::<ContainerId>().unwrap_err();
            assert!(err.to_string().contains("invalid container id"), "{bad}");
        }
    }
}
