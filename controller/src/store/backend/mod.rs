//! The database behind `Store`: embedded SQLite (the default) or PostgreSQL (`[store] url =
//! "postgres://…"`). The store's files write SQL once (see `dialect`) and run it through a
//! `Tx`, a transaction on either backend; results come back as owned `Row`s of `Value`s.
//!
//! Every store call is one transaction. SQLite serialises them behind one connection's
//! mutex; PostgreSQL, which several controllers may share, runs them `SERIALIZABLE` and
//! retries one that lost a serialisation race, so a read-modify-write never interleaves.

pub mod dialect;
mod postgres;
mod sqlite;
mod value;

use std::path::Path;

pub use dialect::Dialect;
pub(crate) use value::params;
pub use value::{FromValue, Row, Value};

use postgres::PostgresBackend;
use sqlite::SqliteBackend;

/// Why a database call failed (below the store's own meaning of the call).
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("sqlite")]
    Sqlite(#[source] rusqlite::Error),
    #[error("postgresql")]
    Postgres(#[source] ::postgres::Error),
    #[error("the query returned no row")]
    NoRow,
    #[error("the result has no column {column}")]
    NoColumn { column: usize },
    #[error("column {column} holds {found}, not {wanted}")]
    ColumnType {
        column: usize,
        wanted: &'static str,
        found: &'static str,
    },
    #[error("postgresql column {column} has type {type_name}, which the store does not read")]
    UnsupportedType { column: usize, type_name: String },
    #[error("cannot start a postgresql connection thread")]
    SpawnConnectionThread(#[source] std::io::Error),
    #[error("the postgresql connection thread is gone")]
    ConnectionThreadGone,
}

impl DbError {
    /// Whether the transaction lost a race with another one and may simply run again.
    pub fn is_serialization_failure(&self) -> bool {
        match self {
            DbError::Postgres(err) => postgres::is_serialization_failure(err),
            _ => false,
        }
    }
}

impl Retryable for DbError {
    fn is_serialization_failure(&self) -> bool {
        DbError::is_serialization_failure(self)
    }
}

/// One connection's side of a transaction: statements in, owned rows out.
pub trait Session {
    fn dialect(&self) -> Dialect;
    /// Runs a statement; returns the rows it changed.
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, DbError>;
    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, DbError>;
    /// Runs several statements without parameters (migrations).
    fn execute_batch(&mut self, sql: &str) -> Result<(), DbError>;
}

/// Where the store lives.
#[derive(Debug)]
pub enum Backend {
    Sqlite(SqliteBackend),
    Postgres(PostgresBackend),
}

impl Backend {
    pub fn open_sqlite(path: &Path) -> Result<Self, DbError> {
        SqliteBackend::open(path).map(Backend::Sqlite)
    }

    pub fn sqlite_in_memory() -> Result<Self, DbError> {
        SqliteBackend::in_memory().map(Backend::Sqlite)
    }

    /// Connects to PostgreSQL at `url` (a `postgres://` URL or key=value string).
    pub fn connect_postgres(url: &str) -> Result<Self, DbError> {
        PostgresBackend::connect(url).map(Backend::Postgres)
    }

    pub fn dialect(&self) -> Dialect {
        match self {
            Backend::Sqlite(_) => Dialect::Sqlite,
            Backend::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Runs `work` in one transaction, committed when it returns `Ok`. `E` is the caller's
    /// error, which must say whether it came from a lost serialisation race (then the whole
    /// transaction runs again).
    pub fn transaction<R, E>(
        &self,
        work: impl FnMut(&mut dyn Session) -> Result<R, E>,
    ) -> Result<R, E>
    where
        E: From<TxError> + Retryable,
    {
        match self {
            Backend::Sqlite(db) => db.transaction(work),
            Backend::Postgres(db) => db.transaction(work),
        }
    }
}

/// A failed begin or commit, with the step it belonged to.
#[derive(Debug)]
pub struct TxError {
    pub step: &'static str,
    pub source: DbError,
}

/// An error that can tell a lost serialisation race from a real failure.
pub trait Retryable {
    fn is_serialization_failure(&self) -> bool;
}
