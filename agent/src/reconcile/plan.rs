//! `plan`: the pure decision of what to do next.
//!
//! The target is the pending desired state if there is one, else the committed one. Order of
//! the returned actions: a rollback alone if the pending generation failed; otherwise
//! containers no longer wanted, pulls, per-service moves in `depends_on` order, the health
//! gate, then image garbage collection.

use std::collections::BTreeSet;

use coracle_proto::{
    DependencyCondition, DesiredState, Digest, Generation, Health, ImageRef, ServiceName,
    ServiceSpec, UpdateOrder,
};

use super::observed::{fingerprint, Observed, ObservedContainer, Phase};
use super::restart::{backoff_ms, should_restart};
use crate::state::AgentState;

/// One idempotent step for the supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Fetch an image into the store (no-op if present).
    Pull {
        image: ImageRef,
    },
    /// Create the service's container from this spec (it does not exist yet).
    Create {
        spec: Box<ServiceSpec>,
    },
    Start {
        service: ServiceName,
    },
    /// Stop and start again (an unhealthy container, or a restart command).
    Restart {
        service: ServiceName,
    },
    Stop {
        service: ServiceName,
    },
    Remove {
        service: ServiceName,
    },
    /// Remove images no desired state references any more.
    Gc {
        images: Vec<Digest>,
    },
    /// Every container of the pending generation runs: start its health gate clock.
    StartGate {
        generation: Generation,
    },
    /// The pending generation passed its gate: make it the committed one.
    Commit {
        generation: Generation,
    },
    /// The pending generation failed: drop it, never retry it, return to the committed one.
    RollBack {
        generation: Generation,
        service: ServiceName,
        reason: String,
    },
}

/// Computes the next actions. `now_ms` is monotonic milliseconds, the clock the observed
/// times use.
pub fn plan(state: &AgentState, observed: &Observed, now_ms: u64) -> Vec<Action> {
    let target = state.pending.as_ref().or(state.committed.as_ref());
    if let (Some(pending), Some(rollback)) = (&state.pending, failed_service(state, observed)) {
        let (service, reason) = rollback;
        return vec![Action::RollBack {
            generation: pending.generation,
            service,
            reason,
        }];
    }
    let mut actions = Vec::new();
    let wanted: BTreeSet<&ServiceName> = target
        .map(|t| t.services.iter().map(|s| &s.name).collect())
        .unwrap_or_default();
    for (name, container) in &observed.containers {
        if !wanted.contains(name) {
            remove_container(&mut actions, name, container);
        }
    }
    if let Some(target) = target {
        plan_pulls(&mut actions, target, observed);
        plan_services(&mut actions, target, observed, now_ms);
        if let Some(pending) = &state.pending {
            plan_gate(&mut actions, pending, observed, now_ms);
        }
    }
    plan_gc(&mut actions, state, observed);
    actions
}

fn remove_container(actions: &mut Vec<Action>, name: &ServiceName, c: &ObservedContainer) {
    if matches!(c.phase, Phase::Running { .. }) {
        actions.push(Action::Stop {
            service: name.clone(),
        });
    }
    actions.push(Action::Remove {
        service: name.clone(),
    });
}

fn plan_pulls(actions: &mut Vec<Action>, target: &DesiredState, observed: &Observed) {
    let mut asked = BTreeSet::new();
    for spec in &target.services {
        let digest = spec.image.digest;
        if observed.images.contains(&digest) || !asked.insert(digest) {
            continue;
        }
        // Stop-then-download frees the old container's memory and disk before the pull.
        if spec.update.order == UpdateOrder::StopThenDownload {
            if let Some(old) = observed.containers.get(&spec.name) {
                remove_container(actions, &spec.name, old);
            }
        }
        actions.push(Action::Pull {
            image: spec.image.clone(),
        });
    }
}

fn plan_services(
    actions: &mut Vec<Action>,
    target: &DesiredState,
    observed: &Observed,
    now_ms: u64,
) {
    // `validate` ran before the state was accepted, so there is an order; the listed order
    // is a safe fallback that never panics.
    let order = target
        .start_order()
        .unwrap_or_else(|_| (0..target.services.len()).collect());
    for spec in order.iter().filter_map(|&i| target.services.get(i)) {
        if !observed.images.contains(&spec.image.digest) {
            continue; // waits for its pull
        }
        let ready = dependencies_ready(spec, observed);
        let start = || Action::Start {
            service: spec.name.clone(),
        };
        let Some(container) = observed.containers.get(&spec.name) else {
            actions.push(Action::Create {
                spec: Box::new(spec.clone()),
            });
            if ready {
                actions.push(start());
            }
            continue;
        };
        if container.fingerprint != fingerprint(spec) {
            remove_container(actions, &spec.name, container);
            actions.push(Action::Create {
                spec: Box::new(spec.clone()),
            });
            if ready {
                actions.push(start());
            }
            continue;
        }
        match container.phase {
            Phase::Created if ready => actions.push(start()),
            Phase::Running { since_ms } if container.health == Health::Unhealthy => {
                // Paced like crash restarts: a container that never gets healthy is
                // restarted at 1 s, 2 s, 4 s … after its start, not in a tight loop.
                let due = since_ms.saturating_add(backoff_ms(container.restarts));
                if now_ms >= due && should_restart(spec.restart, 1, container.restarts, false) {
                    actions.push(Action::Restart {
                        service: spec.name.clone(),
                    });
                }
            }
            Phase::Exited { code, at_ms, .. } => {
                let due = at_ms.saturating_add(backoff_ms(container.restarts));
                if ready
                    && now_ms >= due
                    && should_restart(spec.restart, code, container.restarts, false)
                {
                    actions.push(start());
                }
            }
            Phase::Stopped
                if ready && should_restart(spec.restart, 0, container.restarts, true) =>
            {
                actions.push(start())
            }
            Phase::Created | Phase::Running { .. } | Phase::Stopped => {}
        }
    }
}

/// True when every dependency is in the state its condition asks for.
fn dependencies_ready(spec: &ServiceSpec, observed: &Observed) -> bool {
    spec.depends_on.iter().all(|dep| {
        let Some(c) = observed.containers.get(&dep.service) else {
            return false;
        };
        match dep.condition {
            DependencyCondition::Started => matches!(c.phase, Phase::Running { .. }),
            DependencyCondition::Healthy => {
                matches!(c.phase, Phase::Running { .. }) && c.health == Health::Healthy
            }
            DependencyCondition::CompletedSuccessfully => {
                matches!(c.phase, Phase::Exited { code: 0, .. })
            }
        }
    })
}

/// A container of the pending generation that crashed or turned unhealthy, with why.
fn failed_service(state: &AgentState, observed: &Observed) -> Option<(ServiceName, String)> {
    let pending = state.pending.as_ref()?;
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
fn plan_gate(actions: &mut Vec<Action>, pending: &DesiredState, observed: &Observed, now_ms: u64) {
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

fn plan_gc(actions: &mut Vec<Action>, state: &AgentState, observed: &Observed) {
    let referenced: BTreeSet<Digest> = [&state.committed, &state.pending]
        .into_iter()
        .flatten()
        .flat_map(|d| d.services.iter().map(|s| s.image.digest))
        .collect();
    let unused: Vec<Digest> = observed.images.difference(&referenced).copied().collect();
    if !unused.is_empty() {
        actions.push(Action::Gc { images: unused });
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
