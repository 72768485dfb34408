//! A service's name resolution from Compose's keys: `dns` (one IPv4 address or a list),
//! `dns_search` (one domain or a list), `dns_opt` (a list) and `extra_hosts` (`name:ip` or
//! `name=ip` items, or a map; Docker's `host-gateway` names the device). IPv6 addresses are
//! refused by name; domain and option syntax is checked by `ServiceSpec::validate`.

use coracle_proto::network::{parse_ipv4, Ipv4};
use coracle_proto::Tuning;

use super::model::{ComposeService, Labels, StringOrList};
use super::refused::PREFIX;
use super::FieldResult;

/// The service's `Dns`, `DnsSearch`, `DnsOption` and `ExtraHost` entries, in that order.
pub(super) fn entries(s: &ComposeService) -> FieldResult<Vec<Tuning>> {
    let mut out = Vec::new();
    for server in s.dns.iter().flat_map(items) {
        out.push(Tuning::Dns(address(&server).map_err(|e| ("dns", e))?));
    }
    out.extend(s.dns_search.iter().flat_map(items).map(Tuning::DnsSearch));
    out.extend(s.dns_opt.iter().cloned().map(Tuning::DnsOption));
    let hosts: Vec<(String, String)> = match &s.extra_hosts {
        None => Vec::new(),
        Some(Labels::Map(map)) => map
            .iter()
            .map(|(name, ip)| {
                let ip = ip.as_ref().map(|ip| ip.to_string()).unwrap_or_default();
                (name.clone(), ip)
            })
            .collect(),
        Some(Labels::List(list)) => list
            .iter()
            .map(|item| {
                // `=` first: an IPv6 address holds colons (Docker's rule).
                item.split_once('=')
                    .or_else(|| item.split_once(':'))
                    .map(|(name, ip)| (name.to_string(), ip.to_string()))
                    .ok_or_else(|| ("extra_hosts", format!("{item:?} is not NAME=IP or NAME:IP")))
            })
            .collect::<FieldResult<_>>()?,
    };
    for (name, ip) in hosts {
        if ip == "host-gateway" {
            out.push(Tuning::ExtraHostGateway(name));
            continue;
        }
        let address = address(&ip).map_err(|e| ("extra_hosts", format!("{name}: {e}")))?;
        out.push(Tuning::ExtraHost { name, address });
    }
    Ok(out)
}

/// One item or a list, each item whole (never split on spaces).
fn items(value: &StringOrList) -> Vec<String> {
    match value {
        StringOrList::String(s) => vec![s.clone()],
        StringOrList::List(list) => list.clone(),
    }
}

/// An IPv4 address; IPv6 is refused by name.
fn address(text: &str) -> Result<Ipv4, String> {
    if text.contains(':') || text.starts_with('[') {
        return Err(format!(
            "{text:?}: {PREFIX}: IPv6 addresses (give an IPv4 one)"
        ));
    }
    parse_ipv4(text).ok_or_else(|| format!("{text:?} is not an IPv4 address"))
}
