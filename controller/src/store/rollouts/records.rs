//! The rows of a rollout as plain data: its phase, selector, and each device's progress,
//! with their names as stored and as the API shows them.

use coracle_proto::{DeviceId, ServiceSpec};
use serde::{Deserialize, Serialize};

/// Where a rollout is, as stored and shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutPhase {
    Running,
    Paused,
    Completed,
    Aborted,
    RolledBack,
}

impl RolloutPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Completed => "completed",
            Self::Aborted => "aborted",
            Self::RolledBack => "rolled_back",
        }
    }

    pub(super) fn parse(text: &str) -> Option<Self> {
        [
            Self::Running,
            Self::Paused,
            Self::Completed,
            Self::Aborted,
            Self::RolledBack,
        ]
        .into_iter()
        .find(|p| p.as_str() == text)
    }

    /// Running and paused rollouts still own their devices.
    pub fn is_active(self) -> bool {
        matches!(self, Self::Running | Self::Paused)
    }
}

/// Which devices a rollout targets, fixed when it is created. In JSON (API and store) a
/// tag is the string `"key=value"` and a device list an array of ids, as the API takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "SelectorJson", try_from = "SelectorJson")]
pub enum Selector {
    /// Every device with this tag, in id order.
    Tag { key: String, value: String },
    /// These devices, in this order.
    Devices(Vec<DeviceId>),
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum SelectorJson {
    Tag(String),
    Devices(Vec<DeviceId>),
}

impl From<Selector> for SelectorJson {
    fn from(selector: Selector) -> Self {
        match selector {
            Selector::Tag { key, value } => Self::Tag(format!("{key}={value}")),
            Selector::Devices(ids) => Self::Devices(ids),
        }
    }
}

impl TryFrom<SelectorJson> for Selector {
    type Error = String;
    fn try_from(json: SelectorJson) -> Result<Self, String> {
        match json {
            SelectorJson::Tag(text) => match text.split_once('=') {
                Some((key, value)) => Ok(Self::Tag {
                    key: key.into(),
                    value: value.into(),
                }),
                None => Err(format!("selector {text:?} is not key=value")),
            },
            SelectorJson::Devices(ids) => Ok(Self::Devices(ids)),
        }
    }
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tag { key, value } => write!(f, "{key}={value}"),
            Self::Devices(ids) => {
                let names: Vec<&str> = ids.iter().map(DeviceId::as_str).collect();
                write!(f, "{}", names.join(","))
            }
        }
    }
}

/// One device's progress in a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceStatus {
    NotStarted,
    /// Given (or about to be given: `generation` unset) the new app, not yet proven healthy.
    Deploying,
    /// Healthy on the new generation for the whole health window.
    Healthy,
    Failed,
    /// Given its previous app again (`rollback_generation` unset: about to be).
    RolledBack,
}

impl DeviceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotStarted => "not_started",
            Self::Deploying => "deploying",
            Self::Healthy => "healthy",
            Self::Failed => "failed",
            Self::RolledBack => "rolled_back",
        }
    }

    pub(super) fn parse(text: &str) -> Option<Self> {
        [
            Self::NotStarted,
            Self::Deploying,
            Self::Healthy,
            Self::Failed,
            Self::RolledBack,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

/// A device row of a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceProgress {
    pub device: DeviceId,
    pub status: DeviceStatus,
    /// The generation carrying the rollout's app, once sent.
    pub generation: Option<u64>,
    /// The device's desired generation before the rollout reached it.
    pub previous_generation: Option<u64>,
    pub deployed_unix: Option<i64>,
    /// When the device first reported the new generation running (its health window
    /// starts here; until then the apply timeout runs from `deployed_unix`).
    #[serde(default)]
    pub running_since_unix: Option<i64>,
    pub healthy_since_unix: Option<i64>,
    pub rollback_generation: Option<u64>,
    /// Why the device failed or was rolled back.
    pub reason: Option<String>,
    /// The app the device ran before (empty: it had none); restored by a rollback.
    #[serde(skip)]
    pub previous_services: Option<Vec<ServiceSpec>>,
    /// Agent rollouts: the agent version the device reported before (restored by a
    /// rollback); in agent rollouts `generation` is the `AgentUpdate` sequence sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_agent_version: Option<String>,
}

impl DeviceProgress {
    pub(super) fn not_started(device: DeviceId) -> Self {
        Self {
            device,
            status: DeviceStatus::NotStarted,
            generation: None,
            previous_generation: None,
            deployed_unix: None,
            running_since_unix: None,
            healthy_since_unix: None,
            rollback_generation: None,
            reason: None,
            previous_services: None,
            previous_agent_version: None,
        }
    }
}

/// A rollout with its devices in wave order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutRecord {
    pub id: i64,
    pub app: String,
    pub compose: String,
    pub selector: Selector,
    pub waves: String,
    pub max_failures: String,
    pub health_window_s: u64,
    /// How long a device may take from the send to running the new generation.
    #[serde(default = "default_apply_timeout_s")]
    pub apply_timeout_s: u64,
    /// When failures pause the rollout, roll the failing wave back at once.
    pub rollback_on_failure: bool,
    pub phase: RolloutPhase,
    /// The last wave started (0-based).
    pub wave: usize,
    pub accepted_failures: usize,
    /// Why the rollout paused, completed or stopped.
    pub reason: Option<String>,
    pub created_unix: i64,
    pub updated_unix: i64,
    pub devices: Vec<DeviceProgress>,
    /// The app with images pinned at creation, so every wave gets exactly the same bytes.
    #[serde(skip)]
    pub services: Vec<ServiceSpec>,
    /// Set for an agent rollout: the agent release it sends (`services` is empty then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    /// Bumped by every write: a write based on an older read is refused.
    #[serde(default)]
    pub revision: i64,
}

/// How a rollout moves, the part app and agent rollouts share: which devices, in which
/// waves, how many failures it tolerates, how long each device has to apply and then to
/// stay healthy, and whether a failing wave is rolled back at once (checked by
/// `rollout::pace`).
#[derive(Debug, Clone)]
pub struct RolloutPace {
    pub selector: Selector,
    /// Cumulative wave sizes (`1,10%,100%`).
    pub waves: String,
    /// Failed devices tolerated before the rollout pauses: a count or a percentage.
    pub max_failures: String,
    pub health_window_s: u64,
    /// How long each device may take to download, start and report the new version (its
    /// health window starts once it runs it).
    pub apply_timeout_s: u64,
    pub rollback_on_failure: bool,
}

/// What `create_rollout` stores.
#[derive(Debug, Clone)]
pub struct NewRollout {
    pub app: String,
    pub compose: String,
    pub services: Vec<ServiceSpec>,
    pub pace: RolloutPace,
    pub devices: Vec<DeviceId>,
    /// An agent rollout's release version (`None`: an app rollout).
    pub agent_version: Option<String>,
}

/// The apply timeout of rollouts that do not say (and of those stored before it existed).
pub const DEFAULT_APPLY_TIMEOUT_S: u64 = 600;

fn default_apply_timeout_s() -> u64 {
    DEFAULT_APPLY_TIMEOUT_S
}
