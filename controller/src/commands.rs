//! Device commands (logs tail, restart, recheck): the controller publishes a
//! `CommandRequest` on the device's `cmd` topic and awaits the `CommandReply` with the same
//! id on `cmd/reply`, for at most a timeout.
//!
//! Replies arrive on the same MQTT subscription as everything else a device sends;
//! [`DeviceCommands::tap`] sits between the MQTT client and ingest and takes the replies out
//! of that stream, so ingest never waits on a command and a command never waits on SQLite.
//! A reply nobody waits for (late, or forged by a device for an id it was not asked) is
//! dropped: pending entries are keyed by (device, id), so a device cannot answer another
//! device's command.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coracle_proto::{Command, CommandOutcome, CommandReply, CommandRequest, DeviceId, TopicKind};
use tokio::sync::{mpsc, oneshot};

use crate::broker::{ControllerClient, Inbound};

/// Why a command got no outcome.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("cannot send the command to device {device}")]
    Publish {
        device: DeviceId,
        #[source]
        source: crate::broker::client::ClientError,
    },
    #[error("device {device} did not answer within {} s", timeout.as_secs())]
    NoReply { device: DeviceId, timeout: Duration },
}

type Pending = HashMap<(DeviceId, u32), oneshot::Sender<CommandOutcome>>;

/// Sends commands and pairs replies with them. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DeviceCommands {
    client: ControllerClient,
    pending: Arc<Mutex<Pending>>,
    next_id: Arc<AtomicU32>,
}

/// Removes a pending entry however the wait ends (reply, timeout, cancelled request).
struct PendingGuard<'a> {
    pending: &'a Mutex<Pending>,
    key: (DeviceId, u32),
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        lock(self.pending).remove(&self.key);
    }
}

fn lock(pending: &Mutex<Pending>) -> std::sync::MutexGuard<'_, Pending> {
    // The map stays consistent even if a holder panicked: every operation is one call.
    pending
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl DeviceCommands {
    pub fn new(client: ControllerClient) -> Self {
        Self {
            client,
            pending: Arc::default(),
            next_id: Arc::new(AtomicU32::new(1)),
        }
    }

    /// Sends `command` to `device` and waits up to `timeout` for its outcome.
    pub async fn run(
        &self,
        device: &DeviceId,
        command: Command,
        timeout: Duration,
    ) -> Result<CommandOutcome, CommandError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let key = (device.clone(), id);
        lock(&self.pending).insert(key.clone(), tx);
        let _guard = PendingGuard {
            pending: &self.pending,
            key,
        };
        let body = coracle_proto::encode(&CommandRequest { id, command });
        self.client
            .publish_command(device, body)
            .await
            .map_err(|source| CommandError::Publish {
                device: device.clone(),
                source,
            })?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(outcome)) => Ok(outcome),
            _ => Err(CommandError::NoReply {
                device: device.clone(),
                timeout,
            }),
        }
    }

    /// Hands a reply to whoever waits for it; `false` when nobody does.
    pub fn deliver(&self, device: &DeviceId, reply: CommandReply) -> bool {
        let waiter = lock(&self.pending).remove(&(device.clone(), reply.id));
        match waiter {
            Some(tx) => tx.send(reply.outcome).is_ok(),
            None => false,
        }
    }

    /// Takes command replies out of the device message stream and passes everything else
    /// on, in order, to the returned channel (same capacity).
    pub fn tap(
        &self,
        mut inbound: mpsc::Receiver<Inbound>,
        capacity: usize,
    ) -> mpsc::Receiver<Inbound> {
        let (tx, rx) = mpsc::channel(capacity);
        let commands = self.clone();
        tokio::spawn(async move {
            while let Some(msg) = inbound.recv().await {
                match coracle_proto::topic::parse(&msg.topic) {
                    Ok((device, TopicKind::CmdReply)) => commands.on_reply(&device, &msg.payload),
                    _ => {
                        if tx.send(msg).await.is_err() {
                            break;
                        }
                    }
                }
            }
        });
        rx
    }

    fn on_reply(&self, device: &DeviceId, payload: &[u8]) {
        match coracle_proto::decode::<CommandReply>(payload) {
            Ok(reply) => {
                let id = reply.id;
                if !self.deliver(device, reply) {
                    tracing::debug!(device = %device, id, "command reply nobody waits for dropped");
                }
            }
            Err(err) => {
                tracing::debug!(device = %device, error = %err, "malformed command reply dropped")
            }
        }
    }
}
