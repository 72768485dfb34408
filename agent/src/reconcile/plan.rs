//! `plan`: the pure decision of what to do next.
//!
//! The target is the pending desired state if there is one and it is valid, else the
//! committed one (see [`target`]). Nothing running is touched until the target is ready to
//! start: while any of its images is missing, the plan holds only the pulls plus the usual
//! restarts of the containers that already run; once every image is in the store, the
//! containers no longer wanted go, then the per-service moves in `depends_on` order and the
//! health gate. A `start-first` service of a pending generation gets a successor beside
//! its serving container, promoted once it is up; a dependent moves only after that. A rollback of a failed pending generation comes alone; image garbage
//! collection comes last.
//!
//! The supervisor runs the actions as jobs, in parallel across subjects (an image, a
//! service, the collection). Subjects with a job in flight are `Observed::busy` and get no
//! actions; neither do the services that depend on a busy or moving service (so
//! `depends_on` order holds), the switch while unwanted containers are still going, the
//! health gate while any service is busy, pulls and creates during a collection, and a
//! collection while any job runs or is planned (a pull or a create may be using a layer it
//! would drop).

use std::collections::BTreeSet;

use coracle_proto::{
    DependencyCondition, DesiredState, Digest, Generation, Health, ServiceName, ServiceSpec,
    UpdateOrder,
};

use super::action::Action;
use super::gate::{failed_service, plan_gate};
use super::observed::{fingerprint, Busy, Observed, ObservedContainer, Phase};
use super::restart::{backoff_ms, should_restart};
use crate::state::AgentState;

/// Why the pending generation cannot be applied at all, if it cannot: a service spec the
/// agent could not run (`DesiredState::validate`). The transport refuses such states, so
/// this catches a state file written by an older agent. Such a generation is reported as
/// failed and nothing is done for it; the committed generation stays the target.
pub fn refusal(state: &AgentState) -> Option<(Generation, String)> {
    let pending = state.pending.as_ref()?;
    let invalid = pending.validate().err()?;
    Some((pending.generation, invalid.to_string()))
}

/// The desired state the device converges to: a valid pending one, else the committed one.
pub fn target(state: &AgentState) -> Option<&DesiredState> {
    match &state.pending {
        Some(pending) if refusal(state).is_none() => Some(pending),
        _ => state.committed.as_ref(),
    }
}

/// True when every image `desired` names is in the store.
fn images_present(desired: &DesiredState, observed: &Observed) -> bool {
    desired
        .services
        .iter()
        .all(|s| observed.images.contains(&s.image.digest))
}

/// What `plan_services` may do to a container whose spec differs from the target's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Replace it, create missing ones: the target's images are all here. `overlap`: a
    /// `start-first` service may start its successor beside the serving container (only
    /// for a pending generation: a rollback goes back stop-first).
    Switch { overlap: bool },
    /// Leave it as it is and create nothing; only start what is down per its policy.
    Keep,
}

/// Computes the next actions. `now_ms` is monotonic milliseconds, the clock the observed
/// times use.
pub fn plan(state: &AgentState, observed: &Observed, now_ms: u64) -> Vec<Action> {
    let target = target(state);
    let pending = target.filter(|t| state.pending.as_ref() == Some(*t));
    if let Some((pending, (service, reason))) =
        pending.and_then(|p| Some((p, failed_service(p, observed)?)))
    {
        return vec![Action::RollBack {
            generation: pending.generation,
            service,
            reason,
        }];
    }
    let mut actions = Vec::new();
    plan_retired(&mut actions, observed);
    match target {
        Some(target) if images_present(target, observed) => {
            let removing = remove_unwanted(&mut actions, &target.services, observed);
            // Containers that go free what the new ones may need (a port, a device); a
            // collection in flight may be dropping layers a new container would use.
            let mode = if removing || observed.busy.gc {
                Mode::Keep
            } else {
                Mode::Switch {
                    overlap: pending.is_some(),
                }
            };
            plan_services(&mut actions, target, observed, now_ms, mode);
            let settled = !removing && observed.busy.services.is_empty();
            if let Some(pending) = pending.filter(|_| settled) {
                plan_gate(&mut actions, pending, observed, now_ms);
            }
        }
        Some(target) => {
            plan_pulls(&mut actions, target, observed);
            // Meanwhile the committed generation runs on, restarted by its policies.
            if let Some(committed) = &state.committed {
                plan_services(&mut actions, committed, observed, now_ms, Mode::Keep);
            }
        }
        None => {
            remove_unwanted(&mut actions, &[], observed);
        }
    }
    plan_gc(&mut actions, state, observed);
    actions
}

/// Plans the removal of containers no service of `wanted` names; true while any such
/// container is still there (being removed now or by a job in flight).
fn remove_unwanted(actions: &mut Vec<Action>, wanted: &[ServiceSpec], observed: &Observed) -> bool {
    let wanted: BTreeSet<&ServiceName> = wanted.iter().map(|s| &s.name).collect();
    let mut removing = false;
    for (name, container) in &observed.containers {
        if !wanted.contains(name) {
            removing = true;
            if !observed.busy.services.contains(name) {
                remove_container(actions, name, container);
            }
        }
    }
    for (name, successor) in &observed.successors {
        if !wanted.contains(name) {
            removing = true;
            if !observed.busy.services.contains(name) {
                drop_successor(actions, name, successor);
            }
        }
    }
    removing
}

/// Stops and removes the containers promotions retired, each in a job of its own.
fn plan_retired(actions: &mut Vec<Action>, observed: &Observed) {
    for (name, old) in &observed.retired {
        if observed.busy.retiring.contains(name) {
            continue;
        }
        if matches!(old.phase, Phase::Running { .. }) {
            actions.push(Action::StopRetired {
                service: name.clone(),
            });
        }
        actions.push(Action::RemoveRetired {
            service: name.clone(),
        });
    }
}

fn drop_successor(actions: &mut Vec<Action>, name: &ServiceName, c: &ObservedContainer) {
    if matches!(c.phase, Phase::Running { .. }) {
        actions.push(Action::StopNext {
            service: name.clone(),
        });
    }
    actions.push(Action::RemoveNext {
        service: name.clone(),
    });
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
    if observed.busy.gc {
        return; // the collection may be dropping layers a pull would reuse
    }
    let mut asked = BTreeSet::new();
    for spec in &target.services {
        let digest = spec.image.digest;
        if observed.images.contains(&digest)
            || observed.busy.images.contains(&digest)
            || !asked.insert(digest)
        {
            continue;
        }
        // Stop-then-download frees the old container's memory before the pull: the one
        // order an operator can choose that touches a running container early (the spec
        // was validated above; the pull itself may still fail). The pull waits until the
        // old container is gone (jobs run side by side).
        if spec.update.order == UpdateOrder::StopThenDownload {
            if let Some(old) = observed.containers.get(&spec.name) {
                if !observed.busy.services.contains(&spec.name) {
                    remove_container(actions, &spec.name, old);
                }
                continue;
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
    mode: Mode,
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
        if observed.busy.services.contains(&spec.name)
            || spec
                .depends_on
                .iter()
                .any(|dep| moving(&dep.service, actions, observed))
        {
            continue; // its job, or a dependency's, is still in flight
        }
        let ready = dependencies_ready(spec, observed);
        let print = fingerprint(spec);
        let container = observed.containers.get(&spec.name);
        let same = container.filter(|c| c.fingerprint == print);
        let successor = observed.successors.get(&spec.name);
        let Mode::Switch { overlap } = mode else {
            if let Some(c) = same {
                supervise(actions, spec, c, ready, now_ms);
            }
            continue;
        };
        // A successor of another spec (an older pending generation, or one a rollback
        // left) goes first; the round after decides afresh.
        if let Some(next) = successor.filter(|n| same.is_some() || n.fingerprint != print) {
            drop_successor(actions, &spec.name, next);
            continue;
        }
        if let Some(c) = same {
            supervise(actions, spec, c, ready, now_ms);
            continue;
        }
        let serving = container.is_some_and(|c| matches!(c.phase, Phase::Running { .. }));
        match successor {
            // Its old container is gone (an agent crash during a promotion): take over.
            Some(_) if container.is_none() => actions.push(Action::Promote {
                service: spec.name.clone(),
            }),
            Some(next) => overlap_step(actions, spec, next, ready),
            None if overlap && serving && spec.update.order == UpdateOrder::StartFirst => {
                // The last promotion's old container still holds the other slot.
                if observed.retired.contains_key(&spec.name) {
                    continue;
                }
                actions.push(Action::CreateNext {
                    spec: Box::new(spec.clone()),
                });
                if ready {
                    actions.push(Action::StartNext {
                        service: spec.name.clone(),
                    });
                }
            }
            None => {
                if let Some(old) = container {
                    remove_container(actions, &spec.name, old);
                }
                actions.push(Action::Create {
                    spec: Box::new(spec.clone()),
                });
                if ready {
                    actions.push(Action::Start {
                        service: spec.name.clone(),
                    });
                }
            }
        }
    }
}

/// The next move of a `start-first` successor of `spec` while the old container serves:
/// start it once its dependencies are ready, promote it once it is up (healthy, when the
/// service has a check). One that failed is left to the gate (`failed_service` rolls the
/// pending generation back, and the successor is then dropped as another spec's).
fn overlap_step(
    actions: &mut Vec<Action>,
    spec: &ServiceSpec,
    next: &ObservedContainer,
    ready: bool,
) {
    let service = spec.name.clone();
    match next.phase {
        Phase::Created if ready => actions.push(Action::StartNext { service }),
        Phase::Running { .. } if spec.health.is_none() || next.health == Health::Healthy => {
            actions.push(Action::Promote { service })
        }
        Phase::Exited { code: 0, .. } if !super::gate::keeps_running(spec) => {
            actions.push(Action::Promote { service })
        }
        Phase::Stopped => drop_successor(actions, &spec.name, next),
        Phase::Created | Phase::Running { .. } | Phase::Exited { .. } => {}
    }
}

/// Starts or restarts a container created from `spec`, per its restart policy.
fn supervise(
    actions: &mut Vec<Action>,
    spec: &ServiceSpec,
    container: &ObservedContainer,
    ready: bool,
    now_ms: u64,
) {
    let start = || Action::Start {
        service: spec.name.clone(),
    };
    match container.phase {
        Phase::Created if ready => actions.push(start()),
        Phase::Running { since_ms } if container.health == Health::Unhealthy => {
            // Paced like crash restarts: a container that never gets healthy is restarted
            // at 1 s, 2 s, 4 s … after its start, not in a tight loop.
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
        Phase::Stopped if ready && should_restart(spec.restart, 0, container.restarts, true) => {
            actions.push(start())
        }
        Phase::Created | Phase::Running { .. } | Phase::Stopped => {}
    }
}

/// True when `service` has a job in flight or an action already planned in `actions`.
/// A successor in flight counts too: a dependent moves after its dependency took over.
fn moving(service: &ServiceName, actions: &[Action], observed: &Observed) -> bool {
    observed.busy.services.contains(service)
        || observed.successors.contains_key(service)
        || actions
            .iter()
            .any(|action| action.service() == Some(service))
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

fn plan_gc(actions: &mut Vec<Action>, state: &AgentState, observed: &Observed) {
    let referenced: BTreeSet<Digest> = [&state.committed, &state.pending]
        .into_iter()
        .flatten()
        .flat_map(|d| d.services.iter().map(|s| s.image.digest))
        .collect();
    // Only on a quiet device: no job in flight or planned beside it may be pulling into,
    // unpacking from or still mounting a layer the collection would drop.
    if observed.busy != Busy::default() || !actions.is_empty() {
        return;
    }
    let unused: Vec<Digest> = observed.images.difference(&referenced).copied().collect();
    if !unused.is_empty() {
        actions.push(Action::Gc { images: unused });
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
