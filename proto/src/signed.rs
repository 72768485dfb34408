//! `Signed<T>`: an ed25519-signed envelope. The device pins the controller's deployment key at
//! enrolment, so a compromised broker can relay but never forge or replay a deployment.
//!
//! The signature covers `DOMAIN ++ payload`, where payload is the encoded message with its
//! version byte; the domain string keeps these signatures from being valid for anything else.

use alloc::vec::Vec;
use core::fmt;
use core::marker::PhantomData;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

use crate::codec::{self, DecodeError};
use crate::desired::DesiredState;
use crate::event::RejectReason;
use crate::ids::{DeviceId, Generation};

const DOMAIN: &[u8] = b"coracle/v1 signed envelope\0";

/// Short id of a deployment public key: the first 8 bytes of its sha256. Lets a device say
/// "signed by a key I do not know" instead of just "bad signature".
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KeyId(pub [u8; 8]);

impl KeyId {
    /// The id of a public key.
    pub fn of(key: &VerifyingKey) -> Self {
        let hash = Sha256::digest(key.as_bytes());
        let mut id = [0u8; 8];
        id.copy_from_slice(&hash[..8]);
        Self(id)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// A 64-byte ed25519 signature (serde's array support stops at 32 elements).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SignatureBytes(pub [u8; 64]);

impl fmt::Debug for SignatureBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SignatureBytes(..)")
    }
}

impl Serialize for SignatureBytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for SignatureBytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Bytes64;
        impl<'de> Visitor<'de> for Bytes64 {
            type Value = SignatureBytes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("64 signature bytes")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<SignatureBytes, E> {
                let array =
                    <[u8; 64]>::try_from(v).map_err(|_| E::invalid_length(v.len(), &self))?;
                Ok(SignatureBytes(array))
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<SignatureBytes, E> {
                self.visit_bytes(&v)
            }
        }
        deserializer.deserialize_bytes(Bytes64)
    }
}

/// A message of type `T`, encoded, with the signature of the key named by `key_id`.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Signed<T> {
    pub payload: Vec<u8>,
    pub key_id: KeyId,
    pub signature: SignatureBytes,
    #[serde(skip)]
    _type: PhantomData<fn() -> T>,
}

// Manual impls: derives would demand `T: Clone`/`T: Debug` although only bytes are held.
impl<T> Clone for Signed<T> {
    fn clone(&self) -> Self {
        Self {
            payload: self.payload.clone(),
            key_id: self.key_id,
            signature: self.signature,
            _type: PhantomData,
        }
    }
}

impl<T> fmt::Debug for Signed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signed")
            .field("payload_len", &self.payload.len())
            .field("key_id", &self.key_id)
            .finish()
    }
}

/// Why a signed envelope was refused. Checked in this order, so the first failure is named.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("signed by key {found}, but this device trusts key {expected}")]
    UnknownKey { expected: KeyId, found: KeyId },
    #[error("signature does not match the payload")]
    BadSignature,
    #[error("signed payload cannot be decoded")]
    Decode(#[source] DecodeError),
    #[error("desired state is for device {found}, this is device {expected}")]
    WrongDevice { expected: DeviceId, found: DeviceId },
    #[error("generation {received} is older than the applied generation {applied} (replay)")]
    Replay {
        received: Generation,
        applied: Generation,
    },
}

impl VerifyError {
    /// The class reported in a `Rejected` event.
    pub fn reject_reason(&self) -> RejectReason {
        match self {
            VerifyError::UnknownKey { .. } => RejectReason::UnknownKey,
            VerifyError::BadSignature => RejectReason::BadSignature,
            VerifyError::Decode(err) => err.reject_reason(),
            VerifyError::WrongDevice { .. } => RejectReason::WrongDevice,
            VerifyError::Replay { .. } => RejectReason::Replay,
        }
    }
}

fn signed_message(domain: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(domain.len() + payload.len());
    msg.extend_from_slice(domain);
    msg.extend_from_slice(payload);
    msg
}

/// A message that travels signed: how its payload decodes (older layouts included), and the
/// domain its signatures are bound to, so a signature over one kind of message is never
/// valid for another.
pub trait SignedPayload: Serialize + DeserializeOwned {
    const DOMAIN: &'static [u8] = DOMAIN;

    fn decode_payload(body: &[u8]) -> Result<Self, DecodeError> {
        codec::decode(body)
    }
}

impl SignedPayload for DesiredState {
    fn decode_payload(body: &[u8]) -> Result<Self, DecodeError> {
        DesiredState::decode(body)
    }
}

impl<T: SignedPayload> Signed<T> {
    /// Encodes and signs a message.
    pub fn sign(msg: &T, key: &SigningKey) -> Self {
        let payload = codec::encode(msg);
        let signature = key.sign(&signed_message(T::DOMAIN, &payload));
        Self {
            payload,
            key_id: KeyId::of(&key.verifying_key()),
            signature: SignatureBytes(signature.to_bytes()),
            _type: PhantomData,
        }
    }

    /// Checks the key id and signature, then decodes the payload.
    pub fn open(&self, trusted: &VerifyingKey) -> Result<T, VerifyError> {
        let expected = KeyId::of(trusted);
        if self.key_id != expected {
            return Err(VerifyError::UnknownKey {
                expected,
                found: self.key_id,
            });
        }
        let signature = Signature::from_bytes(&self.signature.0);
        trusted
            .verify(&signed_message(T::DOMAIN, &self.payload), &signature)
            .map_err(|_| VerifyError::BadSignature)?;
        T::decode_payload(&self.payload).map_err(VerifyError::Decode)
    }
}

impl Signed<DesiredState> {
    /// Everything a device checks before acting on a desired state: the signature by its
    /// pinned key, that the state is addressed to it, and that the generation is not older
    /// than the one it applied. An equal generation is accepted: retained messages are
    /// redelivered on every reconnect, and applying the same state again is a no-op.
    pub fn verify(
        &self,
        trusted: &VerifyingKey,
        device: &DeviceId,
        applied: Generation,
    ) -> Result<DesiredState, VerifyError> {
        let state = self.open(trusted)?;
        if &state.device != device {
            return Err(VerifyError::WrongDevice {
                expected: device.clone(),
                found: state.device,
            });
        }
        if state.generation < applied {
            return Err(VerifyError::Replay {
                received: state.generation,
                applied,
            });
        }
        Ok(state)
    }
}
