//! `SessionOutput` sending: numbered chunks within the output window, and the window itself
//! (`Window`, pure) that `Ack`s reopen.

use std::time::Duration;

use coracle_proto::session::{MAX_CHUNK, OUTPUT_WINDOW};
use coracle_proto::{OutputStream, SessionEvent, SessionFailure, SessionOutput};

use crate::transport::TransportHandle;

/// How long a publish the MQTT queue did not take waits before it is tried again.
const REQUEUE_DELAY: Duration = Duration::from_millis(20);

/// Output bytes in flight: what may be sent before an acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    unacked: u32,
    size: u32,
}

impl Default for Window {
    fn default() -> Self {
        Self {
            unacked: 0,
            size: OUTPUT_WINDOW,
        }
    }
}

impl Window {
    /// Whether another full chunk may be sent now.
    pub fn has_room(&self) -> bool {
        self.unacked as usize + MAX_CHUNK <= self.size as usize
    }

    pub fn sent(&mut self, bytes: usize) {
        self.unacked = self.unacked.saturating_add(bytes as u32);
    }

    /// The controller passed `bytes` on (a bogus ack cannot open it beyond its size).
    pub fn acked(&mut self, bytes: u32) {
        self.unacked = self.unacked.saturating_sub(bytes);
    }
}

/// One session's sending side.
#[derive(Debug)]
pub struct Sender {
    transport: TransportHandle,
    session: u32,
    seq: u32,
    pub window: Window,
}

impl Sender {
    pub fn new(transport: TransportHandle, session: u32) -> Self {
        Self {
            transport,
            session,
            seq: 0,
            window: Window::default(),
        }
    }

    /// Publishes one event, waiting while the MQTT queue is full or the link down.
    async fn publish(&self, output: SessionOutput) {
        let event = SessionEvent {
            session: self.session,
            output,
        };
        while !self.transport.publish_session(&event) {
            tokio::time::sleep(REQUEUE_DELAY).await;
        }
    }

    /// Sends `data` (at most [`MAX_CHUNK`] bytes: callers read that much) and counts it
    /// against the window.
    pub async fn data(&mut self, stream: OutputStream, data: Vec<u8>) {
        self.window.sent(data.len());
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        self.publish(SessionOutput::Data { seq, stream, data })
            .await;
    }

    pub async fn opened(&self) {
        self.publish(SessionOutput::Opened).await;
    }

    pub async fn exited(&self, code: i32) {
        self.publish(SessionOutput::Exited { code }).await;
    }

    pub async fn failed(&self, failure: SessionFailure) {
        self.publish(SessionOutput::Failed(failure)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_closes_when_full_and_acks_reopen_it() {
        let mut window = Window::default();
        let mut sent = 0;
        while window.has_room() {
            window.sent(MAX_CHUNK);
            sent += MAX_CHUNK;
        }
        assert_eq!(sent, OUTPUT_WINDOW as usize);
        window.acked(MAX_CHUNK as u32);
        assert!(window.has_room());
        window.acked(u32::MAX);
        assert_eq!(window, Window::default());
    }
}
