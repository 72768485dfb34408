//! The supervisor: the one loop (a single `select!`) that owns the agent state. It admits
//! desired states from the transport, reconciles on a tick and whenever a job ends (observe
//! → `plan` → gate moves at once, engine work as jobs on blocking threads, see `jobs`),
//! publishes the reported state when it changes and a health sample at the configured
//! interval, and answers commands — also while a pull or a stop takes minutes. A failed
//! job is reported and retried after a backoff; it never ends the loop.

mod apply;
mod commands;
mod jobs;
mod probes;
mod progress;
pub mod report;
mod retry;
mod sample;
mod self_update;
pub mod tracker;
mod update;

use std::sync::Arc;
use std::time::{Duration, Instant};

use coracle_proto::{DeviceId, Event, EventKind, ReportedState};
use tokio::sync::{mpsc, watch};
use tokio::time::MissedTickBehavior;

use crate::control::server::ControlRequest;
pub use crate::engine::{
    ContainerEngine, ContainerStats, EngineContainer, EngineError, EngineStatus, ExecOutcome,
    LogTail, PullTick, StopRule,
};
use crate::health::VitalsReader;
use crate::reconcile::{self, Observed};
use crate::state::{AgentState, StateStore};
use crate::transport::{Inbox, Link, TransportHandle};
pub use probes::run_check;
use tracker::Tracker;

/// Timing knobs (tests shorten them).
#[derive(Debug, Clone)]
pub struct SupervisorOptions {
    pub tick: Duration,
    pub health_interval: Duration,
    /// Grace before SIGKILL for a container whose spec sets no `stop_grace_period`.
    pub stop_grace: Duration,
    pub log_tail_max_bytes: u32,
    /// Free disk below this is reported as `Condition::DiskLow`.
    pub disk_reserve_mib: u32,
}

/// How much of an exited container's output its exit detail keeps (the rollback reason
/// clips it to 200 characters).
const EXIT_TAIL_LINES: u32 = 5;
const EXIT_TAIL_BYTES: u32 = 400;

/// The agent's main loop and the only writer of its state.
pub struct Supervisor {
    device: DeviceId,
    state: AgentState,
    store: StateStore,
    engine: Arc<dyn ContainerEngine>,
    transport: TransportHandle,
    vitals: VitalsReader,
    tracker: Tracker,
    retry: retry::Retry,
    jobs: jobs::Jobs,
    job_rx: Option<mpsc::UnboundedReceiver<jobs::JobDone>>,
    /// Health-check state per container (a service's current one and its successor),
    /// with the id of its check run.
    checks: std::collections::BTreeMap<
        (coracle_proto::ServiceName, reconcile::Role),
        (u64, crate::health::CheckState),
    >,
    check_epoch: u64,
    /// Last cumulative CPU reading per container and when it was taken (µs).
    last_cpu: std::collections::BTreeMap<coracle_proto::ServiceName, (u64, u64)>,
    /// Runtime conditions from the last observation, and free disk from the last sample.
    runtime_conditions: Vec<coracle_proto::Condition>,
    layers: Vec<coracle_proto::Digest>,
    disk_free_mib: u32,
    probe_tx: mpsc::UnboundedSender<probes::ProbeResult>,
    probe_rx: Option<mpsc::UnboundedReceiver<probes::ProbeResult>>,
    observed: Observed,
    /// The newest genuine desired state refused as invalid, reported failed.
    refused: Option<crate::transport::admit::Refused>,
    last_reported: Option<ReportedState>,
    options: SupervisorOptions,
    started: Instant,
    /// Over-the-air agent updates; `None`: not followed (tests, examples).
    self_update: Option<self_update::SelfUpdate>,
    self_update_rx: Option<mpsc::UnboundedReceiver<self_update::FetchDone>>,
}

/// Why the supervisor loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SupervisorExit {
    /// Asked to stop (signal, shutdown flag, transport gone).
    Stopped,
    /// An agent build is staged: the daemon must execute itself again to try it.
    RestartForUpdate,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("device", &self.device)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// Seconds since the Unix epoch by the device clock.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Supervisor {
    /// A supervisor starting from the persisted `state`.
    pub fn new(
        device: DeviceId,
        state: AgentState,
        store: StateStore,
        engine: Arc<dyn ContainerEngine>,
        transport: TransportHandle,
        vitals: VitalsReader,
        options: SupervisorOptions,
    ) -> Self {
        transport.set_replay_floor(state.replay_floor());
        let (probe_tx, probe_rx) = mpsc::unbounded_channel();
        let (jobs, job_rx) = jobs::Jobs::new();
        Self {
            device,
            state,
            store,
            engine,
            transport,
            vitals,
            tracker: Tracker::default(),
            retry: retry::Retry::default(),
            jobs,
            job_rx: Some(job_rx),
            checks: Default::default(),
            check_epoch: 0,
            last_cpu: Default::default(),
            runtime_conditions: Vec::new(),
            layers: Vec::new(),
            disk_free_mib: u32::MAX,
            probe_tx,
            probe_rx: Some(probe_rx),
            observed: Observed::default(),
            refused: None,
            last_reported: None,
            options,
            started: Instant::now(),
            self_update: None,
            self_update_rx: None,
        }
    }

    /// Follows over-the-air agent updates with the slot files under `files`.
    pub fn with_self_update(mut self, files: crate::ota::slots::SlotFiles) -> Self {
        let (update, rx) = self_update::SelfUpdate::new(files);
        self.self_update = Some(update);
        self.self_update_rx = Some(rx);
        self
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The current persisted state (for tests and the control socket).
    pub fn state(&self) -> &AgentState {
        &self.state
    }

    /// Runs until `shutdown` turns true (or its sender is dropped). `control` carries the
    /// local socket's requests (see `control::server`).
    pub async fn run(
        mut self,
        mut inbox: Inbox,
        mut control: mpsc::Receiver<ControlRequest>,
        mut shutdown: watch::Receiver<bool>,
    ) -> SupervisorExit {
        let mut tick = tokio::time::interval(self.options.tick);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut probe_results = self
            .probe_rx
            .take()
            .unwrap_or_else(|| mpsc::unbounded_channel().1);
        let mut job_done = self
            .job_rx
            .take()
            .unwrap_or_else(|| mpsc::unbounded_channel().1);
        let mut health = tokio::time::interval(self.options.health_interval);
        health.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut fetched = self
            .self_update_rx
            .take()
            .unwrap_or_else(|| mpsc::unbounded_channel().1);
        let mut exit = SupervisorExit::Stopped;
        loop {
            tokio::select! {
                changed = inbox.desired.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let desired = inbox.desired.borrow_and_update().clone();
                    if let Some(desired) = desired {
                        self.on_desired(desired);
                        self.reconcile().await;
                    }
                }
                changed = inbox.refused.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let refused = inbox.refused.borrow_and_update().clone();
                    if let Some(refused) = refused {
                        self.on_refused(refused);
                        self.report_if_changed();
                    }
                }
                changed = inbox.agent_update.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let update = inbox.agent_update.borrow_and_update().clone();
                    if let Some(update) = update {
                        self.on_agent_update(update);
                    }
                }
                Some(done) = fetched.recv() => self.on_agent_fetched(done),
                Some(request) = inbox.commands.recv() => self.on_command(request).await,
                Some(result) = probe_results.recv() => self.on_probe(result),
                Some(done) = job_done.recv() => {
                    self.on_job_done(done);
                    self.reconcile().await;
                }
                Some((request, reply)) = control.recv() => {
                    let connected = matches!(*inbox.link.borrow(), Link::Up { .. });
                    self.on_local(request, connected, reply).await;
                }
                _ = tick.tick() => {
                    self.consider_agent_update();
                    self.reconcile().await;
                }
                _ = health.tick() => self.publish_health().await,
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
            }
            if self.self_update.as_ref().is_some_and(|u| u.restart) {
                exit = SupervisorExit::RestartForUpdate;
                break;
            }
        }
        tracing::info!(device = %self.device, ?exit, "supervisor stopped");
        exit
    }

    fn save(&mut self) {
        if let Err(err) = self.store.save(&self.state) {
            tracing::error!(error = %error_chain(&err), "agent state not saved");
        }
        self.transport.set_replay_floor(self.state.replay_floor());
    }

    fn event(&self, kind: EventKind) {
        self.transport.publish_event(Event {
            at_unix_s: unix_now(),
            kind,
        });
    }

    /// Observe, plan, apply; report if anything changed. Gate moves are applied at once;
    /// the rest start as jobs, whose ends call this again.
    async fn reconcile(&mut self) {
        if let Err(err) = self.observe().await {
            tracing::warn!(error = %err, "observation failed; retrying next tick");
            return;
        }
        self.observed.busy = self.jobs.busy();
        let actions = reconcile::plan(&self.state, &self.observed, self.now_ms());
        for (subject, group) in jobs::by_subject(actions) {
            let key = subject.to_string();
            let now = self.now_ms();
            if !self.retry.due(&key, now) || self.jobs.is_busy(&subject) {
                continue;
            }
            if subject == jobs::Subject::Update {
                group
                    .into_iter()
                    .for_each(|action| self.apply_update(action));
                continue;
            }
            if let Err(err) = self.spawn_job(subject, group, None) {
                let failures = self.retry.failed(key, now, err.to_string());
                tracing::warn!(error = %err, failures, "action refused; retrying after backoff");
            }
        }
        self.report_if_changed();
    }

    async fn observe(&mut self) -> Result<(), EngineError> {
        let engine = self.engine.clone();
        let (containers, images, mut layers) =
            blocking(move || Ok((engine.list()?, engine.images()?, engine.layers()?))).await?;
        layers.sort();
        layers.dedup();
        self.layers = layers;
        self.runtime_conditions = containers
            .iter()
            .flat_map(|c| c.conditions.iter().cloned())
            .collect();
        let mut images = images;
        // Agent releases in use stay in the store: the bases of the next one's delta.
        for image in self.self_update.iter().flat_map(|u| u.kept_images()) {
            images.remove(&image);
        }
        let (observed, exits) = self.tracker.observe(&containers, images, self.now_ms());
        self.observed = observed;
        self.run_probes();
        for exit in exits {
            self.note_exit_output(&exit.service).await;
            tracing::info!(service = %exit.service, code = exit.exit_code, oom = exit.oom_killed, "container exited");
            self.event(EventKind::ContainerExited {
                service: exit.service,
                exit_code: exit.exit_code,
                oom_killed: exit.oom_killed,
            });
        }
        Ok(())
    }

    /// Keeps the tail of an exited container's output for the gate's rollback reason,
    /// unless its start failure already says why it ended.
    async fn note_exit_output(&mut self, service: &coracle_proto::ServiceName) {
        if self.tracker.exit_detail.contains_key(service) {
            return;
        }
        let engine = self.engine.clone();
        let name = service.clone();
        let tail = blocking(move || engine.logs_tail(&name, EXIT_TAIL_LINES, EXIT_TAIL_BYTES));
        if let Ok(tail) = tail.await {
            let lines: Vec<&str> = tail.lines.iter().map(|l| l.trim_end()).collect();
            if !lines.is_empty() {
                let said = format!("last output: {}", lines.join(" | "));
                self.tracker.exit_detail.insert(service.clone(), said);
            }
        }
        if let Some(c) = self.observed.containers.get_mut(service) {
            c.exit_detail = self.tracker.exit_detail.get(service).cloned();
        }
    }

    /// The `RegistryAccess` for a direct registry `host`, from the pending state (being
    /// applied) or else the committed one. `None` for the controller's registry (empty host).
    fn registry_access(&self, host: &str) -> Option<coracle_proto::RegistryAccess> {
        if host.is_empty() {
            return None;
        }
        [&self.state.pending, &self.state.committed]
            .into_iter()
            .flatten()
            .flat_map(|desired| &desired.registries)
            .find(|access| access.host == host)
            .cloned()
    }

    /// The reported state as of now.
    pub(super) fn current_report(&self) -> ReportedState {
        let mut conditions = report::conditions(
            self.runtime_conditions.iter().cloned(),
            self.disk_free_mib,
            self.options.disk_reserve_mib,
        );
        conditions.extend(self.self_update.as_ref().and_then(|u| u.condition()));
        let mut reported = report::reported(
            &self.device,
            &self.state,
            &self.observed,
            &self.tracker,
            &conditions,
        );
        reported.layers = self.layers.clone();
        reported.sealing_key = self.engine.sealing_key();
        let (deployment_key_epoch, deployment_key) = self.transport.trusted_key();
        reported.credentials = coracle_proto::HeldCredentials {
            deployment_key_epoch,
            deployment_key: Some(deployment_key),
            pull_token_epoch: self.engine.pull_token().map_or(0, |t| t.epoch()),
        };
        if let Some(failed) = self.failed_update() {
            reported.update = failed;
        }
        reported
    }

    fn report_if_changed(&mut self) {
        let reported = self.current_report();
        if self.last_reported.as_ref() != Some(&reported) {
            self.transport.publish_reported(&reported);
            self.last_reported = Some(reported);
        }
    }
}

/// Runs engine work on a blocking thread; a panicked task becomes an error.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, EngineError> + Send + 'static,
) -> Result<T, EngineError> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|join| {
            Err(EngineError {
                step: "run engine task",
                object: String::new(),
                reason: join.to_string(),
            })
        })
}

pub(crate) use crate::runtime::error_chain;
