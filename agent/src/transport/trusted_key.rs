//! The deployment key this device trusts now: the bootstrap's pinned key, moved along the
//! controller's rollover chain (`coracle_proto::key_rollover`). The links that brought it
//! here are kept in the state dir (checksummed, 0600), so after a restart the device trusts
//! the same key before the broker redelivers anything. Every load walks again from the
//! bootstrap key, so that file can only ever hold keys the bootstrap key vouched for, link
//! by link; a damaged file falls back to the bootstrap key, and the retained chain on the
//! `keys` topic brings the device forward again.

use std::path::PathBuf;

use coracle_proto::key_rollover::{Advanced, KeyChain};
use coracle_proto::{decode, encode, KeyId, VerifyingKey};

use super::admit::Rejection;
use crate::state::file::{read_checked, write_atomic};

/// The trusted deployment key and how it was reached.
#[derive(Debug)]
pub struct TrustedKey {
    current: VerifyingKey,
    epoch: u32,
    /// The links followed from the bootstrap key, oldest first.
    path: KeyChain,
    file: Option<PathBuf>,
}

impl TrustedKey {
    /// The bootstrap key moved along the links kept in `file` (if any).
    pub fn load(root: VerifyingKey, file: Option<PathBuf>) -> Self {
        let mut trusted = Self {
            current: root,
            epoch: 0,
            path: KeyChain::default(),
            file,
        };
        let Some(file) = &trusted.file else {
            return trusted;
        };
        let kept = match read_checked(file) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return trusted,
            Err(err) => {
                tracing::warn!(error = %err, "kept deployment key chain unreadable; trusting the bootstrap key until the controller's chain arrives");
                return trusted;
            }
        };
        match decode::<KeyChain>(&kept)
            .map_err(|err| err.to_string())
            .and_then(|chain| chain.advance(&root, 0).map_err(|err| err.to_string()))
        {
            Ok(Some(advanced)) => trusted.adopt(advanced),
            Ok(None) => {}
            Err(err) => tracing::warn!(
                file = %file.display(),
                error = %err,
                "kept deployment key chain does not start at the bootstrap key; trusting the bootstrap key"
            ),
        }
        trusted
    }

    pub fn key(&self) -> &VerifyingKey {
        &self.current
    }

    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// Follows a chain body from the `keys` topic. `Ok(true)` when the trusted key moved
    /// (and was kept on disk, if that worked: a failed write is logged, and the retained
    /// chain is followed again after a restart).
    pub fn follow(&mut self, body: &[u8]) -> Result<bool, Rejection> {
        let chain: KeyChain = decode(body)
            .map_err(|e| Rejection::new(e.reject_reason(), "deployment key chain", &e))?;
        let advanced = chain
            .advance(&self.current, self.epoch)
            .map_err(|e| Rejection::new(e.reject_reason(), "deployment key chain", &e))?;
        let Some(advanced) = advanced else {
            return Ok(false);
        };
        let from = KeyId::of(&self.current);
        self.adopt(advanced);
        tracing::info!(
            from = %from,
            to = %KeyId::of(&self.current),
            epoch = self.epoch,
            "deployment key rolled over"
        );
        self.keep();
        Ok(true)
    }

    fn adopt(&mut self, advanced: Advanced) {
        self.current = advanced.key;
        self.epoch = advanced.epoch;
        self.path.links.extend(advanced.followed.links);
    }

    fn keep(&mut self) {
        let Some(file) = &self.file else {
            return;
        };
        // The walk from the bootstrap key must fit in one chain; beyond that the oldest
        // links go, and a restart falls back to the bootstrap key (see module doc).
        let extra = self
            .path
            .links
            .len()
            .saturating_sub(coracle_proto::key_rollover::MAX_LINKS);
        self.path.links.drain(..extra);
        if let Err(err) = write_atomic(file, &encode(&self.path)) {
            tracing::warn!(error = %err, "cannot keep the deployment key chain; it is followed again from the broker after a restart");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coracle_proto::{RejectReason, SigningKey};

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn chain(keys: &[SigningKey]) -> Vec<u8> {
        let mut chain = KeyChain::default();
        for pair in keys.windows(2) {
            chain.extend(&pair[0], &pair[1].verifying_key());
        }
        encode(&chain)
    }

    #[test]
    fn a_followed_chain_is_trusted_again_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("deployment-keys");
        let keys = [key(1), key(2), key(3)];
        let mut trusted = TrustedKey::load(keys[0].verifying_key(), Some(file.clone()));
        assert!(trusted.follow(&chain(&keys[..2])).unwrap());
        assert!(trusted.follow(&chain(&keys)).unwrap());
        assert!(!trusted.follow(&chain(&keys)).unwrap(), "nothing new");
        assert_eq!(trusted.key(), &keys[2].verifying_key());

        let again = TrustedKey::load(keys[0].verifying_key(), Some(file.clone()));
        assert_eq!((again.key(), again.epoch()), (&keys[2].verifying_key(), 2));
        let mode = std::fs::metadata(&file).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );

        // The kept links are walked from the bootstrap key: another bootstrap ignores them.
        let other = TrustedKey::load(key(9).verifying_key(), Some(file));
        assert_eq!(other.key(), &key(9).verifying_key());
    }

    #[test]
    fn a_damaged_kept_chain_falls_back_to_the_bootstrap_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("deployment-keys");
        std::fs::write(&file, b"not a state file").unwrap();
        let trusted = TrustedKey::load(key(1).verifying_key(), Some(file));
        assert_eq!(trusted.key(), &key(1).verifying_key());
    }

    #[test]
    fn bad_chains_are_rejected_by_name() {
        let mut trusted = TrustedKey::load(key(1).verifying_key(), None);
        let err = trusted.follow(b"\x01\xff\xff").unwrap_err();
        assert_eq!(err.reason, RejectReason::Malformed);
        assert!(
            err.detail.starts_with("deployment key chain"),
            "{}",
            err.detail
        );

        let mut forged = KeyChain::default();
        forged.extend(&key(8), &key(9).verifying_key());
        forged.links[0].key_id = KeyId::of(&key(1).verifying_key());
        let err = trusted.follow(&encode(&forged)).unwrap_err();
        assert_eq!(err.reason, RejectReason::BadSignature);
        assert!(err.detail.contains("does not verify"), "{}", err.detail);
        assert_eq!(trusted.key(), &key(1).verifying_key());
    }
}
