//! The fleet event bus: one `FleetEvent` per change that observers care about — a stored
//! device message (from `ingest`), a presence change (also from the `presence` sweep) and
//! a rollout's move (from `rollout::driver`). The SSE stream sends each as JSON; the
//! rollout driver wakes on device reports. Producers and consumers depend on this module
//! only, never on each other.

use coracle_proto::DeviceId;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::store::{DeviceStatus, LatestProgress, RolloutPhase};

/// The bus every producer sends on; observers `subscribe()`.
pub type FleetEvents = broadcast::Sender<FleetEvent>;

/// What changed in the fleet (also what the SSE stream sends).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FleetEvent {
    Reported {
        device: DeviceId,
    },
    Health {
        device: DeviceId,
    },
    Event {
        device: DeviceId,
    },
    Presence {
        device: DeviceId,
        online: bool,
    },
    /// A device's pull progress (kept in memory, not stored).
    Progress {
        device: DeviceId,
        progress: LatestProgress,
    },
    /// A rollout changed phase, started a wave, or a device's progress changed.
    Rollout {
        rollout: i64,
        change: RolloutChange,
    },
}

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
