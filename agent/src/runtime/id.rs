//! `ContainerId`: the name a container is known by, validated once at the edge because it
//! becomes a directory name in the state dir and the cgroup tree.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A container id: `[A-Za-z0-9][A-Za-z0-9_.+-]{0,65}`. Service names are the same set
/// without `+` and at most 63 long, so the agent names a `start-first` successor
/// `<service>+2` without meeting another service.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ContainerId(String);

/// Why a string is not a container id.
#[derive(Debug, thiserror::Error)]
#[error(
    "invalid container id {id:?}: use 1-66 of [A-Za-z0-9_.+-], starting with a letter or digit"
)]
pub struct InvalidContainerId {
    pub id: String,
}

impl FromStr for ContainerId {
    type Err = InvalidContainerId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut chars = s.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
        let rest_ok =
            chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '+' | '-'));
        if first_ok && rest_ok && s.len() <= 66 {
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
        for ok in ["web", "a", "app-1.v2_x", "web+2", &successor] {
            assert!(ok.parse::<ContainerId>().is_ok(), "{ok}");
        }
        for bad in [
            "",
            "../etc",
            "a/b",
            "-x",
            ".hidden",
            &"x".repeat(67),
            "+x",
            "sp ace",
        ] {
            let err = bad.parse::<ContainerId>().unwrap_err();
            assert!(err.to_string().contains("invalid container id"), "{bad}");
        }
    }
}
