//! The fleet database on PostgreSQL: `coracle serve` with `[store] url` pointing at a real
//! Debian PostgreSQL the test starts. A device enrolled through the CLI (which goes through
//! the API) is read back through the API, and still there after a restart on the same
//! database; the migrations ran once (a second run of the first one would fail on its
//! existing tables, and the recorded version is the whole list). `coracle backup` refuses,
//! naming pg_dump.
#![allow(clippy::unwrap_used)]

mod support;

use coracle_tests::postgres::PostgresServer;
use support::{api, Controller};

fn device_ids(controller: &Controller) -> Vec<String> {
    let devices: serde_json::Value = api(controller).get("devices", "/devices").unwrap();
    devices
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect()
}

fn schema_version(url: &str) -> Vec<i64> {
    let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap();
    client
        .query("SELECT version FROM schema_version", &[])
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

#[test]
fn a_controller_on_postgresql_keeps_its_devices_across_restarts() {
    let Some(server) = PostgresServer::start().unwrap() else {
        return;
    };
    let url = server.create_database("coracle").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "{}[store]\nurl = {url:?}\n",
        Controller::config_text(dir.path(), "", "", "")
    );

    let controller = Controller::start_with_config(dir, &config);
    controller.enrol("pi-pg");
    assert_eq!(device_ids(&controller), vec!["pi-pg".to_string()]);
    assert!(
        !controller.data_dir().join("coracle.db").exists(),
        "no SQLite database beside a PostgreSQL store"
    );
    let migrated = schema_version(&url);
    assert_eq!(migrated.len(), 1);
    assert!(migrated[0] > 1);

    let backup = controller.cli(&["backup", "/nonexistent/backup.tar"]);
    assert!(!backup.status.success());
    let stderr = String::from_utf8_lossy(&backup.stderr);
    assert!(stderr.contains("pg_dump"), "{stderr}");

    let dir = controller.stop();
    let again = Controller::start_with_config(dir, &config);
    assert_eq!(device_ids(&again), vec!["pi-pg".to_string()]);
    again.enrol("pi-pg-2");
    assert_eq!(device_ids(&again).len(), 2);
    assert_eq!(
        schema_version(&url),
        migrated,
        "the second start migrated nothing"
    );
}
