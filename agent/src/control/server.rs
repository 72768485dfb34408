//! The socket server: accepts connections in a tokio task, serves each on a blocking thread
//! with the proto frame codec, and asks the supervisor for answers through a channel.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use coracle_proto::frame::{read_message, write_message};
use embedded_io_adapters::std::FromStd;
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};

use super::{LocalReply, LocalRequest};

/// A request and where its reply goes; the supervisor answers it.
pub type ControlRequest = (LocalRequest, oneshot::Sender<LocalReply>);

/// How often `logs -f` asks for new lines.
const FOLLOW_EVERY: Duration = Duration::from_secs(1);

/// Why the socket could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot prepare control socket dir {path}")]
    PrepareDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot bind control socket {path}")]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Binds the socket (replacing a stale one from a killed agent) with mode 0600.
pub fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| ControlError::PrepareDir {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let bind_err = |source| ControlError::Bind {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(bind_err(err)),
    }
    let listener = UnixListener::bind(path).map_err(bind_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(bind_err)?;
    Ok(listener)
}

/// Accepts connections until the supervisor's side of `requests` is gone.
pub async fn serve(listener: UnixListener, requests: mpsc::Sender<ControlRequest>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                tracing::warn!(error = %err, "control socket accept failed");
                continue;
            }
        };
        if requests.is_closed() {
            return;
        }
        let requests = requests.clone();
        let std_stream = match stream.into_std().and_then(|s| {
            s.set_nonblocking(false)?;
            Ok(s)
        }) {
            Ok(s) => s,
            Err(err) => {
                tracing::warn!(error = %err, "control connection unusable");
                continue;
            }
        };
        tokio::task::spawn_blocking(move || serve_connection(std_stream, &requests));
    }
}

fn ask(requests: &mpsc::Sender<ControlRequest>, request: LocalRequest) -> LocalReply {
    let (tx, rx) = oneshot::channel();
    if requests.blocking_send((request, tx)).is_err() {
        return LocalReply::Failed {
            reason: "agent is shutting down".into(),
        };
    }
    rx.blocking_recv().unwrap_or(LocalReply::Failed {
        reason: "agent dropped the request".into(),
    })
}

fn serve_connection(
    stream: std::os::unix::net::UnixStream,
    requests: &mpsc::Sender<ControlRequest>,
) {
    let mut io = FromStd::new(stream);
    let request: LocalRequest = match read_message(&mut io) {
        Ok(Some(request)) => request,
        Ok(None) => return,
        Err(err) => {
            tracing::debug!(error = ?err, "bad control request");
            return;
        }
    };
    let follow = matches!(request, LocalRequest::Logs { follow: true, .. });
    let first = ask(requests, request.clone());
    let mut seen = match &first {
        LocalReply::Logs { lines } => lines.clone(),
        _ => Vec::new(),
    };
    if write_message(&mut io, &first).is_err()
        || !follow
        || !matches!(first, LocalReply::Logs { .. })
    {
        return;
    }
    // Follow: ask for the tail again and send only lines after the ones already sent. Ends
    // when the client hangs up (the write fails) or the agent stops.
    loop {
        std::thread::sleep(FOLLOW_EVERY);
        let LocalReply::Logs { lines } = ask(requests, request.clone()) else {
            return;
        };
        let fresh = new_lines(&seen, &lines);
        if !fresh.is_empty()
            && write_message(
                &mut io,
                &LocalReply::Logs {
                    lines: fresh.to_vec(),
                },
            )
            .is_err()
        {
            return;
        }
        seen = lines;
    }
}

/// The lines of `now` that come after the longest overlap with the end of `before`.
pub fn new_lines<'a>(before: &[String], now: &'a [String]) -> &'a [String] {
    let max = before.len().min(now.len());
    let overlap = (0..=max)
        .rev()
        .find(|&k| before[before.len() - k..] == now[..k])
        .unwrap_or(0);
    &now[overlap..]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn follow_sends_only_what_is_new() {
        let before = lines(&["a", "b", "c"]);
        assert_eq!(
            new_lines(&before, &lines(&["b", "c", "d", "e"])),
            lines(&["d", "e"])
        );
        assert_eq!(new_lines(&before, &lines(&["a", "b", "c"])), lines(&[]));
        assert_eq!(new_lines(&before, &lines(&["x", "y"])), lines(&["x", "y"]));
        assert_eq!(new_lines(&[], &lines(&["x"])), lines(&["x"]));
    }
}
