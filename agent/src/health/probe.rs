//! Network probes run by the agent itself: TCP connect and HTTP GET to `127.0.0.1:port`
//! (the container shares the device network in `host` mode). Exec probes run inside the
//! container through the engine. Every probe is bounded by its timeout.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest status line read from an HTTP probe; the rest of the response is ignored.
const MAX_STATUS_LINE: usize = 256;

/// True when a TCP connection to the port opens within `timeout`.
pub async fn tcp(port: u16, timeout: Duration) -> bool {
    matches!(
        tokio::time::timeout(timeout, TcpStream::connect(("127.0.0.1", port))).await,
        Ok(Ok(_))
    )
}

/// True when `GET path` answers 2xx or 3xx within `timeout`.
pub async fn http(port: u16, path: &str, timeout: Duration) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let path = if path.starts_with('/') { path } else { "/" };
        let request = format!(
            "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: coracle-agent\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut buf = [0u8; MAX_STATUS_LINE];
        let mut len = 0;
        while len < buf.len() && !buf[..len].contains(&b'\n') {
            let n = stream.read(&mut buf[len..]).await.ok()?;
            if n == 0 {
                break;
            }
            len += n;
        }
        status_ok(&buf[..len])
    };
    matches!(tokio::time::timeout(timeout, attempt).await, Ok(Some(true)))
}

/// Parses `HTTP/1.x NNN ...` and says whether NNN is 2xx or 3xx.
fn status_ok(head: &[u8]) -> Option<bool> {
    let line = head.split(|&b| b == b'\n').next()?;
    let text = std::str::from_utf8(line).ok()?;
    let mut parts = text.split_whitespace();
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    let code: u16 = parts.next()?.parse().ok()?;
    Some((200..400).contains(&code))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn status_lines() {
        assert_eq!(status_ok(b"HTTP/1.1 200 OK\r\n"), Some(true));
        assert_eq!(status_ok(b"HTTP/1.0 302 Found\r\n"), Some(true));
        assert_eq!(status_ok(b"HTTP/1.1 503 Busy\r\n"), Some(false));
        assert_eq!(status_ok(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(status_ok(b""), None);
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
        assert!(http(port, "/healthz", t).await);

        let bad = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = bad.local_addr().unwrap().port();
        tokio::spawn(serve_once(bad, b"HTTP/1.1 500 Oops\r\n\r\n"));
        assert!(!http(port, "/healthz", t).await);

        let open = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = open.local_addr().unwrap().port();
        assert!(tcp(port, t).await);
        drop(open);
        assert!(!tcp(port, t).await, "closed port");

        // A server that accepts and never answers: the timeout ends the probe.
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = silent.local_addr().unwrap().port();
        assert!(!http(port, "/", Duration::from_millis(200)).await);
    }
}
