//! Container health checks in the loop: on each tick, a probe is spawned for every running
//! container whose check is due (never more than one per container); results come back as
//! messages, so a slow probe never blocks the loop. Verdicts feed the planner (restarts,
//! `service_healthy` waits, the health gate) and are reported as `HealthChanged` events.

use std::sync::Arc;
use std::time::Duration;

use coracle_proto::{EventKind, Health, HealthProbe, ServiceName, ServiceSpec};

use super::{blocking, ContainerEngine, Supervisor};
use crate::health::{probe, CheckState};
use crate::reconcile::{fingerprint, Fingerprint, Phase, Role};
use crate::state::AgentState;

/// A finished probe: which container, which check run (a restarted container starts a
/// new one, so late results of the old one are ignored), whether it passed, and what it
/// said (an exec check's exit code and output tail, like Docker's health log; else empty).
pub type ProbeResult = (ServiceName, Role, u64, bool, String);

/// Beyond the check's timeout, how long the supervisor waits for an exec probe's engine
/// call: the runtime kills the command at the timeout itself; this only bounds a stuck call.
const EXEC_MARGIN: Duration = Duration::from_secs(10);

impl Supervisor {
    /// Starts due probes and copies the current verdicts into the observation. Every
    /// running container is checked by the spec it was created from, so the committed
    /// generation's containers keep their checks while a new generation downloads, and a
    /// `start-first` successor is checked beside the container it will replace. A service
    /// with a job in flight is not probed. A check state goes with its container: a
    /// create or restart drops it at once (the old container's verdict must never become
    /// the new one's, which would let a broken version pass its gate); a promotion hands
    /// the successor's to the service.
    pub(super) fn run_probes(&mut self) {
        let now = self.now_ms();
        let busy = self.jobs.busy().services;
        let mut live = Vec::new();
        for role in [Role::Current, Role::Next] {
            let containers = self.observed.of_mut(role);
            for (name, container) in containers.iter_mut() {
                if !matches!(container.phase, Phase::Running { .. }) {
                    continue;
                }
                let key = (name.clone(), role);
                if busy.contains(name) {
                    live.push(key);
                    continue;
                }
                let spec = created_from(&self.state, name, container.fingerprint);
                let Some(check) = spec.and_then(|s| s.health.as_ref()) else {
                    continue;
                };
                let start_interval = spec.and_then(|s| s.health_start_interval_ms());
                live.push(key.clone());
                let epoch = &mut self.check_epoch;
                let (run, state) = self.checks.entry(key).or_insert_with(|| {
                    *epoch += 1;
                    (*epoch, CheckState::new(now))
                });
                let run = *run;
                container.health = state.health;
                container.last_failed_check.clone_from(&state.last_failure);
                if !state.due(check, start_interval, now) {
                    continue;
                }
                state.probing(now);
                let timeout = Duration::from_millis(u64::from(check.timeout_ms));
                let tx = self.probe_tx.clone();
                let service = name.clone();
                let engine = self.engine.clone();
                let kind = check.probe.clone();
                tokio::spawn(async move {
                    let target = (service.clone(), role);
                    let (ok, detail) = run_check(engine, target, kind, timeout).await;
                    // The supervisor may be gone at shutdown; the verdict is moot then.
                    let _ = tx.send((service, role, run, ok, detail));
                });
            }
        }
        // A stopped or replaced container starts its checks over.
        self.checks.retain(|key, _| live.contains(key));
    }

    /// Records a probe verdict.
    pub(super) fn on_probe(&mut self, (service, role, run, ok, detail): ProbeResult) {
        let now = self.now_ms();
        let containers = self.observed.of_mut(role);
        let Some(check) = containers
            .get(&service)
            .and_then(|c| created_from(&self.state, &service, c.fingerprint))
            .and_then(|s| s.health.clone())
        else {
            return;
        };
        let Some(state) = self
            .checks
            .get_mut(&(service.clone(), role))
            .and_then(|(current, state)| (*current == run).then_some(state))
        else {
            return; // a late result for a container that has since restarted
        };
        if !ok {
            tracing::debug!(%service, ?role, check = %detail, "health check failed");
        }
        state.last_failure = (!ok).then(|| detail.clone());
        let changed = state.record(&check, ok, now);
        if let Some(c) = containers.get_mut(&service) {
            c.health = state.health;
            c.last_failed_check.clone_from(&state.last_failure);
        }
        // A successor's verdicts are the update's business; the service's health is its
        // serving container's.
        if let (Some(health), Role::Current) = (changed, role) {
            if health != Health::Starting {
                tracing::info!(%service, ?health, last_check = %detail, "health changed");
                self.event(EventKind::HealthChanged { service, health });
            }
        }
    }
}

/// The spec the container `name` with `print` was created from: the pending generation's or
/// the committed one's.
pub(super) fn created_from<'a>(
    state: &'a AgentState,
    name: &ServiceName,
    print: Fingerprint,
) -> Option<&'a ServiceSpec> {
    [&state.pending, &state.committed]
        .into_iter()
        .flatten()
        .flat_map(|d| d.services.iter())
        .find(|s| &s.name == name && fingerprint(s) == print)
}

/// Runs one probe of `service`'s check: whether it passed, and what it said (an exec
/// check's exit code and output tail; for a network probe, what failed).
pub async fn run_check(
    engine: Arc<dyn ContainerEngine>,
    (service, role): (ServiceName, Role),
    kind: HealthProbe,
    timeout: Duration,
) -> (bool, String) {
    let address = || engine.probe_address(&service, role);
    match kind {
        HealthProbe::Tcp { port } => network_verdict(
            format!("TCP connect to port {port}"),
            probe::tcp(address(), port, timeout).await,
        ),
        HealthProbe::Http { port, path } => {
            let what = format!("HTTP GET {path} on port {port}");
            network_verdict(what, probe::http(address(), port, &path, timeout).await)
        }
        HealthProbe::Exec(argv) => {
            let run = blocking(move || engine.exec(&service, role, &argv, timeout));
            exec_verdict(tokio::time::timeout(timeout + EXEC_MARGIN, run).await)
        }
    }
}

/// Whether a network probe passed, and what its failure says (`HTTP status 404`,
/// `connection refused`, `no answer within 2000 ms`).
fn network_verdict(what: String, result: Result<(), probe::ProbeFailure>) -> (bool, String) {
    match result {
        Ok(()) => (true, String::new()),
        Err(failure) => (false, format!("{what}: {failure}")),
    }
}

/// Docker's rule: exit 0 is healthy, anything else (a timeout, a failed exec) unhealthy.
/// The detail is what Docker's health log keeps: exit code and output tail.
fn exec_verdict(
    result: Result<Result<super::ExecOutcome, super::EngineError>, tokio::time::error::Elapsed>,
) -> (bool, String) {
    match result {
        Ok(Ok(outcome)) => {
            let ok = outcome.exit_code == 0 && !outcome.timed_out;
            let what = if outcome.timed_out {
                "timed out".to_string()
            } else {
                format!("exit {}", outcome.exit_code)
            };
            (ok, format!("{what}: {}", outcome.output.trim_end()))
        }
        Ok(Err(err)) => (false, err.to_string()),
        Err(_) => (false, "the exec did not return".to_string()),
    }
}
