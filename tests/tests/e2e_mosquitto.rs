//! End-to-end on an external broker (issue 9, scenario 8): the real controller runs
//! `coracle serve --broker` against Debian's Mosquitto, configured with what
//! `coracle broker mosquitto-config` generates (TLS listener with the controller CA's broker
//! certificate, per-device passwords, per-device ACL); real agents in their own network
//! namespaces reach it over TLS with nothing but their bootstrap files.
//! Root only; the tests of this file share the machine's side of the test network
//! (10.213.0.1), so they take turns.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use coracle_proto::{Bootstrap, BrokerAuth};
use coracle_tests::e2e::agent::Agent;
use coracle_tests::e2e::apps::{push_hello, two_service_app, wait_converged, WEB_PORT};
use coracle_tests::e2e::controller::Controller;
use coracle_tests::e2e::external_broker::ExternalBroker;
use coracle_tests::e2e::image::{noise, LayerFile};
use coracle_tests::e2e::injector::Injector;
use coracle_tests::e2e::wait_until;
use coracle_tests::netns::{TestHost, TestNetwork};

/// One extra file, `data/blob`, holding `data`.
fn blob(data: Vec<u8>) -> Vec<LayerFile> {
    vec![LayerFile::new("data/blob", data, 0o644)]
}

/// Mosquitto, then the controller on it, on a fresh test network.
fn start(dir: &Path) -> (TestNetwork, ExternalBroker, Controller) {
    let network = TestNetwork::new().unwrap();
    let broker = ExternalBroker::start(dir, TestNetwork::GATEWAY).unwrap();
    let controller = Controller::start_on_broker(dir, TestNetwork::GATEWAY, &broker).unwrap();
    (network, broker, controller)
}

/// Enrols `name` (the controller adds its account to Mosquitto's password file and reloads
/// Mosquitto) and checks its bootstrap file sends it to Mosquitto's TLS listener; returns
/// the bootstrap file.
fn enrol(controller: &Controller, broker: &ExternalBroker, name: &str, dir: &Path) -> PathBuf {
    let reloads = broker.reloads();
    let path = controller.enrol(name, dir).unwrap();
    let bootstrap = read_bootstrap(&path);
    assert_eq!(bootstrap.broker_url, broker.device_url(), "{name}");
    let passwd = std::fs::read_to_string(broker.dir.join("passwd")).unwrap();
    assert!(
        passwd.lines().any(|l| l.starts_with(&format!("{name}:"))),
        "{passwd}"
    );
    broker.wait_reloaded(reloads).unwrap();
    path
}

fn read_bootstrap(path: &Path) -> Bootstrap {
    toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// GET / from the machine to a device's address.
fn http_get(addr: Ipv4Addr, port: u16) -> String {
    coracle_tests::e2e::http_get(addr, port, "/").unwrap()
}

/// The retained desired state of `device` on the broker, read with the controller's account.
fn retained_desired(controller: &Controller, device: &str) -> Vec<u8> {
    let password = controller.secret("controller-mqtt.password").unwrap();
    let injector = Injector::connect(controller.broker, "coracle-controller", &password).unwrap();
    injector
        .first_message(
            &format!("coracle/v1/{device}/desired"),
            Duration::from_secs(10),
        )
        .unwrap()
}

#[test]
#[ignore = "needs root"]
fn two_devices_run_an_app_over_mosquitto_tls_and_take_an_update_as_a_delta() {
    let dir = tempfile::tempdir().unwrap();
    let (mut network, broker, controller) = start(dir.path());
    // Version 2 changes the page and 100 bytes in the middle of 1 MB of data.
    let data_v1 = noise(1 << 20, 5);
    let mut data_v2 = data_v1.clone();
    data_v2[1 << 19..(1 << 19) + 100].fill(0x5a);
    push_hello(&controller, dir.path(), "1", "hello v1", blob(data_v1)).unwrap();
    let v2_size = push_hello(&controller, dir.path(), "2", "hello v2", blob(data_v2)).unwrap();

    let mut agents = Vec::new();
    for name in ["pi-m1", "pi-m2"] {
        let host = network.add_host().unwrap();
        let bootstrap = enrol(&controller, &broker, name, dir.path());
        agents.push(Agent::start(name, &host, dir.path(), &bootstrap).unwrap());
    }
    for agent in &agents {
        controller
            .deploy(&two_service_app(dir.path(), "1").unwrap(), &agent.name)
            .unwrap();
    }
    for agent in &agents {
        let detail = wait_converged(&controller, &agent.name, 1).unwrap();
        assert_eq!(detail["device"]["online"], true, "{detail}");
        assert!(http_get(agent.host.addr, WEB_PORT).contains("hello v1"));
        // The device came in through Mosquitto's TLS listener, from its own address.
        let seen = format!("New client connected from {}:", agent.host.addr);
        let log = broker.output();
        assert!(
            log.lines()
                .any(|l| l.contains(&seen) && l.contains(&format!("as {}", agent.name))),
            "{}: not seen by mosquitto:\n{log}",
            agent.name
        );
    }

    for agent in &agents {
        controller
            .deploy(&two_service_app(dir.path(), "2").unwrap(), &agent.name)
            .unwrap();
    }
    for agent in &agents {
        wait_converged(&controller, &agent.name, 2).unwrap();
        assert!(http_get(agent.host.addr, WEB_PORT).contains("hello v2"));
        let pull = agent.last_pull().unwrap();
        assert!(
            pull.deltas == 1 && pull.full == 0,
            "{}: {pull:?} (layer is {v2_size} bytes)",
            agent.name
        );
    }
}

/// `mosquitto_sub`/`mosquitto_pub` from `host` against the devices' TLS listener, as
/// `user` with `password`, with the broker's CA; `args` say the rest.
fn mosquitto_client(
    host: &TestHost,
    program: &str,
    broker: &ExternalBroker,
    user: &str,
    password: &str,
    args: &[&str],
) -> Output {
    let mut cmd = host.command(program);
    cmd.args(["-h", &broker.tls.ip().to_string()])
        .args(["-p", &broker.tls.port().to_string()])
        .arg("--cafile")
        .arg(broker.dir.join("ca.pem"))
        .args(["-u", user, "-P", password])
        .args(args);
    cmd.output().unwrap()
}

fn password(bootstrap: &Path) -> String {
    match read_bootstrap(bootstrap).auth {
        BrokerAuth::Password { password, .. } => password,
        BrokerAuth::ClientCert { .. } => panic!("the controller enrols with passwords"),
    }
}

#[test]
#[ignore = "needs root"]
fn on_mosquitto_a_device_can_neither_read_nor_write_another_devices_topics() {
    let dir = tempfile::tempdir().unwrap();
    let (mut network, broker, controller) = start(dir.path());
    push_hello(&controller, dir.path(), "1", "hello v1", vec![]).unwrap();
    enrol(&controller, &broker, "pi-a", dir.path());
    let rogue_bootstrap = enrol(&controller, &broker, "pi-b", dir.path());
    let rogue_password = password(&rogue_bootstrap);
    // A's desired state is retained on Mosquitto whether or not A is online.
    controller
        .deploy(&two_service_app(dir.path(), "1").unwrap(), "pi-a")
        .unwrap();
    controller
        .deploy(&two_service_app(dir.path(), "1").unwrap(), "pi-b")
        .unwrap();
    let a_desired = retained_desired(&controller, "pi-a");
    let rogue = network.add_host().unwrap();
    let sub = |topic: &str, args: &[&str]| {
        let mut all = vec!["-t", topic, "-W", "3"];
        all.extend_from_slice(args);
        mosquitto_client(
            &rogue,
            "mosquitto_sub",
            &broker,
            "pi-b",
            &rogue_password,
            &all,
        )
    };

    // B's credentials read B's own retained desired state over TLS...
    let own = sub("coracle/v1/pi-b/desired", &["-C", "1", "-N"]);
    assert!(own.status.success() && !own.stdout.is_empty(), "{own:?}");
    // ...but nothing of A's, even asking with A's client id (`-v` prints each topic).
    for topic in [
        "coracle/v1/pi-a/desired",
        "coracle/v1/pi-a/#",
        "coracle/v1/#",
    ] {
        let other = sub(topic, &["-v", "-i", "pi-a"]);
        let seen = String::from_utf8_lossy(&other.stdout);
        assert!(
            !seen.contains("coracle/v1/pi-a/"),
            "pi-b read {topic}: {seen}"
        );
    }
    // Mosquitto took B's user name as its client id, so B could not push A off the broker.
    let log = broker.output();
    assert!(!log.contains(" as pi-a "), "{log}");

    // B's forged desired state for A (retained) is dropped: the broker still holds the
    // controller's.
    let forged = mosquitto_client(
        &rogue,
        "mosquitto_pub",
        &broker,
        "pi-b",
        &rogue_password,
        &[
            "-t",
            "coracle/v1/pi-a/desired",
            "-r",
            "-q",
            "1",
            "-m",
            "forged",
        ],
    );
    assert!(forged.status.success(), "{forged:?}");
    assert_eq!(retained_desired(&controller, "pi-a"), a_desired);

    // A wrong password, or no TLS: refused.
    let anonymous = mosquitto_client(
        &rogue,
        "mosquitto_sub",
        &broker,
        "pi-b",
        "not-the-password",
        &["-t", "coracle/v1/pi-b/desired", "-C", "1", "-W", "3"],
    );
    assert!(!anonymous.status.success(), "{anonymous:?}");
    let plain = rogue
        .command("mosquitto_sub")
        .args(["-h", &broker.tls.ip().to_string()])
        .args(["-p", &broker.tls.port().to_string()])
        .args(["-u", "pi-b", "-P", &rogue_password])
        .args(["-t", "coracle/v1/pi-b/desired", "-C", "1", "-W", "3"])
        .output()
        .unwrap();
    assert!(
        !plain.status.success() && plain.stdout.is_empty(),
        "{plain:?}"
    );

    // `coracle device rm` takes B's account off Mosquitto: its password stops working.
    let reloads = broker.reloads();
    controller.cli(&["device", "rm", "pi-b"]).unwrap();
    broker.wait_reloaded(reloads).unwrap();
    let removed = sub("coracle/v1/pi-b/desired", &["-C", "1"]);
    assert!(
        !removed.status.success() && removed.stdout.is_empty(),
        "{removed:?}"
    );
}

#[test]
#[ignore = "needs root"]
fn mosquitto_restart_agents_reconnect_and_the_controller_republishes_desired_states() {
    let dir = tempfile::tempdir().unwrap();
    let (mut network, mut broker, controller) = start(dir.path());
    push_hello(&controller, dir.path(), "1", "hello v1", vec![]).unwrap();
    push_hello(&controller, dir.path(), "2", "hello v2", vec![]).unwrap();
    let mut agents = Vec::new();
    for name in ["pi-r1", "pi-r2"] {
        let host = network.add_host().unwrap();
        let bootstrap = enrol(&controller, &broker, name, dir.path());
        let agent = Agent::start(name, &host, dir.path(), &bootstrap).unwrap();
        controller
            .deploy(&two_service_app(dir.path(), "1").unwrap(), name)
            .unwrap();
        agents.push(agent);
    }
    for agent in &agents {
        wait_converged(&controller, &agent.name, 1).unwrap();
    }
    let pids_before: Vec<_> = agents.iter().map(Agent::container_pids).collect();

    // Mosquitto dies and comes back with nothing retained. While it is down, pi-r1 gets
    // version 2: the controller accepts and stores it (the source of truth) though it cannot
    // publish it now.
    broker.kill9(true).unwrap();
    controller
        .deploy(&two_service_app(dir.path(), "2").unwrap(), "pi-r1")
        .expect("a deploy while the broker is down is stored, not refused");
    let detail = controller.device("pi-r1").unwrap();
    assert_eq!(detail["device"]["desired_generation"], 2, "{detail}");
    broker.restart().unwrap();

    // Both agents reconnect on their own...
    for agent in &agents {
        wait_until(
            &format!("{} to reconnect", agent.name),
            Duration::from_secs(60),
            || {
                let out = agent.output();
                if out.contains("broker link up") && out.contains("connects=2") {
                    Ok(())
                } else {
                    Err(out.lines().rev().take(3).collect::<Vec<_>>().join(" | "))
                }
            },
        )
        .unwrap();
    }
    // ...the controller's client reconnects and publishes every desired state again, so
    // both sides converge: pi-r1 runs version 2, and the fresh broker holds pi-r2's
    // unchanged desired state retained while pi-r2 keeps running version 1 untouched.
    wait_converged(&controller, "pi-r1", 2).unwrap();
    assert!(http_get(agents[0].host.addr, WEB_PORT).contains("hello v2"));
    assert!(!retained_desired(&controller, "pi-r2").is_empty());
    wait_converged(&controller, "pi-r2", 1).unwrap();
    assert_eq!(agents[1].container_pids(), pids_before[1]);
    assert!(http_get(agents[1].host.addr, WEB_PORT).contains("hello v1"));
    assert!(
        controller
            .output()
            .contains("broker reconnected, desired states republished"),
        "{}",
        controller.output()
    );
}
