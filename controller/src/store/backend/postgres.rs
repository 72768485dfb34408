//! PostgreSQL: a small pool of connections, each owned by its own thread. The synchronous
//! `postgres` client drives a private runtime, which must not start inside one of tokio's
//! threads, so a store call hands each statement (owned SQL and values) to the connection's
//! thread and waits for the owned rows; to the caller it blocks like the SQLite mutex.
//!
//! Transactions run `SERIALIZABLE`: where SQLite relies on its single connection, several
//! controllers on one database still see each call as if it ran alone, and the one that
//! loses a race runs again (`ATTEMPTS`).

use std::collections::HashMap;
use std::error::Error;
use std::hash::{BuildHasher, RandomState};
use std::sync::mpsc::{self, Sender};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use ::postgres::error::SqlState;
use ::postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use ::postgres::{Client, Config, NoTls, Statement};
use bytes::BytesMut;

use super::{DbError, Dialect, Retryable, Row, Session, TxError, Value};

/// Connections per controller: enough for the API, ingest and rollout driver at once.
const POOL_SIZE: usize = 4;
/// Runs of one transaction that keeps losing serialisation races before its error is
/// returned; between runs it waits a little longer each time, with jitter, so racers
/// spread out instead of colliding again.
const ATTEMPTS: u32 = 30;
const BACKOFF_STEP: Duration = Duration::from_millis(2);

pub fn is_serialization_failure(err: &::postgres::Error) -> bool {
    err.code().is_some_and(|code| {
        *code == SqlState::T_R_SERIALIZATION_FAILURE || *code == SqlState::T_R_DEADLOCK_DETECTED
    })
}

pub struct PostgresBackend {
    idle: Mutex<Vec<Worker>>,
    returned: Condvar,
}

impl std::fmt::Debug for PostgresBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresBackend")
            .field("pool_size", &POOL_SIZE)
            .finish()
    }
}

impl PostgresBackend {
    /// Parses `url` and connects the first connection, so a wrong URL or an unreachable
    /// server fails at start; the others connect on first use.
    pub fn connect(url: &str) -> Result<Self, DbError> {
        let config: Config = url.parse().map_err(DbError::Postgres)?;
        let workers = (0..POOL_SIZE)
            .map(|_| Worker::spawn(config.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        workers[0]
            .call(|conn| conn.reconnect().map(drop))?
            .map_err(DbError::Postgres)?;
        Ok(Self {
            idle: Mutex::new(workers),
            returned: Condvar::new(),
        })
    }

    fn idle(&self) -> MutexGuard<'_, Vec<Worker>> {
        // The list is only pushed and popped; a panic elsewhere cannot leave it half-changed.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn checkout(&self) -> CheckedOut<'_> {
        let mut idle = self.idle();
        loop {
            if let Some(worker) = idle.pop() {
                return CheckedOut {
                    pool: self,
                    worker: Some(worker),
                };
            }
            idle = self.returned.wait(idle).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Runs `work` in a serializable transaction, again when it loses a race.
    pub fn transaction<R, E>(
        &self,
        mut work: impl FnMut(&mut dyn Session) -> Result<R, E>,
    ) -> Result<R, E>
    where
        E: From<TxError> + Retryable,
    {
        let checked_out = self.checkout();
        let worker = checked_out.worker();
        let mut attempt = 1;
        loop {
            match run_once(worker, &mut work) {
                Err(err) if err.is_serialization_failure() && attempt < ATTEMPTS => {
                    std::thread::sleep(backoff(attempt));
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

/// Up to `attempt` steps, picked at random.
fn backoff(attempt: u32) -> Duration {
    // A fresh RandomState is randomly keyed: enough jitter without a random number crate.
    let random = RandomState::new().hash_one(attempt);
    BACKOFF_STEP * (1 + (random % u64::from(attempt)) as u32)
}

fn run_once<R, E>(
    worker: &Worker,
    work: &mut impl FnMut(&mut dyn Session) -> Result<R, E>,
) -> Result<R, E>
where
    E: From<TxError>,
{
    let tx_err = |step| move |source| TxError { step, source };
    worker
        .call(|conn| conn.begin())
        .and_then(|begun| begun.map_err(DbError::Postgres))
        .map_err(tx_err("begin transaction"))?;
    match work(&mut PostgresSession { worker }) {
        Ok(out) => {
            worker
                .call(|conn| conn.batch("COMMIT"))
                .and_then(|done| done.map_err(DbError::Postgres))
                .map_err(tx_err("commit transaction"))?;
            Ok(out)
        }
        Err(err) => {
            // A broken connection cannot roll back, but PostgreSQL drops its transaction.
            let _ = worker.call(|conn| conn.batch("ROLLBACK"));
            Err(err)
        }
    }
}

/// A worker taken from the pool, put back on drop (also when the work panicked).
struct CheckedOut<'a> {
    pool: &'a PostgresBackend,
    worker: Option<Worker>,
}

impl CheckedOut<'_> {
    fn worker(&self) -> &Worker {
        self.worker.as_ref().expect("present until dropped")
    }
}

impl Drop for CheckedOut<'_> {
    fn drop(&mut self) {
        if let Some(worker) = self.worker.take() {
            if std::thread::panicking() {
                // The work panicked mid-transaction: end it, or the next `BEGIN` would
                // join it and commit its statements.
                let _ = worker.call(|conn| conn.batch("ROLLBACK"));
            }
            self.pool.idle().push(worker);
            self.pool.returned.notify_one();
        }
    }
}

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// The handle of one connection's thread; the thread ends when the handle is dropped.
struct Worker {
    jobs: Sender<Job>,
}

impl Worker {
    fn spawn(config: Config) -> Result<Self, DbError> {
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("coracle-postgres".into())
            .spawn(move || {
                let mut conn = Connection {
                    config,
                    client: None,
                    statements: HashMap::new(),
                };
                for job in queue {
                    job(&mut conn);
                }
            })
            .map_err(DbError::SpawnConnectionThread)?;
        Ok(Self { jobs })
    }

    /// Runs `job` on the connection's thread and waits for its answer.
    fn call<R: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Connection) -> R + Send + 'static,
    ) -> Result<R, DbError> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.jobs
            .send(Box::new(move |conn| {
                let _ = reply.send(job(conn));
            }))
            .map_err(|_| DbError::ConnectionThreadGone)?;
        answer.recv().map_err(|_| DbError::ConnectionThreadGone)
    }
}

/// Prepared statements a connection keeps (the store's fixed ones are about a hundred).
const MAX_PREPARED: usize = 512;

/// A connection as its thread holds it, with its prepared statements.
struct Connection {
    config: Config,
    client: Option<Client>,
    statements: HashMap<String, Statement>,
}

impl Connection {
    fn reconnect(&mut self) -> Result<&mut Client, ::postgres::Error> {
        self.statements.clear();
        let client = self.config.connect(NoTls)?;
        Ok(self.client.insert(client))
    }

    /// Starts a transaction, connecting again when the connection broke: only here, since a
    /// statement on a new connection would run outside the caller's transaction. A client
    /// learns that its server went away (a restart, a failover) only when it next speaks, so
    /// a failed `BEGIN` on a now-closed client is tried once more on a new connection.
    fn begin(&mut self) -> Result<(), ::postgres::Error> {
        const BEGIN: &str = "BEGIN ISOLATION LEVEL SERIALIZABLE";
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.reconnect()?;
        }
        match self.open_client()?.batch_execute(BEGIN) {
            Err(_) if self.client.as_ref().is_some_and(Client::is_closed) => {
                self.reconnect()?.batch_execute(BEGIN)
            }
            other => other,
        }
    }

    fn batch(&mut self, sql: &str) -> Result<(), ::postgres::Error> {
        self.open_client()?.batch_execute(sql)
    }

    fn open_client(&mut self) -> Result<&mut Client, ::postgres::Error> {
        // Only before the first `begin`: afterwards a lost connection stays closed, failing
        // the rest of its transaction, until `begin` connects again.
        if self.client.is_none() {
            return self.reconnect();
        }
        Ok(self.client.as_mut().expect("present: checked just above"))
    }

    fn prepared(&mut self, sql: &str) -> Result<Statement, ::postgres::Error> {
        if let Some(statement) = self.statements.get(sql).cloned() {
            return Ok(statement);
        }
        let statement = self.open_client()?.prepare(sql)?;
        // Statements built for a number of rows vary; the cache must not grow with them
        // (dropped statements are closed on the server).
        if self.statements.len() >= MAX_PREPARED {
            self.statements.clear();
        }
        self.statements.insert(sql.to_string(), statement.clone());
        Ok(statement)
    }

    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, ::postgres::Error> {
        let statement = self.prepared(sql)?;
        self.open_client()?.execute(&statement, &as_params(params))
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, DbError> {
        let statement = self.prepared(sql).map_err(DbError::Postgres)?;
        let rows = self
            .open_client()
            .and_then(|client| client.query(&statement, &as_params(params)))
            .map_err(DbError::Postgres)?;
        rows.iter().map(to_row).collect()
    }
}

fn as_params(params: &[Value]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

struct PostgresSession<'a> {
    worker: &'a Worker,
}

impl Session for PostgresSession<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, DbError> {
        let sql = Dialect::Postgres.translate(sql).into_owned();
        let params = params.to_vec();
        self.worker
            .call(move |conn| conn.execute(&sql, &params))?
            .map_err(DbError::Postgres)
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, DbError> {
        let sql = Dialect::Postgres.translate(sql).into_owned();
        let params = params.to_vec();
        self.worker.call(move |conn| conn.query(&sql, &params))?
    }

    fn execute_batch(&mut self, sql: &str) -> Result<(), DbError> {
        let sql = Dialect::Postgres.translate(sql).into_owned();
        self.worker
            .call(move |conn| conn.batch(&sql))?
            .map_err(DbError::Postgres)
    }
}

fn to_row(row: &::postgres::Row) -> Result<Row, DbError> {
    (0..row.len())
        .map(|column| to_value(row, column))
        .collect::<Result<Vec<_>, _>>()
        .map(Row)
}

fn to_value(row: &::postgres::Row, column: usize) -> Result<Value, DbError> {
    fn get<'a, T: ::postgres::types::FromSql<'a>>(
        row: &'a ::postgres::Row,
        column: usize,
    ) -> Result<Option<T>, DbError> {
        row.try_get(column).map_err(DbError::Postgres)
    }
    let ty = row.columns()[column].type_();
    let value = match ty.name() {
        "int8" => get::<i64>(row, column)?.map(Value::Int),
        "int4" => get::<i32>(row, column)?.map(|v| Value::Int(v.into())),
        "int2" => get::<i16>(row, column)?.map(|v| Value::Int(v.into())),
        "bool" => get::<bool>(row, column)?.map(Value::from),
        "float8" => get::<f64>(row, column)?.map(Value::Real),
        "float4" => get::<f32>(row, column)?.map(|v| Value::Real(v.into())),
        "text" | "varchar" | "bpchar" | "name" => get::<String>(row, column)?.map(Value::Text),
        "bytea" => get::<Vec<u8>>(row, column)?.map(Value::Blob),
        other => {
            return Err(DbError::UnsupportedType {
                column,
                type_name: other.to_string(),
            })
        }
    };
    Ok(value.unwrap_or(Value::Null))
}

fn is_text(ty: &Type) -> bool {
    matches!(
        ty.name(),
        "text" | "varchar" | "bpchar" | "name" | "unknown"
    )
}

/// Values are bound to whatever type PostgreSQL inferred for the placeholder; integers
/// narrow (with a range check) where it inferred a smaller integer or a boolean.
impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        match (self, ty.name()) {
            (Value::Null, _) => Ok(IsNull::Yes),
            (Value::Int(v), "int8") => v.to_sql(ty, out),
            (Value::Int(v), "int4") => i32::try_from(*v)?.to_sql(ty, out),
            (Value::Int(v), "int2") => i16::try_from(*v)?.to_sql(ty, out),
            (Value::Int(v), "bool") => (*v != 0).to_sql(ty, out),
            (Value::Int(v), "float8") => (*v as f64).to_sql(ty, out),
            (Value::Real(v), "float8") => v.to_sql(ty, out),
            (Value::Text(v), _) if is_text(ty) => v.as_str().to_sql(ty, out),
            (Value::Blob(v), "bytea") => v.as_slice().to_sql(ty, out),
            (value, name) => {
                Err(format!("cannot bind {} to a parameter of type {name}", value.kind()).into())
            }
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

#[cfg(test)]
mod tests {
    use crate::store::test_backends::postgres_url;
    use crate::store::Store;

    #[test]
    fn a_store_connects_again_after_its_connections_were_cut() {
        let Some(url) = postgres_url() else {
            return;
        };
        let store = Store::connect(&url).unwrap();
        let id = store.add_test_device("pi-1");
        // Another session ends every other connection to the database, as a server restart
        // would.
        let mut admin = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
        admin
            .batch_execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE datname = current_database() AND pid <> pg_backend_pid()",
            )
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let others: i64 = admin
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity
                     WHERE datname = current_database() AND pid <> pg_backend_pid()",
                    &[],
                )
                .unwrap()
                .get(0);
            if others == 0 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "connections still there"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        for _ in 0..super::POOL_SIZE * 2 {
            assert!(store.device_exists(&id).unwrap());
        }
    }
}
