//! Sealing a secret to one device: to the X25519 key it reported
//! (`ReportedState::sealing_key`), with a fresh ephemeral key each time, so the broker
//! carries only ciphertext (`coracle_proto::sealed`). Direct-registry credentials, rotated
//! broker passwords and rotated pull tokens go this way; each caller first refuses a device
//! that reported no key, in its own words.

use coracle_proto::{sealed, DeviceId, SealError, Sealed};
use rand_core::{OsRng, RngCore};

/// Why a secret could not be sealed for a device.
#[derive(Debug, thiserror::Error)]
pub enum DeviceSealError {
    #[error("device {device} reported a sealing key that is not 64 hex characters")]
    KeyShape { device: DeviceId },
    #[error("seal a secret for device {device}")]
    Seal {
        device: DeviceId,
        #[source]
        source: SealError,
    },
}

/// `plaintext` sealed to `device`'s reported key (`sealing_key_hex`).
pub fn seal_to_device(
    sealing_key_hex: &str,
    device: &DeviceId,
    plaintext: &[u8],
) -> Result<Sealed, DeviceSealError> {
    let key: [u8; 32] = hex::decode(sealing_key_hex)
        .ok()
        .and_then(|k| k.try_into().ok())
        .ok_or_else(|| DeviceSealError::KeyShape {
            device: device.clone(),
        })?;
    let mut ephemeral = [0u8; 32];
    OsRng.fill_bytes(&mut ephemeral);
    sealed::seal(&key, device, ephemeral, plaintext).map_err(|source| DeviceSealError::Seal {
        device: device.clone(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_key_is_named_and_a_good_one_seals() {
        let device: DeviceId = "pi-1".parse().unwrap();
        for bad in ["", "zz", &"ab".repeat(31)] {
            let err = seal_to_device(bad, &device, b"x").unwrap_err();
            assert!(
                matches!(err, DeviceSealError::KeyShape { .. }),
                "{bad}: {err}"
            );
        }
        // X25519's base point (u = 9): a valid public key.
        let mut public = [0u8; 32];
        public[0] = 9;
        let boxed = seal_to_device(&hex::encode(public), &device, b"x").unwrap();
        let again = seal_to_device(&hex::encode(public), &device, b"x").unwrap();
        assert_ne!(
            boxed.ephemeral, again.ephemeral,
            "a fresh ephemeral key each time"
        );
    }
}
