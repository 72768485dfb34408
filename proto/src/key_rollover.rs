//! Deployment key rollover. Each rotation on the controller adds a [`KeyLink`] — the next
//! public key and its epoch — signed by the key it replaces. The whole chain is retained on
//! every device's `keys` topic. A device walks it from the key it trusts now
//! ([`KeyChain::advance`]): one that was offline through several rotations still catches up,
//! and a link that is not signed by a key the device already trusts is never followed.
//!
//! Signatures here are bound to their own domain, so a link can never pass for a desired
//! state or the other way round. Epochs only go up along a walk, so a replayed older link
//! cannot lead a device back to a retired key.

use alloc::vec::Vec;

use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::event::RejectReason;
use crate::signed::{KeyId, Signed, SignedPayload, VerifyError};

/// The domain of rollover signatures (see `signed`).
const ROLLOVER_DOMAIN: &[u8] = b"coracle/v1 deployment key rollover\0";

/// The most links a chain carries. The controller keeps the newest ones: a device that
/// trusts a key older than the first link kept must be enrolled again.
pub const MAX_LINKS: usize = 64;

/// One rotation: from `epoch` on, `next` signs deployments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyLink {
    /// 1 for the first rotation, one more for each after it.
    pub epoch: u32,
    /// The ed25519 public key that replaces the signer of this link.
    pub next: [u8; 32],
}

impl SignedPayload for KeyLink {
    const DOMAIN: &'static [u8] = ROLLOVER_DOMAIN;
}

/// Every rotation so far (the newest [`MAX_LINKS`]), oldest first.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct KeyChain {
    pub links: Vec<Signed<KeyLink>>,
}

/// Where a walk along the chain ended.
#[derive(Debug, Clone)]
pub struct Advanced {
    pub key: VerifyingKey,
    pub epoch: u32,
    /// The links followed, in order (at least one).
    pub followed: KeyChain,
}

/// Why a chain could not be followed. A link signed by a key the device does not trust is
/// not an error (it is skipped); one that claims a trusted signer but fails is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("key rollover link {index} names signer {signer}, a key this device trusts, but does not verify")]
    Link {
        index: usize,
        signer: KeyId,
        #[source]
        source: VerifyError,
    },
    #[error("key rollover link {index} does not hold a valid ed25519 public key")]
    InvalidKey { index: usize },
    #[error("key chain holds {len} links, more than {MAX_LINKS}")]
    TooLong { len: usize },
}

impl ChainError {
    /// The class reported in a `Rejected` event.
    pub fn reject_reason(&self) -> RejectReason {
        match self {
            ChainError::Link { source, .. } => source.reject_reason(),
            ChainError::InvalidKey { .. } => RejectReason::Invalid,
            ChainError::TooLong { .. } => RejectReason::TooLarge,
        }
    }
}

impl KeyChain {
    /// The epoch of the newest link (0 before the first rotation).
    pub fn epoch(&self) -> u32 {
        self.links
            .last()
            .and_then(|link| link.open_unchecked().ok())
            .map_or(0, |link| link.epoch)
    }

    /// Records a rotation from `current` to `next`, signed by `current`, and drops the
    /// oldest links beyond [`MAX_LINKS`]. Returns the new epoch.
    pub fn extend(&mut self, current: &SigningKey, next: &VerifyingKey) -> u32 {
        let epoch = self.epoch() + 1;
        let link = KeyLink {
            epoch,
            next: next.to_bytes(),
        };
        self.links.push(Signed::sign(&link, current));
        if self.links.len() > MAX_LINKS {
            let extra = self.links.len() - MAX_LINKS;
            self.links.drain(..extra);
        }
        epoch
    }

    /// Follows every link signed by the key trusted at that point, starting from `trusted`
    /// at `epoch`. `None` when no link leads anywhere new.
    pub fn advance(
        &self,
        trusted: &VerifyingKey,
        epoch: u32,
    ) -> Result<Option<Advanced>, ChainError> {
        if self.links.len() > MAX_LINKS {
            return Err(ChainError::TooLong {
                len: self.links.len(),
            });
        }
        let mut key = *trusted;
        let mut at = epoch;
        let mut followed = KeyChain::default();
        // Epochs rise strictly, so the walk ends within `links.len()` steps.
        while let Some((index, signed)) = self
            .links
            .iter()
            .enumerate()
            .find(|(_, link)| link.key_id == KeyId::of(&key))
        {
            let link = signed.open(&key).map_err(|source| ChainError::Link {
                index,
                signer: signed.key_id,
                source,
            })?;
            if link.epoch <= at {
                break;
            }
            key = VerifyingKey::from_bytes(&link.next)
                .map_err(|_| ChainError::InvalidKey { index })?;
            at = link.epoch;
            followed.links.push(signed.clone());
        }
        Ok((!followed.links.is_empty()).then_some(Advanced {
            key,
            epoch: at,
            followed,
        }))
    }
}

impl Signed<KeyLink> {
    /// The link's content without checking its signature: for the controller's own
    /// bookkeeping of a chain it wrote, never for a trust decision.
    fn open_unchecked(&self) -> Result<KeyLink, crate::DecodeError> {
        KeyLink::decode_payload(&self.payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decode, encode, samples, DesiredState};

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn chain_of(keys: &[SigningKey]) -> KeyChain {
        let mut chain = KeyChain::default();
        for pair in keys.windows(2) {
            chain.extend(&pair[0], &pair[1].verifying_key());
        }
        chain
    }

    #[test]
    fn a_device_offline_through_several_rotations_catches_up() {
        let keys = [key(1), key(2), key(3), key(4)];
        let chain: KeyChain = decode(&encode(&chain_of(&keys))).unwrap();
        assert_eq!(chain.epoch(), 3);
        let walked = chain.advance(&keys[0].verifying_key(), 0).unwrap().unwrap();
        assert_eq!(walked.key, keys[3].verifying_key());
        assert_eq!((walked.epoch, walked.followed.links.len()), (3, 3));
        // A device enrolled after the second rotation starts from that key.
        let late = chain.advance(&keys[2].verifying_key(), 0).unwrap().unwrap();
        assert_eq!(late.key, keys[3].verifying_key());
        assert_eq!(late.followed.links.len(), 1);
        assert!(chain
            .advance(&keys[3].verifying_key(), 3)
            .unwrap()
            .is_none());
    }

    #[test]
    fn links_from_untrusted_keys_are_not_followed() {
        let chain = chain_of(&[key(7), key(8)]);
        assert!(chain.advance(&key(1).verifying_key(), 0).unwrap().is_none());
    }

    #[test]
    fn a_forged_link_claiming_a_trusted_signer_is_refused() {
        let trusted = key(1);
        let mut chain = KeyChain::default();
        chain.extend(&key(9), &key(66).verifying_key());
        chain.links[0].key_id = KeyId::of(&trusted.verifying_key());
        let err = chain.advance(&trusted.verifying_key(), 0).unwrap_err();
        assert!(matches!(
            err,
            ChainError::Link {
                index: 0,
                source: VerifyError::BadSignature,
                ..
            }
        ));
    }

    #[test]
    fn a_replayed_older_link_cannot_lead_back_to_a_retired_key() {
        let (k0, k1) = (key(1), key(2));
        let mut chain = chain_of(&[k0.clone(), k1.clone()]);
        // The holder of k1 (now current, epoch 1) cannot be walked back to k0 by a link at
        // an epoch it already passed.
        let back = Signed::sign(
            &KeyLink {
                epoch: 1,
                next: k0.verifying_key().to_bytes(),
            },
            &k1,
        );
        chain.links.push(back);
        assert!(chain.advance(&k1.verifying_key(), 1).unwrap().is_none());
        // From k0 the walk stops at k1 rather than cycling.
        let walked = chain.advance(&k0.verifying_key(), 0).unwrap().unwrap();
        assert_eq!((walked.key, walked.epoch), (k1.verifying_key(), 1));
    }

    #[test]
    fn a_link_signature_is_not_valid_for_a_desired_state() {
        let signer = key(1);
        let link = Signed::sign(
            &KeyLink {
                epoch: 1,
                next: [5; 32],
            },
            &signer,
        );
        let as_desired: Signed<DesiredState> = decode(&encode(&link)).unwrap();
        assert_eq!(
            as_desired.open(&signer.verifying_key()).unwrap_err(),
            VerifyError::BadSignature
        );
        let state = samples::desired_with_services(1);
        let desired = Signed::sign(&state, &signer);
        let as_link: Signed<KeyLink> = decode(&encode(&desired)).unwrap();
        assert!(as_link.open(&signer.verifying_key()).is_err());
    }

    #[test]
    fn the_chain_keeps_its_newest_links() {
        let keys: Vec<SigningKey> = (0..=(MAX_LINKS as u8 + 2)).map(key).collect();
        let chain = chain_of(&keys);
        assert_eq!(chain.links.len(), MAX_LINKS);
        assert_eq!(chain.epoch(), MAX_LINKS as u32 + 2);
        let mut long = chain.clone();
        long.links.push(chain.links[0].clone());
        assert_eq!(
            long.advance(&keys[0].verifying_key(), 0).unwrap_err(),
            ChainError::TooLong { len: MAX_LINKS + 1 }
        );
    }
}
