//! Rollouts and their per-device progress: everything the rollout driver needs to continue
//! after a controller restart lives in these two tables. Writes that belong together (a
//! phase change and the device intents it implies) go in one transaction.

mod lease;
mod records;
mod seen;

use coracle_proto::{DeviceId, Generation};
use serde::Serialize;

pub use lease::{now_ms, RolloutLease, MIGRATION_LEASES};
pub use records::{
    DeviceProgress, DeviceStatus, NewRollout, RolloutPace, RolloutPhase, RolloutRecord, Selector,
    DEFAULT_APPLY_TIMEOUT_S,
};
pub use seen::DeviceSeen;

use super::backend::{Row, Value};
use super::{now_unix, params, Store, StoreError};

/// Migration 2: replaces migration 1's placeholder `rollouts` table (never written).
pub const MIGRATION: &str = r#"
DROP TABLE rollouts;
CREATE TABLE rollouts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    app TEXT NOT NULL,
    compose TEXT NOT NULL,
    services TEXT NOT NULL,
    selector TEXT NOT NULL,
    waves TEXT NOT NULL,
    max_failures TEXT NOT NULL,
    health_window_s INTEGER NOT NULL,
    rollback_on_failure INTEGER NOT NULL DEFAULT 0,
    phase TEXT NOT NULL,
    wave INTEGER NOT NULL,
    accepted_failures INTEGER NOT NULL DEFAULT 0,
    reason TEXT,
    created_unix INTEGER NOT NULL,
    updated_unix INTEGER NOT NULL
);
CREATE TABLE rollout_devices (
    rollout INTEGER NOT NULL REFERENCES rollouts(id) ON DELETE CASCADE,
    device TEXT NOT NULL,
    position INTEGER NOT NULL,
    status TEXT NOT NULL,
    generation INTEGER,
    previous_generation INTEGER,
    previous_services TEXT,
    deployed_unix INTEGER,
    healthy_since_unix INTEGER,
    rollback_generation INTEGER,
    reason TEXT,
    PRIMARY KEY (rollout, device)
);
CREATE INDEX rollouts_by_phase ON rollouts (phase);
"#;

/// Migration 4: an apply timeout per rollout (the health window starts only once a device
/// runs the new generation) and when each device started running it.
pub const MIGRATION_APPLY_TIMEOUT: &str = r#"
ALTER TABLE rollouts ADD COLUMN apply_timeout_s INTEGER NOT NULL DEFAULT 600;
ALTER TABLE rollout_devices ADD COLUMN running_since_unix INTEGER;
"#;

/// Device rows per insert statement (two parameters each, within SQLite's 999).
const INSERT_CHUNK: usize = 400;

fn corrupt(rollout: i64, what: &str) -> StoreError {
    StoreError::Corrupt {
        device: format!("rollout {rollout}"),
        what: what.to_string(),
    }
}

fn to_json<T: Serialize>(rollout: i64, value: &T, what: &str) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|_| corrupt(rollout, what))
}

impl Store {
    /// Stores a new running rollout (wave 0 not yet started) and returns its id.
    pub fn create_rollout(&self, new: &NewRollout) -> Result<i64, StoreError> {
        let services = to_json(0, &new.services, "services")?;
        let selector = to_json(0, &new.pace.selector, "selector")?;
        let now = now_unix();
        self.transaction(|tx| {
            let id: i64 = tx.query_one(
                "insert rollout",
                "INSERT INTO rollouts (app, compose, services, selector, waves, max_failures,
                   health_window_s, rollback_on_failure, phase, wave, created_unix, updated_unix,
                   apply_timeout_s, agent_version)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'running', 0, ?9, ?9, ?10, ?11)
                 RETURNING id",
                params![
                    &new.app,
                    &new.compose,
                    &services,
                    &selector,
                    &new.pace.waves,
                    &new.pace.max_failures,
                    new.pace.health_window_s as i64,
                    new.pace.rollback_on_failure,
                    now,
                    new.pace.apply_timeout_s as i64,
                    &new.agent_version
                ],
                |r| r.get(0),
            )?;
            // Many rows per statement: a rollout of thousands of devices in one round
            // trip per chunk, not per device.
            let positions: Vec<(usize, &DeviceId)> = new.devices.iter().enumerate().collect();
            for chunk in positions.chunks(INSERT_CHUNK) {
                let rows: Vec<String> = (0..chunk.len())
                    .map(|i| format!("(?1, ?{}, ?{}, 'not_started')", 2 * i + 2, 2 * i + 3))
                    .collect();
                let mut values = vec![Value::from(id)];
                for (position, device) in chunk {
                    values.push(Value::from(device.as_str()));
                    values.push(Value::from(*position as i64));
                }
                tx.execute(
                    "insert rollout devices",
                    &format!(
                        "INSERT INTO rollout_devices (rollout, device, position, status) VALUES {}",
                        rows.join(", ")
                    ),
                    &values,
                )?;
            }
            Ok(id)
        })
    }

    /// Ids of rollouts the driver must look at: running or paused ones, and rolled-back ones
    /// with a rollback not yet sent to some device.
    pub fn rollouts_to_drive(&self) -> Result<Vec<i64>, StoreError> {
        self.transaction(|tx| {
            tx.query(
                "list active rollouts",
                "SELECT id FROM rollouts WHERE phase IN ('running', 'paused')
                 UNION SELECT rollout FROM rollout_devices
                   WHERE status = 'rolled_back' AND rollback_generation IS NULL
                 ORDER BY 1",
                &[],
                |r| r.get(0),
            )
        })
    }

    /// Every rollout, newest first.
    pub fn list_rollouts(&self) -> Result<Vec<RolloutRecord>, StoreError> {
        let ids: Vec<i64> = self.transaction(|tx| {
            tx.query(
                "list rollouts",
                "SELECT id FROM rollouts ORDER BY id DESC",
                &[],
                |r| r.get(0),
            )
        })?;
        ids.into_iter()
            .filter_map(|id| self.rollout(id).transpose())
            .collect()
    }

    /// One rollout with its devices, or `None` when there is no such id.
    pub fn rollout(&self, id: i64) -> Result<Option<RolloutRecord>, StoreError> {
        let (head, devices) = self.transaction(|tx| {
            let head = tx.query_opt(
                "read rollout",
                "SELECT app, compose, services, selector, waves, max_failures, health_window_s,
                   phase, wave, accepted_failures, reason, created_unix, updated_unix,
                   rollback_on_failure, apply_timeout_s, agent_version, revision
                 FROM rollouts WHERE id = ?1",
                params![id],
                |r| {
                    Ok((
                        (
                            r.get::<String>(0)?,
                            r.get::<String>(1)?,
                            r.get::<String>(2)?,
                            r.get::<String>(3)?,
                            r.get::<String>(4)?,
                            r.get::<String>(5)?,
                        ),
                        (
                            r.get::<i64>(6)?,
                            r.get::<String>(7)?,
                            r.get::<i64>(8)?,
                            r.get::<i64>(9)?,
                            r.get::<Option<String>>(10)?,
                            r.get::<i64>(11)?,
                            r.get::<i64>(12)?,
                            r.get::<bool>(13)?,
                            r.get::<i64>(14)?,
                            r.get::<Option<String>>(15)?,
                            r.get::<i64>(16)?,
                        ),
                    ))
                },
            )?;
            if head.is_none() {
                return Ok((None, Vec::new()));
            }
            let devices = tx.query(
                "read rollout devices",
                "SELECT device, status, generation, previous_generation, previous_services,
                   deployed_unix, healthy_since_unix, rollback_generation, reason,
                   running_since_unix, previous_agent_version
                 FROM rollout_devices WHERE rollout = ?1 ORDER BY position",
                params![id],
                |r| Ok(read_device(r)),
            )?;
            Ok((head, devices))
        })?;
        let Some((
            (app, compose, services, selector, waves, max_failures),
            (
                window,
                phase,
                wave,
                accepted,
                reason,
                created_unix,
                updated_unix,
                rollback_on_failure,
                apply_timeout,
                agent_version,
                revision,
            ),
        )) = head
        else {
            return Ok(None);
        };
        let devices = devices
            .into_iter()
            .map(|d| d.ok_or_else(|| corrupt(id, "device row")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(RolloutRecord {
            id,
            app,
            compose,
            selector: serde_json::from_str(&selector).map_err(|_| corrupt(id, "selector"))?,
            waves,
            max_failures,
            health_window_s: window.max(0) as u64,
            apply_timeout_s: apply_timeout.max(0) as u64,
            rollback_on_failure,
            phase: RolloutPhase::parse(&phase).ok_or_else(|| corrupt(id, "phase"))?,
            wave: wave.max(0) as usize,
            accepted_failures: accepted.max(0) as usize,
            reason,
            created_unix,
            updated_unix,
            devices,
            services: serde_json::from_str(&services).map_err(|_| corrupt(id, "services"))?,
            agent_version,
            revision,
        }))
    }

    /// Sets the phase, wave, accepted failures and reason of a rollout and stores the given
    /// device rows, in one transaction, and returns the rollout's new revision. Refused with
    /// `RolloutChanged` when the rollout is no longer at `rollout.revision` (another
    /// controller wrote it since it was read): nothing is written then.
    pub fn save_rollout(
        &self,
        rollout: &RolloutRecord,
        devices: &[&DeviceProgress],
    ) -> Result<i64, StoreError> {
        let previous_services = devices
            .iter()
            .map(|device| {
                device
                    .previous_services
                    .as_ref()
                    .map(|s| to_json(rollout.id, s, "previous services"))
                    .transpose()
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.transaction(|tx| {
            let updated = tx.execute(
                "update rollout",
                "UPDATE rollouts SET phase = ?2, wave = ?3, accepted_failures = ?4, reason = ?5,
                   updated_unix = ?6, revision = revision + 1 WHERE id = ?1 AND revision = ?7",
                params![
                    rollout.id,
                    rollout.phase.as_str(),
                    rollout.wave as i64,
                    rollout.accepted_failures as i64,
                    &rollout.reason,
                    now_unix(),
                    rollout.revision
                ],
            )?;
            if updated == 0 {
                return Err(StoreError::RolloutChanged { id: rollout.id });
            }
            for (device, previous) in devices.iter().zip(&previous_services) {
                tx.execute(
                    "update rollout device",
                    "UPDATE rollout_devices SET status = ?3, generation = ?4,
                       previous_generation = ?5, previous_services = ?6, deployed_unix = ?7,
                       healthy_since_unix = ?8, rollback_generation = ?9, reason = ?10,
                       running_since_unix = ?11, previous_agent_version = ?12
                     WHERE rollout = ?1 AND device = ?2",
                    params![
                        rollout.id,
                        device.device.as_str(),
                        device.status.as_str(),
                        device.generation.map(|g| g as i64),
                        device.previous_generation.map(|g| g as i64),
                        previous,
                        device.deployed_unix,
                        device.healthy_since_unix,
                        device.rollback_generation.map(|g| g as i64),
                        &device.reason,
                        device.running_since_unix,
                        &device.previous_agent_version,
                    ],
                )?;
            }
            Ok(rollout.revision + 1)
        })
    }

    /// Devices of running or paused rollouts among `devices`, with the rollout holding each,
    /// in `devices`' order. One query for every active rollout's devices, filtered here.
    pub fn devices_in_active_rollouts(
        &self,
        devices: &[DeviceId],
    ) -> Result<Vec<(DeviceId, i64)>, StoreError> {
        let held: Vec<(String, i64)> = self.transaction(|tx| {
            tx.query(
                "find busy devices",
                "SELECT d.device, d.rollout FROM rollout_devices d
                 JOIN rollouts r ON r.id = d.rollout
                 WHERE r.phase IN ('running', 'paused')",
                &[],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        })?;
        let held: std::collections::HashMap<String, i64> = held.into_iter().collect();
        Ok(devices
            .iter()
            .filter_map(|device| Some((device.clone(), *held.get(device.as_str())?)))
            .collect())
    }

    /// Ids of devices that carry the tag `key=value`, in id order.
    pub fn devices_with_tag(&self, key: &str, value: &str) -> Result<Vec<DeviceId>, StoreError> {
        let ids = self.transaction(|tx| {
            tx.query(
                "list tagged devices",
                "SELECT device FROM tags WHERE key = ?1 AND value = ?2 ORDER BY device",
                params![key, value],
                |r| r.get::<String>(0),
            )
        })?;
        ids.into_iter()
            .map(|id| {
                id.parse().map_err(|_| StoreError::Corrupt {
                    device: id.clone(),
                    what: "device id".into(),
                })
            })
            .collect()
    }

    /// A device's latest signed desired state (encoded) with its generation.
    pub fn desired_signed(
        &self,
        id: &DeviceId,
    ) -> Result<Option<(Generation, Vec<u8>)>, StoreError> {
        Ok(self.desired_signed_of(std::slice::from_ref(id))?.remove(id))
    }
}

fn read_device(r: &Row) -> Option<DeviceProgress> {
    let generation = |i| r.get::<Option<i64>>(i).ok().flatten().map(|g| g as u64);
    let mut progress = DeviceProgress::not_started(r.get::<String>(0).ok()?.parse().ok()?);
    progress.status = DeviceStatus::parse(&r.get::<String>(1).ok()?)?;
    progress.generation = generation(2);
    progress.previous_generation = generation(3);
    progress.previous_services = match r.get::<Option<String>>(4).ok()? {
        Some(text) => Some(serde_json::from_str(&text).ok()?),
        None => None,
    };
    progress.deployed_unix = r.get(5).ok()?;
    progress.healthy_since_unix = r.get(6).ok()?;
    progress.rollback_generation = generation(7);
    progress.reason = r.get(8).ok()?;
    progress.running_since_unix = r.get(9).ok()?;
    progress.previous_agent_version = r.get(10).ok()?;
    Some(progress)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_backends::store_tests;

    store_tests! {
        fn a_rollout_round_trips_with_its_device_progress(store) {
            let id = store.add_test_device("pi-1");
            let rollout = store
                .create_rollout(&NewRollout {
                    app: "web".into(),
                    compose: "services: {}".into(),
                    services: Vec::new(),
                    pace: RolloutPace {
                        selector: Selector::Tag {
                            key: "site".into(),
                            value: "a".into(),
                        },
                        waves: "1,100%".into(),
                        max_failures: "0".into(),
                        health_window_s: 5,
                        apply_timeout_s: 30,
                        rollback_on_failure: false,
                    },
                    devices: vec![id.clone()],
                    agent_version: None,
                })
                .unwrap();
            let mut record = store.rollout(rollout).unwrap().unwrap();
            assert_eq!(record.phase, RolloutPhase::Running);
            assert_eq!(record.devices[0].status, DeviceStatus::NotStarted);
            record.phase = RolloutPhase::Paused;
            let mut device = record.devices[0].clone();
            device.status = DeviceStatus::Deploying;
            device.previous_services = Some(Vec::new());
            device.generation = Some(3);
            device.running_since_unix = Some(17);
            store.save_rollout(&record, &[&device]).unwrap();
            let again = store.rollout(rollout).unwrap().unwrap();
            assert_eq!(again.phase, RolloutPhase::Paused);
            assert_eq!(again.apply_timeout_s, 30);
            assert_eq!(again.devices[0], device);
            assert_eq!(
                store.devices_in_active_rollouts(&[id]).unwrap().len(),
                1,
                "a paused rollout still holds its devices"
            );
            assert!(store.rollout(rollout + 1).unwrap().is_none());
        }
    }
}
