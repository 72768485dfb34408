//! Networking keys: `network_mode`, top-level and service `networks`, `ports`, `expose`,
//! `dns`, `dns_search`, `dns_opt`, `extra_hosts` — every supported form and every refusal.

use super::*;
use coracle_proto::network::{NetworkAttachment, PortMapping, Protocol};
use coracle_proto::{NetworkMode, Tuning};

use super::tests::resolve;

fn load(text: &str) -> Result<Vec<ServiceSpec>, ComposeError> {
    parse(text).and_then(|file| to_specs(text, &file, &ProfileFiles::new(), &resolve))
}

/// One service `web` with `keys` (indented under it) and then `tail` at the top level.
fn web(keys: &str, tail: &str) -> String {
    let keys: String = keys.lines().map(|l| format!("    {l}\n")).collect();
    format!("services:\n  web:\n    image: app:1\n{keys}{tail}")
}

fn spec(keys: &str, tail: &str) -> ServiceSpec {
    let text = web(keys, tail);
    load(&text)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .remove(0)
}

/// The error message of `web(keys, tail)`, checked to contain each of `parts`.
fn refused(keys: &str, tail: &str, parts: &[&str]) -> ComposeError {
    let text = web(keys, tail);
    let err = load(&text).expect_err(&text);
    let message = err.to_string();
    for part in parts {
        assert!(message.contains(part), "{keys}: {message:?} lacks {part:?}");
    }
    err
}

fn attach(name: &str, aliases: &[&str], internal: bool) -> Tuning {
    Tuning::Network(NetworkAttachment {
        name: name.into(),
        aliases: aliases.iter().map(|a| a.to_string()).collect(),
        internal,
    })
}

fn publish(ip: Option<[u8; 4]>, host: u16, container: u16, protocol: Protocol) -> Tuning {
    Tuning::Publish(PortMapping {
        host_ip: ip,
        host_port: host,
        container_port: container,
        protocol,
    })
}

const TCP: Protocol = Protocol::Tcp;
const UDP: Protocol = Protocol::Udp;

#[test]
fn a_service_without_network_mode_joins_the_default_network() {
    for keys in ["", "network_mode: bridge"] {
        let s = spec(keys, "");
        assert_eq!(s.network, NetworkMode::Private, "{keys}");
        assert_eq!(s.tuning, [attach("default", &[], false)], "{keys}");
    }
    for (keys, mode) in [
        ("network_mode: host", NetworkMode::Host),
        ("network_mode: none", NetworkMode::None),
    ] {
        let s = spec(keys, "");
        assert_eq!(s.network, mode);
        assert!(s.tuning.is_empty(), "{keys}: {:?}", s.tuning);
    }
    // net.* sysctls are the service's own now.
    spec("sysctls: [net.core.somaxconn=1024]", "");
}

#[test]
fn network_modes_compose_does_not_run_here_are_refused() {
    for mode in ["service:db", "container:abc"] {
        refused(
            &format!("network_mode: \"{mode}\""),
            "",
            &[
                "line 4",
                "field network_mode",
                mode,
                "not supported on devices yet: sharing another container's network",
            ],
        );
    }
    refused(
        "network_mode: overlay",
        "",
        &["network_mode", "is not host, none or bridge"],
    );
    refused(
        "network_mode: host\nnetworks: [back]",
        "networks:\n  back:\n",
        &["line 4", "network_mode", "exclude each other"],
    );
}

#[test]
fn services_join_the_declared_networks_with_aliases_and_internal() {
    let tail = "networks:\n  front:\n  back:\n    driver: bridge\n    internal: true\n    labels: [tier=back]\n    x-note: dropped\n";
    let list = spec("networks: [front, back]", tail);
    assert_eq!(list.network, NetworkMode::Private);
    assert_eq!(
        list.tuning,
        [attach("front", &[], false), attach("back", &[], true)]
    );
    let map = spec(
        "networks:\n  front:\n    aliases: [www, site.local]\n    x-note: dropped\n  back: null",
        tail,
    );
    assert_eq!(
        map.tuning,
        [
            attach("back", &[], true),
            attach("front", &["www", "site.local"], false)
        ]
    );
    // `default` may be declared, to make it internal; naming it joins it.
    let default = spec(
        "networks: [default, back]",
        "networks:\n  default:\n    internal: true\n  back: {}\n",
    );
    assert_eq!(
        default.tuning,
        [attach("default", &[], true), attach("back", &[], false)]
    );
    spec("", "networks:\n  back:\n    external: false\n");
}

#[test]
fn what_a_device_cannot_do_with_networks_is_refused_by_name() {
    refused(
        "networks: [back]",
        "",
        &[
            "line 4",
            "field networks",
            "\"back\" is not declared under the top-level networks",
        ],
    );
    refused(
        "",
        "networks:\n  back:\n    driver: overlay\n",
        &[
            "line 6",
            "networks.back.driver: not supported on devices yet: network driver \"overlay\"",
        ],
    );
    for external in ["true", "{name: shared}"] {
        refused(
            "",
            &format!("networks:\n  back:\n    external: {external}\n"),
            &[
                "line 6",
                "networks.back.external: not supported on devices yet: external networks",
            ],
        );
    }
    refused(
        "",
        "networks:\n  back:\n    labels: [=x]\n",
        &["networks.back.labels", "no key"],
    );
    refused(
        "",
        "networks:\n  back:\n    intenal: true\n",
        &["line 6", "unknown field `intenal`"],
    );
    refused(
        "networks:\n  back:\n    alias: [b]",
        "networks:\n  back:\n",
        &["unknown field `alias`"],
    );
    // Checked on the device's rules: an alias must be a host name.
    refused(
        "networks:\n  back:\n    aliases: [\"a b\"]",
        "networks:\n  back:\n",
        &["line 4", "service web: networks.aliases: \"a b\""],
    );
}

#[test]
fn short_ports_become_one_mapping_per_port() {
    let s = spec(
        "ports:\n  - \"8080:80\"\n  - 127.0.0.1:8443:443\n  - \"5353:53/udp\"\n  - 8000-8001:9000-9001\n  - \"127.0.0.1:7000-7001:70-71/tcp\"\n  - 0.0.0.0:81:81",
        "",
    );
    let local = Some([127, 0, 0, 1]);
    assert_eq!(
        s.tuning[1..],
        [
            publish(None, 8080, 80, TCP),
            publish(local, 8443, 443, TCP),
            publish(None, 5353, 53, UDP),
            publish(None, 8000, 9000, TCP),
            publish(None, 8001, 9001, TCP),
            publish(local, 7000, 70, TCP),
            publish(local, 7001, 71, TCP),
            publish(None, 81, 81, TCP),
        ]
    );
}

#[test]
fn long_ports_become_mappings() {
    let s = spec(
        "ports:\n  - target: 80\n    published: \"8080\"\n    host_ip: 127.0.0.1\n    mode: host\n    name: web\n    app_protocol: http\n    x-note: dropped\n  - target: \"53\"\n    published: 5353\n    protocol: udp\n    mode: ingress\n  - target: 9000\n    published: 9000-9000",
        "",
    );
    assert_eq!(
        s.tuning[1..],
        [
            publish(Some([127, 0, 0, 1]), 8080, 80, TCP),
            publish(None, 5353, 53, UDP),
            publish(None, 9000, 9000, TCP),
        ]
    );
}

#[test]
fn ports_a_device_cannot_publish_are_refused_naming_the_entry() {
    let random = "not supported on devices yet: a random host port (give HOST:CONTAINER)";
    let ipv6 = "not supported on devices yet: IPv6 addresses";
    for (entry, parts) in [
        ("\"80\"", &["\"80\"", random][..]),
        ("80", &["\"80\"", random]),
        ("\"127.0.0.1::80\"", &[random]),
        ("\"[::1]:80:80\"", &[ipv6]),
        ("\"::1:80:80\"", &[ipv6]),
        (
            "\"8000-8005:80\"",
            &["a host port range for one container port"],
        ),
        ("\"8000-8001:80-82\"", &["ranges differ in length"]),
        ("\"80:80/sctp\"", &["\"sctp\" is not tcp or udp"]),
        ("\"http:80\"", &["is not [IP:]HOST:CONTAINER"]),
        ("\"70000:80\"", &["is not [IP:]HOST:CONTAINER"]),
        ("\"1.2.3:80:80\"", &["\"1.2.3\" is not an IPv4 address"]),
        ("{target: 80}", &["\"target: 80\"", random]),
        (
            "{target: 80, published: 8080, protocol: sctp}",
            &["protocol \"sctp\""],
        ),
        (
            "{target: 80, published: 8080, mode: swarm}",
            &["mode \"swarm\""],
        ),
        ("{target: 80, published: 8080, host_ip: \"::1\"}", &[ipv6]),
        ("{target: 80-81, published: 8080}", &["target \"80-81\""]),
        ("{target: 80, published: x}", &["published \"x\""]),
    ] {
        let mut all = vec!["line 4", "field ports"];
        all.extend_from_slice(parts);
        refused(&format!("ports:\n  - {entry}"), "", &all);
    }
    refused(
        "ports:\n  - {target: 80, publish: 8080}",
        "",
        &["unknown field `publish`"],
    );
}

#[test]
fn ports_need_the_app_networks_and_a_host_port_is_published_once() {
    refused(
        "network_mode: host\nports: [\"8080:80\"]",
        "",
        &[
            "line 5",
            "service web: ports: \"8080:80/tcp\" has no effect with network_mode: host",
        ],
    );
    refused(
        "network_mode: none\nports: [\"8080:80\"]",
        "",
        &["line 5", "cannot reach a service with network_mode: none"],
    );
    refused(
        "ports: [\"8080:80\", \"8080:81\"]",
        "",
        &["line 4", "is given twice"],
    );
    let text = "services:\n  a:\n    image: app:1\n    ports: [\"8080:80\"]\n  b:\n    image: app:1\n    ports: [\"8080:80\"]\n";
    let message = load(text).unwrap_err().to_string();
    assert!(
        message.contains("line 7") && message.contains("another service of the app"),
        "{message}"
    );
    let text = "services:\n  a:\n    image: app:1\n    ports: [\"127.0.0.1:8080:80\"]\n  b:\n    image: app:1\n    ports: [\"10.0.0.1:8080:80\"]\n";
    load(text).unwrap();
}

#[test]
fn exposed_ports_and_ranges() {
    let s = spec("expose: [\"3000\", \"4000-4001\", \"53/udp\", 8080]", "");
    let expose = |port, protocol| Tuning::Expose { port, protocol };
    assert_eq!(
        s.tuning[1..],
        [
            expose(3000, TCP),
            expose(4000, TCP),
            expose(4001, TCP),
            expose(53, UDP),
            expose(8080, TCP),
        ]
    );
    for (entry, part) in [
        ("\"x\"", "\"x\" is not PORT, PORT-PORT or PORT/PROTOCOL"),
        ("\"0\"", "is not PORT"),
        ("\"5-3\"", "is not PORT"),
        ("\"53/icmp\"", "\"icmp\" is not tcp or udp"),
    ] {
        refused(
            &format!("expose: [{entry}]"),
            "",
            &["line 4", "field expose", part],
        );
    }
}

#[test]
fn dns_settings_and_extra_hosts() {
    let s = spec(
        "dns: 1.1.1.1\ndns_search: corp.example\ndns_opt: [\"ndots:2\", edns0]\nextra_hosts: [\"db:10.0.0.5\", \"cache=10.0.0.6\", \"host.docker.internal:host-gateway\"]",
        "",
    );
    let host = |name: &str, address| Tuning::ExtraHost {
        name: name.into(),
        address,
    };
    assert_eq!(
        s.tuning[1..],
        [
            Tuning::Dns([1, 1, 1, 1]),
            Tuning::DnsSearch("corp.example".into()),
            Tuning::DnsOption("ndots:2".into()),
            Tuning::DnsOption("edns0".into()),
            host("db", [10, 0, 0, 5]),
            host("cache", [10, 0, 0, 6]),
            Tuning::ExtraHostGateway("host.docker.internal".into()),
        ]
    );
    let lists = spec(
        "dns: [8.8.8.8, 9.9.9.9]\ndns_search: [a.example, b.example]\nextra_hosts:\n  db: 10.0.0.5",
        "",
    );
    assert_eq!(
        lists.tuning[1..],
        [
            Tuning::Dns([8, 8, 8, 8]),
            Tuning::Dns([9, 9, 9, 9]),
            Tuning::DnsSearch("a.example".into()),
            Tuning::DnsSearch("b.example".into()),
            host("db", [10, 0, 0, 5]),
        ]
    );
}

#[test]
fn dns_and_extra_hosts_a_device_cannot_use_are_refused() {
    let ipv6 = "not supported on devices yet: IPv6 addresses";
    for (keys, parts) in [
        ("dns: \"::1\"", &["field dns", "\"::1\"", ipv6][..]),
        (
            "dns: [1.1.1.1, dns.example]",
            &["field dns", "\"dns.example\" is not an IPv4 address"],
        ),
        (
            "dns_search: \"a..b\"",
            &["service web: dns_search: \"a..b\""],
        ),
        ("dns_opt: [\"a b\"]", &["service web: dns_opt: \"a b\""]),
        (
            "extra_hosts: [\"gw:host-gateway\"]\nnetwork_mode: none",
            &[
                "extra_hosts: \"gw:host-gateway\"",
                "network_mode none has no way to the device",
            ],
        ),
        (
            "extra_hosts: [\"v6=::1\"]",
            &["field extra_hosts", "v6: \"::1\"", ipv6],
        ),
        ("extra_hosts: [\"v6:::1\"]", &["v6: \"::1\"", ipv6]),
        (
            "extra_hosts: [nothing]",
            &["\"nothing\" is not NAME=IP or NAME:IP"],
        ),
        (
            "extra_hosts: {db: 10.0.0}",
            &["db: \"10.0.0\" is not an IPv4 address"],
        ),
        (
            "extra_hosts: [\"bad name=1.2.3.4\"]",
            &["service web: extra_hosts: \"bad name\""],
        ),
    ] {
        let mut all = vec!["line 4"];
        all.extend_from_slice(parts);
        refused(keys, "", &all);
    }
}
