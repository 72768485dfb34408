//! Validated identities: `DeviceId`, `ServiceName`, `Generation`.
//!
//! Each is checked once at the edge (`FromStr`, `TryFrom<String>`, serde) so the rest of the
//! code never re-validates a string.

use alloc::string::{String, ToString};
use core::fmt;
use core::str::FromStr;
use serde::{Deserialize, Serialize};

/// Why an identity string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} is empty")]
    Empty { kind: &'static str },
    #[error("{kind} {value:?} is longer than {max} characters")]
    TooLong {
        kind: &'static str,
        value: String,
        max: usize,
    },
    #[error("{kind} {value:?} has a character outside {allowed}")]
    BadCharacter {
        kind: &'static str,
        value: String,
        allowed: &'static str,
    },
}

/// A device's id: `[a-z0-9][a-z0-9-]{0,62}`. It appears in MQTT topics, so it can never
/// hold `/`, `+` or `#`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DeviceId(String);

/// A service's name inside an app: `[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}` (docker-compose rules,
/// bounded so it fits in cgroup and file names).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ServiceName(String);

const MAX_ID_LEN: usize = 63;

fn check(
    kind: &'static str,
    value: &str,
    allowed: &'static str,
    first_ok: fn(u8) -> bool,
    rest_ok: fn(u8) -> bool,
) -> Result<(), IdError> {
    let bytes = value.as_bytes();
    let Some(&first) = bytes.first() else {
        return Err(IdError::Empty { kind });
    };
    if bytes.len() > MAX_ID_LEN {
        return Err(IdError::TooLong {
            kind,
            value: value.to_string(),
            max: MAX_ID_LEN,
        });
    }
    if !first_ok(first) || !bytes[1..].iter().all(|&b| rest_ok(b)) {
        return Err(IdError::BadCharacter {
            kind,
            value: value.to_string(),
            allowed,
        });
    }
    Ok(())
}

fn lower_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

impl DeviceId {
    /// The id as it appears in topics and file names.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl ServiceName {
    /// The name as written in the compose file.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for DeviceId {
    type Error = IdError;
    fn try_from(value: String) -> Result<Self, IdError> {
        check("device id", &value, "[a-z0-9][a-z0-9-]", lower_alnum, |b| {
            lower_alnum(b) || b == b'-'
        })?;
        Ok(Self(value))
    }
}

impl TryFrom<String> for ServiceName {
    type Error = IdError;
    fn try_from(value: String) -> Result<Self, IdError> {
        check(
            "service name",
            &value,
            "[a-zA-Z0-9][a-zA-Z0-9_.-]",
            |b| b.is_ascii_alphanumeric(),
            |b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'),
        )?;
        Ok(Self(value))
    }
}

macro_rules! string_id_impls {
    ($ty:ident) => {
        impl FromStr for $ty {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::try_from(s.to_string())
            }
        }
        impl From<$ty> for String {
            fn from(id: $ty) -> String {
                id.0
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}
string_id_impls!(DeviceId);
string_id_impls!(ServiceName);

/// The version of a device's desired state. The controller increments it for every change;
/// the device never applies a lower one than it has applied (replay protection).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Generation(pub u64);

impl Generation {
    /// The generation after this one.
    pub fn next(self) -> Self {
        Self(self.0.saturating_add(1))
    }
}

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_id_accepts_the_documented_alphabet() {
        for ok in ["a", "0", "pi-42", "greenhouse-gw-7", &"a".repeat(63)] {
            assert!(ok.parse::<DeviceId>().is_ok(), "{ok}");
        }
    }

    #[test]
    fn device_id_rejects_topic_metacharacters_and_bad_shapes() {
        let cases = [
            ("", "empty"),
            ("-pi", "outside"),
            ("Pi", "outside"),
            ("pi/1", "outside"),
            ("pi+", "outside"),
            ("pi#", "outside"),
            ("pi 1", "outside"),
        ];
        for (bad, why) in cases {
            let err = bad.parse::<DeviceId>().expect_err(bad).to_string();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
        let long = "a".repeat(64);
        assert!(matches!(
            long.parse::<DeviceId>(),
            Err(IdError::TooLong { .. })
        ));
    }

    #[test]
    fn service_name_follows_compose_rules() {
        assert!("web_1.api-x".parse::<ServiceName>().is_ok());
        assert!("Web".parse::<ServiceName>().is_ok());
        assert!("_web".parse::<ServiceName>().is_err());
        assert!("we/b".parse::<ServiceName>().is_err());
    }

    #[test]
    fn generation_next_saturates() {
        assert_eq!(Generation(1).next(), Generation(2));
        assert_eq!(Generation(u64::MAX).next(), Generation(u64::MAX));
    }
}
