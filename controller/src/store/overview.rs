//! Whole-fleet reads for the dashboard's fleet table: every device's latest health point
//! and reported state in one query each, instead of one query per device.

use std::collections::HashMap;

use coracle_proto::{DeviceId, ReportedState};

use super::{HealthPoint, Store, StoreError};

fn parse_device(text: &str) -> Result<DeviceId, StoreError> {
    text.parse()
        .map_err(|err: coracle_proto::IdError| StoreError::Corrupt {
            device: text.to_string(),
            what: err.to_string(),
        })
}

fn corrupt(device: &DeviceId, what: &str) -> StoreError {
    StoreError::Corrupt {
        device: device.to_string(),
        what: what.to_string(),
    }
}

impl Store {
    /// Each device's newest health point (devices without one are absent).
    pub fn latest_health(&self) -> Result<HashMap<DeviceId, HealthPoint>, StoreError> {
        let rows = self.transaction(|tx| {
            tx.query(
                "read latest health",
                // One index seek per device for its newest bucket, rather than a scan of
                // every stored point (24 h of them per device).
                "SELECT h.device, h.bucket_unix, h.body FROM devices d
                 JOIN health h ON h.device = d.id AND h.bucket_unix =
                   (SELECT MAX(bucket_unix) FROM health WHERE device = d.id)",
                &[],
                |r| Ok((r.get::<String>(0)?, r.get::<i64>(1)?, r.get::<Vec<u8>>(2)?)),
            )
        })?;
        rows.into_iter()
            .map(|(device, bucket_unix, body)| {
                let device = parse_device(&device)?;
                let point = super::telemetry::health_point(&device, bucket_unix, &body)?;
                Ok((device, point))
            })
            .collect()
    }

    /// Every device's latest reported state.
    pub fn all_reported(&self) -> Result<HashMap<DeviceId, ReportedState>, StoreError> {
        let rows = self.transaction(|tx| {
            tx.query(
                "read reported states",
                "SELECT device, body FROM reported",
                &[],
                |r| Ok((r.get::<String>(0)?, r.get::<Vec<u8>>(1)?)),
            )
        })?;
        rows.into_iter()
            .map(|(device, body)| {
                let device = parse_device(&device)?;
                let state =
                    serde_json::from_slice(&body).map_err(|_| corrupt(&device, "reported body"))?;
                Ok((device, state))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::store::test_backends::store_tests;
    use coracle_proto::HealthSample;

    store_tests! {
        fn latest_health_and_reported_are_one_per_device(store) {
            let id = store.add_test_device("pi-1");
            let sample = |cpu| HealthSample {
                cpu_permille: cpu,
                ..HealthSample::default()
            };
            store.add_health(&id, 600, &sample(1)).unwrap();
            store.add_health(&id, 900, &sample(7)).unwrap();
            let latest = store.latest_health().unwrap();
            assert_eq!(latest.len(), 1);
            assert_eq!(latest[&id].sample.cpu_permille, 7);
            let mut reported = coracle_proto::samples::reported_state(1);
            reported.device = id.clone();
            store.put_reported(&reported).unwrap();
            assert_eq!(store.all_reported().unwrap()[&id], reported);
        }
    }
}
