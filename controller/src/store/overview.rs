//! Whole-fleet reads for the dashboard's fleet table: every device's latest health point
//! and reported state in one query each, instead of one query per device.

use std::collections::HashMap;

use coracle_proto::{DeviceId, ReportedState};

use super::{query, HealthPoint, Store, StoreError};

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
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                // One index seek per device for its newest bucket, rather than a scan of
                // every stored point (24 h of them per device).
                "SELECT h.device, h.bucket_unix, h.body FROM devices d
                 JOIN health h ON h.device = d.id AND h.bucket_unix =
                   (SELECT MAX(bucket_unix) FROM health WHERE device = d.id)",
            )
            .map_err(query("prepare latest health"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                ))
            })
            .map_err(query("read latest health"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(query("read latest health row"))?;
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
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT device, body FROM reported")
            .map_err(query("prepare reported states"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
            })
            .map_err(query("read reported states"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(query("read reported row"))?;
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
    use super::*;
    use coracle_proto::HealthSample;

    #[test]
    fn latest_health_and_reported_are_one_per_device() {
        let (store, id) = Store::with_test_device("pi-1");
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
