//! Applying one planned action: engine calls on blocking threads, state moves for the
//! gate, events for what the controller should hear about. Container verbs are checked
//! against the lifecycle table first, so a bad plan is refused, not executed.

use std::time::Duration;

use coracle_proto::{EventKind, Health, ServiceName};

use super::probes::created_from;
use super::progress::{pull_subject, ProgressSink};
use super::{blocking, EngineError, StopRule, Supervisor};
use crate::reconcile::{
    fingerprint, transition, Action, ObservedContainer, Phase, PhaseKind, Verb,
};

/// What the runtime's start error says before the init's own words (see `shim`).
const SETUP_FAILED: &str = "container setup failed: ";

impl Supervisor {
    fn check_move(&self, service: &ServiceName, verb: Verb) -> Result<PhaseKind, EngineError> {
        let from = PhaseKind::from(self.observed.containers.get(service).map(|c| &c.phase));
        transition(from, verb).map_err(|err| EngineError {
            step: "check lifecycle move of",
            object: service.to_string(),
            reason: err.to_string(),
        })?;
        Ok(from)
    }

    /// Keeps the observation in step with a move just made, so the next action of the same
    /// plan is checked against the container as it now is.
    fn note_phase(&mut self, service: &ServiceName, phase: Phase) {
        if let Some(c) = self.observed.containers.get_mut(service) {
            c.phase = phase;
        }
    }

    /// How to stop `service`'s container: by the spec it was created from (its
    /// `stop_signal` and `stop_grace_period`), else SIGTERM and the configured grace.
    fn stop_rule(&self, service: &ServiceName) -> StopRule {
        let lifecycle = self
            .observed
            .containers
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
    fn note_start_failure(&mut self, service: &ServiceName, started: &Result<(), EngineError>) {
        if let Err(err) = started {
            let reason = err.reason.as_str();
            let reason = reason
                .split_once(SETUP_FAILED)
                .map_or(reason, |(_, why)| why);
            self.tracker
                .exit_detail
                .insert(service.clone(), reason.to_string());
        }
    }

    fn restarted(&self, service: ServiceName, restart_count: u32) {
        tracing::info!(%service, restart_count, "container restarted");
        self.event(EventKind::ContainerRestarted {
            service,
            restart_count,
        });
    }

    pub(super) async fn apply(&mut self, action: Action) -> Result<(), EngineError> {
        let engine = self.engine.clone();
        let now = self.now_ms();
        match action {
            Action::Pull { image } => {
                let digest = image.digest;
                tracing::info!(image = %digest, "pulling image");
                let device = self.device.clone();
                let access = self.registry_access(&image.registry);
                // The controller hears `Applying` before the pull, not after it.
                self.report_if_changed();
                let mut sink =
                    ProgressSink::new(self.transport.clone(), pull_subject(&self.state, &image));
                let pulled = blocking(move || {
                    engine.pull(
                        &image,
                        access.as_ref().map(|access| (&device, access)),
                        &mut |tick| sink.tick(tick),
                    )
                });
                if let Err(err) = pulled.await {
                    self.event(EventKind::PullFailed {
                        image: digest,
                        reason: err.to_string(),
                    });
                    return Err(err);
                }
            }
            Action::Create { spec } => {
                self.check_move(&spec.name, Verb::Create)?;
                self.tracker.created(&spec.name);
                // A new container starts with no health: the old one's must not pass its gate.
                self.checks.remove(&spec.name);
                let print = fingerprint(&spec);
                let name = spec.name.clone();
                blocking(move || engine.create(&spec, print)).await?;
                self.observed.containers.insert(
                    name,
                    ObservedContainer {
                        fingerprint: print,
                        phase: Phase::Created,
                        health: Health::None,
                        restarts: 0,
                        last_failed_check: None,
                        exit_detail: None,
                    },
                );
            }
            Action::Start { service } => {
                let from = self.check_move(&service, Verb::Start)?;
                let restart = self
                    .tracker
                    .starting(&service, from == PhaseKind::Exited, now);
                let name = service.clone();
                let started = blocking(move || engine.start(&name)).await;
                self.note_start_failure(&service, &started);
                started?;
                self.note_phase(&service, Phase::Running { since_ms: now });
                if let Some(restart_count) = restart {
                    self.restarted(service, restart_count);
                }
            }
            Action::Restart { service } => {
                self.check_move(&service, Verb::Restart)?;
                let restart_count = self.tracker.restarting(&service, now);
                self.checks.remove(&service);
                let rule = self.stop_rule(&service);
                let name = service.clone();
                let started = blocking(move || {
                    engine.stop(&name, rule)?;
                    engine.start(&name)
                })
                .await;
                self.note_start_failure(&service, &started);
                started?;
                self.note_phase(&service, Phase::Running { since_ms: now });
                self.restarted(service, restart_count);
            }
            Action::Stop { service } => {
                self.check_move(&service, Verb::Stop)?;
                self.tracker.stopping(&service);
                let rule = self.stop_rule(&service);
                let name = service.clone();
                blocking(move || engine.stop(&name, rule)).await?;
                self.note_phase(&service, Phase::Stopped);
            }
            Action::Remove { service } => {
                self.check_move(&service, Verb::Remove)?;
                let name = service.clone();
                blocking(move || engine.delete(&name)).await?;
                self.observed.containers.remove(&service);
            }
            Action::Gc { images } => {
                tracing::info!(count = images.len(), "removing unused images");
                blocking(move || engine.remove_images(&images)).await?;
            }
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
        }
        Ok(())
    }
}
