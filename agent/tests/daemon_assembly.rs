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
