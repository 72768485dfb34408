//! Test hosts in network namespaces: a private bridge namespace, and per host a namespace
//! joined to it by a veth pair, each with its own address in 10.213.0.0/24. The machine itself
//! joins the bridge as 10.213.0.1, where the controller listens in end-to-end tests.
//!
//! Only addresses inside namespaces this module made are ever targets. Everything is torn
//! down on drop, also when a test fails. The machine has one address on every test network,
//! so the networks of one test process take turns: `TestNetwork::new` waits for the one
//! before to be dropped.

use std::fs::File;
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};

/// Why a namespace step failed; names the `ip` command that did.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("`{args}` could not run")]
    Spawn {
        args: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{args}` failed: {stderr}")]
    Ip { args: String, stderr: String },
    #[error("cannot enter network namespace {name}")]
    Enter {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("a network has at most 250 hosts")]
    Full,
}

fn ip(args: &[&str]) -> Result<(), NetnsError> {
    run("ip", args)
}

fn tc(args: &[&str]) -> Result<(), NetnsError> {
    run("tc", args)
}

/// Runs `program args`; a failure names the command and carries its stderr.
fn run(program: &str, args: &[&str]) -> Result<(), NetnsError> {
    let joined = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|source| NetnsError::Spawn {
            args: joined.clone(),
            source,
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetnsError::Ip {
            args: joined,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

static NEXT_NETWORK: AtomicU32 = AtomicU32::new(0);

/// Whether a network of this process holds the machine's address (`GATEWAY`).
static GATEWAY_TAKEN: Mutex<bool> = Mutex::new(false);
static GATEWAY_FREED: Condvar = Condvar::new();

/// A network's hold on the machine's address, given back on drop (after the network's own
/// teardown: fields drop after `Drop::drop`), also when a test panics.
#[derive(Debug)]
struct GatewayTurn;

impl GatewayTurn {
    fn take() -> Self {
        let mut taken = GATEWAY_TAKEN.lock().unwrap_or_else(PoisonError::into_inner);
        while *taken {
            taken = GATEWAY_FREED
                .wait(taken)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *taken = true;
        Self
    }
}

impl Drop for GatewayTurn {
    fn drop(&mut self) {
        *GATEWAY_TAKEN.lock().unwrap_or_else(PoisonError::into_inner) = false;
        GATEWAY_FREED.notify_one();
    }
}

/// A bridge with the machine on it; hosts are added with [`TestNetwork::add_host`].
#[derive(Debug)]
pub struct TestNetwork {
    tag: String,
    bridge_ns: String,
    host_veth: String,
    hosts: Vec<String>,
    _turn: GatewayTurn,
}

/// One test host: a network namespace with address `addr` on the bridge.
#[derive(Debug, Clone)]
pub struct TestHost {
    pub netns: String,
    pub addr: Ipv4Addr,
}

impl TestNetwork {
    /// The machine's own address on the bridge.
    pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 1);

    /// Makes the bridge namespace and joins the machine to it, once the network before it in
    /// this process is gone. Names carry the pid and a counter, so leftover namespaces of
    /// other runs never collide.
    pub fn new() -> Result<Self, NetnsError> {
        let turn = GatewayTurn::take();
        let n = NEXT_NETWORK.fetch_add(1, Ordering::Relaxed);
        let tag = format!("c{}n{n}", std::process::id());
        let bridge_ns = format!("{tag}-br");
        let host_veth = format!("{tag}h");
        let network = Self {
            tag,
            bridge_ns: bridge_ns.clone(),
            host_veth: host_veth.clone(),
            hosts: Vec::new(),
            _turn: turn,
        };
        ip(&["netns", "add", &bridge_ns])?;
        ip(&["-n", &bridge_ns, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &bridge_ns, "link", "set", "br0", "up"])?;
        ip(&["-n", &bridge_ns, "link", "set", "lo", "up"])?;
        let peer = format!("{}p", network.tag);
        ip(&[
            "link", "add", &host_veth, "type", "veth", "peer", "name", &peer,
        ])?;
        ip(&["link", "set", &peer, "netns", &bridge_ns])?;
        ip(&[
            "-n", &bridge_ns, "link", "set", &peer, "master", "br0", "up",
        ])?;
        let gateway = format!("{}/24", Self::GATEWAY);
        ip(&["addr", "add", &gateway, "dev", &host_veth])?;
        ip(&["link", "set", &host_veth, "up"])?;
        Ok(network)
    }

    /// Limits traffic from the machine to every host to `kbit` kilobits per second (a token
    /// bucket on the machine's veth), so a download takes long enough to be cut part way.
    pub fn limit_rate_to_hosts(&self, kbit: u32) -> Result<(), NetnsError> {
        let rate = format!("{kbit}kbit");
        tc(&[
            "qdisc",
            "replace",
            "dev",
            &self.host_veth,
            "root",
            "tbf",
            "rate",
            &rate,
            "burst",
            "32kbit",
            "latency",
            "2s",
        ])
    }

    /// Adds a host namespace with the next free address; its interface is `eth0`.
    pub fn add_host(&mut self) -> Result<TestHost, NetnsError> {
        let index = self.hosts.len() + 2;
        let last_octet = u8::try_from(index).map_err(|_| NetnsError::Full)?;
        if last_octet > 250 {
            return Err(NetnsError::Full);
        }
        let netns = format!("{}-h{index}", self.tag);
        let outer = format!("{}v{index}", self.tag);
        ip(&["netns", "add", &netns])?;
        self.hosts.push(netns.clone());
        ip(&[
            "link", "add", &outer, "type", "veth", "peer", "name", "eth0", "netns", &netns,
        ])?;
        ip(&["link", "set", &outer, "netns", &self.bridge_ns])?;
        ip(&[
            "-n",
            &self.bridge_ns,
            "link",
            "set",
            &outer,
            "master",
            "br0",
            "up",
        ])?;
        let addr = Ipv4Addr::new(10, 213, 0, last_octet);
        let cidr = format!("{addr}/24");
        ip(&["-n", &netns, "addr", "add", &cidr, "dev", "eth0"])?;
        ip(&["-n", &netns, "link", "set", "eth0", "up"])?;
        ip(&["-n", &netns, "link", "set", "lo", "up"])?;
        Ok(TestHost { netns, addr })
    }
}

impl TestHost {
    /// Cuts the host's link, as a cellular modem losing signal would.
    pub fn link_down(&self) -> Result<(), NetnsError> {
        ip(&["-n", &self.netns, "link", "set", "eth0", "down"])
    }

    /// Restores the host's link.
    pub fn link_up(&self) -> Result<(), NetnsError> {
        ip(&["-n", &self.netns, "link", "set", "eth0", "up"])
    }

    /// A command that runs inside the host's namespace (`ip netns exec`).
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns, program]);
        cmd
    }

    /// Runs `f` on a fresh thread that has entered the host's network namespace, so test
    /// code can open sockets "from" the host. `setns` changes only the calling thread.
    pub fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, NetnsError> {
        let name = self.netns.clone();
        let handle = std::thread::spawn(move || -> Result<T, NetnsError> {
            let path = format!("/run/netns/{name}");
            let file = File::open(&path).map_err(|source| NetnsError::Enter {
                name: name.clone(),
                source,
            })?;
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|errno| {
                NetnsError::Enter {
                    name: name.clone(),
                    source: errno.into(),
                }
            })?;
            Ok(f())
        });
        match handle.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl Drop for TestNetwork {
    fn drop(&mut self) {
        // Deleting a namespace destroys the veth ends inside it, and with them their peers.
        for netns in self.hosts.drain(..) {
            let _ = ip(&["netns", "delete", &netns]);
        }
        let _ = ip(&["netns", "delete", &self.bridge_ns]);
        let _ = ip(&["link", "delete", &self.host_veth]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    fn netns_exists(name: &str) -> bool {
        std::path::Path::new("/run/netns").join(name).exists()
    }

    #[test]
    #[ignore = "needs root"]
    fn hosts_reach_the_machine_and_a_cut_link_stops_them() {
        let mut net = TestNetwork::new().unwrap();
        let a = net.add_host().unwrap();
        let b = net.add_host().unwrap();
        assert_ne!(a.addr, b.addr);

        let listener = TcpListener::bind((TestNetwork::GATEWAY, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut conn, peer) = listener.accept().unwrap();
            conn.write_all(b"hi").unwrap();
            peer
        });
        let got = a
            .run(move || {
                let mut conn = TcpStream::connect_timeout(
                    &(TestNetwork::GATEWAY, port).into(),
                    Duration::from_secs(5),
                )
                .unwrap();
                let mut buf = [0u8; 2];
                conn.read_exact(&mut buf).unwrap();
                buf
            })
            .unwrap();
        assert_eq!(&got, b"hi");
        assert_eq!(server.join().unwrap().ip(), a.addr);

        b.link_down().unwrap();
        let refused = b
            .run(move || {
                TcpStream::connect_timeout(
                    &(TestNetwork::GATEWAY, port).into(),
                    Duration::from_millis(300),
                )
                .is_err()
            })
            .unwrap();
        assert!(refused, "a host with its link down still connected");
        b.link_up().unwrap();

        let names = [a.netns.clone(), b.netns.clone(), net.bridge_ns.clone()];
        drop(net);
        for name in names {
            assert!(!netns_exists(&name), "{name} left behind");
        }
    }
}
