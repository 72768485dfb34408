//! `ports:` and `expose:`, as Docker Compose reads them: the short syntax
//! `[IP:]HOST:CONTAINER[/PROTOCOL]` with ranges (`8000-8001:80-81`, one mapping per port),
//! the long syntax (`target`, `published`, `host_ip`, `protocol`, `mode`), and exposed
//! `PORT[-PORT][/PROTOCOL]`. A random host port (Docker's `"80"`) and IPv6 addresses are
//! refused by name: a device publishes on IPv4 only, on the ports the app gives.

use coracle_proto::network::{parse_ipv4, Ipv4, PortMapping, Protocol};
use coracle_proto::Tuning;

use super::model::{ComposeService, LongPort, PortEntry};
use super::refused::PREFIX;
use super::FieldResult;

/// A port range as written: `80` or `8000-8005`, first to last.
type Range = (u16, u16);

/// The service's `Publish` entries, then its `Expose` entries, in the order written.
pub(super) fn entries(s: &ComposeService) -> FieldResult<Vec<Tuning>> {
    let mut out = Vec::new();
    for entry in &s.ports {
        let mappings = match entry {
            PortEntry::Short(value) => short(&value.to_string()),
            PortEntry::Long(long) => long_form(long),
        };
        out.extend(
            mappings
                .map_err(|e| ("ports", e))?
                .into_iter()
                .map(Tuning::Publish),
        );
    }
    for value in &s.expose {
        let text = value.to_string();
        let (ports, protocol) = split_protocol(&text).map_err(|e| ("expose", e))?;
        let (first, last) = range(ports).ok_or_else(|| {
            (
                "expose",
                format!("{text:?} is not PORT, PORT-PORT or PORT/PROTOCOL"),
            )
        })?;
        out.extend((first..=last).map(|port| Tuning::Expose { port, protocol }));
    }
    Ok(out)
}

/// `[IP:][HOST:]CONTAINER[/PROTOCOL]`.
fn short(text: &str) -> Result<Vec<PortMapping>, String> {
    let (spec, protocol) = split_protocol(text)?;
    if spec.starts_with('[') || spec.matches(':').count() > 2 {
        return Err(format!(
            "{text:?}: {PREFIX}: IPv6 addresses (publish on IPv4)"
        ));
    }
    let bad = || format!("{text:?} is not [IP:]HOST:CONTAINER[/PROTOCOL]");
    let parts: Vec<&str> = spec.split(':').collect();
    let (ip, host, container) = match parts[..] {
        [container] => (None, "", container),
        [host, container] => (None, host, container),
        [ip, host, container] => (Some(ip), host, container),
        _ => return Err(bad()),
    };
    let ip = ip.map(|ip| host_ip(text, ip)).transpose()?.flatten();
    let container = range(container).ok_or_else(bad)?;
    if host.is_empty() {
        return Err(random_port(text));
    }
    let host = range(host).ok_or_else(bad)?;
    mappings(text, ip, host, container, protocol)
}

/// The long syntax.
fn long_form(long: &LongPort) -> Result<Vec<PortMapping>, String> {
    let target = long.target.to_string();
    let container = range(&target)
        .filter(|(first, last)| first == last)
        .ok_or_else(|| format!("target {target:?} is not a port from 1 to 65535"))?;
    let Some(published) = &long.published else {
        return Err(random_port(&format!("target: {target}")));
    };
    let published = published.to_string();
    let host = range(&published)
        .ok_or_else(|| format!("published {published:?} is not a port or PORT-PORT"))?;
    let protocol = match long.protocol.as_deref() {
        None => Protocol::Tcp,
        Some(p) => protocol(p).map_err(|e| format!("protocol {e}"))?,
    };
    if let Some(mode) = long
        .mode
        .as_deref()
        .filter(|m| !matches!(*m, "host" | "ingress"))
    {
        return Err(format!("mode {mode:?} is not host or ingress"));
    }
    let ip = match &long.host_ip {
        Some(ip) => host_ip(&format!("host_ip: {ip}"), ip)?,
        None => None,
    };
    mappings(
        &format!("published: {published}"),
        ip,
        host,
        container,
        protocol,
    )
}

/// One mapping per port of equal ranges (or of a single port to a single port).
fn mappings(
    text: &str,
    host_ip: Option<Ipv4>,
    host: Range,
    container: Range,
    protocol: Protocol,
) -> Result<Vec<PortMapping>, String> {
    if host.1 - host.0 != container.1 - container.0 {
        let why = match container.0 == container.1 {
            true => format!(
                "{text:?}: {PREFIX}: a host port range for one container port (Docker picks a free one; give HOST:CONTAINER)"
            ),
            false => format!("{text:?}: the host and container ranges differ in length"),
        };
        return Err(why);
    }
    Ok((0..=host.1 - host.0)
        .map(|i| PortMapping {
            host_ip,
            host_port: host.0 + i,
            container_port: container.0 + i,
            protocol,
        })
        .collect())
}

fn random_port(text: &str) -> String {
    format!("{text:?}: {PREFIX}: a random host port (give HOST:CONTAINER)")
}

/// An IPv4 host address; `0.0.0.0` is every address (`None`).
fn host_ip(text: &str, ip: &str) -> Result<Option<Ipv4>, String> {
    if ip.contains(':') || ip.starts_with('[') {
        return Err(format!(
            "{text:?}: {PREFIX}: IPv6 addresses (publish on IPv4)"
        ));
    }
    match parse_ipv4(ip) {
        Some([0, 0, 0, 0]) => Ok(None),
        Some(ip) => Ok(Some(ip)),
        None => Err(format!("{text:?}: {ip:?} is not an IPv4 address")),
    }
}

/// `SPEC[/PROTOCOL]` into the spec and the protocol (tcp when none is written).
fn split_protocol(text: &str) -> Result<(&str, Protocol), String> {
    match text.rsplit_once('/') {
        None => Ok((text, Protocol::Tcp)),
        Some((spec, p)) => Ok((spec, protocol(p).map_err(|e| format!("{text:?}: {e}"))?)),
    }
}

fn protocol(text: &str) -> Result<Protocol, String> {
    match text {
        "tcp" => Ok(Protocol::Tcp),
        "udp" => Ok(Protocol::Udp),
        other => Err(format!("{other:?} is not tcp or udp")),
    }
}

/// `80` or `8000-8005` (1 to 65535, first not after last).
fn range(text: &str) -> Option<Range> {
    let port = |p: &str| {
        let digits = !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
        digits
            .then(|| p.parse::<u16>().ok())
            .flatten()
            .filter(|v| *v > 0)
    };
    let (first, last) = match text.split_once('-') {
        Some((first, last)) => (port(first)?, port(last)?),
        None => (port(text)?, port(text)?),
    };
    (first <= last).then_some((first, last))
}
