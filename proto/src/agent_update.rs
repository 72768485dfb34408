//! `AgentUpdate`: the controller asks one device to run another build of `coracle-agent`.
//! It travels signed by the deployment key (its own signature domain) on its own retained
//! topic (`TopicKind::AgentUpdate`), so agents from before over-the-air updates never see
//! it and the desired-state layouts stay as they are (see `legacy`).
//!
//! The binary itself is an OCI image in the controller's registry (repository
//! [`AGENT_REPOSITORY`], one manifest per platform, one layer holding the file
//! [`AGENT_BINARY_FILE`]), so the agent pulls it like any image, deltas included. The
//! signature covers `binary`, the SHA-256 of the file the agent will execute.

use alloc::string::String;
use serde::{Deserialize, Serialize};

use crate::digest::{Digest, ImageRef};
use crate::ids::DeviceId;
use crate::signed::{Signed, SignedPayload, VerifyError};

/// The registry repository agent releases live in.
pub const AGENT_REPOSITORY: &str = "coracle-agent";
/// The file the release layer holds.
pub const AGENT_BINARY_FILE: &str = "coracle-agent";

/// An agent binary carries its version as `VERSION_STAMP_PREFIX ++ version`, NUL padded to
/// `VERSION_STAMP_LEN` bytes, so release tooling reads it from the file and a build can be
/// stamped with another version without recompiling (tests make a second release that way).
pub const VERSION_STAMP_PREFIX: &[u8] = b"coracle-agent-version=";
pub const VERSION_STAMP_LEN: usize = 64;

/// The version stamped in an agent binary, if it holds exactly one readable stamp.
pub fn find_version_stamp(binary: &[u8]) -> Option<&str> {
    let mut found = None;
    let mut rest = binary;
    let mut offset = 0;
    while let Some(at) = find(rest, VERSION_STAMP_PREFIX) {
        let start = offset + at + VERSION_STAMP_PREFIX.len();
        let end = (offset + at + VERSION_STAMP_LEN).min(binary.len());
        let field = &binary[start..end];
        let len = field.iter().position(|&b| b == 0).unwrap_or(field.len());
        let version = core::str::from_utf8(&field[..len]).unwrap_or("");
        let whole = field.len() == VERSION_STAMP_LEN - VERSION_STAMP_PREFIX.len();
        if whole && !version.is_empty() && len < field.len() && field[len..].iter().all(|&b| b == 0)
        {
            if found.is_some_and(|f| f != version) {
                return None;
            }
            found = Some(version);
        }
        offset = start;
        rest = &binary[start..];
    }
    found
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The platform of an ELF program from the first 20 bytes of its file; `None` when the bytes
/// are not an ELF header or name a machine this list does not know.
pub fn elf_platform(header: &[u8]) -> Option<&'static str> {
    if header.len() < 20 || &header[..4] != b"\x7fELF" {
        return None;
    }
    let machine = match header[5] {
        1 => u16::from_le_bytes([header[18], header[19]]),
        2 => u16::from_be_bytes([header[18], header[19]]),
        _ => return None,
    };
    Some(match machine {
        3 => "linux/386",
        8 => "linux/mips",
        20 => "linux/ppc",
        21 => "linux/ppc64le",
        22 => "linux/s390x",
        40 => "linux/arm",
        62 => "linux/amd64",
        183 => "linux/arm64",
        243 => "linux/riscv64",
        _ => return None,
    })
}

const AGENT_UPDATE_DOMAIN: &[u8] = b"coracle/v1 agent update\0";
const AGENT_RELEASE_DOMAIN: &[u8] = b"coracle/v1 agent release\0";

/// What the controller signs when it stores a release, kept beside it (detached): the
/// build of `version` for `platform` is the file with SHA-256 `binary`. Anyone holding the
/// deployment key's public half can check a release without the controller's word.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRelease {
    pub version: String,
    pub platform: String,
    pub binary: Digest,
}

impl SignedPayload for AgentRelease {
    const DOMAIN: &'static [u8] = AGENT_RELEASE_DOMAIN;
}

/// Run agent `version` (a release of the controller, or the build the device ran before).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentUpdate {
    pub device: DeviceId,
    /// Grows with each update the controller sends this device; an older one is a replay.
    pub sequence: u64,
    /// The version the binary reports (`coracle-agent --version`), as released.
    pub version: String,
    /// The OCI platform the binary is built for (`linux/arm64`).
    pub platform: String,
    /// The release image (an index or a manifest) in the controller's registry.
    pub image: ImageRef,
    /// SHA-256 of the binary file itself.
    pub binary: Digest,
}

impl SignedPayload for AgentUpdate {
    const DOMAIN: &'static [u8] = AGENT_UPDATE_DOMAIN;
}

/// Why a signed agent update was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentUpdateError {
    #[error("agent update signature")]
    Verify(#[source] VerifyError),
    #[error("agent update is for device {found}, this is device {expected}")]
    WrongDevice { expected: DeviceId, found: DeviceId },
    #[error("agent update {received} is older than update {seen} already followed (replay)")]
    Replay { received: u64, seen: u64 },
    #[error("agent update names image {image}, which is not in the controller's registry")]
    ForeignImage { image: String },
}

impl Signed<AgentUpdate> {
    /// The signature by the trusted key, the device, the sequence (equal is accepted: the
    /// message is retained and redelivered on every connect) and that the image comes from
    /// the controller's own registry.
    pub fn verify_update(
        &self,
        trusted: &crate::VerifyingKey,
        device: &DeviceId,
        seen: u64,
    ) -> Result<AgentUpdate, AgentUpdateError> {
        let update = self.open(trusted).map_err(AgentUpdateError::Verify)?;
        if &update.device != device {
            return Err(AgentUpdateError::WrongDevice {
                expected: device.clone(),
                found: update.device,
            });
        }
        if update.sequence < seen {
            return Err(AgentUpdateError::Replay {
                received: update.sequence,
                seen,
            });
        }
        if !update.image.registry.is_empty() || update.image.repository != AGENT_REPOSITORY {
            return Err(AgentUpdateError::ForeignImage {
                image: alloc::format!("{}", update.image),
            });
        }
        Ok(update)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SigningKey;

    fn update(device: &str, sequence: u64) -> AgentUpdate {
        AgentUpdate {
            device: device.parse().unwrap(),
            sequence,
            version: "0.2.0".into(),
            platform: "linux/arm64".into(),
            image: alloc::format!("{AGENT_REPOSITORY}@{}", Digest::of(b"index"))
                .parse()
                .unwrap(),
            binary: Digest::of(b"binary"),
        }
    }

    fn stamped(version: &str) -> alloc::vec::Vec<u8> {
        let mut stamp = VERSION_STAMP_PREFIX.to_vec();
        stamp.extend_from_slice(version.as_bytes());
        stamp.resize(VERSION_STAMP_LEN, 0);
        let mut binary = b"\x7fELF....code".to_vec();
        binary.extend_from_slice(&stamp);
        binary.extend_from_slice(b"more code");
        binary
    }

    #[test]
    fn the_version_stamp_is_found_in_a_binary() {
        assert_eq!(find_version_stamp(&stamped("0.1.0")), Some("0.1.0"));
        assert_eq!(find_version_stamp(&stamped("0.2.0-ota")), Some("0.2.0-ota"));
        assert_eq!(find_version_stamp(b"no stamp here"), None);
        // Only the prefix (as in code that looks for it), no padded value: not a stamp.
        let mut two = stamped("0.1.0");
        two.extend_from_slice(VERSION_STAMP_PREFIX);
        two.extend_from_slice(b"garbage");
        assert_eq!(find_version_stamp(&two), Some("0.1.0"));
        let mut conflicting = stamped("0.1.0");
        conflicting.extend(stamped("0.2.0"));
        assert_eq!(find_version_stamp(&conflicting), None);
    }

    #[test]
    fn a_signed_update_verifies_for_its_device_and_sequence() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let signed = Signed::sign(&update("pi-1", 3), &key);
        let device = "pi-1".parse().unwrap();
        let got = signed
            .verify_update(&key.verifying_key(), &device, 3)
            .unwrap();
        assert_eq!(got, update("pi-1", 3));
        assert_eq!(
            signed.verify_update(&key.verifying_key(), &device, 4),
            Err(AgentUpdateError::Replay {
                received: 3,
                seen: 4
            })
        );
        let other = "pi-2".parse().unwrap();
        assert!(matches!(
            signed.verify_update(&key.verifying_key(), &other, 0),
            Err(AgentUpdateError::WrongDevice { .. })
        ));
    }

    #[test]
    fn an_update_signed_by_another_key_or_tampered_is_refused() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let other = SigningKey::from_bytes(&[8; 32]);
        let device = "pi-1".parse().unwrap();
        let signed = Signed::sign(&update("pi-1", 1), &other);
        assert!(matches!(
            signed.verify_update(&key.verifying_key(), &device, 0),
            Err(AgentUpdateError::Verify(VerifyError::UnknownKey { .. }))
        ));
        let mut tampered = Signed::sign(&update("pi-1", 1), &key);
        let last = tampered.payload.len() - 1;
        tampered.payload[last] ^= 1;
        assert_eq!(
            tampered.verify_update(&key.verifying_key(), &device, 0),
            Err(AgentUpdateError::Verify(VerifyError::BadSignature))
        );
    }

    #[test]
    fn a_release_signature_covers_version_platform_and_digest() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let release = AgentRelease {
            version: "0.2.0".into(),
            platform: "linux/arm64".into(),
            binary: Digest::of(b"binary"),
        };
        let signed = Signed::sign(&release, &key);
        assert_eq!(signed.open(&key.verifying_key()).unwrap(), release);
        // Not an update: the domains differ.
        let mut as_update: Signed<AgentUpdate> = Signed::sign(&update("pi-1", 1), &key);
        as_update.payload = signed.payload.clone();
        as_update.signature = signed.signature;
        assert!(as_update.open(&key.verifying_key()).is_err());
    }

    #[test]
    fn a_desired_state_signature_is_no_agent_update_signature() {
        // Domains differ: bytes signed as a desired state never verify as an update.
        let key = SigningKey::from_bytes(&[7; 32]);
        let as_desired: Signed<crate::DesiredState> =
            Signed::sign(&crate::samples::desired_with_services(1), &key);
        let mut forged: Signed<AgentUpdate> = Signed::sign(&update("pi-1", 1), &key);
        forged.payload = as_desired.payload;
        forged.signature = as_desired.signature;
        let device = "pi-1".parse().unwrap();
        assert_eq!(
            forged.verify_update(&key.verifying_key(), &device, 0),
            Err(AgentUpdateError::Verify(VerifyError::BadSignature))
        );
    }
}
