//! The rollout driver: one task that evaluates every active rollout on a short tick and when
//! ingest stores a device report, with the pure `observe` and `engine::decide`, and acts by
//! deploying through `Fleet`. All its state is in SQLite, so a restarted controller
//! continues where it stopped.
//!
//! Sending is intent first: a device's row is saved as `deploying` (or `rolled_back`) with
//! its previous app before the deploy, and its generation after. A row whose generation is
//! unset is sent again on the next step, unless the store shows a newer desired state than
//! the one it replaced (the deploy happened, the controller stopped before noting it).

use std::sync::Arc;
use std::time::Duration;

use coracle_proto::{DesiredState, DeviceId, Signed};
use tokio::sync::{broadcast, Mutex, Notify};

use super::engine::{
    decide, parse_waves, wave_ends, Decision, DeviceHealth, Phase, RolloutPlan, RolloutView,
};
use super::observe::{observe, Observation};
use super::{RolloutChange, RolloutError, Threshold};
use crate::fleet::{Fleet, FleetError};
use crate::ingest::Ingested;
use crate::store::{
    now_unix, DeviceProgress, DeviceStatus, RolloutPhase, RolloutRecord, StoreError,
};

/// How often every active rollout is evaluated even without device reports.
const TICK: Duration = Duration::from_secs(1);
/// Reports arriving this close together are handled in one evaluation.
const SETTLE: Duration = Duration::from_millis(100);

/// The handle the API and the driver task share. Rollout work is serialized by one lock, so
/// an operator command never interleaves with a step of the driver.
#[derive(Debug, Clone)]
pub struct Rollouts {
    pub(super) fleet: Fleet,
    events: broadcast::Sender<Ingested>,
    wake: Arc<Notify>,
    pub(super) lock: Arc<Mutex<()>>,
}

impl Rollouts {
    pub fn new(fleet: Fleet, events: broadcast::Sender<Ingested>) -> Self {
        Self {
            fleet,
            events,
            wake: Arc::new(Notify::new()),
            lock: Arc::new(Mutex::new(())),
        }
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
        let _ = self.events.send(Ingested::Rollout { rollout, change });
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
    pub async fn run(self, mut reports: broadcast::Receiver<Ingested>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.wake.notified() => {}
                received = reports.recv() => match received {
                    Ok(Ingested::Reported { .. } | Ingested::Presence { .. } | Ingested::Event { .. })
                    | Err(broadcast::error::RecvError::Lagged(_)) => {
                        tokio::time::sleep(SETTLE).await;
                        while !matches!(reports.try_recv(), Err(broadcast::error::TryRecvError::Empty | broadcast::error::TryRecvError::Closed)) {}
                    }
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
            self.step_all().await;
        }
    }

    /// Evaluates every rollout that may have something to do.
    pub async fn step_all(&self) {
        let ids = match self.fleet.store.rollouts_to_drive() {
            Ok(ids) => ids,
            Err(err) => {
                tracing::warn!(error = %format!("{err:#}"), "listing active rollouts failed");
                return;
            }
        };
        for id in ids {
            if let Err(err) = self.step(id).await {
                tracing::warn!(rollout = id, error = %format!("{err:#}"), "rollout step failed; retrying on the next tick");
            }
        }
    }

    /// One evaluation of one rollout: finish interrupted sends, observe, decide, act.
    pub(super) async fn step(&self, id: i64) -> Result<(), RolloutError> {
        let _serialized = self.lock.lock().await;
        let Some(mut rollout) = self.fleet.store.rollout(id)? else {
            return Ok(());
        };
        self.send_pending(&mut rollout).await?;
        if !rollout.phase.is_active() {
            return Ok(());
        }
        self.observe_devices(&mut rollout)?;
        if rollout.phase != RolloutPhase::Running {
            return Ok(());
        }
        let plan = plan_of(&rollout)?;
        // The engine's `Running { wave }` means waves up to `wave` were started; a new
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
                now: now_unix().max(0) as u64,
                accepted_failures: rollout.accepted_failures,
            },
        );
        match decision {
            Decision::Wait => Ok(()),
            Decision::StartWave { wave, from, to } => {
                self.start_wave(&mut rollout, wave, from, to).await
            }
            Decision::Pause { failures, .. } => {
                rollout.phase = RolloutPhase::Paused;
                rollout.reason = Some(format!(
                    "{failures} failed device(s) passed the failure threshold {}",
                    rollout.max_failures
                ));
                self.fleet.store.save_rollout(&rollout, &[])?;
                tracing::warn!(rollout = id, failures, "rollout paused on failures");
                self.announce_phase(&rollout);
                Ok(())
            }
            Decision::Complete => {
                rollout.phase = RolloutPhase::Completed;
                rollout.reason = None;
                self.fleet.store.save_rollout(&rollout, &[])?;
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
    fn observe_devices(&self, rollout: &mut RolloutRecord) -> Result<(), RolloutError> {
        let store = &self.fleet.store;
        let now = now_unix();
        let mut changed = Vec::new();
        for (index, device) in rollout.devices.iter().enumerate() {
            if device.status != DeviceStatus::Deploying || device.generation.is_none() {
                continue;
            }
            let online = match store.device(&device.device) {
                Ok(record) => record.online,
                Err(StoreError::DeviceNotFound { .. }) => false,
                Err(err) => return Err(err.into()),
            };
            let reported = store.reported(&device.device)?;
            let seen = Observation {
                online,
                reported: reported.as_ref(),
                now,
            };
            if let Some(next) = observe(device, rollout.health_window_s, seen) {
                changed.push((index, next));
            }
        }
        if changed.is_empty() {
            return Ok(());
        }
        let rows: Vec<&DeviceProgress> = changed.iter().map(|(_, d)| d).collect();
        store.save_rollout(rollout, &rows)?;
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
        for device in &mut rollout.devices[from..to] {
            match self.fleet.store.desired_signed(&device.device)? {
                None => {
                    device.previous_generation = None;
                    device.previous_services = Some(Vec::new());
                    device.status = DeviceStatus::Deploying;
                }
                Some((generation, body)) => {
                    let opened = coracle_proto::decode::<Signed<DesiredState>>(&body)
                        .map_err(|e| e.to_string())
                        .and_then(|s| s.open(&verifying).map_err(|e| e.to_string()));
                    match opened {
                        Ok(state) => {
                            device.previous_generation = Some(generation.0);
                            device.previous_services = Some(state.services);
                            device.status = DeviceStatus::Deploying;
                        }
                        // Never send the new app where the old one could not be restored.
                        Err(err) => {
                            device.status = DeviceStatus::Failed;
                            device.reason =
                                Some(format!("its current desired state cannot be read: {err}"));
                        }
                    }
                }
            }
        }
        rollout.wave = wave;
        let rows: Vec<&DeviceProgress> = rollout.devices[from..to].iter().collect();
        self.fleet.store.save_rollout(rollout, &rows)?;
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

    /// Sends what saved intents still lack: the new app to `deploying` rows without a
    /// generation, the previous app to `rolled_back` rows without a rollback generation.
    pub(super) async fn send_pending(
        &self,
        rollout: &mut RolloutRecord,
    ) -> Result<(), RolloutError> {
        for index in 0..rollout.devices.len() {
            let device = &rollout.devices[index];
            let next = match (device.status, device.generation, device.rollback_generation) {
                (DeviceStatus::Deploying, None, _) => self.send_new(rollout, device).await?,
                (DeviceStatus::RolledBack, _, None) => self.send_previous(rollout, device).await?,
                _ => continue,
            };
            self.fleet.store.save_rollout(rollout, &[&next])?;
            self.announce_device(rollout.id, &next);
            rollout.devices[index] = next;
        }
        Ok(())
    }

    async fn send_new(
        &self,
        rollout: &RolloutRecord,
        device: &DeviceProgress,
    ) -> Result<DeviceProgress, RolloutError> {
        let mut next = device.clone();
        let current = self.fleet.store.desired_generation(&device.device)?;
        let generation = if current.map(|g| g.0) > device.previous_generation {
            current.map(|g| g.0)
        } else {
            self.deploy(rollout, &device.device, rollout.services.clone())
                .await?
        };
        match generation {
            Some(generation) => {
                next.generation = Some(generation);
                next.deployed_unix = Some(now_unix());
            }
            None => {
                next.status = DeviceStatus::Failed;
                next.reason = Some("the device was removed".into());
            }
        }
        Ok(next)
    }

    async fn send_previous(
        &self,
        rollout: &RolloutRecord,
        device: &DeviceProgress,
    ) -> Result<DeviceProgress, RolloutError> {
        let mut next = device.clone();
        let current = self.fleet.store.desired_generation(&device.device)?;
        let generation = if current.map(|g| g.0) > device.generation {
            current.map(|g| g.0)
        } else {
            let previous = device.previous_services.clone().unwrap_or_default();
            self.deploy(rollout, &device.device, previous).await?
        };
        match generation {
            Some(generation) => next.rollback_generation = Some(generation),
            None => {
                next.status = DeviceStatus::Failed;
                next.reason = Some("the device was removed before its rollback".into());
            }
        }
        Ok(next)
    }

    /// Deploys; `None` when the device no longer exists.
    async fn deploy(
        &self,
        rollout: &RolloutRecord,
        device: &DeviceId,
        services: Vec<coracle_proto::ServiceSpec>,
    ) -> Result<Option<u64>, RolloutError> {
        match self.fleet.deploy(device, services).await {
            Ok(generation) => Ok(Some(generation.0)),
            Err(FleetError::Store(StoreError::DeviceNotFound { .. })) => Ok(None),
            Err(source) => Err(RolloutError::Deploy {
                id: rollout.id,
                device: device.clone(),
                source: Box::new(source),
            }),
        }
    }
}

/// The engine's plan for a stored rollout (its specs were checked at creation).
pub(super) fn plan_of(rollout: &RolloutRecord) -> Result<RolloutPlan, RolloutError> {
    let waves = parse_waves(&rollout.waves).map_err(|e| RolloutError::Invalid {
        field: "waves",
        message: e.to_string(),
    })?;
    let max_failures: Threshold =
        rollout
            .max_failures
            .parse()
            .map_err(|e: super::WaveSpecError| RolloutError::Invalid {
                field: "max_failures",
                message: e.to_string(),
            })?;
    Ok(RolloutPlan {
        waves,
        health_window_s: rollout.health_window_s,
        max_failures,
        rollback_on_failure: false,
    })
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
