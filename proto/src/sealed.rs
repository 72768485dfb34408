//! Sealed boxes: a secret the controller encrypts to one device's X25519 key, carried inside
//! a signed desired state, so the broker and every other device see only ciphertext.
//!
//! Construction (one message per fresh ephemeral key, so a fixed derivation of key and nonce
//! is safe): `shared = X25519(ephemeral, device)`; `HKDF-SHA256(ikm = shared, info = INFO ||
//! ephemeral_pub || device_pub || device_id)` gives a 32-byte key and a 12-byte nonce;
//! `ChaCha20-Poly1305` encrypts. The device id in `info` binds the box to one device: a box
//! copied into another device's state does not open even where keys were reused.
//!
//! No I/O and no randomness here: the caller passes the ephemeral secret (the controller
//! takes it from the OS), so this stays `no_std` and testable.

use alloc::vec::Vec;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hkdf::Hkdf;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};

use crate::ids::DeviceId;

/// Domain separation for the key derivation; a new construction gets a new label.
const INFO: &[u8] = b"coracle sealed v1";

/// Why a box could not be sealed or opened. Deliberately carries no key or plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("the device's sealing key is a low-order point (no shared secret)")]
    WeakKey,
    #[error("the sealed box does not open with this device's key and id (wrong key, wrong device or tampered)")]
    Open,
    #[error("encrypt the sealed box")]
    Encrypt,
}

/// A secret sealed for one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    /// The sender's one-time X25519 public key.
    pub ephemeral: [u8; 32],
    /// ChaCha20-Poly1305 ciphertext with its 16-byte tag.
    pub ciphertext: Vec<u8>,
}

/// The X25519 public key of a device's sealing secret.
pub fn public_key(secret: &[u8; 32]) -> [u8; 32] {
    PublicKey::from(&StaticSecret::from(*secret)).to_bytes()
}

fn cipher_for(
    shared: &x25519_dalek::SharedSecret,
    ephemeral: &[u8; 32],
    device_key: &[u8; 32],
    device: &DeviceId,
) -> Result<(ChaCha20Poly1305, [u8; 12]), SealError> {
    if !shared.was_contributory() {
        return Err(SealError::WeakKey);
    }
    let hkdf = Hkdf::<Sha256>::new(None, shared.as_bytes());
    let mut okm = [0u8; 44];
    let info: [&[u8]; 4] = [INFO, ephemeral, device_key, device.as_str().as_bytes()];
    // 44 bytes is far below HKDF-SHA256's limit of 255 * 32.
    let mut flat = Vec::with_capacity(128);
    for part in info {
        flat.extend_from_slice(part);
    }
    hkdf.expand(&flat, &mut okm)
        .map_err(|_| SealError::Encrypt)?;
    let cipher = ChaCha20Poly1305::new(Key::from_slice(&okm[..32]));
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&okm[32..]);
    Ok((cipher, nonce))
}

/// Seals `plaintext` for the device holding the secret behind `device_key`.
/// `ephemeral_secret` must be fresh random bytes for every call.
pub fn seal(
    device_key: &[u8; 32],
    device: &DeviceId,
    ephemeral_secret: [u8; 32],
    plaintext: &[u8],
) -> Result<Sealed, SealError> {
    let ephemeral = StaticSecret::from(ephemeral_secret);
    let ephemeral_pub = PublicKey::from(&ephemeral).to_bytes();
    let shared = ephemeral.diffie_hellman(&PublicKey::from(*device_key));
    let (cipher, nonce) = cipher_for(&shared, &ephemeral_pub, device_key, device)?;
    let ciphertext = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: INFO,
            },
        )
        .map_err(|_| SealError::Encrypt)?;
    Ok(Sealed {
        ephemeral: ephemeral_pub,
        ciphertext,
    })
}

/// Opens a box sealed for this device (`secret`, `device`).
pub fn open(secret: &[u8; 32], device: &DeviceId, sealed: &Sealed) -> Result<Vec<u8>, SealError> {
    let secret = StaticSecret::from(*secret);
    let device_key = PublicKey::from(&secret).to_bytes();
    let shared = secret.diffie_hellman(&PublicKey::from(sealed.ephemeral));
    let (cipher, nonce) = cipher_for(&shared, &sealed.ephemeral, &device_key, device)?;
    cipher
        .decrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: &sealed.ciphertext,
                aad: INFO,
            },
        )
        .map_err(|_| SealError::Open)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEVICE_SECRET: [u8; 32] = [7; 32];
    const EPHEMERAL: [u8; 32] = [42; 32];

    fn device(name: &str) -> DeviceId {
        name.parse().unwrap()
    }

    fn sealed_for_pi() -> Sealed {
        seal(
            &public_key(&DEVICE_SECRET),
            &device("pi-1"),
            EPHEMERAL,
            b"robot:s3cret",
        )
        .unwrap()
    }

    #[test]
    fn seal_then_open_round_trips() {
        let sealed = sealed_for_pi();
        assert_eq!(
            open(&DEVICE_SECRET, &device("pi-1"), &sealed).unwrap(),
            b"robot:s3cret"
        );
        assert!(!sealed
            .ciphertext
            .windows(b"s3cret".len())
            .any(|w| w == b"s3cret"));
    }

    #[test]
    fn another_key_cannot_open() {
        let sealed = sealed_for_pi();
        assert_eq!(
            open(&[8; 32], &device("pi-1"), &sealed),
            Err(SealError::Open)
        );
    }

    #[test]
    fn tampered_ciphertext_is_refused() {
        let sealed = sealed_for_pi();
        for i in 0..sealed.ciphertext.len() {
            let mut bad = sealed.clone();
            bad.ciphertext[i] ^= 1;
            assert_eq!(
                open(&DEVICE_SECRET, &device("pi-1"), &bad),
                Err(SealError::Open)
            );
        }
        let mut bad = sealed.clone();
        bad.ephemeral[0] ^= 1;
        assert!(open(&DEVICE_SECRET, &device("pi-1"), &bad).is_err());
    }

    #[test]
    fn wrong_device_id_is_refused() {
        let sealed = sealed_for_pi();
        assert_eq!(
            open(&DEVICE_SECRET, &device("pi-2"), &sealed),
            Err(SealError::Open)
        );
    }

    #[test]
    fn low_order_device_key_is_refused() {
        assert_eq!(
            seal(&[0; 32], &device("pi-1"), EPHEMERAL, b"x"),
            Err(SealError::WeakKey)
        );
    }
}
