//! The part of the NATS client protocol the controller's ingest speaks, as pure functions:
//! the server's control lines parsed into [`ServerOp`], the client's `CONNECT` and `SUB`
//! lines formatted. No I/O here: `nats_ingest` reads and writes the socket.
//! (<https://docs.nats.io/reference/reference-protocols/nats-protocol>)

use serde::{Deserialize, Serialize};

/// Longest control line accepted from the server (an `INFO` lists the cluster's URLs).
pub const MAX_LINE: usize = 64 * 1024;

/// The fields of the server's `INFO` the client uses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Info {
    #[serde(default)]
    pub tls_required: bool,
    #[serde(default)]
    pub max_payload: usize,
}

/// One control line from the server. `Msg` is followed by `total` payload bytes (headers
/// first, `headers` of them) and CRLF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerOp {
    Info(Info),
    Msg {
        subject: String,
        headers: usize,
        total: usize,
    },
    Ping,
    Pong,
    Ok,
    Err(String),
}

/// Why a server line is not one the protocol has.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("malformed NATS line {line:?}")]
    Malformed { line: String },
}

/// Parses one control line (without its CRLF).
pub fn parse_line(line: &str) -> Result<ServerOp, WireError> {
    let malformed = || WireError::Malformed {
        line: line.chars().take(200).collect(),
    };
    let (op, rest) = line.split_once([' ', '\t']).unwrap_or((line, ""));
    let rest = rest.trim();
    let number = |s: &str| s.parse::<usize>().map_err(|_| malformed());
    match op.to_ascii_uppercase().as_str() {
        "INFO" => serde_json::from_str(rest)
            .map(ServerOp::Info)
            .map_err(|_| malformed()),
        "MSG" => {
            // MSG <subject> <sid> [reply-to] <#bytes>
            let args: Vec<&str> = rest.split_whitespace().collect();
            match args.as_slice() {
                [subject, _sid, _reply @ .., bytes] if args.len() <= 4 => Ok(ServerOp::Msg {
                    subject: subject.to_string(),
                    headers: 0,
                    total: number(bytes)?,
                }),
                _ => Err(malformed()),
            }
        }
        "HMSG" => {
            // HMSG <subject> <sid> [reply-to] <#header bytes> <#total bytes>
            let args: Vec<&str> = rest.split_whitespace().collect();
            match args.as_slice() {
                [subject, _sid, _reply @ .., headers, total] if args.len() <= 5 => {
                    let (headers, total) = (number(headers)?, number(total)?);
                    if headers > total {
                        return Err(malformed());
                    }
                    Ok(ServerOp::Msg {
                        subject: subject.to_string(),
                        headers,
                        total,
                    })
                }
                _ => Err(malformed()),
            }
        }
        "PING" => Ok(ServerOp::Ping),
        "PONG" => Ok(ServerOp::Pong),
        "+OK" => Ok(ServerOp::Ok),
        "-ERR" => Ok(ServerOp::Err(rest.trim_matches('\'').to_string())),
        _ => Err(malformed()),
    }
}

#[derive(Serialize)]
struct Connect<'a> {
    verbose: bool,
    pedantic: bool,
    tls_required: bool,
    name: &'a str,
    lang: &'a str,
    version: &'a str,
    protocol: u8,
    echo: bool,
    headers: bool,
    no_responders: bool,
    user: &'a str,
    pass: &'a str,
}

/// `CONNECT {...}\r\n` with user and password; no `+OK` per command (`verbose: false`).
pub fn connect_line(name: &str, user: &str, pass: &str, tls: bool) -> String {
    let connect = Connect {
        verbose: false,
        pedantic: false,
        tls_required: tls,
        name,
        lang: "rust-coracle",
        version: env!("CARGO_PKG_VERSION"),
        protocol: 1,
        echo: false,
        headers: true,
        no_responders: false,
        user,
        pass,
    };
    // Serializing plain strings and bools cannot fail.
    let json = serde_json::to_string(&connect).unwrap_or_default();
    format!("CONNECT {json}\r\n")
}

/// `SUB <subject> <queue> <sid>\r\n`: each message reaches one member of `queue`.
pub fn sub_line(subject: &str, queue: &str, sid: usize) -> String {
    format!("SUB {subject} {queue} {sid}\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_lines_parse() {
        let table = [
            (
                "MSG coracle.v1.a.health 1 12",
                Ok(ServerOp::Msg {
                    subject: "coracle.v1.a.health".into(),
                    headers: 0,
                    total: 12,
                }),
            ),
            (
                "MSG coracle.v1.a.health 1 _INBOX.x 3",
                Ok(ServerOp::Msg {
                    subject: "coracle.v1.a.health".into(),
                    headers: 0,
                    total: 3,
                }),
            ),
            (
                "HMSG s 2 10 14",
                Ok(ServerOp::Msg {
                    subject: "s".into(),
                    headers: 10,
                    total: 14,
                }),
            ),
            ("PING", Ok(ServerOp::Ping)),
            ("pong", Ok(ServerOp::Pong)),
            ("+OK", Ok(ServerOp::Ok)),
            (
                "-ERR 'Authorization Violation'",
                Ok(ServerOp::Err("Authorization Violation".into())),
            ),
        ];
        for (line, want) in table {
            assert_eq!(parse_line(line), want, "{line}");
        }
        let info =
            parse_line(r#"INFO {"server_id":"x","tls_required":true,"max_payload":1048576}"#);
        assert_eq!(
            info,
            Ok(ServerOp::Info(Info {
                tls_required: true,
                max_payload: 1048576
            }))
        );
    }

    #[test]
    fn bad_server_lines_are_errors() {
        for line in [
            "",
            "MSG s",
            "MSG s 1 x",
            "MSG s 1 a b 3",
            "HMSG s 1 9 3",
            "INFO {",
            "WHAT",
        ] {
            assert!(parse_line(line).is_err(), "{line:?}");
        }
    }

    #[test]
    fn client_lines_are_formatted() {
        assert_eq!(
            sub_line("coracle.v1.*.health", "coracle", 1),
            "SUB coracle.v1.*.health coracle 1\r\n"
        );
        let connect = connect_line("c1", "coracle-controller", "p\"w", false);
        assert!(connect.starts_with("CONNECT {") && connect.ends_with("}\r\n"));
        assert!(connect.contains(r#""pass":"p\"w""#), "{connect}");
        assert!(connect.contains(r#""verbose":false"#), "{connect}");
    }
}
