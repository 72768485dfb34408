//! A bridged container's `/etc/hosts` and `/etc/resolv.conf`, rendered from the app's
//! endpoints and the device's resolver config. Service discovery is `/etc/hosts`: every
//! service of the app on a shared network by name and alias, rewritten in place whenever an
//! endpoint comes or goes (resolvers read it on each lookup), so the agent needs no DNS
//! server of its own.

use std::fmt::Write as _;

use coracle_proto::network::{parse_ipv4, DottedQuad, Ipv4};

/// What one container contributes to the app's hosts files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEntry {
    pub address: Ipv4,
    pub names: Vec<String>,
}

/// `/etc/hosts` of a container: loopback, itself, its peers, then `extra_hosts`.
pub fn hosts(own: &HostEntry, peers: &[HostEntry], extra: &[(String, Ipv4)]) -> String {
    let mut out = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    for entry in std::iter::once(own).chain(peers) {
        let _ = writeln!(
            out,
            "{}\t{}",
            DottedQuad(entry.address),
            entry.names.join(" ")
        );
    }
    for (name, address) in extra {
        let _ = writeln!(out, "{}\t{name}", DottedQuad(*address));
    }
    out
}

/// A service's own resolver settings (compose `dns`, `dns_search`, `dns_opt`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolverOverrides {
    pub servers: Vec<Ipv4>,
    pub search: Vec<String>,
    pub options: Vec<String>,
}

/// Servers used when the device has only loopback resolvers a container cannot reach
/// (Docker's fallback).
pub const FALLBACK_SERVERS: [Ipv4; 2] = [[8, 8, 8, 8], [8, 8, 4, 4]];

/// The parts of a resolv.conf the container inherits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostResolver {
    /// IPv4 servers that are not loopback.
    pub servers: Vec<Ipv4>,
    pub search: Vec<String>,
    pub options: Vec<String>,
}

/// Reads a resolv.conf. Unless `keep_loopback` (a container on the device's network),
/// loopback servers (a local cache such as systemd-resolved's 127.0.0.53) are dropped,
/// since a container on a bridge cannot reach them.
pub fn parse_resolv_conf(text: &str, keep_loopback: bool) -> HostResolver {
    let mut out = HostResolver::default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => {
                if let Some(ip) = words.next().and_then(parse_ipv4) {
                    if keep_loopback || ip[0] != 127 {
                        out.servers.push(ip);
                    }
                }
            }
            Some("search") | Some("domain") => {
                out.search = words.map(str::to_string).collect();
            }
            Some("options") => out.options.extend(words.map(str::to_string)),
            _ => {}
        }
    }
    out
}

/// `/etc/resolv.conf` of a bridged container: the service's settings where it gives them,
/// else the device's (the first of `candidates` with a usable server), else Docker's
/// public fallback.
pub fn resolv_conf(overrides: &ResolverOverrides, candidates: &[HostResolver]) -> String {
    let host = candidates
        .iter()
        .find(|c| !c.servers.is_empty())
        .cloned()
        .unwrap_or_else(|| HostResolver {
            servers: FALLBACK_SERVERS.to_vec(),
            search: candidates
                .first()
                .map(|c| c.search.clone())
                .unwrap_or_default(),
            options: candidates
                .first()
                .map(|c| c.options.clone())
                .unwrap_or_default(),
        });
    let pick = |own: &Vec<String>, inherited: &Vec<String>| {
        if own.is_empty() {
            inherited.clone()
        } else {
            own.clone()
        }
    };
    let servers = if overrides.servers.is_empty() {
        host.servers
    } else {
        overrides.servers.clone()
    };
    let mut out = String::new();
    let search = pick(&overrides.search, &host.search);
    if !search.is_empty() {
        let _ = writeln!(out, "search {}", search.join(" "));
    }
    for server in servers {
        let _ = writeln!(out, "nameserver {}", DottedQuad(server));
    }
    let options = pick(&overrides.options, &host.options);
    if !options.is_empty() {
        let _ = writeln!(out, "options {}", options.join(" "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_lists_itself_its_peers_and_extra_hosts() {
        let own = HostEntry {
            address: [172, 29, 0, 2],
            names: vec!["web".into(), "www".into()],
        };
        let peers = [HostEntry {
            address: [172, 29, 0, 3],
            names: vec!["db".into(), "database".into()],
        }];
        let text = hosts(&own, &peers, &[("gateway.lan".into(), [192, 168, 1, 1])]);
        assert_eq!(
            text,
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
             172.29.0.2\tweb www\n172.29.0.3\tdb database\n192.168.1.1\tgateway.lan\n"
        );
    }

    #[test]
    fn loopback_resolvers_are_replaced() {
        let resolved = parse_resolv_conf(
            "# systemd-resolved\nnameserver 127.0.0.53\nsearch lan\noptions edns0 trust-ad\n",
            false,
        );
        assert!(resolved.servers.is_empty());
        let upstream = parse_resolv_conf("nameserver 192.168.1.1\nnameserver ::1\n", false);
        assert_eq!(upstream.servers, vec![[192, 168, 1, 1]]);
        let text = resolv_conf(&ResolverOverrides::default(), &[resolved.clone(), upstream]);
        assert_eq!(text, "nameserver 192.168.1.1\n");
        // Only loopback anywhere: Docker's fallback, with the device's search and options.
        let text = resolv_conf(&ResolverOverrides::default(), &[resolved]);
        assert_eq!(
            text,
            "search lan\nnameserver 8.8.8.8\nnameserver 8.8.4.4\noptions edns0 trust-ad\n"
        );
    }

    #[test]
    fn a_service_s_own_settings_win() {
        let host = parse_resolv_conf("nameserver 10.0.0.1\nsearch corp\noptions ndots:1\n", false);
        let own = ResolverOverrides {
            servers: vec![[1, 1, 1, 1]],
            search: vec![],
            options: vec!["ndots:3".into()],
        };
        assert_eq!(
            resolv_conf(&own, &[host]),
            "search corp\nnameserver 1.1.1.1\noptions ndots:3\n"
        );
    }
}
