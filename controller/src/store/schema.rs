//! Schema migrations: one ordered list of SQL scripts for both backends (`backend::dialect`
//! spells them for PostgreSQL); the version records how many ran (SQLite: `PRAGMA
//! user_version`; PostgreSQL: the `schema_version` table). A database from a newer controller
//! is refused rather than guessed at.

use super::backend::{Backend, Dialect};
use super::tx::Tx;
use super::StoreError;

/// Each entry runs once, in order; those pending run in one transaction with the version bump.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE devices (
    id TEXT PRIMARY KEY,
    created_unix INTEGER NOT NULL,
    password_sha256 BLOB NOT NULL,
    online INTEGER NOT NULL DEFAULT 0,
    last_seen_unix INTEGER
);
CREATE TABLE tags (
    device TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (device, key)
);
CREATE INDEX tags_by_key_value ON tags (key, value);
CREATE TABLE desired (
    device TEXT PRIMARY KEY REFERENCES devices(id) ON DELETE CASCADE,
    generation INTEGER NOT NULL,
    signed BLOB NOT NULL,
    updated_unix INTEGER NOT NULL
);
CREATE TABLE reported (
    device TEXT PRIMARY KEY REFERENCES devices(id) ON DELETE CASCADE,
    applied INTEGER NOT NULL,
    body BLOB NOT NULL,
    received_unix INTEGER NOT NULL
);
CREATE TABLE health (
    device TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    bucket_unix INTEGER NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (device, bucket_unix)
);
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    at_unix INTEGER NOT NULL,
    received_unix INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX events_by_device ON events (device, id);
CREATE TABLE rollouts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    app TEXT NOT NULL,
    spec TEXT NOT NULL,
    state TEXT NOT NULL,
    created_unix INTEGER NOT NULL,
    updated_unix INTEGER NOT NULL
);
"#,
    super::rollouts::MIGRATION,
    // The last generation of each removed device: re-enrolling the name continues from it,
    // since the device itself still holds that generation and refuses anything older.
    r#"
CREATE TABLE retired_generations (
    device TEXT PRIMARY KEY,
    generation INTEGER NOT NULL
);
"#,
    super::rollouts::MIGRATION_APPLY_TIMEOUT,
    // Named API tokens (hashed) and the audit log.
    super::api_tokens::MIGRATION,
    // A device's pull token stays bound to the password of its enrolment when
    // `coracle device rotate` changes its broker password (NULL: the same as the password);
    // the password a rotation is switching to, valid beside the current one until the
    // device confirms it (kept across restarts when the confirmation never came).
    "ALTER TABLE devices ADD COLUMN pull_sha256 BLOB;
     ALTER TABLE devices ADD COLUMN next_sha256 BLOB;",
    // The newest pull token epoch each device confirmed, and when (pull_token_rotation).
    "ALTER TABLE devices ADD COLUMN pull_epoch INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE devices ADD COLUMN pull_rotated_unix INTEGER;",
    // Over-the-air agent updates: each device's last one, and agent rollouts.
    super::agent_updates::MIGRATION,
    // Several controllers on one database: who drives each rollout, and write revisions.
    super::rollouts::MIGRATION_LEASES,
];

/// Any constant: the advisory lock that keeps two controllers starting on one PostgreSQL
/// database from migrating it at once.
const MIGRATION_LOCK: i64 = 0x0063_6f72_6163_6c65;

/// Brings the schema up to date, in one transaction.
pub fn migrate(db: &Backend) -> Result<(), StoreError> {
    db.transaction(|session| {
        let mut tx = Tx::new(session);
        let current = read_version(&mut tx)?;
        if current > MIGRATIONS.len() {
            return Err(StoreError::NewerSchema {
                found: current,
                known: MIGRATIONS.len(),
            });
        }
        for (index, script) in MIGRATIONS.iter().enumerate().skip(current) {
            let version = index + 1;
            let migrate_err = |err| match err {
                StoreError::Query { source, .. } => StoreError::Migrate { version, source },
                other => other,
            };
            tx.execute_batch("apply migration", script)
                .and_then(|()| write_version(&mut tx, version))
                .map_err(migrate_err)?;
            tracing::info!(version, "database schema migrated");
        }
        Ok(())
    })
}

/// How many migrations ran (taking PostgreSQL's migration lock first).
fn read_version(tx: &mut Tx<'_>) -> Result<usize, StoreError> {
    let version: i64 = match tx.dialect() {
        Dialect::Sqlite => {
            tx.query_one("read schema version", "PRAGMA user_version", &[], |r| {
                r.get(0)
            })?
        }
        Dialect::Postgres => {
            // Each statement must see what a controller that held the lock before committed
            // (a serializable snapshot would predate it); the lock already serialises this.
            tx.execute_batch(
                "read what committed before the migration lock",
                "SET TRANSACTION ISOLATION LEVEL READ COMMITTED",
            )?;
            tx.execute(
                "take the migration lock",
                "SELECT pg_advisory_xact_lock(?1)",
                super::params![MIGRATION_LOCK],
            )?;
            tx.execute_batch(
                "create the schema version table",
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
            )?;
            tx.query_opt(
                "read schema version",
                "SELECT version FROM schema_version",
                &[],
                |r| r.get(0),
            )?
            .unwrap_or(0)
        }
    };
    Ok(version.try_into().unwrap_or(usize::MAX))
}

fn write_version(tx: &mut Tx<'_>, version: usize) -> Result<(), StoreError> {
    let version = version as i64;
    match tx.dialect() {
        // PRAGMA takes no placeholder; the number is ours.
        Dialect::Sqlite => tx.execute_batch(
            "write schema version",
            &format!("PRAGMA user_version = {version}"),
        ),
        Dialect::Postgres => {
            tx.execute("clear schema version", "DELETE FROM schema_version", &[])?;
            tx.execute(
                "write schema version",
                "INSERT INTO schema_version (version) VALUES (?1)",
                super::params![version],
            )
            .map(drop)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_backends::store_tests;
    use crate::store::Store;

    fn version(store: &Store) -> usize {
        store
            .transaction(read_version)
            .expect("schema version reads")
    }

    #[test]
    fn controllers_starting_at_once_on_a_new_postgresql_database_migrate_it_once() {
        let Some(url) = crate::store::test_backends::postgres_url() else {
            return;
        };
        let stores: Vec<Store> = std::thread::scope(|scope| {
            let starts: Vec<_> = (0..3)
                .map(|_| scope.spawn(|| Store::connect(&url)))
                .collect();
            starts
                .into_iter()
                .map(|start| start.join().unwrap().unwrap())
                .collect()
        });
        for store in &stores {
            assert_eq!(version(store), MIGRATIONS.len());
        }
    }

    store_tests! {
        fn migrations_run_once_and_are_idempotent(store) {
            migrate(&store.db).unwrap();
            assert_eq!(version(&store), MIGRATIONS.len());
        }

        fn newer_schema_is_refused(store) {
            store.transaction(|tx| write_version(tx, 99)).unwrap();
            assert!(matches!(
                migrate(&store.db),
                Err(StoreError::NewerSchema { found: 99, .. })
            ));
        }
    }
}
