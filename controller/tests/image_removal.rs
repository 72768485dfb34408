//! `coracle image rm` and `coracle image gc` on a running controller's data dir: removed
//! tags and manifests disappear from the registry, and the collection removes the blobs
//! nothing names but keeps an image a device's desired state still pins.
#![allow(clippy::unwrap_used)]

mod support;

use coracle_controller::api::deploy::{DeployRequest, DeployResponse};
use serde_json::json;
use support::registry_client::RegistryClient;
use support::{api, Controller};

fn config(name: &str) -> Vec<u8> {
    json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/sleep", "300"], "Labels": {"name": name}},
        "rootfs": {"type": "layers", "diff_ids": []},
    })
    .to_string()
    .into_bytes()
}

fn cli_ok(controller: &Controller, args: &[&str]) -> String {
    let out = controller.cli(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn gc_removes_unnamed_blobs_but_keeps_an_image_a_device_still_runs() {
    let controller = Controller::start();
    let registry = RegistryClient::new(&controller);
    let (kept, kept_digest) = registry.push_image("keep", "1", &config("keep"), json!({}));
    let (dropped, dropped_digest) = registry.push_image("drop", "1", &config("drop"), json!({}));

    let boot = controller.enrol("pi-gc");
    let compose = "services:\n  web:\n    image: keep:1\n".to_string();
    let _: DeployResponse = api(&controller)
        .send(
            "deploy",
            "POST",
            &format!("/devices/{}/deploy", boot.device),
            &DeployRequest {
                compose,
                seccomp_profiles: Default::default(),
                context: Default::default(),
            },
        )
        .unwrap();

    cli_ok(&controller, &["image", "rm", "keep:1"]);
    cli_ok(
        &controller,
        &["image", "rm", &format!("drop@{dropped_digest}")],
    );
    assert_eq!(registry.get("/v2/keep/manifests/1").status, 404);
    assert_eq!(
        registry
            .get(&format!("/v2/drop/manifests/{dropped_digest}"))
            .status,
        404
    );
    let missing = controller.cli(&["image", "rm", "keep:1"]);
    assert!(!missing.status.success(), "removing a removed tag fails");

    let dry = cli_ok(
        &controller,
        &["image", "gc", "--min-age-s", "0", "--dry-run"],
    );
    assert!(dry.contains("would remove 2 blobs"), "{dry}");
    let blob = |digest: &serde_json::Value| format!("/v2/keep/blobs/{}", digest.as_str().unwrap());
    assert_eq!(
        registry.get(&blob(&dropped["config"]["digest"])).status,
        200
    );

    let done = cli_ok(&controller, &["image", "gc", "--min-age-s", "0"]);
    assert!(done.contains("removed 2 blobs"), "{done}");
    assert_eq!(
        registry.get(&blob(&dropped["config"]["digest"])).status,
        404
    );
    assert_eq!(registry.get(&blob(&json!(dropped_digest))).status, 404);
    // Pinned by pi-gc's desired state: the manifest and its config stay.
    assert_eq!(registry.get(&blob(&kept["config"]["digest"])).status, 200);
    assert_eq!(registry.get(&blob(&json!(kept_digest))).status, 200);

    // A young blob (a push whose manifest has not arrived) is kept by the default age.
    let young = registry.push_blob("keep", b"pushed a moment ago");
    let done = cli_ok(&controller, &["image", "gc"]);
    assert!(done.contains("removed 0 blobs"), "{done}");
    assert_eq!(registry.get(&format!("/v2/keep/blobs/{young}")).status, 200);
}
