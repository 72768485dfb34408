//! A simulated device's remote sessions (`session` → `session/out`), enough for the
//! dashboard's terminal and followed log: an exec is an echoing shell (`sim$ ` prompt, input
//! echoed, Enter answered with a new prompt), a log session sends a few lines and, unless it
//! follows, ends.

use std::collections::HashMap;

use coracle_proto::{
    decode, encode, OutputStream, ServiceName, SessionEvent, SessionFailure, SessionInput,
    SessionKind, SessionOutput, SessionRequest, TopicKind,
};

use super::device::Outgoing;

/// The prompt the simulated shell prints.
pub const PROMPT: &str = "sim$ ";

/// Sessions by id, each with its next output sequence number.
#[derive(Debug, Default)]
pub struct SimSessions {
    next_seq: HashMap<u32, u32>,
}

impl SimSessions {
    /// Answers one body of the device's `session` topic; `known` says whether a service runs.
    pub fn on_request(
        &mut self,
        body: &[u8],
        known: impl Fn(&ServiceName) -> bool,
    ) -> Vec<Outgoing> {
        let Ok(request) = decode::<SessionRequest>(body) else {
            return Vec::new();
        };
        let id = request.session;
        match request.input {
            SessionInput::Open(kind) => {
                let service = match &kind {
                    SessionKind::Logs { service, .. } | SessionKind::Exec { service, .. } => {
                        service
                    }
                };
                if !known(service) {
                    return vec![out(
                        id,
                        SessionOutput::Failed(SessionFailure::NoSuchService),
                    )];
                }
                self.next_seq.insert(id, 0);
                let mut sent = vec![out(id, SessionOutput::Opened)];
                match kind {
                    SessionKind::Exec { .. } => sent.push(self.data(id, PROMPT.as_bytes())),
                    SessionKind::Logs { follow, .. } => {
                        sent.push(self.data(id, b"simulated log line 1\nsimulated log line 2\n"));
                        if !follow {
                            self.next_seq.remove(&id);
                            sent.push(out(id, SessionOutput::Exited { code: 0 }));
                        }
                    }
                }
                sent
            }
            SessionInput::Stdin(data) if self.next_seq.contains_key(&id) => {
                // A terminal's echo: Enter becomes a new line and the prompt again.
                let mut echoed = Vec::new();
                for byte in data {
                    match byte {
                        b'\r' => echoed.extend_from_slice(format!("\r\n{PROMPT}").as_bytes()),
                        other => echoed.push(other),
                    }
                }
                vec![self.data(id, &echoed)]
            }
            SessionInput::Close => {
                self.next_seq.remove(&id);
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    fn data(&mut self, id: u32, data: &[u8]) -> Outgoing {
        let seq = self.next_seq.entry(id).or_default();
        let output = SessionOutput::Data {
            seq: *seq,
            stream: OutputStream::Stdout,
            data: data.to_vec(),
        };
        *seq += 1;
        out(id, output)
    }
}

fn out(session: u32, output: SessionOutput) -> Outgoing {
    Outgoing {
        kind: TopicKind::SessionOut,
        body: encode(&SessionEvent { session, output }),
    }
}
