//! `TlsFront`: the embedded broker's device-facing TLS listener, run by Coracle in front of
//! `mqtt5` (which awaits each TLS handshake inside its accept loop, so one idle socket
//! stalled every device; see docs/architecture/controller.md). Each connection gets its own
//! task: the TLS handshake under `handshake_timeout`, then a plain TCP connection to the broker's
//! loopback listener and bytes relayed both ways until either side closes. The listener
//! holds at most `limits` connections (total, per source address); one over a cap is
//! closed at once. Refusals, handshake failures and accept errors are logged once per 10 s
//! with a count. A client that completes TLS and never sends CONNECT is closed by `mqtt5`
//! itself after 10 s (its fixed CONNECT timeout), which ends the relay.
//!
//! The broker sees every device as a loopback peer; `DevicePeers` maps the relay's local
//! address back to the device's, for the auth hook's log lines.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use super::v311_acks;
use crate::net::tls::{self, HandshakeError, TlsError};
use crate::net::{dialable, Acceptor, ConnectionGate, GateLimits, Refusal, SharedThrottle};

/// Why the TLS listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum TlsFrontError {
    #[error("cannot set up TLS for the broker's device listener")]
    Tls(#[from] TlsError),
    #[error("cannot listen for MQTT over TLS on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// What the TLS listener allows its peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsFrontLimits {
    pub handshake_timeout: Duration,
    pub gate: GateLimits,
}

/// How long the broker gets to close its side after the device closed its own.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Bytes copied per read in each direction: MQTT packets of a device are small, and a
/// thousand devices hold two of these each.
const RELAY_BUFFER: usize = 4 * 1024;
/// A CONNECT names its protocol level within its first dozen bytes.
const MAX_CONNECT_PREFIX: usize = 64;
const LOG_EVERY: Duration = Duration::from_secs(10);

/// The running TLS listener; stopped by `stop` or when dropped.
#[derive(Debug)]
pub struct TlsFront {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl TlsFront {
    /// Loads the controller's certificate and key (`net::tls`), binds `listen`, and relays
    /// devices to the broker's plain listener at `broker`.
    pub async fn start(
        listen: SocketAddr,
        (cert, key): (&Path, &Path),
        broker: SocketAddr,
        limits: TlsFrontLimits,
        peers: DevicePeers,
    ) -> Result<Self, TlsFrontError> {
        let acceptor = tls::acceptor(cert, key, &[tls::ALPN_MQTT])?;
        let bind = |source| TlsFrontError::Bind {
            addr: listen,
            source,
        };
        let listener = TcpListener::bind(listen).await.map_err(bind)?;
        let addr = listener.local_addr().map_err(bind)?;
        let front = Front {
            acceptor,
            broker: dialable(broker),
            limits,
            peers,
            logs: Arc::new(Logs::default()),
        };
        let task = tokio::spawn(front.run(Acceptor::new(listener, "broker tls")));
        Ok(Self { addr, task })
    }

    /// Stops accepting. Relays already open end when the broker disconnects its clients.
    pub fn stop(self) {
        self.task.abort();
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One throttle per kind of peer-triggered log line.
struct Logs {
    refused: SharedThrottle,
    handshake: SharedThrottle,
    dial: SharedThrottle,
}

impl Default for Logs {
    fn default() -> Self {
        Self {
            refused: SharedThrottle::new(LOG_EVERY),
            handshake: SharedThrottle::new(LOG_EVERY),
            dial: SharedThrottle::new(LOG_EVERY),
        }
    }
}

#[derive(Clone)]
struct Front {
    acceptor: TlsAcceptor,
    broker: SocketAddr,
    limits: TlsFrontLimits,
    peers: DevicePeers,
    logs: Arc<Logs>,
}

impl Front {
    async fn run(self, mut acceptor: Acceptor) {
        let gate = ConnectionGate::new(self.limits.gate);
        loop {
            let incoming = acceptor.next().await;
            if incoming.shed {
                // Out of descriptors: close at once (dropping it), which frees the spare.
                continue;
            }
            let admitted = match gate.admit(incoming.peer.ip()) {
                Ok(admitted) => admitted,
                Err(refusal) => {
                    self.log_refusal(refusal, incoming.peer);
                    continue;
                }
            };
            let front = self.clone();
            tokio::spawn(async move {
                front.relay(incoming.stream, incoming.peer).await;
                drop(admitted);
            });
        }
    }

    fn log_refusal(&self, refusal: Refusal, peer: SocketAddr) {
        if let Some(count) = self.logs.refused.hit() {
            let cap = match refusal {
                Refusal::Total => "total",
                Refusal::PerIp => "per source address",
            };
            tracing::warn!(%peer, cap, count, "MQTT TLS connections refused: at the connection cap");
        }
    }

    /// One device connection, from TLS handshake to close.
    async fn relay(self, stream: TcpStream, peer: SocketAddr) {
        let _ = stream.set_nodelay(true);
        let handshake = tls::handshake(&self.acceptor, stream, self.limits.handshake_timeout).await;
        let device = match handshake {
            Ok(device) => device,
            Err(HandshakeError::Failed(err)) => {
                if let Some(count) = self.logs.handshake.hit() {
                    tracing::info!(%peer, error = %err, count, "MQTT TLS handshakes failed");
                }
                return;
            }
            Err(HandshakeError::TimedOut(_)) => {
                if let Some(count) = self.logs.handshake.hit() {
                    tracing::info!(%peer, timeout_s = self.limits.handshake_timeout.as_secs(), count, "MQTT TLS handshakes timed out");
                }
                return;
            }
        };
        let broker = match TcpStream::connect(self.broker).await {
            Ok(broker) => broker,
            Err(err) => {
                if let Some(count) = self.logs.dial.hit() {
                    tracing::warn!(%peer, broker = %self.broker, error = %err, count, "cannot reach the broker's plain listener for a TLS device");
                }
                return;
            }
        };
        let _ = broker.set_nodelay(true);
        let _seen_as = broker
            .local_addr()
            .ok()
            .map(|relay| self.peers.record(relay, peer));
        pipe(device, broker).await;
    }
}

/// Relays bytes both ways. When the broker closes, the device is closed at once; when the
/// device closes, the broker gets `CLOSE_GRACE` to finish its side. A 3.1.1 client's acks
/// are trimmed to 3.1.1 on the way down (`v311_acks`).
async fn pipe(device: impl AsyncRead + AsyncWrite, broker: TcpStream) {
    let (mut device_rx, mut device_tx) = tokio::io::split(device);
    let (mut broker_rx, mut broker_tx) = broker.into_split();
    // The client's protocol level from its CONNECT; 0 until known (or not a CONNECT).
    let level = AtomicU8::new(0);
    let up = async {
        let mut prefix = Vec::new();
        let mut decided = false;
        let mut buf = vec![0u8; RELAY_BUFFER];
        loop {
            let n = match device_rx.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            // Decided before the bytes go on, so before the broker can answer them.
            if !decided {
                prefix.extend_from_slice(&buf[..n]);
                let found = v311_acks::connect_level(&prefix);
                if let Some(found) = found {
                    level.store(found.unwrap_or(u8::MAX), Ordering::Release);
                }
                decided = found.is_some() || prefix.len() >= MAX_CONNECT_PREFIX;
            }
            if broker_tx.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = broker_tx.shutdown().await;
    };
    let down = async {
        let mut trimmer = v311_acks::AckTrimmer::default();
        let mut buf = vec![0u8; RELAY_BUFFER];
        let mut out = Vec::new();
        loop {
            let n = match broker_rx.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let written = if level.load(Ordering::Acquire) == 4 {
                out.clear();
                trimmer.feed(&buf[..n], &mut out);
                device_tx.write_all(&out).await
            } else {
                device_tx.write_all(&buf[..n]).await
            };
            if written.is_err() {
                break;
            }
        }
        let _ = device_tx.shutdown().await;
    };
    let mut up = std::pin::pin!(up);
    let mut down = std::pin::pin!(down);
    tokio::select! {
        () = &mut down => {}
        () = &mut up => {
            let _ = tokio::time::timeout(CLOSE_GRACE, down).await;
        }
    }
}

/// Which device address each relay connection stands for, as the broker sees them.
#[derive(Debug, Clone, Default)]
pub struct DevicePeers(Arc<Mutex<HashMap<SocketAddr, SocketAddr>>>);

/// Removes its mapping when the relay ends.
#[derive(Debug)]
pub struct PeerRecord {
    relay: SocketAddr,
    peers: DevicePeers,
}

impl DevicePeers {
    fn record(&self, relay: SocketAddr, device: SocketAddr) -> PeerRecord {
        self.lock().insert(relay, device);
        PeerRecord {
            relay,
            peers: self.clone(),
        }
    }

    /// The device behind a broker-side client address; the address itself when it is not
    /// a relay (the controller's own client).
    pub fn device_addr(&self, client: SocketAddr) -> SocketAddr {
        self.lock().get(&client).copied().unwrap_or(client)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, SocketAddr>> {
        // Inserts and removes cannot panic half way; a poisoned map is still consistent.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for PeerRecord {
    fn drop(&mut self) {
        self.peers.lock().remove(&self.relay);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_peers_map_relays_back_and_forget_them_when_done() {
        let peers = DevicePeers::default();
        let relay: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let device: SocketAddr = "192.0.2.7:51000".parse().unwrap();
        let record = peers.record(relay, device);
        assert_eq!(peers.device_addr(relay), device);
        drop(record);
        assert_eq!(peers.device_addr(relay), relay);
    }
}
