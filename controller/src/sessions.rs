//! Remote sessions to devices (`logs -f`, `exec`): the controller's end of
//! `coracle_proto::session`. [`DeviceSessions::open`] publishes an `Open` on the device's
//! `session` topic and waits for `Opened` (or a named failure); the returned
//! [`SessionHandle`] then carries input to the device and output back, keeps the session
//! alive (a keepalive every `KEEPALIVE_SECS`), acknowledges output as the client takes it,
//! and closes the session on the device when dropped: a client that goes away never leaves
//! a device streaming.
//!
//! Output is routed by (device, session id) from the `session/out` subscription; a device
//! cannot write into another device's session. A session whose output queue overflows (a
//! device ignoring the window) or that loses a chunk (`seq` gap) is ended.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coracle_proto::session::{KEEPALIVE_SECS, MAX_CHUNK, OUTPUT_WINDOW};
use coracle_proto::{
    DeviceId, SessionEvent, SessionFailure, SessionInput, SessionKind, SessionOutput,
    SessionRequest, TopicKind,
};
use tokio::sync::mpsc;

use crate::broker::{ControllerClient, Inbound};

/// How long a device gets to start a session (a cellular round trip, a container lookup).
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Sessions the controller relays at once, all devices together.
pub const MAX_SESSIONS: usize = 256;
/// Output events queued per session: the window in full chunks, with room for small ones.
const OUTPUT_QUEUE: usize = (OUTPUT_WINDOW as usize / MAX_CHUNK) * 16;
/// Output is acknowledged once this much was passed on.
const ACK_EVERY: u32 = OUTPUT_WINDOW / 4;

/// Why a session did not start or broke off.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("cannot send to device {device}")]
    Publish {
        device: DeviceId,
        #[source]
        source: crate::broker::client::ClientError,
    },
    #[error("device {device} did not start the session within {} s (offline, or an agent without remote sessions)", timeout.as_secs())]
    NoReply { device: DeviceId, timeout: Duration },
    #[error("device {device} refused the session: {failure}")]
    Refused {
        device: DeviceId,
        failure: SessionFailure,
    },
    #[error("the controller relays {MAX_SESSIONS} sessions already")]
    TooMany,
}

type Routes = HashMap<(DeviceId, u32), mpsc::Sender<SessionOutput>>;

/// Opens sessions and routes their output. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DeviceSessions {
    client: ControllerClient,
    routes: Arc<Mutex<Routes>>,
    next_id: Arc<AtomicU32>,
}

fn lock(routes: &Mutex<Routes>) -> std::sync::MutexGuard<'_, Routes> {
    // Every operation on the map is one call: it stays consistent even after a panic.
    routes
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl DeviceSessions {
    /// Starts routing the `session/out` messages of `inbound`.
    pub fn new(client: ControllerClient, mut inbound: mpsc::Receiver<Inbound>) -> Self {
        let sessions = Self {
            client,
            routes: Arc::default(),
            next_id: Arc::new(AtomicU32::new(1)),
        };
        let router = sessions.clone();
        tokio::spawn(async move {
            while let Some(msg) = inbound.recv().await {
                router.route(&msg);
            }
        });
        sessions
    }

    fn route(&self, msg: &Inbound) {
        let Ok((device, TopicKind::SessionOut)) = coracle_proto::topic::parse(&msg.topic) else {
            return;
        };
        let event = match coracle_proto::decode::<SessionEvent>(&msg.payload) {
            Ok(event) => event,
            Err(err) => {
                tracing::debug!(device = %device, error = %err, "malformed session output dropped");
                return;
            }
        };
        let key = (device, event.session);
        let mut routes = lock(&self.routes);
        let Some(tx) = routes.get(&key) else {
            return;
        };
        if tx.try_send(event.output).is_err() {
            // Full (the device ignores the window) or the client is gone: end it.
            routes.remove(&key);
        }
    }

    /// Opens a session of `kind` on `device` and waits for the device to start it.
    pub async fn open(
        &self,
        device: &DeviceId,
        kind: SessionKind,
    ) -> Result<SessionHandle, SessionError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, mut rx) = mpsc::channel(OUTPUT_QUEUE);
        {
            let mut routes = lock(&self.routes);
            if routes.len() >= MAX_SESSIONS {
                return Err(SessionError::TooMany);
            }
            routes.insert((device.clone(), id), tx);
        }
        let mut handle = SessionHandle {
            device: device.clone(),
            id,
            sessions: self.clone(),
            output: None,
            next_seq: 0,
            unacked: 0,
            keepalive: None,
        };
        handle.send(SessionInput::Open(kind)).await?;
        let first = tokio::time::timeout(OPEN_TIMEOUT, rx.recv()).await;
        match first {
            Ok(Some(SessionOutput::Opened)) => {}
            Ok(Some(SessionOutput::Failed(failure))) => {
                return Err(SessionError::Refused {
                    device: device.clone(),
                    failure,
                })
            }
            _ => {
                return Err(SessionError::NoReply {
                    device: device.clone(),
                    timeout: OPEN_TIMEOUT,
                })
            }
        }
        handle.output = Some(rx);
        handle.keepalive = Some(handle.spawn_keepalive());
        Ok(handle)
    }

    async fn publish(
        &self,
        device: &DeviceId,
        request: SessionRequest,
    ) -> Result<(), SessionError> {
        self.client
            .publish_session(device, coracle_proto::encode(&request))
            .await
            .map_err(|source| SessionError::Publish {
                device: device.clone(),
                source,
            })
    }
}

/// What the client of a session receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionMessage {
    Data {
        stream: coracle_proto::OutputStream,
        data: Vec<u8>,
    },
    Exited(i32),
    Failed(String),
}

/// One open session. Dropping it closes the session on the device.
#[derive(Debug)]
pub struct SessionHandle {
    device: DeviceId,
    id: u32,
    sessions: DeviceSessions,
    output: Option<mpsc::Receiver<SessionOutput>>,
    next_seq: u32,
    unacked: u32,
    keepalive: Option<tokio::task::JoinHandle<()>>,
}

impl SessionHandle {
    /// Sends input to the device.
    pub async fn send(&self, input: SessionInput) -> Result<(), SessionError> {
        let request = SessionRequest {
            session: self.id,
            input,
        };
        self.sessions.publish(&self.device, request).await
    }

    /// The next output; `None` once the session is over (after `Exited` or `Failed`).
    pub async fn next(&mut self) -> Option<SessionMessage> {
        let output = self.output.as_mut()?;
        let message = loop {
            match output.recv().await {
                None => {
                    break SessionMessage::Failed(
                        "session output lost (the device ignored its output window)".into(),
                    )
                }
                Some(SessionOutput::Data { seq, stream, data }) => {
                    if seq != self.next_seq {
                        break SessionMessage::Failed(format!(
                            "session output lost: chunk {seq} arrived, {} expected",
                            self.next_seq
                        ));
                    }
                    self.next_seq = seq.wrapping_add(1);
                    self.unacked += data.len() as u32;
                    return Some(SessionMessage::Data { stream, data });
                }
                Some(SessionOutput::Exited { code }) => break SessionMessage::Exited(code),
                Some(SessionOutput::Failed(failure)) => {
                    break SessionMessage::Failed(failure.to_string())
                }
                Some(SessionOutput::Opened) => continue,
            }
        };
        self.output = None;
        Some(message)
    }

    /// Tells the device the client took what it was given (call after passing data on).
    pub async fn passed_on(&mut self) -> Result<(), SessionError> {
        if self.unacked >= ACK_EVERY {
            let bytes = std::mem::take(&mut self.unacked);
            self.send(SessionInput::Ack { bytes }).await?;
        }
        Ok(())
    }

    fn spawn_keepalive(&self) -> tokio::task::JoinHandle<()> {
        let (sessions, device, id) = (self.sessions.clone(), self.device.clone(), self.id);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(KEEPALIVE_SECS));
            every.tick().await;
            loop {
                every.tick().await;
                let request = SessionRequest {
                    session: id,
                    input: SessionInput::Keepalive,
                };
                if sessions.publish(&device, request).await.is_err() {
                    // The broker link is down; the device ends the session on its own.
                    return;
                }
            }
        })
    }
}

impl Drop for SessionHandle {
    fn drop(&mut self) {
        if let Some(keepalive) = self.keepalive.take() {
            keepalive.abort();
        }
        lock(&self.sessions.routes).remove(&(self.device.clone(), self.id));
        let (sessions, device, id) = (self.sessions.clone(), self.device.clone(), self.id);
        // Best effort: if this is lost, the device ends the session after CLIENT_GONE_SECS.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let request = SessionRequest {
                    session: id,
                    input: SessionInput::Close,
                };
                let _ = sessions.publish(&device, request).await;
            });
        }
    }
}
