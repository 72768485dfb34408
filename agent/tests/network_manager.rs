//! The network manager on real kernel objects, as root, inside a network namespace of the
//! test's own (so the machine's network is never touched): a bridge per app network, a
//! veth pair per container and network with its address and default route, the nftables
//! table, `/etc/hosts` naming the services that share a network, a published port reached
//! at 127.0.0.1, networks isolated from each other, and nothing left after detach.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use coracle_agent::network::{NetworkConfig, NetworkManager};
use coracle_proto::{
    samples, NetworkAttachment, NetworkMode, PortMapping, Protocol, ServiceSpec, Tuning,
};

fn service(name: &str, networks: &[&str], tuning: Vec<Tuning>) -> ServiceSpec {
    let mut s = samples::desired_with_services(1).services.remove(0);
    s.name = name.parse().unwrap();
    s.network = NetworkMode::Private;
    s.tuning = networks
        .iter()
        .map(|n| {
            Tuning::Network(NetworkAttachment {
                name: n.to_string(),
                aliases: vec![format!("{name}-alias")],
                internal: false,
            })
        })
        .chain(tuning)
        .collect();
    s
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn in_netns(path: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={}", path.display())).args(args);
    cmd
}

/// Serves one connection on `port` inside the namespace at `netns`, answering `reply`.
fn serve_once(netns: PathBuf, port: u16, reply: &'static str) -> std::thread::JoinHandle<()> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let ns = std::fs::File::open(&netns).unwrap();
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).unwrap();
        ready_tx.send(()).unwrap();
        let (mut stream, _) = listener.accept().unwrap();
        stream.write_all(reply.as_bytes()).unwrap();
    });
    ready_rx.recv().unwrap();
    handle
}

fn fetch(address: (Ipv4Addr, u16)) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&address.into(), Duration::from_secs(3))?;
    stream.set_read_timeout(Some(Duration::from_secs(3)))?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    Ok(text)
}

#[test]
#[ignore = "needs root"]
fn containers_get_bridges_addresses_names_ports_and_isolation() {
    // Everything below runs on a thread in a fresh network namespace: the "device".
    std::thread::spawn(|| {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        run(Command::new("ip").args(["link", "set", "lo", "up"]));
        // Bridged frames skip the IP hooks, as on a device without br_netfilter (this
        // machine has it, and it would hide a missing hairpin rule).
        for family in ["iptables", "ip6tables", "arptables"] {
            let knob = format!("/proc/sys/net/bridge/bridge-nf-call-{family}");
            if Path::new(&knob).exists() {
                std::fs::write(&knob, "0").unwrap();
            }
        }
        device_scenario();
    })
    .join()
    .unwrap();
}

fn device_scenario() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = NetworkConfig::device(&dir.path().join("data"));
    config.netns_dir = dir.path().join("netns");
    config.prefix = "ctnm".into();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    let _unmount = UnmountAll(config.netns_dir.clone());
    let manager = NetworkManager::open(config.clone(), Default::default()).unwrap();
    let container_dir = |name: &str| {
        let d = dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    };
    let published = Tuning::Publish(PortMapping {
        host_ip: None,
        host_port: 18080,
        container_port: 80,
        protocol: Protocol::Tcp,
    });
    let extra = Tuning::ExtraHost {
        name: "gateway.lan".into(),
        address: [192, 168, 1, 1],
    };
    let web = manager
        .attach(
            &service(
                "web",
                &["front"],
                vec![
                    published.clone(),
                    extra.clone(),
                    Tuning::ExtraHostGateway("device.internal".into()),
                ],
            ),
            "web",
            &container_dir("web"),
        )
        .unwrap()
        .unwrap();
    let api = manager
        .attach(
            &service("api", &["front", "back"], vec![]),
            "api",
            &container_dir("api"),
        )
        .unwrap()
        .unwrap();
    let db = manager
        .attach(
            &service("db", &["back"], vec![]),
            "db",
            &container_dir("db"),
        )
        .unwrap()
        .unwrap();

    // Bridges with their gateways, and each container's eth0 with its address and route.
    let links = run(Command::new("ip").args(["-o", "-4", "addr", "show"]));
    assert!(
        links.contains("ctnmbr0") && links.contains("172.29.0.1/24"),
        "{links}"
    );
    assert!(
        links.contains("ctnmbr1") && links.contains("172.29.1.1/24"),
        "{links}"
    );
    let web_ns = web.netns.clone().unwrap();
    let inside = run(&mut in_netns(
        &web_ns,
        &["ip", "-o", "-4", "addr", "show", "eth0"],
    ));
    assert!(inside.contains("172.29.0.2/24"), "{inside}");
    // The MAC follows the address, so a container that comes back on it (an update)
    // does not leave stale ARP entries behind; the bridge's is fixed the same way.
    let link = run(&mut in_netns(
        &web_ns,
        &["ip", "-o", "link", "show", "eth0"],
    ));
    assert!(link.contains("02:42:ac:1d:00:02"), "{link}");
    let bridge = run(Command::new("ip").args(["-o", "link", "show", "ctnmbr0"]));
    assert!(bridge.contains("02:42:ac:1d:00:01"), "{bridge}");
    let route = run(&mut in_netns(&web_ns, &["ip", "route"]));
    assert!(route.contains("default via 172.29.0.1 dev eth0"), "{route}");
    let api_ns = api.netns.clone().unwrap();
    let api_addrs = run(&mut in_netns(&api_ns, &["ip", "-o", "-4", "addr", "show"]));
    assert!(
        api_addrs.contains("eth0") && api_addrs.contains("eth1"),
        "{api_addrs}"
    );

    // Names: web sees api (front) but not db (back only); api sees both.
    let hosts = |dir: &str| std::fs::read_to_string(dir).unwrap();
    let web_hosts = hosts(web.hosts.to_str().unwrap());
    assert!(
        web_hosts.contains("172.29.0.2\tweb web-alias"),
        "{web_hosts}"
    );
    assert!(web_hosts.contains("\tapi api-alias"), "{web_hosts}");
    assert!(
        web_hosts.contains("192.168.1.1\tgateway.lan"),
        "{web_hosts}"
    );
    assert!(!web_hosts.contains("db"), "{web_hosts}");
    assert!(
        web_hosts.contains("172.29.0.1\tdevice.internal"),
        "host-gateway is the bridge's address: {web_hosts}"
    );
    let api_hosts = hosts(api.hosts.to_str().unwrap());
    assert!(api_hosts.contains("\tdb db-alias"), "{api_hosts}");
    assert!(api_hosts.contains("\tweb web-alias"), "{api_hosts}");
    let resolv = std::fs::read_to_string(&web.resolv).unwrap();
    assert!(resolv.contains("nameserver "), "{resolv}");
    assert!(!resolv.contains("nameserver 127."), "{resolv}");

    // Containers on one network reach each other; the published port answers at
    // 127.0.0.1 on the device.
    let served = serve_once(web_ns.clone(), 80, "from web");
    let via_bridge = Command::new("nsenter")
        .arg(format!("--net={}", api_ns.display()))
        .args(["/bin/busybox", "nc", "172.29.0.2", "80"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&via_bridge.stdout), "from web");
    served.join().unwrap();
    let served = serve_once(web_ns.clone(), 80, "published");
    assert_eq!(fetch((Ipv4Addr::LOCALHOST, 18080)).unwrap(), "published");
    served.join().unwrap();

    // api reaches web through the device's published port too (hairpin NAT).
    let served = serve_once(web_ns.clone(), 80, "hairpin");
    let hairpin = std::thread::spawn({
        let ns = std::fs::File::open(&api_ns).unwrap();
        move || {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            fetch((Ipv4Addr::new(172, 29, 0, 1), 18080))
        }
    })
    .join()
    .unwrap();
    assert_eq!(hairpin.unwrap(), "hairpin");
    served.join().unwrap();

    // web reaches its own published port through the device too (the bridge port's
    // hairpin mode sends the translated frame back out where it came in).
    let served = serve_once(web_ns.clone(), 80, "itself");
    let own = std::thread::spawn({
        let ns = std::fs::File::open(&web_ns).unwrap();
        move || {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            fetch((Ipv4Addr::new(172, 29, 0, 1), 18080))
        }
    })
    .join()
    .unwrap();
    assert_eq!(own.unwrap(), "itself");
    served.join().unwrap();

    // db (back) cannot reach web (front) even by address: the networks are isolated.
    let db_ns = db.netns.clone().unwrap();
    let _listener = serve_once_nonblocking(web_ns.clone(), 81);
    let connects = |from: &Path| {
        let ns = std::fs::File::open(from).unwrap();
        std::thread::spawn(move || {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let web = (Ipv4Addr::new(172, 29, 0, 2), 81).into();
            TcpStream::connect_timeout(&web, Duration::from_secs(2)).is_ok()
        })
        .join()
        .unwrap()
    };
    assert!(connects(&api_ns), "api (on front) could not connect to web");
    assert!(!connects(&db_ns), "db reached web across networks");

    let table = run(Command::new("nft").args(["list", "table", "ip", "ctnm"]));
    assert!(table.contains("dnat to 172.29.0.2:80"), "{table}");

    // start-first: a successor of web joins beside it, answering neither to web's name nor
    // on its port until it is activated; then both move to it in one step, and the old
    // container's detach leaves them there.
    let next = manager
        .attach(
            &service("web", &["front"], vec![published, extra]),
            "web+2",
            &container_dir("web+2"),
        )
        .unwrap()
        .unwrap();
    let next_ns = next.netns.clone().unwrap();
    let next_hosts = hosts(next.hosts.to_str().unwrap());
    assert!(
        next_hosts.contains("172.29.0.4\tweb web-alias"),
        "{next_hosts}"
    );
    assert!(!hosts(api.hosts.to_str().unwrap()).contains("172.29.0.4"));
    let served = serve_once(web_ns.clone(), 80, "old");
    assert_eq!(fetch((Ipv4Addr::LOCALHOST, 18080)).unwrap(), "old");
    served.join().unwrap();
    manager.activate("web+2").unwrap();
    let api_hosts = hosts(api.hosts.to_str().unwrap());
    assert!(
        api_hosts.contains("172.29.0.4\tweb web-alias"),
        "{api_hosts}"
    );
    assert!(!api_hosts.contains("172.29.0.2"), "{api_hosts}");
    let table = run(Command::new("nft").args(["list", "table", "ip", "ctnm"]));
    assert!(table.contains("dnat to 172.29.0.4:80"), "{table}");
    assert!(!table.contains("172.29.0.2:80"), "{table}");
    let served = serve_once(next_ns.clone(), 80, "new");
    assert_eq!(fetch((Ipv4Addr::LOCALHOST, 18080)).unwrap(), "new");
    served.join().unwrap();
    manager.detach("web").unwrap();
    assert!(!web_ns.exists());
    let served = serve_once(next_ns.clone(), 80, "still new");
    assert_eq!(fetch((Ipv4Addr::LOCALHOST, 18080)).unwrap(), "still new");
    served.join().unwrap();

    // Detaching everyone removes veths, bridges, namespaces and the table.
    for id in ["web+2", "api", "db"] {
        manager.detach(id).unwrap();
    }
    assert!(!next_ns.exists());
    let links = run(Command::new("ip").args(["-o", "link", "show"]));
    assert!(!links.contains("ctnm"), "{links}");
    assert!(!web_ns.exists());
    let tables = run(Command::new("nft").args(["list", "tables"]));
    assert!(!tables.contains("ctnm"), "{tables}");
}

/// A listener inside `netns` that is never accepted from: the port is open there.
fn serve_once_nonblocking(netns: PathBuf, port: u16) -> std::sync::mpsc::Sender<()> {
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&netns).unwrap();
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let _listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).unwrap();
        ready_tx.send(()).unwrap();
        let _ = stop_rx.recv();
    });
    ready_rx.recv().unwrap();
    stop_tx
}

/// Unmounts the namespaces left in a dir when a failed assertion skipped `detach`.
struct UnmountAll(PathBuf);

impl Drop for UnmountAll {
    fn drop(&mut self) {
        for entry in std::fs::read_dir(&self.0).into_iter().flatten().flatten() {
            let _ = nix::mount::umount2(&entry.path(), nix::mount::MntFlags::MNT_DETACH);
        }
    }
}
