//! What devices send: reported states, presence, health history (one point per bucket,
//! bounded per device) and events (bounded per device), so a chatty device cannot fill
//! the controller's disk.

use coracle_proto::{DeviceId, Event, HealthSample, ReportedState};
use serde::{Deserialize, Serialize};

use super::id_lists::query_by_devices;
use super::service_names::service_names_in;
use super::tx::Tx;
use super::{now_unix, params, Store, StoreError};

/// Health history keeps one sample per this many seconds (the latest in the bucket).
pub const HEALTH_BUCKET_SECS: i64 = 60;
/// Health points kept per device (24 h at one per minute).
pub const HEALTH_POINTS_KEPT: i64 = 24 * 60;
/// Events kept per device.
pub const EVENTS_KEPT: i64 = 1000;

/// One point of a device's health chart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthPoint {
    pub bucket_unix: i64,
    pub sample: HealthSample,
    /// Names of the services `sample.containers` index, resolved when the sample arrived
    /// (see `service_names`); empty when unknown.
    #[serde(default)]
    pub services: Vec<String>,
}

impl HealthPoint {
    /// The name of a container sample's service, or `#N` when it is not known.
    pub fn service_name(&self, index: u8) -> String {
        self.services
            .get(usize::from(index))
            .cloned()
            .unwrap_or_else(|| format!("#{index}"))
    }
}

/// A health row's body: the sample and the names (absent in rows from before names were
/// kept).
#[derive(Serialize, Deserialize)]
struct HealthBody {
    #[serde(flatten)]
    sample: HealthSample,
    #[serde(default)]
    services: Vec<String>,
}

/// Decodes a stored health row.
pub(super) fn health_point(
    device: &DeviceId,
    bucket_unix: i64,
    body: &[u8],
) -> Result<HealthPoint, StoreError> {
    let body: HealthBody =
        serde_json::from_slice(body).map_err(|_| corrupt(device, "health body"))?;
    Ok(HealthPoint {
        bucket_unix,
        sample: body.sample,
        services: body.services,
    })
}

/// An event as stored, with the controller's receive time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredEvent {
    pub id: i64,
    pub device: DeviceId,
    pub received_unix: i64,
    pub event: Event,
}

fn corrupt(device: &DeviceId, what: &str) -> StoreError {
    StoreError::Corrupt {
        device: device.to_string(),
        what: what.to_string(),
    }
}

impl Store {
    /// Replaces the device's reported state. Unknown devices are ignored (`Ok(false)`):
    /// a removed device may still have a message in flight.
    pub fn put_reported(&self, state: &ReportedState) -> Result<bool, StoreError> {
        let body = reported_body(state)?;
        self.transaction(|tx| put_reported_in(tx, state, &body))
    }

    /// The device's latest reported state.
    pub fn reported(&self, device: &DeviceId) -> Result<Option<ReportedState>, StoreError> {
        let body: Option<Vec<u8>> = self.transaction(|tx| {
            tx.query_opt(
                "read reported state",
                "SELECT body FROM reported WHERE device = ?1",
                params![device.as_str()],
                |r| r.get(0),
            )
        })?;
        body.map(|b| serde_json::from_slice(&b).map_err(|_| corrupt(device, "reported body")))
            .transpose()
    }

    /// The latest reported states of `devices` (those that reported), a query per chunk
    /// of devices: checking a rollout of thousands of devices one read each took seconds.
    pub fn reported_of(
        &self,
        devices: &[DeviceId],
    ) -> Result<std::collections::HashMap<DeviceId, ReportedState>, StoreError> {
        let rows: Vec<(String, Vec<u8>)> = self.transaction(|tx| {
            query_by_devices(
                tx,
                "read reported states",
                devices,
                |list| format!("SELECT device, body FROM reported WHERE device IN ({list})"),
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        })?;
        rows.into_iter()
            .map(|(device, body)| {
                let id: DeviceId = device.parse().map_err(|_| StoreError::Corrupt {
                    device: device.clone(),
                    what: "device id".into(),
                })?;
                let state =
                    serde_json::from_slice(&body).map_err(|_| corrupt(&id, "reported body"))?;
                Ok((id, state))
            })
            .collect()
    }

    /// Records presence; returns whether the device is known.
    pub fn set_presence(&self, device: &DeviceId, online: bool) -> Result<bool, StoreError> {
        self.transaction(|tx| set_presence_in(tx, device, online))
    }

    /// Stores a health sample into its bucket, with its containers' service names, and
    /// trims the device's history.
    pub fn add_health(
        &self,
        device: &DeviceId,
        at_unix: i64,
        sample: &HealthSample,
    ) -> Result<bool, StoreError> {
        self.transaction(|tx| add_health_in(tx, device, at_unix, sample))
    }

    /// The device's health history, oldest first.
    pub fn health_history(&self, device: &DeviceId) -> Result<Vec<HealthPoint>, StoreError> {
        self.latest_health_points(device, HEALTH_POINTS_KEPT)
    }

    /// The device's newest `points` health points, oldest first.
    pub fn latest_health_points(
        &self,
        device: &DeviceId,
        points: i64,
    ) -> Result<Vec<HealthPoint>, StoreError> {
        let rows = self.transaction(|tx| {
            tx.query(
                "read health history",
                "SELECT bucket_unix, body FROM (SELECT bucket_unix, body FROM health
                 WHERE device = ?1 ORDER BY bucket_unix DESC LIMIT ?2) AS newest
                 ORDER BY bucket_unix",
                params![device.as_str(), points],
                |r| Ok((r.get::<i64>(0)?, r.get::<Vec<u8>>(1)?)),
            )
        })?;
        rows.into_iter()
            .map(|(bucket_unix, body)| health_point(device, bucket_unix, &body))
            .collect()
    }

    /// Appends an event and trims the device's log.
    pub fn add_event(&self, device: &DeviceId, event: &Event) -> Result<Option<i64>, StoreError> {
        let body = event_body(device, event)?;
        self.transaction(|tx| add_event_in(tx, device, event, &body))
    }

    /// The device's latest `limit` events, newest first.
    pub fn events(&self, device: &DeviceId, limit: u32) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = self.transaction(|tx| {
            tx.query(
                "read events",
                "SELECT id, received_unix, body FROM events WHERE device = ?1
                 ORDER BY id DESC LIMIT ?2",
                params![device.as_str(), limit],
                |r| Ok((r.get::<i64>(0)?, r.get::<i64>(1)?, r.get::<Vec<u8>>(2)?)),
            )
        })?;
        rows.into_iter()
            .map(|(id, received_unix, body)| {
                Ok(StoredEvent {
                    id,
                    device: device.clone(),
                    received_unix,
                    event: serde_json::from_slice(&body)
                        .map_err(|_| corrupt(device, "event body"))?,
                })
            })
            .collect()
    }
}

/// A reported state as stored.
pub(super) fn reported_body(state: &ReportedState) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(state).map_err(|_| corrupt(&state.device, "reported"))
}

/// An event as stored.
pub(super) fn event_body(device: &DeviceId, event: &Event) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(event).map_err(|_| corrupt(device, "event"))
}

/// [`Store::put_reported`] inside a transaction, `body` from [`reported_body`].
pub(super) fn put_reported_in(
    tx: &mut Tx<'_>,
    state: &ReportedState,
    body: &[u8],
) -> Result<bool, StoreError> {
    let changed = tx.execute(
        "store reported state",
        "INSERT INTO reported (device, applied, body, received_unix)
         SELECT CAST(?1 AS TEXT), CAST(?2 AS INTEGER), CAST(?3 AS BLOB), CAST(?4 AS INTEGER)
         WHERE EXISTS (SELECT 1 FROM devices WHERE id = ?1)
         ON CONFLICT (device) DO UPDATE SET applied = excluded.applied,
           body = excluded.body, received_unix = excluded.received_unix",
        params![
            state.device.as_str(),
            state.applied.0 as i64,
            body,
            now_unix()
        ],
    )?;
    Ok(changed > 0)
}

/// [`Store::set_presence`] inside a transaction.
pub(super) fn set_presence_in(
    tx: &mut Tx<'_>,
    device: &DeviceId,
    online: bool,
) -> Result<bool, StoreError> {
    let changed = tx.execute(
        "store presence",
        "UPDATE devices SET online = ?2, last_seen_unix = ?3 WHERE id = ?1",
        params![device.as_str(), online, now_unix()],
    )?;
    Ok(changed > 0)
}

/// [`Store::add_health`] inside a transaction.
pub(super) fn add_health_in(
    tx: &mut Tx<'_>,
    device: &DeviceId,
    at_unix: i64,
    sample: &HealthSample,
) -> Result<bool, StoreError> {
    let services = match sample.containers.is_empty() {
        true => Vec::new(),
        false => service_names_in(tx, device, sample.generation)?,
    };
    let body = HealthBody {
        sample: sample.clone(),
        services,
    };
    let body = serde_json::to_vec(&body).map_err(|_| corrupt(device, "health"))?;
    let bucket = at_unix - at_unix.rem_euclid(HEALTH_BUCKET_SECS);
    let changed = tx.execute(
        "store health sample",
        "INSERT INTO health (device, bucket_unix, body)
         SELECT CAST(?1 AS TEXT), CAST(?2 AS INTEGER), CAST(?3 AS BLOB)
         WHERE EXISTS (SELECT 1 FROM devices WHERE id = ?1)
         ON CONFLICT (device, bucket_unix) DO UPDATE SET body = excluded.body",
        params![device.as_str(), bucket, &body],
    )?;
    tx.execute(
        "store last seen",
        "UPDATE devices SET last_seen_unix = ?2 WHERE id = ?1",
        params![device.as_str(), at_unix],
    )?;
    tx.execute(
        "trim health history",
        "DELETE FROM health WHERE device = ?1 AND bucket_unix <=
           (SELECT bucket_unix FROM health WHERE device = ?1
            ORDER BY bucket_unix DESC LIMIT 1 OFFSET ?2)",
        params![device.as_str(), HEALTH_POINTS_KEPT],
    )?;
    Ok(changed > 0)
}

/// [`Store::add_event`] inside a transaction, `body` from [`event_body`].
pub(super) fn add_event_in(
    tx: &mut Tx<'_>,
    device: &DeviceId,
    event: &Event,
    body: &[u8],
) -> Result<Option<i64>, StoreError> {
    let at_unix = i64::try_from(event.at_unix_s).unwrap_or(i64::MAX);
    let id: Option<i64> = tx.query_opt(
        "store event",
        "INSERT INTO events (device, at_unix, received_unix, body)
         SELECT CAST(?1 AS TEXT), CAST(?2 AS INTEGER), CAST(?3 AS INTEGER), CAST(?4 AS BLOB)
         WHERE EXISTS (SELECT 1 FROM devices WHERE id = ?1)
         RETURNING id",
        params![device.as_str(), at_unix, now_unix(), body],
        |r| r.get(0),
    )?;
    let Some(id) = id else {
        return Ok(None);
    };
    tx.execute(
        "trim events",
        "DELETE FROM events WHERE device = ?1 AND id <= ?2",
        params![device.as_str(), id - EVENTS_KEPT],
    )?;
    Ok(Some(id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_backends::store_tests;
    use coracle_proto::EventKind;

    store_tests! {
        fn health_is_downsampled_to_one_point_per_bucket_and_bounded(store) {
            let id = store.add_test_device("pi-1");
            let sample = |cpu| HealthSample {
                cpu_permille: cpu,
                ..HealthSample::default()
            };
            store.add_health(&id, 600, &sample(1)).unwrap();
            store.add_health(&id, 630, &sample(2)).unwrap();
            store.add_health(&id, 660, &sample(3)).unwrap();
            let history = store.health_history(&id).unwrap();
            assert_eq!(history.len(), 2);
            assert_eq!(
                history[0].sample.cpu_permille, 2,
                "latest sample wins the bucket"
            );
            for minute in 0..(HEALTH_POINTS_KEPT + 10) {
                store
                    .add_health(&id, 10_000 + minute * 60, &sample(4))
                    .unwrap();
            }
            assert_eq!(
                store.health_history(&id).unwrap().len() as i64,
                HEALTH_POINTS_KEPT
            );
        }
    }

    store_tests! {
        fn samples_keep_their_service_names_and_old_rows_still_read(store) {
            let id = store.add_test_device("pi-1");
            let mut report = coracle_proto::samples::reported_state(2);
            report.device = id.clone();
            store.put_reported(&report).unwrap();
            let mut sample = coracle_proto::samples::health_sample();
            sample.generation = report.applied;
            store.add_health(&id, 600, &sample).unwrap();
            let point = &store.health_history(&id).unwrap()[0];
            assert_eq!(point.sample, sample);
            assert_eq!(point.service_name(1), report.services[1].name.to_string());
            assert_eq!(point.service_name(7), "#7");

            // A row stored before names were kept is the bare sample's JSON.
            let old = serde_json::to_vec(&HealthSample::default()).unwrap();
            store
                .transaction(|tx| {
                    tx.execute(
                        "store an old health row",
                        "INSERT INTO health (device, bucket_unix, body) VALUES (?1, 1200, ?2)",
                        params![id.as_str(), &old],
                    )
                })
                .unwrap();
            let points = store.health_history(&id).unwrap();
            assert_eq!(points[1].sample, HealthSample::default());
            assert!(points[1].services.is_empty());
        }
    }

    store_tests! {
        fn events_are_bounded_per_device_and_unknown_devices_ignored(store) {
            let id = store.add_test_device("pi-1");
            let event = Event {
                at_unix_s: 5,
                kind: EventKind::Applied {
                    generation: coracle_proto::Generation(1),
                },
            };
            for _ in 0..(EVENTS_KEPT + 5) {
                store.add_event(&id, &event).unwrap();
            }
            assert_eq!(store.events(&id, 5000).unwrap().len() as i64, EVENTS_KEPT);
            let ghost: DeviceId = "ghost".parse().unwrap();
            assert_eq!(store.add_event(&ghost, &event).unwrap(), None);
            assert!(!store.set_presence(&ghost, true).unwrap());
        }
    }

    store_tests! {
        fn presence_and_reported_state_are_stored(store) {
            let id = store.add_test_device("pi-1");
            assert!(store.set_presence(&id, true).unwrap());
            assert!(store.device(&id).unwrap().online);
            let reported = coracle_proto::samples::reported_state(2);
            let reported = ReportedState {
                device: id.clone(),
                ..reported
            };
            assert!(store.put_reported(&reported).unwrap());
            assert_eq!(store.reported(&id).unwrap(), Some(reported.clone()));
            assert_eq!(
                store.device(&id).unwrap().applied_generation,
                Some(reported.applied.0)
            );
        }
    }
}
