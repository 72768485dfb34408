//! Sends of agent rollouts: the release for the device's platform as an `AgentUpdate`
//! (its sequence is the row's `generation`), and on rollback the version the device ran
//! before — nothing to send when it runs that version already (a build it gave up leaves
//! it there), refused when that version is no release the controller holds.

use coracle_proto::DeviceId;

use super::driver::Rollouts;
use super::send::Sent;
use super::RolloutError;
use crate::agent_release::Release;
use crate::agent_update::AgentTarget;
use crate::api::error::error_chain;
use crate::fleet::FleetError;
use crate::store::{DeviceProgress, DeviceStatus, RolloutRecord, StoreError};

impl Rollouts {
    pub(super) async fn send_agent_new(
        &self,
        rollout: &RolloutRecord,
        device: &DeviceProgress,
    ) -> Result<DeviceProgress, RolloutError> {
        let mut next = device.clone();
        let version = rollout.agent_version.clone().unwrap_or_default();
        self.send_agent(rollout.id, &device.device, &version)
            .await?
            .record_new(&mut next);
        Ok(next)
    }

    pub(super) async fn send_agent_previous(
        &self,
        device: &DeviceProgress,
    ) -> Result<DeviceProgress, RolloutError> {
        let mut next = device.clone();
        let Some(previous) = device.previous_agent_version.clone() else {
            next.status = DeviceStatus::Failed;
            next.reason =
                Some("rollback not sent: the agent version it ran before is unknown".into());
            return Ok(next);
        };
        let running = match self.fleet.store.reported(&device.device) {
            Ok(reported) => reported.map(|r| r.agent_version),
            Err(StoreError::DeviceNotFound { .. }) => None,
            Err(err) => return Err(err.into()),
        };
        if running.as_deref() == Some(previous.as_str()) {
            // Already back (it gave the new build up): nothing to send.
            next.rollback_generation = Some(0);
            return Ok(next);
        }
        self.send_agent(0, &device.device, &previous)
            .await?
            .record_rollback(&mut next);
        Ok(next)
    }

    /// Sends `version` for the device's reported platform.
    async fn send_agent(
        &self,
        rollout: i64,
        device: &DeviceId,
        version: &str,
    ) -> Result<Sent, RolloutError> {
        let platform = match self.fleet.store.reported(device) {
            Ok(Some(reported)) if !reported.platform.is_empty() => reported.platform,
            Ok(_) => {
                return Ok(Sent::Refused(
                    "the device has not reported its platform".into(),
                ))
            }
            Err(StoreError::DeviceNotFound { .. }) => return Ok(Sent::Removed),
            Err(err) => return Err(err.into()),
        };
        let Some(releases) = &self.releases else {
            return Ok(Sent::Refused(
                "this controller holds no agent releases".into(),
            ));
        };
        let release = match releases.find(version, &platform) {
            Ok(Some(release)) => release,
            Ok(None) => {
                return Ok(Sent::Refused(format!(
                    "agent {version} has no release for {platform}"
                )))
            }
            Err(err) => return Ok(Sent::Refused(error_chain(&err))),
        };
        let target = match target_of(&release) {
            Ok(target) => target,
            Err(reason) => return Ok(Sent::Refused(reason)),
        };
        match self.fleet.send_agent_update(device, &target).await {
            Ok(sequence) => Ok(Sent::Generation(sequence)),
            Err(FleetError::Store(StoreError::DeviceNotFound { .. })) => Ok(Sent::Removed),
            Err(source) => Err(RolloutError::Deploy {
                id: rollout,
                device: device.clone(),
                source: Box::new(source),
            }),
        }
    }
}

fn target_of(release: &Release) -> Result<AgentTarget, String> {
    Ok(AgentTarget {
        version: release.version.clone(),
        platform: release.platform.clone(),
        image: release.image_ref().map_err(|e| error_chain(&e))?,
        binary: release.binary_digest().map_err(|e| error_chain(&e))?,
    })
}
