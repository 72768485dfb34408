//! Staged rollouts end to end: the real `coracle serve` (embedded broker, SQLite), simulated
//! devices speaking the real protocol over real MQTT connections (`coracle_tests::sim`),
//! driven through the real API and the real `coracle` CLI.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use coracle_controller::api::devices::DeviceDetail;
use coracle_controller::api::rollouts::CreateRolloutRequest;
use coracle_controller::cli::ApiClient;
use coracle_controller::store::{DeviceStatus, RolloutPhase, RolloutRecord};
use coracle_proto::{
    encode, Bootstrap, ContainerState, DeviceId, Generation, Health, HealthSample, Presence,
    ReportedState, ServiceStatus, TopicKind, UpdateStatus,
};
use coracle_tests::sim::{Fleet, FleetConfig};
use rumqttc::QoS;
use support::{api, connect_device, data_dir, Controller};

/// Long enough for a rollout of three short waves on a loaded CI machine.
const WAIT: Duration = Duration::from_secs(25);

fn digest(byte: char) -> String {
    std::iter::repeat_n(byte, 64).collect()
}

/// An app pinned by digest (no registry lookup); the image digest tells versions apart in
/// what devices report.
fn app(version: char, broken: bool) -> String {
    let env = if broken {
        "\n      SIM_FAIL: \"1\""
    } else {
        ""
    };
    format!(
        "services:\n  web:\n    image: example/web@sha256:{}\n    environment:\n      VERSION: \"{version}\"{env}\n",
        digest(version)
    )
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A controller whose broker keeps its port across restarts and which marks a device
/// offline after `offline_after_s` without a heartbeat.
fn start_controller_with(
    dir: tempfile::TempDir,
    broker_port: u16,
    offline_after_s: u64,
) -> Controller {
    let text = format!(
        "data_dir = {:?}\n[fleet]\noffline_after_s = {offline_after_s}\n[broker]\nlisten = \"127.0.0.1:{broker_port}\"\ntls_listen = \"127.0.0.1:0\"\n[api]\nlisten = \"127.0.0.1:0\"\n[registry]\nlisten = \"127.0.0.1:0\"\n",
        data_dir(dir.path())
    );
    Controller::start_with_config(dir, &text)
}

/// A controller on free ports that marks devices offline after 3 s of silence.
fn start_controller(dir: tempfile::TempDir) -> Controller {
    start_controller_with(dir, 0, 3)
}

/// Enrols `n` devices named `{prefix}-{i}` with tag `site={prefix}`.
fn enrol(controller: &Controller, prefix: &str, n: usize) -> Vec<Bootstrap> {
    (0..n)
        .map(|i| {
            let name = format!("{prefix}-{i}");
            let out = controller.dir.path().join(format!("{name}.toml"));
            let result = controller.cli(&[
                "device",
                "add",
                &name,
                "--tag",
                &format!("site={prefix}"),
                "--out",
                out.to_str().unwrap(),
            ]);
            assert!(result.status.success(), "{result:?}");
            toml::from_str(&std::fs::read_to_string(out).unwrap()).unwrap()
        })
        .collect()
}

/// Simulated devices on the controller's broker, health every second.
fn simulate(controller: &Controller, boots: &[Bootstrap]) -> Fleet {
    let config = FleetConfig::from_bootstraps(
        "127.0.0.1",
        controller.broker.port(),
        boots,
        Duration::from_secs(1),
    );
    Fleet::start(config.unwrap())
}

/// Runs blocking API calls off the async runtime's workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// Polls `check` until it returns `Some` or `WAIT` passes.
async fn wait_for<T: Send + 'static>(
    what: &str,
    check: impl Fn() -> Option<T> + Send + Sync + Clone + 'static,
) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(value) = blocking(check.clone()).await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the driver has evaluated every active rollout `passes` more times: it had
/// every chance to act, so what it left alone it left alone on purpose.
async fn after_driver_passes(controller: &Controller, passes: u64) {
    let addr = controller.api;
    let start = blocking(move || driver_passes_at(addr)).await;
    wait_for("the rollout driver's passes", move || {
        (driver_passes_at(addr) >= start + passes).then_some(())
    })
    .await;
}

/// The rollout driver's passes so far, from `/metrics`.
fn driver_passes_at(addr: std::net::SocketAddr) -> u64 {
    let text = ureq::get(&format!("http://{addr}/metrics"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("coracle_rollout_driver_passes_total "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no driver passes in /metrics:\n{text}"))
}

fn device(api: &ApiClient, id: &DeviceId) -> DeviceDetail {
    api.get("show device", &format!("/devices/{id}")).unwrap()
}

fn rollout(api: &ApiClient, id: i64) -> RolloutRecord {
    api.get("show rollout", &format!("/rollouts/{id}")).unwrap()
}

async fn all_online(controller: &Controller, boots: &[Bootstrap]) {
    let ids: Vec<DeviceId> = boots.iter().map(|b| b.device.clone()).collect();
    let api = std::sync::Arc::new(api(controller));
    wait_for("every device online", move || {
        ids.iter()
            .all(|id| device(&api, id).device.online)
            .then_some(())
    })
    .await;
}

async fn wait_phase(controller: &Controller, id: i64, phase: RolloutPhase) -> RolloutRecord {
    let api = std::sync::Arc::new(api(controller));
    wait_for(&format!("rollout {id} {phase:?}"), move || {
        let record = rollout(&api, id);
        (record.phase == phase).then_some(record)
    })
    .await
}

fn request(compose: String, selector: &str, waves: &str, window: u64) -> CreateRolloutRequest {
    CreateRolloutRequest {
        compose,
        selector: selector.into(),
        waves: waves.into(),
        max_failures: 0.into(),
        health_window_s: window,
        apply_timeout_s: None,
        app: None,
        rollback_on_failure: false,
        seccomp_profiles: Default::default(),
        context: Default::default(),
    }
}

fn create(api: &ApiClient, request: &CreateRolloutRequest) -> RolloutRecord {
    api.send("create rollout", "POST", "/rollouts", request)
        .unwrap()
}

fn command(api: &ApiClient, id: i64, verb: &str) -> anyhow::Result<RolloutRecord> {
    api.send(
        verb,
        "POST",
        &format!("/rollouts/{id}/{verb}"),
        &serde_json::json!({}),
    )
}

/// Reads the SSE fleet stream in a thread and forwards each rollout event's JSON.
fn rollout_events(controller: &Controller) -> std::sync::mpsc::Receiver<serde_json::Value> {
    use std::io::BufRead;
    let url = format!("http://{}/api/v1/events/stream", controller.api);
    let token = controller.admin_token();
    let (tx, rx) = std::sync::mpsc::channel();
    let response = ureq::get(&url)
        .header("Authorization", &format!("Bearer {}", token.trim()))
        .call()
        .unwrap();
    std::thread::spawn(move || {
        let reader = std::io::BufReader::new(response.into_body().into_reader());
        for line in reader.lines() {
            let Ok(line) = line else { return };
            let Some(data) = line.strip_prefix("data:") else {
                continue;
            };
            let value: serde_json::Value = serde_json::from_str(data.trim()).unwrap();
            if value["kind"] == "rollout" && tx.send(value).is_err() {
                return;
            }
        }
    });
    rx
}

/// The image digest a device reports running.
fn running_image(api: &ApiClient, id: &DeviceId) -> Option<String> {
    let reported = device(api, id).reported?;
    Some(reported.services.first()?.image.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_fleet_completes_every_wave_through_the_cli() {
    let controller = start_controller(tempfile::tempdir().unwrap());
    let boots = enrol(&controller, "alpha", 5);
    let fleet = simulate(&controller, &boots);
    all_online(&controller, &boots).await;

    let events = rollout_events(&controller);
    let file = controller.dir.path().join("web.yml");
    std::fs::write(&file, app('1', false)).unwrap();
    let out = controller.cli(&[
        "deploy",
        file.to_str().unwrap(),
        "--to",
        "site=alpha",
        "--waves",
        "1,40%,100%",
        "--health-window",
        "2s",
    ]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.contains("rollout 1 started: web to 5 device(s)"),
        "{text}"
    );

    let done = wait_phase(&controller, 1, RolloutPhase::Completed).await;
    let api = api(&controller);
    for progress in &done.devices {
        assert_eq!(progress.status, DeviceStatus::Healthy, "{progress:?}");
        assert_eq!(progress.generation, Some(1), "{progress:?}");
        let detail = device(&api, &progress.device);
        assert_eq!(detail.device.desired_generation, Some(1));
        assert_eq!(detail.device.applied_generation, Some(1));
        assert_eq!(fleet.stats.received(&progress.device).map(|g| g.0), Some(1));
        assert_eq!(
            running_image(&api, &progress.device),
            Some(format!("sha256:{}", digest('1')))
        );
    }

    // Every transition was on the fleet event stream, in order.
    let mut waves = Vec::new();
    let mut healthy = 0;
    loop {
        let event = events.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(event["rollout"], 1, "{event}");
        let change = &event["change"];
        match change["change"].as_str().unwrap() {
            "wave" => waves.push(change["wave"].as_u64().unwrap()),
            "device" if change["status"] == "healthy" => healthy += 1,
            "phase" if change["phase"] == "completed" => break,
            _ => {}
        }
    }
    assert_eq!(waves, vec![0, 1, 2]);
    assert_eq!(healthy, 5);

    let ls = controller.cli(&["rollout", "ls"]);
    let ls = String::from_utf8_lossy(&ls.stdout);
    assert!(
        ls.contains("completed") && ls.contains("site=alpha"),
        "{ls}"
    );
    let show = controller.cli(&["rollout", "show", "1"]);
    let show = String::from_utf8_lossy(&show.stdout);
    assert!(
        show.contains("alpha-4") && show.contains("healthy"),
        "{show}"
    );
    let refused = controller.cli(&["rollout", "resume", "1"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("cannot resume a rollout that is completed"),
        "{stderr}"
    );
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_version_pauses_after_the_first_wave_and_rolls_back() {
    let controller = start_controller(tempfile::tempdir().unwrap());
    let boots = enrol(&controller, "beta", 5);
    let fleet = simulate(&controller, &boots);
    all_online(&controller, &boots).await;
    let api = std::sync::Arc::new(api(&controller));

    // Version 1 everywhere, as one wave.
    let v1 = create(&api, &request(app('1', false), "site=beta", "100%", 1));
    wait_phase(&controller, v1.id, RolloutPhase::Completed).await;

    // Version 2 is broken: the canary rolls it back by itself.
    let v2 = create(&api, &request(app('2', true), "site=beta", "1,40%,100%", 2));
    let paused = wait_phase(&controller, v2.id, RolloutPhase::Paused).await;
    assert_eq!(paused.devices[0].status, DeviceStatus::Failed);
    let reason = paused.devices[0].reason.clone().unwrap();
    assert!(reason.contains("rolled back generation 2"), "{reason}");
    assert!(paused.reason.unwrap().contains("failure threshold"));

    // Paused: nobody outside wave 1 gets generation 2, not even three driver passes later.
    after_driver_passes(&controller, 3).await;
    let still = rollout(&api, v2.id);
    assert_eq!(still.phase, RolloutPhase::Paused);
    for (i, boot) in boots.iter().enumerate().skip(1) {
        assert_eq!(still.devices[i].status, DeviceStatus::NotStarted);
        assert_eq!(
            device(&api, &boot.device).device.desired_generation,
            Some(1)
        );
        assert_eq!(fleet.stats.received(&boot.device).map(|g| g.0), Some(1));
    }
    assert_eq!(fleet.stats.received(&boots[0].device).map(|g| g.0), Some(2));

    // Rollback: the canary gets version 1 again as a new generation.
    let rolled = command(&api, v2.id, "rollback").unwrap();
    assert_eq!(rolled.phase, RolloutPhase::RolledBack);
    let canary = &rolled.devices[0];
    assert_eq!(canary.status, DeviceStatus::RolledBack);
    assert_eq!(canary.rollback_generation, Some(3));
    let id = boots[0].device.clone();
    let api2 = api.clone();
    wait_for("the canary applies the rollback", move || {
        (device(&api2, &id).device.applied_generation == Some(3)).then_some(())
    })
    .await;
    assert_eq!(
        running_image(&api, &boots[0].device),
        Some(format!("sha256:{}", digest('1')))
    );
    for boot in &boots[1..] {
        assert_eq!(
            device(&api, &boot.device).device.desired_generation,
            Some(1)
        );
    }
    let again = command(&api, v2.id, "rollback").unwrap_err();
    assert!(
        format!("{again:#}").contains("already rolled back"),
        "{again:#}"
    );
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_wave_is_rolled_back_automatically_when_asked() {
    let controller = start_controller(tempfile::tempdir().unwrap());
    let boots = enrol(&controller, "eta", 3);
    let fleet = simulate(&controller, &boots);
    all_online(&controller, &boots).await;
    let api = std::sync::Arc::new(api(&controller));
    let v1 = create(&api, &request(app('1', false), "site=eta", "100%", 1));
    wait_phase(&controller, v1.id, RolloutPhase::Completed).await;

    let mut broken = request(app('2', true), "site=eta", "1,100%", 2);
    broken.rollback_on_failure = true;
    let v2 = create(&api, &broken);
    let paused = wait_phase(&controller, v2.id, RolloutPhase::Paused).await;
    assert!(paused.reason.unwrap().contains("rolled back"));
    // The pause is saved first; the rollback's generation when it is sent, just after.
    let (api3, rollout_id) = (api.clone(), v2.id);
    let paused = wait_for("the rollback sent to the canary", move || {
        let record = rollout(&api3, rollout_id);
        record.devices[0]
            .rollback_generation
            .is_some()
            .then_some(record)
    })
    .await;
    assert_eq!(paused.devices[0].status, DeviceStatus::RolledBack);
    assert_eq!(paused.devices[0].rollback_generation, Some(3));
    let id = boots[0].device.clone();
    let api2 = api.clone();
    wait_for("the canary applies the automatic rollback", move || {
        (device(&api2, &id).device.applied_generation == Some(3)).then_some(())
    })
    .await;
    assert_eq!(
        running_image(&api, &boots[0].device),
        Some(format!("sha256:{}", digest('1')))
    );
    for boot in &boots[1..] {
        assert_eq!(
            device(&api, &boot.device).device.desired_generation,
            Some(1)
        );
    }
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_device_counts_as_not_healthy() {
    let controller = start_controller(tempfile::tempdir().unwrap());
    let boots = enrol(&controller, "theta", 2);
    // Only the first device ever connects.
    let fleet = simulate(&controller, &boots[..1]);
    all_online(&controller, &boots[..1]).await;
    let api = std::sync::Arc::new(api(&controller));
    let mut spec = request(app('1', false), "site=theta", "100%", 2);
    spec.max_failures = "60%".into();
    spec.apply_timeout_s = Some(2);
    let tolerant = create(&api, &spec);
    let done = wait_phase(&controller, tolerant.id, RolloutPhase::Completed).await;
    assert_eq!(done.devices[0].status, DeviceStatus::Healthy);
    assert_eq!(done.devices[1].status, DeviceStatus::Failed);
    let reason = done.devices[1].reason.clone().unwrap();
    assert!(
        reason.contains("within the 2 s apply timeout (offline)"),
        "{reason}"
    );

    // With no failure allowed, the same offline device pauses the next rollout.
    let mut strict = request(app('2', false), "site=theta", "100%", 2);
    strict.apply_timeout_s = Some(2);
    let strict = create(&api, &strict);
    let paused = wait_phase(&controller, strict.id, RolloutPhase::Paused).await;
    assert_eq!(paused.devices[1].status, DeviceStatus::Failed);
    fleet.stop().await;
}

/// `coracle ARGS --data-dir DIR` on a blocking thread (it may wait for devices).
async fn cli_waiting(controller: &Controller, args: &[&str]) -> std::process::Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_coracle"));
    command
        .args(args)
        .arg("--data-dir")
        .arg(controller.data_dir())
        .env("RUST_LOG", "warn");
    blocking(move || command.output().unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_wait_exits_by_what_the_device_and_the_rollout_did() {
    let controller = start_controller(tempfile::tempdir().unwrap());
    let boots = enrol(&controller, "lambda", 2);
    let fleet = simulate(&controller, &boots);
    all_online(&controller, &boots).await;
    let write = |name: &str, text: String| {
        let path = controller.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let good = write("good.yml", app('1', false));
    let broken = write("broken.yml", app('2', true));

    // Committed: exit 0, saying so.
    let args = [
        "deploy",
        &good,
        "--device",
        "lambda-0",
        "--wait",
        "--timeout",
        "20s",
    ];
    let out = cli_waiting(&controller, &args).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains("lambda-0 committed generation 1"),
        "{stdout}"
    );

    // Rolled back by the device: exit 1 with the device's reason.
    let args = ["deploy", &broken, "--device", "lambda-0", "--wait"];
    let out = cli_waiting(&controller, &args).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        stderr.contains("error: lambda-0 rolled back generation 2"),
        "{stderr}"
    );

    // A rollout: completes (exit 0), or pauses on the broken version (exit 1).
    let args = [
        "deploy",
        &good,
        "--to",
        "site=lambda",
        "--waves",
        "100%",
        "--health-window",
        "1s",
        "--wait",
    ];
    let out = cli_waiting(&controller, &args).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("rollout 1 completed"), "{stdout}");
    let args = [
        "deploy",
        &broken,
        "--to",
        "site=lambda",
        "--waves",
        "1,100%",
        "--health-window",
        "1s",
        "--wait",
    ];
    let out = cli_waiting(&controller, &args).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{out:?}");
    assert!(stderr.contains("error: rollout 2 paused"), "{stderr}");
    assert!(
        stderr.contains("lambda-0: failed: rolled back generation"),
        "{stderr}"
    );

    // Waiting for a device that never answers ends at the timeout.
    enrol(&controller, "mu", 1);
    let args = [
        "deploy",
        &good,
        "--device",
        "mu-0",
        "--wait",
        "--timeout",
        "1s",
    ];
    let out = cli_waiting(&controller, &args).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        stderr.contains("timed out after 1 s waiting for mu-0 to commit generation 1"),
        "{stderr}"
    );
    fleet.stop().await;
}

/// What a hand-driven device reports: `applied`, `update`, and `web` running.
fn report_of(device: &DeviceId, applied: u64, update: UpdateStatus) -> ReportedState {
    let mut state = coracle_proto::samples::reported_state(1);
    state.device = device.clone();
    state.applied = Generation(applied);
    state.update = update;
    state.services = vec![ServiceStatus {
        name: "web".parse().unwrap(),
        image: coracle_proto::Digest::from_bytes([1; 32]),
        state: ContainerState::Running,
        restart_count: 0,
        last_exit_code: None,
        oom_killed: false,
        health: Health::None,
    }];
    state
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_window_starts_when_the_device_runs_the_new_generation() {
    let controller = start_controller(tempfile::tempdir().unwrap());
    let boots = enrol(&controller, "kappa", 2);
    // kappa-0 is driven by hand and pulls for longer than the health window; kappa-1 never
    // connects and runs out of its apply timeout.
    let me = boots[0].device.clone();
    let (client, mut el) = connect_device(controller.broker_tls, &boots[0])
        .await
        .unwrap();
    let (desired_tx, mut desired_rx) = tokio::sync::mpsc::unbounded_channel();
    let desired_topic = TopicKind::Desired.for_device(&me);
    let pump = tokio::spawn({
        let topic = desired_topic.clone();
        async move {
            while let Ok(event) = el.poll().await {
                if let rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) = event {
                    if p.topic == topic && !p.payload.is_empty() {
                        let _ = desired_tx.send(p.payload.to_vec());
                    }
                }
            }
        }
    });
    client
        .subscribe(&desired_topic, QoS::AtLeastOnce)
        .await
        .unwrap();
    let send = |reported: ReportedState| {
        let client = client.clone();
        async move {
            let topic = TopicKind::Reported.for_device(&reported.device);
            client
                .publish(topic, QoS::AtLeastOnce, true, encode(&reported))
                .await
                .unwrap();
            let health = TopicKind::Health.for_device(&reported.device);
            client
                .publish(
                    health,
                    QoS::AtMostOnce,
                    false,
                    encode(&HealthSample::default()),
                )
                .await
                .unwrap();
        }
    };
    let online = TopicKind::Online.for_device(&me);
    client
        .publish(&online, QoS::AtLeastOnce, true, encode(&Presence::Online))
        .await
        .unwrap();
    // The device keeps its heartbeat up throughout (the controller marks it offline after
    // 3 s of silence).
    let heartbeat = tokio::spawn({
        let (client, health) = (client.clone(), TopicKind::Health.for_device(&me));
        async move {
            loop {
                let _ = client
                    .publish(
                        &health,
                        QoS::AtMostOnce,
                        false,
                        encode(&HealthSample::default()),
                    )
                    .await;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    });
    send(report_of(&me, 0, UpdateStatus::Idle)).await;
    all_online(&controller, &boots[..1]).await;

    let api = std::sync::Arc::new(api(&controller));
    let mut spec = request(app('1', false), "site=kappa", "100%", 1);
    spec.apply_timeout_s = Some(6);
    spec.max_failures = "1".into();
    let created = create(&api, &spec);
    // The desired state reaches the device; the rollout row names its generation.
    tokio::time::timeout(WAIT, desired_rx.recv())
        .await
        .unwrap()
        .unwrap();
    let (a, id) = (api.clone(), created.id);
    let generation =
        Generation(wait_for("the send", move || rollout(&a, id).devices[0].generation).await);
    // Pulling, past the 1 s health window: still deploying, its window not started.
    let applying = UpdateStatus::Applying { generation };
    send(report_of(&me, 0, applying.clone())).await;
    let (a, id) = (api.clone(), created.id);
    let row = wait_for("the health window to pass while pulling", move || {
        let row = rollout(&a, id).devices[0].clone();
        let deployed = row.deployed_unix?;
        (unix_now() > deployed + 2).then_some(row)
    })
    .await;
    send(report_of(&me, 0, applying)).await;
    assert_eq!(row.status, DeviceStatus::Deploying, "{row:?}");
    assert_eq!(row.running_since_unix, None);
    // In its health gate, then committed: the window runs from here and completes.
    send(report_of(&me, 0, UpdateStatus::Verifying { generation })).await;
    let (a, id) = (api.clone(), created.id);
    wait_for("the device to run the new generation", move || {
        rollout(&a, id).devices[0].running_since_unix
    })
    .await;
    send(report_of(&me, generation.0, UpdateStatus::Idle)).await;
    let (a, id) = (api.clone(), created.id);
    let done = wait_for("the rollout to complete", move || {
        let record = rollout(&a, id);
        (record.phase == RolloutPhase::Completed).then_some(record)
    })
    .await;
    heartbeat.abort();
    assert_eq!(done.devices[0].status, DeviceStatus::Healthy, "{done:?}");
    assert_eq!(done.devices[1].status, DeviceStatus::Failed);
    let reason = done.devices[1].reason.clone().unwrap();
    assert!(
        reason.contains("did not start generation")
            && reason.contains("6 s apply timeout (offline)"),
        "{reason}"
    );
    pump.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_and_abort_move_only_where_allowed() {
    let controller = start_controller(tempfile::tempdir().unwrap());
    let boots = enrol(&controller, "gamma", 3);
    let fleet = simulate(&controller, &boots);
    all_online(&controller, &boots).await;
    let api = std::sync::Arc::new(api(&controller));

    let first = create(&api, &request(app('1', false), "site=gamma", "1,100%", 2));
    let paused = command(&api, first.id, "pause").unwrap();
    assert_eq!(paused.phase, RolloutPhase::Paused);
    let err = command(&api, first.id, "pause").unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("only a running rollout can be paused") && text.contains("409"),
        "{text}"
    );
    // Held while paused: the canary is proven, the rest waits.
    let api2 = api.clone();
    let id = first.id;
    wait_for("the canary healthy while paused", move || {
        (rollout(&api2, id).devices[0].status == DeviceStatus::Healthy).then_some(())
    })
    .await;
    after_driver_passes(&controller, 3).await;
    let held = rollout(&api, first.id);
    assert_eq!(held.phase, RolloutPhase::Paused);
    assert!(held.devices[1..]
        .iter()
        .all(|d| d.status == DeviceStatus::NotStarted));

    // The devices are held: a second rollout to them is refused.
    let busy = api
        .send::<_, RolloutRecord>(
            "create",
            "POST",
            "/rollouts",
            &request(app('2', false), "site=gamma", "100%", 1),
        )
        .unwrap_err();
    assert!(
        format!("{busy:#}").contains("already in rollout 1"),
        "{busy:#}"
    );

    let resumed = command(&api, first.id, "resume").unwrap();
    assert_eq!(resumed.phase, RolloutPhase::Running);
    wait_phase(&controller, first.id, RolloutPhase::Completed).await;
    for verb in ["resume", "pause", "abort"] {
        let err = command(&api, first.id, verb).unwrap_err();
        assert!(format!("{err:#}").contains("completed"), "{verb}: {err:#}");
    }

    // Abort stops advancing and leaves devices as they are.
    let second = create(&api, &request(app('2', false), "site=gamma", "1,100%", 30));
    let aborted = command(&api, second.id, "abort").unwrap();
    assert_eq!(aborted.phase, RolloutPhase::Aborted);
    let err = command(&api, second.id, "resume").unwrap_err();
    assert!(format!("{err:#}").contains("only a paused rollout can be resumed"));
    after_driver_passes(&controller, 3).await;
    let left = rollout(&api, second.id);
    assert_eq!(left.phase, RolloutPhase::Aborted);
    assert!(left.devices[1..]
        .iter()
        .all(|d| d.status == DeviceStatus::NotStarted));
    for boot in &boots[1..] {
        assert_eq!(
            device(&api, &boot.device).device.desired_generation,
            Some(1)
        );
    }
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_continues_after_a_controller_restart() {
    let port = free_port();
    // Devices reconnect with backoff after the restart: the heartbeat timeout is not what
    // this test is about, so it is longer than their way back.
    let controller = start_controller_with(tempfile::tempdir().unwrap(), port, 20);
    let boots = enrol(&controller, "delta", 4);
    let fleet = simulate(&controller, &boots);
    all_online(&controller, &boots).await;
    let api_client = std::sync::Arc::new(api(&controller));
    let started = create(
        &api_client,
        &request(app('1', false), "site=delta", "1,50%,100%", 2),
    );
    let id = started.id;
    let api2 = api_client.clone();
    wait_for("the second wave", move || {
        (rollout(&api2, id).wave >= 1).then_some(())
    })
    .await;

    let dir = controller.stop();
    let controller = start_controller_with(dir, port, 20);
    let done = wait_phase(&controller, id, RolloutPhase::Completed).await;
    let api = api(&controller);
    for progress in &done.devices {
        // Exactly one generation per device: nothing was deployed twice across the restart.
        assert_eq!(progress.generation, Some(1), "{progress:?}");
        assert_eq!(progress.status, DeviceStatus::Healthy);
        assert_eq!(
            device(&api, &progress.device).device.applied_generation,
            Some(1)
        );
    }
    fleet.stop().await;
}

#[test]
fn bad_rollout_requests_are_refused_with_what_was_wrong() {
    let controller = start_controller(tempfile::tempdir().unwrap());
    enrol(&controller, "eps", 2);
    let api = api(&controller);
    let good = app('1', false);
    let with = |f: &dyn Fn(&mut CreateRolloutRequest)| {
        let mut r = request(good.clone(), "site=eps", "1,100%", 5);
        f(&mut r);
        r
    };
    let cases: Vec<(CreateRolloutRequest, &str)> = vec![
        (
            with(&|r| r.waves = "1,50%".into()),
            "last wave must be 100%",
        ),
        (with(&|r| r.waves = "1,x,100%".into()), "wave \"x\""),
        (
            with(&|r| r.selector = "site=nowhere".into()),
            "no device matches selector site=nowhere",
        ),
        (
            with(&|r| r.selector = "greenhouse".into()),
            "must be a tag key=value",
        ),
        (
            with(&|r| r.selector = serde_json::json!(["eps-0", "ghost"])),
            "device ghost, which is not enrolled",
        ),
        (with(&|r| r.health_window_s = 0), "health_window_s"),
        (with(&|r| r.max_failures = "lots".into()), "max_failures"),
        (with(&|r| r.compose = "services: [".into()), "line"),
        // Nothing interpolated it (no `context`): refused, naming the key.
        (
            with(&|r| r.compose = "services:\n  web:\n    image: hello:${TAG}\n".into()),
            "services.web.image",
        ),
    ];
    for (request, wanted) in cases {
        let err = api
            .send::<_, RolloutRecord>("create", "POST", "/rollouts", &request)
            .unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains(wanted) && text.contains("400"),
            "{wanted}: {text}"
        );
    }
    let missing = api
        .get::<RolloutRecord>("show", "/rollouts/999")
        .unwrap_err();
    assert!(
        format!("{missing:#}").contains("rollout 999 not found"),
        "{missing:#}"
    );
    let bad_id = api
        .get::<RolloutRecord>("show", "/rollouts/abc")
        .unwrap_err();
    assert!(format!("{bad_id:#}").contains("\"abc\" is not a number"));
    let unknown = command(&api, 999, "resume").unwrap_err();
    assert!(format!("{unknown:#}").contains("rollout 999 not found"));
    let verb = command(&api, 1, "explode").unwrap_err();
    assert!(
        format!("{verb:#}").contains("pause, resume, abort, rollback"),
        "{verb:#}"
    );
    let bad_json = api
        .send::<_, RolloutRecord>(
            "create",
            "POST",
            "/rollouts",
            &serde_json::json!({"compose": 1}),
        )
        .unwrap_err();
    assert!(
        format!("{bad_json:#}").contains("JSON body"),
        "{bad_json:#}"
    );
    assert!(api
        .get::<Vec<RolloutRecord>>("list", "/rollouts")
        .unwrap()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_device_is_marked_offline_and_a_heartbeat_revives_it() {
    let controller = start_controller(tempfile::tempdir().unwrap());
    let boot = enrol(&controller, "zeta", 1).remove(0);
    let (client, mut el) = connect_device(controller.broker_tls, &boot).await.unwrap();
    let online = TopicKind::Online.for_device(&boot.device);
    client
        .publish(&online, QoS::AtLeastOnce, true, encode(&Presence::Online))
        .await
        .unwrap();
    // Keep the connection alive (pings, acks) while the device sends no health.
    let pump = tokio::spawn(async move { while el.poll().await.is_ok() {} });
    let api = std::sync::Arc::new(api(&controller));
    let (a, id) = (api.clone(), boot.device.clone());
    wait_for("online", move || {
        device(&a, &id).device.online.then_some(())
    })
    .await;
    let (a, id) = (api.clone(), boot.device.clone());
    wait_for("offline without heartbeats", move || {
        (!device(&a, &id).device.online).then_some(())
    })
    .await;
    client
        .publish(
            TopicKind::Health.for_device(&boot.device),
            QoS::AtMostOnce,
            false,
            encode(&HealthSample::default()),
        )
        .await
        .unwrap();
    let (a, id) = (api.clone(), boot.device.clone());
    wait_for("online again after a heartbeat", move || {
        device(&a, &id).device.online.then_some(())
    })
    .await;
    pump.abort();
}

/// Prints what a one-wave rollout to many simulated devices costs the controller: the API
/// answers after every device's desired state is signed, stored and published.
/// `cargo test -p coracle-controller --test rollouts -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, prints figures"]
async fn measure_rollout_to_many_devices() {
    use coracle_controller::api::devices::{AddDeviceRequest, AddDeviceResponse};
    const DEVICES: usize = 300;
    let controller = start_controller_with(tempfile::tempdir().unwrap(), 0, 30);
    let api = std::sync::Arc::new(api(&controller));
    let api2 = api.clone();
    let boots: Vec<Bootstrap> = blocking(move || {
        (0..DEVICES)
            .map(|i| {
                let request = AddDeviceRequest {
                    id: format!("m-{i:04}"),
                    tags: [("site".to_string(), "m".to_string())].into(),
                };
                let added: AddDeviceResponse =
                    api2.send("add", "POST", "/devices", &request).unwrap();
                added.bootstrap
            })
            .collect()
    })
    .await;
    let fleet = simulate(&controller, &boots);
    all_online(&controller, &boots).await;
    for waves in ["100%", "1,10%,100%"] {
        let api2 = api.clone();
        let request = request(app('1', false), "site=m", waves, 1);
        let started = Instant::now();
        let record = blocking(move || create(&api2, &request)).await;
        let answered = started.elapsed();
        wait_phase(&controller, record.id, RolloutPhase::Completed).await;
        println!(
            "{DEVICES} devices, waves {waves}, window 1 s: API answered in {} ms, completed in {:.1} s",
            answered.as_millis(),
            started.elapsed().as_secs_f64()
        );
    }
    fleet.stop().await;
}
