//! `Tracker`: what the supervisor remembers between ticks that the runtime does not say:
//! when a container exited, whether the agent stopped it on purpose, how often it was
//! restarted. Turns the engine's list into the planner's `Observed`, and names the exits it
//! sees for the first time.

use std::collections::{BTreeMap, BTreeSet};

use coracle_proto::{Digest, Health, ServiceName};

use crate::engine::{EngineContainer, EngineStatus};
use crate::reconcile::{Observed, ObservedContainer, Phase, Role};

/// A container exit seen for the first time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    pub service: ServiceName,
    pub exit_code: i32,
    pub oom_killed: bool,
}

/// Per-service memory of the supervisor (not persisted: after a restart, backoffs start
/// over, which is the safe direction).
#[derive(Debug, Default)]
pub struct Tracker {
    exited_at_ms: BTreeMap<ServiceName, u64>,
    started_at_ms: BTreeMap<ServiceName, u64>,
    stopped_on_purpose: BTreeSet<ServiceName>,
    /// Consecutive restarts (backoff), reset when the container is recreated.
    restarts: BTreeMap<ServiceName, u32>,
    /// All restarts since the agent started, for reports.
    pub total_restarts: BTreeMap<ServiceName, u32>,
    pub last_exit: BTreeMap<ServiceName, Exit>,
    pub gate_started_ms: Option<u64>,
    /// What each container said when it last ended (see `ObservedContainer::exit_detail`),
    /// until it starts again.
    pub exit_detail: BTreeMap<ServiceName, String>,
    /// When each `start-first` successor was first seen running, and seen ended.
    successor_times: BTreeMap<ServiceName, (u64, Option<u64>)>,
}

impl Tracker {
    /// Builds the planner's view; returns it with the exits not seen before.
    pub fn observe(
        &mut self,
        containers: &[EngineContainer],
        images: BTreeSet<Digest>,
        now_ms: u64,
    ) -> (Observed, Vec<Exit>) {
        let mut exits = Vec::new();
        let mut observed = Observed {
            images,
            gate_started_ms: self.gate_started_ms,
            ..Observed::default()
        };
        for c in containers {
            let name = &c.service;
            if c.role == Role::Next {
                let phase = self.successor_phase(name, c.status, now_ms);
                observed
                    .successors
                    .insert(name.clone(), untracked(c, phase));
                continue;
            }
            if c.role == Role::Retired {
                // Only whether it still runs matters: it is stopped and removed.
                let phase = match c.status {
                    EngineStatus::Running => Phase::Running { since_ms: 0 },
                    _ => Phase::Stopped,
                };
                observed.retired.insert(name.clone(), untracked(c, phase));
                continue;
            }
            let phase = match c.status {
                EngineStatus::Created => Phase::Created,
                EngineStatus::Running => Phase::Running {
                    since_ms: *self.started_at_ms.entry(name.clone()).or_insert(now_ms),
                },
                EngineStatus::Stopped { .. } if self.stopped_on_purpose.contains(name) => {
                    Phase::Stopped
                }
                EngineStatus::Stopped {
                    exit_code,
                    oom_killed,
                } => {
                    let code = exit_code.unwrap_or(255);
                    let at_ms = *self.exited_at_ms.entry(name.clone()).or_insert_with(|| {
                        let exit = Exit {
                            service: name.clone(),
                            exit_code: code,
                            oom_killed,
                        };
                        self.last_exit.insert(name.clone(), exit.clone());
                        exits.push(exit);
                        now_ms
                    });
                    Phase::Exited {
                        code,
                        at_ms,
                        oom: oom_killed,
                    }
                }
            };
            observed.containers.insert(
                name.clone(),
                ObservedContainer {
                    fingerprint: c.fingerprint,
                    phase,
                    // Filled in from the health checks by the supervisor.
                    health: Health::None,
                    restarts: self.restarts.get(name).copied().unwrap_or(0),
                    last_failed_check: None,
                    exit_detail: self.exit_detail.get(name).cloned(),
                },
            );
        }
        (observed, exits)
    }

    /// A successor's phase: it is never restarted, so its times are only when it came up
    /// (for the minimum uptime once it takes over) and when it ended.
    fn successor_phase(&mut self, name: &ServiceName, status: EngineStatus, now_ms: u64) -> Phase {
        let times = self.successor_times.entry(name.clone());
        match status {
            EngineStatus::Created => Phase::Created,
            EngineStatus::Running => Phase::Running {
                since_ms: times.or_insert((now_ms, None)).0,
            },
            EngineStatus::Stopped {
                exit_code,
                oom_killed,
            } => {
                let (_, ended) = times.or_insert((now_ms, None));
                Phase::Exited {
                    code: exit_code.unwrap_or(255),
                    at_ms: *ended.get_or_insert(now_ms),
                    oom: oom_killed,
                }
            }
        }
    }

    /// A successor is about to be created: its times start over.
    pub fn created_next(&mut self, service: &ServiceName) {
        self.successor_times.remove(service);
    }

    /// The service's successor took over: it is the service's container now, up since it
    /// was first seen running, with no restarts and no exit behind it.
    pub fn promoted(&mut self, service: &ServiceName, now_ms: u64) {
        let since = self
            .successor_times
            .remove(service)
            .map_or(now_ms, |(since, _)| since);
        self.created(service);
        self.started_at_ms.insert(service.clone(), since);
    }

    /// The agent is about to start the service's container; returns the restart count if
    /// this is a restart.
    pub fn starting(&mut self, service: &ServiceName, was_exited: bool) -> Option<u32> {
        self.stopped_on_purpose.remove(service);
        self.exited_at_ms.remove(service);
        self.exit_detail.remove(service);
        // The start itself may come much later (a stop's grace period first): its time is
        // taken when the job ends (`started`), not now.
        self.started_at_ms.remove(service);
        if !was_exited {
            return None;
        }
        *self.restarts.entry(service.clone()).or_insert(0) += 1;
        let total = self.total_restarts.entry(service.clone()).or_insert(0);
        *total += 1;
        Some(*total)
    }

    /// The agent's job that started the service's container ended now: its uptime (for
    /// the minimum-uptime gate and restart backoffs) counts from here.
    pub fn started(&mut self, service: &ServiceName, now_ms: u64) {
        self.started_at_ms.insert(service.clone(), now_ms);
    }

    /// The agent restarts a running container (unhealthy, or on command); returns the
    /// restart count.
    pub fn restarting(&mut self, service: &ServiceName) -> u32 {
        self.stopping(service);
        self.starting(service, true).unwrap_or(0)
    }

    /// The agent stops the container on purpose (not an exit to restart from).
    pub fn stopping(&mut self, service: &ServiceName) {
        self.stopped_on_purpose.insert(service.clone());
        self.started_at_ms.remove(service);
    }

    /// A fresh container: its backoff starts over.
    pub fn created(&mut self, service: &ServiceName) {
        self.exit_detail.remove(service);
        self.restarts.remove(service);
        self.exited_at_ms.remove(service);
        self.stopped_on_purpose.remove(service);
        self.started_at_ms.remove(service);
    }
}

/// A successor or retired container: no restarts, health or exit memory of its own.
fn untracked(c: &EngineContainer, phase: Phase) -> ObservedContainer {
    ObservedContainer {
        fingerprint: c.fingerprint,
        phase,
        health: Health::None,
        restarts: 0,
        last_failed_check: None,
        exit_detail: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::Fingerprint;

    fn container(status: EngineStatus) -> EngineContainer {
        EngineContainer {
            service: "db".parse().unwrap(),
            role: Role::Current,
            fingerprint: Fingerprint([1; 32]),
            image: Digest::from_bytes([2; 32]),
            status,
            conditions: Vec::new(),
        }
    }

    #[test]
    fn an_exit_is_reported_once_and_keeps_its_time() {
        let mut tracker = Tracker::default();
        let stopped = [container(EngineStatus::Stopped {
            exit_code: Some(3),
            oom_killed: false,
        })];
        let (obs, exits) = tracker.observe(&stopped, BTreeSet::new(), 100);
        assert_eq!(exits.len(), 1);
        let db = "db".parse().unwrap();
        assert_eq!(
            obs.containers[&db].phase,
            Phase::Exited {
                code: 3,
                at_ms: 100,
                oom: false
            }
        );
        let (obs, exits) = tracker.observe(&stopped, BTreeSet::new(), 900);
        assert!(exits.is_empty());
        assert!(matches!(
            obs.containers[&db].phase,
            Phase::Exited { at_ms: 100, .. }
        ));
        assert_eq!(tracker.starting(&db, true), Some(1));
        let (obs, _) = tracker.observe(&stopped, BTreeSet::new(), 1_100);
        assert_eq!(obs.containers[&db].restarts, 1);
    }

    #[test]
    fn uptime_counts_from_the_end_of_the_starting_job_not_from_its_planning() {
        let mut tracker = Tracker::default();
        let db = "db".parse().unwrap();
        let running = [container(EngineStatus::Running)];
        // A replacement is planned at 1 s; the old container takes its grace period to stop
        // and is still seen running meanwhile.
        tracker.observe(&running, BTreeSet::new(), 0);
        tracker.stopping(&db);
        tracker.starting(&db, false);
        tracker.observe(&running, BTreeSet::new(), 5_000);
        tracker.started(&db, 11_000);
        let (obs, _) = tracker.observe(&running, BTreeSet::new(), 12_000);
        assert_eq!(
            obs.containers[&db].phase,
            Phase::Running { since_ms: 11_000 }
        );
    }

    #[test]
    fn a_stop_on_purpose_is_stopped_not_exited() {
        let mut tracker = Tracker::default();
        let db = "db".parse().unwrap();
        tracker.stopping(&db);
        let stopped = [container(EngineStatus::Stopped {
            exit_code: Some(143),
            oom_killed: false,
        })];
        let (obs, exits) = tracker.observe(&stopped, BTreeSet::new(), 0);
        assert!(exits.is_empty());
        assert_eq!(obs.containers[&db].phase, Phase::Stopped);
    }
}
