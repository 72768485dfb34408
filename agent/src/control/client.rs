//! The CLI side: `coracle-agent status`, `ps`, `logs NAME [-f]`, `exec NAME -- CMD...`.

use std::fmt::Write as _;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use coracle_proto::frame::{read_message, write_message, FrameError};
use coracle_proto::{ServiceName, UpdateStatus};
use embedded_io_adapters::std::FromStd;

use super::{AgentStatus, LocalReply, LocalRequest};

/// Why the CLI could not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to the agent at {path} (is coracle-agent running?)")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("control socket {path}: {detail}")]
    Exchange { path: PathBuf, detail: String },
    #[error("agent refused: {reason}")]
    Refused { reason: String },
}

fn exchange_err(path: &Path, err: FrameError<std::io::Error>) -> ClientError {
    ClientError::Exchange {
        path: path.to_path_buf(),
        detail: err.to_string(),
    }
}

fn connect(path: &Path, request: &LocalRequest) -> Result<FromStd<UnixStream>, ClientError> {
    let stream = UnixStream::connect(path).map_err(|source| ClientError::Connect {
        path: path.to_path_buf(),
        source,
    })?;
    let mut io = FromStd::new(stream);
    write_message(&mut io, request).map_err(|e| exchange_err(path, e))?;
    Ok(io)
}

fn read_reply(
    path: &Path,
    io: &mut FromStd<UnixStream>,
) -> Result<Option<LocalReply>, ClientError> {
    match read_message(io).map_err(|e| exchange_err(path, e))? {
        Some(LocalReply::Failed { reason }) => Err(ClientError::Refused { reason }),
        other => Ok(other),
    }
}

/// Asks the running agent for its status.
pub fn status(path: &Path) -> Result<AgentStatus, ClientError> {
    let mut io = connect(path, &LocalRequest::Status)?;
    match read_reply(path, &mut io)? {
        Some(LocalReply::Status(status)) => Ok(*status),
        other => Err(ClientError::Exchange {
            path: path.to_path_buf(),
            detail: format!("unexpected reply {other:?}"),
        }),
    }
}

/// Streams log lines to `out` until the agent or the reader stops (`follow`) or once.
pub fn logs(
    path: &Path,
    service: ServiceName,
    lines: u32,
    follow: bool,
    mut out: impl FnMut(&[String]) -> bool,
) -> Result<(), ClientError> {
    let mut io = connect(
        path,
        &LocalRequest::Logs {
            service,
            lines,
            follow,
        },
    )?;
    while let Some(reply) = read_reply(path, &mut io)? {
        if let LocalReply::Logs { lines } = reply {
            if !out(&lines) || !follow {
                break;
            }
        }
    }
    Ok(())
}

/// How an exec through the agent ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecReply {
    pub exit_code: i32,
    /// The last 4 KiB of stdout and stderr.
    pub output: String,
    pub timed_out: bool,
}

/// Runs `argv` in the service's container through the running agent.
pub fn exec(
    path: &Path,
    service: ServiceName,
    argv: Vec<String>,
    timeout_ms: u32,
) -> Result<ExecReply, ClientError> {
    let mut io = connect(
        path,
        &LocalRequest::Exec {
            service,
            argv,
            timeout_ms,
        },
    )?;
    match read_reply(path, &mut io)? {
        Some(LocalReply::Exec {
            exit_code,
            output,
            timed_out,
        }) => Ok(ExecReply {
            exit_code,
            output,
            timed_out,
        }),
        other => Err(ClientError::Exchange {
            path: path.to_path_buf(),
            detail: format!("unexpected reply {other:?}"),
        }),
    }
}

/// `status` as text.
pub fn format_status(status: &AgentStatus) -> String {
    let r = &status.reported;
    let update = match &r.update {
        UpdateStatus::Idle => "idle".to_string(),
        UpdateStatus::Applying { generation } => format!("applying generation {generation}"),
        UpdateStatus::Verifying { generation } => format!("verifying generation {generation}"),
        UpdateStatus::RolledBack { generation, reason } => {
            format!("rolled back generation {generation}: {reason}")
        }
        UpdateStatus::Failed { generation, reason } => {
            format!("generation {generation} failed: {reason}")
        }
    };
    format!(
        "device:      {}\napplied:     generation {}\nupdate:      {update}\nbroker:      {}\nevents:      {} queued, {} dropped\nservices:    {}\nagent:       {} ({})\n",
        r.device,
        r.applied,
        if status.broker_connected { "connected" } else { "disconnected" },
        status.queued_events,
        status.dropped_events,
        r.services.len(),
        r.agent_version,
        r.platform,
    )
}

/// `ps` as a table.
pub fn format_ps(status: &AgentStatus) -> String {
    let mut out = format!(
        "{:<24} {:<10} {:<10} {:>8} {:>6}  IMAGE\n",
        "SERVICE", "STATE", "HEALTH", "RESTARTS", "EXIT"
    );
    for s in &status.reported.services {
        let exit = s.last_exit_code.map_or("-".to_string(), |c| c.to_string());
        let digest = s.image.hex();
        let _ = writeln!(
            out,
            "{:<24} {:<10} {:<10} {:>8} {:>6}  sha256:{}",
            s.name.to_string(),
            format!("{:?}", s.state),
            format!("{:?}", s.health),
            s.restart_count,
            exit,
            &digest[..12],
        );
    }
    out
}
