//! Container networking as Compose does it (issue 16): a bridge per app network, a veth
//! pair per container and network, addresses from the agent's pool, outbound NAT,
//! published ports and isolation in the agent's own nftables table, and service names in
//! each container's `/etc/hosts`.
//!
//! - `netlink` — links, addresses and routes (no `ip` binary needed).
//! - `netns` — named network namespaces the runtime joins.
//! - `ipam` — the pool, subnets and addresses (pure).
//! - `nft` — the table, rendered whole and replaced atomically.
//! - `files` — `/etc/hosts` and `/etc/resolv.conf` (pure).
//! - `manager` — `NetworkManager`: attach and detach containers, keep it all consistent.

pub mod files;
pub mod ipam;
pub mod manager;
pub mod netlink;
pub mod netns;
pub mod nft;

use std::path::PathBuf;

pub use manager::{Attachment, Endpoint, NetworkManager};

/// Where the networking of one agent lives; separate values let several agents (tests)
/// share a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    pub pool: ipam::Pool,
    /// Names the bridges (`<prefix>br0`), host-side veths (`<prefix>v…`) and the nftables
    /// table (`ip <prefix>`); at most 6 characters, so names fit the kernel's 15.
    pub prefix: String,
    /// Where each container's network namespace is mounted (on tmpfs: it does not outlive
    /// a reboot, and neither do the containers).
    pub netns_dir: PathBuf,
    /// Which subnet each app network has, kept across restarts.
    pub state_file: PathBuf,
    /// resolv.conf files read for the device's resolvers, first usable one wins.
    pub resolv_files: Vec<PathBuf>,
    /// The device's hosts file, the base of a host-network container's `/etc/hosts`.
    pub hosts_file: PathBuf,
    /// The `nft` command (nftables) that loads the agent's table.
    pub nft: PathBuf,
}

impl NetworkConfig {
    /// The defaults of a device: pool 172.29.0.0/16 in /24s, prefix `crc`.
    pub fn device(data_dir: &std::path::Path) -> Self {
        Self {
            pool: ipam::Pool {
                range: ipam::Ipv4Net {
                    address: [172, 29, 0, 0],
                    prefix: 16,
                },
                subnet_prefix: 24,
            },
            prefix: "crc".into(),
            nft: PathBuf::from("nft"),
            netns_dir: PathBuf::from("/run/coracle-netns"),
            state_file: data_dir.join("networks.json"),
            resolv_files: vec![
                PathBuf::from("/etc/resolv.conf"),
                PathBuf::from("/run/systemd/resolve/resolv.conf"),
            ],
            hosts_file: PathBuf::from("/etc/hosts"),
        }
    }
}

/// Why a container's network could not be set up or taken down.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error(transparent)]
    Netlink(#[from] netlink::NetlinkError),
    #[error(transparent)]
    Netns(#[from] netns::NetnsError),
    #[error(transparent)]
    Nft(#[from] nft::NftError),
    #[error("the address pool {pool} has no subnet left for network {network}")]
    PoolExhausted { pool: String, network: String },
    #[error("network {network} ({subnet}) has no free address")]
    SubnetFull { network: String, subnet: String },
    #[error("{step} {path}")]
    File {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
