//! End-to-end with an image as people run them: Debian 12 minbase with nginx, built from
//! Debian's packages (`mmdebstrap`, cached), so the layer carries setuid and setgid binaries,
//! `/dev` device nodes, hard links and ~190 MB. It is pushed to an upstream registry with
//! basic auth (Debian's `docker-registry`), deployed by its upstream name, which the
//! controller resolves and mirrors with the credentials of its `[[registries]]` config, to a
//! real agent in its own network namespace; it serves its page with `su` still setuid inside
//! the container, and its next version (a changed page) reaches the device as a delta.
//! Root only; needs Debian's mirror the first time the rootfs is built.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use coracle_tests::e2e::agent::Agent;
use coracle_tests::e2e::controller::Controller;
use coracle_tests::e2e::debian_image::{debian_rootfs, with_replaced_files};
use coracle_tests::e2e::image::{layout_from_tar, BuiltImage};
use coracle_tests::e2e::wait_until;
use coracle_tests::netns::TestNetwork;
use coracle_tests::registry::{write_htpasswd, RegistryOptions, TestRegistry};

const WEB_PORT: u16 = 8080;
const PAGE: &str = "var/www/html/index.nginx-debian.html";
const SITE: &str = "etc/nginx/sites-available/default";

/// nginx on `WEB_PORT` only (the packaged site also listens on `[::]:80`), serving the page.
fn site() -> String {
    format!(
        "server {{\n  listen {WEB_PORT} default_server;\n  root /var/www/html;\n  \
         index index.nginx-debian.html;\n}}\n"
    )
}

fn compose(dir: &Path, image: &str, tag: &str) -> PathBuf {
    // The command records what `su` looks like inside the running container, then runs nginx.
    let text = format!(
        r#"services:
  web:
    image: {image}:{tag}
    command: ["/bin/sh", "-c", "stat -c '%a %U' /usr/bin/su > /var/www/html/su.txt; exec nginx -g 'daemon off;'"]
    ports: ["{WEB_PORT}:{WEB_PORT}"]
    mem_limit: 64m
    restart: always
    healthcheck:
      test: ["HTTP", "{WEB_PORT}", "/"]
      interval: 1s
      timeout: 1s
      retries: 3
"#
    );
    let path = dir.join(format!("app-{tag}.yml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn http_get(addr: Ipv4Addr, path: &str) -> String {
    coracle_tests::e2e::http_get(addr, WEB_PORT, path).unwrap()
}

fn wait_running(controller: &Controller, device: &str, generation: u64) {
    wait_until(
        &format!("{device} to run generation {generation} healthy"),
        Duration::from_secs(180),
        || {
            let detail = controller.device(device).map_err(|e| e.to_string())?;
            let reported = &detail["reported"];
            let healthy = reported["services"].as_array().is_some_and(|services| {
                services.iter().any(|s| {
                    s["name"] == "web" && s["state"] == "Running" && s["health"] == "Healthy"
                })
            });
            if reported["applied"] == generation && healthy {
                Ok(())
            } else {
                Err(detail.to_string())
            }
        },
    )
    .unwrap();
}

fn build(dir: &Path, tag: &str, tar: &[u8]) -> BuiltImage {
    layout_from_tar(&dir.join(format!("image-{tag}")), tag, tar, &[]).unwrap()
}

#[test]
#[ignore = "needs root"]
fn a_debian_nginx_image_runs_on_a_device_and_updates_as_a_delta() {
    let rootfs = std::fs::read(debian_rootfs(&["nginx-light"]).unwrap()).unwrap();
    let site = site();
    let v1_tar = with_replaced_files(
        &rootfs,
        &[(SITE, site.as_bytes()), (PAGE, b"debian nginx v1\n")],
    )
    .unwrap();
    let v2_tar = with_replaced_files(&v1_tar, &[(PAGE, b"debian nginx v2\n")]).unwrap();

    let dir = tempfile::tempdir().unwrap();
    // The upstream: a registry that wants a password, as a private registry or Hub does.
    let htpasswd = dir.path().join("htpasswd");
    write_htpasswd(&htpasswd, "ci", "s3cret").unwrap();
    let upstream = TestRegistry::start_with(&RegistryOptions {
        htpasswd: Some(htpasswd),
        ..RegistryOptions::default()
    })
    .unwrap();
    let host_port = format!("127.0.0.1:{}", upstream.port);
    let image = format!("{host_port}/team/debian-nginx");
    let creds = dir.path().join("upstream-creds.toml");
    std::fs::write(&creds, "username = \"ci\"\npassword = \"s3cret\"\n").unwrap();
    let registries = format!(
        "\n[[registries]]\nhost = \"{host_port}\"\ninsecure = true\ncredentials_file = {:?}\n",
        creds.display().to_string()
    );

    let mut network = TestNetwork::new().unwrap();
    let controller =
        Controller::start_with_config(dir.path(), TestNetwork::GATEWAY, &registries).unwrap();
    let v1 = build(dir.path(), "1", &v1_tar);
    let started = Instant::now();
    upstream
        .push_with(
            &v1.source,
            "team/debian-nginx:1",
            &["--dest-creds", "ci:s3cret"],
        )
        .unwrap();
    eprintln!(
        "pushed v1 upstream ({} B tar, {} B gzip layer) in {:?}",
        v1_tar.len(),
        v1.layer_size,
        started.elapsed()
    );

    let host = network.add_host().unwrap();
    let bootstrap = controller.enrol("pi-deb", dir.path()).unwrap();
    let agent = Agent::start("pi-deb", &host, dir.path(), &bootstrap).unwrap();
    let started = Instant::now();
    // The deploy returns once the controller has mirrored the image and pinned its digest.
    controller
        .deploy(&compose(dir.path(), &image, "1"), "pi-deb")
        .unwrap();
    let mirrored = started.elapsed();
    wait_running(&controller, "pi-deb", 1);
    let pull = agent.last_pull().unwrap();
    let (bytes, full) = (pull.bytes, pull.full);
    eprintln!(
        "v1: mirrored from upstream in {mirrored:?}, running {:?} after deploy; the device \
         pulled {bytes} B in {full} full layer(s)",
        started.elapsed()
    );
    assert!(http_get(host.addr, "/").contains("debian nginx v1"));
    // setuid survived the layer, the store and the overlay: `su` is 4755 inside the container.
    let su = http_get(host.addr, "/su.txt");
    assert!(su.contains("4755 root"), "{su}");

    let v2 = build(dir.path(), "2", &v2_tar);
    upstream
        .push_with(
            &v2.source,
            "team/debian-nginx:2",
            &["--dest-creds", "ci:s3cret"],
        )
        .unwrap();
    let started = Instant::now();
    controller
        .deploy(&compose(dir.path(), &image, "2"), "pi-deb")
        .unwrap();
    let mirrored = started.elapsed();
    wait_running(&controller, "pi-deb", 2);
    assert!(http_get(host.addr, "/").contains("debian nginx v2"));
    let pull = agent.last_pull().unwrap();
    let (bytes, deltas, full) = (pull.bytes, pull.deltas, pull.full);
    eprintln!(
        "v2: mirrored in {mirrored:?}, running {:?} after deploy; the device pulled {bytes} B \
         ({deltas} delta, {full} full) for a {} B layer",
        started.elapsed(),
        v2.layer_size
    );
    assert_eq!((deltas, full), (1, 0), "v2 should come as a delta");
    assert!(bytes * 100 < v2.layer_size, "{bytes} B on the wire");
}
