//! `Store`: the fleet database. Devices, tags, desired states, reported states, health
//! history, events and rollouts; besides, in memory only, each device's latest pull progress
//! (`progress.rs`). Embedded SQLite (WAL) by default, PostgreSQL when `[store] url` names
//! one (`backend`); the same SQL and migrations run on both. Each call is one short,
//! synchronous transaction; the MQTT ingest path hands work to its own task so it never
//! waits on the database in a callback.

mod agent_updates;
mod api_tokens;
mod audit;
pub mod backend;
mod desired_many;
mod devices;
mod grants;
mod id_lists;
mod incoming;
mod overview;
mod presence;
mod progress;
mod pull_epochs;
mod rollouts;
mod schema;
mod service_names;
mod telemetry;
#[cfg(test)]
mod test_backends;
mod tx;

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

pub(crate) use backend::params;
use backend::{Backend, DbError, Retryable, TxError};
use tx::Tx;

pub use api_tokens::ApiTokenRecord;
pub use audit::AuditEntry;
pub use desired_many::NewDesired;
pub use devices::{DeviceRecord, NewDevice};
pub use incoming::{Incoming, Stored};
pub use progress::{LatestProgress, ProgressBoard};
pub use pull_epochs::{DeviceCredentials, PullTokenDue};
pub use rollouts::{
    now_ms, DeviceProgress, DeviceSeen, DeviceStatus, NewRollout, RolloutLease, RolloutPace,
    RolloutPhase, RolloutRecord, Selector, DEFAULT_APPLY_TIMEOUT_S,
};
pub use telemetry::{HealthPoint, StoredEvent, HEALTH_BUCKET_SECS, HEALTH_POINTS_KEPT};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open database {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: DbError,
    },
    #[error("cannot connect to the postgresql store")]
    Connect(#[source] DbError),
    #[error("database schema version {found} is newer than this controller knows ({known})")]
    NewerSchema { found: usize, known: usize },
    #[error("cannot apply schema migration {version}")]
    Migrate {
        version: usize,
        #[source]
        source: DbError,
    },
    #[error("database query failed: {step}")]
    Query {
        step: &'static str,
        #[source]
        source: DbError,
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
    #[error("rollout {id} was changed by another controller since it was read")]
    RolloutChanged { id: i64 },
}

impl From<TxError> for StoreError {
    fn from(err: TxError) -> Self {
        StoreError::Query {
            step: err.step,
            source: err.source,
        }
    }
}

impl Retryable for StoreError {
    fn is_serialization_failure(&self) -> bool {
        match self {
            StoreError::Query { source, .. } | StoreError::Migrate { source, .. } => {
                source.is_serialization_failure()
            }
            _ => false,
        }
    }
}

/// The fleet database.
#[derive(Debug)]
pub struct Store {
    db: Backend,
    /// Devices' latest pull progress, in memory only (`progress.rs`).
    pub progress: ProgressBoard,
}

impl Store {
    /// Opens (creating if needed) and migrates the SQLite database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Backend::open_sqlite(path).map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        Self::migrated(db)
    }

    /// Connects to and migrates the PostgreSQL database at `url`.
    pub fn connect(url: &str) -> Result<Self, StoreError> {
        Self::migrated(Backend::connect_postgres(url).map_err(StoreError::Connect)?)
    }

    /// The store `url` names (`[store] url`), or the SQLite database at `sqlite_path`
    /// when there is none.
    pub fn open_configured(url: Option<&str>, sqlite_path: &Path) -> Result<Self, StoreError> {
        match url {
            Some(url) => Self::connect(url),
            None => Self::open(sqlite_path),
        }
    }

    /// An in-memory SQLite store for tests.
    pub fn in_memory() -> Result<Self, StoreError> {
        let db = Backend::sqlite_in_memory().map_err(|source| StoreError::Open {
            path: PathBuf::from(":memory:"),
            source,
        })?;
        Self::migrated(db)
    }

    fn migrated(db: Backend) -> Result<Self, StoreError> {
        schema::migrate(&db)?;
        Ok(Self {
            db,
            progress: ProgressBoard::default(),
        })
    }

    /// Whether this store is on PostgreSQL (which `coracle backup` leaves to pg_dump).
    pub fn is_postgres(&self) -> bool {
        matches!(self.db, Backend::Postgres(_))
    }

    /// An in-memory store holding one device, for tests of the layers above.
    #[cfg(test)]
    pub fn with_test_device(id: &str) -> (Self, coracle_proto::DeviceId) {
        let store = Self::in_memory().expect("in-memory SQLite opens");
        let id = store.add_test_device(id);
        (store, id)
    }

    /// Adds a device without tags, for tests.
    #[cfg(test)]
    pub fn add_test_device(&self, id: &str) -> coracle_proto::DeviceId {
        let id: coracle_proto::DeviceId = id.parse().expect("test device id is valid");
        self.add_device(&NewDevice {
            id: id.clone(),
            tags: Default::default(),
            password_sha256: [0; 32],
        })
        .expect("fresh store accepts the device");
        id
    }

    /// Runs `work` as one transaction (again, on PostgreSQL, when it lost a race with
    /// another controller: `work` must not have effects outside the database).
    fn transaction<R>(
        &self,
        mut work: impl FnMut(&mut Tx<'_>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        self.db.transaction(|session| work(&mut Tx::new(session)))
    }
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
