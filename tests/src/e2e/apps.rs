//! Small compose apps the end-to-end tests deploy, and the wait for a device to apply one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use super::controller::Controller;
use super::wait_until;

/// `web`: busybox sleeping in image `hello:TAG` (restart always), written as
/// `dir/app-TAG.yml`.
/// Pushes a busybox image printing "hello vTAG" as `hello:TAG` for each of `tags` (built in
/// `dir/imgTAG`), the versions the e2e apps deploy.
pub fn push_hello_versions(
    controller: &Controller,
    dir: &Path,
    tags: &[&str],
) -> anyhow::Result<()> {
    for tag in tags {
        let files = super::image::busybox_files(&format!("hello v{tag}"), vec![])?;
        let image = super::image::build_layout(&dir.join(format!("img{tag}")), tag, &files)?;
        controller.push(&image.source, &format!("hello:{tag}"))?;
    }
    Ok(())
}

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
