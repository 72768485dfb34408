//! `NatsIngest`: device telemetry (health, reported states, events) through a NATS queue
//! group, for controllers sharing a NATS cluster whose MQTT interface has no shared
//! subscriptions (nats-server 2.9). Devices publish over MQTT as always; NATS carries each
//! MQTT publish as a message on the topic's subject, and a queue subscription hands each to
//! one member of the group, so N controllers split the ingest. Everything else stays on the
//! controller's MQTT client.
//!
//! A small client of the NATS text protocol (`nats_wire`): CONNECT with the controller's
//! user and password, one queue SUB per kind, MSG/HMSG in, PING/PONG both ways, TLS
//! (rustls, the controller CA) when the URL says `tls://` or the server requires it. It
//! reconnects by itself; messages published while it is away go to the other controllers
//! (or, with none, are lost like QoS 0 — the next sample or state replaces them).

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Mutex};

use super::nats_config::{subject, topic, QUEUED_KINDS};
use super::nats_wire::{self, ServerOp, MAX_LINE};
use super::Inbound;

/// How often the client pings; three intervals without a byte from the server and the
/// connection is taken for dead.
const PING_EVERY: Duration = Duration::from_secs(20);
/// The largest message accepted (the protocol's body limit with room for headers).
const MAX_MESSAGE: usize = coracle_proto::codec::MAX_BODY_BYTES + 64 * 1024;

/// Why the NATS ingest connection failed.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("NATS URL {url:?} must be nats://host:port or tls://host:port")]
    Url { url: String },
    #[error("cannot reach NATS at {url}")]
    Connect {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS with NATS at {url} failed")]
    Tls {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no usable CA certificate to verify NATS at {url}")]
    NoCa { url: String },
    #[error("NATS at {url} closed the connection")]
    Closed { url: String },
    #[error("NATS at {url} went silent")]
    Silent { url: String },
    #[error("NATS at {url} refused: {reason}")]
    Refused { url: String, reason: String },
    #[error("NATS at {url} sent something unreadable")]
    Protocol {
        url: String,
        #[source]
        source: nats_wire::WireError,
    },
    #[error("NATS at {url} sent a {len}-byte line or message, more than allowed")]
    TooLong { url: String, len: usize },
    #[error("reading from NATS at {url} failed")]
    Io {
        url: String,
        #[source]
        source: std::io::Error,
    },
}

/// `nats://host:port` or `tls://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl NatsUrl {
    pub fn parse(url: &str) -> Result<Self, NatsError> {
        let bad = || NatsError::Url { url: url.into() };
        let (tls, rest) = match url.split_once("://") {
            Some(("nats", rest)) => (false, rest),
            Some(("tls", rest)) => (true, rest),
            _ => return Err(bad()),
        };
        let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
        let port = port.parse().map_err(|_| bad())?;
        if host.is_empty() || host.contains('/') {
            return Err(bad());
        }
        Ok(Self {
            tls,
            host: host.into(),
            port,
        })
    }
}

impl std::fmt::Display for NatsUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "tls" } else { "nats" };
        write!(f, "{scheme}://{}:{}", self.host, self.port)
    }
}

/// Who the ingest connects as, where, and which queue group it joins.
#[derive(Clone)]
pub struct NatsIngest {
    pub url: NatsUrl,
    pub user: String,
    pub password: String,
    /// The connection's name in the server's monitoring (the controller's client id).
    pub name: String,
    pub queue: String,
    /// PEM bundle the server's certificate must chain to.
    pub ca_pem: String,
}

impl std::fmt::Debug for NatsIngest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the password.
        f.debug_struct("NatsIngest")
            .field("url", &self.url.to_string())
            .field("user", &self.user)
            .field("queue", &self.queue)
            .finish()
    }
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

type Reader = BufReader<tokio::io::ReadHalf<Box<dyn Stream>>>;
type Writer = Arc<Mutex<tokio::io::WriteHalf<Box<dyn Stream>>>>;

impl NatsIngest {
    /// Connects and subscribes once (so a wrong URL or password stops `serve` with the
    /// cause), then keeps the connection in a task that reconnects with backoff.
    pub async fn start(self, tx: mpsc::Sender<Inbound>) -> Result<(), NatsError> {
        let first = self.session().await?;
        tokio::spawn(async move {
            let mut session = Some(first);
            let mut backoff = Duration::from_secs(1);
            loop {
                if let Some((reader, writer)) = session.take() {
                    backoff = Duration::from_secs(1);
                    let err = self.pump(reader, writer, &tx).await;
                    if tx.is_closed() {
                        return;
                    }
                    tracing::warn!(error = %err, "NATS ingest connection lost; reconnecting");
                }
                tokio::time::sleep(backoff).await;
                match self.session().await {
                    Ok(s) => session = Some(s),
                    Err(err) => {
                        backoff = (backoff * 2).min(Duration::from_secs(15));
                        tracing::warn!(error = %err, retry_s = backoff.as_secs(), "NATS ingest reconnect failed");
                    }
                }
            }
        });
        Ok(())
    }

    /// Connects, upgrades to TLS when asked, logs in, subscribes; the server's answer to a
    /// PING proves the login and subscriptions were taken.
    async fn session(&self) -> Result<(Reader, Writer), NatsError> {
        let url = self.url.to_string();
        let tcp = TcpStream::connect((self.url.host.as_str(), self.url.port))
            .await
            .map_err(|source| NatsError::Connect {
                url: url.clone(),
                source,
            })?;
        let mut plain = BufReader::new(tcp);
        let info = match read_op(&mut plain, &url).await? {
            ServerOp::Info(info) => info,
            other => {
                return Err(NatsError::Refused {
                    url,
                    reason: format!("expected INFO first, got {other:?}"),
                })
            }
        };
        let tls = self.url.tls || info.tls_required;
        // The server says nothing more until the client speaks (or starts TLS), so the
        // buffer holds nothing past the INFO line.
        let tcp = plain.into_inner();
        let stream: Box<dyn Stream> = if tls {
            Box::new(self.tls(tcp).await?)
        } else {
            Box::new(tcp)
        };
        let (read, mut write) = tokio::io::split(stream);
        let mut hello = nats_wire::connect_line(&self.name, &self.user, &self.password, tls);
        for (sid, kind) in QUEUED_KINDS.iter().enumerate() {
            hello.push_str(&nats_wire::sub_line(
                &subject(&kind.for_all_devices().replace('+', "*")),
                &self.queue,
                sid + 1,
            ));
        }
        hello.push_str("PING\r\n");
        let io = |source| NatsError::Io {
            url: url.clone(),
            source,
        };
        write.write_all(hello.as_bytes()).await.map_err(io)?;
        let mut reader = BufReader::new(read);
        loop {
            match read_op(&mut reader, &url).await? {
                ServerOp::Pong => break,
                ServerOp::Err(reason) => return Err(NatsError::Refused { url, reason }),
                ServerOp::Ping => write.write_all(b"PONG\r\n").await.map_err(io)?,
                _ => {}
            }
        }
        Ok((reader, Arc::new(Mutex::new(write))))
    }

    async fn tls(
        &self,
        tcp: TcpStream,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, NatsError> {
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
        let url = self.url.to_string();
        let mut roots = tokio_rustls::rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()).flatten() {
            let _ = roots.add(cert);
        }
        if roots.is_empty() {
            return Err(NatsError::NoCa { url });
        }
        let config = tokio_rustls::rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = ServerName::try_from(self.url.host.clone())
            .map_err(|_| NatsError::Url { url: url.clone() })?;
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|source| NatsError::Tls { url, source })
    }

    /// Reads messages into `tx` until the connection fails; pings so a dead peer is noticed.
    async fn pump(
        &self,
        mut reader: Reader,
        writer: Writer,
        tx: &mpsc::Sender<Inbound>,
    ) -> NatsError {
        let url = self.url.to_string();
        let pinger = {
            let writer = writer.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(PING_EVERY).await;
                    if writer.lock().await.write_all(b"PING\r\n").await.is_err() {
                        return;
                    }
                }
            })
        };
        let err = loop {
            let op = match tokio::time::timeout(PING_EVERY * 3, read_op(&mut reader, &url)).await {
                Ok(Ok(op)) => op,
                Ok(Err(err)) => break err,
                Err(_) => break NatsError::Silent { url: url.clone() },
            };
            match op {
                ServerOp::Msg {
                    subject,
                    headers,
                    total,
                } => {
                    let payload = match read_payload(&mut reader, &url, headers, total).await {
                        Ok(payload) => payload,
                        Err(err) => break err,
                    };
                    let inbound = Inbound {
                        topic: topic(&subject),
                        payload,
                    };
                    if tx.try_send(inbound).is_err() {
                        if tx.is_closed() {
                            break NatsError::Closed { url: url.clone() };
                        }
                        tracing::debug!("ingest queue full, device message dropped");
                    }
                }
                ServerOp::Ping => {
                    if let Err(source) = writer.lock().await.write_all(b"PONG\r\n").await {
                        break NatsError::Io {
                            url: url.clone(),
                            source,
                        };
                    }
                }
                ServerOp::Err(reason) => {
                    break NatsError::Refused {
                        url: url.clone(),
                        reason,
                    }
                }
                ServerOp::Info(_) | ServerOp::Pong | ServerOp::Ok => {}
            }
        };
        pinger.abort();
        err
    }
}

/// Reads one control line and parses it.
async fn read_op<R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
    url: &str,
) -> Result<ServerOp, NatsError> {
    let mut line = Vec::new();
    let n = (&mut *reader)
        .take(MAX_LINE as u64)
        .read_until(b'\n', &mut line)
        .await
        .map_err(|source| NatsError::Io {
            url: url.into(),
            source,
        })?;
    if n == 0 {
        return Err(NatsError::Closed { url: url.into() });
    }
    if !line.ends_with(b"\n") {
        return Err(NatsError::TooLong {
            url: url.into(),
            len: n,
        });
    }
    let text = String::from_utf8_lossy(&line);
    nats_wire::parse_line(text.trim_end()).map_err(|source| NatsError::Protocol {
        url: url.into(),
        source,
    })
}

/// Reads a message's `total` bytes and CRLF; the payload is what follows the headers.
async fn read_payload<R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
    url: &str,
    headers: usize,
    total: usize,
) -> Result<Vec<u8>, NatsError> {
    if total > MAX_MESSAGE {
        return Err(NatsError::TooLong {
            url: url.into(),
            len: total,
        });
    }
    let mut buf = vec![0; total + 2];
    reader
        .read_exact(&mut buf)
        .await
        .map_err(|source| NatsError::Io {
            url: url.into(),
            source,
        })?;
    buf.truncate(total);
    Ok(buf.split_off(headers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nats_urls_parse_and_print_back() {
        for url in ["nats://127.0.0.1:4222", "tls://nats.example:4222"] {
            assert_eq!(NatsUrl::parse(url).unwrap().to_string(), url);
        }
        for bad in ["mqtt://h:1", "nats://h", "nats://:1", "tls://h:x"] {
            assert!(NatsUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_message_with_headers_yields_its_payload() {
        let wire = b"NATS/1.0\r\n\r\nbody\r\n".to_vec();
        let mut reader = BufReader::new(&wire[..]);
        let payload = read_payload(&mut reader, "nats://x:1", 12, 16)
            .await
            .unwrap();
        assert_eq!(payload, b"body");
    }
}
