//! Two `coracle serve` replicas of one fleet: one PostgreSQL database, one data dir (keys and
//! blobs), Debian's Mosquitto as the broker. Device telemetry is split between them through
//! shared subscriptions; exactly one drives a rollout (its lease in the database); when that
//! one is killed mid-rollout, the other takes the rollout over and completes it. Simulated
//! devices speak the real protocol to Mosquitto.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use coracle_controller::api::devices::{AddDeviceRequest, AddDeviceResponse, DeviceDetail};
use coracle_controller::api::rollouts::CreateRolloutRequest;
use coracle_controller::cli::{ApiArgs, ApiClient};
use coracle_controller::store::{DeviceStatus, RolloutPhase, RolloutRecord, Store};
use coracle_proto::Bootstrap;
use coracle_tests::sim::{Fleet, FleetConfig};
use support::mosquitto::{add_account, add_accounts, mosquitto_config, start_mosquitto};

/// Long enough for a takeover (one lease) and two waves on a loaded machine.
const WAIT: Duration = Duration::from_secs(60);
/// The replicas' lease: how long the survivor waits before taking a rollout over.
const LEASE_S: u64 = 3;

/// One `coracle serve` replica; killed on drop.
struct Replica {
    child: Child,
    api: SocketAddr,
    data: PathBuf,
}

impl Replica {
    /// Starts replica `name` on the shared data dir `dir/data`, database `store_url` and
    /// Mosquitto's plain listener `broker_port`, with rollout leases of `lease_s`.
    fn start(dir: &Path, name: &str, store_url: &str, broker_port: u16, lease_s: u64) -> Self {
        let data = dir.join("data");
        let config = dir.join(format!("{name}.toml"));
        let text = format!(
            "data_dir = {data:?}\n[store]\nurl = {store_url:?}\n[broker]\nexternal_url = \"mqtt://127.0.0.1:{broker_port}\"\n[fleet]\nrollout_lease_s = {lease_s}\noffline_after_s = 30\n[api]\nlisten = \"127.0.0.1:0\"\n[registry]\nlisten = \"127.0.0.1:0\"\n"
        );
        std::fs::write(&config, text).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_coracle"))
            .args(["serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let api = loop {
            let line = lines.next().expect("coracle serve exited").unwrap();
            if let Some(addr) = line.strip_prefix("api listening on ") {
                break addr.trim().parse().unwrap();
            }
        };
        // The registry is announced last: once it is, the replica serves.
        for line in lines.by_ref() {
            if line.unwrap().starts_with("registry listening on ") {
                break;
            }
        }
        std::thread::spawn(move || for _ in lines {});
        Self { child, api, data }
    }

    fn api(&self) -> ApiClient {
        ApiClient::from_args(&ApiArgs {
            data_dir: self.data.clone(),
            api: Some(format!("http://{}", self.api)),
            token: None,
            json: false,
        })
        .unwrap()
    }

    /// Whether this replica's lease name (host:pid:random) is `holder`.
    fn holds(&self, holder: &str) -> bool {
        holder.contains(&format!(":{}:", self.child.id()))
    }

    fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` (blocking calls, off the async workers) until `Some`, at most `WAIT`.
async fn wait_for<T: Send + 'static>(
    what: &str,
    check: impl Fn() -> Option<T> + Send + Sync + Clone + 'static,
) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(value) = tokio::task::spawn_blocking(check.clone()).await.unwrap() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn enrol(api: &ApiClient, name: &str) -> Bootstrap {
    enrol_at(api, name, "harbour")
}

fn enrol_at(api: &ApiClient, name: &str, site: &str) -> Bootstrap {
    let request = AddDeviceRequest {
        id: name.into(),
        tags: [("site".to_string(), site.to_string())].into(),
    };
    let added: AddDeviceResponse = api
        .send("add device", "POST", "/devices", &request)
        .unwrap();
    added.bootstrap
}

fn rollout(api: &ApiClient, id: i64) -> Option<RolloutRecord> {
    api.get("show rollout", &format!("/rollouts/{id}")).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_completes_when_the_controller_driving_it_dies() {
    let Some(store_url) = coracle_tests::postgres::shared_database().unwrap() else {
        eprintln!("skipped: PostgreSQL is not installed (Debian's postgresql package)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mq = dir.path().join("mosquitto");
    mosquitto_config(&dir.path().join("data"), &mq, &[]);
    let broker = start_mosquitto(&mq, None);
    // The first replica creates the data dir's keys; the second finds them.
    let mut replicas = vec![Replica::start(
        dir.path(),
        "a",
        &store_url,
        broker.port,
        LEASE_S,
    )];
    replicas.push(Replica::start(
        dir.path(),
        "b",
        &store_url,
        broker.port,
        LEASE_S,
    ));

    // Four devices, enrolled through either replica.
    let boots: Vec<Bootstrap> = (0..4)
        .map(|i| {
            let boot = enrol(&replicas[i % 2].api(), &format!("harbour-{i}"));
            add_account(&mq, &broker, &boot);
            boot
        })
        .collect();
    let config =
        FleetConfig::from_bootstraps("127.0.0.1", broker.port, &boots, Duration::from_secs(1));
    let fleet = Fleet::start(config.unwrap());
    // Both replicas see every device online (the presence topic reaches each of them)...
    for replica in &replicas {
        let (api, ids) = (
            std::sync::Arc::new(replica.api()),
            boots.iter().map(|b| b.device.clone()).collect::<Vec<_>>(),
        );
        wait_for("every device online on each replica", move || {
            ids.iter()
                .all(|id| {
                    api.get::<DeviceDetail>("show device", &format!("/devices/{id}"))
                        .is_ok_and(|d| d.device.online)
                })
                .then_some(())
        })
        .await;
    }
    // ...and their telemetry is split between them (one shared subscription): over a
    // window, the two ingest about what the devices published, not twice that. A few
    // messages in flight at the window's edges may count on one side only.
    let addrs: Vec<SocketAddr> = replicas.iter().map(|r| r.api).collect();
    let streams: Vec<_> = replicas
        .iter()
        .map(|r| fleet_stream(r.api, &r.data))
        .collect();
    let published = || {
        fleet
            .stats
            .published
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let published_before = published();
    let before: Vec<u64> = addrs.iter().map(|a| ingested_at(*a)).collect();
    let stats = fleet.stats.clone();
    wait_for("40 more device messages", move || {
        (stats.published.load(std::sync::atomic::Ordering::Relaxed) >= published_before + 40)
            .then_some(())
    })
    .await;
    let after: Vec<u64> = addrs.iter().map(|a| ingested_at(*a)).collect();
    let window = published() - published_before;
    let split: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    assert!(
        split.iter().all(|n| *n > 0) && split.iter().sum::<u64>() <= window + 8,
        "each replica ingests a share of the {window} messages published: {split:?}"
    );
    // Yet each replica's event stream shows the whole fleet's health, the other's share
    // included (relayed through the database).
    let total: u64 = split.iter().sum();
    for (i, stream) in streams.iter().enumerate() {
        let stream_health = || {
            drain(stream)
                .iter()
                .filter(|e| e["kind"] == "health")
                .count()
        };
        let mut seen = stream_health();
        let deadline = Instant::now() + WAIT;
        while (seen as u64) < total * 3 / 4 {
            assert!(
                Instant::now() < deadline,
                "replica {i} streamed {seen} health events of {total}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
            seen += stream_health();
        }
    }

    // A rollout in two waves, created on replica b: wave 1 is one device.
    let app = format!(
        "services:\n  web:\n    image: example/web@sha256:{}\n",
        "b".repeat(64)
    );
    let request = CreateRolloutRequest {
        compose: app,
        selector: "site=harbour".into(),
        waves: "1,100%".into(),
        max_failures: 0.into(),
        health_window_s: 2,
        apply_timeout_s: None,
        app: None,
        rollback_on_failure: false,
        seccomp_profiles: Default::default(),
        context: Default::default(),
    };
    let created: RolloutRecord = replicas[1]
        .api()
        .send("create rollout", "POST", "/rollouts", &request)
        .unwrap();
    let id = created.id;
    let store = std::sync::Arc::new(Store::connect(&store_url).unwrap());

    // Exactly one replica holds the lease while the first wave runs.
    let first_wave = {
        let (api, store) = (std::sync::Arc::new(replicas[0].api()), store.clone());
        move || {
            let record = rollout(&api, id)?;
            let started = record.devices[0].status != DeviceStatus::NotStarted;
            let lease = store.rollout_lease(id).ok()??;
            started.then_some(lease.holder)
        }
    };
    let holder = wait_for("the first wave under way", first_wave).await;
    let driver = replicas
        .iter()
        .position(|r| r.holds(&holder))
        .unwrap_or_else(|| panic!("lease holder {holder} is neither replica"));
    let survivor = 1 - driver;
    eprintln!(
        "telemetry split {split:?} of {window} messages; replica {driver} drives rollout {id}"
    );
    let record = rollout(&replicas[survivor].api(), id).unwrap();
    assert_eq!(record.phase, RolloutPhase::Running);
    assert!(
        record.devices[1..]
            .iter()
            .all(|d| d.status == DeviceStatus::NotStarted),
        "the second wave waits for the first: {record:?}"
    );

    // The survivor's stream showed the first wave, which the driver started.
    let wave_started = drain(&streams[survivor])
        .iter()
        .any(|e| e["kind"] == "rollout" && e["rollout"] == id && e["change"]["change"] == "wave");
    assert!(
        wave_started,
        "the survivor's stream shows the driver's wave"
    );

    // The driver dies mid-rollout; the survivor takes the rollout over and completes it.
    replicas[driver].kill9();
    let killed = Instant::now();
    let done = {
        let api = std::sync::Arc::new(replicas[survivor].api());
        move || {
            let record = rollout(&api, id)?;
            (record.phase == RolloutPhase::Completed).then_some(record)
        }
    };
    let record = wait_for("the rollout completed by the survivor", done).await;
    assert!(
        record
            .devices
            .iter()
            .all(|d| d.status == DeviceStatus::Healthy),
        "{record:?}"
    );
    eprintln!(
        "completed {:?} after the driver was killed",
        killed.elapsed()
    );
    let lease = store.rollout_lease(id).unwrap().unwrap();
    assert!(
        replicas[survivor].holds(&lease.holder),
        "the survivor drove the rest: {lease:?}"
    );
}

/// Devices in the one-wave test.
const WAVE_DEVICES: usize = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_wave_to_hundreds_of_devices_sends_each_device_its_generation_once() {
    let Some(store_url) = coracle_tests::postgres::shared_database().unwrap() else {
        eprintln!("skipped: PostgreSQL is not installed (Debian's postgresql package)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mq = dir.path().join("mosquitto");
    mosquitto_config(&dir.path().join("data"), &mq, &[]);
    let broker = start_mosquitto(&mq, None);
    let replicas = [
        Replica::start(dir.path(), "a", &store_url, broker.port, 2),
        Replica::start(dir.path(), "b", &store_url, broker.port, 2),
    ];
    let site = "wave";
    let boots: Vec<Bootstrap> = (0..WAVE_DEVICES)
        .map(|i| enrol_at(&replicas[i % 2].api(), &format!("{site}-{i}"), site))
        .collect();
    add_accounts(&mq, &broker, &boots);
    let config =
        FleetConfig::from_bootstraps("127.0.0.1", broker.port, &boots, Duration::from_secs(5));
    let _fleet = Fleet::start(config.unwrap());
    let store = std::sync::Arc::new(Store::connect(&store_url).unwrap());
    let ids: std::sync::Arc<Vec<_>> = boots
        .iter()
        .map(|b| b.device.clone())
        .collect::<Vec<_>>()
        .into();
    {
        let (store, ids) = (store.clone(), ids.clone());
        wait_for("every device online", move || {
            ids.iter()
                .all(|id| store.device(id).is_ok_and(|d| d.online))
                .then_some(())
        })
        .await;
    }

    // One wave of every device, with the shortest lease: the driver renews its lease while
    // it sends, so the other replica never sends the same devices again (which made two
    // publishes race, and a device could keep the older one while the store waited on
    // the newer).
    let request = CreateRolloutRequest {
        compose: format!(
            "services:\n  web:\n    image: example/web@sha256:{}\n",
            "c".repeat(64)
        ),
        selector: format!("site={site}").into(),
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
    let started = Instant::now();
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
    let resent: Vec<_> = ids
        .iter()
        .filter_map(|id| {
            let generation = store.desired_generation(id).unwrap().map(|g| g.0);
            (generation != Some(1)).then(|| format!("{id}: {generation:?}"))
        })
        .collect();
    assert!(resent.is_empty(), "devices sent more than once: {resent:?}");
}

/// `coracle_ingest_messages_total` of the replica at `addr`.
fn ingested_at(addr: SocketAddr) -> u64 {
    let text = ureq::get(&format!("http://{addr}/metrics"))
        .call()
        .map(|mut r| r.body_mut().read_to_string().unwrap_or_default())
        .unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("coracle_ingest_messages_total "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// The fleet event stream (SSE) of the replica at `addr`, each event's JSON, read in a thread.
fn fleet_stream(addr: SocketAddr, data: &Path) -> std::sync::mpsc::Receiver<serde_json::Value> {
    let token = std::fs::read_to_string(data.join("admin.token")).unwrap();
    let response = ureq::get(&format!("http://{addr}/api/v1/events/stream"))
        .header("Authorization", &format!("Bearer {}", token.trim()))
        .call()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let reader = BufReader::new(response.into_body().into_reader());
        for line in reader.lines() {
            let Ok(line) = line else { return };
            if let Some(data) = line.strip_prefix("data:") {
                let value = serde_json::from_str(data.trim()).unwrap();
                if tx.send(value).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

/// Every event `stream` has received so far.
fn drain(stream: &std::sync::mpsc::Receiver<serde_json::Value>) -> Vec<serde_json::Value> {
    stream.try_iter().collect()
}
