//! What a nats-server node needs to carry Coracle's protocol through its MQTT interface, as
//! pure text: one node's config (`node_conf`) and the accounts file every node of the
//! cluster includes (`accounts_conf`). `coracle broker nats-config` writes them;
//! `broker::nats_accounts` rewrites the accounts file when devices come and go.
//!
//! How NATS maps the protocol (nats-server 2.9, Debian 12):
//! - MQTT topic `coracle/v1/dev-a/health` is NATS subject `coracle.v1.dev-a.health`; user
//!   permissions are on subjects, so a device's permissions name its own subjects (the same
//!   rule as `broker::acl`: publish device-to-controller kinds, subscribe controller-to-device
//!   kinds, nothing else).
//! - A QoS 1 subscription is a JetStream consumer delivering on `$MQTT.sub.<random>`, which
//!   the subscribing client must be allowed to subscribe to; an MQTT client cannot name a
//!   `$MQTT/...` topic itself, and devices may connect over MQTT only
//!   (`allowed_connection_types`), so no device can read another's deliveries natively.
//! - The controller user has explicit allow-all permissions, not none: 2.9.10 dereferences
//!   the permissions of whoever published a retained message when it reloads its config,
//!   and crashes (nil pointer in `mqttCheckPubRetainedPerms`) for a user without any
//!   (fixed upstream in nats-server PR #7596, after 2.9.10).
//! - `max_ack_pending` is spelled out: 2.9.10 re-applies the `mqtt` block on every reload
//!   when it has TLS, and an unset value (0) then stops the deliveries of every QoS 1
//!   subscription already made (reproduced: a device's `desired` went silent after the
//!   first enrolment's reload).
//! - NATS has no `use_username_as_clientid`: the MQTT client id is not bound to the user.

use std::fmt::Write as _;
use std::path::PathBuf;

use coracle_proto::topic::Direction;
use coracle_proto::{DeviceId, TopicKind};

use super::acl::CONTROLLER_USER;

/// The accounts file every node includes (devices are added and removed in it).
pub const ACCOUNTS_FILE: &str = "accounts.conf";
/// The account list the accounts file is made from: `<user> <bcrypt hash>` per line, the
/// controller first. Private: the hashes stay on the broker's host.
pub const USERS_FILE: &str = "users";
/// The nodes' TLS certificate and its key, in one file (0600).
pub const TLS_PAIR_FILE: &str = "broker-tls.pem";

/// NATS subject of an MQTT topic: levels become tokens.
pub fn subject(topic: &str) -> String {
    topic.replace('/', ".")
}

/// MQTT topic of a NATS subject (the inverse of [`subject`] for Coracle's topics, whose
/// levels hold no `.`: device ids are lowercase letters, digits and `-`).
pub fn topic(subject: &str) -> String {
    subject.replace('.', "/")
}

/// The subjects `device` may publish (`publish`) or subscribe to.
pub fn device_subjects(device: &DeviceId, direction: Direction) -> Vec<String> {
    TopicKind::ALL
        .iter()
        .filter(|kind| kind.direction() == direction)
        .map(|kind| subject(&kind.for_device(device)))
        .collect()
}

/// The kinds the controllers take through a NATS queue group instead of MQTT.
pub const QUEUED_KINDS: [TopicKind; 3] =
    [TopicKind::Health, TopicKind::Reported, TopicKind::Events];

fn quoted_list(items: &[String]) -> String {
    let items: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", items.join(", "))
}

/// The `authorization` block for the controller (its own bcrypt hash) and `devices`.
pub fn accounts_conf(controller_hash: &str, devices: &[(DeviceId, String)]) -> String {
    let mut text = String::from(
        "# Written by coracle (broker::nats_accounts); edits are overwritten.\nauthorization {\n  users = [\n",
    );
    let _ = writeln!(
        text,
        "    {{ user: {CONTROLLER_USER:?}, password: {controller_hash:?}, \
         permissions: {{ publish: {{ allow: [\">\"] }}, subscribe: {{ allow: [\">\"] }} }}, \
         allowed_connection_types: [\"STANDARD\", \"MQTT\"] }}"
    );
    for (device, hash) in devices {
        let publish = device_subjects(device, Direction::DeviceToController);
        let mut subscribe = device_subjects(device, Direction::ControllerToDevice);
        subscribe.push("$MQTT.sub.>".into());
        let _ = writeln!(
            text,
            "    {{ user: {device:?}, password: {hash:?}, permissions: {{ publish: {{ allow: {} }}, \
             subscribe: {{ allow: {} }} }}, allowed_connection_types: [\"MQTT\"] }}",
            quoted_list(&publish),
            quoted_list(&subscribe),
            device = device.as_str(),
        );
    }
    text.push_str("  ]\n}\n");
    text
}

/// One node of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsNode {
    /// Where the node's files are (TLS files, accounts, its JetStream store and pid file).
    pub dir: PathBuf,
    /// Unique in the cluster (JetStream needs it).
    pub name: String,
    pub cluster: String,
    /// `host:port` of the controllers' native listener (`-1`: a port the OS picks).
    pub client_listen: String,
    /// TLS (the broker certificate) on the native listener too.
    pub client_tls: bool,
    /// `host:port` of the devices' MQTT listener, always TLS.
    pub mqtt_listen: String,
    /// `host:port` of the route listener; routes to every node, itself included.
    pub cluster_listen: String,
    pub routes: Vec<String>,
}

/// The node's config: JetStream (MQTT keeps sessions, retained messages and QoS 1 state
/// in it), the native listener, the MQTT listener with the controller's broker
/// certificate, the cluster routes, and the shared accounts file.
pub fn node_conf(node: &NatsNode) -> String {
    let path = |name: &str| format!("{:?}", node.dir.join(name).display().to_string());
    // One file holds both (Go's TLS loader skips the blocks of the other kind).
    let tls = format!(
        "tls {{ cert_file: {}, key_file: {} }}",
        path(TLS_PAIR_FILE),
        path(TLS_PAIR_FILE)
    );
    let routes: Vec<String> = node
        .routes
        .iter()
        .map(|r| format!("nats-route://{r}"))
        .collect();
    let client_tls = if node.client_tls {
        format!("{tls}\n")
    } else {
        String::new()
    };
    format!(
        "# Written by `coracle broker nats-config`.\n\
         server_name: {name:?}\n\
         # The controllers' native connections: telemetry through a queue group.\n\
         listen: {client:?}\n{client_tls}\
         # `coracle serve` (broker.nats_dir) reloads every node through its pid file.\n\
         pid_file: {pid}\n\
         jetstream {{ store_dir: {store} }}\n\
         cluster {{ name: {cluster:?}, listen: {cluster_listen:?}, routes: {routes} }}\n\
         # Devices: MQTT over TLS with the controller CA's broker certificate; user name and\n\
         # password of their bootstrap files.\n\
         # ack_wait and max_ack_pending are nats-server's defaults, spelled out: 2.9.10\n\
         # re-applies the mqtt block on every reload when it has TLS, and an unset\n\
         # max_ack_pending (0) then stops every QoS 1 subscription already made.\n\
         mqtt {{ listen: {mqtt:?}, ack_wait: \"30s\", max_ack_pending: 1024, {tls} }}\n\
         include {accounts:?}\n",
        name = node.name,
        client = node.client_listen,
        pid = path(&format!("{}.pid", node.name)),
        store = path(&format!("{}-js", node.name)),
        cluster = node.cluster,
        cluster_listen = node.cluster_listen,
        routes = quoted_list(&routes),
        mqtt = node.mqtt_listen,
        accounts = ACCOUNTS_FILE,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_permissions_name_only_its_own_subjects() {
        let a: DeviceId = "dev-a".parse().unwrap();
        let text = accounts_conf("$2a$06$c", &[(a, "$2a$06$x".into())]);
        let line = text.lines().find(|l| l.contains("\"dev-a\"")).unwrap();
        for subject in [
            "coracle.v1.dev-a.health",
            "coracle.v1.dev-a.reported",
            "coracle.v1.dev-a.online",
            "coracle.v1.dev-a.cmd.reply",
            "coracle.v1.dev-a.desired",
            "coracle.v1.dev-a.agent-update",
            "$MQTT.sub.>",
        ] {
            assert!(line.contains(&format!("{subject:?}")), "{subject}: {line}");
        }
        assert!(!line.contains("coracle.v1.*") && !line.contains("coracle.v1.>"));
        assert!(
            line.contains("allowed_connection_types: [\"MQTT\"]"),
            "{line}"
        );
        // publish allow holds no controller-to-device subject
        let publish = line.split("subscribe").next().unwrap();
        assert!(!publish.contains("desired"), "{publish}");
    }

    #[test]
    fn the_controller_has_explicit_permissions() {
        let text = accounts_conf("$2a$06$c", &[]);
        let line = text.lines().find(|l| l.contains(CONTROLLER_USER)).unwrap();
        assert!(line.contains("publish: { allow: [\">\"] }"), "{line}");
    }

    #[test]
    fn subjects_and_topics_map_both_ways() {
        let topic_ = "coracle/v1/dev-a/cmd/reply";
        assert_eq!(subject(topic_), "coracle.v1.dev-a.cmd.reply");
        assert_eq!(topic(&subject(topic_)), topic_);
    }

    #[test]
    fn node_conf_has_jetstream_tls_mqtt_and_routes() {
        let node = NatsNode {
            dir: "/etc/nats/coracle".into(),
            name: "n1".into(),
            cluster: "coracle".into(),
            client_listen: "127.0.0.1:4222".into(),
            client_tls: false,
            mqtt_listen: "0.0.0.0:8883".into(),
            cluster_listen: "10.0.0.1:6222".into(),
            routes: vec!["10.0.0.1:6222".into(), "10.0.0.2:6222".into()],
        };
        let conf = node_conf(&node);
        for part in [
            "server_name: \"n1\"",
            "jetstream { store_dir: \"/etc/nats/coracle/n1-js\" }",
            "pid_file: \"/etc/nats/coracle/n1.pid\"",
            "mqtt { listen: \"0.0.0.0:8883\", ack_wait: \"30s\", max_ack_pending: 1024, tls { cert_file: \"/etc/nats/coracle/broker-tls.pem\"",
            "routes: [\"nats-route://10.0.0.1:6222\", \"nats-route://10.0.0.2:6222\"]",
            "include \"accounts.conf\"",
        ] {
            assert!(conf.contains(part), "{part:?} missing:\n{conf}");
        }
        assert_eq!(conf.matches("tls {").count(), 1, "{conf}");
    }
}
