//! The health gate of a pending generation: a pending container that crashes or turns
//! unhealthy rolls the generation back at once; once every pending container is up the
//! gate clock starts, and the generation commits when the window passed with every
//! health-checked service healthy, or rolls back when it did not.

use coracle_proto::{DesiredState, Health, ServiceName};

use super::action::Action;
use super::observed::{fingerprint, Observed, ObservedContainer, Phase};

/// A container of the pending generation that crashed or turned unhealthy, with why.
pub(super) fn failed_service(
    pending: &DesiredState,
    observed: &Observed,
) -> Option<(ServiceName, String)> {
    pending.services.iter().find_map(|spec| {
        let c = observed.containers.get(&spec.name)?;
        if c.fingerprint != fingerprint(spec) {
            return None; // still the old container
        }
        let reason = match c.phase {
            Phase::Exited { oom: true, .. } => {
                "killed by the memory limit before commit".to_string()
            }
            Phase::Exited { code, .. } if code != 0 => {
                format!("exited with code {code} before commit")
            }
            _ if c.health == Health::Unhealthy => {
                format!("unhealthy before commit{}", last_check(c))
            }
            _ => return None,
        };
        Some((spec.name.clone(), reason))
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
    match unhealthy {
        None if elapsed >= window => actions.push(Action::Commit { generation }),
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
