//! How a device's report moves its rollout progress: pure, so each situation is a table row.
//!
//! A device runs generation N once it reports N (or later) applied, or N in its health
//! gate (`Verifying`). It must get there within the apply timeout after the send (pulls of
//! large images on slow links take what they take). From then on its health window runs: it
//! is healthy on N when it is online, reports N (or later) applied, no failed update of N,
//! and every service running (or exited 0) and not unhealthy; it must get there within the
//! window after it started running N and stay there for the window. A rollback, failed apply
//! or unhealthy service of N fails it at once.
//!
//! An agent rollout's target is an agent version instead of a generation: the device runs
//! it once it reports that `agent_version`, is healthy on it when its services are too, and
//! fails at once when it reports having given the version up (`AgentUpdateAbandoned`).

use coracle_proto::{Condition, ContainerState, Health, ReportedState, UpdateStatus};

use crate::store::{DeviceProgress, DeviceStatus};

/// What the controller knows about a device now.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    pub online: bool,
    pub reported: Option<&'a ReportedState>,
    pub now: i64,
}

/// A rollout's two clocks per device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    /// How long a device must stay healthy, counted from when it runs the new generation.
    pub health_s: u64,
    /// How long a device may take from the send to running the new generation.
    pub apply_s: u64,
}

/// What a rollout brings each device to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// An app rollout: the device's new desired generation.
    Generation(u64),
    /// An agent rollout: the agent version.
    AgentVersion(&'a str),
}

impl Target<'_> {
    fn failure(self, reported: &ReportedState) -> Option<String> {
        match self {
            Target::Generation(generation) => failure(generation, reported),
            Target::AgentVersion(version) => reported.conditions.iter().find_map(|c| match c {
                Condition::AgentUpdateAbandoned { version: v, reason } if v == version => {
                    Some(format!("gave agent {version} up: {reason}"))
                }
                _ => None,
            }),
        }
    }

    fn running(self, reported: &ReportedState) -> bool {
        match self {
            Target::Generation(generation) => running(generation, reported),
            Target::AgentVersion(version) => reported.agent_version == version,
        }
    }

    fn healthy(self, reported: &ReportedState) -> bool {
        match self {
            Target::Generation(generation) => healthy(generation, reported),
            Target::AgentVersion(version) => {
                reported.agent_version == version && services_healthy(reported)
            }
        }
    }
}

impl std::fmt::Display for Target<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Generation(generation) => write!(f, "generation {generation}"),
            Target::AgentVersion(version) => write!(f, "agent {version}"),
        }
    }
}

/// The device's failure on `generation`, if its report shows one.
fn failure(generation: u64, reported: &ReportedState) -> Option<String> {
    match &reported.update {
        UpdateStatus::RolledBack {
            generation: g,
            reason,
        } if g.0 == generation => {
            return Some(format!("rolled back generation {generation}: {reason}"))
        }
        UpdateStatus::Failed {
            generation: g,
            reason,
        } if g.0 == generation => {
            return Some(format!("failed to apply generation {generation}: {reason}"))
        }
        _ => {}
    }
    if reported.applied.0 < generation {
        return None;
    }
    reported
        .services
        .iter()
        .find(|s| s.health == Health::Unhealthy)
        .map(|s| format!("service {} unhealthy on generation {generation}", s.name))
}

/// The device has pulled and started `generation` (committed, or in its health gate).
fn running(generation: u64, reported: &ReportedState) -> bool {
    reported.applied.0 >= generation
        || matches!(reported.update, UpdateStatus::Verifying { generation: g } if g.0 == generation)
}

fn healthy(generation: u64, reported: &ReportedState) -> bool {
    reported.applied.0 >= generation && services_healthy(reported)
}

fn services_healthy(reported: &ReportedState) -> bool {
    reported.services.iter().all(|s| match s.state {
        ContainerState::Running => matches!(s.health, Health::Healthy | Health::None),
        ContainerState::Exited => s.last_exit_code == Some(0),
        _ => false,
    })
}

/// The device's progress after `seen`, or `None` when nothing changed. Only devices that
/// were sent the new generation and are not yet proven move.
pub fn observe(
    progress: &DeviceProgress,
    windows: Windows,
    seen: Observation<'_>,
) -> Option<DeviceProgress> {
    let (DeviceStatus::Deploying, Some(generation)) = (progress.status, progress.generation) else {
        return None;
    };
    observe_target(progress, Target::Generation(generation), windows, seen)
}

/// [`observe`] towards any target (an agent rollout's device has its `generation` set to
/// the update sequence sent, so only sent devices move).
pub fn observe_target(
    progress: &DeviceProgress,
    target: Target<'_>,
    windows: Windows,
    seen: Observation<'_>,
) -> Option<DeviceProgress> {
    if progress.status != DeviceStatus::Deploying || progress.generation.is_none() {
        return None;
    }
    let mut next = progress.clone();
    let window = i64::try_from(windows.health_s).unwrap_or(i64::MAX);
    let apply = i64::try_from(windows.apply_s).unwrap_or(i64::MAX);
    if seen.reported.is_some_and(|r| target.running(r)) {
        next.running_since_unix.get_or_insert(seen.now);
    }
    if let Some(reason) = seen.reported.and_then(|r| target.failure(r)) {
        next.status = DeviceStatus::Failed;
        next.healthy_since_unix = None;
        next.reason = Some(reason);
    } else if seen.online && seen.reported.is_some_and(|r| target.healthy(r)) {
        let since = *next.healthy_since_unix.get_or_insert(seen.now);
        if seen.now.saturating_sub(since) >= window {
            next.status = DeviceStatus::Healthy;
        }
    } else {
        next.healthy_since_unix = None;
        let offline = if seen.online { "" } else { " (offline)" };
        // Strictly past: times are whole seconds, so `>=` could cut a clock by one.
        match next.running_since_unix {
            Some(running) if seen.now.saturating_sub(running) > window => {
                next.status = DeviceStatus::Failed;
                next.reason = Some(format!(
                    "not healthy on {target} within the {} s health window \
                     after it started running it{offline}",
                    windows.health_s
                ));
            }
            Some(_) => {}
            None => {
                let deployed = progress.deployed_unix.unwrap_or(seen.now);
                if seen.now.saturating_sub(deployed) > apply {
                    next.status = DeviceStatus::Failed;
                    next.reason = Some(format!(
                        "did not start {target} within the {} s apply \
                         timeout{offline}",
                        windows.apply_s
                    ));
                }
            }
        }
    }
    (next != *progress).then_some(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use coracle_proto::{samples, Generation, ServiceStatus};

    const WINDOWS: Windows = Windows {
        health_s: 10,
        apply_s: 30,
    };

    fn deploying(running_since: Option<i64>, healthy_since: Option<i64>) -> DeviceProgress {
        DeviceProgress {
            device: samples::device(),
            status: DeviceStatus::Deploying,
            generation: Some(5),
            previous_generation: Some(4),
            deployed_unix: Some(100),
            running_since_unix: running_since,
            healthy_since_unix: healthy_since,
            rollback_generation: None,
            reason: None,
            previous_services: None,
            previous_agent_version: None,
        }
    }

    #[test]
    fn an_agent_rollout_follows_the_reported_agent_version() {
        let target = Target::AgentVersion("0.2.0");
        let mut reported = samples::reported_state(1);
        reported.services.clear();
        reported.agent_version = "0.1.0".into();
        fn seen(reported: &ReportedState, now: i64) -> Observation<'_> {
            Observation {
                online: true,
                reported: Some(reported),
                now,
            }
        }
        // Still the old agent: nothing moves until the apply timeout.
        let sent = deploying(None, None);
        assert_eq!(
            observe_target(&sent, target, WINDOWS, seen(&reported, 110)),
            None
        );
        let late = observe_target(&sent, target, WINDOWS, seen(&reported, 131)).unwrap();
        assert_eq!(late.status, DeviceStatus::Failed);
        assert_eq!(
            late.reason.as_deref(),
            Some("did not start agent 0.2.0 within the 30 s apply timeout")
        );
        // The new agent reports: healthy once the window passed.
        reported.agent_version = "0.2.0".into();
        let running = observe_target(&sent, target, WINDOWS, seen(&reported, 110)).unwrap();
        assert_eq!(running.healthy_since_unix, Some(110));
        let proven = observe_target(&running, target, WINDOWS, seen(&reported, 120)).unwrap();
        assert_eq!(proven.status, DeviceStatus::Healthy);
        // A device that gave the build up fails at once.
        reported.agent_version = "0.1.0".into();
        reported.conditions = vec![Condition::AgentUpdateAbandoned {
            version: "0.2.0".into(),
            reason: "it exited with status 1 before it connected".into(),
        }];
        let gave_up = observe_target(&sent, target, WINDOWS, seen(&reported, 101)).unwrap();
        assert_eq!(gave_up.status, DeviceStatus::Failed);
        assert_eq!(
            gave_up.reason.as_deref(),
            Some("gave agent 0.2.0 up: it exited with status 1 before it connected")
        );
    }

    fn report(applied: u64, update: UpdateStatus, health: Health) -> ReportedState {
        let mut state = samples::reported_state(1);
        state.applied = Generation(applied);
        state.update = update;
        state.services = state
            .services
            .into_iter()
            .map(|s| ServiceStatus {
                state: ContainerState::Running,
                health,
                ..s
            })
            .collect();
        state
    }

    /// (running since, healthy since, online, report, now, expected status, expected
    /// running since, expected healthy since)
    type Row = (
        Option<i64>,
        Option<i64>,
        bool,
        Option<ReportedState>,
        i64,
        DeviceStatus,
        Option<i64>,
        Option<i64>,
    );

    #[test]
    fn reports_move_progress() {
        use DeviceStatus::{Deploying as D, Failed as F, Healthy as H};
        let idle = UpdateStatus::Idle;
        let applying = UpdateStatus::Applying {
            generation: Generation(5),
        };
        let verifying = UpdateStatus::Verifying {
            generation: Generation(5),
        };
        let rolled_back = UpdateStatus::RolledBack {
            generation: Generation(5),
            reason: "exit 1".into(),
        };
        let old_rollback = UpdateStatus::RolledBack {
            generation: Generation(3),
            reason: "old".into(),
        };
        let table: Vec<Row> = vec![
            // Still on the old generation, inside the apply timeout: wait.
            (
                None,
                None,
                true,
                Some(report(4, idle.clone(), Health::None)),
                105,
                D,
                None,
                None,
            ),
            // Pulling for longer than the health window, inside the apply timeout: wait
            // (a 33 s apply no longer fails a 10 s window).
            (
                None,
                None,
                true,
                Some(report(4, applying.clone(), Health::None)),
                125,
                D,
                None,
                None,
            ),
            // Past the apply timeout without running the new generation: failed.
            (
                None,
                None,
                true,
                Some(report(4, applying.clone(), Health::None)),
                131,
                F,
                None,
                None,
            ),
            (None, None, false, None, 131, F, None, None),
            // In its health gate: running since now; the window starts here.
            (
                None,
                None,
                true,
                Some(report(4, verifying.clone(), Health::Healthy)),
                125,
                D,
                Some(125),
                None,
            ),
            // Committed and healthy: running and healthy since now, then the window completes.
            (
                None,
                None,
                true,
                Some(report(5, idle.clone(), Health::Healthy)),
                128,
                D,
                Some(128),
                Some(128),
            ),
            (
                Some(125),
                Some(128),
                true,
                Some(report(5, idle.clone(), Health::Healthy)),
                138,
                H,
                Some(125),
                Some(128),
            ),
            // Running but not healthy within the window after it started: failed.
            (
                Some(125),
                None,
                true,
                Some(report(4, verifying.clone(), Health::Starting)),
                135,
                D,
                Some(125),
                None,
            ),
            (
                Some(125),
                None,
                true,
                Some(report(4, verifying, Health::Starting)),
                136,
                F,
                Some(125),
                None,
            ),
            // The agent rolled the new generation back: failed at once.
            (
                None,
                None,
                true,
                Some(report(4, rolled_back, Health::None)),
                101,
                F,
                None,
                None,
            ),
            // An older rollback is not about this rollout.
            (
                None,
                None,
                true,
                Some(report(4, old_rollback, Health::None)),
                101,
                D,
                None,
                None,
            ),
            // Unhealthy on the new generation: failed.
            (
                Some(102),
                Some(102),
                true,
                Some(report(5, idle.clone(), Health::Unhealthy)),
                103,
                F,
                Some(102),
                None,
            ),
            // Offline counts as not healthy: the clock resets, and past the window it fails.
            (
                Some(102),
                Some(102),
                false,
                Some(report(5, idle.clone(), Health::None)),
                105,
                D,
                Some(102),
                None,
            ),
            (
                Some(102),
                None,
                false,
                Some(report(5, idle, Health::None)),
                113,
                F,
                Some(102),
                None,
            ),
            // Never reported anything within the apply timeout.
            (None, None, true, None, 130, D, None, None),
        ];
        for (i, (running, since, online, reported, now, status, running_after, since_after)) in
            table.into_iter().enumerate()
        {
            let before = deploying(running, since);
            let seen = Observation {
                online,
                reported: reported.as_ref(),
                now,
            };
            let after = observe(&before, WINDOWS, seen).unwrap_or(before);
            assert_eq!(after.status, status, "row {i}");
            assert_eq!(after.running_since_unix, running_after, "row {i}");
            assert_eq!(after.healthy_since_unix, since_after, "row {i}");
            assert_eq!(after.reason.is_some(), status == F, "row {i}");
        }
    }

    #[test]
    fn timeouts_name_which_clock_ran_out() {
        let pulling = report(
            4,
            UpdateStatus::Applying {
                generation: Generation(5),
            },
            Health::None,
        );
        let seen = |now| Observation {
            online: true,
            reported: Some(&pulling),
            now,
        };
        let failed = observe(&deploying(None, None), WINDOWS, seen(131)).unwrap();
        assert_eq!(
            failed.reason.as_deref(),
            Some("did not start generation 5 within the 30 s apply timeout")
        );
        let failed = observe(&deploying(Some(110), None), WINDOWS, seen(121)).unwrap();
        assert_eq!(
            failed.reason.as_deref(),
            Some(
                "not healthy on generation 5 within the 10 s health window after it started \
                 running it"
            )
        );
    }

    #[test]
    fn settled_and_unsent_devices_do_not_move() {
        let mut unsent = deploying(None, None);
        unsent.generation = None;
        let mut healthy = deploying(Some(100), Some(100));
        healthy.status = DeviceStatus::Healthy;
        for progress in [unsent, healthy] {
            let seen = Observation {
                online: false,
                reported: None,
                now: 1_000,
            };
            assert_eq!(observe(&progress, WINDOWS, seen), None);
        }
    }
}
