//! `Fleet`: the enrolment and device operations behind the API. Each operation changes the
//! store first (the source of truth), then the broker's credentials, then the broker.

use std::collections::BTreeMap;
use std::sync::Arc;

use coracle_proto::bootstrap::deployment_key_hex;
use coracle_proto::{Bootstrap, BrokerAuth, DeviceId, SigningKey};

use crate::broker::client::ClientError;
use crate::broker::{password_sha256, AccessError, ControllerClient, DeviceAccess};
use crate::deployment_keys::DeploymentKeys;
use crate::policy::{AppRequest, Policy};
use crate::secrets::random_token;
use crate::store::{DeviceRecord, NewDevice, Store, StoreError};

/// Why a fleet operation failed.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("device {device} was removed, but cutting it off the broker failed")]
    Evict {
        device: DeviceId,
        #[source]
        source: ClientError,
    },
    #[error("device {device} was not enrolled: giving it a broker account failed")]
    Grant {
        device: DeviceId,
        #[source]
        source: AccessError,
    },
    #[error("device {device} was not removed: taking its broker account away failed")]
    Revoke {
        device: DeviceId,
        #[source]
        source: AccessError,
    },
    #[error("tag {tag:?} is invalid: {reason}")]
    InvalidTag { tag: String, reason: &'static str },
    /// The deploy policy does not grant what the app asks of this device.
    #[error(transparent)]
    PolicyRefused(#[from] crate::policy::PolicyRefusal),
    #[error("the app is not a valid desired state")]
    InvalidApp(#[source] coracle_proto::InvalidDesired),
    #[error("device id {device} is reserved for the controller's own broker client")]
    ReservedId { device: DeviceId },
    #[error(
        "the desired state for {device} is {bytes} bytes signed, above the {limit}-byte limit \
         devices accept: split the app or shorten its environment and commands"
    )]
    DesiredTooLarge {
        device: DeviceId,
        bytes: usize,
        limit: usize,
    },
}

/// What goes into every bootstrap file besides the device's own credentials.
#[derive(Debug, Clone)]
pub struct EnrolmentInfo {
    /// The URL devices dial, e.g. `mqtts://10.0.0.2:8883`.
    pub device_broker_url: String,
    pub ca_pem: String,
    pub registry_url: String,
    /// Issues each device its own registry pull token (bound to its enrolment).
    pub pull_tokens: Option<crate::registry::PullTokens>,
}

/// Device operations.
#[derive(Debug, Clone)]
pub struct Fleet {
    pub store: Arc<Store>,
    access: Arc<dyn DeviceAccess>,
    client: ControllerClient,
    keys: Arc<DeploymentKeys>,
    enrolment: Arc<EnrolmentInfo>,
    policy: Arc<Policy>,
}

/// Checks a tag key or value: printable, no `=` or `,` in keys (they separate selectors).
pub fn check_tag(key: &str, value: &str) -> Result<(), FleetError> {
    let invalid = |reason| FleetError::InvalidTag {
        tag: format!("{key}={value}"),
        reason,
    };
    if key.is_empty() || key.len() > 63 {
        return Err(invalid("key must be 1 to 63 characters"));
    }
    if !key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b))
    {
        return Err(invalid("key may hold only letters, digits and -_./"));
    }
    if value.len() > 253 || value.chars().any(|c| c.is_control() || c == ',') {
        return Err(invalid(
            "value must be at most 253 characters without control characters or commas",
        ));
    }
    Ok(())
}

impl Fleet {
    pub fn new(
        store: Arc<Store>,
        access: Arc<dyn DeviceAccess>,
        client: ControllerClient,
        keys: Arc<DeploymentKeys>,
        enrolment: EnrolmentInfo,
    ) -> Self {
        Self {
            store,
            access,
            client,
            keys,
            enrolment: Arc::new(enrolment),
            policy: Arc::new(Policy::default()),
        }
    }

    /// The fleet with `policy` in force instead of the default one.
    pub fn with_policy(mut self, policy: Policy) -> Self {
        self.policy = Arc::new(policy);
        self
    }

    /// The deploy policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Checks `app` against the deploy policy for `device` (with its current tags).
    pub fn check_policy(&self, device: &DeviceId, app: &AppRequest<'_>) -> Result<(), FleetError> {
        let record = self.store.device(device)?;
        self.policy.check(device, &record.tags, app)?;
        Ok(())
    }

    /// Whether the policy lets non-admin callers exec into `device` (by its tags).
    pub fn allows_exec(&self, device: &DeviceId) -> Result<bool, FleetError> {
        let record = self.store.device(device)?;
        Ok(self.policy.allows_exec(device, &record.tags))
    }

    pub fn client(&self) -> &ControllerClient {
        &self.client
    }

    /// The key deployments are signed with now (it changes on a rotation).
    pub fn deployment_key(&self) -> Arc<SigningKey> {
        self.keys.signing_key()
    }

    pub fn deployment_keys(&self) -> &DeploymentKeys {
        &self.keys
    }

    /// Runs `change` on the broker's account table off the async runtime: an external
    /// broker's is files and a subprocess.
    pub(crate) async fn change_access(
        &self,
        change: impl FnOnce(&dyn DeviceAccess) -> Result<(), AccessError> + Send + 'static,
    ) -> Result<(), AccessError> {
        let access = self.access.clone();
        match tokio::task::spawn_blocking(move || change(access.as_ref())).await {
            Ok(result) => result,
            Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
            Err(_) => Err(AccessError::Interrupted),
        }
    }

    /// Enrols a device and returns its bootstrap bundle (the only copy of its password).
    pub async fn add_device(
        &self,
        id: DeviceId,
        tags: BTreeMap<String, String>,
    ) -> Result<Bootstrap, FleetError> {
        if id.as_str() == crate::broker::acl::CONTROLLER_USER {
            return Err(FleetError::ReservedId { device: id });
        }
        for (key, value) in &tags {
            check_tag(key, value)?;
        }
        let password = random_token();
        let hash = password_sha256(&password);
        self.store.add_device(&NewDevice {
            id: id.clone(),
            tags,
            password_sha256: hash,
        })?;
        let granted = {
            let (id, password) = (id.clone(), password.clone());
            self.change_access(move |access| access.grant(&id, &password))
                .await
        };
        if let Err(source) = granted {
            // All or nothing: a device without a broker account is not enrolled.
            if let Err(err) = self.store.remove_device(&id) {
                tracing::warn!(device = %id, error = %err, "undoing a failed enrolment failed");
            }
            return Err(FleetError::Grant { device: id, source });
        }
        tracing::info!(device = %id, "device enrolled");
        Ok(Bootstrap {
            device: id.clone(),
            broker_url: self.enrolment.device_broker_url.clone(),
            ca_pem: self.enrolment.ca_pem.clone(),
            auth: BrokerAuth::Password {
                username: id.to_string(),
                password,
            },
            deployment_key: deployment_key_hex(&self.deployment_key().verifying_key()),
            registry_url: self.enrolment.registry_url.clone(),
            registry_token: self
                .enrolment
                .pull_tokens
                .as_ref()
                .map(|tokens| tokens.issue(&id, &hash, 0)),
        })
    }

    /// Removes a device and cuts it off the broker. The broker account goes first, so a
    /// failure there leaves the device listed and the removal can be retried.
    pub async fn remove_device(&self, id: &DeviceId) -> Result<(), FleetError> {
        self.store.device(id)?;
        let revoked = {
            let id = id.clone();
            self.change_access(move |access| access.revoke(&id)).await
        };
        revoked.map_err(|source| FleetError::Revoke {
            device: id.clone(),
            source,
        })?;
        self.store.remove_device(id)?;
        self.store.delete_agent_update(id)?;
        if let Err(err) = self.client.clear_desired(id).await {
            tracing::warn!(device = %id, error = %err, "clearing the retained desired state failed");
        }
        self.client
            .evict(id)
            .await
            .map_err(|source| FleetError::Evict {
                device: id.clone(),
                source,
            })?;
        tracing::info!(device = %id, "device removed and revoked");
        Ok(())
    }

    pub fn retag_device(
        &self,
        id: &DeviceId,
        set: &BTreeMap<String, String>,
        remove: &[String],
    ) -> Result<DeviceRecord, FleetError> {
        for (key, value) in set {
            check_tag(key, value)?;
        }
        self.store.retag_device(id, set, remove)?;
        Ok(self.store.device(id)?)
    }

    /// Publishes every stored desired state again: the embedded broker keeps retained
    /// messages in memory only, and the controller is the source of truth. After a
    /// deployment key rotation the chain goes first to every device, so each can follow it
    /// before (or while) the state signed by the new key arrives.
    pub async fn republish_desired(&self) -> Result<usize, FleetError> {
        self.publish_key_chain().await?;
        let all = self.store.all_desired()?;
        let mut published = 0;
        for (device, body) in all {
            match self.client.publish_desired(&device, body).await {
                Ok(()) => published += 1,
                Err(err) => {
                    tracing::warn!(device = %device, error = %err, "republishing desired state failed")
                }
            }
        }
        self.republish_agent_updates().await?;
        Ok(published)
    }

    /// Publishes the deployment key chain on every device's `keys` topic (nothing before
    /// the first rotation).
    pub async fn publish_key_chain(&self) -> Result<(), FleetError> {
        let chain = self.keys.chain();
        if chain.links.is_empty() {
            return Ok(());
        }
        let body = coracle_proto::encode(&chain);
        for device in self.store.list_devices()? {
            if let Err(err) = self.client.publish_keys(&device.id, body.clone()).await {
                tracing::warn!(device = %device.id, error = %err, "publishing the deployment key chain failed");
            }
        }
        Ok(())
    }

    /// Rotates the deployment key and delivers the result: the chain to every device, then
    /// every desired state, signed again.
    pub async fn rotate_deployment_key(
        &self,
    ) -> Result<crate::deployment_keys::Rotated, crate::deployment_keys::RotationError> {
        let keys = self.keys.clone();
        let store = self.store.clone();
        let rotated = tokio::task::spawn_blocking(move || keys.rotate(&store))
            .await
            .unwrap_or_else(|join| std::panic::resume_unwind(join.into_panic()))?;
        if let Err(err) = self.republish_desired().await {
            tracing::warn!(error = %err, "delivering the rotated deployment key failed; it goes out at the next reconnect or start");
        }
        Ok(rotated)
    }

    /// Publishes every stored desired state again each time the controller's client
    /// reconnects: an external broker that restarted may have lost its retained messages
    /// (no persistence, or a crash before its autosave). Runs until aborted.
    pub async fn republish_on_reconnect(self) {
        loop {
            self.client.reconnected().await;
            match self.republish_desired().await {
                Ok(count) => {
                    tracing::info!(count, "broker reconnected, desired states republished")
                }
                Err(err) => {
                    tracing::warn!(error = %err, "republishing desired states after a reconnect failed")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_rules() {
        assert!(check_tag("site", "greenhouse 2").is_ok());
        assert!(check_tag("", "x").is_err());
        assert!(check_tag("a=b", "x").is_err());
        assert!(check_tag("a", "x,y").is_err());
        assert!(check_tag("a", "line\nbreak").is_err());
    }
}
