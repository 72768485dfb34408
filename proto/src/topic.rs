//! MQTT topic names, QoS and retain flags: the one place that spells them (DESIGN.md §3).

use alloc::format;
use alloc::string::{String, ToString};

use crate::ids::{DeviceId, IdError};

/// Every topic starts with this; the `v1` changes only with an incompatible protocol.
pub const PREFIX: &str = "coracle/v1";

/// The per-device topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TopicKind {
    Desired,
    Reported,
    Health,
    Events,
    Cmd,
    CmdReply,
    Online,
    /// `PullProgress` while a device pulls (rate-limited by the agent).
    Progress,
    /// The deployment key's rollover chain (`KeyChain`), retained so a device that was
    /// offline through a rotation catches up.
    Keys,
    /// A signed `AgentUpdate`, retained so a device that was offline still gets it.
    AgentUpdate,
    /// Remote session input (`SessionRequest`): logs follow, exec.
    Session,
    /// Remote session output (`SessionEvent`).
    SessionOut,
}

/// Who publishes on a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    ControllerToDevice,
    DeviceToController,
}

/// Why a topic string is not one of ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("topic {topic:?} is not under {PREFIX}/")]
    Prefix { topic: String },
    #[error("topic {topic:?} has an unknown suffix")]
    Suffix { topic: String },
    #[error("topic {topic:?} names an invalid device")]
    Device {
        topic: String,
        #[source]
        source: IdError,
    },
}

impl TopicKind {
    /// All kinds, for subscriptions and tests.
    pub const ALL: [TopicKind; 12] = [
        TopicKind::Desired,
        TopicKind::Reported,
        TopicKind::Health,
        TopicKind::Events,
        TopicKind::Cmd,
        TopicKind::CmdReply,
        TopicKind::Online,
        TopicKind::Progress,
        TopicKind::Keys,
        TopicKind::AgentUpdate,
        TopicKind::Session,
        TopicKind::SessionOut,
    ];

    /// The part after the device id.
    pub fn suffix(self) -> &'static str {
        match self {
            TopicKind::Desired => "desired",
            TopicKind::Reported => "reported",
            TopicKind::Health => "health",
            TopicKind::Events => "events",
            TopicKind::Cmd => "cmd",
            TopicKind::CmdReply => "cmd/reply",
            TopicKind::Online => "online",
            TopicKind::Progress => "progress",
            TopicKind::Keys => "keys",
            TopicKind::AgentUpdate => "agent-update",
            TopicKind::Session => "session",
            TopicKind::SessionOut => "session/out",
        }
    }

    /// MQTT QoS: health samples and pull progress are fire-and-forget (the next one
    /// supersedes a lost one), everything else at-least-once.
    pub fn qos(self) -> u8 {
        match self {
            TopicKind::Health | TopicKind::Progress => 0,
            _ => 1,
        }
    }

    /// Retained topics hold the latest state for whoever subscribes next.
    pub fn retained(self) -> bool {
        matches!(
            self,
            TopicKind::Desired
                | TopicKind::Reported
                | TopicKind::Online
                | TopicKind::Keys
                | TopicKind::AgentUpdate
        )
    }

    /// Who may publish on it (the broker's ACL follows this).
    pub fn direction(self) -> Direction {
        match self {
            TopicKind::Desired
            | TopicKind::Cmd
            | TopicKind::Keys
            | TopicKind::AgentUpdate
            | TopicKind::Session => Direction::ControllerToDevice,
            _ => Direction::DeviceToController,
        }
    }

    /// `coracle/v1/<device>/<suffix>`.
    pub fn for_device(self, device: &DeviceId) -> String {
        format!("{PREFIX}/{device}/{}", self.suffix())
    }

    /// `coracle/v1/+/<suffix>`: the controller's subscription for every device.
    pub fn for_all_devices(self) -> String {
        format!("{PREFIX}/+/{}", self.suffix())
    }
}

/// `coracle/v1/<device>/#`: the only subtree a device may touch.
pub fn device_subtree(device: &DeviceId) -> String {
    format!("{PREFIX}/{device}/#")
}

/// Splits a topic into its device and kind.
pub fn parse(topic: &str) -> Result<(DeviceId, TopicKind), TopicError> {
    let rest = topic
        .strip_prefix(PREFIX)
        .and_then(|r| r.strip_prefix('/'))
        .ok_or_else(|| TopicError::Prefix {
            topic: topic.to_string(),
        })?;
    let (device, suffix) = rest.split_once('/').ok_or_else(|| TopicError::Suffix {
        topic: topic.to_string(),
    })?;
    let kind = TopicKind::ALL
        .into_iter()
        .find(|k| k.suffix() == suffix)
        .ok_or_else(|| TopicError::Suffix {
            topic: topic.to_string(),
        })?;
    let device = device.parse().map_err(|source| TopicError::Device {
        topic: topic.to_string(),
        source,
    })?;
    Ok((device, kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_topic_parses_back_to_its_device_and_kind() {
        let device: DeviceId = "pi-7".parse().unwrap();
        for kind in TopicKind::ALL {
            let topic = kind.for_device(&device);
            assert_eq!(parse(&topic).unwrap(), (device.clone(), kind));
        }
        assert_eq!(
            TopicKind::CmdReply.for_device(&device),
            "coracle/v1/pi-7/cmd/reply"
        );
    }

    #[test]
    fn qos_and_retain_follow_the_design_table() {
        assert_eq!(TopicKind::Health.qos(), 0);
        assert!(TopicKind::Desired.retained() && TopicKind::Online.retained());
        assert!(!TopicKind::Events.retained() && !TopicKind::Health.retained());
        assert_eq!(
            TopicKind::Desired.direction(),
            Direction::ControllerToDevice
        );
        assert_eq!(TopicKind::Online.direction(), Direction::DeviceToController);
        assert!(TopicKind::Keys.retained() && TopicKind::Keys.qos() == 1);
        assert_eq!(TopicKind::Keys.direction(), Direction::ControllerToDevice);
    }

    #[test]
    fn foreign_or_malformed_topics_are_refused() {
        assert!(matches!(parse("other/x"), Err(TopicError::Prefix { .. })));
        assert!(matches!(
            parse("coracle/v1/pi"),
            Err(TopicError::Suffix { .. })
        ));
        assert!(matches!(
            parse("coracle/v1/pi/desired/extra"),
            Err(TopicError::Suffix { .. })
        ));
        assert!(matches!(
            parse("coracle/v1/PI/desired"),
            Err(TopicError::Device { .. })
        ));
        assert_eq!(TopicKind::Health.for_all_devices(), "coracle/v1/+/health");
    }
}
