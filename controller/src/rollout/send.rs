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

impl Rollouts {
    /// Sends what saved intents still lack: the new app to `deploying` rows without a
    /// generation, the previous app to `rolled_back` rows without a rollback generation.
    pub(super) async fn send_pending(
        &self,
        rollout: &mut RolloutRecord,
    ) -> Result<(), RolloutError> {
        for index in 0..rollout.devices.len() {
            let device = &rollout.devices[index];
            let agent = rollout.agent_version.is_some();
            let next = match (device.status, device.generation, device.rollback_generation) {
                (DeviceStatus::Deploying, None, _) if agent => {
                    self.send_agent_new(rollout, device).await?
                }
                (DeviceStatus::RolledBack, _, None) if agent => {
                    self.send_agent_previous(device).await?
                }
                (DeviceStatus::Deploying, None, _) => self.send_new(rollout, device).await?,
                (DeviceStatus::RolledBack, _, None) => self.send_previous(rollout, device).await?,
                _ => continue,
            };
            rollout.revision = self.fleet.store.save_rollout(rollout, &[&next])?;
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
