//! End-to-end, issue 17 item 5: `coracle device rotate` with the real controller, its
//! embedded broker and a real agent. The new password reaches the agent sealed to its key,
//! the agent writes it to its bootstrap file and reconnects with it before confirming, the
//! controller then revokes the old one: the device stays connected (a deploy after the
//! rotation is applied, and so is one after an agent restart from the rewritten file), and
//! the old password is refused by the broker. An offline device is refused with a reason.
//! Root only (network namespaces); takes turns on the test network like the other e2e tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use coracle_proto::{Bootstrap, BrokerAuth};
use coracle_tests::e2e::agent::Agent;
use coracle_tests::e2e::apps::{push_hello_versions, sleeper_app, wait_applied, Settled};
use coracle_tests::e2e::controller::Controller;
use coracle_tests::e2e::wait_until;
use coracle_tests::netns::TestNetwork;
use rumqttc::{Client, ConnectionError, Event, MqttOptions, Packet};

fn password(bootstrap: &Path) -> String {
    let text = std::fs::read_to_string(bootstrap).unwrap();
    match toml::from_str::<Bootstrap>(&text).unwrap().auth {
        BrokerAuth::Password { password, .. } => password,
        other => panic!("unexpected auth {other}"),
    }
}

/// Whether the broker accepts `device` with `password` (a CONNECT as the device itself).
fn broker_accepts(broker: SocketAddr, device: &str, password: &str) -> bool {
    let mut options = MqttOptions::new(device, broker.ip().to_string(), broker.port());
    options.set_credentials(device, password);
    let (_client, mut connection) = Client::new(options, 4);
    let deadline = Instant::now() + Duration::from_secs(10);
    for event in connection.iter() {
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => return true,
            Err(ConnectionError::ConnectionRefused(_)) => return false,
            Ok(_) => {}
            Err(err) => assert!(Instant::now() < deadline, "no CONNACK: {err}"),
        }
    }
    panic!("the connection ended without an answer")
}

#[test]
#[ignore = "needs root"]
fn a_rotated_device_stays_connected_and_its_old_password_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut network = TestNetwork::new().unwrap();
    let controller = Controller::start(dir.path(), TestNetwork::GATEWAY).unwrap();
    push_hello_versions(&controller, dir.path(), &["1", "2", "3"]).unwrap();
    let host = network.add_host().unwrap();
    let bootstrap = controller.enrol("pi-r", dir.path()).unwrap();
    let old = password(&bootstrap);
    let mut agent = Agent::start("pi-r", &host, dir.path(), &bootstrap).unwrap();
    controller
        .deploy(&sleeper_app(dir.path(), "1").unwrap(), "pi-r")
        .unwrap();
    wait_applied(&controller, "pi-r", 1, Settled::Running).unwrap();

    let out = controller.cli(&["device", "rotate", "pi-r"]).unwrap();
    assert!(out.contains("confirmed by the device"), "{out}");
    let new = password(&bootstrap);
    assert_ne!(new, old, "the bootstrap file holds the new password");
    let mode = std::fs::metadata(&bootstrap).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    agent
        .wait_for_line("broker password rotated", Duration::from_secs(10))
        .unwrap();
    assert!(
        !agent.output().contains(&new) && !controller.output().contains(&new),
        "a password was logged"
    );

    // Still connected: the next deploy is applied without a restart.
    controller
        .deploy(&sleeper_app(dir.path(), "2").unwrap(), "pi-r")
        .unwrap();
    wait_applied(&controller, "pi-r", 2, Settled::Running).unwrap();
    assert!(
        !broker_accepts(controller.broker, "pi-r", &old),
        "the old password still opens the broker"
    );

    // A restart reads the new password from the rewritten file.
    agent.restart().unwrap();
    controller
        .deploy(&sleeper_app(dir.path(), "3").unwrap(), "pi-r")
        .unwrap();
    wait_applied(&controller, "pi-r", 3, Settled::Running).unwrap();
    let audit = controller.cli(&["audit"]).unwrap();
    assert!(
        audit.contains("device.rotate") && audit.contains("pi-r"),
        "{audit}"
    );

    // Offline: refused, naming why; nothing changes.
    drop(agent);
    wait_until("pi-r offline", Duration::from_secs(60), || {
        let d = controller.device("pi-r").map_err(|e| e.to_string())?;
        if d["device"]["online"] == false {
            Ok(())
        } else {
            Err(d.to_string())
        }
    })
    .unwrap();
    let err = controller
        .cli(&["device", "rotate", "pi-r"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("device pi-r is offline"), "{err}");
    assert_eq!(password(&bootstrap), new);
}
