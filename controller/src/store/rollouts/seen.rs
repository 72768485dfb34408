//! What the rollout driver reads about the devices a rollout waits on, in one query per
//! step: reading each device's presence and report by itself costs a round trip per device,
//! which on PostgreSQL with a wave of thousands of devices made every step take seconds.

use std::collections::HashMap;

use coracle_proto::{DeviceId, ReportedState};

use super::super::{params, Store, StoreError};
use super::corrupt;

/// A waiting device as the store knows it now.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceSeen {
    pub online: bool,
    pub reported: Option<ReportedState>,
}

impl Store {
    /// Presence and reported state of rollout `id`'s deploying devices. A device that was
    /// removed from the fleet is absent (the driver reads it as offline).
    pub fn deploying_devices_seen(
        &self,
        id: i64,
    ) -> Result<HashMap<DeviceId, DeviceSeen>, StoreError> {
        let rows = self.transaction(|tx| {
            tx.query(
                "read the devices a rollout waits on",
                "SELECT d.device, dev.online, r.body
                 FROM rollout_devices d
                 JOIN devices dev ON dev.id = d.device
                 LEFT JOIN reported r ON r.device = d.device
                 WHERE d.rollout = ?1 AND d.status = 'deploying'",
                params![id],
                |r| {
                    Ok((
                        r.get::<String>(0)?,
                        r.get::<bool>(1)?,
                        r.get::<Option<Vec<u8>>>(2)?,
                    ))
                },
            )
        })?;
        rows.into_iter()
            .map(|(device, online, body)| {
                let reported = body
                    .map(|b| serde_json::from_slice(&b))
                    .transpose()
                    .map_err(|_| corrupt(id, &format!("reported state of {device}")))?;
                let device = device
                    .parse()
                    .map_err(|_| corrupt(id, &format!("device id {device}")))?;
                Ok((device, DeviceSeen { online, reported }))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::{NewRollout, RolloutPace, Selector};
    use super::*;
    use crate::store::test_backends::store_tests;
    use crate::store::DeviceStatus;

    store_tests! {
        fn only_deploying_devices_are_read_with_presence_and_report(store) {
            let ids: Vec<DeviceId> =
                ["pi-1", "pi-2", "pi-3"].iter().map(|d| store.add_test_device(d)).collect();
            let rollout = store
                .create_rollout(&NewRollout {
                    app: "web".into(),
                    compose: "services: {}".into(),
                    services: Vec::new(),
                    pace: RolloutPace {
                        selector: Selector::Tag { key: "site".into(), value: "a".into() },
                        waves: "100%".into(),
                        max_failures: "0".into(),
                        health_window_s: 5,
                        apply_timeout_s: 30,
                        rollback_on_failure: false,
                    },
                    devices: ids.clone(),
                    agent_version: None,
                })
                .unwrap();
            let record = store.rollout(rollout).unwrap().unwrap();
            let mut deploying = Vec::new();
            for device in &record.devices[..2] {
                let mut next = device.clone();
                next.status = DeviceStatus::Deploying;
                next.generation = Some(2);
                deploying.push(next);
            }
            let rows: Vec<_> = deploying.iter().collect();
            store.save_rollout(&record, &rows).unwrap();
            store.set_presence(&ids[0], true).unwrap();
            store.set_presence(&ids[2], true).unwrap();
            let reported = ReportedState {
                device: ids[0].clone(),
                ..coracle_proto::samples::reported_state(2)
            };
            store.put_reported(&reported).unwrap();

            let seen = store.deploying_devices_seen(rollout).unwrap();
            assert_eq!(seen.len(), 2, "the not-started device is not read: {seen:?}");
            assert_eq!(
                seen[&ids[0]],
                DeviceSeen { online: true, reported: Some(reported) }
            );
            assert_eq!(seen[&ids[1]], DeviceSeen { online: false, reported: None });
            assert!(store.deploying_devices_seen(rollout + 1).unwrap().is_empty());
        }
    }
}
