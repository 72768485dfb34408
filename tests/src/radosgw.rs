//! An S3-compatible object store for tests: Debian's Ceph as one node (a monitor and a
//! memstore OSD, so nothing touches a disk but its temp dir) with its radosgw, started in
//! the foreground so every process is a child this guard stops by pid on drop. Ports are
//! chosen by the OS; config, keyrings, logs and sockets live under one temp dir.
//!
//! `RadosGw::start` returns `Ok(None)` after printing why when the packages are missing
//! (`ceph-mon ceph-osd radosgw ceph-common`, `.ci/packages.txt`), so a laptop without Ceph
//! skips these tests loudly instead of failing them. Start-up takes about 15 s.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::process::{ProcessError, TestProcess};

/// The S3 user every gateway gets.
pub const ACCESS_KEY: &str = "coracle-test";
pub const SECRET_KEY: &str = "coracle-test-secret";

/// How long the cluster gets to come up.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// Why the test object store could not be started.
#[derive(Debug, thiserror::Error)]
pub enum RadosGwError {
    #[error("cannot prepare the cluster's directory {path}")]
    Prepare {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot run {program}")]
    Run {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} {args:?} failed: {output}")]
    Failed {
        program: String,
        args: Vec<String>,
        output: String,
    },
    #[error("{what} exited ({status}) before it listened: {output}; the logs: {log}")]
    Exited {
        what: &'static str,
        status: String,
        output: String,
        log: String,
    },
    #[error("a ceph command failed; the logs: {log}")]
    WithLogs {
        #[source]
        source: Box<RadosGwError>,
        log: String,
    },
    #[error("cannot start a ceph daemon")]
    Spawn(#[source] ProcessError),
    #[error("{what} was not ready within {timeout:?}; its log: {log}")]
    NotReady {
        what: &'static str,
        timeout: Duration,
        log: String,
    },
}

impl RadosGwError {
    /// The error with the cluster's log tails added (a command that talks to a daemon).
    fn with_logs(self, root: &Path) -> Self {
        Self::WithLogs {
            source: Box::new(self),
            log: logs(root),
        }
    }
}

/// A running one-node Ceph with radosgw. Fields drop in order: gateway, OSD, monitor.
#[derive(Debug)]
pub struct RadosGw {
    /// `http://127.0.0.1:<port>` of the S3 API.
    pub endpoint: String,
    pub addr: SocketAddr,
    gateway: Option<TestProcess>,
    _osd: TestProcess,
    _mon: TestProcess,
    dir: tempfile::TempDir,
}

/// Whether the Ceph binaries the cluster needs are installed.
pub fn installed() -> bool {
    [
        "ceph-mon",
        "ceph-osd",
        "radosgw",
        "radosgw-admin",
        "ceph",
        "ceph-authtool",
        "monmaptool",
    ]
    .iter()
    .all(|program| {
        std::env::var_os("PATH").is_some_and(|paths| {
            std::env::split_paths(&paths).any(|dir| dir.join(program).is_file())
        })
    })
}

impl RadosGw {
    /// Starts a cluster and its gateway with the user [`ACCESS_KEY`]/[`SECRET_KEY`], or
    /// returns `Ok(None)` after printing why when Ceph is not installed.
    pub fn start() -> Result<Option<Self>, RadosGwError> {
        if !installed() {
            eprintln!(
                "SKIPPED: radosgw (Debian packages ceph-mon ceph-osd radosgw ceph-common) is \
                 not installed; the object store tests need it"
            );
            return Ok(None);
        }
        let started = Instant::now();
        let dir = tempfile::tempdir().map_err(|source| RadosGwError::Prepare {
            path: std::env::temp_dir(),
            source,
        })?;
        let root = dir.path();
        for sub in ["mon", "osd", "rgw", "log", "run"] {
            let path = root.join(sub);
            std::fs::create_dir_all(&path)
                .map_err(|source| RadosGwError::Prepare { path, source })?;
        }
        let [mon_port, rgw_port] = free_ports(root)?;
        let fsid = uuid(root)?;
        let conf = root.join("ceph.conf");
        write(&conf, &config(root, &fsid, mon_port, rgw_port))?;
        let c = conf.to_string_lossy().into_owned();
        let keyring = root.join("keyring").to_string_lossy().into_owned();
        let monmap = root.join("monmap").to_string_lossy().into_owned();
        let mon_addr = format!("v2:127.0.0.1:{mon_port}");

        // 1. Keys of the monitor (creating the keyring), the admin, the OSD and the gateway,
        //    and the monitor map.
        let all = "allow *";
        add_key(&keyring, true, "mon.", &[("mon", all)])?;
        let admin = [("mon", all), ("osd", all), ("mgr", all)];
        add_key(&keyring, false, "client.admin", &admin)?;
        let osd = [("mon", "allow profile osd"), ("osd", all)];
        add_key(&keyring, false, "osd.0", &osd)?;
        let rgw = [("mon", "allow rw"), ("osd", "allow rwx")];
        add_key(&keyring, false, "client.rgw.test", &rgw)?;
        run(
            "monmaptool",
            &[
                "--create", "--add", "a", &mon_addr, "--fsid", &fsid, &monmap,
            ],
        )?;
        // 2. The monitor, in the foreground so it stays our child.
        run(
            "ceph-mon",
            &[
                "-c",
                &c,
                "--mkfs",
                "-i",
                "a",
                "--monmap",
                &monmap,
                "--keyring",
                &keyring,
            ],
        )?;
        let mut mon = daemon("ceph-mon", &["-f", "-c", &c, "-i", "a"])?;
        let deadline = Instant::now() + START_TIMEOUT;
        let mon_listener = SocketAddr::from(([127, 0, 0, 1], mon_port));
        wait_listening(deadline, "the monitor", root, &mut mon, mon_listener)?;
        // 3. The OSD: `ceph osd create` waits for the monitor to answer.
        run(
            "ceph",
            &["-c", &c, "--connect-timeout", "60", "osd", "create"],
        )
        .map_err(|err| err.with_logs(root))?;
        let osd_uuid = uuid(root)?;
        run(
            "ceph-osd",
            &["-c", &c, "-i", "0", "--mkfs", "--osd-uuid", &osd_uuid],
        )?;
        run(
            "ceph",
            &[
                "-c",
                &c,
                "osd",
                "crush",
                "add",
                "osd.0",
                "1.0",
                "root=default",
            ],
        )?;
        let osd = daemon("ceph-osd", &["-f", "-c", &c, "-i", "0"])?;
        // 4. The gateway and its S3 user (which needs the OSD up: retried until it is).
        let mut gateway = daemon("radosgw", &["-f", "-c", &c, "-n", "client.rgw.test"])?;
        let user = [
            "-c",
            &c,
            "user",
            "create",
            "--uid=coracle",
            "--display-name=coracle",
            &format!("--access-key={ACCESS_KEY}"),
            &format!("--secret={SECRET_KEY}"),
        ];
        wait_until(deadline, "the radosgw user", root, || {
            run("radosgw-admin", &user).is_ok()
        })?;
        let addr = SocketAddr::from(([127, 0, 0, 1], rgw_port));
        wait_listening(deadline, "the radosgw listener", root, &mut gateway, addr)?;
        eprintln!("radosgw ready on {addr} in {:.1?}", started.elapsed());
        Ok(Some(Self {
            endpoint: format!("http://{addr}"),
            addr,
            gateway: Some(gateway),
            _osd: osd,
            _mon: mon,
            dir,
        }))
    }

    /// Stops the gateway (the cluster stays): the object store is unreachable from now on.
    pub fn stop_gateway(&mut self) {
        if let Some(gateway) = self.gateway.take() {
            let _ = gateway.terminate(Duration::from_secs(20));
        }
    }

    /// The cluster's log files, for a failing test's message.
    pub fn logs(&self) -> String {
        logs(self.dir.path())
    }
}

fn config(root: &Path, fsid: &str, mon_port: u16, rgw_port: u16) -> String {
    let d = root.display();
    format!(
        "[global]
fsid = {fsid}
mon host = v2:127.0.0.1:{mon_port}
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
mon allow pool delete = true
osd objectstore = memstore
memstore device bytes = 1073741824
osd crush chooseleaf type = 0
log file = {d}/log/$name.log
run dir = {d}/run
admin socket = {d}/run/$name.asok
keyring = {d}/keyring
mon data = {d}/mon
osd data = {d}/osd
mon_max_pg_per_osd = 1000
osd pool default pg num = 8
osd pool default pgp num = 8
mon warn on pool no redundancy = false
# The monitor refuses to start when the file system under its data dir has less than 5 %
# free (a build machine with tens of GB of build output); its memstore cluster writes
# almost nothing there.
mon data avail crit = 0
mon data avail warn = 0
[client.rgw.test]
rgw frontends = beast endpoint=127.0.0.1:{rgw_port}
rgw data = {d}/rgw
"
    )
}

/// Ports the OS picked for us, all different (each listener is held until every port is
/// chosen; they are free when returned and the daemons bind them right after).
fn free_ports<const N: usize>(root: &Path) -> Result<[u16; N], RadosGwError> {
    let prepare = |source| RadosGwError::Prepare {
        path: root.to_path_buf(),
        source,
    };
    let mut held = Vec::with_capacity(N);
    let mut ports = [0; N];
    for port in &mut ports {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(prepare)?;
        *port = listener.local_addr().map_err(prepare)?.port();
        held.push(listener);
    }
    Ok(ports)
}

fn uuid(root: &Path) -> Result<String, RadosGwError> {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .map(|u| u.trim().to_string())
        .map_err(|source| RadosGwError::Prepare {
            path: root.to_path_buf(),
            source,
        })
}

fn write(path: &Path, text: &str) -> Result<(), RadosGwError> {
    std::fs::write(path, text).map_err(|source| RadosGwError::Prepare {
        path: path.to_path_buf(),
        source,
    })
}

/// Generates a key for `name` with its capabilities (`(service, grant)`) into `keyring`,
/// which `create` makes first.
fn add_key(
    keyring: &str,
    create: bool,
    name: &str,
    caps: &[(&str, &str)],
) -> Result<(), RadosGwError> {
    let mut args = Vec::new();
    if create {
        args.push("--create-keyring");
    }
    args.extend([keyring, "--gen-key", "-n", name]);
    for &(service, grant) in caps {
        args.extend(["--cap", service, grant]);
    }
    run("ceph-authtool", &args)
}

/// Runs a setup command to completion.
fn run(program: &str, args: &[&str]) -> Result<(), RadosGwError> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|source| RadosGwError::Run {
            program: program.into(),
            source,
        })?;
    if out.status.success() {
        return Ok(());
    }
    Err(RadosGwError::Failed {
        program: program.into(),
        args: args.iter().map(|a| a.to_string()).collect(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    })
}

fn daemon(program: &str, args: &[&str]) -> Result<TestProcess, RadosGwError> {
    let mut command = Command::new(program);
    command.args(args);
    TestProcess::spawn(command).map_err(RadosGwError::Spawn)
}

/// Waits until `daemon` accepts connections on `addr`; a daemon that exits first (a port
/// taken meanwhile, a refused configuration) fails at once with its output and the logs.
fn wait_listening(
    deadline: Instant,
    what: &'static str,
    root: &Path,
    daemon: &mut TestProcess,
    addr: SocketAddr,
) -> Result<(), RadosGwError> {
    let mut exited = None;
    wait_until(deadline, what, root, || {
        if let Ok(status) = daemon.wait_timeout(Duration::ZERO) {
            exited = Some(status);
            return true;
        }
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
    })?;
    match exited {
        None => Ok(()),
        Some(status) => Err(RadosGwError::Exited {
            what,
            status: status.to_string(),
            output: daemon.output(),
            log: logs(root),
        }),
    }
}

/// Polls `ready` until it holds or `deadline` passes (then the logs go into the error).
fn wait_until(
    deadline: Instant,
    what: &'static str,
    root: &Path,
    mut ready: impl FnMut() -> bool,
) -> Result<(), RadosGwError> {
    let started = Instant::now();
    while !ready() {
        if Instant::now() >= deadline {
            return Err(RadosGwError::NotReady {
                what,
                timeout: deadline - started,
                log: logs(root),
            });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// The last lines of every log under `root/log`.
fn logs(root: &Path) -> String {
    let Ok(entries) = std::fs::read_dir(root.join("log")) else {
        return String::new();
    };
    let mut out = String::new();
    for entry in entries.flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(15).collect();
        out.push_str(&format!("--- {}\n", entry.path().display()));
        for line in tail.into_iter().rev() {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}
