//! End-to-end, issue 9 scenario 7: hostile desired states reach a real agent through the
//! real broker — published with the controller's own broker account, so only the agent's
//! verification stands between them and its containers. Garbage, a state signed by an
//! unknown key, one signed for another device and a replay of an older generation are each
//! rejected with their reason, reported to the controller, and change nothing on the device.
//! (That a device's credentials cannot touch other devices' topics is tested against the
//! same embedded broker in controller/tests/broker_acl.rs.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use coracle_proto::{decode, encode, DesiredState, Generation, Signed, TopicKind};
use coracle_tests::e2e::agent::Agent;
use coracle_tests::e2e::apps::{push_hello_versions, wait_applied, Settled};
use coracle_tests::e2e::controller::Controller;
use coracle_tests::e2e::injector::Injector;
use coracle_tests::e2e::wait_until;
use coracle_tests::netns::TestNetwork;
use ed25519_dalek::SigningKey;

fn app(dir: &Path, tag: &str) -> std::path::PathBuf {
    let compose = format!(
        r#"services:
  web:
    image: hello:{tag}
    command: ["/bin/busybox", "httpd", "-f", "-p", "0.0.0.0:8080", "-h", "/www"]
    restart: always
    healthcheck:
      test: ["HTTP", "8080", "/"]
      interval: 1s
      retries: 3
"#
    );
    let path = dir.join(format!("app-{tag}.yml"));
    std::fs::write(&path, compose).unwrap();
    path
}

#[test]
#[ignore = "needs root"]
fn forged_unsigned_misaddressed_and_replayed_desired_states_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let mut network = TestNetwork::new().unwrap();
    let controller = Controller::start(dir.path(), TestNetwork::GATEWAY).unwrap();
    push_hello_versions(&controller, dir.path(), &["1", "2"]).unwrap();
    let host = network.add_host().unwrap();
    let bootstrap = controller.enrol("pi-x", dir.path()).unwrap();
    let mut agent = Agent::start("pi-x", &host, dir.path(), &bootstrap).unwrap();
    controller.deploy(&app(dir.path(), "1"), "pi-x").unwrap();
    wait_applied(&controller, "pi-x", 1, Settled::Healthy).unwrap();

    // The attacker records generation 1 as the broker holds it (retained), then the
    // operator moves the device on to generation 2.
    let injector = Injector::connect(
        controller.broker,
        "coracle-controller",
        &controller.secret("controller-mqtt.password").unwrap(),
    )
    .unwrap();
    let topic = TopicKind::Desired.for_device(&"pi-x".parse().unwrap());
    let generation_1 = injector
        .first_message(&topic, Duration::from_secs(10))
        .unwrap();
    controller.deploy(&app(dir.path(), "2"), "pi-x").unwrap();
    wait_applied(&controller, "pi-x", 2, Settled::Healthy).unwrap();
    let pids = agent.container_pids();

    let real_key = {
        let seed: [u8; 32] = hex::decode(controller.secret("deployment.key").unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        SigningKey::from_bytes(&seed)
    };
    let signed: Signed<DesiredState> = decode(&generation_1).unwrap();
    let mut next = signed.open(&real_key.verifying_key()).unwrap();
    next.generation = Generation(3);

    let forged = encode(&Signed::sign(&next, &SigningKey::from_bytes(&[7; 32])));
    let mut elsewhere = next.clone();
    elsewhere.device = "pi-other".parse().unwrap();
    let misaddressed = encode(&Signed::sign(&elsewhere, &real_key));
    let attempts: [(&str, Vec<u8>, &str); 4] = [
        ("garbage", b"\x01not a desired state".to_vec(), "Malformed"),
        ("signed by an unknown key", forged, "UnknownKey"),
        ("signed for another device", misaddressed, "WrongDevice"),
        ("generation 1 replayed", generation_1, "Replay"),
    ];
    for (what, body, reason) in attempts {
        injector.publish(&topic, body).unwrap();
        let line = agent
            .wait_for_line("input rejected", Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("{what}: not rejected: {e}"));
        assert!(line.contains(reason), "{what}: {line}");
    }

    // Nothing changed on the device, and the controller heard about every rejection.
    assert_eq!(agent.container_pids(), pids);
    let detail = controller.device("pi-x").unwrap();
    assert_eq!(detail["reported"]["applied"], 2, "{detail}");
    let events = wait_until("the rejections reported", Duration::from_secs(20), || {
        let text = controller
            .cli(&["device", "events", "pi-x"])
            .map_err(|e| e.to_string())?;
        if text.matches("Rejected").count() >= 4 {
            Ok(text)
        } else {
            Err(text)
        }
    })
    .unwrap();
    for reason in ["Malformed", "UnknownKey", "WrongDevice", "Replay"] {
        assert!(events.contains(reason), "{reason} missing in {events}");
    }
}
