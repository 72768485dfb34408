//! `Store`: the fleet database (SQLite, WAL). Devices, tags, desired states, reported states,
//! health history, events and rollouts; besides, in memory only, each device's latest pull
//! progress (`progress.rs`). Calls are short and synchronous behind a mutex; the MQTT ingest
//! path hands work to its own task so it never waits on the disk in a callback.

mod agent_updates;
mod api_tokens;
mod audit;
mod devices;
mod grants;
mod overview;
mod presence;
mod progress;
mod pull_epochs;
mod rollouts;
mod schema;
mod service_names;
mod telemetry;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::Connection;

pub use api_tokens::ApiTokenRecord;
pub use audit::AuditEntry;
pub use devices::{DeviceRecord, NewDevice};
pub use progress::{LatestProgress, ProgressBoard};
pub use pull_epochs::{DeviceCredentials, PullTokenDue};
pub use rollouts::{
    DeviceProgress, DeviceStatus, NewRollout, RolloutPhase, RolloutRecord, Selector,
    DEFAULT_APPLY_TIMEOUT_S,
};
pub use telemetry::{HealthPoint, StoredEvent, HEALTH_BUCKET_SECS, HEALTH_POINTS_KEPT};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open database {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("database schema version {found} is newer than this controller knows ({known})")]
    NewerSchema { found: usize, known: usize },
    #[error("cannot apply schema migration {version}")]
    Migrate {
        version: usize,
        #[source]
        source: rusqlite::Error,
    },
    #[error("database query failed: {step}")]
    Query {
        step: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("device {device} already exists")]
    DeviceExists { device: String },
    #[error("device {device} does not exist")]
    DeviceNotFound { device: String },
    #[error("stored row for device {device} is corrupt: {what}")]
    Corrupt { device: String, what: String },
    #[error("an API token named {name} already exists (revoke it first or pick another name)")]
    TokenExists { name: String },
    #[error("no live API token is named {name}")]
    TokenNotFound { name: String },
    #[error("stored API token {name} is corrupt: {what}")]
    CorruptToken { name: String, what: String },
}

/// The fleet database.
#[derive(Debug)]
pub struct Store {
    conn: Mutex<Connection>,
    /// Devices' latest pull progress, in memory only (`progress.rs`).
    pub progress: ProgressBoard,
}

impl Store {
    /// Opens (creating if needed) and migrates the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let open = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let mut conn = Connection::open(path).map_err(open)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open)?;
        schema::migrate(&mut conn)?;
        Ok(Self {
            conn: Mutex::new(conn),
            progress: ProgressBoard::default(),
        })
    }

    /// An in-memory store for tests.
    pub fn in_memory() -> Result<Self, StoreError> {
        let mut conn = Connection::open_in_memory().map_err(|source| StoreError::Open {
            path: PathBuf::from(":memory:"),
            source,
        })?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(|source| StoreError::Query {
                step: "enable foreign keys",
                source,
            })?;
        schema::migrate(&mut conn)?;
        Ok(Self {
            conn: Mutex::new(conn),
            progress: ProgressBoard::default(),
        })
    }

    /// An in-memory store holding one device, for tests of the layers above.
    #[cfg(test)]
    pub fn with_test_device(id: &str) -> (Self, coracle_proto::DeviceId) {
        let store = Self::in_memory().expect("in-memory SQLite opens");
        let id: coracle_proto::DeviceId = id.parse().expect("test device id is valid");
        store
            .add_device(&NewDevice {
                id: id.clone(),
                tags: Default::default(),
                password_sha256: [0; 32],
            })
            .expect("fresh store accepts the device");
        (store, id)
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent (transactions roll
        // back on drop), so a poisoned lock is still safe to use.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn query(step: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |source| StoreError::Query { step, source }
}
