//! Two `coracle serve` replicas of one fleet: one PostgreSQL database, one data dir (keys and
//! blobs), Debian's Mosquitto as the broker. Device telemetry is split between them through
//! shared subscriptions; exactly one drives a rollout (its lease in the database); when that
//! one is killed mid-rollout, the other takes the rollout over and completes it. Simulated
//! devices speak the real protocol to Mosquitto.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use coracle_controller::api::rollouts::CreateRolloutRequest;
use coracle_controller::store::{RolloutPhase, RolloutRecord, Store};
use coracle_proto::Bootstrap;
use coracle_tests::sim::{Fleet, FleetConfig};
use support::mosquitto::{add_account, add_accounts, mosquitto_config, start_mosquitto};
use support::replica::{
    assert_ingest_split, enrol, fleet_stream, kill_the_driver_mid_rollout, rollout, wait_for,
    wait_presence, Replica,
};

/// Two replicas on a new database and Mosquitto, in a temp dir.
struct Pair {
    store_url: String,
    dir: tempfile::TempDir,
    mq: std::path::PathBuf,
    broker: coracle_tests::mosquitto::Mosquitto,
    replicas: Vec<Replica>,
}

impl Pair {
    /// `None` (after saying why) when PostgreSQL is not installed.
    fn start() -> Option<Self> {
        let Some(store_url) = coracle_tests::postgres::shared_database().unwrap() else {
            eprintln!("skipped: PostgreSQL is not installed (Debian's postgresql package)");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let mq = dir.path().join("mosquitto");
        mosquitto_config(&dir.path().join("data"), &mq, &[]);
        let broker = start_mosquitto(&mq, None);
        let section = format!("external_url = \"mqtt://127.0.0.1:{}\"", broker.port);
        // The first replica creates the data dir's keys; the second finds them.
        let mut replicas = vec![Replica::start(dir.path(), "a", &store_url, &section)];
        replicas.push(Replica::start(dir.path(), "b", &store_url, &section));
        Some(Self {
            store_url,
            dir,
            mq,
            broker,
            replicas,
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_completes_when_the_controller_driving_it_dies() {
    let Some(Pair {
        store_url,
        dir: _dir,
        mq,
        broker,
        mut replicas,
    }) = Pair::start()
    else {
        return;
    };

    // Four devices, enrolled through either replica.
    let boots: Vec<Bootstrap> = (0..4)
        .map(|i| {
            let boot = enrol(&replicas[i % 2].api(), &format!("harbour-{i}"), "harbour");
            add_account(&mq, &broker, &boot);
            boot
        })
        .collect();
    let config =
        FleetConfig::from_bootstraps("127.0.0.1", broker.port, &boots, Duration::from_secs(1));
    let fleet = Fleet::start(config.unwrap());
    // Both replicas see every device online (the presence topic reaches each of them)...
    let ids: Vec<_> = boots.iter().map(|b| b.device.clone()).collect();
    for replica in &replicas {
        wait_presence(replica, &ids, true).await;
    }
    // ...and their telemetry is split between them (one shared subscription).
    let streams: Vec<_> = replicas
        .iter()
        .map(|r| fleet_stream(r.api, &r.data))
        .collect();
    let stats = fleet.stats.clone();
    let (split, window) = assert_ingest_split(&replicas, &streams, move || {
        stats.published.load(Ordering::Relaxed)
    })
    .await;
    eprintln!("telemetry split {split:?} of {window} messages");

    let image = format!("example/web@sha256:{}", "b".repeat(64));
    kill_the_driver_mid_rollout(&mut replicas, &streams, &store_url, &image).await;
}

/// Devices in the one-wave test.
const WAVE_DEVICES: usize = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_wave_to_hundreds_of_devices_sends_each_device_its_generation_once() {
    let Some(Pair {
        store_url,
        dir: _dir,
        mq,
        broker,
        replicas,
    }) = Pair::start()
    else {
        return;
    };
    let boots: Vec<Bootstrap> = (0..WAVE_DEVICES)
        .map(|i| enrol(&replicas[i % 2].api(), &format!("wave-{i}"), "wave"))
        .collect();
    add_accounts(&mq, &broker, &boots);
    let config =
        FleetConfig::from_bootstraps("127.0.0.1", broker.port, &boots, Duration::from_secs(5));
    let _fleet = Fleet::start(config.unwrap());
    let ids: Vec<_> = boots.iter().map(|b| b.device.clone()).collect();
    wait_presence(&replicas[0], &ids, true).await;

    // One wave of every device. The driver renews its lease while it sends, so the other
    // replica never sends the same devices again (two publishes raced, and a device could
    // keep the older one while the store waited on the newer).
    let request = CreateRolloutRequest {
        compose: format!(
            "services:\n  web:\n    image: example/web@sha256:{}\n",
            "c".repeat(64)
        ),
        selector: "site=wave".into(),
        waves: "100%".into(),
        max_failures: 0.into(),
        health_window_s: 1,
        apply_timeout_s: None,
        app: None,
        rollback_on_failure: false,
        seccomp_profiles: Default::default(),
        context: Default::default(),
    };
    let created: RolloutRecord = replicas[0]
        .api()
        .send("create rollout", "POST", "/rollouts", &request)
        .unwrap();
    let started = std::time::Instant::now();
    let done = {
        let api = std::sync::Arc::new(replicas[1].api());
        move || {
            let record = rollout(&api, created.id)?;
            (!record.phase.is_active()).then_some(record)
        }
    };
    let record = wait_for("the rollout over", done).await;
    eprintln!(
        "{WAVE_DEVICES} devices rolled out in {:?}",
        started.elapsed()
    );
    assert_eq!(record.phase, RolloutPhase::Completed, "{record:?}");
    let store = Store::connect(&store_url).unwrap();
    let resent: Vec<_> = ids
        .iter()
        .filter_map(|id| {
            let generation = store.desired_generation(id).unwrap().map(|g| g.0);
            (generation != Some(1)).then(|| format!("{id}: {generation:?}"))
        })
        .collect();
    assert!(resent.is_empty(), "devices sent more than once: {resent:?}");
}
