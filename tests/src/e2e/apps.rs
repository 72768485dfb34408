//! Small compose apps the end-to-end tests deploy, and the wait for a device to apply one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use super::controller::Controller;
use super::image::{build_layout, busybox_files, LayerFile};
use super::wait_until;

/// The port `web` of [`two_service_app`] serves on, published as the same port of the host.
pub const WEB_PORT: u16 = 8080;

/// A two-service app, `dir/app-TAG.yml`: `web` serves the page of image `hello:TAG` on
/// [`WEB_PORT`] (published, with an HTTP health check); `worker` starts only once `web`
/// is healthy and keeps fetching the page over the app's network.
pub fn two_service_app(dir: &Path, tag: &str) -> anyhow::Result<PathBuf> {
    let compose = format!(
        r#"services:
  web:
    image: hello:{tag}
    command: ["/bin/busybox", "httpd", "-f", "-p", "0.0.0.0:{WEB_PORT}", "-h", "/www"]
    ports: ["{WEB_PORT}:{WEB_PORT}"]
    mem_limit: 32m
    pids_limit: 32
    restart: always
    healthcheck:
      test: ["HTTP", "{WEB_PORT}", "/"]
      interval: 1s
      timeout: 1s
      retries: 3
  worker:
    image: hello:{tag}
    command: ["/bin/busybox", "sh", "-c", "while true; do /bin/busybox wget -q -O /tmp/page http://web:{WEB_PORT}/; sleep 1; done"]
    mem_limit: 16m
    restart: always
    depends_on:
      web:
        condition: service_healthy
"#
    );
    let path = dir.join(format!("app-{tag}.yml"));
    std::fs::write(&path, compose).with_context(|| format!("write {}", path.display()))?;
    Ok(path)
}

/// Waits (90 s at most) until `device` runs `generation` of [`two_service_app`] with both
/// services up and `web` healthy; returns the device's record and reported state.
pub fn wait_converged(
    controller: &Controller,
    device: &str,
    generation: u64,
) -> anyhow::Result<serde_json::Value> {
    wait_until(
        &format!("{device} to run generation {generation} healthy"),
        Duration::from_secs(90),
        || {
            let detail = controller.device(device).map_err(|e| e.to_string())?;
            let reported = &detail["reported"];
            let services = reported["services"].as_array().cloned().unwrap_or_default();
            let running = |name: &str| {
                services.iter().any(|s| {
                    s["name"] == name
                        && s["state"] == "Running"
                        && (name != "web" || s["health"] == "Healthy")
                })
            };
            if reported["applied"] == generation && running("web") && running("worker") {
                Ok(detail)
            } else {
                Err(detail.to_string())
            }
        },
    )
}

/// Builds `hello:TAG` (busybox, a page saying `page`, and the `extra` files) in
/// `dir/image-TAG` and pushes it; returns the size of its layer.
pub fn push_hello(
    controller: &Controller,
    dir: &Path,
    tag: &str,
    page: &str,
    extra: Vec<LayerFile>,
) -> anyhow::Result<u64> {
    let files = busybox_files(page, extra)?;
    let image = build_layout(&dir.join(format!("image-{tag}")), tag, &files)?;
    controller.push(&image.source, &format!("hello:{tag}"))?;
    Ok(image.layer_size)
}

/// Pushes a busybox image printing "hello vTAG" as `hello:TAG` for each of `tags` (built in
/// `dir/imgTAG`), the versions the e2e apps deploy.
pub fn push_hello_versions(
    controller: &Controller,
    dir: &Path,
    tags: &[&str],
) -> anyhow::Result<()> {
    for tag in tags {
        let files = busybox_files(&format!("hello v{tag}"), vec![])?;
        let image = build_layout(&dir.join(format!("img{tag}")), tag, &files)?;
        controller.push(&image.source, &format!("hello:{tag}"))?;
    }
    Ok(())
}

/// `web`: busybox sleeping in image `hello:TAG` (restart always), written as
/// `dir/app-TAG.yml`.
pub fn sleeper_app(dir: &Path, tag: &str) -> anyhow::Result<PathBuf> {
    let compose = format!(
        "services:\n  web:\n    image: hello:{tag}\n    command: [\"/bin/busybox\", \"sleep\", \"3600\"]\n    restart: always\n"
    );
    let path = dir.join(format!("app-{tag}.yml"));
    std::fs::write(&path, compose).with_context(|| format!("write {}", path.display()))?;
    Ok(path)
}

/// What a service of the applied generation must show before [`wait_applied`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// `state` Running (apps without a health check).
    Running,
    /// `health` Healthy.
    Healthy,
}

/// Waits (90 s at most) until `device` reports `generation` applied with a service that is
/// `settled`.
pub fn wait_applied(
    controller: &Controller,
    device: &str,
    generation: u64,
    settled: Settled,
) -> anyhow::Result<()> {
    let (field, value) = match settled {
        Settled::Running => ("state", "Running"),
        Settled::Healthy => ("health", "Healthy"),
    };
    wait_until(
        &format!("{device} to apply generation {generation}"),
        Duration::from_secs(90),
        || {
            let d = controller.device(device).map_err(|e| e.to_string())?;
            let settled = d["reported"]["services"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s[field] == value));
            if d["reported"]["applied"] == generation && settled {
                Ok(())
            } else {
                Err(d.to_string())
            }
        },
    )
}

/// Waits (`timeout` at most) until a container's probe leaves `file`; on time out the
/// error holds what the device reported and its events.
pub fn wait_for_probe(
    controller: &Controller,
    device: &str,
    file: &Path,
    timeout: Duration,
) -> anyhow::Result<()> {
    wait_until(&format!("{}", file.display()), timeout, || {
        if file.exists() {
            return Ok(());
        }
        let reported = controller.device(device).map_err(|e| e.to_string())?;
        Err(format!(
            "{reported} (events: {:?})",
            controller.cli(&["device", "events", device])
        ))
    })
}
