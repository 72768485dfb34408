//! The rollout driver: one task that evaluates every active rollout on a short tick and when
//! ingest stores a device report, with the pure `observe` and `decide::decide`, and acts by
//! deploying through `Fleet`. All its state is in SQLite, so a restarted controller
//! continues where it stopped.
//!
//! Several controllers may share one database: each rollout is driven by the one holding its
//! lease (`store::RolloutLease`), renewed on every step; the others leave it alone until the
//! lease runs out, and every write is checked against the revision it was based on.
//!
//! Sending is intent first: a device's row is saved as `deploying` (or `rolled_back`) with
//! its previous app before the deploy, and its generation after. A row whose generation is
//! unset is sent again on the next step, unless the store shows a newer desired state than
//! the one it replaced (the deploy happened, the controller stopped before noting it).

use std::sync::Arc;
use std::time::Duration;

use coracle_proto::{DesiredState, DeviceId, Generation, Signed};
use ed25519_dalek::VerifyingKey;
use tokio::sync::{broadcast, Mutex, Notify};

use super::decide::{
    decide, parse_waves, wave_ends, Decision, DeviceHealth, Phase, RolloutPlan, RolloutView,
};
use super::observe::{observe_target, Observation, Target, Windows};
use super::takeover::Claim;
use super::{RolloutError, Threshold};
use crate::fleet::Fleet;
use crate::fleet_events::{FleetEvent, FleetEvents, RolloutChange};
use crate::store::{now_unix, DeviceProgress, DeviceStatus, RolloutPhase, RolloutRecord};
use crate::upstream::Mirror;

/// How often every active rollout is evaluated even without device reports.
const TICK: Duration = Duration::from_secs(1);
/// Reports arriving this close together are handled in one evaluation.
const SETTLE: Duration = Duration::from_millis(100);
/// How long a rollout's lease lasts without renewal: how soon another controller takes a
/// rollout over from one that died (renewed every `TICK` while its driver runs).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);

/// This controller's name on the rollouts it drives, and how long its leases last.
#[derive(Debug, Clone)]
pub struct LeaseHolder {
    pub name: Arc<str>,
    pub ttl: Duration,
}

impl LeaseHolder {
    /// A name no other controller process has: host, process id and a random suffix.
    pub fn unique(ttl: Duration) -> Self {
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "controller".into());
        let suffix = rand_core::RngCore::next_u32(&mut rand_core::OsRng);
        Self {
            name: format!("{host}:{}:{suffix:08x}", std::process::id()).into(),
            ttl,
        }
    }

    /// The MQTT client id of this controller among several on one broker (`coracle-
    /// controller.` and the lease name, spelled with letters, digits and dashes).
    pub fn client_id(&self) -> String {
        let name: String = self
            .name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        format!("{}.{name}", crate::broker::acl::CONTROLLER_USER)
    }
}

/// The handle the API and the driver task share. Rollout work is serialized by one lock, so
/// an operator command never interleaves with a step of the driver.
#[derive(Debug, Clone)]
pub struct Rollouts {
    pub(super) fleet: Fleet,
    /// Seals each device's access to direct registries when its generation is sent.
    pub(super) mirror: Mirror,
    /// Agent releases, for agent rollouts (`None`: agent rollouts are refused).
    pub(super) releases: Option<crate::agent_release::AgentReleases>,
    events: FleetEvents,
    wake: Arc<Notify>,
    pub(super) lock: Arc<Mutex<()>>,
    /// Evaluations of every active rollout since start (`/metrics`): a test that something
    /// did not happen waits for passes, not for time.
    passes: Arc<std::sync::atomic::AtomicU64>,
    pub(super) lease: LeaseHolder,
    held: super::takeover::HeldLeases,
    pub(super) nudged: super::takeover::Nudged,
}

impl Rollouts {
    pub fn new(fleet: Fleet, mirror: Mirror, events: FleetEvents) -> Self {
        Self {
            fleet,
            mirror,
            releases: None,
            events,
            wake: Arc::new(Notify::new()),
            lock: Arc::new(Mutex::new(())),
            passes: Arc::default(),
            lease: LeaseHolder::unique(DEFAULT_LEASE),
            held: Default::default(),
            nudged: Default::default(),
        }
    }

    /// Drives rollouts under `lease` (the serve config's lease time).
    pub fn with_lease(mut self, lease: LeaseHolder) -> Self {
        self.lease = lease;
        self
    }

    /// Takes or renews this controller's lease on rollout `id`: `false` when another
    /// controller drives it.
    pub(super) fn claim(&self, id: i64) -> Result<bool, RolloutError> {
        Ok(self.claim_noting(id)? != Claim::Lost)
    }

    /// [`Self::claim`], telling a renewal from a lease this controller did not hold.
    fn claim_noting(&self, id: i64) -> Result<Claim, RolloutError> {
        let claimed = self
            .fleet
            .store
            .claim_rollout(id, &self.lease.name, self.lease.ttl)?;
        let claim = self.held.note(id, claimed);
        if claim == Claim::Lost {
            tracing::debug!(rollout = id, "another controller drives this rollout");
        }
        Ok(claim)
    }

    /// Gives up this controller's leases (at shutdown), so another controller takes its
    /// rollouts over at once.
    pub fn release_leases(&self) {
        match self.fleet.store.release_rollouts(&self.lease.name) {
            Ok(0) => {}
            Ok(released) => tracing::info!(released, "rollout leases released"),
            Err(err) => {
                tracing::warn!(error = %crate::api::error::error_chain(&err), "cannot release the rollout leases; other controllers take the rollouts over when they expire")
            }
        }
    }

    /// How many times the driver has evaluated every active rollout.
    pub fn passes(&self) -> u64 {
        self.passes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Agent rollouts send releases from `releases`.
    pub fn with_agent_releases(mut self, releases: crate::agent_release::AgentReleases) -> Self {
        self.releases = Some(releases);
        self
    }

    /// Asks the driver task to evaluate now.
    pub(super) fn wake(&self) {
        self.wake.notify_one();
    }

    /// Logs a transition and puts it on the fleet event stream.
    pub(super) fn announce(&self, rollout: i64, change: RolloutChange) {
        match &change {
            RolloutChange::Phase { phase, reason } => {
                tracing::info!(
                    rollout,
                    phase = phase.as_str(),
                    reason = reason.as_deref().unwrap_or(""),
                    "rollout phase changed"
                )
            }
            RolloutChange::Wave { wave, devices } => {
                tracing::info!(
                    rollout,
                    wave,
                    devices = devices.len(),
                    "rollout wave started"
                )
            }
            RolloutChange::Device {
                device,
                status,
                generation,
                reason,
            } => tracing::info!(
                rollout,
                device = %device,
                status = status.as_str(),
                generation = generation.unwrap_or(0),
                reason = reason.as_deref().unwrap_or(""),
                "rollout device progress"
            ),
        }
        self.events.send(FleetEvent::Rollout { rollout, change });
    }

    pub(super) fn announce_device(&self, rollout: i64, device: &DeviceProgress) {
        let generation = match device.status {
            DeviceStatus::RolledBack => device.rollback_generation,
            _ => device.generation,
        };
        self.announce(
            rollout,
            RolloutChange::Device {
                device: device.device.clone(),
                status: device.status,
                generation,
                reason: device.reason.clone(),
            },
        );
    }

    /// The driver task: runs until the event channel closes.
    pub async fn run(self, mut reports: broadcast::Receiver<FleetEvent>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.wake.notified() => {}
                received = reports.recv() => match received {
                    Ok(FleetEvent::Reported { .. } | FleetEvent::Presence { .. } | FleetEvent::Event { .. })
                    | Err(broadcast::error::RecvError::Lagged(_)) => settle(&mut reports).await,
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
            self.step_all().await;
            self.passes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Evaluates every rollout that may have something to do.
    pub async fn step_all(&self) {
        let ids = match self.fleet.store.rollouts_to_drive() {
            Ok(ids) => ids,
            Err(err) => {
                tracing::warn!(error = %crate::api::error::error_chain(&err), "listing active rollouts failed");
                return;
            }
        };
        for id in ids {
            match self.step(id).await {
                Ok(()) => {}
                // Another controller wrote it since this step read it: the next step reads
                // what it wrote.
                Err(
                    RolloutError::Store(crate::store::StoreError::RolloutChanged { .. })
                    | RolloutError::LeaseLost { .. },
                ) => {
                    tracing::debug!(
                        rollout = id,
                        "rollout changed under this step; evaluating it again"
                    );
                }
                Err(err) => {
                    tracing::warn!(rollout = id, error = %crate::api::error::error_chain(&err), "rollout step failed; retrying on the next tick");
                }
            }
        }
    }

    /// One evaluation of one rollout: finish interrupted sends, observe, decide, act.
    pub(super) async fn step(&self, id: i64) -> Result<(), RolloutError> {
        let _serialized = self.lock.lock().await;
        let claim = self.claim_noting(id)?;
        if claim == Claim::Lost {
            return Ok(());
        }
        let Some(mut rollout) = self.fleet.store.rollout(id)? else {
            return Ok(());
        };
        if claim == Claim::Taken {
            self.republish_in_flight(&rollout).await?;
        }
        self.send_pending(&mut rollout).await?;
        if !rollout.phase.is_active() {
            return Ok(());
        }
        // One clock reading for observing and deciding: a second passing between them let a
        // rollout complete on windows its device rows did not show as over yet.
        let now = now_unix();
        self.observe_devices(&mut rollout, now)?;
        self.nudge_stalled(&rollout, now).await?;
        if rollout.phase != RolloutPhase::Running {
            return Ok(());
        }
        let plan = plan_of(&rollout)?;
        // `decide`'s `Running { wave }` means waves up to `wave` were started; a new
        // rollout has started none, so its first wave is started here.
        let first_end = wave_ends(&plan.waves, rollout.devices.len())
            .first()
            .copied()
            .unwrap_or(0);
        if rollout.wave == 0
            && rollout.devices[..first_end]
                .iter()
                .all(|d| d.status == DeviceStatus::NotStarted)
        {
            return self.start_wave(&mut rollout, 0, 0, first_end).await;
        }
        let health: Vec<DeviceHealth> = rollout.devices.iter().map(health_of).collect();
        let phase = Phase::Running { wave: rollout.wave };
        let decision = decide(
            &plan,
            &RolloutView {
                phase: &phase,
                devices: &health,
                now: now.max(0) as u64,
                accepted_failures: rollout.accepted_failures,
            },
        );
        match decision {
            Decision::Wait => Ok(()),
            Decision::StartWave { wave, from, to } => {
                self.start_wave(&mut rollout, wave, from, to).await
            }
            Decision::Pause { failures, rollback } => {
                rollout.phase = RolloutPhase::Paused;
                rollout.reason = Some(format!(
                    "{failures} failed device(s) passed the failure threshold {}{}",
                    rollout.max_failures,
                    if rollback.is_some() {
                        "; the failing wave was rolled back"
                    } else {
                        ""
                    }
                ));
                if let Some((from, to)) = rollback {
                    self.mark_for_rollback(&mut rollout, from, to)?;
                }
                let rows: Vec<&DeviceProgress> = rollout.devices.iter().collect();
                rollout.revision = self.fleet.store.save_rollout(&rollout, &rows)?;
                tracing::warn!(rollout = id, failures, "rollout paused on failures");
                self.announce_phase(&rollout);
                self.send_pending(&mut rollout).await
            }
            Decision::Complete => {
                let failed = rollout
                    .devices
                    .iter()
                    .filter(|d| d.status == DeviceStatus::Failed)
                    .count();
                rollout.phase = RolloutPhase::Completed;
                rollout.reason = (failed > 0).then(|| {
                    format!(
                        "{failed} device(s) failed, within the threshold {}",
                        rollout.max_failures
                    )
                });
                rollout.revision = self.fleet.store.save_rollout(&rollout, &[])?;
                self.announce_phase(&rollout);
                Ok(())
            }
        }
    }

    pub(super) fn announce_phase(&self, rollout: &RolloutRecord) {
        self.announce(
            rollout.id,
            RolloutChange::Phase {
                phase: rollout.phase,
                reason: rollout.reason.clone(),
            },
        );
    }

    /// Applies every device's report to its progress; saves and announces what changed.
    fn observe_devices(&self, rollout: &mut RolloutRecord, now: i64) -> Result<(), RolloutError> {
        let store = &self.fleet.store;
        let waiting =
            |d: &DeviceProgress| d.status == DeviceStatus::Deploying && d.generation.is_some();
        if !rollout.devices.iter().any(waiting) {
            return Ok(());
        }
        // One read per step, not one per device.
        let seen = store.deploying_devices_seen(rollout.id)?;
        let mut changed = Vec::new();
        for (index, device) in rollout.devices.iter().enumerate() {
            if !waiting(device) {
                continue;
            }
            let known = seen.get(&device.device);
            let seen = Observation {
                online: known.is_some_and(|k| k.online),
                reported: known.and_then(|k| k.reported.as_ref()),
                now,
            };
            let windows = Windows {
                health_s: rollout.health_window_s,
                apply_s: rollout.apply_timeout_s,
            };
            let target = match (&rollout.agent_version, device.generation) {
                (Some(version), _) => Target::AgentVersion(version),
                (None, Some(generation)) => Target::Generation(generation),
                (None, None) => continue,
            };
            if let Some(next) = observe_target(device, target, windows, seen) {
                changed.push((index, next));
            }
        }
        if changed.is_empty() {
            return Ok(());
        }
        let rows: Vec<&DeviceProgress> = changed.iter().map(|(_, d)| d).collect();
        rollout.revision = store.save_rollout(rollout, &rows)?;
        for (index, next) in changed {
            if next.status != rollout.devices[index].status {
                self.announce_device(rollout.id, &next);
            }
            rollout.devices[index] = next;
        }
        Ok(())
    }

    /// Records devices `from..to` as about to receive the app (with their previous app),
    /// then sends it.
    async fn start_wave(
        &self,
        rollout: &mut RolloutRecord,
        wave: usize,
        from: usize,
        to: usize,
    ) -> Result<(), RolloutError> {
        let verifying = self.fleet.deployment_key().verifying_key();
        let ids: Vec<DeviceId> = rollout.devices[from..to]
            .iter()
            .map(|d| d.device.clone())
            .collect();
        if rollout.agent_version.is_some() {
            // What it ran before is what a rollback sends it back to.
            let mut reported = self.fleet.store.reported_of(&ids)?;
            for device in &mut rollout.devices[from..to] {
                device.previous_agent_version =
                    reported.remove(&device.device).map(|r| r.agent_version);
                device.status = DeviceStatus::Deploying;
            }
        } else {
            let mut current = self.fleet.store.desired_signed_of(&ids)?;
            for device in &mut rollout.devices[from..to] {
                record_previous(device, current.remove(&device.device), &verifying);
            }
        }
        rollout.wave = wave;
        let rows: Vec<&DeviceProgress> = rollout.devices[from..to].iter().collect();
        rollout.revision = self.fleet.store.save_rollout(rollout, &rows)?;
        self.announce(
            rollout.id,
            RolloutChange::Wave {
                wave,
                devices: rollout.devices[from..to]
                    .iter()
                    .map(|d| d.device.clone())
                    .collect(),
            },
        );
        self.send_pending(rollout).await
    }
}

/// Waits briefly and drops the reports that arrived meanwhile: one evaluation covers them.
async fn settle(reports: &mut broadcast::Receiver<FleetEvent>) {
    use broadcast::error::TryRecvError;
    tokio::time::sleep(SETTLE).await;
    while !matches!(
        reports.try_recv(),
        Err(TryRecvError::Empty | TryRecvError::Closed)
    ) {}
}

/// The decision's plan for a stored rollout (its specs were checked at creation).
pub(super) fn plan_of(rollout: &RolloutRecord) -> Result<RolloutPlan, RolloutError> {
    plan(
        &rollout.waves,
        &rollout.max_failures,
        rollout.health_window_s,
        rollout.rollback_on_failure,
    )
}

/// Parses a rollout's wave and threshold specs into the decision's plan.
pub(super) fn plan(
    waves: &str,
    max_failures: &str,
    health_window_s: u64,
    rollback_on_failure: bool,
) -> Result<RolloutPlan, RolloutError> {
    let invalid = |field| {
        move |e: super::WaveSpecError| RolloutError::Invalid {
            field,
            message: e.to_string(),
        }
    };
    Ok(RolloutPlan {
        waves: parse_waves(waves).map_err(invalid("waves"))?,
        health_window_s,
        max_failures: max_failures
            .parse::<Threshold>()
            .map_err(invalid("max_failures"))?,
        rollback_on_failure,
    })
}

/// Records the app `device` ran before the wave (its current signed desired state), which
/// a rollback sends it back to; a device whose state cannot be read fails instead: never
/// send the new app where the old one could not be restored.
fn record_previous(
    device: &mut DeviceProgress,
    current: Option<(Generation, Vec<u8>)>,
    verifying: &VerifyingKey,
) {
    let Some((generation, body)) = current else {
        device.previous_generation = None;
        device.previous_services = Some(Vec::new());
        device.status = DeviceStatus::Deploying;
        return;
    };
    let opened = coracle_proto::decode::<Signed<DesiredState>>(&body)
        .map_err(|e| e.to_string())
        .and_then(|s| s.open(verifying).map_err(|e| e.to_string()));
    match opened {
        Ok(state) => {
            device.previous_generation = Some(generation.0);
            device.previous_services = Some(state.services);
            device.status = DeviceStatus::Deploying;
        }
        Err(err) => {
            device.status = DeviceStatus::Failed;
            device.reason = Some(format!("its current desired state cannot be read: {err}"));
        }
    }
}

fn health_of(device: &DeviceProgress) -> DeviceHealth {
    match (device.status, device.healthy_since_unix) {
        (DeviceStatus::Deploying | DeviceStatus::Healthy, Some(since)) => {
            DeviceHealth::HealthySince(since.max(0) as u64)
        }
        (DeviceStatus::Failed | DeviceStatus::RolledBack, _) => DeviceHealth::Failed,
        _ => DeviceHealth::Pending,
    }
}
