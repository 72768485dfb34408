//! Topic authorization, as pure functions: a device may publish only on its own
//! device-to-controller topics and subscribe only to its own controller-to-device topics
//! (proto's `TopicKind::direction`); the controller may do everything.

use coracle_proto::topic::{self, Direction};
use coracle_proto::DeviceId;

/// Who is connected, as decided by authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Controller,
    Device(DeviceId),
}

/// The MQTT user id the broker carries for the controller's own client.
pub const CONTROLLER_USER: &str = "coracle-controller";

impl Principal {
    /// Parses the user id the broker stored at authentication.
    pub fn from_user_id(user: Option<&str>) -> Option<Self> {
        match user? {
            CONTROLLER_USER => Some(Principal::Controller),
            device => device.parse().ok().map(Principal::Device),
        }
    }
}

/// Whether `principal` may publish on `topic`.
pub fn may_publish(principal: &Principal, topic: &str) -> bool {
    allowed(principal, topic, Direction::DeviceToController)
}

/// Whether `principal` may subscribe to `filter`. Devices get no wildcards: they name the
/// exact topics they read.
pub fn may_subscribe(principal: &Principal, filter: &str) -> bool {
    allowed(principal, filter, Direction::ControllerToDevice)
}

fn allowed(principal: &Principal, topic: &str, device_direction: Direction) -> bool {
    let Principal::Device(device) = principal else {
        return true;
    };
    match topic::parse(topic) {
        Ok((owner, kind)) => &owner == device && kind.direction() == device_direction,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_topic_table() {
        let a = Principal::Device("dev-a".parse().unwrap());
        // (topic, may publish, may subscribe)
        let table = [
            ("coracle/v1/dev-a/reported", true, false),
            ("coracle/v1/dev-a/health", true, false),
            ("coracle/v1/dev-a/events", true, false),
            ("coracle/v1/dev-a/online", true, false),
            ("coracle/v1/dev-a/cmd/reply", true, false),
            ("coracle/v1/dev-a/progress", true, false),
            ("coracle/v1/dev-b/progress", false, false),
            ("coracle/v1/dev-a/desired", false, true),
            ("coracle/v1/dev-a/cmd", false, true),
            ("coracle/v1/dev-a/keys", false, true),
            ("coracle/v1/dev-b/keys", false, false),
            ("coracle/v1/dev-b/reported", false, false),
            ("coracle/v1/dev-b/desired", false, false),
            ("coracle/v1/+/desired", false, false),
            ("coracle/v1/dev-a/#", false, false),
            ("coracle/v1/#", false, false),
            ("#", false, false),
            ("$SYS/broker/clients", false, false),
            ("coracle/v1/dev-a/desired/x", false, false),
        ];
        for (topic, publish, subscribe) in table {
            assert_eq!(may_publish(&a, topic), publish, "publish {topic}");
            assert_eq!(may_subscribe(&a, topic), subscribe, "subscribe {topic}");
        }
    }

    #[test]
    fn controller_may_do_everything() {
        for topic in ["coracle/v1/+/reported", "coracle/v1/dev-a/desired", "#"] {
            assert!(may_publish(&Principal::Controller, topic));
            assert!(may_subscribe(&Principal::Controller, topic));
        }
    }

    #[test]
    fn user_ids_map_to_principals() {
        assert_eq!(
            Principal::from_user_id(Some(CONTROLLER_USER)),
            Some(Principal::Controller)
        );
        assert_eq!(
            Principal::from_user_id(Some("pi-1")),
            Some(Principal::Device("pi-1".parse().unwrap()))
        );
        assert_eq!(Principal::from_user_id(Some("Bad/Id")), None);
        assert_eq!(Principal::from_user_id(None), None);
    }
}
