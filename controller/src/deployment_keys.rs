//! The deployment signing key and its rollover chain (`coracle_proto::key_rollover`).
//!
//! `coracle admin rotate-deployment-key` makes a new key, records a link to it signed by
//! the current key, signs every stored desired state again with it, and from then on signs
//! with it alone. Devices follow the chain retained on their `keys` topic (republished with
//! the desired states), so one that was offline during the rollover catches up when it is
//! back; new bootstrap files pin the new key.
//!
//! The public half of every retired key is kept, with its epoch and when it was retired
//! (`deployment-keys.retired`, JSON), so an operator can tell which key signed an old state
//! and [`DeploymentKeys::status`] can list them; the private half is gone with the rename.
//!
//! Crash safety: the new key is written first (`deployment.key.next`), then the stored
//! states are signed again, then the chain (`deployment-keys.chain`), the retired list, and
//! last the rename of the new key over `deployment.key`. A start that finds
//! `deployment.key.next` redoes the steps after the first: signing again skips states the
//! new key already signed, and neither the chain nor the retired list gets an entry twice.

use std::fs;
use std::path::PathBuf;
use std::sync::{Arc, RwLock, RwLockReadGuard};

use coracle_proto::key_rollover::KeyChain;
use coracle_proto::{decode, encode, DesiredState, KeyId, Signed, SigningKey, VerifyingKey};
use rand_core::OsRng;

use crate::datadir::{write_private, write_public, DataDir, DataDirError};
use crate::secrets::{read_signing_key, SecretsError};
use crate::store::{Store, StoreError};

/// Why a rotation (or the start that finishes one) failed. The key in use is unchanged
/// unless the error says the rename failed.
#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error(transparent)]
    Secret(#[from] SecretsError),
    #[error(transparent)]
    File(#[from] DataDirError),
    #[error("sign the stored desired states again")]
    Store(#[from] StoreError),
    #[error("{path} does not hold a valid deployment key chain")]
    CorruptChain {
        path: PathBuf,
        #[source]
        source: coracle_proto::DecodeError,
    },
    #[error("{path} does not hold a valid list of retired deployment keys")]
    CorruptRetired {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("make {to} the deployment key")]
    Rename {
        to: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A key that signed deployments before a rotation replaced it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RetiredKey {
    /// The epoch it was the key of (0: the controller's first key).
    pub epoch: u32,
    pub key_id: String,
    /// 64 hex characters.
    pub public_key: String,
    /// When the rotation replaced it (Unix seconds).
    pub retired_unix: i64,
}

/// What a rotation did.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Rotated {
    pub epoch: u32,
    /// Short id of the new key (the `key_id` devices log).
    pub key_id: String,
    /// The new public key, 64 hex characters (what new bootstrap files pin).
    pub public_key: String,
    /// Stored desired states signed again with the new key.
    pub resigned: usize,
    /// Stored states that did not verify under the old key and were left as they were.
    pub skipped: usize,
}

#[derive(Debug)]
struct Current {
    key: Arc<SigningKey>,
    chain: KeyChain,
}

/// The key deployments are signed with now, and the chain that leads devices to it.
#[derive(Debug)]
pub struct DeploymentKeys {
    key_path: PathBuf,
    next_path: PathBuf,
    chain_path: PathBuf,
    retired_path: PathBuf,
    current: RwLock<Current>,
}

impl DeploymentKeys {
    /// The key the secrets loaded, its chain from the data dir, and any rotation a crash
    /// interrupted finished against `store`.
    pub fn load(dir: &DataDir, key: SigningKey, store: &Store) -> Result<Self, RotationError> {
        let key_path = dir.deployment_key();
        let chain_path = dir.root().join("deployment-keys.chain");
        let chain = match fs::read(&chain_path) {
            Ok(bytes) => decode(&bytes).map_err(|source| RotationError::CorruptChain {
                path: chain_path.clone(),
                source,
            })?,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => KeyChain::default(),
            Err(source) => {
                return Err(DataDirError::ReadFile {
                    path: chain_path,
                    source,
                }
                .into())
            }
        };
        let keys = Self {
            next_path: key_path.with_extension("key.next"),
            key_path,
            chain_path,
            retired_path: dir.root().join("deployment-keys.retired"),
            current: RwLock::new(Current {
                key: Arc::new(key),
                chain,
            }),
        };
        if keys.next_path.exists() {
            let next = read_signing_key(&keys.next_path)?;
            let done = keys.complete(&mut keys.write(), next, store)?;
            tracing::warn!(epoch = done.epoch, key = %done.key_id, "finished a deployment key rotation that a stop interrupted");
        }
        Ok(keys)
    }

    /// The key to sign with now.
    pub fn signing_key(&self) -> Arc<SigningKey> {
        self.read().key.clone()
    }

    /// The chain devices walk to the current key (empty before the first rotation).
    pub fn chain(&self) -> KeyChain {
        self.read().chain.clone()
    }

    /// The current key's epoch and id.
    pub fn current(&self) -> (u32, VerifyingKey) {
        let current = self.read();
        (current.chain.epoch(), current.key.verifying_key())
    }

    /// Every retired key, oldest first (empty before the first rotation).
    pub fn retired(&self) -> Result<Vec<RetiredKey>, RotationError> {
        let bytes = match fs::read(&self.retired_path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(DataDirError::ReadFile {
                    path: self.retired_path.clone(),
                    source,
                }
                .into())
            }
        };
        serde_json::from_slice(&bytes).map_err(|source| RotationError::CorruptRetired {
            path: self.retired_path.clone(),
            source,
        })
    }

    /// Signs and stores under the read lock, so a rotation cannot slip between the
    /// signature and the store (it would sign the stored state again with the old key).
    pub fn sign_with<R>(&self, sign: impl FnOnce(&SigningKey) -> R) -> R {
        sign(&self.read().key)
    }

    /// Rotates to a fresh key (see the module doc for the order of the steps).
    pub fn rotate(&self, store: &Store) -> Result<Rotated, RotationError> {
        let mut current = self.write();
        let next = SigningKey::generate(&mut OsRng);
        write_private(&self.next_path, hex::encode(next.to_bytes()).as_bytes())?;
        self.complete(&mut current, next, store)
    }

    fn complete(
        &self,
        current: &mut Current,
        next: SigningKey,
        store: &Store,
    ) -> Result<Rotated, RotationError> {
        let public = next.verifying_key();
        let (resigned, skipped) = sign_again(store, &current.key.verifying_key(), &next)?;
        let mut chain = current.chain.clone();
        if tip(&chain) != Some(public) {
            chain.extend(&current.key, &public);
        }
        write_public(&self.chain_path, &encode(&chain))?;
        self.retire(current.chain.epoch(), &current.key.verifying_key())?;
        fs::rename(&self.next_path, &self.key_path).map_err(|source| RotationError::Rename {
            to: self.key_path.clone(),
            source,
        })?;
        let epoch = chain.epoch();
        *current = Current {
            key: Arc::new(next),
            chain,
        };
        tracing::info!(epoch, key = %KeyId::of(&public), resigned, skipped, "deployment key rotated");
        Ok(Rotated {
            epoch,
            key_id: KeyId::of(&public).to_string(),
            public_key: hex::encode(public.as_bytes()),
            resigned,
            skipped,
        })
    }

    /// Adds `key` to the retired list, unless a redone rotation already did.
    fn retire(&self, epoch: u32, key: &VerifyingKey) -> Result<(), RotationError> {
        let mut retired = self.retired()?;
        let key_id = KeyId::of(key).to_string();
        if retired.iter().any(|r| r.key_id == key_id) {
            return Ok(());
        }
        retired.push(RetiredKey {
            epoch,
            key_id,
            public_key: hex::encode(key.as_bytes()),
            retired_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
        });
        let json = serde_json::to_vec_pretty(&retired).map_err(|source| {
            RotationError::CorruptRetired {
                path: self.retired_path.clone(),
                source,
            }
        })?;
        write_public(&self.retired_path, &json)?;
        Ok(())
    }

    fn read(&self) -> RwLockReadGuard<'_, Current> {
        self.current.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Current> {
        self.current.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// The key the newest link leads to.
fn tip(chain: &KeyChain) -> Option<VerifyingKey> {
    let link = chain.links.last()?;
    let payload: coracle_proto::KeyLink =
        <coracle_proto::KeyLink as coracle_proto::SignedPayload>::decode_payload(&link.payload)
            .ok()?;
    VerifyingKey::from_bytes(&payload.next).ok()
}

/// Signs every stored desired state that verifies under `old` again with `next`; states
/// `next` already signed are left alone. Returns (signed again, left because unverifiable).
fn sign_again(
    store: &Store,
    old: &VerifyingKey,
    next: &SigningKey,
) -> Result<(usize, usize), StoreError> {
    let next_id = KeyId::of(&next.verifying_key());
    let (mut resigned, mut skipped) = (0, 0);
    for (device, body) in store.all_desired()? {
        let signed: Signed<DesiredState> = match decode(&body) {
            Ok(signed) => signed,
            Err(err) => {
                tracing::warn!(device = %device, error = %err, "stored desired state undecodable; not signed again");
                skipped += 1;
                continue;
            }
        };
        if signed.key_id == next_id {
            continue;
        }
        match signed.open(old) {
            Ok(state) => {
                let body = encode(&Signed::sign(&state, next));
                store.put_desired(&device, state.generation, &body)?;
                resigned += 1;
            }
            Err(err) => {
                tracing::warn!(device = %device, error = %err, "stored desired state does not verify under the old key; not signed again");
                skipped += 1;
            }
        }
    }
    Ok((resigned, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;
    use coracle_proto::samples;

    fn setup() -> (tempfile::TempDir, DataDir, Store) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::open(&tmp.path().join("data")).unwrap();
        (tmp, dir, Store::in_memory().unwrap())
    }

    fn store_desired(store: &Store, key: &SigningKey) -> DesiredState {
        let state = samples::desired_with_services(1);
        store
            .add_device(&crate::store::NewDevice {
                id: state.device.clone(),
                tags: Default::default(),
                password_sha256: [0; 32],
            })
            .unwrap();
        store
            .put_desired(
                &state.device,
                state.generation,
                &encode(&Signed::sign(&state, key)),
            )
            .unwrap();
        state
    }

    fn stored(store: &Store) -> Signed<DesiredState> {
        decode(&store.all_desired().unwrap()[0].1).unwrap()
    }

    #[test]
    fn a_rotation_signs_the_stored_states_again_and_survives_a_restart() {
        let (_tmp, dir, store) = setup();
        let old = SigningKey::from_bytes(&[1; 32]);
        write_private(
            &dir.deployment_key(),
            hex::encode(old.to_bytes()).as_bytes(),
        )
        .unwrap();
        let state = store_desired(&store, &old);
        let keys = DeploymentKeys::load(&dir, old.clone(), &store).unwrap();
        let done = keys.rotate(&store).unwrap();
        assert_eq!((done.epoch, done.resigned, done.skipped), (1, 1, 0));
        let new = keys.signing_key();
        assert_ne!(new.verifying_key(), old.verifying_key());
        assert_eq!(stored(&store).open(&new.verifying_key()).unwrap(), state);
        let walked = keys
            .chain()
            .advance(&old.verifying_key(), 0)
            .unwrap()
            .unwrap();
        assert_eq!(walked.key, new.verifying_key());

        let reloaded = DeploymentKeys::load(
            &dir,
            read_signing_key(&dir.deployment_key()).unwrap(),
            &store,
        )
        .unwrap();
        assert_eq!(reloaded.signing_key().to_bytes(), new.to_bytes());
        assert_eq!(reloaded.chain().epoch(), 1);
        // The first key is kept as retired (its public half), once.
        reloaded.rotate(&store).unwrap();
        let retired = reloaded.retired().unwrap();
        let epochs: Vec<_> = retired.iter().map(|r| r.epoch).collect();
        assert_eq!(epochs, [0, 1]);
        assert_eq!(
            retired[0].public_key,
            hex::encode(old.verifying_key().as_bytes())
        );
        assert_eq!(
            retired[1].key_id,
            KeyId::of(&new.verifying_key()).to_string()
        );
        assert_eq!(reloaded.current().0, 2);
    }

    #[test]
    fn a_rotation_interrupted_before_its_rename_is_finished_at_start() {
        let (_tmp, dir, store) = setup();
        let old = SigningKey::from_bytes(&[1; 32]);
        let next = SigningKey::from_bytes(&[2; 32]);
        write_private(
            &dir.deployment_key(),
            hex::encode(old.to_bytes()).as_bytes(),
        )
        .unwrap();
        let state = store_desired(&store, &old);
        // The stop came after the new key was written (and one state signed again).
        let keys_path = dir.deployment_key().with_extension("key.next");
        write_private(&keys_path, hex::encode(next.to_bytes()).as_bytes()).unwrap();
        let keys = DeploymentKeys::load(&dir, old.clone(), &store).unwrap();
        assert!(!keys_path.exists());
        assert_eq!(keys.signing_key().to_bytes(), next.to_bytes());
        assert_eq!(
            read_signing_key(&dir.deployment_key()).unwrap().to_bytes(),
            next.to_bytes()
        );
        assert_eq!(stored(&store).open(&next.verifying_key()).unwrap(), state);
        assert_eq!(keys.chain().links.len(), 1);
        assert_eq!(keys.retired().unwrap().len(), 1);
    }
}
