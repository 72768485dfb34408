//! Sending a device an `AgentUpdate`: stored first (the source of truth, unsigned), then
//! signed with the current deployment key and published retained on its `agent-update`
//! topic. Stored updates go out again with the desired states after a broker restart or
//! a key rotation (`Fleet::republish_desired`).

use coracle_proto::{encode, AgentUpdate, DeviceId, Digest, ImageRef, Signed};

use crate::fleet::{Fleet, FleetError};

/// The release a device is sent.
#[derive(Debug, Clone)]
pub struct AgentTarget {
    pub version: String,
    pub platform: String,
    pub image: ImageRef,
    pub binary: Digest,
}

impl Fleet {
    /// Stores and publishes the next agent update for `device`; returns its sequence. A
    /// publish that fails is logged: the update goes out with the next republish.
    pub async fn send_agent_update(
        &self,
        device: &DeviceId,
        target: &AgentTarget,
    ) -> Result<u64, FleetError> {
        let update = self
            .store
            .next_agent_update(device, |sequence| AgentUpdate {
                device: device.clone(),
                sequence,
                version: target.version.clone(),
                platform: target.platform.clone(),
                image: target.image.clone(),
                binary: target.binary,
            })?;
        self.publish_agent_update(&update).await;
        tracing::info!(device = %device, version = %update.version, sequence = update.sequence, "agent update sent");
        Ok(update.sequence)
    }

    async fn publish_agent_update(&self, update: &AgentUpdate) {
        let body = self
            .deployment_keys()
            .sign_with(|key| encode(&Signed::sign(update, key)));
        if let Err(err) = self
            .client()
            .publish_agent_update(&update.device, body)
            .await
        {
            tracing::warn!(device = %update.device, error = %err, "agent update stored but not published: it goes out when the broker is back");
        }
    }

    /// Publishes every stored agent update again, signed with the current key.
    pub async fn republish_agent_updates(&self) -> Result<(), FleetError> {
        for update in self.store.agent_updates()? {
            self.publish_agent_update(&update).await;
        }
        Ok(())
    }
}
