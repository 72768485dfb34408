//! How a device's report moves its rollout progress: pure, so each situation is a table row.
//!
//! A device is healthy on generation N when it is online, reports N (or later) applied, no
//! failed update of N, and every service running (or exited 0) and not unhealthy. It must
//! get there within the health window after the deploy and stay there for the window;
//! a rollback, failed apply or unhealthy service of N fails it at once.

use coracle_proto::{ContainerState, Health, ReportedState, UpdateStatus};

use crate::store::{DeviceProgress, DeviceStatus};

/// What the controller knows about a device now.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    pub online: bool,
    pub reported: Option<&'a ReportedState>,
    pub now: i64,
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

fn healthy(generation: u64, reported: &ReportedState) -> bool {
    reported.applied.0 >= generation
        && reported.services.iter().all(|s| match s.state {
            ContainerState::Running => matches!(s.health, Health::Healthy | Health::None),
            ContainerState::Exited => s.last_exit_code == Some(0),
            _ => false,
        })
}

/// The device's progress after `seen`, or `None` when nothing changed. Only devices that
/// were sent the new generation and are not yet proven move.
pub fn observe(
    progress: &DeviceProgress,
    window_s: u64,
    seen: Observation<'_>,
) -> Option<DeviceProgress> {
    let (DeviceStatus::Deploying, Some(generation)) = (progress.status, progress.generation) else {
        return None;
    };
    let mut next = progress.clone();
    let window = i64::try_from(window_s).unwrap_or(i64::MAX);
    if let Some(reason) = seen.reported.and_then(|r| failure(generation, r)) {
        next.status = DeviceStatus::Failed;
        next.healthy_since_unix = None;
        next.reason = Some(reason);
    } else if seen.online && seen.reported.is_some_and(|r| healthy(generation, r)) {
        let since = *next.healthy_since_unix.get_or_insert(seen.now);
        if seen.now.saturating_sub(since) >= window {
            next.status = DeviceStatus::Healthy;
        }
    } else {
        next.healthy_since_unix = None;
        let deployed = progress.deployed_unix.unwrap_or(seen.now);
        // Strictly past: times are whole seconds, so `>=` could cut the window by one.
        if seen.now.saturating_sub(deployed) > window {
            next.status = DeviceStatus::Failed;
            next.reason = Some(format!(
                "not healthy on generation {generation} within the {window_s} s health window{}",
                if seen.online { "" } else { " (offline)" }
            ));
        }
    }
    (next != *progress).then_some(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use coracle_proto::{samples, Generation, ServiceStatus};

    fn deploying(healthy_since: Option<i64>) -> DeviceProgress {
        DeviceProgress {
            device: samples::device(),
            status: DeviceStatus::Deploying,
            generation: Some(5),
            previous_generation: Some(4),
            deployed_unix: Some(100),
            healthy_since_unix: healthy_since,
            rollback_generation: None,
            reason: None,
            previous_services: None,
        }
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

    /// (healthy since, online, report, now, expected status, expected healthy since)
    type Row = (
        Option<i64>,
        bool,
        Option<ReportedState>,
        i64,
        DeviceStatus,
        Option<i64>,
    );

    #[test]
    fn reports_move_progress() {
        use DeviceStatus::{Deploying as D, Failed as F, Healthy as H};
        let idle = UpdateStatus::Idle;
        let rolled_back = UpdateStatus::RolledBack {
            generation: Generation(5),
            reason: "exit 1".into(),
        };
        let old_rollback = UpdateStatus::RolledBack {
            generation: Generation(3),
            reason: "old".into(),
        };
        let table: Vec<Row> = vec![
            // Still on the old generation, inside the window: wait.
            (
                None,
                true,
                Some(report(4, idle.clone(), Health::None)),
                105,
                D,
                None,
            ),
            // On the new one and healthy: the clock starts, then the window completes.
            (
                None,
                true,
                Some(report(5, idle.clone(), Health::Healthy)),
                105,
                D,
                Some(105),
            ),
            (
                Some(105),
                true,
                Some(report(5, idle.clone(), Health::Healthy)),
                115,
                H,
                Some(105),
            ),
            // The agent rolled the new generation back: failed at once.
            (
                None,
                true,
                Some(report(4, rolled_back, Health::None)),
                101,
                F,
                None,
            ),
            // An older rollback is not about this rollout.
            (
                None,
                true,
                Some(report(4, old_rollback, Health::None)),
                101,
                D,
                None,
            ),
            // Unhealthy on the new generation: failed.
            (
                Some(102),
                true,
                Some(report(5, idle.clone(), Health::Unhealthy)),
                103,
                F,
                None,
            ),
            // Offline counts as not healthy: the clock resets, and past the window it fails.
            (
                Some(102),
                false,
                Some(report(5, idle.clone(), Health::None)),
                105,
                D,
                None,
            ),
            (
                None,
                false,
                Some(report(5, idle.clone(), Health::None)),
                111,
                F,
                None,
            ),
            // Never reported anything within the window.
            (None, true, None, 110, D, None),
            (None, true, None, 111, F, None),
        ];
        for (i, (since, online, reported, now, status, since_after)) in
            table.into_iter().enumerate()
        {
            let before = deploying(since);
            let seen = Observation {
                online,
                reported: reported.as_ref(),
                now,
            };
            let after = observe(&before, 10, seen).unwrap_or(before);
            assert_eq!(after.status, status, "row {i}");
            assert_eq!(after.healthy_since_unix, since_after, "row {i}");
            assert_eq!(after.reason.is_some(), status == F, "row {i}");
        }
    }

    #[test]
    fn settled_and_unsent_devices_do_not_move() {
        let mut unsent = deploying(None);
        unsent.generation = None;
        let mut healthy = deploying(Some(100));
        healthy.status = DeviceStatus::Healthy;
        for progress in [unsent, healthy] {
            let seen = Observation {
                online: false,
                reported: None,
                now: 1_000,
            };
            assert_eq!(observe(&progress, 10, seen), None);
        }
    }
}
