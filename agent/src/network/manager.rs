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

/// A container's endpoint as the manager holds it. Two containers of one service are on
/// the networks during a `start-first` update; only the `active` one answers to the
/// service's names and receives its published ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub service: ServiceName,
    pub active: bool,
    pub endpoint: Endpoint,
}

#[derive(Debug, Default)]
struct State {
    /// App network → subnet index in the pool.
    networks: BTreeMap<String, u32>,
    /// By container id.
    endpoints: BTreeMap<String, Held>,
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
    /// `restored` is keyed by container id; of two containers of one service, the active
    /// one is the one marked so (the current one; the caller decides).
    pub fn open(
        config: NetworkConfig,
        restored: BTreeMap<String, Held>,
    ) -> Result<Self, NetworkError> {
        let networks = match fs::read(&config.state_file) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                warn!(file = %config.state_file.display(), error = %e, "network plan unreadable; numbering networks again");
                BTreeMap::new()
            }),
            Err(_) => BTreeMap::new(),
        };
        let endpoints = restored;
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
                .is_some_and(|id| endpoints.contains_key(id));
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

    fn netns_path(&self, id: &str) -> PathBuf {
        self.config.netns_dir.join(id)
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

    /// What `desired` needs of the device's networking, checked before anything running is
    /// touched for it: bridged services need nftables.
    pub fn preflight(&self, desired: &coracle_proto::DesiredState) -> Result<(), NetworkError> {
        if desired
            .services
            .iter()
            .any(|s| s.network == NetworkMode::Private)
        {
            nft::check(&self.config.nft)?;
        }
        Ok(())
    }

    /// The address health probes reach a container at: its first network's, if bridged.
    pub fn address(&self, id: &str) -> Option<Ipv4> {
        let state = self.lock();
        state
            .endpoints
            .get(id)
            .and_then(|held| held.endpoint.attached.first())
            .map(|a| a.address)
    }

    /// Makes container `id` the one that answers to its service's names and receives its
    /// published ports, in one table and hosts-file update. Unknown ids are fine (an
    /// unbridged service).
    pub fn activate(&self, id: &str) -> Result<(), NetworkError> {
        let mut state = self.lock();
        let Some(service) = state.endpoints.get(id).map(|held| held.service.clone()) else {
            return Ok(());
        };
        for (other, held) in state.endpoints.iter_mut() {
            if held.service == service {
                held.active = other == id;
            }
        }
        self.refresh(&state)
    }

    /// Prepares the network of container `id` of `spec` before it is created; its files go
    /// into `dir`. `None`: the service takes the device's files as they are (host network,
    /// nothing asked of them). A second container of a service (a `start-first`
    /// successor) is not active until `activate`.
    pub fn attach(
        &self,
        spec: &ServiceSpec,
        id: &str,
        dir: &Path,
    ) -> Result<Option<Attachment>, NetworkError> {
        let hosts = dir.join("hosts");
        let resolv = dir.join("resolv.conf");
        let mut extra_hosts: Vec<(String, Ipv4)> = spec
            .tuning
            .iter()
            .filter_map(|t| match t {
                Tuning::ExtraHost { name, address } => Some((name.clone(), *address)),
                _ => None,
            })
            .collect();
        // `NAME:host-gateway`: the device as the container reaches it (`bring_up` knows
        // the gateway of a bridged one; on the device's network it is the device itself).
        let to_device: Vec<String> = spec
            .tuning
            .iter()
            .filter_map(|t| match t {
                Tuning::ExtraHostGateway(name) => Some(name.clone()),
                _ => None,
            })
            .collect();
        let overrides = resolver_overrides(spec);
        if spec.network != NetworkMode::Private {
            extra_hosts.extend(to_device.into_iter().map(|name| (name, [127, 0, 0, 1])));
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
        if state.endpoints.contains_key(id) {
            self.take_down(&mut state, id)?;
        }
        let netns_path = self.netns_path(id);
        let _ = netns::remove(&netns_path);
        let extra = (extra_hosts, to_device);
        let result = self.bring_up(&mut state, spec, id, &netns_path, &hosts, extra);
        if let Err(e) = result {
            let _ = self.take_down(&mut state, id);
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
            endpoint: state.endpoints.get(id).map(|held| held.endpoint.clone()),
        }))
    }

    fn bring_up(
        &self,
        state: &mut State,
        spec: &ServiceSpec,
        id: &str,
        netns_path: &Path,
        hosts: &Path,
        (mut extra_hosts, to_device): (Vec<(String, Ipv4)>, Vec<String>),
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
                .flat_map(|held| held.endpoint.attached.iter())
                .filter(|a| a.network == network.name)
                .map(|a| a.address)
                .collect();
            let address = free_address(subnet, &taken).ok_or_else(|| NetworkError::SubnetFull {
                network: network.name.clone(),
                subnet: subnet.to_string(),
            })?;
            let veth = self.veth_name(id, &network.name);
            let peer = format!("eth{i}");
            host.delete_link(&veth)?;
            host.create_veth(&veth, &peer, mac_for(address), ns.as_raw_fd())?;
            host.link_up(&veth, Some(&bridge))?;
            host.set_hairpin(&veth)?;
            if i == 0 {
                let device = gateway(subnet);
                extra_hosts.extend(to_device.iter().map(|name| (name.clone(), device)));
            }
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
        let active = !state
            .endpoints
            .values()
            .any(|held| held.service == spec.name);
        let endpoint = Endpoint {
            attached,
            names,
            extra_hosts,
            ports: spec.published_ports().copied().collect(),
            hosts_file: hosts.to_path_buf(),
        };
        let held = Held {
            service: spec.name.clone(),
            active,
            endpoint,
        };
        state.endpoints.insert(id.to_string(), held);
        self.refresh(state)
    }

    /// Takes container `id` off its networks after it was deleted; unknown ones are fine.
    /// If it answered for its service and another container of the service is on the
    /// networks, that one does from now on.
    pub fn detach(&self, id: &str) -> Result<(), NetworkError> {
        let mut state = self.lock();
        self.take_down(&mut state, id)?;
        netns::remove(&self.netns_path(id))?;
        Ok(())
    }

    fn take_down(&self, state: &mut State, id: &str) -> Result<(), NetworkError> {
        let Some(Held {
            service,
            active,
            endpoint,
        }) = state.endpoints.remove(id)
        else {
            return Ok(());
        };
        if active {
            if let Some(other) = state
                .endpoints
                .values_mut()
                .find(|held| held.service == service)
            {
                other.active = true;
            }
        }
        let mut host = Netlink::open().map_err(file_error("open netlink", Path::new("")))?;
        for a in &endpoint.attached {
            host.delete_link(&a.veth)?;
        }
        // Bridges nobody is on any more go, so an idle device keeps no trace.
        let used: BTreeSet<&String> = state
            .endpoints
            .values()
            .flat_map(|held| held.endpoint.attached.iter().map(|a| &a.network))
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

    /// A host-side veth name unique per container and network, within the kernel's 15.
    fn veth_name(&self, id: &str, network: &str) -> String {
        let digest = Sha256::digest(format!("{id}\0{network}").as_bytes());
        let hex: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
        format!("{}v{hex}", self.config.prefix)
    }

    /// Rewrites every bridged container's hosts file and the nftables table.
    fn refresh(&self, state: &State) -> Result<(), NetworkError> {
        for (id, held) in &state.endpoints {
            let text = hosts_for(held, &state.endpoints);
            // In place: the file is bind-mounted, a rename would leave the old one there.
            if let Err(e) = fs::write(&held.endpoint.hosts_file, text) {
                warn!(container = %id, error = %e, "could not update the hosts file");
            }
        }
        let mut bridges = Vec::new();
        for (network, index) in &state.networks {
            let on_it = state
                .endpoints
                .values()
                .flat_map(|held| held.endpoint.attached.iter())
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
            .filter(|held| held.active)
            .map(|held| &held.endpoint)
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
        nft::apply(
            &self.config.nft,
            table,
            &nft::render(table, &bridges, &forwards),
        )?;
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

/// The hosts file of a container: itself on each of its networks, then every other
/// service on a network it shares (its active container), by name and that network's
/// aliases.
fn hosts_for(own: &Held, all: &BTreeMap<String, Held>) -> String {
    let endpoint = &own.endpoint;
    let entry = |e: &Endpoint, a: &Attached| HostEntry {
        address: a.address,
        names: e.names.iter().chain(&a.aliases).cloned().collect(),
    };
    let mut mine = endpoint.attached.iter().map(|a| entry(endpoint, a));
    let Some(first) = mine.next() else {
        return String::new();
    };
    let mut peers: Vec<HostEntry> = mine.collect();
    for held in all.values() {
        if held.service == own.service || !held.active {
            continue;
        }
        let e = &held.endpoint;
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

    fn held(
        service: &str,
        active: bool,
        networks: &[(&str, [u8; 4], &[&str])],
        names: &[&str],
    ) -> Held {
        let endpoint = Endpoint {
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
        };
        Held {
            service: service.parse().unwrap(),
            active,
            endpoint,
        }
    }

    #[test]
    fn a_container_finds_only_services_on_a_network_it_shares() {
        let mut all = BTreeMap::new();
        let front_web = held("web", true, &[("front", [10, 0, 0, 2], &["www"])], &["web"]);
        all.insert("web".to_string(), front_web);
        let api = held(
            "api",
            true,
            &[
                ("front", [10, 0, 0, 3], &[]),
                ("back", [10, 0, 1, 2], &["rest"]),
            ],
            &["api"],
        );
        all.insert("api".to_string(), api);
        let db = held(
            "db",
            true,
            &[("back", [10, 0, 1, 3], &["database"])],
            &["db"],
        );
        all.insert("db".to_string(), db);
        let web = hosts_for(&all["web"], &all);
        assert!(web.contains("10.0.0.2\tweb www\n"), "{web}");
        assert!(web.contains("10.0.0.3\tapi\n"), "{web}");
        assert!(!web.contains("db"), "{web}");
        assert!(!web.contains("rest"), "{web}");
        let api = hosts_for(&all["api"], &all);
        assert!(api.contains("10.0.1.2\tapi rest\n"), "{api}");
        assert!(api.contains("10.0.1.3\tdb database\n"), "{api}");
        assert!(api.contains("10.0.0.2\tweb www\n"), "{api}");
    }

    #[test]
    fn bridged_services_need_a_working_nft_before_anything_is_touched() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = NetworkConfig::device(dir.path());
        config.netns_dir = dir.path().join("netns");
        config.nft = dir.path().join("no-such-nft");
        let manager = NetworkManager::open(config, BTreeMap::new()).unwrap();
        let mut desired = coracle_proto::samples::desired_with_services(2);
        assert!(
            manager.preflight(&desired).is_ok(),
            "host network needs no nft"
        );
        desired.services[1].network = NetworkMode::Private;
        let err = manager.preflight(&desired).unwrap_err();
        let text = crate::supervisor::error_chain(&err);
        assert!(text.contains("install the nftables package"), "{text}");
    }

    #[test]
    fn peers_see_only_the_active_container_of_a_service_and_a_successor_sees_itself() {
        let mut all = BTreeMap::new();
        let old = held("web", true, &[("front", [10, 0, 0, 2], &[])], &["web"]);
        let next = held("web", false, &[("front", [10, 0, 0, 4], &[])], &["web"]);
        let api = held("api", true, &[("front", [10, 0, 0, 3], &[])], &["api"]);
        all.insert("web".to_string(), old);
        all.insert("web+2".to_string(), next);
        all.insert("api".to_string(), api);
        let peer = hosts_for(&all["api"], &all);
        assert!(peer.contains("10.0.0.2\tweb\n"), "{peer}");
        assert!(!peer.contains("10.0.0.4"), "{peer}");
        let successor = hosts_for(&all["web+2"], &all);
        assert!(successor.contains("10.0.0.4\tweb\n"), "{successor}");
        assert!(!successor.contains("10.0.0.2"), "{successor}");
        assert!(successor.contains("10.0.0.3\tapi\n"), "{successor}");
        // The switch: the successor answers, the old one is gone from its peers' files.
        all.get_mut("web").unwrap().active = false;
        all.get_mut("web+2").unwrap().active = true;
        let peer = hosts_for(&all["api"], &all);
        assert!(
            peer.contains("10.0.0.4\tweb\n") && !peer.contains("10.0.0.2"),
            "{peer}"
        );
    }
}
