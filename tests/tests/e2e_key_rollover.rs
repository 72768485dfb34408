//! End-to-end, issue 17 item 5: deployment key rollover with the real controller, its
//! embedded broker and real agents. `coracle admin rotate-deployment-key` twice: a device
//! online throughout follows each link and applies what the new keys sign; a device that
//! was offline through both rotations (and had a deploy stored for it meanwhile) walks both
//! links when it is back; a state signed by a retired key is refused; an agent restart
//! trusts the kept chain; a new enrolment pins the newest key. Root only (network namespaces); takes turns on the test network like the
//! other e2e tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use coracle_proto::{
    decode, encode, Bootstrap, DesiredState, Generation, KeyId, Signed, SigningKey, TopicKind,
};
use coracle_tests::e2e::agent::Agent;
use coracle_tests::e2e::apps::{push_hello_versions, sleeper_app, wait_applied, Settled};
use coracle_tests::e2e::controller::Controller;
use coracle_tests::e2e::injector::Injector;
use coracle_tests::netns::TestNetwork;

/// Rotates and returns the new key's id as the CLI printed it.
fn rotate(controller: &Controller, epoch: u32) -> String {
    let out = controller.cli(&["admin", "rotate-deployment-key"]).unwrap();
    assert!(out.contains(&format!("(epoch {epoch})")), "{out}");
    out.split_whitespace()
        .skip_while(|word| *word != "to")
        .nth(1)
        .unwrap()
        .to_string()
}

fn pinned_key_id(bootstrap: &Path) -> String {
    let text = std::fs::read_to_string(bootstrap).unwrap();
    let bootstrap: Bootstrap = toml::from_str(&text).unwrap();
    KeyId::of(&bootstrap.deployment_key().unwrap()).to_string()
}

fn signing_key(controller: &Controller) -> SigningKey {
    let seed: [u8; 32] = hex::decode(controller.secret("deployment.key").unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    SigningKey::from_bytes(&seed)
}

/// What a thief of the first key would try once pi-on has moved on: its current state at a
/// higher generation, signed by the retired key, published as the controller. Refused.
fn refuses_the_retired_key(
    controller: &Controller,
    agent: &mut Agent,
    retired: &SigningKey,
    retired_id: &str,
) {
    let injector = Injector::connect(
        controller.broker,
        "coracle-controller",
        &controller.secret("controller-mqtt.password").unwrap(),
    )
    .unwrap();
    let topic = TopicKind::Desired.for_device(&"pi-on".parse().unwrap());
    let retained = injector
        .first_message(&topic, Duration::from_secs(10))
        .unwrap();
    let current = signing_key(controller).verifying_key();
    let mut state = decode::<Signed<DesiredState>>(&retained)
        .unwrap()
        .open(&current)
        .unwrap();
    state.generation = Generation(state.generation.0 + 10);
    injector
        .publish(&topic, encode(&Signed::sign(&state, retired)))
        .unwrap();
    // The refusal names the retired key as the signer.
    let line = agent
        .wait_for_line(retired_id, Duration::from_secs(20))
        .unwrap();
    assert!(
        line.contains("input rejected") && line.contains("UnknownKey"),
        "{line}"
    );
}

#[test]
#[ignore = "needs root"]
fn devices_follow_a_key_rollover_online_offline_and_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut network = TestNetwork::new().unwrap();
    let controller = Controller::start(dir.path(), TestNetwork::GATEWAY).unwrap();
    push_hello_versions(&controller, dir.path(), &["1", "2", "3", "4"]).unwrap();
    let online_host = network.add_host().unwrap();
    let offline_host = network.add_host().unwrap();
    let online_boot = controller.enrol("pi-on", dir.path()).unwrap();
    let offline_boot = controller.enrol("pi-off", dir.path()).unwrap();
    let first_key = pinned_key_id(&online_boot);
    let first_signer = signing_key(&controller);
    let mut online = Agent::start("pi-on", &online_host, dir.path(), &online_boot).unwrap();
    let mut offline = Agent::start("pi-off", &offline_host, dir.path(), &offline_boot).unwrap();
    for device in ["pi-on", "pi-off"] {
        controller
            .deploy(&sleeper_app(dir.path(), "1").unwrap(), device)
            .unwrap();
        wait_applied(&controller, device, 1, Settled::Running).unwrap();
    }

    // pi-off goes away before the first rotation and stays away through both.
    offline.kill9().unwrap();
    let second_key = rotate(&controller, 1);
    assert_ne!(second_key, first_key);
    online
        .wait_for_line("deployment key rolled over", Duration::from_secs(30))
        .unwrap();
    controller
        .deploy(&sleeper_app(dir.path(), "2").unwrap(), "pi-on")
        .unwrap();
    wait_applied(&controller, "pi-on", 2, Settled::Running).unwrap();

    let third_key = rotate(&controller, 2);
    refuses_the_retired_key(&controller, &mut online, &first_signer, &first_key);
    controller
        .deploy(&sleeper_app(dir.path(), "2").unwrap(), "pi-off")
        .unwrap();
    controller
        .deploy(&sleeper_app(dir.path(), "3").unwrap(), "pi-on")
        .unwrap();
    wait_applied(&controller, "pi-on", 3, Settled::Running).unwrap();

    // Back after both rotations: it walks two links and applies what the newest key signed.
    offline.restart().unwrap();
    wait_applied(&controller, "pi-off", 2, Settled::Running).unwrap();
    assert!(
        offline.output().contains("deployment key rolled over"),
        "{}",
        offline.output()
    );

    // A restart trusts the kept chain (0600 in the state dir).
    let kept = online.data_dir.join("state/deployment-keys");
    let mode = std::fs::metadata(&kept).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    online.restart().unwrap();
    controller
        .deploy(&sleeper_app(dir.path(), "4").unwrap(), "pi-on")
        .unwrap();
    wait_applied(&controller, "pi-on", 4, Settled::Running).unwrap();

    // New enrolments pin the newest key; the rotations are in the audit log.
    let late = controller.enrol("pi-late", dir.path()).unwrap();
    assert_eq!(pinned_key_id(&late), third_key);
    let audit = controller.cli(&["audit"]).unwrap();
    assert!(
        audit.matches("deployment_key.rotate").count() == 2,
        "{audit}"
    );
}
