//! `RolloutError`: why a rollout could not be created, commanded or advanced.

use coracle_proto::DeviceId;

use super::command::TransitionRefused;
use crate::fleet::FleetError;
use crate::store::StoreError;

/// A rollout operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    #[error("rollout {id} not found")]
    NotFound { id: i64 },
    #[error("rollout {id}")]
    Refused {
        id: i64,
        #[source]
        source: TransitionRefused,
    },
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("no device matches selector {selector}")]
    NoDevices { selector: String },
    #[error("selector names device {device}, which is not enrolled")]
    UnknownDevice { device: DeviceId },
    #[error("device {device} is already in rollout {rollout}, which is still running or paused")]
    Busy { device: DeviceId, rollout: i64 },
    /// Another controller took the rollout's lease during a long step: this one stops
    /// sending (two controllers sending one device its next generation race).
    #[error("rollout {id}: another controller took its lease over")]
    LeaseLost { id: i64 },
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The deploy policy refuses the app for a selected device.
    #[error(transparent)]
    PolicyRefused(#[from] crate::policy::PolicyRefusal),
    #[error("rollout {id}: deploying to device {device} failed")]
    Deploy {
        id: i64,
        device: DeviceId,
        // Boxed: a fleet error is large and rare, and this enum is returned on hot paths.
        #[source]
        source: Box<FleetError>,
    },
}
