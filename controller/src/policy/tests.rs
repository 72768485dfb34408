//! The policy's rules as tables over real compose text.

use std::collections::{BTreeMap, BTreeSet};

use coracle_proto::{Digest, ImageRef, ServiceSpec};

use super::*;
use crate::compose::{parse, to_specs, ProfileFiles};

/// The app's services (images pinned to a placeholder) and its host-network requests.
fn app(service_lines: &str) -> (Vec<ServiceSpec>, BTreeSet<String>) {
    let text = format!("services:\n  web:\n    image: web:1\n{service_lines}");
    let file = parse(&text).unwrap();
    let image = ImageRef {
        registry: String::new(),
        repository: "web".into(),
        digest: Digest::from_bytes([7; 32]),
    };
    let specs = to_specs(&text, &file, &ProfileFiles::new(), &|_| Ok(image.clone()))
        .unwrap_or_else(|e| panic!("{service_lines}: {e}"));
    (specs, host_network_services(&file))
}

fn policy(text: &str) -> Policy {
    Policy::new(&toml::from_str(text).unwrap()).unwrap()
}

fn device(id: &str) -> DeviceId {
    id.parse().unwrap()
}

/// The refusal of `service_lines` on device `pi-1` tagged `site=berlin`, if any.
fn refused(policy: &Policy, service_lines: &str) -> Option<String> {
    refused_on(policy, "pi-1", &[("site", "berlin")], service_lines)
}

fn refused_on(
    policy: &Policy,
    id: &str,
    tags: &[(&str, &str)],
    service_lines: &str,
) -> Option<String> {
    let (services, host) = app(service_lines);
    let tags: BTreeMap<String, String> = tags
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    policy
        .check(&device(id), &tags, &AppRequest::new(&services, &host))
        .err()
        .map(|e| e.refusal.to_string())
}

#[test]
fn default_policy_allows_ordinary_apps() {
    let policy = Policy::default();
    let ordinary = [
        "",
        "    volumes: [\"data:/var/lib/app\", \"cache:/cache:ro\"]\n",
        "    volumes: [{type: volume, source: data, target: /data}, {type: tmpfs, target: /run}]\n",
        "    cap_add: [NET_BIND_SERVICE, chown, CAP_KILL]\n",
        "    cap_drop: [ALL]\n",
        "    privileged: false\n",
        "    network_mode: none\n",
        "    network_mode: bridge\n",
    ];
    for lines in ordinary {
        assert_eq!(refused(&policy, lines), None, "{lines}");
    }
}

#[test]
fn default_policy_refuses_host_access_naming_the_rule() {
    let policy = Policy::default();
    let cases = [
        (
            "    volumes: [\"/:/host\"]\n",
            "service \"web\": volumes \"/:/host\": host path \"/\" is not under any policy.bind_paths entry",
        ),
        (
            "    volumes:\n      - type: bind\n        source: /\n        target: /host\n",
            "service \"web\": volumes \"/:/host\": host path \"/\" is not under any policy.bind_paths entry",
        ),
        (
            "    volumes: [\"/etc:/etc:ro\"]\n",
            "service \"web\": volumes \"/etc:/etc:ro\": host path \"/etc\" is not under any policy.bind_paths entry",
        ),
        (
            "    cap_add: [SYS_ADMIN]\n",
            "service \"web\": cap_add \"SYS_ADMIN\": CAP_SYS_ADMIN is not in Docker's default set nor in policy.capabilities",
        ),
        (
            "    cap_add: [CHOWN, sys_module]\n",
            "service \"web\": cap_add \"sys_module\": CAP_SYS_MODULE is not in Docker's default set nor in policy.capabilities",
        ),
        (
            "    cap_add: [ALL]\n",
            "service \"web\": cap_add \"ALL\": every capability makes the container privileged: needs policy.privileged = true",
        ),
        (
            "    privileged: true\n",
            "service \"web\": privileged \"true\": a privileged container has every capability and host device: needs policy.privileged = true",
        ),
        (
            "    network_mode: host\n",
            "service \"web\": network_mode \"host\": the host's network needs policy.host_network = true",
        ),
        (
            "    devices: [\"/dev/i2c-1\"]\n",
            "service \"web\": devices \"/dev/i2c-1:/dev/i2c-1:rwm\": host device \"/dev/i2c-1\" is not under any policy.devices entry",
        ),
    ];
    for (lines, want) in cases {
        assert_eq!(refused(&policy, lines).as_deref(), Some(want), "{lines}");
    }
}

#[test]
fn configured_policy_allows_what_it_grants() {
    let policy = policy(
        "bind_paths = [\"/\"]\ncapabilities = [\"SYS_ADMIN\", \"sys_module\"]\n\
         devices = [\"/dev/i2c-1\", \"/dev/bus/usb\"]\nhost_network = true\nprivileged = true\n",
    );
    for lines in [
        "    volumes: [\"/:/host\"]\n",
        "    volumes: [{type: bind, source: /, target: /host}]\n",
        "    cap_add: [SYS_ADMIN, SYS_MODULE]\n",
        "    cap_add: [ALL]\n",
        "    privileged: true\n",
        "    network_mode: host\n",
        "    devices: [\"/dev/i2c-1:/dev/i2c-1:r\", \"/dev/bus/usb/001/002\"]\n",
    ] {
        assert_eq!(refused(&policy, lines), None, "{lines}");
    }
}

#[test]
fn privileged_grants_every_capability() {
    let policy = policy("privileged = true\n");
    assert_eq!(refused(&policy, "    cap_add: [SYS_ADMIN, ALL]\n"), None);
    assert_eq!(refused(&policy, "    privileged: true\n"), None);
}

#[test]
fn bind_paths_match_whole_components_after_normalising() {
    let policy = policy("bind_paths = [\"/srv/data\"]\nread_only_bind_paths = [\"/etc/ssl\"]\n");
    let allowed = [
        "    volumes: [\"/srv/data:/data\"]\n",
        "    volumes: [\"/srv/data/app/x:/data\"]\n",
        "    volumes: [\"/srv//data/./app:/data\"]\n",
        "    volumes: [\"/etc/ssl/certs:/certs:ro\"]\n",
        "    volumes: [{type: bind, source: /etc/ssl, target: /certs, read_only: true}]\n",
        "    volumes: [\"/srv/data:/data:ro\"]\n",
    ];
    for lines in allowed {
        assert_eq!(refused(&policy, lines), None, "{lines}");
    }
    let refusals = [
        (
            "    volumes: [\"/srv/database:/db\"]\n",
            "\"/srv/database\" is not under",
        ),
        ("    volumes: [\"/srv:/srv\"]\n", "\"/srv\" is not under"),
        (
            "    volumes: [\"/etc/ssl:/certs\"]\n",
            "under a policy.read_only_bind_paths entry: mount it \":ro\"",
        ),
        (
            "    volumes: [{type: bind, source: /etc/ssl, target: /certs}]\n",
            "under a policy.read_only_bind_paths entry: mount it \":ro\"",
        ),
        (
            "    volumes: [\"/etc/sslx:/x:ro\"]\n",
            "\"/etc/sslx\" is not under",
        ),
    ];
    for (lines, want) in refusals {
        let got = refused(&policy, lines).unwrap_or_default();
        assert!(got.contains(want), "{lines}: {got}");
    }
}

#[test]
fn dot_dot_in_a_host_path_cannot_climb_out_of_a_granted_prefix() {
    // Compose validation refuses `..` already; the rule must not depend on it.
    let policy = policy("bind_paths = [\"/srv/data\"]\n");
    let (mut services, host) = app("    volumes: [\"/srv/data:/data\"]\n");
    if let coracle_proto::VolumeSource::HostPath(path) = &mut services[0].volumes[0].source {
        *path = "/srv/data/../../etc".into();
    }
    let err = policy
        .check(
            &device("pi-1"),
            &BTreeMap::new(),
            &AppRequest::new(&services, &host),
        )
        .unwrap_err();
    assert!(
        err.refusal.rule.contains("host path \"/etc\" is not under"),
        "{err:?}"
    );
}

#[test]
fn devices_match_listed_paths_and_directories() {
    let policy = policy("devices = [\"/dev/ttyUSB0\", \"/dev/bus/usb\"]\n");
    assert_eq!(
        refused(&policy, "    devices: [\"/dev/ttyUSB0:/dev/ttyS0:rw\"]\n"),
        None
    );
    assert_eq!(
        refused(&policy, "    devices: [\"/dev/bus/usb/001/004\"]\n"),
        None
    );
    for lines in [
        "    devices: [\"/dev/ttyUSB01\"]\n",
        "    devices: [\"/dev/mem\"]\n",
        "    devices: [\"/dev/bus/usbx\"]\n",
    ] {
        assert!(refused(&policy, lines).is_some(), "{lines}");
    }
}

#[test]
fn allow_entries_widen_only_for_their_tag_or_device() {
    let policy = policy(
        "[[allow]]\ntag = \"site=lab\"\nbind_paths = [\"/\"]\ncapabilities = [\"SYS_ADMIN\"]\n\
         host_network = true\n\
         [[allow]]\ndevice = \"pi-9\"\ndevices = [\"/dev/i2c-1\"]\n",
    );
    let lab = [("site", "lab")];
    let berlin = [("site", "berlin")];
    let host = "    volumes: [\"/:/host\"]\n    cap_add: [SYS_ADMIN]\n    network_mode: host\n";
    assert_eq!(refused_on(&policy, "pi-1", &lab, host), None);
    let other = refused_on(&policy, "pi-1", &berlin, host).unwrap_or_default();
    assert!(other.contains("\"/:/host\""), "{other}");
    assert!(refused_on(&policy, "pi-2", &[], host).is_some());
    let i2c = "    devices: [\"/dev/i2c-1\"]\n";
    assert_eq!(refused_on(&policy, "pi-9", &berlin, i2c), None);
    assert!(refused_on(&policy, "pi-1", &lab, i2c).is_some());
}

#[test]
fn privileged_is_granted_per_tag_or_device_only() {
    let policy = policy(
        "[[allow]]\ntag = \"role=gateway\"\nprivileged = true\n\
         [[allow]]\ndevice = \"pi-9\"\nprivileged = true\n",
    );
    let privileged = "    privileged: true\n";
    let gateway = [("role", "gateway")];
    assert_eq!(refused_on(&policy, "pi-1", &gateway, privileged), None);
    assert_eq!(refused_on(&policy, "pi-9", &[], privileged), None);
    let other = refused_on(&policy, "pi-2", &[("role", "sensor")], privileged);
    assert_eq!(
        other.as_deref(),
        Some(
            "service \"web\": privileged \"true\": a privileged container has every \
             capability and host device: needs policy.privileged = true"
        )
    );
}

#[test]
fn refusal_names_the_device() {
    let (services, host) = app("    cap_add: [SYS_ADMIN]\n");
    let err = Policy::default()
        .check(
            &device("pi-7"),
            &BTreeMap::new(),
            &AppRequest::new(&services, &host),
        )
        .unwrap_err();
    assert_eq!(
        crate::api::error::error_chain(&err),
        "the deploy policy refuses the app for device pi-7: service \"web\": cap_add \
         \"SYS_ADMIN\": CAP_SYS_ADMIN is not in Docker's default set nor in policy.capabilities"
    );
}

#[test]
fn privileged_host_ports_are_refused_unless_granted() {
    let default = Policy::default();
    assert_eq!(
        refused(&default, "    ports: [\"80:8080\"]\n").as_deref(),
        Some(
            "service \"web\": ports \"80:8080/tcp\": host port 80 is privileged (below 1024): \
             needs it in policy.host_ports"
        )
    );
    // A range is one entry per port, each judged; the long form and an address alike.
    let range = refused(&default, "    ports: [\"1022-1025:22-25\"]\n").unwrap_or_default();
    assert!(range.contains("\"1022:22/tcp\": host port 1022"), "{range}");
    let long = "    ports:\n      - target: 53\n        published: \"53\"\n        protocol: udp\n        host_ip: 127.0.0.1\n";
    let got = refused(&default, long).unwrap_or_default();
    assert!(
        got.contains("\"127.0.0.1:53:53/udp\": host port 53"),
        "{got}"
    );
    for fine in [
        "    ports: [\"1024:80\", \"8080:80\"]\n",
        "    expose: [\"80\"]\n",
    ] {
        assert_eq!(refused(&default, fine), None, "{fine}");
    }

    let granted = policy("host_ports = [80, 443]\n");
    assert_eq!(
        refused(&granted, "    ports: [\"80:80\", \"443:443\"]\n"),
        None
    );
    let other = refused(&granted, "    ports: [\"80:80\", \"22:22\"]\n").unwrap_or_default();
    assert!(other.contains("host port 22 is privileged"), "{other}");

    let lab = policy("[[allow]]\ntag = \"site=lab\"\nhost_ports = [53]\n");
    let dns = "    ports: [\"53:53/udp\"]\n";
    assert_eq!(refused_on(&lab, "pi-1", &[("site", "lab")], dns), None);
    assert!(refused_on(&lab, "pi-1", &[("site", "berlin")], dns).is_some());
}

#[test]
fn exec_is_granted_per_tag_or_device_and_refused_by_default() {
    let tags = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    assert!(!Policy::default().allows_exec(&device("pi-1"), &tags(&[])));
    let lab = policy(
        "[[allow]]\ntag = \"lab=yes\"\nexec = true\n[[allow]]\ndevice = \"pi-9\"\nexec = true\n",
    );
    assert!(lab.allows_exec(&device("pi-1"), &tags(&[("lab", "yes")])));
    assert!(!lab.allows_exec(&device("pi-1"), &tags(&[("lab", "no")])));
    assert!(lab.allows_exec(&device("pi-9"), &tags(&[])));
    assert!(policy("exec = true\n").allows_exec(&device("pi-1"), &tags(&[])));
}
