//! The agent's nftables table: outbound NAT for the app networks, published ports, and
//! isolation between networks. The whole table is rendered from the current endpoints
//! (pure, tested) and replaced in one `nft -f -` transaction, so a device never holds half
//! a ruleset and the agent never touches any other table.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use coracle_proto::network::{DottedQuad, PortMapping};

use super::ipam::Ipv4Net;

/// An app network as the rules see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeRule {
    pub bridge: String,
    pub subnet: Ipv4Net,
    pub internal: bool,
}

/// A published port and the container address it goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardRule {
    pub port: PortMapping,
    pub container: [u8; 4],
}

/// Why the rules could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("run nft (install the nftables package; the kernel needs nf_tables with NAT)")]
    Spawn(#[source] std::io::Error),
    #[error("nft refused the ruleset of table ip {table}: {stderr}")]
    Refused { table: String, stderr: String },
    #[error("nft cannot list the kernel's tables (the kernel needs nf_tables with NAT): {stderr}")]
    Unusable { stderr: String },
}

/// The whole table `ip <table>`: an empty rule set deletes it.
pub fn render(table: &str, bridges: &[BridgeRule], forwards: &[ForwardRule]) -> String {
    // Declaring the table first makes the delete succeed when it does not exist yet.
    let mut out = format!("table ip {table}\ndelete table ip {table}\n");
    if bridges.is_empty() {
        return out;
    }
    let _ = writeln!(out, "table ip {table} {{");
    out.push_str("  chain prerouting {\n    type nat hook prerouting priority dstnat; policy accept;\n    fib daddr type local jump publish\n  }\n");
    out.push_str("  chain output {\n    type nat hook output priority -100; policy accept;\n    fib daddr type local jump publish\n  }\n");
    out.push_str("  chain publish {\n");
    for f in forwards {
        let p = &f.port;
        let only = p
            .host_ip
            .map(|ip| format!("ip daddr {} ", DottedQuad(ip)))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "    {only}{proto} dport {} dnat to {}:{}",
            p.host_port,
            DottedQuad(f.container),
            p.container_port,
            proto = p.protocol.as_str(),
        );
    }
    out.push_str("  }\n");
    out.push_str(
        "  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n",
    );
    for b in bridges {
        if !b.internal {
            let _ = writeln!(
                out,
                "    ip saddr {} oifname != \"{}\" masquerade",
                b.subnet, b.bridge
            );
        }
        // Published ports reached from the device itself (127.0.0.1:PORT), and from a
        // container of the same network through the device's address (hairpin): the
        // answer must come back through the device, not straight over the bridge.
        let _ = writeln!(
            out,
            "    ip saddr 127.0.0.0/8 oifname \"{}\" masquerade",
            b.bridge
        );
        let _ = writeln!(
            out,
            "    ip saddr {} oifname \"{}\" ct status dnat masquerade",
            b.subnet, b.bridge
        );
    }
    out.push_str("  }\n");
    out.push_str(
        "  chain forward {\n    type filter hook forward priority filter; policy accept;\n",
    );
    // Networks of the app do not reach each other, as Compose networks do not.
    for b in bridges {
        let others: Vec<String> = bridges
            .iter()
            .filter(|o| o.bridge != b.bridge)
            .map(|o| format!("\"{}\"", o.bridge))
            .collect();
        if !others.is_empty() {
            let set = others.join(", ");
            let _ = writeln!(out, "    iifname \"{}\" oifname {{ {set} }} drop", b.bridge);
        }
    }
    for b in bridges.iter().filter(|b| b.internal) {
        let _ = writeln!(out, "    iifname \"{0}\" oifname != \"{0}\" drop", b.bridge);
        let _ = writeln!(out, "    oifname \"{0}\" iifname != \"{0}\" drop", b.bridge);
    }
    out.push_str("  }\n}\n");
    out
}

/// Whether `nft` runs and the kernel answers it (`nft list tables`): what bridged services
/// need before anything running is touched for them.
pub fn check(nft: &Path) -> Result<(), NftError> {
    let output = Command::new(nft)
        .args(["list", "tables"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(NftError::Spawn)?;
    if output.status.success() {
        return Ok(());
    }
    Err(NftError::Unusable {
        stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
    })
}

/// Replaces the table with `ruleset` in one transaction.
pub fn apply(nft: &Path, table: &str, ruleset: &str) -> Result<(), NftError> {
    let mut child = Command::new(nft)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(NftError::Spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(ruleset.as_bytes())
            .map_err(NftError::Spawn)?;
    }
    let output = child.wait_with_output().map_err(NftError::Spawn)?;
    if output.status.success() {
        Ok(())
    } else {
        Err(NftError::Refused {
            table: table.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coracle_proto::Protocol;

    fn bridge(name: &str, subnet: &str, internal: bool) -> BridgeRule {
        BridgeRule {
            bridge: name.into(),
            subnet: subnet.parse().unwrap(),
            internal,
        }
    }

    #[test]
    fn no_network_deletes_the_table() {
        assert_eq!(
            render("crc", &[], &[]),
            "table ip crc\ndelete table ip crc\n"
        );
    }

    #[test]
    fn the_table_nats_publishes_and_isolates() {
        let bridges = [
            bridge("crcbr0", "172.29.0.0/24", false),
            bridge("crcbr1", "172.29.1.0/24", true),
        ];
        let forwards = [
            ForwardRule {
                port: PortMapping {
                    host_ip: None,
                    host_port: 8080,
                    container_port: 80,
                    protocol: Protocol::Tcp,
                },
                container: [172, 29, 0, 2],
            },
            ForwardRule {
                port: PortMapping {
                    host_ip: Some([127, 0, 0, 1]),
                    host_port: 5353,
                    container_port: 53,
                    protocol: Protocol::Udp,
                },
                container: [172, 29, 0, 3],
            },
        ];
        let rules = render("crc", &bridges, &forwards);
        for line in [
            "tcp dport 8080 dnat to 172.29.0.2:80",
            "ip daddr 127.0.0.1 udp dport 5353 dnat to 172.29.0.3:53",
            "ip saddr 172.29.0.0/24 oifname != \"crcbr0\" masquerade",
            "iifname \"crcbr0\" oifname { \"crcbr1\" } drop",
            "iifname \"crcbr1\" oifname != \"crcbr1\" drop",
            "ip saddr 172.29.0.0/24 oifname \"crcbr0\" ct status dnat masquerade",
        ] {
            assert!(rules.contains(line), "{line} missing from\n{rules}");
        }
        // An internal network is not NATed out.
        assert!(
            !rules.contains("ip saddr 172.29.1.0/24 oifname !="),
            "{rules}"
        );
    }
}
