//! End-to-end, issue 17: credentials rotate while devices stay connected, and the
//! controller can list who holds what. A real controller (embedded broker, pull tokens
//! rotated every few seconds) and a real agent:
//! - the agent is sent a new pull token each period, keeps it (0600) and pulls with it: an
//!   update deployed after several rotations is pulled and runs;
//! - the bootstrap's token, and later a rotated token two epochs back, are refused by the
//!   registry once the device has confirmed newer ones;
//! - an agent that lost its kept token (state wiped) reports the bootstrap's epoch and is
//!   sent a new one, so it pulls again;
//! - after `coracle admin rotate-deployment-key` the device reports the new key, and
//!   `coracle admin keys` lists it on the current key with the retired key kept.
//!
//! Root only (network namespaces); takes turns on the test network like the other e2e tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use coracle_proto::Bootstrap;
use coracle_tests::e2e::agent::Agent;
use coracle_tests::e2e::apps::{push_hello_versions, sleeper_app, wait_applied, Settled};
use coracle_tests::e2e::controller::Controller;
use coracle_tests::netns::TestNetwork;

/// The device's line of `coracle admin keys`: (deployment key epoch, pull token held,
/// pull token confirmed); `None` for what it has not reported.
fn keys_line(controller: &Controller, device: &str) -> (Option<u32>, Option<u32>, u32) {
    let table = controller.cli(&["admin", "keys"]).unwrap();
    let line = table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(device))
        .unwrap_or_else(|| panic!("{device} not in:\n{table}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let epoch = words
        .iter()
        .find(|w| w.starts_with('('))
        .map(|w| w.trim_matches(['(', ')']).parse().unwrap());
    let (held, confirmed) = words.last().unwrap().split_once('/').unwrap();
    (epoch, held.parse().ok(), confirmed.parse().unwrap())
}

/// Waits (60 s at most) until the device's keys line satisfies `done`.
fn wait_keys(
    controller: &Controller,
    device: &str,
    what: &str,
    done: impl Fn((Option<u32>, Option<u32>, u32)) -> bool,
) -> (Option<u32>, Option<u32>, u32) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let line = keys_line(controller, device);
        if done(line) {
            return line;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: still {line:?}\n{}",
            controller.output()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The token kept in the agent's state dir and its epoch. The file is a checked state file
/// (magic, version, sha256: 37 bytes) holding the bootstrap token's sha256, the epoch (u32
/// little-endian) and the token.
fn kept_token(state_dir: &Path) -> Option<(u32, String)> {
    let bytes = std::fs::read(state_dir.join("pull-token")).ok()?;
    let body = bytes.get(37..)?;
    let epoch = u32::from_le_bytes(body.get(32..36)?.try_into().ok()?);
    Some((epoch, String::from_utf8(body.get(36..)?.to_vec()).ok()?))
}

fn bootstrap_token(path: &Path) -> String {
    let bootstrap: Bootstrap = toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    bootstrap.registry_token.unwrap()
}

#[test]
#[ignore = "needs root"]
fn pull_tokens_rotate_on_schedule_and_devices_report_the_keys_they_hold() {
    let dir = tempfile::tempdir().unwrap();
    let mut network = TestNetwork::new().unwrap();
    let controller = Controller::start_with_config(
        dir.path(),
        TestNetwork::GATEWAY,
        "pull_token_rotation_s = 3\n",
    )
    .unwrap();
    push_hello_versions(&controller, dir.path(), &["1", "2", "3"]).unwrap();
    let host = network.add_host().unwrap();
    let boot = controller.enrol("pi-a", dir.path()).unwrap();
    let first_token = bootstrap_token(&boot);
    // Before the device is online nothing rotates: the bootstrap's token reads what the
    // device's desired state names.
    controller
        .deploy(&sleeper_app(dir.path(), "1").unwrap(), "pi-a")
        .unwrap();
    controller
        .pull_manifest_as(&first_token, "hello:1")
        .unwrap();
    let mut agent = Agent::start("pi-a", &host, dir.path(), &boot).unwrap();
    let state_dir = agent.data_dir.join("state");

    // The first rotated token arrives and is kept privately; catch it before the next.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (epoch, token_1) = loop {
        if let Some(kept) = kept_token(&state_dir) {
            break kept;
        }
        assert!(Instant::now() < deadline, "no pull token kept");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mode = std::fs::metadata(state_dir.join("pull-token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(token_1.starts_with(&format!("pi-a:{epoch}:")), "{token_1}");
    wait_applied(&controller, "pi-a", 1, Settled::Running).unwrap();

    // Two epochs later both the bootstrap's token and that one are revoked.
    wait_keys(
        &controller,
        "pi-a",
        "two more rotations",
        |(_, held, confirmed)| confirmed >= epoch + 2 && held == Some(confirmed),
    );
    for (what, token) in [("bootstrap", &first_token), ("first rotated", &token_1)] {
        let refused = controller.pull_manifest_as(token, "hello:1");
        assert!(refused.is_err(), "the {what} token still reads");
    }
    let (_, current) = kept_token(&state_dir).unwrap();
    controller.pull_manifest_as(&current, "hello:1").unwrap();

    // An update after the rotations is pulled with the rotated token.
    controller
        .deploy(&sleeper_app(dir.path(), "2").unwrap(), "pi-a")
        .unwrap();
    wait_applied(&controller, "pi-a", 2, Settled::Running).unwrap();

    // An agent whose kept token is lost pulls with the bootstrap's (refused), reports
    // epoch 0, and is sent a new one.
    agent.kill9().unwrap();
    std::fs::remove_file(state_dir.join("pull-token")).unwrap();
    let (_, _, before) = keys_line(&controller, "pi-a");
    agent.restart().unwrap();
    wait_keys(
        &controller,
        "pi-a",
        "a new token after the loss",
        |(_, held, confirmed)| confirmed > before && held == Some(confirmed),
    );
    controller
        .deploy(&sleeper_app(dir.path(), "3").unwrap(), "pi-a")
        .unwrap();
    wait_applied(&controller, "pi-a", 3, Settled::Running).unwrap();

    // The device reports the deployment key it trusts; after a rotation, the new one.
    assert_eq!(keys_line(&controller, "pi-a").0, Some(0));
    controller.cli(&["admin", "rotate-deployment-key"]).unwrap();
    wait_keys(
        &controller,
        "pi-a",
        "the new deployment key",
        |(key, _, _)| key == Some(1),
    );
    let table = controller.cli(&["admin", "keys"]).unwrap();
    assert!(table.contains("(epoch 1)"), "{table}");
    assert!(
        table.contains("retired key") && table.contains("(epoch 0, retired at"),
        "{table}"
    );
    assert!(
        table.contains("1 of 1 devices trust the current deployment key"),
        "{table}"
    );
}
