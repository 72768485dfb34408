//! Schema migrations: an ordered list of SQL scripts; `PRAGMA user_version` records how many
//! ran. A database from a newer controller is refused rather than guessed at.

use rusqlite::Connection;

use super::StoreError;

/// Each entry runs once, in order, inside one transaction with the version bump.
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
];

/// Brings the schema up to date.
pub fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let current: usize = conn
        .query_row("PRAGMA user_version", [], |row| row.get::<_, i64>(0))
        .map_err(|source| StoreError::Query {
            step: "read schema version",
            source,
        })?
        .try_into()
        .unwrap_or(usize::MAX);
    if current > MIGRATIONS.len() {
        return Err(StoreError::NewerSchema {
            found: current,
            known: MIGRATIONS.len(),
        });
    }
    for (index, script) in MIGRATIONS.iter().enumerate().skip(current) {
        let version = index + 1;
        let err = |source| StoreError::Migrate { version, source };
        let tx = conn.transaction().map_err(err)?;
        tx.execute_batch(script).map_err(err)?;
        tx.pragma_update(None, "user_version", version as i64)
            .map_err(err)?;
        tx.commit().map_err(err)?;
        tracing::info!(version, "database schema migrated");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_run_once_and_are_idempotent() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        migrate(&mut conn).unwrap();
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version as usize, MIGRATIONS.len());
    }

    #[test]
    fn newer_schema_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        assert!(matches!(
            migrate(&mut conn),
            Err(StoreError::NewerSchema { found: 99, .. })
        ));
    }
}
