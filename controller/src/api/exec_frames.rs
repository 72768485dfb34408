//! The exec WebSocket's messages, shared by the API, the CLI and (in JavaScript) the
//! dashboard's terminal:
//!
//! - client → controller: a text `{"type":"start","command":[…],"tty":true,"rows":24,"cols":80}`
//!   first; then binary messages are stdin, text `{"type":"resize","rows":…,"cols":…}`
//!   changes the terminal's size and `{"type":"eof"}` ends stdin;
//! - controller → client: binary messages are output, the first byte the stream (0 stdout,
//!   1 stderr); text `{"type":"exit","code":N}` or `{"type":"error","code":…,"message":…}`
//!   ends the session.

use coracle_proto::OutputStream;
use serde::{Deserialize, Serialize};

/// A text message from the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum ClientControl {
    Start {
        command: Vec<String>,
        #[serde(default)]
        tty: bool,
        #[serde(default = "default_rows")]
        rows: u16,
        #[serde(default = "default_cols")]
        cols: u16,
    },
    Resize {
        rows: u16,
        cols: u16,
    },
    Eof,
}

fn default_rows() -> u16 {
    24
}

fn default_cols() -> u16 {
    80
}

/// A text message from the controller: how the session ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ServerEnd {
    Exit { code: i32 },
    Error { code: String, message: String },
}

/// A binary output message: stream byte, then the data.
pub fn output_frame(stream: OutputStream, data: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(data.len() + 1);
    frame.push(match stream {
        OutputStream::Stdout => 0,
        OutputStream::Stderr => 1,
    });
    frame.extend_from_slice(data);
    frame
}

/// Splits a binary output message; `None` for an empty or unknown one.
pub fn parse_output(frame: &[u8]) -> Option<(OutputStream, &[u8])> {
    let (&first, data) = frame.split_first()?;
    let stream = match first {
        0 => OutputStream::Stdout,
        1 => OutputStream::Stderr,
        _ => return None,
    };
    Some((stream, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_frames_round_trip() {
        let frame = output_frame(OutputStream::Stderr, b"oops\n");
        assert_eq!(
            parse_output(&frame),
            Some((OutputStream::Stderr, &b"oops\n"[..]))
        );
        assert_eq!(parse_output(&[]), None);
        assert_eq!(parse_output(&[9, 1]), None);
    }

    #[test]
    fn control_messages_parse_as_the_dashboard_writes_them() {
        let start: ClientControl =
            serde_json::from_str(r#"{"type":"start","command":["sh"],"tty":true}"#).unwrap();
        assert_eq!(
            start,
            ClientControl::Start {
                command: vec!["sh".into()],
                tty: true,
                rows: 24,
                cols: 80
            }
        );
        let resize: ClientControl =
            serde_json::from_str(r#"{"type":"resize","rows":50,"cols":132}"#).unwrap();
        assert_eq!(
            resize,
            ClientControl::Resize {
                rows: 50,
                cols: 132
            }
        );
        assert!(serde_json::from_str::<ClientControl>(r#"{"type":"rm"}"#).is_err());
        let end = serde_json::to_string(&ServerEnd::Exit { code: 3 }).unwrap();
        assert_eq!(end, r#"{"type":"exit","code":3}"#);
    }
}
