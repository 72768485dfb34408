//! Container health checks in the loop: on each tick, a probe is spawned for every running
//! container whose check is due (never more than one per container); results come back as
//! messages, so a slow probe never blocks the loop. Verdicts feed the planner (restarts,
//! `service_healthy` waits, the health gate) and are reported as `HealthChanged` events.

use std::time::Duration;

use coracle_proto::{EventKind, Health, HealthProbe, ServiceName};

use super::{blocking, Supervisor};
use crate::health::{probe, CheckState};
use crate::reconcile::{fingerprint, Phase};

/// A finished probe: which service, which check run (a restarted container starts a new
/// one, so late results of the old one are ignored), and whether it passed.
pub type ProbeResult = (ServiceName, u64, bool);

impl Supervisor {
    /// Starts due probes and copies the current verdicts into the observation.
    pub(super) fn run_probes(&mut self) {
        let now = self.now_ms();
        let Some(target) = self
            .state
            .pending
            .as_ref()
            .or(self.state.committed.as_ref())
        else {
            self.checks.clear();
            return;
        };
        let mut live = Vec::new();
        for spec in &target.services {
            let Some(check) = &spec.health else { continue };
            let Some(container) = self.observed.containers.get_mut(&spec.name) else {
                continue;
            };
            let running = matches!(container.phase, Phase::Running { .. })
                && container.fingerprint == fingerprint(spec);
            if !running {
                continue;
            }
            live.push(spec.name.clone());
            let epoch = &mut self.check_epoch;
            let (run, state) = self.checks.entry(spec.name.clone()).or_insert_with(|| {
                *epoch += 1;
                (*epoch, CheckState::new(now))
            });
            let run = *run;
            container.health = state.health;
            if !state.due(check, now) {
                continue;
            }
            state.probing(now);
            let timeout = Duration::from_millis(u64::from(check.timeout_ms));
            let tx = self.probe_tx.clone();
            let service = spec.name.clone();
            let engine = self.engine.clone();
            let kind = check.probe.clone();
            tokio::spawn(async move {
                let ok = match kind {
                    HealthProbe::Tcp { port } => probe::tcp(port, timeout).await,
                    HealthProbe::Http { port, path } => probe::http(port, &path, timeout).await,
                    HealthProbe::Exec(argv) => {
                        let name = service.clone();
                        let run = blocking(move || engine.exec(&name, &argv, timeout));
                        matches!(tokio::time::timeout(timeout, run).await, Ok(Ok(0)))
                    }
                };
                // The supervisor may be gone at shutdown; the verdict is moot then.
                let _ = tx.send((service, run, ok));
            });
        }
        // A stopped or replaced container starts its checks over.
        self.checks.retain(|name, _| live.contains(name));
    }

    /// Records a probe verdict.
    pub(super) fn on_probe(&mut self, (service, run, ok): ProbeResult) {
        let now = self.now_ms();
        let target = self
            .state
            .pending
            .as_ref()
            .or(self.state.committed.as_ref());
        let Some(check) = target
            .and_then(|t| t.services.iter().find(|s| s.name == service))
            .and_then(|s| s.health.as_ref())
        else {
            return;
        };
        let Some(state) = self
            .checks
            .get_mut(&service)
            .and_then(|(current, state)| (*current == run).then_some(state))
        else {
            return; // a late result for a container that has since restarted
        };
        if let Some(health) = state.record(check, ok, now) {
            if let Some(c) = self.observed.containers.get_mut(&service) {
                c.health = health;
            }
            if health != Health::Starting {
                tracing::info!(%service, ?health, "health changed");
                self.event(EventKind::HealthChanged { service, health });
            }
        }
    }
}
