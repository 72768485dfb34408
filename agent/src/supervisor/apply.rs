//! Applying a plan: the gate's state moves at once, everything else as jobs (see `jobs`).
//! A service's chain of container verbs is checked against the lifecycle table before its
//! job starts, so a bad plan is refused, not executed; the tracker's bookkeeping (stopped on
//! purpose, restart counts) is done when the job begins, events when it ends.

use std::time::Duration;

use coracle_proto::{EventKind, ServiceName};

use super::jobs::{run_steps, JobDone, Step, Subject};
use super::probes::created_from;
use super::progress::{pull_subject, ProgressSink};
use super::{blocking, EngineError, StopRule, Supervisor};
use crate::reconcile::{fingerprint, transition, Action, PhaseKind, Role};

/// What the runtime's start error says before the init's own words (see `shim`).
const SETUP_FAILED: &str = "container setup failed: ";

impl Supervisor {
    /// How to stop `service`'s container: by the spec it was created from (its
    /// `stop_signal` and `stop_grace_period`), else SIGTERM and the configured grace.
    fn stop_rule(&self, service: &ServiceName, role: Role) -> StopRule {
        let lifecycle = self
            .observed
            .of(role)
            .get(service)
            .and_then(|c| created_from(&self.state, service, c.fingerprint))
            .map(|spec| spec.lifecycle)
            .unwrap_or_default();
        StopRule {
            signal: lifecycle.stop_signal(),
            grace: lifecycle
                .stop_grace_ms
                .map_or(self.options.stop_grace, |ms| {
                    Duration::from_millis(u64::from(ms))
                }),
        }
    }

    /// Keeps why a start failed (the init's exec error travels back through the shim), for
    /// the gate's rollback reason: "exec format error" says more than the exit code 1 the
    /// failed container then shows.
    fn note_start_failure(&mut self, service: &ServiceName, err: &EngineError) {
        if let Some((_, why)) = err.reason.split_once(SETUP_FAILED) {
            self.tracker
                .exit_detail
                .insert(service.clone(), why.to_string());
        }
    }

    /// The phase each container verb of `actions` starts from, walking the chain from the
    /// observed phase through the lifecycle table; an error names the refused move.
    fn check_chain(&self, actions: &[Action]) -> Result<Vec<PhaseKind>, EngineError> {
        let mut phases = std::collections::BTreeMap::new();
        let mut froms = Vec::with_capacity(actions.len());
        for action in actions {
            let (Some(service), Some(verb)) = (action.service(), action.verb()) else {
                froms.push(PhaseKind::Absent);
                continue;
            };
            let role = action.role();
            let containers = self.observed.of(role);
            let key = (service.clone(), role);
            let from = *phases
                .entry(key.clone())
                .or_insert_with(|| PhaseKind::from(containers.get(service).map(|c| &c.phase)));
            let to = transition(from, verb).map_err(|err| EngineError {
                step: "check lifecycle move of",
                object: format!("{service} ({role:?})"),
                reason: err.to_string(),
            })?;
            phases.insert(key, to);
            froms.push(from);
        }
        Ok(froms)
    }

    /// Turns one action into its engine step, doing the bookkeeping that must precede it.
    fn prepare(&mut self, action: Action, from: PhaseKind, job: &mut JobDone) -> Option<Step> {
        Some(match action {
            Action::Pull { image } => {
                tracing::info!(image = %image.digest, "pulling image");
                job.pulled = Some(image.digest);
                let access = self.registry_access(&image.registry);
                // The controller hears `Applying` before the pull, not after it.
                self.report_if_changed();
                let sink = Box::new(ProgressSink::new(
                    self.transport.clone(),
                    pull_subject(&self.state, &image),
                ));
                Step::Pull {
                    image,
                    access,
                    sink,
                }
            }
            Action::Create { spec } => {
                self.tracker.created(&spec.name);
                // A new container starts with no health: the old one's must not pass its gate.
                self.checks.remove(&(spec.name.clone(), Role::Current));
                let fingerprint = fingerprint(&spec);
                Step::Create {
                    spec,
                    fingerprint,
                    role: Role::Current,
                }
            }
            Action::CreateNext { spec } => {
                self.tracker.created_next(&spec.name);
                self.checks.remove(&(spec.name.clone(), Role::Next));
                let fingerprint = fingerprint(&spec);
                Step::Create {
                    spec,
                    fingerprint,
                    role: Role::Next,
                }
            }
            Action::StartNext { service } => Step::Start(service, Role::Next),
            Action::StopNext { service } => {
                let rule = self.stop_rule(&service, Role::Next);
                Step::Stop(service, Role::Next, rule)
            }
            Action::RemoveNext { service } => Step::Remove(service, Role::Next),
            Action::StopRetired { service } => {
                let rule = self.stop_rule(&service, Role::Retired);
                Step::Stop(service, Role::Retired, rule)
            }
            Action::RemoveRetired { service } => Step::Remove(service, Role::Retired),
            Action::Promote { service } => {
                tracing::info!(%service, "successor takes over");
                // The successor's health verdict becomes the service's.
                if let Some(check) = self.checks.remove(&(service.clone(), Role::Next)) {
                    self.checks.insert((service.clone(), Role::Current), check);
                }
                job.promoted = Some(service.clone());
                Step::Promote(service)
            }
            Action::Start { service } => {
                let was_exited = from == PhaseKind::Exited;
                if let Some(count) = self.tracker.starting(&service, was_exited) {
                    job.restarts.push((service.clone(), count));
                }
                job.starting.push(service.clone());
                Step::Start(service, Role::Current)
            }
            Action::Restart { service } => {
                let count = self.tracker.restarting(&service);
                self.checks.remove(&(service.clone(), Role::Current));
                job.restarts.push((service.clone(), count));
                job.starting.push(service.clone());
                let rule = self.stop_rule(&service, Role::Current);
                Step::Restart(service, rule)
            }
            Action::Stop { service } => {
                self.tracker.stopping(&service);
                let rule = self.stop_rule(&service, Role::Current);
                Step::Stop(service, Role::Current, rule)
            }
            Action::Remove { service } => Step::Remove(service, Role::Current),
            Action::Gc { images } => {
                tracing::info!(count = images.len(), "removing unused images");
                Step::Gc(images)
            }
            Action::StartGate { .. } | Action::Commit { .. } | Action::RollBack { .. } => {
                self.apply_update(action);
                return None;
            }
        })
    }

    /// Starts the actions of one subject as a job. `reply_to` is a controller command to
    /// answer when it ends.
    pub(super) fn spawn_job(
        &mut self,
        subject: Subject,
        actions: Vec<Action>,
        reply_to: Option<u32>,
    ) -> Result<(), EngineError> {
        let froms = self.check_chain(&actions)?;
        let mut job = JobDone {
            subject: subject.clone(),
            result: Ok(()),
            restarts: Vec::new(),
            pulled: None,
            starting: Vec::new(),
            promoted: None,
            reply_to,
        };
        let steps: Vec<Step> = actions
            .into_iter()
            .zip(froms)
            .filter_map(|(action, from)| self.prepare(action, from, &mut job))
            .collect();
        let done_tx = self.jobs.begin(subject);
        let engine = self.engine.clone();
        let device = self.device.clone();
        tokio::spawn(async move {
            job.result = blocking(move || run_steps(engine.as_ref(), &device, steps)).await;
            // The loop is gone only when the agent stops; the job's end no longer matters.
            let _ = done_tx.send(job);
        });
        Ok(())
    }

    /// A job ended: its subject is free again; its events, backoff and reply follow.
    pub(super) fn on_job_done(&mut self, job: JobDone) {
        self.jobs.end(&job.subject);
        let key = job.subject.to_string();
        let outcome = match job.result {
            Ok(()) => {
                self.retry.succeeded(&key);
                let now = self.now_ms();
                for service in &job.starting {
                    self.tracker.started(service, now);
                }
                if let Some(service) = &job.promoted {
                    self.tracker.promoted(service, now);
                }
                for (service, restart_count) in job.restarts {
                    self.restarted(service, restart_count);
                }
                coracle_proto::CommandOutcome::Done
            }
            Err(err) => {
                for service in &job.starting {
                    self.note_start_failure(service, &err);
                }
                if let Some(image) = job.pulled {
                    self.event(EventKind::PullFailed {
                        image,
                        reason: err.to_string(),
                    });
                }
                let failures = self.retry.failed(key, self.now_ms(), err.to_string());
                tracing::warn!(error = %err, failures, "action failed; retrying after backoff");
                coracle_proto::CommandOutcome::Failed {
                    reason: err.to_string(),
                }
            }
        };
        if let Some(id) = job.reply_to {
            self.transport
                .reply(coracle_proto::CommandReply { id, outcome });
        }
    }

    fn restarted(&self, service: ServiceName, restart_count: u32) {
        tracing::info!(%service, restart_count, "container restarted");
        self.event(EventKind::ContainerRestarted {
            service,
            restart_count,
        });
    }

    /// The pending generation's gate moves: state only, applied at once.
    pub(super) fn apply_update(&mut self, action: Action) {
        let now = self.now_ms();
        match action {
            Action::StartGate { generation } => {
                tracing::info!(%generation, "health gate started");
                self.tracker.gate_started_ms = Some(now);
                self.observed.gate_started_ms = Some(now);
            }
            Action::Commit { generation } => {
                self.state.commit();
                self.tracker.gate_started_ms = None;
                self.save();
                tracing::info!(%generation, "generation committed");
                self.event(EventKind::Applied { generation });
            }
            Action::RollBack {
                generation,
                service,
                reason,
            } => {
                self.state.roll_back(reason.clone());
                self.tracker.gate_started_ms = None;
                self.save();
                tracing::warn!(%generation, %service, %reason, "generation rolled back");
                self.event(EventKind::RolledBack {
                    generation,
                    service,
                    reason,
                });
            }
            other => tracing::error!(action = ?other, "not a gate move; ignored"),
        }
    }
}
