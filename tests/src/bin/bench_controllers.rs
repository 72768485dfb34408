//! Fleet benchmark with the controller in the loop: devices enrolled through the API,
//! simulated from their bootstrap files (`coracle_tests::sim`, real MQTT connections), a
//! staged rollout created through the API (waves `1,10%,100%`, 5 s health window), on two
//! setups measured in the same run:
//! - `embedded`: one `coracle serve` with its embedded broker and SQLite (the default);
//! - `replicas`: two `coracle serve` replicas on one PostgreSQL database and one data dir,
//!   with Debian's Mosquitto as the broker (shared subscriptions split the telemetry).
//!
//! Per setup and fleet size it prints: time until every device is online, the rollout's
//! time, the controller's RSS (each replica's) and per device, Mosquitto's RSS, the health
//! samples ingested per second, and on `replicas` a second rollout during which the replica
//! driving it is killed (SIGKILL) after its first wave: the other completes it.
//!
//! `cargo build --release -p coracle-controller -p coracle-tests &&
//!  target/release/bench_controllers 1000 10000` (as root: PostgreSQL runs as `postgres`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use coracle_proto::Bootstrap;
use coracle_tests::mosquitto::Mosquitto;
use coracle_tests::process::TestProcess;
use coracle_tests::sim::{Fleet, FleetConfig};

/// How often each simulated device sends a health sample.
const HEALTH_EVERY: Duration = Duration::from_secs(10);
/// The embedded broker's connection limit (`[broker] max_connections`, at most 9,000).
const EMBEDDED_LIMIT: usize = 9_000;
/// How long a setup may take to get every device online, or a rollout to complete.
const LIMIT: Duration = Duration::from_secs(600);

/// One `coracle serve`.
struct Serve {
    process: Option<TestProcess>,
    api: String,
    token: String,
}

impl Serve {
    fn start(config: &Path, data: &Path) -> Result<Self> {
        let mut cmd = Command::new(sibling("coracle")?);
        cmd.args(["serve", "--config"]).arg(config);
        cmd.env("RUST_LOG", "warn");
        let mut process = TestProcess::spawn(cmd)?;
        let line = process.wait_for_line("api listening on", Duration::from_secs(60))?;
        let api = line
            .rsplit(' ')
            .next()
            .context("api listening line")?
            .to_string();
        process.wait_for_line("registry listening on", Duration::from_secs(60))?;
        let token = std::fs::read_to_string(data.join("admin.token"))?
            .trim()
            .to_string();
        Ok(Self {
            process: Some(process),
            api: format!("http://{api}/api/v1"),
            token,
        })
    }

    fn output(&self) -> String {
        self.process
            .as_ref()
            .map(TestProcess::output)
            .unwrap_or_default()
    }

    fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(TestProcess::pid)
    }

    fn kill(&mut self) -> Result<()> {
        if let Some(mut process) = self.process.take() {
            process.signal(nix::sys::signal::Signal::SIGKILL)?;
            process.wait_timeout(Duration::from_secs(10))?;
        }
        Ok(())
    }

    fn post(&self, path: &str, body: serde_json::Value) -> Result<serde_json::Value> {
        let mut response = ureq::post(&format!("{}{path}", self.api))
            .header("Authorization", &format!("Bearer {}", self.token))
            .send_json(body)
            .with_context(|| format!("POST {path}"))?;
        Ok(response.body_mut().read_json()?)
    }

    fn get(&self, path: &str) -> Result<serde_json::Value> {
        let mut response = ureq::get(&format!("{}{path}", self.api))
            .header("Authorization", &format!("Bearer {}", self.token))
            .call()
            .with_context(|| format!("GET {path}"))?;
        Ok(response.body_mut().read_json()?)
    }

    /// A counter or gauge from `/metrics`.
    fn metric(&self, name: &str) -> u64 {
        let url = self.api.replace("/api/v1", "/metrics");
        let text = ureq::get(&url)
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    }
}

/// A binary built beside this one.
fn sibling(name: &str) -> Result<PathBuf> {
    let me = std::env::current_exe()?;
    let path = me.with_file_name(name);
    if !path.is_file() {
        bail!(
            "{} not built (cargo build -p coracle-controller)",
            path.display()
        );
    }
    Ok(path)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// Starts a setup.
type MakeSetup = fn() -> Result<Setup>;

/// A setup: its controllers, and its broker's address (and process, when external).
struct Setup {
    name: &'static str,
    controllers: Vec<Serve>,
    broker_port: u16,
    mosquitto: Option<Mosquitto>,
    dir: tempfile::TempDir,
}

fn config_text(data: &Path, lines: &str) -> String {
    format!(
        "data_dir = {data:?}\n{lines}\n[api]\nlisten = \"127.0.0.1:0\"\nmax_connections = 1024\n[registry]\nlisten = \"127.0.0.1:0\"\n"
    )
}

fn embedded() -> Result<Setup> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let port = coracle_tests::mosquitto::free_port()?;
    let config = dir.path().join("coracle.toml");
    std::fs::write(
        &config,
        config_text(
            &data,
            &format!("[broker]\nlisten = \"127.0.0.1:{port}\"\ntls_listen = \"127.0.0.1:0\"\nmax_connections = {EMBEDDED_LIMIT}\nmax_connections_per_ip = {EMBEDDED_LIMIT}\n[fleet]\noffline_after_s = 120"),
        ),
    )?;
    let serve = Serve::start(&config, &data)?;
    Ok(Setup {
        name: "embedded",
        controllers: vec![serve],
        broker_port: port,
        mosquitto: None,
        dir,
    })
}

fn replicas() -> Result<Setup> {
    // A new database per setup: each fleet size enrols its devices afresh.
    let Some(store) = coracle_tests::postgres::shared_database()? else {
        bail!("PostgreSQL is not installed (Debian's postgresql package)");
    };
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let mq = dir.path().join("mosquitto");
    let out = Command::new(sibling("coracle")?)
        .args(["broker", "mosquitto-config", "--local-port", "0", "--out"])
        .arg(&mq)
        .arg("--data-dir")
        .arg(&data)
        .output()?;
    if !out.status.success() {
        bail!("mosquitto-config: {}", String::from_utf8_lossy(&out.stderr));
    }
    let file = |name: &str| mq.join(name).display().to_string();
    let mosquitto = Mosquitto::start(&format!(
        "per_listener_settings false\nallow_anonymous false\npassword_file {}\nacl_file {}\nuser root\nmax_queued_messages 0\n",
        file("passwd"),
        file("acl"),
    ))?;
    let mut controllers = Vec::new();
    for name in ["a", "b"] {
        let config = dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &config,
            config_text(
                &data,
                &format!("[store]\nurl = {store:?}\n[broker]\nexternal_url = \"mqtt://127.0.0.1:{}\"\n[fleet]\noffline_after_s = 120\nrollout_lease_s = 5", mosquitto.port),
            ),
        )?;
        controllers.push(Serve::start(&config, &data)?);
    }
    Ok(Setup {
        name: "replicas",
        broker_port: mosquitto.port,
        mosquitto: Some(mosquitto),
        controllers,
        dir,
    })
}

/// Enrols `n` devices through the API (spread over the controllers); on Mosquitto, adds
/// their accounts in one `mosquitto_passwd -U` pass and a reload.
fn enrol(setup: &Setup, n: usize) -> Result<Vec<Bootstrap>> {
    let mut boots: Vec<Bootstrap> = Vec::with_capacity(n);
    for i in 0..n {
        let serve = &setup.controllers[i % setup.controllers.len()];
        let added = serve.post(
            "/devices",
            serde_json::json!({"id": format!("bench-{i}"), "tags": {"fleet": "bench"}}),
        )?;
        boots.push(serde_json::from_value(added["bootstrap"].clone())?);
    }
    if let Some(mosquitto) = &setup.mosquitto {
        let passwd = setup.dir.path().join("mosquitto").join("passwd");
        let mut text = std::fs::read_to_string(&passwd).unwrap_or_default();
        let mut plain = String::new();
        for boot in &boots {
            plain.push_str(&format!("{}:{}\n", boot.device, password(boot)?));
        }
        let plain_file = setup.dir.path().join("devices.passwd");
        std::fs::write(&plain_file, plain)?;
        let hashed = Command::new("mosquitto_passwd")
            .arg("-U")
            .arg(&plain_file)
            .status()?;
        if !hashed.success() {
            bail!("mosquitto_passwd -U failed");
        }
        text.push_str(&std::fs::read_to_string(&plain_file)?);
        std::fs::write(&passwd, text)?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(mosquitto.pid() as i32),
            nix::sys::signal::Signal::SIGHUP,
        )?;
    }
    Ok(boots)
}

fn password(boot: &Bootstrap) -> Result<String> {
    match &boot.auth {
        coracle_proto::BrokerAuth::Password { password, .. } => Ok(password.clone()),
        other => bail!("bootstrap of {} has no password: {other:?}", boot.device),
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> Result<bool>) -> Result<Duration> {
    let started = Instant::now();
    while !done()? {
        if started.elapsed() > LIMIT {
            bail!("{what}: not within {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(started.elapsed())
}

/// Creates a rollout of app version `version` on `serve` and returns its id.
fn start_rollout(serve: &Serve, version: u8) -> Result<i64> {
    let digest: String = std::iter::repeat_n(char::from(b'a' + version), 64).collect();
    let created = serve.post(
        "/rollouts",
        serde_json::json!({
            "compose": format!("services:\n  web:\n    image: example/web@sha256:{digest}\n"),
            "selector": "fleet=bench",
            "waves": "1,10%,100%",
            "max_failures": 0,
            "health_window_s": 5,
        }),
    )?;
    created["id"].as_i64().context("rollout id")
}

fn phase(serve: &Serve, id: i64) -> Result<String> {
    Ok(serve.get(&format!("/rollouts/{id}"))?["phase"]
        .as_str()
        .unwrap_or_default()
        .to_string())
}

fn completed(serve: &Serve, id: i64) -> Result<bool> {
    match phase(serve, id)?.as_str() {
        "completed" => Ok(true),
        "running" => Ok(false),
        other => bail!("rollout {id} {other}"),
    }
}

struct Row {
    setup: &'static str,
    devices: usize,
    online: Duration,
    rollout: Duration,
    rollout_killed: Option<Duration>,
    controller_kib: Vec<u64>,
    broker_kib: Option<u64>,
    /// Per controller.
    ingest_per_s: Vec<f64>,
}

async fn measure(setup: &mut Setup, n: usize) -> Result<Row> {
    let boots = tokio::task::block_in_place(|| enrol(setup, n))?;
    let started = Instant::now();
    let fleet = Fleet::start(FleetConfig::from_bootstraps(
        "127.0.0.1",
        setup.broker_port,
        &boots,
        HEALTH_EVERY,
    )?);
    let first = &setup.controllers[0];
    tokio::task::block_in_place(|| {
        wait_until("every device online", || {
            Ok(first.metric("coracle_devices_online") as usize >= n)
        })
    })?;
    let online = started.elapsed();
    // Ingest: what each controller stored over one health period.
    let ingested = |setup: &Setup| -> Vec<u64> {
        setup
            .controllers
            .iter()
            .map(|c| c.metric("coracle_ingest_messages_total"))
            .collect()
    };
    // One period first, so the connects' burst (presence, first reports) is not counted.
    tokio::time::sleep(HEALTH_EVERY).await;
    let before = ingested(setup);
    tokio::time::sleep(HEALTH_EVERY).await;
    let ingest_per_s = ingested(setup)
        .iter()
        .zip(&before)
        .map(|(after, before)| (after - before) as f64 / HEALTH_EVERY.as_secs_f64())
        .collect();

    let id = tokio::task::block_in_place(|| start_rollout(first, 1))?;
    let rollout =
        tokio::task::block_in_place(|| wait_until("the rollout", || completed(first, id)))?;
    let controller_kib = setup
        .controllers
        .iter()
        .filter_map(Serve::pid)
        .map(rss_kib)
        .collect();
    let broker_kib = setup.mosquitto.as_ref().map(|m| rss_kib(m.pid()));

    // With replicas: a second rollout, its driver (the replica that created it) killed
    // once its first wave is healthy; the survivor completes it.
    let rollout_killed = if setup.controllers.len() > 1 {
        let (driver, survivor) = (0, 1);
        let started = Instant::now();
        let id = tokio::task::block_in_place(|| start_rollout(&setup.controllers[driver], 2))?;
        tokio::task::block_in_place(|| {
            wait_until("the first wave healthy", || {
                let record = setup.controllers[survivor].get(&format!("/rollouts/{id}"))?;
                Ok(record["wave"].as_u64().unwrap_or(0) >= 1)
            })
        })?;
        setup.controllers[driver].kill()?;
        let survivor = &setup.controllers[survivor];
        tokio::task::block_in_place(|| {
            wait_until("the rollout after the kill", || completed(survivor, id))
        })?;
        Some(started.elapsed())
    } else {
        None
    };
    fleet.stop().await;
    Ok(Row {
        setup: setup.name,
        devices: n,
        online,
        rollout,
        rollout_killed,
        controller_kib,
        broker_kib,
        ingest_per_s,
    })
}

fn print(row: &Row) {
    let mb = |kib: u64| kib as f64 / 1024.0;
    let controllers: Vec<String> = row
        .controller_kib
        .iter()
        .map(|k| format!("{:.0}", mb(*k)))
        .collect();
    let ingest: Vec<String> = row.ingest_per_s.iter().map(|r| format!("{r:.0}")).collect();
    let per_device = row.controller_kib.iter().max().copied().unwrap_or(0) as f64 * 1024.0
        / row.devices as f64
        / 1000.0;
    println!(
        "{:<9} {:>8} {:>10.1} {:>11.1} {:>14} {:>16} {:>12.1} {:>10} {:>12}",
        row.setup,
        row.devices,
        row.online.as_secs_f64(),
        row.rollout.as_secs_f64(),
        row.rollout_killed
            .map_or("-".into(), |d| format!("{:.1}", d.as_secs_f64())),
        controllers.join("+"),
        per_device,
        row.broker_kib
            .map_or("(inside)".into(), |k| format!("{:.0}", mb(k))),
        ingest.join("+"),
    );
}

fn main() -> Result<()> {
    let sizes = coracle_tests::sim::fleet_sizes_from_args(1000)?;
    let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)?;
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    println!(
        "{:<9} {:>8} {:>10} {:>11} {:>14} {:>16} {:>12} {:>10} {:>12}",
        "setup",
        "devices",
        "online s",
        "rollout s",
        "killed-mid s",
        "controller MB",
        "KB/device",
        "broker MB",
        "ingest/s"
    );
    for n in sizes {
        let setups: [(&str, MakeSetup); 2] = [("embedded", embedded), ("replicas", replicas)];
        // BENCH_SETUPS=replicas runs just that one.
        let only = std::env::var("BENCH_SETUPS").unwrap_or_default();
        for (name, make) in setups {
            if !only.is_empty() && !only.split(',').any(|o| o == name) {
                continue;
            }
            if name == "embedded" && n > EMBEDDED_LIMIT {
                println!("{name:<9} {n:>8}  skipped: the embedded broker takes at most {EMBEDDED_LIMIT} devices");
                continue;
            }
            let mut setup = make()?;
            let row = match runtime.block_on(measure(&mut setup, n)) {
                Ok(row) => row,
                Err(err) => {
                    for serve in &setup.controllers {
                        let output = serve.output();
                        let tail: Vec<&str> = output.lines().rev().take(20).collect();
                        eprintln!("controller output (last lines, newest first):");
                        tail.iter().for_each(|line| eprintln!("  {line}"));
                    }
                    return Err(err);
                }
            };
            print(&row);
        }
    }
    println!(
        "health every {}s per device; waves 1,10%,100%, 5 s health window; KB/device: the largest controller's RSS / devices",
        HEALTH_EVERY.as_secs()
    );
    Ok(())
}
