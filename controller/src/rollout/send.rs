//! Sending the rollout's app, or a device's previous app, as the device's next generation.
//! Each send completes an intent already saved in the store; a device that shows a newer
//! desired state than the one the intent replaced was sent to before a restart, and its
//! generation is adopted instead of deploying again.

use coracle_proto::{DeviceId, ServiceSpec};

use super::driver::Rollouts;
use super::RolloutError;
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
        services: Vec<ServiceSpec>,
    ) -> Result<Option<u64>, RolloutError> {
        match self.fleet.deploy(device, services).await {
            Ok(deployment) => Ok(Some(deployment.generation.0)),
            Err(FleetError::Store(StoreError::DeviceNotFound { .. })) => Ok(None),
            Err(source) => Err(RolloutError::Deploy {
                id: rollout.id,
                device: device.clone(),
                source: Box::new(source),
            }),
        }
    }
}
