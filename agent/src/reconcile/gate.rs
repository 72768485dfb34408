//! The health gate of a pending generation: a pending container that crashes or turns
//! unhealthy rolls the generation back at once; once every pending container is up the
//! gate clock starts, and the generation commits when the window passed with every
//! health-checked service healthy and every other service up for its minimum uptime
//! (`Lifecycle::min_uptime_ms`, compose `deploy.update_config.monitor`, 10 s by default),
//! or rolls back when it did not. As Docker's update monitor, any exit of a service that
//! should keep running (restart `always`, `unless-stopped`) before the commit is a failure;
//! a one-shot service (restart `no` or `on-failure`) that exits 0 is done, not failed.

use coracle_proto::{DesiredState, Health, RestartPolicy, ServiceName, ServiceSpec};

use super::action::Action;
use super::observed::{fingerprint, Observed, ObservedContainer, Phase};

/// A container of the pending generation that crashed or turned unhealthy, with why.
pub(super) fn failed_service(
    pending: &DesiredState,
    observed: &Observed,
) -> Option<(ServiceName, String)> {
    pending.services.iter().find_map(|spec| {
        let print = fingerprint(spec);
        let current = observed.containers.get(&spec.name);
        if let Some(next) = observed.successors.get(&spec.name) {
            if next.fingerprint == print {
                let why = failure(spec, next)?;
                let reason = format!("{why} (the old container kept serving)");
                return Some((spec.name.clone(), reason));
            }
        }
        let c = current.filter(|c| c.fingerprint == print)?; // else still the old container
        Some((spec.name.clone(), failure(spec, c)?))
    })
}

/// Why a container of `spec` counts as failed before commit, if it does.
fn failure(spec: &ServiceSpec, c: &ObservedContainer) -> Option<String> {
    Some(match c.phase {
        Phase::Exited { oom: true, .. } => "killed by the memory limit before commit".to_string(),
        Phase::Exited { code, .. } if code != 0 => {
            format!("exited with code {code} before commit{}", exit_detail(c))
        }
        Phase::Exited { .. } if keeps_running(spec) => format!(
            "exited with code 0 before commit, but its restart policy keeps it running{}",
            exit_detail(c)
        ),
        _ if c.health == Health::Unhealthy => {
            format!("unhealthy before commit{}", last_check(c))
        }
        _ => return None,
    })
}

/// Starts the gate once every pending container runs; commits once the gate window passed
/// with every health-checked service healthy; rolls back if the window passed without that.
pub(super) fn plan_gate(
    actions: &mut Vec<Action>,
    pending: &DesiredState,
    observed: &Observed,
    now_ms: u64,
) {
    let generation = pending.generation;
    let all_up = pending.services.iter().all(|spec| {
        observed.containers.get(&spec.name).is_some_and(|c| {
            c.fingerprint == fingerprint(spec)
                && matches!(
                    c.phase,
                    Phase::Running { .. } | Phase::Exited { code: 0, .. }
                )
        })
    });
    if !all_up {
        return;
    }
    let Some(started) = observed.gate_started_ms else {
        actions.push(Action::StartGate { generation });
        return;
    };
    let window = pending
        .services
        .iter()
        .filter_map(|s| s.update.health_gate_ms)
        .max()
        .map_or(0, u64::from);
    let unhealthy = pending.services.iter().find(|spec| {
        spec.health.is_some()
            && observed
                .containers
                .get(&spec.name)
                .is_some_and(|c| c.health != Health::Healthy)
    });
    let elapsed = now_ms.saturating_sub(started);
    let settled = pending.services.iter().all(|spec| {
        observed
            .containers
            .get(&spec.name)
            .is_some_and(|c| up_long_enough(spec, c, now_ms))
    });
    // The update is done once the containers it retired are gone too.
    let retired_gone = observed.retired.is_empty() && observed.busy.retiring.is_empty();
    match unhealthy {
        None if elapsed >= window && settled && retired_gone => {
            actions.push(Action::Commit { generation })
        }
        Some(spec) if window > 0 && elapsed >= window => {
            let last_check = observed
                .containers
                .get(&spec.name)
                .map(last_check)
                .unwrap_or_default();
            actions.push(Action::RollBack {
                generation,
                service: spec.name.clone(),
                reason: format!("not healthy within the {window} ms health gate{last_check}"),
            })
        }
        _ => {}
    }
}

/// Whether a service's container should run for good (so any exit is a failure).
pub(super) fn keeps_running(spec: &ServiceSpec) -> bool {
    matches!(
        spec.restart,
        RestartPolicy::Always | RestartPolicy::UnlessStopped
    )
}

/// A service with a health check is judged by it; any other must have run for its minimum
/// uptime, or have finished with 0 as a one-shot.
fn up_long_enough(spec: &ServiceSpec, c: &ObservedContainer, now_ms: u64) -> bool {
    if spec.health.is_some() {
        return true;
    }
    match c.phase {
        Phase::Running { since_ms } => {
            now_ms.saturating_sub(since_ms) >= u64::from(spec.lifecycle.min_uptime_ms())
        }
        Phase::Exited { code: 0, .. } => !keeps_running(spec),
        _ => false,
    }
}

/// ": …" with what the container said before it ended (the tail of its output, or why its
/// start failed), if anything.
fn exit_detail(c: &ObservedContainer) -> String {
    c.exit_detail
        .as_deref()
        .filter(|d| !d.is_empty())
        .map(|said| format!(": {}", clip_front(said, LAST_CHECK_CHARS)))
        .unwrap_or_default()
}

/// The last `max` characters of `text`, with "…" when cut (an output's end says most).
fn clip_front(text: &str, max: usize) -> String {
    let count = text.chars().count();
    match text.char_indices().nth(count.saturating_sub(max)) {
        Some((start, _)) if start > 0 => format!("…{}", &text[start..]),
        _ => text.to_string(),
    }
}

/// How much of a failed check's output a rollback reason carries (it travels in the
/// reported state and an event).
const LAST_CHECK_CHARS: usize = 200;

/// "; last check: …" with what `c`'s last failed health check said, if it failed.
fn last_check(c: &ObservedContainer) -> String {
    c.last_failed_check
        .as_deref()
        .map(|said| format!("; last check: {}", clip(said, LAST_CHECK_CHARS)))
        .unwrap_or_default()
}

/// The first `max` characters of `text`, with "…" when cut.
fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::observed::fingerprint;
    use coracle_proto::{Digest, Generation, HealthCheck, HealthProbe, ImageRef};

    fn spec(restart: RestartPolicy, min_uptime_ms: Option<u32>, health: bool) -> ServiceSpec {
        let image = ImageRef {
            registry: String::new(),
            repository: "app".into(),
            digest: Digest::from_bytes([7; 32]),
        };
        let mut spec = ServiceSpec::new("web".parse().unwrap(), image);
        spec.restart = restart;
        spec.lifecycle.min_uptime_ms = min_uptime_ms;
        spec.health = health.then_some(HealthCheck {
            probe: HealthProbe::Tcp { port: 80 },
            interval_ms: 1000,
            timeout_ms: 500,
            retries: 3,
            start_period_ms: 0,
        });
        spec
    }

    fn observe(spec: &ServiceSpec, phase: Phase, health: Health, detail: &str) -> Observed {
        let container = ObservedContainer {
            fingerprint: fingerprint(spec),
            phase,
            health,
            restarts: 0,
            last_failed_check: None,
            exit_detail: (!detail.is_empty()).then(|| detail.to_string()),
        };
        Observed {
            containers: [(spec.name.clone(), container)].into(),
            gate_started_ms: Some(1_000),
            ..Observed::default()
        }
    }

    /// What the gate does: `None` (wait), `Some(Ok(()))` (commit), `Some(Err(reason))`.
    fn verdict(spec: &ServiceSpec, obs: &Observed, now_ms: u64) -> Option<Result<(), String>> {
        let pending = DesiredState {
            device: "pi".parse().unwrap(),
            generation: Generation(2),
            services: vec![spec.clone()],
            registries: Vec::new(),
        };
        if let Some((_, reason)) = failed_service(&pending, obs) {
            return Some(Err(reason));
        }
        let mut actions = Vec::new();
        plan_gate(&mut actions, &pending, obs, now_ms);
        match actions.pop() {
            None | Some(Action::StartGate { .. }) => None,
            Some(Action::Commit { .. }) => Some(Ok(())),
            Some(Action::RollBack { reason, .. }) => Some(Err(reason)),
            Some(other) => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_service_without_health_check_commits_only_after_its_minimum_uptime() {
        use RestartPolicy::{Always, No, OnFailure, UnlessStopped};
        let running = |since_ms| Phase::Running { since_ms };
        let exited = |code| Phase::Exited {
            code,
            at_ms: 3_000,
            oom: false,
        };
        let commit = Some(Ok(()));
        let fails = |reason: &str| Some(Err(reason.to_string()));
        // (restart, min uptime, health check, phase, health, now, verdict)
        let table = [
            // Default 10 s: up 4 s is not enough, up 10 s is.
            (
                Always,
                None,
                false,
                running(1_000),
                Health::None,
                5_000,
                None,
            ),
            (
                Always,
                None,
                false,
                running(1_000),
                Health::None,
                11_000,
                commit.clone(),
            ),
            // compose `deploy.update_config.monitor`.
            (
                Always,
                Some(2_000),
                false,
                running(1_000),
                Health::None,
                3_000,
                commit.clone(),
            ),
            (
                Always,
                Some(0),
                false,
                running(1_000),
                Health::None,
                1_000,
                commit.clone(),
            ),
            (
                UnlessStopped,
                Some(30_000),
                false,
                running(1_000),
                Health::None,
                11_000,
                None,
            ),
            // A one-shot that finished well is done; a service meant to run is not.
            (
                No,
                None,
                false,
                exited(0),
                Health::None,
                1_000,
                commit.clone(),
            ),
            (
                OnFailure { max_retries: 3 },
                None,
                false,
                exited(0),
                Health::None,
                1_000,
                commit.clone(),
            ),
            (
                Always,
                None,
                false,
                exited(0),
                Health::None,
                1_000,
                fails("exited with code 0 before commit, but its restart policy keeps it running"),
            ),
            (
                No,
                None,
                false,
                exited(1),
                Health::None,
                1_000,
                fails("exited with code 1 before commit"),
            ),
            // A health-checked service is judged by its check, not by uptime.
            (
                Always,
                None,
                true,
                running(1_000),
                Health::Healthy,
                1_000,
                commit.clone(),
            ),
            (
                Always,
                None,
                true,
                running(1_000),
                Health::Starting,
                60_000,
                None,
            ),
        ];
        for (i, (restart, min_uptime, health_check, phase, health, now, want)) in
            table.into_iter().enumerate()
        {
            let spec = spec(restart, min_uptime, health_check);
            let obs = observe(&spec, phase, health, "");
            assert_eq!(verdict(&spec, &obs, now), want, "row {i}");
        }
    }

    #[test]
    fn a_rollback_after_an_exit_says_what_the_container_said_last() {
        let spec = spec(RestartPolicy::Always, None, false);
        let exited = Phase::Exited {
            code: 1,
            at_ms: 2_000,
            oom: false,
        };
        let obs = observe(&spec, exited, Health::None, "last output: boom | bye");
        assert_eq!(
            verdict(&spec, &obs, 2_000),
            Some(Err(
                "exited with code 1 before commit: last output: boom | bye".into()
            ))
        );
        // A long tail keeps its end, where the error usually is.
        let long = format!("last output: {}exec format error", "x".repeat(500));
        let obs = observe(&spec, exited, Health::None, &long);
        let Some(Err(reason)) = verdict(&spec, &obs, 2_000) else {
            panic!("no rollback");
        };
        assert!(reason.ends_with("xexec format error"), "{reason}");
        assert!(reason.contains("before commit: …x"), "{reason}");
        assert!(reason.chars().count() < 260, "{reason}");
    }
}
