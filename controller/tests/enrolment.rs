//! Enrolment edges: a device enrolled again under a removed one's name continues its
//! generations (the device still holds the old ones and refuses anything older), the
//! controller's own broker id cannot be enrolled, and a desired state too large for devices
//! is refused at deploy instead of being stored undeliverable.
#![allow(clippy::unwrap_used)]

mod support;

use coracle_controller::api::deploy::{DeployRequest, DeployResponse};
use coracle_proto::Generation;
use support::{api, Controller};

const APP: &str = "services:\n  web:\n    image: hello@sha256:0b006957b2b4d9c1ba2b2ab7ff5ff5a7db1ee0f2e1d04da7d3b2d59c7c76915b\n    command: [\"/bin/sleep\", \"300\"]\n";

fn deploy(controller: &Controller, device: &str, compose: &str) -> anyhow::Result<DeployResponse> {
    api(controller).send(
        "deploy",
        "POST",
        &format!("/devices/{device}/deploy"),
        &DeployRequest {
            compose: compose.into(),
            seccomp_profiles: Default::default(),
            context: Default::default(),
        },
    )
}

#[test]
fn a_device_enrolled_again_continues_its_generations() {
    let controller = Controller::start();
    controller.enrol("pi-again");
    for expected in [1, 2] {
        let answer = deploy(&controller, "pi-again", APP).unwrap();
        assert_eq!(answer.generation, Generation(expected));
    }
    let removed = controller.cli(&["device", "rm", "pi-again"]);
    assert!(removed.status.success(), "{removed:?}");
    controller.enrol("pi-again");
    let answer = deploy(&controller, "pi-again", APP).unwrap();
    assert_eq!(
        answer.generation,
        Generation(3),
        "a re-enrolled device must not restart at generation 1"
    );
}

#[test]
fn the_controllers_own_broker_id_cannot_be_enrolled() {
    let controller = Controller::start();
    let out = controller.cli(&["device", "add", "coracle-controller"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("reserved"), "{stderr}");
    let devices: serde_json::Value = api(&controller).get("devices", "/devices").unwrap();
    assert_eq!(devices.as_array().map(Vec::len), Some(0), "{devices}");
}

#[test]
fn a_desired_state_too_large_for_devices_is_refused_at_deploy() {
    let controller = Controller::start();
    controller.enrol("pi-big");
    let big = "x".repeat(300 * 1024);
    let app = format!("{APP}    environment:\n      BIG: \"{big}\"\n");
    let err = format!("{:#}", deploy(&controller, "pi-big", &app).unwrap_err());
    assert!(err.contains("262144-byte limit"), "{err}");
    // Nothing was stored: the next good deploy is generation 1.
    let answer = deploy(&controller, "pi-big", APP).unwrap();
    assert_eq!(answer.generation, Generation(1));
}
