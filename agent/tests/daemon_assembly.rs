//! `daemon::run` as the binary will call it: config and bootstrap files on disk, its own
//! current_thread runtime, a real Mosquitto, shutdown through the watch channel.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use coracle_agent::config::AgentConfig;
use coracle_agent::control::client;
use coracle_agent::daemon;
use coracle_proto::{encode, samples, Generation, Signed, SigningKey, TopicKind};
use support::fake_engine::FakeEngine;
use support::{bootstrap_mtls, wait_until, Controller, Mosquitto, Pki};

#[tokio::test(flavor = "current_thread")]
async fn daemon_runs_from_files_deploys_and_stops() {
    let pki = Pki::new();
    let broker = Mosquitto::start(&pki);
    let key = SigningKey::from_bytes(&[7; 32]);
    let controller = Controller::connect(&pki, broker.mtls_port, &["coracle/v1/+/online"]).await;
    let dir = tempfile::tempdir().unwrap();
    let bootstrap = bootstrap_mtls(&pki, &broker, samples::device().as_str(), &key);
    std::fs::write(
        dir.path().join("bootstrap.toml"),
        toml::to_string(&bootstrap).unwrap(),
    )
    .unwrap();
    let config_text = format!(
        "data_dir = \"{0}/data\"\nbootstrap = \"{0}/bootstrap.toml\"\ncontrol_socket = \"{0}/agent.sock\"\n",
        dir.path().display()
    );
    std::fs::write(dir.path().join("agent.toml"), &config_text).unwrap();
    let config = AgentConfig::load(&dir.path().join("agent.toml")).unwrap();

    let engine = Arc::new(FakeEngine::default());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let daemon_config = config.clone();
    let daemon_engine = engine.clone();
    let agent = std::thread::spawn(move || daemon::run(&daemon_config, daemon_engine, stop_rx));

    let mut state = samples::desired_with_services(1);
    // No health check: the sample's HTTP check would wait for a server this test lacks.
    state.services[0].health = None;
    state.services[0].update.health_gate_ms = None;
    state.services[0].lifecycle.min_uptime_ms = Some(0);
    controller
        .publish(
            TopicKind::Desired.for_device(&samples::device()),
            true,
            encode(&Signed::sign(&state, &key)),
        )
        .await;
    let socket = config.control_socket.clone();
    tokio::task::spawn_blocking(move || {
        wait_until(Duration::from_secs(20), || {
            client::status(&socket).is_ok_and(|s| s.reported.applied == Generation(42))
        })
    })
    .await
    .unwrap();
    assert_eq!(engine.inner.lock().unwrap().containers.len(), 1);

    // `coracle-agent exec NAME -- CMD...` through the control socket: the command's exit
    // code becomes the CLI's (the fake engine passes `true` and fails anything else).
    let service = state.services[0].name.to_string();
    let agent_toml = dir.path().join("agent.toml");
    let cli = move |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_coracle-agent"))
            .arg("--config")
            .arg(&agent_toml)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (passed, failed, missing) = tokio::task::spawn_blocking(move || {
        (
            cli(&["exec", &service, "--", "true"]),
            cli(&["exec", &service, "--", "false", "x"]),
            cli(&["exec", "nosuch", "--", "true"]),
        )
    })
    .await
    .unwrap();
    assert_eq!(passed.0, Some(0), "{}", passed.1);
    assert_eq!(failed.0, Some(1), "{}", failed.1);
    assert_eq!(missing.0, Some(1));
    assert!(missing.1.contains("nosuch"), "{}", missing.1);
    let persisted = coracle_agent::state::StateStore::new(&config.state_dir())
        .peek()
        .unwrap()
        .unwrap();
    assert_eq!(persisted.committed_generation(), Generation(42));

    stop_tx.send_replace(true);
    let result = tokio::task::spawn_blocking(move || agent.join().unwrap())
        .await
        .unwrap();
    result.unwrap();
}

#[test]
fn a_broken_bootstrap_file_is_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = AgentConfig {
        bootstrap: dir.path().join("bootstrap.toml"),
        data_dir: dir.path().join("data"),
        ..AgentConfig::default()
    };
    std::fs::write(&config.bootstrap, "device = \"pi\"\nbroker_url = 3\n").unwrap();
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let err = daemon::run(&config, Arc::new(FakeEngine::default()), rx).unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("bootstrap.toml"), "{text}");
    std::fs::remove_file(&config.bootstrap).unwrap();
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let err = daemon::run(&config, Arc::new(FakeEngine::default()), rx).unwrap_err();
    assert!(
        format!("{err:#}").contains("read bootstrap file"),
        "{err:#}"
    );
}

#[test]
fn check_accepts_the_installer_sample_and_refuses_a_bad_key() {
    let sample =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../cross/testdata/bootstrap.toml");
    let config = AgentConfig {
        bootstrap: sample.clone(),
        ..AgentConfig::default()
    };
    let bootstrap = daemon::check(&config).unwrap();
    assert_eq!(bootstrap.device.as_str(), "pi-kitchen-1");

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bootstrap.toml");
    let text = std::fs::read_to_string(&sample).unwrap();
    std::fs::write(&bad, text.replace("d75a98", "zz5a98")).unwrap();
    let config = AgentConfig {
        bootstrap: bad,
        ..AgentConfig::default()
    };
    let err = format!("{:#}", daemon::check(&config).unwrap_err());
    assert!(
        err.contains("non-hex") && err.contains("bootstrap.toml"),
        "{err}"
    );
}

const CHILD_ENV: &str = "CORACLE_DAEMON_CHILD_CONFIG";

/// Runs only as the child of `sigterm_stops_the_daemon_with_a_goodbye`.
#[test]
fn daemon_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let config = AgentConfig::load(std::path::Path::new(&path)).unwrap();
    let (_never, shutdown) = tokio::sync::watch::channel(false);
    daemon::run(&config, Arc::new(FakeEngine::default()), shutdown).unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn sigterm_stops_the_daemon_with_a_goodbye() {
    let pki = Pki::new();
    let broker = Mosquitto::start(&pki);
    let key = SigningKey::from_bytes(&[7; 32]);
    let mut controller =
        Controller::connect(&pki, broker.mtls_port, &["coracle/v1/+/online"]).await;
    let dir = tempfile::tempdir().unwrap();
    let bootstrap = bootstrap_mtls(&pki, &broker, samples::device().as_str(), &key);
    std::fs::write(
        dir.path().join("bootstrap.toml"),
        toml::to_string(&bootstrap).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("agent.toml"),
        format!(
            "data_dir = \"{0}/data\"\nbootstrap = \"{0}/bootstrap.toml\"\ncontrol_socket = \"{0}/agent.sock\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "daemon_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir.path().join("agent.toml"))
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let online = controller.next_on("/online").await;
    assert_eq!(
        coracle_proto::decode::<coracle_proto::Presence>(&online.payload).unwrap(),
        coracle_proto::Presence::Online
    );
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let goodbye = controller.next_on("/online").await;
    assert_eq!(
        coracle_proto::decode::<coracle_proto::Presence>(&goodbye.payload).unwrap(),
        coracle_proto::Presence::Offline
    );
    let exit = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(exit) = child.try_wait().unwrap() {
                return exit;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("daemon did not stop on SIGTERM");
            }
            std::thread::yield_now();
        }
    })
    .await
    .unwrap();
    assert!(exit.success(), "{exit:?}");
}
