//! Short image names as `docker pull` reads them, with a local registry standing in for
//! Docker Hub: the controller's own registry is asked first, then `docker.io/library/NAME`.
#![allow(clippy::unwrap_used)]

mod support;
mod upstream;

use coracle_tests::registry::TestRegistry;
use upstream::{busybox, controller_with, deploy, desired_state, own_registry};

/// Short names as `docker pull` reads them: `hello:1` held by the controller's registry is
/// taken from there; `hello:2`, which it lacks, is `docker.io/library/hello:2`, here a local
/// registry standing in for Docker Hub through a `[[registries]]` entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_names_resolve_locally_first_then_on_docker_hub() {
    let hub = TestRegistry::start().unwrap();
    let layers = format!(
        "oci-archive:{}",
        support::fixture("busybox-layers-oci.tar").display()
    );
    let hub_digest = hub.push(&layers, "library/hello:2").unwrap();
    let controller = controller_with(&format!(
        "[[registries]]\nhost = \"docker.io\"\nurl = \"http://127.0.0.1:{}\"\ninsecure = true\n",
        hub.port
    ));
    let out = std::process::Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-tls-verify=false", "--dest-creds"])
        .arg(format!("coracle:{}", controller.admin_token()))
        .arg(busybox())
        .arg(format!("docker://{}/hello:1", controller.registry))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let boot = controller.enrol("pi-short");
    let device = boot.device.to_string();

    deploy(&controller, &device, "hello:1").unwrap();
    let state = desired_state(&controller, &boot).await;
    assert!(state.services[0]
        .image
        .to_string()
        .starts_with("hello@sha256:"));

    deploy(&controller, &device, "hello:2").unwrap();
    let (status, stored) = own_registry(&controller, "mirror/docker.io/library/hello/manifests/2");
    assert_eq!(
        (status, stored.as_deref()),
        (200, Some(hub_digest.as_str()))
    );
}
