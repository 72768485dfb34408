//! Sending the rollout's app, or a device's previous app, as the device's next generation.
//! Each send completes an intent already saved in the store; a device that shows a newer
//! desired state than the one the intent replaced was sent to before a restart, and its
//! generation is adopted instead of deploying again. Images on direct registries get the
//! device's own sealed access with each send; a device that cannot be given it (no sealing
//! key reported yet) fails with that reason and counts against the rollout's threshold.

use coracle_proto::{DeviceId, ServiceSpec};

use super::driver::Rollouts;
use super::RolloutError;
use crate::api::error::error_chain;
use crate::fleet::FleetError;
use crate::store::{now_unix, DeviceProgress, DeviceStatus, RolloutRecord, StoreError};

/// Sent rows are saved this many at a time: one transaction per device made a wave of
/// thousands take seconds on PostgreSQL. A send whose save is lost (a crash between the
/// two) is adopted on the next step from the newer desired state it left.
const SAVE_EVERY: usize = 256;
/// A long send renews the rollout's lease this often (a fraction of its lifetime), so no
/// other controller takes the rollout over and sends to the same devices meanwhile.
const RENEW_FRACTION: u32 = 4;

impl Rollouts {
    /// Sends what saved intents still lack: the new app to `deploying` rows without a
    /// generation, the previous app to `rolled_back` rows without a rollback generation.
    /// What was sent is saved even when a later send fails.
    pub(super) async fn send_pending(
        &self,
        rollout: &mut RolloutRecord,
    ) -> Result<(), RolloutError> {
        let mut sent = Vec::new();
        let sending = self.send_each(rollout, &mut sent).await;
        let saved = self.save_sent(rollout, &mut sent);
        sending.and(saved)
    }

    async fn send_each(
        &self,
        rollout: &mut RolloutRecord,
        sent: &mut Vec<usize>,
    ) -> Result<(), RolloutError> {
        let renew_every = self.lease.ttl / RENEW_FRACTION;
        let mut renewed: Option<std::time::Instant> = None;
        let agent = rollout.agent_version.is_some();
        for index in 0..rollout.devices.len() {
            let device = &rollout.devices[index];
            let pending = match (device.status, device.generation, device.rollback_generation) {
                (DeviceStatus::Deploying, None, _) => Pending::New,
                (DeviceStatus::RolledBack, _, None) => Pending::Previous,
                _ => continue,
            };
            // Before the first send and then periodically: the step's own claim may be
            // older than the lease by now.
            if renewed.is_none_or(|at| at.elapsed() >= renew_every) {
                self.save_sent(rollout, sent)?;
                if !self.claim(rollout.id)? {
                    return Err(RolloutError::LeaseLost { id: rollout.id });
                }
                renewed = Some(std::time::Instant::now());
            }
            let device = &rollout.devices[index];
            let next = match (pending, agent) {
                (Pending::New, true) => self.send_agent_new(rollout, device).await?,
                (Pending::Previous, true) => self.send_agent_previous(device).await?,
                (Pending::New, false) => self.send_new(rollout, device).await?,
                (Pending::Previous, false) => self.send_previous(rollout, device).await?,
            };
            rollout.devices[index] = next;
            sent.push(index);
            if sent.len() >= SAVE_EVERY {
                self.save_sent(rollout, sent)?;
            }
        }
        Ok(())
    }

    /// Saves the rows at `sent` in one transaction and announces them.
    fn save_sent(
        &self,
        rollout: &mut RolloutRecord,
        sent: &mut Vec<usize>,
    ) -> Result<(), RolloutError> {
        if sent.is_empty() {
            return Ok(());
        }
        let rows: Vec<&DeviceProgress> = sent.iter().map(|&i| &rollout.devices[i]).collect();
        rollout.revision = self.fleet.store.save_rollout(rollout, &rows)?;
        for index in sent.drain(..) {
            self.announce_device(rollout.id, &rollout.devices[index]);
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
        let generation =
            if let Some(adopted) = current.filter(|g| Some(g.0) > device.previous_generation) {
                Sent::Generation(adopted.0)
            } else {
                self.deploy(rollout, &device.device, rollout.services.clone())
                    .await?
            };
        generation.record_new(&mut next);
        Ok(next)
    }

    async fn send_previous(
        &self,
        rollout: &RolloutRecord,
        device: &DeviceProgress,
    ) -> Result<DeviceProgress, RolloutError> {
        let mut next = device.clone();
        let current = self.fleet.store.desired_generation(&device.device)?;
        let generation = if let Some(adopted) = current.filter(|g| Some(g.0) > device.generation) {
            Sent::Generation(adopted.0)
        } else {
            let previous = device.previous_services.clone().unwrap_or_default();
            self.deploy(rollout, &device.device, previous).await?
        };
        generation.record_rollback(&mut next);
        Ok(next)
    }

    /// Deploys `services` to `device` with its own access to the direct registries they name.
    async fn deploy(
        &self,
        rollout: &RolloutRecord,
        device: &DeviceId,
        services: Vec<ServiceSpec>,
    ) -> Result<Sent, RolloutError> {
        let sealing_key = match self.fleet.store.reported(device) {
            Ok(reported) => reported.map(|r| r.sealing_key).unwrap_or_default(),
            Err(StoreError::DeviceNotFound { .. }) => return Ok(Sent::Removed),
            Err(err) => return Err(err.into()),
        };
        let registries = match self.mirror.access_for(device, &sealing_key, &services) {
            Ok(registries) => registries,
            Err(err) => return Ok(Sent::Refused(error_chain(&err))),
        };
        match self
            .fleet
            .deploy_with_registries(device, services, registries)
            .await
        {
            Ok(deployment) => Ok(Sent::Generation(deployment.generation.0)),
            Err(FleetError::Store(StoreError::DeviceNotFound { .. })) => Ok(Sent::Removed),
            Err(source) => Err(RolloutError::Deploy {
                id: rollout.id,
                device: device.clone(),
                source: Box::new(source),
            }),
        }
    }
}

/// What a device's saved intent still lacks.
#[derive(Clone, Copy)]
enum Pending {
    /// The rollout's version.
    New,
    /// Its previous version (a rollback).
    Previous,
}

/// What became of one send.
pub(super) enum Sent {
    /// The device's new desired generation (sent now, or adopted from before a restart).
    Generation(u64),
    /// The device no longer exists.
    Removed,
    /// The app cannot be given to this device; the reason is the device's failure.
    Refused(String),
}

impl Sent {
    /// Where sending the new version leaves the device: its generation (or agent update
    /// sequence) and when it was sent, or failed with the reason.
    pub(super) fn record_new(self, next: &mut DeviceProgress) {
        match self {
            Sent::Generation(generation) => {
                next.generation = Some(generation);
                next.deployed_unix = Some(now_unix());
            }
            Sent::Removed => {
                next.status = DeviceStatus::Failed;
                next.reason = Some("the device was removed".into());
            }
            Sent::Refused(reason) => {
                next.status = DeviceStatus::Failed;
                next.reason = Some(reason);
            }
        }
    }

    /// Where a rollback's send leaves the device: its rollback generation (or agent update
    /// sequence), or failed with the reason.
    pub(super) fn record_rollback(self, next: &mut DeviceProgress) {
        match self {
            Sent::Generation(generation) => next.rollback_generation = Some(generation),
            Sent::Removed => {
                next.status = DeviceStatus::Failed;
                next.reason = Some("the device was removed before its rollback".into());
            }
            Sent::Refused(reason) => {
                next.status = DeviceStatus::Failed;
                next.reason = Some(format!("rollback not sent: {reason}"));
            }
        }
    }
}
