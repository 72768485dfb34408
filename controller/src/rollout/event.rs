//! What a rollout announces on the fleet event stream (SSE) as it moves.

use coracle_proto::DeviceId;
use serde::{Deserialize, Serialize};

use crate::store::{DeviceStatus, RolloutPhase};

/// One rollout transition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum RolloutChange {
    Phase {
        phase: RolloutPhase,
        reason: Option<String>,
    },
    Wave {
        wave: usize,
        devices: Vec<DeviceId>,
    },
    Device {
        device: DeviceId,
        status: DeviceStatus,
        generation: Option<u64>,
        reason: Option<String>,
    },
}
