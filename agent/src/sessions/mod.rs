//! Remote sessions (`coracle logs -f`, `coracle exec`): input arrives on the device's
//! `session` topic (`coracle_proto::session`), each session runs as its own task and
//! answers on `session/out` through the transport handle. Beside the supervisor, like the
//! credential rotation: sessions read logs and start processes but never change agent state.
//!
//! - `table`: which sessions run (at most `MAX_SESSIONS_PER_DEVICE`), where input goes;
//! - `output`: numbered output within the byte window the controller's acks reopen;
//! - `logs`: history (`--since`, `--tail`, `--timestamps`) then follow;
//! - `exec`: a process in the container on pipes or a terminal, stdin, resize, exit code.
//!
//! Every session ends when the controller has been silent for `CLIENT_GONE_SECS` (its
//! keepalives stopped: the client went away, or the link did), and an exec also after
//! [`EXEC_IDLE`] without input or output.

mod async_pipe;
mod exec;
mod logs;
mod output;
mod table;

use std::sync::Arc;
use std::time::Duration;

use coracle_proto::session::CLIENT_GONE_SECS;
use coracle_proto::{ServiceName, SessionFailure, SessionInput, SessionKind, SessionRequest};
use tokio::sync::mpsc;

use crate::engine::{ContainerEngine, EngineStatus};
use crate::reconcile::Role;
use crate::transport::TransportHandle;
use output::Sender;
use table::{Route, SessionTable};

/// Input queued for one session; a client that floods past it loses the session.
const INPUT_QUEUE: usize = 256;
/// An exec with no input and no output for this long is ended.
pub const EXEC_IDLE: Duration = Duration::from_secs(30 * 60);

/// The sessions task: `tokio::spawn(sessions.run(inbox.sessions))`.
pub struct Sessions {
    pub engine: Arc<dyn ContainerEngine>,
    pub transport: TransportHandle,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").finish_non_exhaustive()
    }
}

/// What a session task is given.
struct Context {
    engine: Arc<dyn ContainerEngine>,
    sender: Sender,
    input: mpsc::Receiver<SessionInput>,
    liveness: Liveness,
}

impl Sessions {
    pub async fn run(self, mut requests: mpsc::Receiver<SessionRequest>) {
        let mut table: SessionTable<mpsc::Sender<SessionInput>> = SessionTable::default();
        let (done_tx, mut done) = mpsc::unbounded_channel::<(u32, mpsc::Sender<SessionInput>)>();
        loop {
            tokio::select! {
                request = requests.recv() => {
                    let Some(request) = request else { break };
                    self.on_request(&mut table, request, &done_tx);
                }
                Some((id, handle)) = done.recv() => {
                    // Only if the table still holds this session (not a newer one, same id).
                    if let Route::Deliver(current) = table.route(id, &SessionInput::Keepalive) {
                        if current.same_channel(&handle) {
                            table.remove(id);
                        }
                    }
                }
            }
        }
    }

    fn on_request(
        &self,
        table: &mut SessionTable<mpsc::Sender<SessionInput>>,
        request: SessionRequest,
        done: &mpsc::UnboundedSender<(u32, mpsc::Sender<SessionInput>)>,
    ) {
        let id = request.session;
        match table.route(id, &request.input) {
            Route::Start { replaced } => {
                if let Some(old) = replaced {
                    let _ = old.try_send(SessionInput::Close);
                }
                let SessionInput::Open(kind) = request.input else {
                    return;
                };
                let (tx, rx) = mpsc::channel(INPUT_QUEUE);
                table.insert(id, tx.clone());
                let context = Context {
                    engine: self.engine.clone(),
                    sender: Sender::new(self.transport.clone(), id),
                    input: rx,
                    liveness: Liveness::new(),
                };
                let done = done.clone();
                tokio::spawn(async move {
                    run_session(context, kind).await;
                    let _ = done.send((id, tx));
                });
            }
            Route::Full => {
                let sender = Sender::new(self.transport.clone(), id);
                tokio::spawn(async move { sender.failed(SessionFailure::TooManySessions).await });
            }
            Route::Deliver(handle) => {
                if handle.try_send(request.input).is_err() {
                    // Full: the session is ended (its task sees the channel closed soon).
                    tracing::debug!(session = id, "session input queue full");
                    table.remove(id);
                }
            }
            Route::Unknown => {}
        }
    }
}

async fn run_session(context: Context, kind: SessionKind) {
    match kind {
        SessionKind::Logs {
            service,
            since_unix_ns,
            tail,
            timestamps,
            follow,
        } => {
            let query = logs::LogQuery {
                since_unix_ns,
                tail,
                timestamps,
            };
            logs::run(context, service, query, follow).await
        }
        SessionKind::Exec { service, argv, tty } => {
            exec::run(context, service, argv, tty.map(|t| (t.rows, t.cols))).await
        }
    }
}

/// Whether the service has a current container, and whether it runs.
async fn service_status(
    engine: &Arc<dyn ContainerEngine>,
    service: &ServiceName,
) -> Result<EngineStatus, SessionFailure> {
    let engine = engine.clone();
    let listed = tokio::task::spawn_blocking(move || engine.list()).await;
    let containers = match listed {
        Ok(Ok(containers)) => containers,
        Ok(Err(err)) => return Err(SessionFailure::Other(err.to_string())),
        Err(err) => return Err(SessionFailure::Other(format!("list containers: {err}"))),
    };
    containers
        .into_iter()
        .find(|c| &c.service == service && c.role == Role::Current)
        .map(|c| c.status)
        .ok_or(SessionFailure::NoSuchService)
}

/// When the controller was last heard from in a session (tokio's clock, so tests can
/// move it).
#[derive(Debug)]
struct Liveness {
    heard: tokio::time::Instant,
}

impl Liveness {
    fn new() -> Self {
        Self {
            heard: tokio::time::Instant::now(),
        }
    }

    fn heard(&mut self) {
        self.heard = tokio::time::Instant::now();
    }

    /// The client stopped sending keepalives.
    fn client_gone(&self) -> bool {
        self.heard.elapsed() > Duration::from_secs(CLIENT_GONE_SECS)
    }
}

/// Why a session stops early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// The controller closed it (or the input channel went away).
    Closed,
    /// No keepalive for `CLIENT_GONE_SECS`.
    ClientGone,
}

/// How often a session looks at its liveness.
const LIVENESS_CHECK: Duration = Duration::from_secs(1);

impl Context {
    /// Applies input every session understands (acks, keepalives, close); hands the rest
    /// back to the session's own logic.
    fn on_input(&mut self, input: Option<SessionInput>) -> Result<Option<SessionInput>, Ended> {
        self.liveness.heard();
        match input {
            None | Some(SessionInput::Close) => Err(Ended::Closed),
            Some(SessionInput::Ack { bytes }) => {
                self.sender.window.acked(bytes);
                Ok(None)
            }
            Some(SessionInput::Keepalive) | Some(SessionInput::Open(_)) => Ok(None),
            Some(other) => Ok(Some(other)),
        }
    }

    /// Sends output once the window has room, hearing input meanwhile (what is not
    /// common input is dropped: only a log session waits here).
    async fn send(
        &mut self,
        stream: coracle_proto::OutputStream,
        data: Vec<u8>,
    ) -> Result<(), Ended> {
        while !self.sender.window.has_room() {
            tokio::select! {
                input = self.input.recv() => { self.on_input(input)?; }
                _ = tokio::time::sleep(LIVENESS_CHECK) => {
                    if self.liveness.client_gone() {
                        return Err(Ended::ClientGone);
                    }
                }
            }
        }
        self.sender.data(stream, data).await;
        Ok(())
    }

    /// Tells the controller how the session ended early.
    async fn report_end(&self, ended: Ended) {
        match ended {
            // Nobody listens for a closed session's answer.
            Ended::Closed => {}
            Ended::ClientGone => self.sender.failed(SessionFailure::TimedOut).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_silent_controller_is_gone_after_the_limit_and_any_input_revives_it() {
        let mut liveness = Liveness::new();
        tokio::time::advance(Duration::from_secs(CLIENT_GONE_SECS - 1)).await;
        assert!(!liveness.client_gone());
        liveness.heard();
        tokio::time::advance(Duration::from_secs(CLIENT_GONE_SECS - 1)).await;
        assert!(!liveness.client_gone());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(liveness.client_gone());
    }
}
