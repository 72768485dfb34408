//! `coracle exec [-i] [-t] DEVICE SERVICE -- CMD…`: a process in a service's container on a
//! device, over the API's exec WebSocket (`api::exec`, framing in `api::exec_frames`),
//! which the controller relays over the device's own MQTT connection. With `-i` stdin is
//! sent (else the process reads EOF at once); with `-t` the process gets a terminal the size
//! of ours, ours goes raw (restored on every way out) and SIGWINCH resizes the remote one.
//! The exit code is the remote process's. Without a local terminal the size comes from
//! `LINES`/`COLUMNS`, else 24×80.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use super::api_client::api_error;
use super::raw_terminal::{window_size, RawTerminal};
use super::{ApiArgs, ApiClient};
use crate::api::exec_frames::{parse_output, ClientControl, ServerEnd};
use crate::datadir::DataDir;

#[derive(Debug, Args)]
pub struct ExecArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// Send stdin to the process (without it, the process reads EOF).
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Give the process a terminal (the local one goes into raw mode meanwhile).
    #[arg(short = 't', long)]
    tty: bool,
    device: String,
    service: String,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

/// Stdin chunks read ahead of the socket.
const STDIN_QUEUE: usize = 16;

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub fn run(args: ExecArgs) -> anyhow::Result<()> {
    let api = ApiClient::from_args(&args.api)?;
    let ca = DataDir::existing(&args.api.data_dir).ca_cert();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the tokio runtime")?;
    let result = runtime.block_on(session(&api, &ca, &args));
    // The stdin thread may sit in a read: do not wait for it.
    runtime.shutdown_background();
    let code = result?;
    if code != 0 {
        let _ = std::io::stdout().flush();
        std::process::exit(code);
    }
    Ok(())
}

async fn session(api: &ApiClient, ca: &std::path::Path, args: &ExecArgs) -> anyhow::Result<i32> {
    let path = format!(
        "/api/v1/devices/{}/services/{}/exec",
        args.device, args.service
    );
    let mut socket = connect(api, ca, &path).await?;
    let size = window_size(std::io::stdout().as_fd())
        .or_else(size_from_env)
        .unwrap_or((24, 80));
    let start = ClientControl::Start {
        command: args.command.clone(),
        tty: args.tty,
        rows: size.0,
        cols: size.1,
    };
    socket
        .send(Message::Text(serde_json::to_string(&start)?.into()))
        .await
        .context("exec: send the command")?;
    let mut stdin = if args.interactive {
        Some(read_stdin())
    } else {
        socket
            .send(Message::Text(
                serde_json::to_string(&ClientControl::Eof)?.into(),
            ))
            .await
            .context("exec: close stdin")?;
        None
    };
    // Raw only now: an error before this point prints on a terminal in its usual mode.
    let _raw = if args.tty { RawTerminal::enter() } else { None };
    let mut winch = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
        .context("exec: watch for window size changes")?;
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    loop {
        tokio::select! {
            incoming = socket.next() => match incoming {
                Some(Ok(Message::Binary(frame))) => {
                    if let Some((stream, data)) = parse_output(&frame) {
                        let sink: &mut dyn Write = match stream {
                            coracle_proto::OutputStream::Stdout => &mut out,
                            coracle_proto::OutputStream::Stderr => &mut err,
                        };
                        sink.write_all(data).context("exec: write the output")?;
                        sink.flush().context("exec: write the output")?;
                    }
                }
                Some(Ok(Message::Text(text))) => match serde_json::from_str::<ServerEnd>(&text) {
                    Ok(ServerEnd::Exit { code }) => return Ok(code),
                    Ok(ServerEnd::Error { code, message }) => bail!("exec: {message} ({code})"),
                    Err(_) => {}
                },
                Some(Ok(Message::Close(_))) | None => bail!("exec: the controller closed the session without an exit code"),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e).context("exec: the connection broke"),
            },
            chunk = async { stdin.as_mut()?.recv().await }, if stdin.is_some() => {
                let message = match chunk {
                    Some(Some(data)) => Message::Binary(data.into()),
                    _ => {
                        stdin = None;
                        Message::Text(serde_json::to_string(&ClientControl::Eof)?.into())
                    }
                };
                socket.send(message).await.context("exec: send stdin")?;
            }
            _ = winch.recv() => {
                if let (true, Some((rows, cols))) = (args.tty, window_size(std::io::stdout().as_fd())) {
                    let resize = serde_json::to_string(&ClientControl::Resize { rows, cols })?;
                    socket.send(Message::Text(resize.into())).await.context("exec: send the window size")?;
                }
            }
        }
    }
}

/// `LINES` and `COLUMNS` (as shells export them) when stdout is not a terminal.
fn size_from_env() -> Option<(u16, u16)> {
    let read = |name| std::env::var(name).ok()?.trim().parse::<u16>().ok();
    Some((read("LINES")?, read("COLUMNS")?))
}

/// Stdin on a thread of its own (a blocking read), in chunks; `None` at its end.
fn read_stdin() -> mpsc::Receiver<Option<Vec<u8>>> {
    let (tx, rx) = mpsc::channel(STDIN_QUEUE);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let chunk = match stdin.read(&mut buf) {
                Ok(0) | Err(_) => None,
                Ok(n) => Some(buf[..n].to_vec()),
            };
            let end = chunk.is_none();
            if tx.blocking_send(chunk).is_err() || end {
                return;
            }
        }
    });
    rx
}

type Socket = tokio_tungstenite::WebSocketStream<Box<dyn Io>>;

/// Opens the exec WebSocket: TCP, TLS with the data dir's controller CA for `https`, the
/// upgrade with the bearer token. An HTTP answer instead (403 denied, 404 no such service,
/// 409 offline) becomes the API's error message.
async fn connect(api: &ApiClient, ca: &std::path::Path, path: &str) -> anyhow::Result<Socket> {
    let base = api.base();
    let (tls, rest) = match base.split_once("://") {
        Some(("https", rest)) => (true, rest),
        Some(("http", rest)) => (false, rest),
        _ => bail!("exec: the API URL {base} is neither http:// nor https://"),
    };
    let authority = rest.split('/').next().unwrap_or(rest);
    let host = authority
        .rsplit_once(':')
        .map_or(authority, |(host, _)| host)
        .trim_matches(['[', ']']);
    let port = if authority.rsplit_once(':').is_some() {
        ""
    } else if tls {
        ":443"
    } else {
        ":80"
    };
    let tcp = tokio::net::TcpStream::connect(format!("{authority}{port}"))
        .await
        .with_context(|| format!("exec: cannot reach {base}"))?;
    let _ = tcp.set_nodelay(true);
    let stream: Box<dyn Io> = if tls {
        Box::new(tls_connect(tcp, ca, host).await?)
    } else {
        Box::new(tcp)
    };
    let scheme = if tls { "wss" } else { "ws" };
    let mut request = format!("{scheme}://{authority}{path}")
        .into_client_request()
        .context("exec: build the WebSocket request")?;
    request.headers_mut().insert(
        "Authorization",
        api.authorization()
            .parse()
            .context("exec: the token is not a valid header")?,
    );
    match tokio_tungstenite::client_async(request, stream).await {
        Ok((socket, _)) => Ok(socket),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let status = response.status().as_u16();
            let body = response.into_body().unwrap_or_default();
            Err(api_error("exec", status, &body))
        }
        Err(err) => Err(err).context("exec: the WebSocket upgrade failed"),
    }
}

async fn tls_connect(
    tcp: tokio::net::TcpStream,
    ca: &std::path::Path,
    host: &str,
) -> anyhow::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca)
        .with_context(|| format!("exec: read the controller CA {}", ca.display()))?
    {
        let cert =
            cert.with_context(|| format!("exec: parse the controller CA {}", ca.display()))?;
        roots
            .add(cert)
            .with_context(|| format!("exec: the controller CA {} is not usable", ca.display()))?;
    }
    let config = tokio_rustls::rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from(host.to_string())
        .with_context(|| format!("exec: {host} is not a server name"))?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .context("exec: TLS handshake with the controller")
}
