//! Rollouts and their per-device progress: everything the rollout driver needs to continue
//! after a controller restart lives in these two tables. Writes that belong together (a
//! phase change and the device intents it implies) go in one transaction.

use coracle_proto::{DeviceId, Generation, ServiceSpec};
use rusqlite::{params, OptionalExtension, Row};
use serde::{Deserialize, Serialize};

use super::{now_unix, query, Store, StoreError};

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

/// Where a rollout is, as stored and shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutPhase {
    Running,
    Paused,
    Completed,
    Aborted,
    RolledBack,
}

impl RolloutPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Completed => "completed",
            Self::Aborted => "aborted",
            Self::RolledBack => "rolled_back",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [
            Self::Running,
            Self::Paused,
            Self::Completed,
            Self::Aborted,
            Self::RolledBack,
        ]
        .into_iter()
        .find(|p| p.as_str() == text)
    }

    /// Running and paused rollouts still own their devices.
    pub fn is_active(self) -> bool {
        matches!(self, Self::Running | Self::Paused)
    }
}

/// Which devices a rollout targets, fixed when it is created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Selector {
    /// Every device with this tag, in id order.
    Tag { key: String, value: String },
    /// These devices, in this order.
    Devices(Vec<DeviceId>),
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tag { key, value } => write!(f, "{key}={value}"),
            Self::Devices(ids) => {
                let names: Vec<&str> = ids.iter().map(DeviceId::as_str).collect();
                write!(f, "{}", names.join(","))
            }
        }
    }
}

/// One device's progress in a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceStatus {
    NotStarted,
    /// Given (or about to be given: `generation` unset) the new app, not yet proven healthy.
    Deploying,
    /// Healthy on the new generation for the whole health window.
    Healthy,
    Failed,
    /// Given its previous app again (`rollback_generation` unset: about to be).
    RolledBack,
}

impl DeviceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotStarted => "not_started",
            Self::Deploying => "deploying",
            Self::Healthy => "healthy",
            Self::Failed => "failed",
            Self::RolledBack => "rolled_back",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [
            Self::NotStarted,
            Self::Deploying,
            Self::Healthy,
            Self::Failed,
            Self::RolledBack,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

/// A device row of a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceProgress {
    pub device: DeviceId,
    pub status: DeviceStatus,
    /// The generation carrying the rollout's app, once sent.
    pub generation: Option<u64>,
    /// The device's desired generation before the rollout reached it.
    pub previous_generation: Option<u64>,
    pub deployed_unix: Option<i64>,
    pub healthy_since_unix: Option<i64>,
    pub rollback_generation: Option<u64>,
    /// Why the device failed or was rolled back.
    pub reason: Option<String>,
    /// The app the device ran before (empty: it had none); restored by a rollback.
    #[serde(skip)]
    pub previous_services: Option<Vec<ServiceSpec>>,
}

impl DeviceProgress {
    fn not_started(device: DeviceId) -> Self {
        Self {
            device,
            status: DeviceStatus::NotStarted,
            generation: None,
            previous_generation: None,
            deployed_unix: None,
            healthy_since_unix: None,
            rollback_generation: None,
            reason: None,
            previous_services: None,
        }
    }
}

/// A rollout with its devices in wave order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutRecord {
    pub id: i64,
    pub app: String,
    pub compose: String,
    pub selector: Selector,
    pub waves: String,
    pub max_failures: String,
    pub health_window_s: u64,
    pub phase: RolloutPhase,
    /// The last wave started (0-based).
    pub wave: usize,
    pub accepted_failures: usize,
    /// Why the rollout paused, completed or stopped.
    pub reason: Option<String>,
    pub created_unix: i64,
    pub updated_unix: i64,
    pub devices: Vec<DeviceProgress>,
    /// The app with images pinned at creation, so every wave gets exactly the same bytes.
    #[serde(skip)]
    pub services: Vec<ServiceSpec>,
}

/// What `create_rollout` stores.
#[derive(Debug, Clone)]
pub struct NewRollout {
    pub app: String,
    pub compose: String,
    pub services: Vec<ServiceSpec>,
    pub selector: Selector,
    pub waves: String,
    pub max_failures: String,
    pub health_window_s: u64,
    pub devices: Vec<DeviceId>,
}

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
        let selector = to_json(0, &new.selector, "selector")?;
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(query("begin create rollout"))?;
        let now = now_unix();
        tx.execute(
            "INSERT INTO rollouts (app, compose, services, selector, waves, max_failures,
               health_window_s, phase, wave, created_unix, updated_unix)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'running', 0, ?8, ?8)",
            params![
                new.app,
                new.compose,
                services,
                selector,
                new.waves,
                new.max_failures,
                new.health_window_s as i64,
                now
            ],
        )
        .map_err(query("insert rollout"))?;
        let id = tx.last_insert_rowid();
        for (position, device) in new.devices.iter().enumerate() {
            tx.execute(
                "INSERT INTO rollout_devices (rollout, device, position, status)
                 VALUES (?1, ?2, ?3, 'not_started')",
                params![id, device.as_str(), position as i64],
            )
            .map_err(query("insert rollout device"))?;
        }
        tx.commit().map_err(query("commit create rollout"))?;
        Ok(id)
    }

    /// Ids of rollouts the driver must look at: running or paused ones, and rolled-back ones
    /// with a rollback not yet sent to some device.
    pub fn rollouts_to_drive(&self) -> Result<Vec<i64>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT id FROM rollouts WHERE phase IN ('running', 'paused')
                 UNION SELECT rollout FROM rollout_devices
                   WHERE status = 'rolled_back' AND rollback_generation IS NULL
                 ORDER BY 1",
            )
            .map_err(query("prepare active rollouts"))?;
        let ids = stmt
            .query_map([], |r| r.get(0))
            .map_err(query("list active rollouts"))?
            .collect::<Result<Vec<i64>, _>>()
            .map_err(query("read active rollout"))?;
        Ok(ids)
    }

    /// Every rollout, newest first.
    pub fn list_rollouts(&self) -> Result<Vec<RolloutRecord>, StoreError> {
        let ids: Vec<i64> = {
            let conn = self.conn();
            let mut stmt = conn
                .prepare("SELECT id FROM rollouts ORDER BY id DESC")
                .map_err(query("prepare list rollouts"))?;
            let ids = stmt
                .query_map([], |r| r.get(0))
                .map_err(query("list rollouts"))?
                .collect::<Result<Vec<i64>, _>>()
                .map_err(query("read rollout id"))?;
            ids
        };
        ids.into_iter()
            .filter_map(|id| self.rollout(id).transpose())
            .collect()
    }

    /// One rollout with its devices, or `None` when there is no such id.
    pub fn rollout(&self, id: i64) -> Result<Option<RolloutRecord>, StoreError> {
        let conn = self.conn();
        let head = conn
            .query_row(
                "SELECT app, compose, services, selector, waves, max_failures, health_window_s,
                   phase, wave, accepted_failures, reason, created_unix, updated_unix
                 FROM rollouts WHERE id = ?1",
                [id],
                |r| {
                    Ok((
                        (
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, String>(3)?,
                            r.get::<_, String>(4)?,
                            r.get::<_, String>(5)?,
                        ),
                        (
                            r.get::<_, i64>(6)?,
                            r.get::<_, String>(7)?,
                            r.get::<_, i64>(8)?,
                            r.get::<_, i64>(9)?,
                            r.get::<_, Option<String>>(10)?,
                            r.get::<_, i64>(11)?,
                            r.get::<_, i64>(12)?,
                        ),
                    ))
                },
            )
            .optional()
            .map_err(query("read rollout"))?;
        let Some((
            (app, compose, services, selector, waves, max_failures),
            (window, phase, wave, accepted, reason, created_unix, updated_unix),
        )) = head
        else {
            return Ok(None);
        };
        let mut stmt = conn
            .prepare(
                "SELECT device, status, generation, previous_generation, previous_services,
                   deployed_unix, healthy_since_unix, rollback_generation, reason
                 FROM rollout_devices WHERE rollout = ?1 ORDER BY position",
            )
            .map_err(query("prepare rollout devices"))?;
        let devices = stmt
            .query_map([id], |r| Ok(read_device(r)))
            .map_err(query("read rollout devices"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(query("read rollout device row"))?
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
            phase: RolloutPhase::parse(&phase).ok_or_else(|| corrupt(id, "phase"))?,
            wave: wave.max(0) as usize,
            accepted_failures: accepted.max(0) as usize,
            reason,
            created_unix,
            updated_unix,
            devices,
            services: serde_json::from_str(&services).map_err(|_| corrupt(id, "services"))?,
        }))
    }

    /// Sets the phase, wave, accepted failures and reason of a rollout and stores the given
    /// device rows, in one transaction.
    pub fn save_rollout(
        &self,
        rollout: &RolloutRecord,
        devices: &[&DeviceProgress],
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(query("begin save rollout"))?;
        tx.execute(
            "UPDATE rollouts SET phase = ?2, wave = ?3, accepted_failures = ?4, reason = ?5,
               updated_unix = ?6 WHERE id = ?1",
            params![
                rollout.id,
                rollout.phase.as_str(),
                rollout.wave as i64,
                rollout.accepted_failures as i64,
                rollout.reason,
                now_unix()
            ],
        )
        .map_err(query("update rollout"))?;
        for device in devices {
            let previous = device
                .previous_services
                .as_ref()
                .map(|s| to_json(rollout.id, s, "previous services"))
                .transpose()?;
            tx.execute(
                "UPDATE rollout_devices SET status = ?3, generation = ?4, previous_generation = ?5,
                   previous_services = ?6, deployed_unix = ?7, healthy_since_unix = ?8,
                   rollback_generation = ?9, reason = ?10
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
                    device.reason,
                ],
            )
            .map_err(query("update rollout device"))?;
        }
        tx.commit().map_err(query("commit save rollout"))
    }

    /// Devices of running or paused rollouts among `devices`, with the rollout holding each.
    pub fn devices_in_active_rollouts(
        &self,
        devices: &[DeviceId],
    ) -> Result<Vec<(DeviceId, i64)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT d.rollout FROM rollout_devices d JOIN rollouts r ON r.id = d.rollout
                 WHERE d.device = ?1 AND r.phase IN ('running', 'paused') LIMIT 1",
            )
            .map_err(query("prepare busy devices"))?;
        let mut busy = Vec::new();
        for device in devices {
            let held: Option<i64> = stmt
                .query_row([device.as_str()], |r| r.get(0))
                .optional()
                .map_err(query("find busy device"))?;
            if let Some(rollout) = held {
                busy.push((device.clone(), rollout));
            }
        }
        Ok(busy)
    }

    /// Ids of devices that carry the tag `key=value`, in id order.
    pub fn devices_with_tag(&self, key: &str, value: &str) -> Result<Vec<DeviceId>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT device FROM tags WHERE key = ?1 AND value = ?2 ORDER BY device")
            .map_err(query("prepare tagged devices"))?;
        let ids = stmt
            .query_map(params![key, value], |r| r.get::<_, String>(0))
            .map_err(query("list tagged devices"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(query("read tagged device"))?;
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
        self.conn()
            .query_row(
                "SELECT generation, signed FROM desired WHERE device = ?1",
                [id.as_str()],
                |r| Ok((Generation(r.get::<_, i64>(0)?.max(0) as u64), r.get(1)?)),
            )
            .optional()
            .map_err(query("read signed desired state"))
    }
}

fn read_device(r: &Row<'_>) -> Option<DeviceProgress> {
    let generation = |i| r.get::<_, Option<i64>>(i).ok().flatten().map(|g| g as u64);
    let mut progress = DeviceProgress::not_started(r.get::<_, String>(0).ok()?.parse().ok()?);
    progress.status = DeviceStatus::parse(&r.get::<_, String>(1).ok()?)?;
    progress.generation = generation(2);
    progress.previous_generation = generation(3);
    progress.previous_services = match r.get::<_, Option<String>>(4).ok()? {
        Some(text) => Some(serde_json::from_str(&text).ok()?),
        None => None,
    };
    progress.deployed_unix = r.get(5).ok()?;
    progress.healthy_since_unix = r.get(6).ok()?;
    progress.rollback_generation = generation(7);
    progress.reason = r.get(8).ok()?;
    Some(progress)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rollout_round_trips_with_its_device_progress() {
        let (store, id) = Store::with_test_device("pi-1");
        let rollout = store
            .create_rollout(&NewRollout {
                app: "web".into(),
                compose: "services: {}".into(),
                services: Vec::new(),
                selector: Selector::Tag {
                    key: "site".into(),
                    value: "a".into(),
                },
                waves: "1,100%".into(),
                max_failures: "0".into(),
                health_window_s: 5,
                devices: vec![id.clone()],
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
        store.save_rollout(&record, &[&device]).unwrap();
        let again = store.rollout(rollout).unwrap().unwrap();
        assert_eq!(again.phase, RolloutPhase::Paused);
        assert_eq!(again.devices[0], device);
        assert_eq!(
            store.devices_in_active_rollouts(&[id]).unwrap().len(),
            1,
            "a paused rollout still holds its devices"
        );
        assert!(store.rollout(rollout + 1).unwrap().is_none());
    }
}
