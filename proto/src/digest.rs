//! Content identities: `Digest` (sha256, parsed once) and `ImageRef` (pinned by digest).

use alloc::string::{String, ToString};
use core::fmt;
use core::str::FromStr;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// Why a digest or image reference was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefError {
    #[error("digest {value:?} does not start with \"sha256:\"")]
    DigestAlgorithm { value: String },
    #[error("digest {value:?} needs 64 lowercase hex characters after \"sha256:\"")]
    DigestHex { value: String },
    #[error("image reference {value:?} is not pinned by digest (expected REPOSITORY@sha256:...)")]
    NotPinned { value: String },
    #[error("image reference {value:?} has an invalid repository name {repository:?}")]
    Repository { value: String, repository: String },
}

/// A sha256 content digest. On the wire (postcard) it is 32 raw bytes; in human-readable
/// formats (JSON, TOML) it is the usual `sha256:<hex>` string.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest([u8; 32]);

impl Digest {
    /// The sha256 digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        use sha2::Digest as _;
        Self(sha2::Sha256::digest(bytes).into())
    }

    /// Wraps raw sha256 output.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Parses the bare 64-hex form (a store file name).
    pub fn from_hex(hex: &str) -> Result<Self, RefError> {
        let bad = || RefError::DigestHex {
            value: hex.to_string(),
        };
        if hex.len() != 64 {
            return Err(bad());
        }
        let mut bytes = [0u8; 32];
        for (i, pair) in hex.as_bytes().chunks_exact(2).enumerate() {
            let hi = hex_value(pair[0]).ok_or_else(bad)?;
            let lo = hex_value(pair[1]).ok_or_else(bad)?;
            bytes[i] = (hi << 4) | lo;
        }
        Ok(Self(bytes))
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hex of the bytes, without the algorithm prefix (for file names).
    pub fn hex(&self) -> String {
        let mut out = String::with_capacity(64);
        for byte in self.0 {
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
        out
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

impl FromStr for Digest {
    type Err = RefError;
    fn from_str(s: &str) -> Result<Self, RefError> {
        let hex = s
            .strip_prefix("sha256:")
            .ok_or_else(|| RefError::DigestAlgorithm {
                value: s.to_string(),
            })?;
        let bad = || RefError::DigestHex {
            value: s.to_string(),
        };
        if hex.len() != 64 {
            return Err(bad());
        }
        let mut bytes = [0u8; 32];
        for (i, pair) in hex.as_bytes().chunks_exact(2).enumerate() {
            let hi = hex_value(pair[0]).ok_or_else(bad)?;
            let lo = hex_value(pair[1]).ok_or_else(bad)?;
            bytes[i] = (hi << 4) | lo;
        }
        Ok(Self(bytes))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.collect_str(self)
        } else {
            self.0.serialize(serializer)
        }
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            struct DigestStr;
            impl Visitor<'_> for DigestStr {
                type Value = Digest;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a sha256:<hex> digest")
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<Digest, E> {
                    v.parse().map_err(E::custom)
                }
            }
            deserializer.deserialize_str(DigestStr)
        } else {
            <[u8; 32]>::deserialize(deserializer).map(Self)
        }
    }
}

/// An image pinned by digest: `[REGISTRY/]REPOSITORY@sha256:...`. An empty registry means
/// the controller's own registry. Because the digest is part of the signed desired state,
/// the signature covers every byte that will run.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ImageRef {
    pub registry: String,
    pub repository: String,
    pub digest: Digest,
}

/// Docker's rule: the first path component is a registry host when it has a dot or a port,
/// or is `localhost`.
fn is_registry_host(component: &str) -> bool {
    component.contains('.') || component.contains(':') || component == "localhost"
}

fn is_valid_repository(repo: &str) -> bool {
    // OCI distribution: path components of [a-z0-9]+ joined by single separators . _ __ -
    !repo.is_empty()
        && repo.split('/').all(|part| {
            let bytes = part.as_bytes();
            !bytes.is_empty()
                && lower_alnum(bytes[0])
                && lower_alnum(bytes[bytes.len() - 1])
                && bytes
                    .iter()
                    .all(|&b| lower_alnum(b) || matches!(b, b'.' | b'_' | b'-'))
        })
}

fn lower_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

impl FromStr for ImageRef {
    type Err = RefError;
    fn from_str(s: &str) -> Result<Self, RefError> {
        let (name, digest) = s.split_once('@').ok_or_else(|| RefError::NotPinned {
            value: s.to_string(),
        })?;
        let digest: Digest = digest.parse()?;
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest)) if is_registry_host(first) => (first, rest),
            _ => ("", name),
        };
        if !is_valid_repository(repository) {
            return Err(RefError::Repository {
                value: s.to_string(),
                repository: repository.to_string(),
            });
        }
        Ok(Self {
            registry: registry.to_string(),
            repository: repository.to_string(),
            digest,
        })
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.registry.is_empty() {
            write!(f, "{}/", self.registry)?;
        }
        write!(f, "{}@{}", self.repository, self.digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0b0069570d7c2ce3a5ec1ffdd1a45a9a5cbda8fb30451dbdc2c4d37bb1f6915b";

    #[test]
    fn digest_round_trips_through_text() {
        let digest: Digest = D.parse().unwrap();
        assert_eq!(digest.to_string(), D);
        assert_eq!(digest.hex().len(), 64);
        assert_eq!(Digest::from_hex(&digest.hex()).unwrap(), digest);
    }

    #[test]
    fn digest_of_bytes_is_sha256() {
        assert_eq!(
            Digest::of(b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn digest_rejects_other_algorithms_and_bad_hex() {
        assert!(matches!(
            "sha512:00".parse::<Digest>(),
            Err(RefError::DigestAlgorithm { .. })
        ));
        assert!(matches!(
            "sha256:abc".parse::<Digest>(),
            Err(RefError::DigestHex { .. })
        ));
        let upper = D.to_uppercase().replace("SHA256", "sha256");
        assert!(matches!(
            upper.parse::<Digest>(),
            Err(RefError::DigestHex { .. })
        ));
    }

    #[test]
    fn image_ref_splits_registry_like_docker() {
        let r: ImageRef = format!("127.0.0.1:5000/apps/web@{D}").parse().unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "apps/web");
        let r: ImageRef = format!("apps/web@{D}").parse().unwrap();
        assert_eq!(r.registry, "");
        assert_eq!(r.repository, "apps/web");
        assert_eq!(r.to_string(), format!("apps/web@{D}"));
    }

    #[test]
    fn image_ref_must_be_pinned_and_well_formed() {
        assert!(matches!(
            "apps/web:latest".parse::<ImageRef>(),
            Err(RefError::NotPinned { .. })
        ));
        assert!(matches!(
            format!("Apps/web@{D}").parse::<ImageRef>(),
            Err(RefError::Repository { .. })
        ));
        assert!(matches!(
            format!("apps//web@{D}").parse::<ImageRef>(),
            Err(RefError::Repository { .. })
        ));
    }
}
