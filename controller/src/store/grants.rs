//! What the registry asks the store about a device that presents its pull token: its
//! current password hash (the token is bound to the enrolment) and the repositories of the
//! controller's registry its latest desired state names (what it may read).

use std::collections::BTreeSet;

use coracle_proto::{DesiredState, DeviceId, Signed};
use rusqlite::{params, OptionalExtension};

use super::{query, Store, StoreError};
use crate::registry::{DeviceGrant, DeviceGrants};

impl Store {
    /// The device's registry grant; `None` when it is not enrolled.
    pub fn device_grant(&self, id: &DeviceId) -> Result<Option<DeviceGrant>, StoreError> {
        let row: Option<(Vec<u8>, Option<Vec<u8>>)> = self
            .conn()
            .query_row(
                "SELECT d.password_sha256, s.signed FROM devices d
                 LEFT JOIN desired s ON s.device = d.id WHERE d.id = ?1",
                params![id.as_str()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(query("read device grant"))?;
        let Some((hash, signed)) = row else {
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
        }))
    }
}

impl DeviceGrants for Store {
    fn grant(&self, device: &DeviceId) -> Result<Option<DeviceGrant>, String> {
        self.device_grant(device)
            .map_err(|err| crate::api::error::anyhow_chain(&err))
    }
}
