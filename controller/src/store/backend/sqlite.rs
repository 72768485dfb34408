//! The embedded default: one SQLite connection (WAL) behind a mutex. Calls are short, so
//! waiting for the lock is cheap; the mutex is what makes each transaction atomic.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::types::ValueRef;
use rusqlite::Connection;

use super::{DbError, Dialect, Retryable, Row, Session, TxError, Value};

const STATEMENT_CACHE: usize = 128;

#[derive(Debug)]
pub struct SqliteBackend {
    conn: Mutex<Connection>,
}

impl SqliteBackend {
    pub fn open(path: &Path) -> Result<Self, DbError> {
        let conn = Connection::open(path).map_err(DbError::Sqlite)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(DbError::Sqlite)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(DbError::Sqlite)?;
        Self::with_foreign_keys(conn)
    }

    pub fn in_memory() -> Result<Self, DbError> {
        Self::with_foreign_keys(Connection::open_in_memory().map_err(DbError::Sqlite)?)
    }

    fn with_foreign_keys(conn: Connection) -> Result<Self, DbError> {
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(DbError::Sqlite)?;
        // Every statement the store runs stays prepared (rusqlite keeps 16 by default).
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent (transactions roll
        // back on drop), so a poisoned lock is still safe to use.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `work` once: nothing else can interleave while this thread holds the mutex.
    pub fn transaction<R, E>(
        &self,
        mut work: impl FnMut(&mut dyn Session) -> Result<R, E>,
    ) -> Result<R, E>
    where
        E: From<TxError> + Retryable,
    {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|source| TxError {
            step: "begin transaction",
            source: DbError::Sqlite(source),
        })?;
        let out = work(&mut SqliteSession(&tx))?;
        tx.commit().map_err(|source| TxError {
            step: "commit transaction",
            source: DbError::Sqlite(source),
        })?;
        Ok(out)
    }
}

struct SqliteSession<'a>(&'a Connection);

impl Session for SqliteSession<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, DbError> {
        let mut stmt = self.0.prepare_cached(sql).map_err(DbError::Sqlite)?;
        let changed = stmt
            .execute(rusqlite::params_from_iter(params.iter().map(to_sqlite)))
            .map_err(DbError::Sqlite)?;
        Ok(changed as u64)
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, DbError> {
        let mut stmt = self.0.prepare_cached(sql).map_err(DbError::Sqlite)?;
        let columns = stmt.column_count();
        let mut rows = stmt
            .query(rusqlite::params_from_iter(params.iter().map(to_sqlite)))
            .map_err(DbError::Sqlite)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(DbError::Sqlite)? {
            let cells = (0..columns)
                .map(|i| row.get_ref(i).map(from_sqlite))
                .collect::<Result<Vec<_>, _>>()
                .map_err(DbError::Sqlite)?;
            out.push(Row(cells));
        }
        Ok(out)
    }

    fn execute_batch(&mut self, sql: &str) -> Result<(), DbError> {
        self.0.execute_batch(sql).map_err(DbError::Sqlite)
    }
}

fn to_sqlite(value: &Value) -> rusqlite::types::Value {
    use rusqlite::types::Value as Sql;
    match value {
        Value::Null => Sql::Null,
        Value::Int(v) => Sql::Integer(*v),
        Value::Real(v) => Sql::Real(*v),
        Value::Text(v) => Sql::Text(v.clone()),
        Value::Blob(v) => Sql::Blob(v.clone()),
    }
}

fn from_sqlite(value: ValueRef<'_>) -> Value {
    match value {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(v) => Value::Int(v),
        ValueRef::Real(v) => Value::Real(v),
        ValueRef::Text(v) => Value::Text(String::from_utf8_lossy(v).into_owned()),
        ValueRef::Blob(v) => Value::Blob(v.to_vec()),
    }
}
