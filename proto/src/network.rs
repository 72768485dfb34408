//! A service's place on the device's container networks (issue 16): the app networks it
//! joins with its aliases, published and exposed ports, DNS settings and extra host
//! entries. They travel as [`Tuning`] entries (see `tuning`), so older bytes still decode.
//!
//! Rules here are the device's: the controller runs them at `coracle deploy` and the agent
//! again before it touches anything.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;
use serde::{Deserialize, Serialize};

use crate::desired::{DesiredState, NetworkMode, ServiceSpec};
use crate::tuning::{is_hostname, Tuning};
use crate::validate::InvalidDesired;

/// The network a bridged service joins when its spec names none (Compose's `default`).
pub const DEFAULT_NETWORK: &str = "default";
/// Most aliases of one service on one network.
pub const MAX_ALIASES: usize = 16;
/// Most published or exposed ports of one service (a range counts each port).
pub const MAX_PORTS: usize = 1024;

/// An IPv4 address as four bytes: compact on the wire and `no_std`.
pub type Ipv4 = [u8; 4];

/// Displays an [`Ipv4`] as `a.b.c.d`.
#[derive(Debug, Clone, Copy)]
pub struct DottedQuad(pub Ipv4);

impl fmt::Display for DottedQuad {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d] = self.0;
        write!(f, "{a}.{b}.{c}.{d}")
    }
}

/// Parses `a.b.c.d` (no leading zeros, as `inet_pton` takes it).
pub fn parse_ipv4(text: &str) -> Option<Ipv4> {
    let mut out = [0u8; 4];
    let mut parts = text.split('.');
    for byte in &mut out {
        let part = parts.next()?;
        if part.is_empty() || part.len() > 3 || (part.len() > 1 && part.starts_with('0')) {
            return None;
        }
        if !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *byte = part.parse().ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// A transport protocol of a published or exposed port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// An app network a service joins: compose `networks:`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NetworkAttachment {
    /// The app network's name as the compose file spells it (`default`, `backend`).
    pub name: String,
    /// More names this service answers to on that network, besides its own name.
    pub aliases: Vec<String>,
    /// compose `internal: true`: no traffic leaves the device from this network.
    pub internal: bool,
}

/// One published port: compose `ports:`, a range being one entry per port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortMapping {
    /// Only connections to this device address are forwarded; `None`: every address.
    pub host_ip: Option<Ipv4>,
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
}

impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(ip) = self.host_ip {
            write!(f, "{}:", DottedQuad(ip))?;
        }
        let p = self.protocol.as_str();
        write!(f, "{}:{}/{p}", self.host_port, self.container_port)
    }
}

fn is_network_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn is_search_domain(name: &str) -> bool {
    name.len() <= 253
        && !name.is_empty()
        && name
            .split('.')
            .all(|label| is_hostname(label) && !label.contains('.'))
}

fn is_resolver_option(option: &str) -> bool {
    (1..=64).contains(&option.len())
        && option
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'-' | b'_' | b'.'))
}

/// What `validate_tuning` keys a network entry by, so none is given twice.
pub(crate) type EntryKey = (&'static str, String);

impl ServiceSpec {
    /// The app networks this service joins: its `Network` entries, or `default` when it is
    /// bridged and names none. Empty unless `network` is `Private`.
    pub fn networks(&self) -> Vec<NetworkAttachment> {
        if self.network != NetworkMode::Private {
            return Vec::new();
        }
        let listed: Vec<NetworkAttachment> = self
            .tuning
            .iter()
            .filter_map(|t| match t {
                Tuning::Network(a) => Some(a.clone()),
                _ => None,
            })
            .collect();
        if listed.is_empty() {
            alloc::vec![NetworkAttachment {
                name: DEFAULT_NETWORK.to_string(),
                aliases: Vec::new(),
                internal: false,
            }]
        } else {
            listed
        }
    }

    /// The ports this service publishes on the device.
    pub fn published_ports(&self) -> impl Iterator<Item = &PortMapping> {
        self.tuning.iter().filter_map(|t| match t {
            Tuning::Publish(p) => Some(p),
            _ => None,
        })
    }

    /// Checks one networking entry; returns the key it must be unique under.
    pub(crate) fn validate_network_entry(
        &self,
        entry: &Tuning,
    ) -> Result<Option<EntryKey>, InvalidDesired> {
        let bad = |field, value, rule| self.invalid(field, value, rule);
        let key = match entry {
            Tuning::Network(attachment) => {
                if self.network != NetworkMode::Private {
                    return Err(bad(
                        "networks",
                        attachment.name.clone(),
                        "needs the service on an app network (network_mode host or none has none)",
                    ));
                }
                if !is_network_name(&attachment.name) {
                    return Err(bad(
                        "networks",
                        attachment.name.clone(),
                        "must be 1 to 63 letters, digits, '_', '.' or '-', starting with a letter or digit",
                    ));
                }
                if attachment.aliases.len() > MAX_ALIASES {
                    return Err(bad(
                        "networks",
                        attachment.name.clone(),
                        "has more than 16 aliases",
                    ));
                }
                if let Some(alias) = attachment.aliases.iter().find(|a| !is_hostname(a)) {
                    return Err(bad(
                        "networks.aliases",
                        alias.clone(),
                        "must be a host name: 1 to 63 letters, digits, '-' and '.'",
                    ));
                }
                ("networks", attachment.name.clone())
            }
            Tuning::Publish(port) => {
                match self.network {
                    NetworkMode::Private => {}
                    NetworkMode::Host => {
                        return Err(bad(
                            "ports",
                            port.to_string(),
                            "has no effect with network_mode: host (the service listens on the device itself)",
                        ))
                    }
                    NetworkMode::None => {
                        return Err(bad(
                            "ports",
                            port.to_string(),
                            "cannot reach a service with network_mode: none",
                        ))
                    }
                }
                if port.host_port == 0 || port.container_port == 0 {
                    return Err(bad(
                        "ports",
                        port.to_string(),
                        "needs host and container ports from 1 to 65535",
                    ));
                }
                let ip = port.host_ip.map(|ip| DottedQuad(ip).to_string());
                (
                    "ports",
                    format!(
                        "{}:{}/{}",
                        ip.unwrap_or_default(),
                        port.host_port,
                        port.protocol.as_str()
                    ),
                )
            }
            Tuning::Expose { port, protocol } => {
                if *port == 0 {
                    return Err(bad("expose", "0".into(), "must be a port from 1 to 65535"));
                }
                ("expose", format!("{port}/{}", protocol.as_str()))
            }
            Tuning::Dns(_) => return Ok(None),
            Tuning::DnsSearch(domain) => {
                if !is_search_domain(domain) {
                    return Err(bad(
                        "dns_search",
                        domain.clone(),
                        "must be a domain name of letters, digits, '-' and '.'",
                    ));
                }
                return Ok(None);
            }
            Tuning::DnsOption(option) => {
                if !is_resolver_option(option) {
                    return Err(bad(
                        "dns_opt",
                        option.clone(),
                        "must be a resolver option such as ndots:2, timeout:1 or edns0",
                    ));
                }
                return Ok(None);
            }
            Tuning::ExtraHostGateway(name) if self.network == NetworkMode::None => {
                return Err(bad(
                    "extra_hosts",
                    format!("{name}:host-gateway"),
                    "needs a network: network_mode none has no way to the device",
                ));
            }
            Tuning::ExtraHost { name, .. } | Tuning::ExtraHostGateway(name) => {
                if !is_hostname(name) {
                    return Err(bad(
                        "extra_hosts",
                        name.clone(),
                        "must be a host name: 1 to 63 letters, digits, '-' and '.'",
                    ));
                }
                return Ok(None);
            }
            _ => return Ok(None),
        };
        Ok(Some(key))
    }

    /// Checks the number of ports, after each entry passed on its own.
    pub(crate) fn validate_port_count(&self) -> Result<(), InvalidDesired> {
        let ports = self
            .tuning
            .iter()
            .filter(|t| matches!(t, Tuning::Publish(_) | Tuning::Expose { .. }))
            .count();
        if ports > MAX_PORTS {
            return Err(InvalidDesired::Field {
                service: self.name.clone(),
                field: "ports",
                value: ports.to_string(),
                rule: "is more than 1024 published and exposed ports",
            });
        }
        Ok(())
    }
}

impl DesiredState {
    /// Across services: a host port is published once per address and protocol, and the
    /// services on one network agree whether it is internal.
    pub(crate) fn validate_networks(&self) -> Result<(), InvalidDesired> {
        let mut published: BTreeMap<(u16, Protocol), (Option<Ipv4>, &ServiceSpec)> =
            BTreeMap::new();
        let mut internal: BTreeMap<String, bool> = BTreeMap::new();
        for service in &self.services {
            for port in service.published_ports() {
                let key = (port.host_port, port.protocol);
                if let Some((ip, owner)) = published.get(&key) {
                    // Two addresses of the device may each take the port, as Docker allows.
                    let clash = ip.is_none() || port.host_ip.is_none() || *ip == port.host_ip;
                    if clash {
                        return Err(InvalidDesired::Field {
                            service: service.name.clone(),
                            field: "ports",
                            value: port.to_string(),
                            rule: if owner.name == service.name {
                                "publishes a host port this service already publishes"
                            } else {
                                "publishes a host port another service of the app publishes"
                            },
                        });
                    }
                }
                published.insert(key, (port.host_ip, service));
            }
            for network in service.networks() {
                let seen = *internal
                    .entry(network.name.clone())
                    .or_insert(network.internal);
                if seen != network.internal {
                    return Err(InvalidDesired::Field {
                        service: service.name.clone(),
                        field: "networks",
                        value: network.name,
                        rule: "is internal for one service and not for another",
                    });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::samples;
    use alloc::vec;

    #[test]
    fn ipv4_text_round_trips_and_refuses_what_inet_pton_refuses() {
        assert_eq!(parse_ipv4("192.168.1.20"), Some([192, 168, 1, 20]));
        assert_eq!(DottedQuad([10, 0, 0, 1]).to_string(), "10.0.0.1");
        for bad in [
            "",
            "1.2.3",
            "1.2.3.4.5",
            "256.1.1.1",
            "01.2.3.4",
            "a.b.c.d",
            "1..2.3",
        ] {
            assert_eq!(parse_ipv4(bad), None, "{bad:?}");
        }
    }

    fn bridged(tuning: Vec<Tuning>) -> ServiceSpec {
        let mut s = samples::desired_with_services(1).services.remove(0);
        s.network = NetworkMode::Private;
        s.tuning = tuning;
        s
    }

    fn port(host_ip: Option<Ipv4>, host_port: u16, container_port: u16) -> Tuning {
        Tuning::Publish(PortMapping {
            host_ip,
            host_port,
            container_port,
            protocol: Protocol::Tcp,
        })
    }

    #[test]
    fn a_bridged_service_without_networks_joins_default() {
        let s = bridged(vec![]);
        assert_eq!(s.networks().len(), 1);
        assert_eq!(s.networks()[0].name, DEFAULT_NETWORK);
        let mut host = s.clone();
        host.network = NetworkMode::Host;
        assert!(host.networks().is_empty());
    }

    #[test]
    fn each_bad_network_entry_is_named() {
        let attach = |name: &str, aliases: &[&str]| {
            Tuning::Network(NetworkAttachment {
                name: name.into(),
                aliases: aliases.iter().map(|a| a.to_string()).collect(),
                internal: false,
            })
        };
        bridged(vec![
            attach("back-end_1", &["db", "db.local"]),
            port(None, 8080, 80),
            Tuning::Dns([1, 1, 1, 1]),
            Tuning::DnsSearch("corp.example".into()),
            Tuning::DnsOption("ndots:2".into()),
        ])
        .validate()
        .unwrap();
        let cases: Vec<(Vec<Tuning>, &str)> = vec![
            (vec![attach("-x", &[])], "networks: \"-x\""),
            (vec![attach("a/b", &[])], "networks: \"a/b\""),
            (
                vec![attach("n", &["bad alias"])],
                "networks.aliases: \"bad alias\"",
            ),
            (vec![attach("n", &[]), attach("n", &[])], "given twice"),
            (vec![port(None, 0, 80)], "host and container ports"),
            (vec![port(None, 80, 80), port(None, 80, 81)], "given twice"),
            (vec![Tuning::DnsSearch("a..b".into())], "dns_search"),
            (vec![Tuning::DnsOption("a b".into())], "dns_opt"),
            (
                vec![Tuning::ExtraHost {
                    name: "bad name".into(),
                    address: [1, 2, 3, 4],
                }],
                "extra_hosts",
            ),
        ];
        for (tuning, expected) in cases {
            let err = bridged(tuning.clone()).validate().unwrap_err().to_string();
            assert!(err.contains(expected), "{tuning:?}: {err}");
        }
    }

    #[test]
    fn ports_need_an_app_network() {
        for (mode, expected) in [
            (NetworkMode::Host, "no effect with network_mode: host"),
            (NetworkMode::None, "network_mode: none"),
        ] {
            let mut s = bridged(vec![port(None, 8080, 80)]);
            s.network = mode;
            let err = s.validate().unwrap_err().to_string();
            assert!(err.contains(expected), "{err}");
        }
    }

    #[test]
    fn two_services_cannot_publish_one_host_port() {
        let mut state = samples::desired_with_services(2);
        for s in &mut state.services {
            s.network = NetworkMode::Private;
            s.tuning = vec![port(None, 8080, 80)];
        }
        let err = state.validate().unwrap_err().to_string();
        assert!(err.contains("another service"), "{err}");
        // Distinct addresses of the device may each take the port.
        state.services[0].tuning = vec![port(Some([127, 0, 0, 1]), 8080, 80)];
        state.services[1].tuning = vec![port(Some([10, 0, 0, 1]), 8080, 80)];
        state.validate().unwrap();
        // One service: every address and then one of them.
        state.services[1].tuning = vec![port(None, 9090, 80), port(Some([10, 0, 0, 1]), 9090, 81)];
        let err = state.validate().unwrap_err().to_string();
        assert!(err.contains("this service already publishes"), "{err}");
    }

    #[test]
    fn services_agree_whether_a_network_is_internal() {
        let mut state = samples::desired_with_services(2);
        for (i, s) in state.services.iter_mut().enumerate() {
            s.network = NetworkMode::Private;
            s.tuning = vec![Tuning::Network(NetworkAttachment {
                name: "back".into(),
                aliases: vec![],
                internal: i == 0,
            })];
        }
        let err = state.validate().unwrap_err().to_string();
        assert!(err.contains("internal"), "{err}");
    }
}
