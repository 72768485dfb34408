//! `GET /api/v1/admin/keys`: the credentials in force and who holds them — the deployment
//! key (its epoch and id), the retired ones, and per device the deployment key it reported
//! trusting and the pull token epoch it holds beside the newest one it confirmed. An
//! operator reads here whether a rotation has reached the whole fleet.

use axum::extract::State;
use axum::Json;
use coracle_proto::KeyId;
use serde::{Deserialize, Serialize};

use super::{ApiError, AppState};
use crate::deployment_keys::RetiredKey;

/// The answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeysStatus {
    pub deployment_key: CurrentKey,
    /// Oldest first.
    pub retired: Vec<RetiredKey>,
    pub devices: Vec<DeviceKeys>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CurrentKey {
    pub epoch: u32,
    pub key_id: String,
    pub public_key: String,
}

/// One device's credentials.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceKeys {
    pub device: String,
    pub online: bool,
    /// The deployment key it reported trusting (`None`: not reported yet, or an agent from
    /// before it was reported).
    pub deployment_key_epoch: Option<u32>,
    pub deployment_key_id: Option<String>,
    /// The pull token epoch it reported holding.
    pub pull_token_epoch: Option<u32>,
    /// The newest pull token epoch it confirmed (its tokens older than one before are
    /// revoked).
    pub pull_token_confirmed: u32,
}

impl DeviceKeys {
    /// Whether it has followed every deployment key rotation.
    pub fn on_key(&self, epoch: u32) -> bool {
        self.deployment_key_epoch == Some(epoch)
    }
}

pub async fn status(State(state): State<AppState>) -> Result<Json<KeysStatus>, ApiError> {
    let fleet = state.fleet.clone();
    let status = tokio::task::spawn_blocking(move || -> Result<KeysStatus, ApiError> {
        let keys = fleet.deployment_keys();
        let (epoch, key) = keys.current();
        let retired = keys.retired().map_err(|e| ApiError::Internal {
            what: format!(
                "read the retired deployment keys: {}",
                super::error::error_chain(&e)
            ),
        })?;
        let devices = fleet
            .store
            .device_credentials_held()?
            .into_iter()
            .map(|d| DeviceKeys {
                device: d.device.to_string(),
                online: d.online,
                deployment_key_epoch: d.held.map(|h| h.deployment_key_epoch),
                deployment_key_id: d.held.and_then(|h| h.deployment_key).map(|k| k.to_string()),
                pull_token_epoch: d.held.map(|h| h.pull_token_epoch),
                pull_token_confirmed: d.confirmed_pull_epoch,
            })
            .collect();
        Ok(KeysStatus {
            deployment_key: CurrentKey {
                epoch,
                key_id: KeyId::of(&key).to_string(),
                public_key: hex::encode(key.as_bytes()),
            },
            retired,
            devices,
        })
    })
    .await
    .unwrap_or_else(|join| std::panic::resume_unwind(join.into_panic()))?;
    Ok(Json(status))
}
