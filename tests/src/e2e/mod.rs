//! The end-to-end harness: the real `coracle serve` ([`controller`]), real `coracle-agent`s
//! in their own network namespaces ([`agent`]), small real images ([`image`]), a
//! broker-side attacker ([`injector`]), and Debian's Mosquitto as the external broker with
//! the config `coracle broker mosquitto-config` generates ([`external_broker`]), and a
//! tmpfs of a fixed size for a device's data dir ([`small_disk`]).
//!
//! The binaries come from the workspace's target dir (`cargo test --workspace` builds them);
//! `CORACLE_BIN_DIR` points elsewhere.

pub mod agent;
pub mod apps;
pub mod controller;
pub mod debian_image;
pub mod external_broker;
pub mod image;
pub mod injector;
pub mod small_disk;

use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// A port on `ip` that was free a moment ago (the programs under test bind it themselves).
///
/// A port handed out before by this process is never handed out again: the probe socket is
/// closed at once, so two calls in a row (broker, then API) could otherwise get the same
/// port and the second listener would fail with "Address already in use".
pub fn free_port(ip: Ipv4Addr) -> anyhow::Result<u16> {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
    for _ in 0..64 {
        let listener = TcpListener::bind((ip, 0)).with_context(|| format!("bind {ip}:0"))?;
        let port = listener.local_addr().context("local address")?.port();
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return Ok(port);
        }
    }
    bail!("no port on {ip} that this process has not handed out already")
}

/// Path of a workspace binary next to the running test's target dir.
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let dir = match std::env::var_os("CORACLE_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            // target/debug/deps/<test binary> → target/debug; a benchmark binary such as
            // target/debug/bench_update is there already.
            let exe = std::env::current_exe().context("find the test binary")?;
            let dir = exe.parent().context("the test binary has no target dir")?;
            match dir.file_name() {
                Some(name) if name == "deps" => dir.parent().unwrap_or(dir).to_path_buf(),
                _ => dir.to_path_buf(),
            }
        }
    };
    let path = dir.join(name);
    if !path.exists() {
        bail!(
            "{} not found: build it first (`cargo build -p coracle-controller -p coracle-agent`) \
             or set CORACLE_BIN_DIR",
            path.display()
        );
    }
    Ok(path)
}

/// Polls `check` until it returns `Some`, for at most `timeout`; the error says what was
/// awaited and the last thing `check` saw.
pub fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(value) => return Ok(value),
            Err(last) if Instant::now() >= deadline => {
                bail!("timed out after {timeout:?} waiting for {what}; last: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

/// `GET path` (HTTP/1.0) from the machine to `addr:port`; the whole answer, head and body.
pub fn http_get(addr: Ipv4Addr, port: u16, path: &str) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let mut stream =
        std::net::TcpStream::connect_timeout(&(addr, port).into(), Duration::from_secs(5))
            .with_context(|| format!("connect {addr}:{port}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .context("set read timeout")?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")
        .with_context(|| format!("send GET {path} to {addr}:{port}"))?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .with_context(|| format!("read the answer to GET {path} from {addr}:{port}"))?;
    Ok(answer)
}
