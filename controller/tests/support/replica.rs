//! `coracle serve` replicas of one fleet on a shared data dir and PostgreSQL database, on an
//! external broker, and the checks the replica tests share: every device online on each
//! replica, telemetry split between them, a rollout completed after its driver is killed.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coracle_controller::api::devices::{AddDeviceRequest, AddDeviceResponse, DeviceDetail};
use coracle_controller::api::rollouts::CreateRolloutRequest;
use coracle_controller::cli::{ApiArgs, ApiClient};
use coracle_controller::store::{DeviceStatus, RolloutPhase, RolloutRecord, Store};
use coracle_proto::{Bootstrap, DeviceId};

/// Long enough for a takeover (one lease) and two waves on a loaded machine.
pub const WAIT: Duration = Duration::from_secs(60);
/// The replicas' lease: how long the survivor waits before taking a rollout over.
pub const LEASE_S: u64 = 3;

/// One `coracle serve` replica; killed on drop.
pub struct Replica {
    child: Child,
    pub api: SocketAddr,
    /// The registry's `host:port`.
    pub registry: String,
    pub data: PathBuf,
}

impl Replica {
    /// Starts replica `name` on the shared data dir `dir/data` and database `store_url`;
    /// `broker` holds the `[broker]` section's lines (an external broker), and may end with
    /// further sections.
    pub fn start(dir: &Path, name: &str, store_url: &str, broker: &str) -> Self {
        let data = dir.join("data");
        let config = dir.join(format!("{name}.toml"));
        let text = format!(
            "data_dir = {data:?}\n[store]\nurl = {store_url:?}\n[broker]\n{broker}\n[fleet]\nrollout_lease_s = {LEASE_S}\noffline_after_s = 30\n[api]\nlisten = \"127.0.0.1:0\"\n[registry]\nlisten = \"127.0.0.1:0\"\n"
        );
        std::fs::write(&config, text).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_coracle"))
            .args(["serve", "--config"])
            .arg(&config)
            .env(
                "RUST_LOG",
                std::env::var("CORACLE_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
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
        let registry = loop {
            let line = lines.next().expect("coracle serve exited").unwrap();
            if let Some(addr) = line.strip_prefix("registry listening on ") {
                break addr.trim().to_string();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Self {
            child,
            api,
            registry,
            data,
        }
    }

    pub fn api(&self) -> ApiClient {
        ApiClient::from_args(&ApiArgs {
            data_dir: self.data.clone(),
            api: Some(format!("http://{}", self.api)),
            token: None,
            json: false,
        })
        .unwrap()
    }

    /// Whether this replica's lease name (host:pid:random) is `holder`.
    pub fn holds(&self, holder: &str) -> bool {
        holder.contains(&format!(":{}:", self.child.id()))
    }

    pub fn kill9(&mut self) {
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
pub async fn wait_for<T: Send + 'static>(
    what: &str,
    check: impl Fn() -> Option<T> + Send + Sync + Clone + 'static,
) -> T {
    match try_wait_for(check).await {
        Some(value) => value,
        None => panic!("timed out waiting for {what}"),
    }
}

/// As [`wait_for`], `None` after `WAIT` (the caller says what was seen).
pub async fn try_wait_for<T: Send + 'static>(
    check: impl Fn() -> Option<T> + Send + Sync + Clone + 'static,
) -> Option<T> {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(value) = tokio::task::spawn_blocking(check.clone()).await.unwrap() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Enrols `name` through `api` with the tag `site`; its bootstrap file.
pub fn enrol(api: &ApiClient, name: &str, site: &str) -> Bootstrap {
    let request = AddDeviceRequest {
        id: name.into(),
        tags: [("site".to_string(), site.to_string())].into(),
    };
    let added: AddDeviceResponse = api
        .send("add device", "POST", "/devices", &request)
        .unwrap();
    added.bootstrap
}

pub fn rollout(api: &ApiClient, id: i64) -> Option<RolloutRecord> {
    api.get("show rollout", &format!("/rollouts/{id}")).ok()
}

/// Waits until `replica` shows each of `ids` online (`true`) or offline (`false`).
pub async fn wait_presence(replica: &Replica, ids: &[DeviceId], online: bool) {
    let (api, ids) = (Arc::new(replica.api()), ids.to_vec());
    wait_for("every device's presence on a replica", move || {
        ids.iter()
            .all(|id| {
                api.get::<DeviceDetail>("show device", &format!("/devices/{id}"))
                    .is_ok_and(|d| d.device.online == online)
            })
            .then_some(())
    })
    .await;
}

/// Over a window of at least 40 device messages (`published` counts them), each replica
/// ingests a share and the two together about the window, not twice it: one shared
/// subscription or queue group. A few messages in flight at the window's edges may count on
/// one side only. Each replica's event stream then shows most of the whole fleet's health
/// (the other's share relayed through the database). The per-replica counts.
pub async fn assert_ingest_split(
    replicas: &[Replica],
    streams: &[std::sync::mpsc::Receiver<serde_json::Value>],
    published: impl Fn() -> u64 + Send + Sync + Clone + 'static,
) -> (Vec<u64>, u64) {
    let addrs: Vec<SocketAddr> = replicas.iter().map(|r| r.api).collect();
    let published_before = published();
    let before: Vec<u64> = addrs.iter().map(|a| ingested_at(*a)).collect();
    let count = published.clone();
    wait_for("40 more device messages", move || {
        (count() >= published_before + 40).then_some(())
    })
    .await;
    let after: Vec<u64> = addrs.iter().map(|a| ingested_at(*a)).collect();
    let window = published() - published_before;
    let split: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    assert!(
        split.iter().all(|n| *n > 0) && split.iter().sum::<u64>() <= window + 8,
        "each replica ingests a share of the {window} messages published: {split:?}"
    );
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
    (split, window)
}

/// A rollout in two waves (one device, then the rest of `site=harbour`) created on replica
/// 1; exactly one replica drives it; that one is SIGKILLed mid-rollout and the survivor
/// takes it over and completes it, every device healthy. The rollout's id.
pub async fn kill_the_driver_mid_rollout(
    replicas: &mut [Replica],
    streams: &[std::sync::mpsc::Receiver<serde_json::Value>],
    store_url: &str,
    image: &str,
) -> i64 {
    let app = format!("services:\n  web:\n    image: {image}\n");
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
    let store = Arc::new(Store::connect(store_url).unwrap());

    // Exactly one replica holds the lease while the first wave runs.
    let first_wave = {
        let (api, store) = (Arc::new(replicas[0].api()), store.clone());
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
    eprintln!("replica {driver} drives rollout {id}");
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
        let api = Arc::new(replicas[survivor].api());
        move || {
            let record = rollout(&api, id)?;
            (record.phase == RolloutPhase::Completed).then_some(record)
        }
    };
    let Some(record) = try_wait_for(done).await else {
        panic!(
            "the survivor did not complete the rollout: {:?}",
            rollout(&replicas[survivor].api(), id)
        );
    };
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
    id
}

/// `coracle_ingest_messages_total` of the replica at `addr`.
pub fn ingested_at(addr: SocketAddr) -> u64 {
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
pub fn fleet_stream(addr: SocketAddr, data: &Path) -> std::sync::mpsc::Receiver<serde_json::Value> {
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
pub fn drain(stream: &std::sync::mpsc::Receiver<serde_json::Value>) -> Vec<serde_json::Value> {
    stream.try_iter().collect()
}
