//! `coracle deploy --wait`: follows a deploy until the device commits the new generation
//! (exit 0) or rolls it back or fails to apply it (an error naming the reason, so exit 1),
//! or the timeout passes. While the device pulls, its per-layer progress is drawn as a
//! progress line on a terminal (`progress::Transfer`), one plain line per layer otherwise;
//! each change of the device's update status is one line. A rollout (`--to`) is followed
//! the same way, one line per device status change, until it completes (exit 0) or pauses,
//! is aborted or rolled back (exit 1).
//!
//! The verdicts are pure functions of what the API answers (`device_outcome`,
//! `rollout_outcome`); the loops poll the API twice a second.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::bail;
use coracle_proto::UpdateStatus;

use super::progress::Transfer;
use super::ApiClient;
use crate::api::devices::DeviceDetail;
use crate::store::{DeviceStatus, LatestProgress, RolloutPhase, RolloutRecord};

/// How often the API is asked.
const POLL: Duration = Duration::from_millis(500);

/// Where a waited-for deploy stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Not settled; the text says what the device is doing.
    Waiting(String),
    Done,
    Failed(String),
}

/// The device's answer to generation `generation`, from its detail.
pub fn device_outcome(generation: u64, detail: &DeviceDetail) -> Outcome {
    let Some(reported) = &detail.reported else {
        return Outcome::Waiting("the device has not reported yet".into());
    };
    match &reported.update {
        UpdateStatus::RolledBack {
            generation: g,
            reason,
        } if g.0 == generation => {
            return Outcome::Failed(format!("rolled back generation {generation}: {reason}"))
        }
        UpdateStatus::Failed {
            generation: g,
            reason,
        } if g.0 == generation => {
            return Outcome::Failed(format!("failed to apply generation {generation}: {reason}"))
        }
        _ => {}
    }
    if reported.applied.0 >= generation {
        return Outcome::Done;
    }
    let doing = match &reported.update {
        UpdateStatus::Applying { generation: g } if g.0 == generation => {
            format!("applying generation {generation}")
        }
        UpdateStatus::Verifying { generation: g } if g.0 == generation => {
            format!("verifying generation {generation} (health gate)")
        }
        _ if !detail.device.online => "offline".to_string(),
        _ => format!("running generation {}", reported.applied.0),
    };
    Outcome::Waiting(doing)
}

/// A rollout's answer: completed, or stopped short (paused, aborted, rolled back).
pub fn rollout_outcome(rollout: &RolloutRecord) -> Outcome {
    let why = || rollout.reason.clone().unwrap_or_default();
    match rollout.phase {
        RolloutPhase::Completed => Outcome::Done,
        RolloutPhase::Running => Outcome::Waiting(format!("wave {}", rollout.wave + 1)),
        RolloutPhase::Paused => {
            Outcome::Failed(format!("rollout {} paused: {}", rollout.id, why()))
        }
        RolloutPhase::Aborted => {
            Outcome::Failed(format!("rollout {} aborted: {}", rollout.id, why()))
        }
        RolloutPhase::RolledBack => {
            Outcome::Failed(format!("rollout {} rolled back: {}", rollout.id, why()))
        }
    }
}

/// Draws the device's per-layer progress: one `Transfer` per (service, layer) pulled.
#[derive(Debug, Default)]
struct LayerBars {
    current: Option<((String, u16), Transfer)>,
}

impl LayerBars {
    fn show(&mut self, latest: Option<&LatestProgress>) {
        let Some(latest) = latest else {
            self.end("");
            return;
        };
        let p = &latest.progress;
        let key = (p.service.to_string(), p.layer);
        if self.current.as_ref().is_some_and(|(k, _)| k != &key) {
            self.end("");
        }
        let (_, bar) = self.current.get_or_insert_with(|| {
            let label = format!(
                "{} layer {}/{}{}",
                p.service,
                p.layer + 1,
                p.layers,
                if p.delta { " (delta)" } else { "" }
            );
            (key, Transfer::start(label, p.total_bytes))
        });
        bar.set_done(p.done_bytes);
        if p.stored {
            self.end("stored");
        }
    }

    fn end(&mut self, verb: &str) {
        if let Some((_, bar)) = self.current.take() {
            bar.finish(verb);
        }
    }
}

/// Waits for `device` to commit `generation`.
pub fn wait_for_device(
    api: &ApiClient,
    device: &str,
    generation: u64,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut bars = LayerBars::default();
    let mut said = String::new();
    loop {
        let detail: DeviceDetail = api.get("show device", &format!("/devices/{device}"))?;
        bars.show(detail.pull_progress.as_ref());
        match device_outcome(generation, &detail) {
            Outcome::Done => {
                bars.end("");
                println!("{device} committed generation {generation}");
                return Ok(());
            }
            Outcome::Failed(reason) => {
                bars.end("");
                bail!("{device} {reason}");
            }
            Outcome::Waiting(doing) => {
                if doing != said && detail.pull_progress.is_none() {
                    eprintln!("{device}: {doing}");
                    said = doing.clone();
                }
                if Instant::now() >= deadline {
                    bars.end("");
                    bail!(
                        "timed out after {} s waiting for {device} to commit generation \
                         {generation} (now: {doing})",
                        timeout.as_secs()
                    );
                }
            }
        }
        std::thread::sleep(POLL);
    }
}

/// Waits for rollout `id` to complete.
pub fn wait_for_rollout(api: &ApiClient, id: i64, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut seen: BTreeMap<String, DeviceStatus> = BTreeMap::new();
    loop {
        let rollout: RolloutRecord = api.get("show rollout", &format!("/rollouts/{id}"))?;
        for device in &rollout.devices {
            let name = device.device.to_string();
            if seen.get(&name) != Some(&device.status) {
                let why = device
                    .reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default();
                eprintln!("{name}: {}{why}", device.status.as_str());
                seen.insert(name, device.status);
            }
        }
        match rollout_outcome(&rollout) {
            Outcome::Done => {
                println!("rollout {id} completed");
                return Ok(());
            }
            Outcome::Failed(reason) => bail!("{reason}"),
            Outcome::Waiting(doing) => {
                if Instant::now() >= deadline {
                    bail!(
                        "timed out after {} s waiting for rollout {id} to complete (now: {doing})",
                        timeout.as_secs()
                    );
                }
            }
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coracle_proto::{samples, Generation};

    fn detail(applied: u64, update: UpdateStatus, online: bool) -> DeviceDetail {
        let reported = coracle_proto::ReportedState {
            applied: Generation(applied),
            update,
            ..samples::reported_state(1)
        };
        DeviceDetail {
            device: crate::store::DeviceRecord {
                id: samples::device(),
                created_unix: 0,
                tags: Default::default(),
                online,
                last_seen_unix: None,
                desired_generation: Some(5),
                applied_generation: Some(applied),
            },
            reported: Some(reported),
            pull_progress: None,
        }
    }

    #[test]
    fn a_deploy_settles_on_commit_rollback_or_failure() {
        let g = |n| Generation(n);
        // (applied, update, online, outcome)
        let table = [
            (
                4,
                UpdateStatus::Idle,
                true,
                Outcome::Waiting("running generation 4".into()),
            ),
            (
                4,
                UpdateStatus::Idle,
                false,
                Outcome::Waiting("offline".into()),
            ),
            (
                4,
                UpdateStatus::Applying { generation: g(5) },
                true,
                Outcome::Waiting("applying generation 5".into()),
            ),
            (
                4,
                UpdateStatus::Verifying { generation: g(5) },
                true,
                Outcome::Waiting("verifying generation 5 (health gate)".into()),
            ),
            (5, UpdateStatus::Idle, true, Outcome::Done),
            (6, UpdateStatus::Idle, true, Outcome::Done),
            (
                4,
                UpdateStatus::RolledBack {
                    generation: g(5),
                    reason: "web exited 1".into(),
                },
                true,
                Outcome::Failed("rolled back generation 5: web exited 1".into()),
            ),
            (
                4,
                UpdateStatus::Failed {
                    generation: g(5),
                    reason: "not enough disk".into(),
                },
                true,
                Outcome::Failed("failed to apply generation 5: not enough disk".into()),
            ),
            // An older rollback is not this deploy's answer.
            (
                4,
                UpdateStatus::RolledBack {
                    generation: g(3),
                    reason: "old".into(),
                },
                true,
                Outcome::Waiting("running generation 4".into()),
            ),
        ];
        for (i, (applied, update, online, expected)) in table.into_iter().enumerate() {
            assert_eq!(
                device_outcome(5, &detail(applied, update, online)),
                expected,
                "row {i}"
            );
        }
        let mut silent = detail(4, UpdateStatus::Idle, true);
        silent.reported = None;
        assert!(matches!(device_outcome(5, &silent), Outcome::Waiting(_)));
    }
}
