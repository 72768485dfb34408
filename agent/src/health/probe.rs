//! Network probes run by the agent itself: TCP connect and HTTP GET to the container's
//! address (its first app network's, or `127.0.0.1` when it shares the device's network).
//! Exec probes run inside the container through the engine. Every probe is bounded by its
//! timeout.

use std::net::Ipv4Addr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest status line read from an HTTP probe; the rest of the response is ignored.
const MAX_STATUS_LINE: usize = 256;

/// Why a network probe failed, as the rollback reason and the health log say it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeFailure {
    #[error("no answer within {ms} ms")]
    Timeout { ms: u128 },
    #[error("connection refused")]
    Refused,
    #[error("connect: {0}")]
    Connect(String),
    #[error("{step}: {reason}")]
    Io { step: &'static str, reason: String },
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("the answer is not HTTP")]
    NotHttp,
}

async fn connect(address: Ipv4Addr, port: u16) -> Result<TcpStream, ProbeFailure> {
    TcpStream::connect((address, port))
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::ConnectionRefused => ProbeFailure::Refused,
            _ => ProbeFailure::Connect(e.to_string()),
        })
}

async fn bounded<T>(
    timeout: Duration,
    attempt: impl std::future::Future<Output = Result<T, ProbeFailure>>,
) -> Result<T, ProbeFailure> {
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or(Err(ProbeFailure::Timeout {
            ms: timeout.as_millis(),
        }))
}

/// `Ok` when a TCP connection to the port opens within `timeout`.
pub async fn tcp(address: Ipv4Addr, port: u16, timeout: Duration) -> Result<(), ProbeFailure> {
    bounded(timeout, async { connect(address, port).await.map(drop) }).await
}

/// `Ok` when `GET path` answers 2xx or 3xx within `timeout`.
pub async fn http(
    address: Ipv4Addr,
    port: u16,
    path: &str,
    timeout: Duration,
) -> Result<(), ProbeFailure> {
    let io = |step| {
        move |e: std::io::Error| ProbeFailure::Io {
            step,
            reason: e.to_string(),
        }
    };
    let attempt = async {
        let mut stream = connect(address, port).await?;
        let path = if path.starts_with('/') { path } else { "/" };
        let request = format!(
            "GET {path} HTTP/1.0\r\nHost: {address}:{port}\r\nUser-Agent: coracle-agent\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(io("send request"))?;
        let mut buf = [0u8; MAX_STATUS_LINE];
        let mut len = 0;
        while len < buf.len() && !buf[..len].contains(&b'\n') {
            let n = stream
                .read(&mut buf[len..])
                .await
                .map_err(io("read answer"))?;
            if n == 0 {
                break;
            }
            len += n;
        }
        match status(&buf[..len]) {
            Some(code) if (200..400).contains(&code) => Ok(()),
            Some(code) => Err(ProbeFailure::Status(code)),
            None => Err(ProbeFailure::NotHttp),
        }
    };
    bounded(timeout, attempt).await
}

/// The NNN of `HTTP/1.x NNN ...`.
fn status(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\n').next()?;
    let text = std::str::from_utf8(line).ok()?;
    let mut parts = text.split_whitespace();
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn status_lines() {
        assert_eq!(status(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(status(b"HTTP/1.0 302 Found\r\n"), Some(302));
        assert_eq!(status(b"HTTP/1.1 503 Busy\r\n"), Some(503));
        assert_eq!(status(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(status(b""), None);
    }

    async fn serve_once(listener: TcpListener, reply: &'static [u8]) {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 512];
        let _ = s.read(&mut buf).await;
        s.write_all(reply).await.unwrap();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn probes_against_real_sockets() {
        let t = Duration::from_secs(5);
        let ok = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = ok.local_addr().unwrap().port();
        tokio::spawn(serve_once(ok, b"HTTP/1.1 204 No Content\r\n\r\n"));
        assert_eq!(http(Ipv4Addr::LOCALHOST, port, "/healthz", t).await, Ok(()));

        let missing = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = missing.local_addr().unwrap().port();
        tokio::spawn(serve_once(missing, b"HTTP/1.1 404 Not Found\r\n\r\n"));
        let failure = http(Ipv4Addr::LOCALHOST, port, "/healthz", t)
            .await
            .unwrap_err();
        assert_eq!(failure.to_string(), "HTTP status 404");

        let open = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = open.local_addr().unwrap().port();
        assert_eq!(tcp(Ipv4Addr::LOCALHOST, port, t).await, Ok(()));
        drop(open);
        assert_eq!(
            tcp(Ipv4Addr::LOCALHOST, port, t).await,
            Err(ProbeFailure::Refused),
            "closed port"
        );
        let refused = http(Ipv4Addr::LOCALHOST, port, "/", t).await.unwrap_err();
        assert_eq!(refused.to_string(), "connection refused");

        // A server that accepts and never answers: the timeout ends the probe.
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = silent.local_addr().unwrap().port();
        let failure = http(Ipv4Addr::LOCALHOST, port, "/", Duration::from_millis(200)).await;
        assert_eq!(failure, Err(ProbeFailure::Timeout { ms: 200 }));
    }
}
