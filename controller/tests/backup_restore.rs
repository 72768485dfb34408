//! Issue 19 item 4: `coracle backup` while the controller serves, then `coracle restore` into
//! a new data dir and a controller started on it, which has the devices (with their tags and
//! credentials), the rollout and the pushed image of the time of the backup — and not what
//! came after it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Command;

use support::{push_fixture, Controller};

fn json(out: &std::process::Output) -> serde_json::Value {
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

fn manifest_digest(controller: &Controller, repo_tag: &str) -> String {
    let out = Command::new("skopeo")
        .args([
            "inspect",
            "--tls-verify=false",
            "--creds",
            &format!("coracle:{}", controller.admin_token()),
            "--format",
            "{{.Digest}}",
            &format!("docker://{}/{repo_tag}", controller.registry),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn a_backup_taken_while_serving_restores_devices_rollouts_and_images() {
    let controller = Controller::start();
    for name in ["pi-1", "pi-2"] {
        let out = controller.dir.path().join(format!("{name}.toml"));
        let added = controller.cli(&[
            "device",
            "add",
            name,
            "--tag",
            "site=a",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(added.status.success(), "{added:?}");
    }
    let pushed = push_fixture(&controller, "hello:1");
    let app = controller.dir.path().join("web.yml");
    let pinned = format!("example/web@sha256:{}", "a".repeat(64));
    std::fs::write(&app, format!("services:\n  web:\n    image: {pinned}\n")).unwrap();
    let started = controller.cli(&["deploy", app.to_str().unwrap(), "--to", "site=a"]);
    assert!(started.status.success(), "{started:?}");
    let admin_token = controller.admin_token();

    let archive = controller.dir.path().join("backup.tar");
    let backup = controller.cli(&["backup", archive.to_str().unwrap()]);
    assert!(backup.status.success(), "{backup:?}");
    // After the backup: not in it.
    controller.enrol("pi-3");

    let restored_dir = tempfile::tempdir().unwrap();
    let target = support::data_dir(restored_dir.path());
    let restore = Command::new(env!("CARGO_BIN_EXE_coracle"))
        .arg("restore")
        .arg(&archive)
        .arg("--data-dir")
        .arg(&target)
        .output()
        .unwrap();
    assert!(restore.status.success(), "{restore:?}");
    // Never over a data dir in use.
    let again = controller.cli(&["restore", archive.to_str().unwrap()]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("is not empty"),
        "{again:?}"
    );
    drop(controller.stop());

    let back = Controller::start_in(restored_dir);
    assert_eq!(back.admin_token(), admin_token);
    let devices = json(&back.cli(&["device", "ls", "--json"]));
    let ids: Vec<(&str, &str)> = devices
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["id"].as_str().unwrap(),
                d["tags"]["site"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(ids, [("pi-1", "a"), ("pi-2", "a")]);
    let rollouts = json(&back.cli(&["rollout", "ls", "--json"]));
    let rollouts = rollouts.as_array().unwrap();
    assert_eq!(rollouts.len(), 1, "{rollouts:?}");
    assert_eq!(rollouts[0]["selector"], "site=a");
    assert_eq!(manifest_digest(&back, "hello:1"), pushed);
    // The enrolled devices' credentials came back too: a new enrolment of the same name is
    // a conflict, not a fresh device.
    assert_eq!(
        back.cli(&["device", "add", "pi-1", "--out", "/dev/null"])
            .status
            .code(),
        Some(4)
    );
}
