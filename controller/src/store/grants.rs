//! What the registry asks the store about a device that presents its pull token: the
//! password hash of its enrolment (the token is bound to it; a password rotation keeps it
//! in `pull_sha256`) and the repositories of the controller's registry its latest desired
//! state names (what it may read), plus the agent releases once it was sent an agent update.
//! Also the password change of a rotation.

use std::collections::BTreeSet;

use super::{params, Store, StoreError};
use crate::registry::{DeviceGrant, DeviceGrants};
use coracle_proto::{DesiredState, DeviceId, Signed};

impl Store {
    /// Records a rotated broker password; the pull token stays bound to the enrolment's.
    pub fn set_device_password(
        &self,
        id: &DeviceId,
        password_sha256: &[u8; 32],
    ) -> Result<(), StoreError> {
        let changed = self.transaction(|tx| {
            tx.execute(
                "store rotated device password",
                "UPDATE devices SET pull_sha256 = COALESCE(pull_sha256, password_sha256),
                 password_sha256 = ?2, next_sha256 = NULL WHERE id = ?1",
                params![id.as_str(), &password_sha256[..]],
            )
        })?;
        if changed == 0 {
            return Err(StoreError::DeviceNotFound {
                device: id.to_string(),
            });
        }
        Ok(())
    }

    /// Records (or, with `None`, forgets) the password a rotation is switching to.
    pub fn set_next_password(
        &self,
        id: &DeviceId,
        next_sha256: Option<&[u8; 32]>,
    ) -> Result<(), StoreError> {
        let changed = self.transaction(|tx| {
            tx.execute(
                "store next device password",
                "UPDATE devices SET next_sha256 = ?2 WHERE id = ?1",
                params![id.as_str(), next_sha256.map(|h| &h[..])],
            )
        })?;
        if changed == 0 {
            return Err(StoreError::DeviceNotFound {
                device: id.to_string(),
            });
        }
        Ok(())
    }

    /// Every device's unconfirmed next password, for the broker's table at start.
    pub fn next_passwords(&self) -> Result<Vec<(DeviceId, [u8; 32])>, StoreError> {
        let rows = self.transaction(|tx| {
            tx.query(
                "list next passwords",
                "SELECT id, next_sha256 FROM devices WHERE next_sha256 IS NOT NULL",
                &[],
                |r| Ok((r.get::<String>(0)?, r.get::<Vec<u8>>(1)?)),
            )
        })?;
        rows.into_iter()
            .map(|(id, hash)| {
                let corrupt = |what: &str| StoreError::Corrupt {
                    device: id.clone(),
                    what: what.into(),
                };
                let hash: [u8; 32] = hash
                    .try_into()
                    .map_err(|_| corrupt("next password hash is not 32 bytes"))?;
                let id = id.parse().map_err(|_| corrupt("device id is invalid"))?;
                Ok((id, hash))
            })
            .collect()
    }

    /// The device's registry grant; `None` when it is not enrolled.
    pub fn device_grant(&self, id: &DeviceId) -> Result<Option<DeviceGrant>, StoreError> {
        let row: Option<GrantRow> = self.transaction(|tx| {
            tx.query_opt(
                "read device grant",
                "SELECT COALESCE(d.pull_sha256, d.password_sha256), s.signed, d.pull_epoch,
                   EXISTS (SELECT 1 FROM agent_updates a WHERE a.device = d.id)
                 FROM devices d LEFT JOIN desired s ON s.device = d.id WHERE d.id = ?1",
                params![id.as_str()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
        })?;
        let Some((hash, signed, pull_epoch, agent_update)) = row else {
            return Ok(None);
        };
        let corrupt = |what: String| StoreError::Corrupt {
            device: id.to_string(),
            what,
        };
        let password_sha256: [u8; 32] = hash
            .try_into()
            .map_err(|_| corrupt("password hash is not 32 bytes".into()))?;
        let mut repositories = BTreeSet::new();
        // A device sent an agent update reads the agent releases (see `agent_update`).
        if agent_update {
            repositories.insert(coracle_proto::AGENT_REPOSITORY.to_string());
        }
        if let Some(body) = signed {
            // The controller's own stored state: its signature was made here.
            let signed: Signed<DesiredState> =
                coracle_proto::decode(&body).map_err(|e| corrupt(format!("desired state: {e}")))?;
            let state = DesiredState::decode(&signed.payload)
                .map_err(|e| corrupt(format!("desired state: {e}")))?;
            repositories.extend(
                state
                    .services
                    .into_iter()
                    .filter(|s| s.image.registry.is_empty())
                    .map(|s| s.image.repository),
            );
        }
        Ok(Some(DeviceGrant {
            password_sha256,
            repositories,
            pull_epoch: u32::try_from(pull_epoch)
                .map_err(|_| corrupt("pull epoch out of range".into()))?,
        }))
    }
}

/// (password hash, signed desired state, pull epoch, sent an agent update).
type GrantRow = (Vec<u8>, Option<Vec<u8>>, i64, bool);

impl DeviceGrants for Store {
    fn grant(&self, device: &DeviceId) -> Result<Option<DeviceGrant>, String> {
        self.device_grant(device)
            .map_err(|err| crate::api::error::error_chain(&err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_backends::store_tests;

    store_tests! {
        fn a_rotated_password_leaves_the_pull_grant_bound_to_the_enrolment(store) {
            let id = store.add_test_device("pi-1");
            let enrolled = store.device_grant(&id).unwrap().unwrap().password_sha256;
            store.set_device_password(&id, &[5; 32]).unwrap();
            store.set_next_password(&id, Some(&[6; 32])).unwrap();
            assert_eq!(store.next_passwords().unwrap(), vec![(id.clone(), [6; 32])]);
            store.set_device_password(&id, &[6; 32]).unwrap();
            assert!(
                store.next_passwords().unwrap().is_empty(),
                "confirmed: no next"
            );
            let grant = store.device_grant(&id).unwrap().unwrap();
            assert_eq!(grant.password_sha256, enrolled);
            let stored = store.device_credentials().unwrap();
            assert_eq!(stored, vec![(id.clone(), [6; 32])]);
            let missing: DeviceId = "pi-9".parse().unwrap();
            assert!(matches!(
                store.set_device_password(&missing, &[1; 32]),
                Err(StoreError::DeviceNotFound { .. })
            ));
        }
    }
}
