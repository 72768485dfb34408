//! A nats-server cluster on loopback from the files `coracle broker nats-config` writes:
//! every node in its own JetStream store under one directory (one accounts file, which the
//! controllers rewrite and reload), route ports reserved from the OS, client and MQTT ports
//! picked by nats-server and read from its log. Killed (only these pids) on drop.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::mosquitto::coracle;

/// How long a node has to elect its JetStream metadata leader and open its listeners.
const START: Duration = Duration::from_secs(60);

/// One running node.
pub struct NatsNode {
    child: Child,
    pub name: String,
    /// The controllers' native listener.
    pub client: SocketAddr,
    /// The devices' MQTT listener (TLS).
    pub mqtt: SocketAddr,
}

/// The cluster; its nodes are killed on drop.
pub struct NatsCluster {
    pub dir: PathBuf,
    pub nodes: Vec<NatsNode>,
}

/// Whether Debian's nats-server is installed.
pub fn nats_server_installed() -> bool {
    Command::new("nats-server")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Ports the OS hands out now; released at once, for nats-server to bind (routes must be
/// known before any node starts).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// The address after `prefix` in a nats-server log line, if it is there.
fn listening(line: &str, prefix: &str) -> Option<SocketAddr> {
    let rest = &line[line.find(prefix)? + prefix.len()..];
    let rest = rest.rsplit("://").next()?;
    rest.trim().parse().ok()
}

impl NatsCluster {
    /// `nodes` nodes for the controller data dir `data`, files in `dir`; the native listener
    /// with TLS when `client_tls`. Returns once every node listens for MQTT and knows its
    /// JetStream metadata leader.
    pub fn start(data: &Path, dir: &Path, nodes: usize, client_tls: bool) -> Self {
        let routes: Vec<String> = free_ports(nodes)
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let mut cluster = Self {
            dir: dir.to_path_buf(),
            nodes: Vec::new(),
        };
        let mut logs = Vec::new();
        for (i, route) in routes.iter().enumerate() {
            let name = format!("n{}", i + 1);
            let mut args = vec![
                "broker",
                "nats-config",
                "--out",
                dir.to_str().unwrap(),
                "--name",
                &name,
                "--client-listen",
                "127.0.0.1:-1",
                "--mqtt-listen",
                "127.0.0.1:-1",
                "--cluster-listen",
                route,
            ];
            if client_tls {
                args.push("--client-tls");
            }
            for r in &routes {
                args.extend(["--route", r]);
            }
            let out = coracle(data, &args);
            assert!(out.status.success(), "{out:?}");
            let mut child = Command::new("nats-server")
                .arg("-c")
                .arg(dir.join(format!("{name}.conf")))
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let stderr = child.stderr.take().unwrap();
            let (tx, rx) = mpsc::channel();
            let log_path = dir.join(format!("{name}.log"));
            std::thread::spawn(move || {
                let mut log = std::fs::File::create(log_path).unwrap();
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let _ = writeln!(log, "{line}");
                    let _ = tx.send(line);
                }
            });
            cluster.nodes.push(NatsNode {
                child,
                name,
                client: "0.0.0.0:0".parse().unwrap(),
                mqtt: "0.0.0.0:0".parse().unwrap(),
            });
            logs.push(rx);
        }
        // Every node started before any waits: the first elects no leader alone.
        for (node, rx) in cluster.nodes.iter_mut().zip(&logs) {
            let deadline = Instant::now() + START;
            let (mut client, mut mqtt, mut leader) = (None, None, false);
            let mut seen = Vec::new();
            while client.is_none() || mqtt.is_none() || !leader {
                let left = deadline.saturating_duration_since(Instant::now());
                let Ok(line) = rx.recv_timeout(left) else {
                    panic!(
                        "nats-server {} did not start:\n{}",
                        node.name,
                        seen.join("\n")
                    )
                };
                seen.push(line.clone());
                client =
                    client.or_else(|| listening(&line, "Listening for client connections on "));
                mqtt = mqtt.or_else(|| listening(&line, "Listening for MQTT clients on "));
                leader |= line.contains("JetStream cluster new metadata leader")
                    || line.contains("Self is new JetStream cluster metadata leader");
            }
            node.client = client.unwrap();
            node.mqtt = mqtt.unwrap();
        }
        cluster
    }

    /// `nats://` or `tls://` URL of node `i`'s native listener.
    pub fn client_url(&self, i: usize, tls: bool) -> String {
        let scheme = if tls { "tls" } else { "nats" };
        format!("{scheme}://127.0.0.1:{}", self.nodes[i].client.port())
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.child.kill();
            let _ = node.child.wait();
            // A failed test leaves its temp dir to be removed: show what each node said.
            if std::thread::panicking() {
                let log = std::fs::read_to_string(self.dir.join(format!("{}.log", node.name)));
                let log = log.unwrap_or_default();
                let lines: Vec<&str> = log.lines().filter(|l| !l.contains("[INF]")).collect();
                let tail = &lines[lines.len().saturating_sub(40)..];
                eprintln!(
                    "--- nats-server {} (not INF) ---\n{}",
                    node.name,
                    tail.join("\n")
                );
            }
        }
    }
}
