//! `coracle agent release|ls|rollout` against the real `coracle serve`: a build is checked
//! before it is stored (an ELF program, its machine against `--arch`, its version stamp
//! against `--version`), stored as a release image the registry serves, listed, and an
//! agent rollout is refused for a version with no release or devices it has no build for.
#![allow(clippy::unwrap_used)]

mod support;

use support::fake_agent::fake_agent;
use support::Controller;

fn run(controller: &Controller, args: &[&str]) -> (bool, String, String) {
    let out = controller.cli(args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn releases_are_checked_stored_listed_and_rolled_out_only_where_they_fit() {
    let controller = Controller::start();
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path.display().to_string()
    };

    // Bad input is refused, naming what is wrong; nothing is stored.
    let script = write("script", b"#!/bin/sh\nexit 1\n");
    let (ok, _, err) = run(
        &controller,
        &["agent", "release", &script, "--version", "1.0"],
    );
    assert!(!ok && err.contains("not an ELF program"), "{err}");
    let arm64 = write("arm64", &fake_agent(183, "0.3.0"));
    let (ok, _, err) = run(
        &controller,
        &["agent", "release", &arm64, "--version", "0.4.0"],
    );
    assert!(
        !ok && err.contains("the file says it is version 0.3.0, not 0.4.0"),
        "{err}"
    );
    let (ok, _, err) = run(
        &controller,
        &["agent", "release", &arm64, "--arch", "linux/amd64"],
    );
    assert!(
        !ok && err.contains("built for linux/arm64, not for linux/amd64"),
        "{err}"
    );
    let armhf = write("armhf", &fake_agent(40, "0.3.0"));
    let (ok, _, err) = run(&controller, &["agent", "release", &armhf]);
    assert!(
        !ok && err.contains("--arch linux/arm/v6 or linux/arm/v7"),
        "{err}"
    );
    let (_, listed, _) = run(&controller, &["agent", "ls", "--json"]);
    assert_eq!(listed.trim(), "[]");

    // Good builds: the version from the stamp, the platform from the header.
    let (ok, out, err) = run(&controller, &["agent", "release", &arm64]);
    assert!(ok, "{err}");
    assert!(
        out.contains("released agent 0.3.0 for linux/arm64"),
        "{out}"
    );
    let (ok, _, err) = run(
        &controller,
        &["agent", "release", &armhf, "--arch", "linux/arm/v7"],
    );
    assert!(ok, "{err}");
    let (_, listed, _) = run(&controller, &["agent", "ls", "--json"]);
    let releases: Vec<serde_json::Value> = serde_json::from_str(&listed).unwrap();
    let platforms: Vec<&str> = releases
        .iter()
        .map(|r| r["platform"].as_str().unwrap())
        .collect();
    assert_eq!(platforms, ["linux/arm/v7", "linux/arm64"], "{listed}");
    let binary = coracle_proto::Digest::of(&fake_agent(183, "0.3.0")).to_string();
    assert!(
        releases.iter().any(|r| r["binary"] == binary.as_str()),
        "{listed}"
    );
    let (_, table, _) = run(&controller, &["agent", "ls"]);
    assert!(
        table.contains("0.3.0") && table.contains("linux/arm64"),
        "{table}"
    );

    // Rollouts: no such release; a device that reported no platform it has a build for.
    let bootstrap = dir.path().join("pi-1.toml");
    let out = bootstrap.display().to_string();
    let (ok, _, err) = run(
        &controller,
        &["device", "add", "pi-1", "--tag", "site=a", "-o", &out],
    );
    assert!(ok, "{err}");
    let (ok, _, err) = run(
        &controller,
        &["agent", "rollout", "9.9.9", "--to", "site=a"],
    );
    assert!(!ok && err.contains("no agent release 9.9.9"), "{err}");
    let (ok, _, err) = run(
        &controller,
        &["agent", "rollout", "0.3.0", "--to", "site=a"],
    );
    assert!(
        !ok && err.contains("devices that cannot run agent 0.3.0")
            && err.contains("which the release has no build for"),
        "{err}"
    );
}
