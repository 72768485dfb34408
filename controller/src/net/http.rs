//! `serve`: the API's and the registry's HTTP/1.1 server, in place of `axum::serve`, so that
//! no peer can hold the controller: a request head must arrive within `header_timeout`
//! (hyper's header read timeout, which also closes a keep-alive connection idle that long
//! between requests), a request body that stalls fails (`stall`), and the listener holds at
//! most `gate` connections. Over the cap a new connection is answered 503 and closed; out
//! of file descriptors, likewise (`accept`). Refusals are logged once per 10 s with a count.
//!
//! With a TLS acceptor (the listener serves HTTPS) every connection first completes its
//! handshake within `handshake_timeout`, inside its connection slot, so half-open TLS
//! clients are capped and closed like half-open HTTP ones; then the same HTTP rules apply
//! to the decrypted stream. A refusal over the cap is a 503 after the handshake, within
//! the refusal's one second; out of descriptors a TLS connection is closed at once (a
//! handshake would hold the spare descriptor the next refusal needs).

use std::future::Future;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower_service::Service as _;

use super::accept::Acceptor;
use super::gate::{ConnectionGate, GateLimits, Refusal};
use super::throttle::SharedThrottle;
use super::tls::{self, HandshakeError};

/// A connection's byte stream: plain TCP or TLS over it.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// What one HTTP listener allows its peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    pub gate: GateLimits,
    /// For a request head, and for the next request on an idle keep-alive connection.
    pub header_timeout: Duration,
    /// Longest wait for the next chunk of a request body.
    pub body_stall: Duration,
    /// For a TLS client's handshake, before its request head (HTTPS listeners only).
    pub handshake_timeout: Duration,
}

/// Refusals being answered at once; above this a refused connection is just closed.
const REFUSALS_IN_FLIGHT: GateLimits = GateLimits {
    total: 32,
    per_ip: 4,
};
/// How long a refused client gets to read its 503 before the socket is closed.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);
/// How long open connections get to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
const LOG_EVERY: Duration = Duration::from_secs(10);

static BUSY: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let body = "server busy: too many connections, retry later\n";
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
});

/// Serves `router` on `listener` until `shutdown` completes; `what` names it in logs.
/// With `tls`, every connection speaks HTTPS.
pub async fn serve(
    listener: TcpListener,
    what: &'static str,
    router: Router,
    limits: HttpLimits,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let stall = limits.body_stall;
    let router = router.layer(axum::middleware::map_request(
        move |request: axum::extract::Request| async move {
            super::stall::guard_request(request, stall)
        },
    ));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let (stop_tx, stop_rx) = watch::channel(false);
    let context = ConnectionContext {
        what,
        builder: Arc::new(builder),
        router,
        tls,
        handshake_timeout: limits.handshake_timeout,
        handshakes: Arc::new(SharedThrottle::new(LOG_EVERY)),
        stop: stop_rx,
    };
    let gate = ConnectionGate::new(limits.gate);
    let refusals = Refusals {
        what,
        in_flight: ConnectionGate::new(REFUSALS_IN_FLIGHT),
        logged: SharedThrottle::new(LOG_EVERY),
    };
    let mut acceptor = Acceptor::new(listener, what);
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let incoming = tokio::select! {
            incoming = acceptor.next() => incoming,
            () = &mut shutdown => break,
            // Reaps finished connection tasks so the set holds only open ones.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        if incoming.shed {
            // Out of descriptors: answer from the one we have and close at once (over TLS
            // the close is the answer).
            if context.tls.is_none() {
                let _ = incoming.stream.try_write(&BUSY);
            }
            continue;
        }
        match gate.admit(incoming.peer.ip()) {
            Ok(admitted) => {
                let context = context.clone();
                connections.spawn(async move {
                    let _admitted = admitted;
                    context.run(incoming.stream, incoming.peer).await;
                });
            }
            Err(refusal) => refusals.refuse(incoming.stream, incoming.peer, refusal, &context.tls),
        }
    }
    let _ = stop_tx.send(true);
    drain(connections, what).await;
}

/// Connections refused at the cap: answered 503 while few are in flight, logged once per
/// `LOG_EVERY` with a count.
struct Refusals {
    what: &'static str,
    in_flight: ConnectionGate,
    logged: SharedThrottle,
}

impl Refusals {
    fn refuse(
        &self,
        stream: TcpStream,
        peer: std::net::SocketAddr,
        refusal: Refusal,
        tls: &Option<TlsAcceptor>,
    ) {
        if let Some(count) = self.logged.hit() {
            let cap = match refusal {
                Refusal::Total => "total",
                Refusal::PerIp => "per source address",
            };
            tracing::warn!(
                listener = self.what,
                %peer,
                cap,
                count,
                "connections refused with 503: at the connection cap"
            );
        }
        if let Ok(slot) = self.in_flight.admit(peer.ip()) {
            let tls = tls.clone();
            tokio::spawn(async move {
                refuse(stream, tls).await;
                drop(slot);
            });
        }
    }
}

/// What every admitted connection of one listener needs.
#[derive(Clone)]
struct ConnectionContext {
    what: &'static str,
    builder: Arc<hyper::server::conn::http1::Builder>,
    router: Router,
    tls: Option<TlsAcceptor>,
    handshake_timeout: Duration,
    handshakes: Arc<SharedThrottle>,
    /// Turns true at shutdown: handshakes end, requests in progress finish.
    stop: watch::Receiver<bool>,
}

impl ConnectionContext {
    /// One connection: the TLS handshake (HTTPS listeners), then HTTP/1.1 until the peer
    /// closes, a timeout, or shutdown.
    async fn run(mut self, stream: TcpStream, peer: std::net::SocketAddr) {
        let _ = stream.set_nodelay(true);
        let stream: Box<dyn Stream> = match self.tls.clone() {
            None => Box::new(stream),
            Some(acceptor) => {
                let handshake = tls::handshake(&acceptor, stream, self.handshake_timeout);
                let accepted = tokio::select! {
                    accepted = handshake => accepted,
                    _ = async { self.stop.wait_for(|stop| *stop).await.is_ok() } => return,
                };
                match accepted {
                    Ok(stream) => Box::new(stream),
                    Err(err) => {
                        log_handshake(self.what, peer, &err, &self.handshakes);
                        return;
                    }
                }
            }
        };
        // Handlers that care who is asking (login limits) read the peer from here.
        let router = self.router.clone();
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            router.clone().call(request)
        });
        // With upgrades: the exec WebSocket (`api::exec`) takes the connection over.
        let conn = self
            .builder
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let mut conn = std::pin::pin!(conn);
        let result = tokio::select! {
            result = conn.as_mut() => result,
            // (The watch guard is dropped inside: it must not live across an await.)
            _ = async { self.stop.wait_for(|stop| *stop).await.is_ok() } => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(err) = result {
            // Timeouts, resets and malformed requests: the peer's doing, not news.
            tracing::debug!(listener = self.what, %peer, error = %err, "connection ended");
        }
    }
}

/// Gives open connections `SHUTDOWN_GRACE` to finish, then closes the rest.
async fn drain(mut connections: JoinSet<()>, what: &'static str) {
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::info!(
            listener = what,
            open = connections.len(),
            "closing connections still open at shutdown"
        );
        connections.abort_all();
    }
}

/// A failed or timed-out TLS handshake: a scanner, a client without the CA, or a socket
/// that never spoke. Logged once per 10 s with a count.
fn log_handshake(
    what: &'static str,
    peer: std::net::SocketAddr,
    err: &HandshakeError,
    throttle: &SharedThrottle,
) {
    if let Some(count) = throttle.hit() {
        match err {
            HandshakeError::Failed(source) => {
                tracing::info!(listener = what, %peer, error = %source, count, "TLS handshakes failed");
            }
            HandshakeError::TimedOut(after) => {
                tracing::info!(listener = what, %peer, timeout_s = after.as_secs(), count, "TLS handshakes timed out");
            }
        }
    }
}

/// Answers 503 and closes, reading what the client sent meanwhile so that the close does
/// not reset the connection before the client read the answer. Over TLS the handshake
/// comes first; all of it within `REFUSAL_LINGER`.
async fn refuse(stream: TcpStream, tls: Option<TlsAcceptor>) {
    let answer = async {
        let mut stream: Box<dyn Stream> = match tls {
            None => Box::new(stream),
            Some(acceptor) => Box::new(acceptor.accept(stream).await?),
        };
        stream.write_all(&BUSY).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    };
    let _ = tokio::time::timeout(REFUSAL_LINGER, answer).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_busy_answer_is_a_complete_503() {
        let text = String::from_utf8(BUSY.clone()).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "));
        assert!(head.contains(&format!("content-length: {}", body.len())));
    }
}
