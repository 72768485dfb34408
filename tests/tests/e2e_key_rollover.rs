//! End-to-end, issue 17 item 5: deployment key rollover with the real controller, its
//! embedded broker and real agents. `coracle admin rotate-deployment-key` twice: a device
//! online throughout follows each link and applies what the new keys sign; a device that
//! was offline through both rotations (and had a deploy stored for it meanwhile) walks both
//! links when it is back; an agent restart trusts the kept chain; a new enrolment pins the
//! newest key. Root only (network namespaces); takes turns on the test network like the
//! other e2e tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use coracle_proto::{Bootstrap, KeyId};
use coracle_tests::e2e::agent::Agent;
use coracle_tests::e2e::controller::Controller;
use coracle_tests::e2e::image::{build_layout, busybox_files};
use coracle_tests::e2e::wait_until;
use coracle_tests::netns::TestNetwork;

fn app(dir: &Path, tag: &str) -> std::path::PathBuf {
    let compose = format!(
        "services:\n  web:\n    image: hello:{tag}\n    command: [\"/bin/busybox\", \"sleep\", \"3600\"]\n    restart: always\n"
    );
    let path = dir.join(format!("app-{tag}.yml"));
    std::fs::write(&path, compose).unwrap();
    path
}

fn applied(controller: &Controller, device: &str, generation: u64) {
    wait_until(
        &format!("{device} to apply generation {generation}"),
        Duration::from_secs(90),
        || {
            let d = controller.device(device).map_err(|e| e.to_string())?;
            let running = d["reported"]["services"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s["state"] == "Running"));
            if d["reported"]["applied"] == generation && running {
                Ok(())
            } else {
                Err(d.to_string())
            }
        },
    )
    .unwrap();
}

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

#[test]
#[ignore = "needs root"]
fn devices_follow_a_key_rollover_online_offline_and_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut network = TestNetwork::new().unwrap();
    let controller = Controller::start(dir.path(), TestNetwork::GATEWAY).unwrap();
    for tag in ["1", "2", "3", "4"] {
        let files = busybox_files(&format!("hello v{tag}"), vec![]).unwrap();
        let image = build_layout(&dir.path().join(format!("img{tag}")), tag, &files).unwrap();
        controller
            .push(&image.source, &format!("hello:{tag}"))
            .unwrap();
    }
    let online_host = network.add_host().unwrap();
    let offline_host = network.add_host().unwrap();
    let online_boot = controller.enrol("pi-on", dir.path()).unwrap();
    let offline_boot = controller.enrol("pi-off", dir.path()).unwrap();
    let first_key = pinned_key_id(&online_boot);
    let mut online = Agent::start("pi-on", &online_host, dir.path(), &online_boot).unwrap();
    let mut offline = Agent::start("pi-off", &offline_host, dir.path(), &offline_boot).unwrap();
    for device in ["pi-on", "pi-off"] {
        controller.deploy(&app(dir.path(), "1"), device).unwrap();
        applied(&controller, device, 1);
    }

    // pi-off goes away before the first rotation and stays away through both.
    offline.kill9().unwrap();
    let second_key = rotate(&controller, 1);
    assert_ne!(second_key, first_key);
    online
        .wait_for_line("deployment key rolled over", Duration::from_secs(30))
        .unwrap();
    controller.deploy(&app(dir.path(), "2"), "pi-on").unwrap();
    applied(&controller, "pi-on", 2);

    let third_key = rotate(&controller, 2);
    controller.deploy(&app(dir.path(), "2"), "pi-off").unwrap();
    controller.deploy(&app(dir.path(), "3"), "pi-on").unwrap();
    applied(&controller, "pi-on", 3);

    // Back after both rotations: it walks two links and applies what the newest key signed.
    offline.restart().unwrap();
    applied(&controller, "pi-off", 2);
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
    controller.deploy(&app(dir.path(), "4"), "pi-on").unwrap();
    applied(&controller, "pi-on", 4);

    // New enrolments pin the newest key; the rotations are in the audit log.
    let late = controller.enrol("pi-late", dir.path()).unwrap();
    assert_eq!(pinned_key_id(&late), third_key);
    let audit = controller.cli(&["audit"]).unwrap();
    assert!(
        audit.matches("deployment_key.rotate").count() == 2,
        "{audit}"
    );
}
