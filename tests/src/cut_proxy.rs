//! A TCP proxy that can cut a transfer part way, as a flaky cellular link would: armed with a
//! byte count, it closes the next connection whose request matches a pattern after that many
//! response bytes. It counts every response byte it forwards, so a test can see how much a
//! resumed download really fetched, and keeps the first bytes of every request it forwards
//! so a test can check what a client sent (no credentials to an object store).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

/// The proxy's shared state.
#[derive(Debug, Default)]
struct Shared {
    /// (pattern in the request head, bytes of response to let through)
    armed: Mutex<Option<(String, u64)>>,
    forwarded: AtomicU64,
    stop: AtomicBool,
    /// Request bytes forwarded upstream, up to [`SEEN_LIMIT`].
    seen: Mutex<Vec<u8>>,
}

/// How many request bytes are kept for [`CutProxy::requests_seen`].
const SEEN_LIMIT: usize = 16 << 20;

/// A running proxy to one upstream address.
#[derive(Debug)]
pub struct CutProxy {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl CutProxy {
    /// Listens on 127.0.0.1 (port chosen by the OS) and forwards to `upstream`.
    pub fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let accept_shared = shared.clone();
        thread::spawn(move || {
            for client in listener.incoming() {
                if accept_shared.stop.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(client) = client else { continue };
                let shared = accept_shared.clone();
                thread::spawn(move || {
                    let _ = relay(client, upstream, &shared);
                });
            }
        });
        Ok(Self { addr, shared })
    }

    /// Cuts the next connection whose request head contains `pattern` after `bytes` bytes
    /// of response.
    pub fn arm(&self, pattern: &str, bytes: u64) {
        if let Ok(mut armed) = self.shared.armed.lock() {
            *armed = Some((pattern.to_string(), bytes));
        }
    }

    /// Response bytes forwarded so far; reset with [`CutProxy::reset_count`].
    pub fn forwarded(&self) -> u64 {
        self.shared.forwarded.load(Ordering::Relaxed)
    }

    /// The request bytes forwarded so far (the first 16 MiB), as text.
    pub fn requests_seen(&self) -> String {
        self.shared
            .seen
            .lock()
            .map(|seen| String::from_utf8_lossy(&seen).into_owned())
            .unwrap_or_default()
    }

    /// Starts counting forwarded bytes from zero.
    pub fn reset_count(&self) {
        self.shared.forwarded.store(0, Ordering::Relaxed);
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr); // wake the accept loop so it sees `stop`
    }
}

/// Takes the armed cut if `request` matches it.
fn take_cut(shared: &Shared, request: &[u8]) -> Option<u64> {
    let text = String::from_utf8_lossy(request);
    let mut armed = shared.armed.lock().ok()?;
    match armed.as_ref() {
        Some((pattern, bytes)) if text.contains(pattern.as_str()) => {
            let bytes = *bytes;
            *armed = None;
            Some(bytes)
        }
        _ => None,
    }
}

/// Forwards one connection. Requests are watched as they go up (HTTP keep-alive reuses a
/// connection for several requests): a matching one sets where the response stream is cut.
fn relay(client: TcpStream, upstream: SocketAddr, shared: &Arc<Shared>) -> std::io::Result<()> {
    let mut server = TcpStream::connect(upstream)?;
    let sent = Arc::new(AtomicU64::new(0));
    let cut_at = Arc::new(AtomicU64::new(u64::MAX));
    let mut upload_from = client.try_clone()?;
    let mut upload_to = server.try_clone()?;
    let (up_shared, up_sent, up_cut) = (shared.clone(), sent.clone(), cut_at.clone());
    thread::spawn(move || {
        let mut buf = vec![0u8; 8192];
        while let Ok(n) = upload_from.read(&mut buf) {
            if n == 0 {
                break;
            }
            if let Ok(mut seen) = up_shared.seen.lock() {
                let room = SEEN_LIMIT.saturating_sub(seen.len()).min(n);
                seen.extend_from_slice(&buf[..room]);
            }
            if let Some(bytes) = take_cut(&up_shared, &buf[..n]) {
                up_cut.store(up_sent.load(Ordering::SeqCst) + bytes, Ordering::SeqCst);
            }
            if upload_to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = upload_to.shutdown(Shutdown::Write);
    });
    let mut client = client;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = server.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let done = sent.load(Ordering::SeqCst);
        let allowed = cut_at.load(Ordering::SeqCst).saturating_sub(done);
        let n = n.min(usize::try_from(allowed).unwrap_or(usize::MAX));
        client.write_all(&buf[..n])?;
        sent.fetch_add(n as u64, Ordering::SeqCst);
        shared.forwarded.fetch_add(n as u64, Ordering::Relaxed);
        if done + n as u64 >= cut_at.load(Ordering::SeqCst) {
            break; // the link "drops": both sides see the connection end mid-response
        }
    }
    let _ = client.shutdown(Shutdown::Both);
    let _ = server.shutdown(Shutdown::Both);
    Ok(())
}
