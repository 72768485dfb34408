//! `NetworkManager`: puts a container on its app networks before it is created and takes it
//! off after it is deleted, keeping bridges, the nftables table and every container's
//! `/etc/hosts` in step with the endpoints. One lock around it all: engine jobs run on
//! several threads, and each change is a few netlink messages.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use coracle_proto::network::{Ipv4, PortMapping};
use coracle_proto::{NetworkMode, ServiceName, ServiceSpec, Tuning};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tracing::warn;

use super::files::{self, HostEntry, ResolverOverrides};
use super::ipam::{free_address, gateway, Ipv4Net};
use super::netlink::{mac_for, Netlink};
use super::nft::{self, BridgeRule, ForwardRule};
use super::{netns, NetworkConfig, NetworkError};

/// One network a container is on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attached {
    pub network: String,
    pub internal: bool,
    pub address: Ipv4,
    pub aliases: Vec<String>,
    /// The host side of its veth pair.
    pub veth: String,
}

/// A bridged container as the manager keeps it; stored in the container's `meta.json` so
/// a restarted agent knows it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub attached: Vec<Attached>,
    /// Host name first, then the service name when it differs.
    pub names: Vec<String>,
    pub extra_hosts: Vec<(String, Ipv4)>,
    pub ports: Vec<PortMapping>,
    pub hosts_file: PathBuf,
}

/// What the runtime spec needs from the network: the namespace to join (bridged only) and
/// the files to mount on `/etc/hosts` and `/etc/resolv.conf`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub netns: Option<PathBuf>,
    pub hosts: PathBuf,
    pub resolv: PathBuf,
    pub endpoint: Option<Endpoint>,
}

#[derive(Debug, Default)]
struct State {
    /// App network → subnet index in the pool.
    networks: BTreeMap<String, u32>,
    endpoints: BTreeMap<ServiceName, Endpoint>,
}

/// The agent's container networks.
#[derive(Debug)]
pub struct NetworkManager {
    config: NetworkConfig,
    state: Mutex<State>,
}

fn file_error(step: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> NetworkError {
    let path = path.to_path_buf();
    move |source| NetworkError::File { step, path, source }
}

impl NetworkManager {
    /// Takes back the endpoints of containers that outlived an agent restart and puts the
    /// table and hosts files in step with them.
    pub fn open(
        config: NetworkConfig,
        restored: Vec<(ServiceName, Endpoint)>,
    ) -> Result<Self, NetworkError> {
        let networks = match fs::read(&config.state_file) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                warn!(file = %config.state_file.display(), error = %e, "network plan unreadable; numbering networks again");
                BTreeMap::new()
            }),
            Err(_) => BTreeMap::new(),
        };
        let endpoints: BTreeMap<ServiceName, Endpoint> = restored.into_iter().collect();
        // Namespaces of containers an agent crash left half made or half removed: no
        // container holds them, and their veths go with them.
        for entry in fs::read_dir(&config.netns_dir)
            .into_iter()
            .flatten()
            .flatten()
        {
            let known = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<ServiceName>().ok())
                .is_some_and(|service| endpoints.contains_key(&service));
            if !known {
                if let Err(e) = netns::remove(&entry.path()) {
                    warn!(path = %entry.path().display(), error = %e, "could not remove a stale network namespace");
                }
            }
        }
        let manager = Self {
            config,
            state: Mutex::new(State {
                networks,
                endpoints,
            }),
        };
        let state = manager.lock();
        if !state.endpoints.is_empty() {
            manager.refresh(&state)?;
        }
        drop(state);
        Ok(manager)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data; go on with it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn netns_path(&self, service: &ServiceName) -> PathBuf {
        self.config.netns_dir.join(service.as_str())
    }

    fn bridge(&self, index: u32) -> String {
        format!("{}br{index}", self.config.prefix)
    }

    fn subnet(&self, network: &str, index: u32) -> Result<Ipv4Net, NetworkError> {
        self.config
            .pool
            .subnet(index)
            .ok_or_else(|| NetworkError::PoolExhausted {
                pool: self.config.pool.range.to_string(),
                network: network.to_string(),
            })
    }

    /// The address health probes reach a service at: its first network's, if bridged.
    pub fn address(&self, service: &ServiceName) -> Option<Ipv4> {
        let state = self.lock();
        state
            .endpoints
            .get(service)
            .and_then(|e| e.attached.first())
            .map(|a| a.address)
    }

    /// Prepares `spec`'s network before its container is created; its files go into `dir`.
    /// `None`: the service takes the device's files as they are (host network, nothing
    /// asked of them).
    pub fn attach(
        &self,
        spec: &ServiceSpec,
        dir: &Path,
    ) -> Result<Option<Attachment>, NetworkError> {
        let hosts = dir.join("hosts");
        let resolv = dir.join("resolv.conf");
        let extra_hosts: Vec<(String, Ipv4)> = spec
            .tuning
            .iter()
            .filter_map(|t| match t {
                Tuning::ExtraHost { name, address } => Some((name.clone(), *address)),
                _ => None,
            })
            .collect();
        let overrides = resolver_overrides(spec);
        if spec.network != NetworkMode::Private {
            if extra_hosts.is_empty() && overrides == ResolverOverrides::default() {
                return Ok(None);
            }
            self.write_unbridged_files(spec, &extra_hosts, &overrides, &hosts, &resolv)?;
            return Ok(Some(Attachment {
                netns: None,
                hosts,
                resolv,
                endpoint: None,
            }));
        }
        let mut state = self.lock();
        // A container of this name that was not detached (a crash between steps).
        if state.endpoints.contains_key(&spec.name) {
            self.take_down(&mut state, &spec.name)?;
        }
        let netns_path = self.netns_path(&spec.name);
        let _ = netns::remove(&netns_path);
        let result = self.bring_up(&mut state, spec, &netns_path, &hosts, extra_hosts);
        if let Err(e) = result {
            let _ = self.take_down(&mut state, &spec.name);
            let _ = netns::remove(&netns_path);
            return Err(e);
        }
        fs::write(
            &resolv,
            files::resolv_conf(&overrides, &self.device_resolvers(false)),
        )
        .map_err(file_error("write", &resolv))?;
        Ok(Some(Attachment {
            netns: Some(netns_path),
            hosts,
            resolv,
            endpoint: state.endpoints.get(&spec.name).cloned(),
        }))
    }

    fn bring_up(
        &self,
        state: &mut State,
        spec: &ServiceSpec,
        netns_path: &Path,
        hosts: &Path,
        extra_hosts: Vec<(String, Ipv4)>,
    ) -> Result<(), NetworkError> {
        let mut host = Netlink::open().map_err(file_error("open netlink", Path::new("")))?;
        let mut attached = Vec::new();
        let mut inside_plan = Vec::new();
        netns::create(netns_path)?;
        let ns = fs::File::open(netns_path).map_err(file_error("open", netns_path))?;
        for (i, network) in spec.networks().into_iter().enumerate() {
            let index = self.network_index(state, &network.name)?;
            let subnet = self.subnet(&network.name, index)?;
            let bridge = self.bridge(index);
            self.ensure_bridge(&mut host, &bridge, subnet)?;
            let taken: BTreeSet<Ipv4> = state
                .endpoints
                .values()
                .flat_map(|e| e.attached.iter())
                .filter(|a| a.network == network.name)
                .map(|a| a.address)
                .collect();
            let address = free_address(subnet, &taken).ok_or_else(|| NetworkError::SubnetFull {
                network: network.name.clone(),
                subnet: subnet.to_string(),
            })?;
            let veth = self.veth_name(&spec.name, &network.name);
            let peer = format!("eth{i}");
            host.delete_link(&veth)?;
            host.create_veth(&veth, &peer, mac_for(address), ns.as_raw_fd())?;
            host.link_up(&veth, Some(&bridge))?;
            inside_plan.push((peer, address, subnet, network.internal));
            attached.push(Attached {
                network: network.name,
                internal: network.internal,
                address,
                aliases: network.aliases,
                veth,
            });
        }
        netns::inside(netns_path, move |nl| {
            nl.link_up("lo", None)?;
            let mut routed = false;
            for (peer, address, subnet, internal) in inside_plan {
                nl.link_up(&peer, None)?;
                nl.add_address(&peer, address, subnet)?;
                // Internal networks lead nowhere; the first other one is the way out.
                if !internal && !routed {
                    nl.add_default_route(&peer, gateway(subnet))?;
                    routed = true;
                }
            }
            Ok(())
        })?;
        let hostname = spec
            .tuning
            .iter()
            .find_map(|t| match t {
                Tuning::Hostname(h) => Some(h.clone()),
                _ => None,
            })
            .unwrap_or_else(|| spec.name.to_string());
        let mut names = vec![hostname];
        if names[0] != spec.name.as_str() {
            names.push(spec.name.to_string());
        }
        state.endpoints.insert(
            spec.name.clone(),
            Endpoint {
                attached,
                names,
                extra_hosts,
                ports: spec.published_ports().copied().collect(),
                hosts_file: hosts.to_path_buf(),
            },
        );
        self.refresh(state)
    }

    /// Takes a container off its networks after it was deleted; unknown ones are fine.
    pub fn detach(&self, service: &ServiceName) -> Result<(), NetworkError> {
        let mut state = self.lock();
        self.take_down(&mut state, service)?;
        netns::remove(&self.netns_path(service))?;
        Ok(())
    }

    fn take_down(&self, state: &mut State, service: &ServiceName) -> Result<(), NetworkError> {
        let Some(endpoint) = state.endpoints.remove(service) else {
            return Ok(());
        };
        let mut host = Netlink::open().map_err(file_error("open netlink", Path::new("")))?;
        for a in &endpoint.attached {
            host.delete_link(&a.veth)?;
        }
        // Bridges nobody is on any more go, so an idle device keeps no trace.
        let used: BTreeSet<&String> = state
            .endpoints
            .values()
            .flat_map(|e| e.attached.iter().map(|a| &a.network))
            .collect();
        for a in &endpoint.attached {
            if !used.contains(&a.network) {
                if let Some(index) = state.networks.get(&a.network) {
                    host.delete_link(&self.bridge(*index))?;
                }
            }
        }
        self.refresh(state)
    }

    fn network_index(&self, state: &mut State, network: &str) -> Result<u32, NetworkError> {
        if let Some(index) = state.networks.get(network) {
            return Ok(*index);
        }
        let used: BTreeSet<u32> = state.networks.values().copied().collect();
        let index = (0..self.config.pool.subnets())
            .find(|i| !used.contains(i))
            .ok_or_else(|| NetworkError::PoolExhausted {
                pool: self.config.pool.range.to_string(),
                network: network.to_string(),
            })?;
        state.networks.insert(network.to_string(), index);
        let json = serde_json::to_vec(&state.networks).unwrap_or_default();
        coracle_images::store::write_atomic(&self.config.state_file, &json)
            .map_err(file_error("write", &self.config.state_file))?;
        Ok(index)
    }

    fn ensure_bridge(
        &self,
        host: &mut Netlink,
        bridge: &str,
        subnet: Ipv4Net,
    ) -> Result<(), NetworkError> {
        host.create_bridge(bridge, mac_for(gateway(subnet)))?;
        host.add_address(bridge, gateway(subnet), subnet)?;
        host.link_up(bridge, None)?;
        // Forwarding between the bridge and the uplink, and published ports reached at
        // 127.0.0.1 routed onto the bridge (what Docker sets without its userland proxy).
        for (path, value) in [
            ("/proc/sys/net/ipv4/ip_forward".to_string(), "1"),
            (
                format!("/proc/sys/net/ipv4/conf/{bridge}/route_localnet"),
                "1",
            ),
        ] {
            fs::write(&path, value).map_err(file_error("write", Path::new(&path)))?;
        }
        Ok(())
    }

    /// A host-side veth name unique per service and network, within the kernel's 15.
    fn veth_name(&self, service: &ServiceName, network: &str) -> String {
        let digest = Sha256::digest(format!("{service}\0{network}").as_bytes());
        let hex: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
        format!("{}v{hex}", self.config.prefix)
    }

    /// Rewrites every bridged container's hosts file and the nftables table.
    fn refresh(&self, state: &State) -> Result<(), NetworkError> {
        for (service, endpoint) in &state.endpoints {
            let text = hosts_for(service, endpoint, &state.endpoints);
            // In place: the file is bind-mounted, a rename would leave the old one there.
            if let Err(e) = fs::write(&endpoint.hosts_file, text) {
                warn!(%service, error = %e, "could not update the hosts file");
            }
        }
        let mut bridges = Vec::new();
        for (network, index) in &state.networks {
            let on_it = state
                .endpoints
                .values()
                .flat_map(|e| e.attached.iter())
                .find(|a| &a.network == network);
            if let Some(a) = on_it {
                bridges.push(BridgeRule {
                    bridge: self.bridge(*index),
                    subnet: self.subnet(network, *index)?,
                    internal: a.internal,
                });
            }
        }
        let forwards: Vec<ForwardRule> = state
            .endpoints
            .values()
            .flat_map(|e| {
                let to = e.attached.first().map(|a| a.address);
                e.ports.iter().filter_map(move |port| {
                    to.map(|container| ForwardRule {
                        port: *port,
                        container,
                    })
                })
            })
            .collect();
        let table = &self.config.prefix;
        nft::apply(table, &nft::render(table, &bridges, &forwards))?;
        Ok(())
    }

    fn device_resolvers(&self, keep_loopback: bool) -> Vec<files::HostResolver> {
        self.config
            .resolv_files
            .iter()
            .filter_map(|path| fs::read_to_string(path).ok())
            .map(|text| files::parse_resolv_conf(&text, keep_loopback))
            .collect()
    }

    /// Host or no network with `extra_hosts`/`dns*`: the device's hosts file plus the extra
    /// lines (or loopback only without a network), and the device's resolvers overridden.
    fn write_unbridged_files(
        &self,
        spec: &ServiceSpec,
        extra_hosts: &[(String, Ipv4)],
        overrides: &ResolverOverrides,
        hosts: &Path,
        resolv: &Path,
    ) -> Result<(), NetworkError> {
        let mut text = if spec.network == NetworkMode::Host {
            fs::read_to_string(&self.config.hosts_file).unwrap_or_default()
        } else {
            files::hosts(
                &HostEntry {
                    address: [127, 0, 1, 1],
                    names: vec![spec.name.to_string()],
                },
                &[],
                &[],
            )
        };
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        for (name, address) in extra_hosts {
            text.push_str(&format!(
                "{}\t{name}\n",
                coracle_proto::network::DottedQuad(*address)
            ));
        }
        fs::write(hosts, text).map_err(file_error("write", hosts))?;
        let keep_loopback = spec.network == NetworkMode::Host;
        let conf = files::resolv_conf(overrides, &self.device_resolvers(keep_loopback));
        fs::write(resolv, conf).map_err(file_error("write", resolv))?;
        Ok(())
    }
}

fn resolver_overrides(spec: &ServiceSpec) -> ResolverOverrides {
    let mut out = ResolverOverrides::default();
    for entry in &spec.tuning {
        match entry {
            Tuning::Dns(ip) => out.servers.push(*ip),
            Tuning::DnsSearch(domain) => out.search.push(domain.clone()),
            Tuning::DnsOption(option) => out.options.push(option.clone()),
            _ => {}
        }
    }
    out
}

/// The hosts file of `service`: itself on each of its networks, then every other service
/// on a network it shares, by name and that network's aliases.
fn hosts_for(
    service: &ServiceName,
    endpoint: &Endpoint,
    all: &BTreeMap<ServiceName, Endpoint>,
) -> String {
    let entry = |e: &Endpoint, a: &Attached| HostEntry {
        address: a.address,
        names: e.names.iter().chain(&a.aliases).cloned().collect(),
    };
    let mut own = endpoint.attached.iter().map(|a| entry(endpoint, a));
    let Some(first) = own.next() else {
        return String::new();
    };
    let mut peers: Vec<HostEntry> = own.collect();
    for (other, e) in all {
        if other == service {
            continue;
        }
        for a in &e.attached {
            if endpoint
                .attached
                .iter()
                .any(|mine| mine.network == a.network)
            {
                peers.push(entry(e, a));
            }
        }
    }
    files::hosts(&first, &peers, &endpoint.extra_hosts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(networks: &[(&str, [u8; 4], &[&str])], names: &[&str]) -> Endpoint {
        Endpoint {
            attached: networks
                .iter()
                .map(|(n, address, aliases)| Attached {
                    network: n.to_string(),
                    internal: false,
                    address: *address,
                    aliases: aliases.iter().map(|a| a.to_string()).collect(),
                    veth: "v".into(),
                })
                .collect(),
            names: names.iter().map(|n| n.to_string()).collect(),
            extra_hosts: vec![],
            ports: vec![],
            hosts_file: PathBuf::new(),
        }
    }

    #[test]
    fn a_container_finds_only_services_on_a_network_it_shares() {
        let mut all = BTreeMap::new();
        let name = |n: &str| n.parse::<ServiceName>().unwrap();
        all.insert(
            name("web"),
            endpoint(&[("front", [10, 0, 0, 2], &["www"])], &["web"]),
        );
        all.insert(
            name("api"),
            endpoint(
                &[
                    ("front", [10, 0, 0, 3], &[]),
                    ("back", [10, 0, 1, 2], &["rest"]),
                ],
                &["api"],
            ),
        );
        all.insert(
            name("db"),
            endpoint(&[("back", [10, 0, 1, 3], &["database"])], &["db"]),
        );
        let web = hosts_for(&name("web"), &all[&name("web")], &all);
        assert!(web.contains("10.0.0.2\tweb www\n"), "{web}");
        assert!(web.contains("10.0.0.3\tapi\n"), "{web}");
        assert!(!web.contains("db"), "{web}");
        assert!(!web.contains("rest"), "{web}");
        let api = hosts_for(&name("api"), &all[&name("api")], &all);
        assert!(api.contains("10.0.1.2\tapi rest\n"), "{api}");
        assert!(api.contains("10.0.1.3\tdb database\n"), "{api}");
        assert!(api.contains("10.0.0.2\tweb www\n"), "{api}");
    }
}
