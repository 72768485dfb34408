//! Offline detection by heartbeat: a device whose health samples stop is marked offline even
//! when its MQTT last will never fires (a hung agent, a half-open TCP connection, a broker
//! that lost the will).

use super::tx::Tx;
use super::{params, Store, StoreError};
use coracle_proto::DeviceId;

impl Store {
    /// Marks devices that are online but silent since before `cutoff_unix` offline and
    /// returns them.
    pub fn mark_silent_offline(&self, cutoff_unix: i64) -> Result<Vec<DeviceId>, StoreError> {
        let ids = self.transaction(|tx| {
            tx.query(
                "mark silent devices offline",
                "UPDATE devices SET online = 0
                 WHERE online = 1 AND (last_seen_unix IS NULL OR last_seen_unix < ?1)
                 RETURNING id",
                params![cutoff_unix],
                |r| r.get::<String>(0),
            )
        })?;
        Ok(ids.into_iter().filter_map(|id| id.parse().ok()).collect())
    }

    /// A heartbeat arrived: marks the device online again; true when it was offline.
    pub fn mark_heard(&self, device: &DeviceId) -> Result<bool, StoreError> {
        self.transaction(|tx| mark_heard_in(tx, device))
    }
}

/// [`Store::mark_heard`] inside a transaction.
pub(super) fn mark_heard_in(tx: &mut Tx<'_>, device: &DeviceId) -> Result<bool, StoreError> {
    let changed = tx.execute(
        "mark device online",
        "UPDATE devices SET online = 1 WHERE id = ?1 AND online = 0",
        params![device.as_str()],
    )?;
    Ok(changed > 0)
}

#[cfg(test)]
mod tests {
    use crate::store::now_unix;
    use crate::store::test_backends::store_tests;

    store_tests! {
        fn silent_devices_go_offline_and_a_heartbeat_brings_them_back(store) {
            let id = store.add_test_device("pi-1");
            store.set_presence(&id, true).unwrap();
            assert!(store
                .mark_silent_offline(now_unix() - 60)
                .unwrap()
                .is_empty());
            assert_eq!(
                store.mark_silent_offline(now_unix() + 1).unwrap(),
                vec![id.clone()]
            );
            assert!(!store.device(&id).unwrap().online);
            assert!(store.mark_heard(&id).unwrap());
            assert!(!store.mark_heard(&id).unwrap(), "already online");
            assert!(store.device(&id).unwrap().online);
        }
    }
}
