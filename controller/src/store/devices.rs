//! Devices, their tags, credentials and desired states.

use std::collections::BTreeMap;

use coracle_proto::{DeviceId, Generation};
use serde::{Deserialize, Serialize};

use super::tx::Tx;
use super::{now_unix, params, NewDesired, Store, StoreError};

/// A device as the API shows it (no secrets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    pub id: DeviceId,
    pub created_unix: i64,
    pub tags: BTreeMap<String, String>,
    pub online: bool,
    pub last_seen_unix: Option<i64>,
    /// Generation of the latest desired state, if one was ever assigned.
    pub desired_generation: Option<u64>,
    /// Generation the device last reported as applied.
    pub applied_generation: Option<u64>,
}

/// What `add_device` stores.
#[derive(Debug, Clone)]
pub struct NewDevice {
    pub id: DeviceId,
    pub tags: BTreeMap<String, String>,
    pub password_sha256: [u8; 32],
}

pub(super) fn parse_id(text: String) -> Result<DeviceId, StoreError> {
    text.parse()
        .map_err(|err: coracle_proto::IdError| StoreError::Corrupt {
            device: text.clone(),
            what: err.to_string(),
        })
}

impl Store {
    /// Adds a device; refuses an existing id.
    pub fn add_device(&self, device: &NewDevice) -> Result<(), StoreError> {
        self.transaction(|tx| {
            let inserted = tx.execute(
                "insert device",
                "INSERT INTO devices (id, created_unix, password_sha256) VALUES (?1, ?2, ?3)
                 ON CONFLICT (id) DO NOTHING",
                params![device.id.as_str(), now_unix(), &device.password_sha256[..]],
            )?;
            if inserted == 0 {
                return Err(StoreError::DeviceExists {
                    device: device.id.to_string(),
                });
            }
            for (key, value) in &device.tags {
                tx.execute(
                    "insert tag",
                    "INSERT INTO tags (device, key, value) VALUES (?1, ?2, ?3)",
                    params![device.id.as_str(), key, value],
                )?;
            }
            Ok(())
        })
    }

    /// Removes a device and everything stored about it, except its last generation: a
    /// device enrolled again under the same name continues from there.
    pub fn remove_device(&self, id: &DeviceId) -> Result<(), StoreError> {
        self.transaction(|tx| {
            tx.execute(
                "keep the removed device's generation",
                "INSERT INTO retired_generations (device, generation)
                 SELECT device, generation FROM desired WHERE device = ?1
                 ON CONFLICT (device) DO UPDATE
                   SET generation = CASE WHEN excluded.generation > retired_generations.generation
                     THEN excluded.generation ELSE retired_generations.generation END",
                params![id.as_str()],
            )?;
            let removed = tx.execute(
                "delete device",
                "DELETE FROM devices WHERE id = ?1",
                params![id.as_str()],
            )?;
            if removed == 0 {
                return Err(StoreError::DeviceNotFound {
                    device: id.to_string(),
                });
            }
            Ok(())
        })?;
        self.progress.forget(id);
        Ok(())
    }

    /// Whether a device is enrolled (a cheap primary-key lookup).
    pub fn device_exists(&self, id: &DeviceId) -> Result<bool, StoreError> {
        self.transaction(|tx| device_exists_in(tx, id))
    }

    /// Sets and removes tags of one device.
    pub fn retag_device(
        &self,
        id: &DeviceId,
        set: &BTreeMap<String, String>,
        remove: &[String],
    ) -> Result<(), StoreError> {
        self.transaction(|tx| {
            let exists = tx.query_opt(
                "find device",
                "SELECT 1 FROM devices WHERE id = ?1",
                params![id.as_str()],
                |_| Ok(()),
            )?;
            if exists.is_none() {
                return Err(StoreError::DeviceNotFound {
                    device: id.to_string(),
                });
            }
            for key in remove {
                tx.execute(
                    "delete tag",
                    "DELETE FROM tags WHERE device = ?1 AND key = ?2",
                    params![id.as_str(), key],
                )?;
            }
            for (key, value) in set {
                tx.execute(
                    "upsert tag",
                    "INSERT INTO tags (device, key, value) VALUES (?1, ?2, ?3)
                     ON CONFLICT (device, key) DO UPDATE SET value = excluded.value",
                    params![id.as_str(), key, value],
                )?;
            }
            Ok(())
        })
    }

    /// All devices, by id.
    pub fn list_devices(&self) -> Result<Vec<DeviceRecord>, StoreError> {
        self.select_devices(None)
    }

    /// One device: read by itself (it is called per device on hot paths such as a wave's
    /// sends; reading the whole fleet each time made a rollout quadratic in the fleet).
    pub fn device(&self, id: &DeviceId) -> Result<DeviceRecord, StoreError> {
        self.select_devices(Some(id))?
            .pop()
            .ok_or_else(|| StoreError::DeviceNotFound {
                device: id.to_string(),
            })
    }

    /// Every device, or only `only`, with its tags, presence and generations.
    fn select_devices(&self, only: Option<&DeviceId>) -> Result<Vec<DeviceRecord>, StoreError> {
        let filter = only.map(DeviceId::as_str);
        let (rows, mut tags) = self.transaction(|tx| {
            let rows = tx.query(
                "list devices",
                "SELECT d.id, d.created_unix, d.online, d.last_seen_unix, s.generation, r.applied
                 FROM devices d
                 LEFT JOIN desired s ON s.device = d.id
                 LEFT JOIN reported r ON r.device = d.id
                 WHERE CAST(?1 AS TEXT) IS NULL OR d.id = ?1
                 ORDER BY d.id",
                params![filter],
                |r| {
                    Ok((
                        r.get::<String>(0)?,
                        r.get::<i64>(1)?,
                        r.get::<bool>(2)?,
                        r.get::<Option<i64>>(3)?,
                        r.get::<Option<i64>>(4)?,
                        r.get::<Option<i64>>(5)?,
                    ))
                },
            )?;
            Ok((rows, tags_of(tx, filter)?))
        })?;
        rows.into_iter()
            .map(|(id, created, online, seen, desired, applied)| {
                let tags = tags.remove(&id).unwrap_or_default();
                Ok(DeviceRecord {
                    id: parse_id(id)?,
                    created_unix: created,
                    tags,
                    online,
                    last_seen_unix: seen,
                    desired_generation: desired.map(|g| g as u64),
                    applied_generation: applied.map(|g| g as u64),
                })
            })
            .collect()
    }

    /// Every device's id and password hash, for the broker's credential table.
    pub fn device_credentials(&self) -> Result<Vec<(DeviceId, [u8; 32])>, StoreError> {
        let rows = self.transaction(|tx| {
            tx.query(
                "list credentials",
                "SELECT id, password_sha256 FROM devices",
                &[],
                |r| Ok((r.get::<String>(0)?, r.get::<Vec<u8>>(1)?)),
            )
        })?;
        rows.into_iter()
            .map(|(id, hash)| {
                let hash: [u8; 32] = hash.try_into().map_err(|_| StoreError::Corrupt {
                    device: id.clone(),
                    what: "password hash is not 32 bytes".into(),
                })?;
                Ok((parse_id(id)?, hash))
            })
            .collect()
    }

    /// Stores a device's signed desired state (the caller signed it with `generation`).
    pub fn put_desired(
        &self,
        id: &DeviceId,
        generation: Generation,
        signed: &[u8],
    ) -> Result<(), StoreError> {
        self.put_desired_many(&[NewDesired {
            device: id,
            generation,
            signed,
        }])
    }

    /// The generation of a device's latest desired state, if it has one; for a device
    /// enrolled again under a removed one's name, the removed one's last generation.
    pub fn desired_generation(&self, id: &DeviceId) -> Result<Option<Generation>, StoreError> {
        Ok(self
            .desired_generations_of(std::slice::from_ref(id))?
            .remove(id))
    }

    /// Every device's latest encoded `Signed<DesiredState>`, for republishing at start.
    pub fn all_desired(&self) -> Result<Vec<(DeviceId, Vec<u8>)>, StoreError> {
        let rows = self.transaction(|tx| {
            tx.query(
                "list desired",
                "SELECT device, signed FROM desired ORDER BY device",
                &[],
                |r| Ok((r.get::<String>(0)?, r.get::<Vec<u8>>(1)?)),
            )
        })?;
        rows.into_iter()
            .map(|(id, body)| Ok((parse_id(id)?, body)))
            .collect()
    }
}

/// [`Store::device_exists`] inside a transaction.
pub(super) fn device_exists_in(tx: &mut Tx<'_>, id: &DeviceId) -> Result<bool, StoreError> {
    tx.query_opt(
        "find device",
        "SELECT 1 FROM devices WHERE id = ?1",
        params![id.as_str()],
        |_| Ok(()),
    )
    .map(|row| row.is_some())
}

/// The tags of every device, or of device `only`, by device.
fn tags_of(
    tx: &mut Tx<'_>,
    only: Option<&str>,
) -> Result<BTreeMap<String, BTreeMap<String, String>>, StoreError> {
    let rows = tx.query(
        "list tags",
        "SELECT device, key, value FROM tags WHERE CAST(?1 AS TEXT) IS NULL OR device = ?1",
        params![only],
        |r| {
            Ok((
                r.get::<String>(0)?,
                r.get::<String>(1)?,
                r.get::<String>(2)?,
            ))
        },
    )?;
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (device, key, value) in rows {
        out.entry(device).or_default().insert(key, value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_backends::store_tests;

    fn new_device(id: &str, tags: &[(&str, &str)]) -> NewDevice {
        NewDevice {
            id: id.parse().unwrap(),
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            password_sha256: [7; 32],
        }
    }

    store_tests! {
        fn add_list_retag_remove_round_trip(store) {
            store
                .add_device(&new_device("pi-1", &[("site", "greenhouse")]))
                .unwrap();
            store.add_device(&new_device("pi-2", &[])).unwrap();
            let id: DeviceId = "pi-1".parse().unwrap();
            store
                .retag_device(
                    &id,
                    &[("role".to_string(), "gw".to_string())].into(),
                    &["site".to_string()],
                )
                .unwrap();
            let device = store.device(&id).unwrap();
            assert_eq!(device.tags, [("role".into(), "gw".into())].into());
            assert_eq!(store.list_devices().unwrap().len(), 2);
            store.remove_device(&id).unwrap();
            assert!(matches!(
                store.device(&id),
                Err(StoreError::DeviceNotFound { .. })
            ));
            assert_eq!(store.device_credentials().unwrap().len(), 1);
        }
    }

    store_tests! {
        fn duplicate_device_is_refused_and_the_first_kept(store) {
            store
                .add_device(&new_device("pi-1", &[("a", "1")]))
                .unwrap();
            let err = store.add_device(&new_device("pi-1", &[])).unwrap_err();
            assert!(matches!(err, StoreError::DeviceExists { .. }));
            let id = "pi-1".parse().unwrap();
            assert_eq!(store.device(&id).unwrap().tags.len(), 1);
        }
    }

    store_tests! {
        fn removing_or_retagging_an_unknown_device_names_it(store) {
            let id: DeviceId = "ghost".parse().unwrap();
            let err = store.remove_device(&id).unwrap_err();
            assert!(err.to_string().contains("ghost"));
            assert!(store.retag_device(&id, &BTreeMap::new(), &[]).is_err());
        }
    }

    store_tests! {
        fn desired_state_is_replaced_and_listed(store) {
            store.add_device(&new_device("pi-1", &[])).unwrap();
            let id: DeviceId = "pi-1".parse().unwrap();
            store.put_desired(&id, Generation(1), b"one").unwrap();
            store.put_desired(&id, Generation(2), b"two").unwrap();
            assert_eq!(
                store.all_desired().unwrap(),
                vec![(id.clone(), b"two".to_vec())]
            );
            assert_eq!(store.device(&id).unwrap().desired_generation, Some(2));
        }
    }

    store_tests! {
        fn a_device_enrolled_again_continues_its_generations(store) {
            let id: DeviceId = "pi-1".parse().unwrap();
            store.add_device(&new_device("pi-1", &[])).unwrap();
            store.put_desired(&id, Generation(9), b"nine").unwrap();
            store.remove_device(&id).unwrap();
            store.add_device(&new_device("pi-1", &[])).unwrap();
            assert_eq!(store.desired_generation(&id).unwrap(), Some(Generation(9)));
            store.put_desired(&id, Generation(10), b"ten").unwrap();
            // Removed again without a newer desired state: the highest one is kept.
            store.remove_device(&id).unwrap();
            store.add_device(&new_device("pi-1", &[])).unwrap();
            assert_eq!(store.desired_generation(&id).unwrap(), Some(Generation(10)));
            let other: DeviceId = "pi-2".parse().unwrap();
            store.add_device(&new_device("pi-2", &[])).unwrap();
            assert_eq!(store.desired_generation(&other).unwrap(), None);
        }
    }
}
