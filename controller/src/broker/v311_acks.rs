//! Keeps MQTT 3.1.1 sessions 3.1.1 on the way down. `mqtt5` answers a refused publish
//! (another device's topic) with a PUBACK carrying an MQTT 5 reason code and reason string
//! even when the client spoke 3.1.1, whose PUBACK is exactly two bytes of packet id; rumqttc
//! and Mosquitto's clients then fail on a malformed packet (issue 17). 3.1.1 has no way to
//! say "refused" in an ack (Mosquitto acks and drops), so the relay trims such acks to their
//! packet id. Pure: the relay feeds bytes in and writes what comes out.

/// The protocol level a client's CONNECT names, once enough of it has arrived: `Some(None)`
/// when the bytes are not a CONNECT at all (then nothing is rewritten).
pub fn connect_level(prefix: &[u8]) -> Option<Option<u8>> {
    let (&kind, rest) = prefix.split_first()?;
    if kind != 0x10 {
        return Some(None);
    }
    // Skip the remaining-length varint (1–4 bytes).
    let varint = rest.iter().position(|b| b & 0x80 == 0)?;
    if varint > 3 {
        return Some(None);
    }
    let header = &rest[varint + 1..];
    let name_len = usize::from(u16::from_be_bytes([*header.first()?, *header.get(1)?]));
    header.get(2 + name_len).map(|level| Some(*level))
}

/// Where the down-stream parser is inside the current packet.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Waiting for a packet's first byte.
    Kind,
    /// Reading the remaining-length varint of a packet of `kind`.
    Length { kind: u8, value: u32, shift: u32 },
    /// Passing `left` body bytes through.
    Body { left: u32 },
    /// An ack being trimmed: `id` packet-id bytes still to copy, then `skip` bytes to drop.
    Ack { id: u8, skip: u32 },
}

/// Rewrites the broker-to-client bytes of one 3.1.1 session.
#[derive(Debug, Clone)]
pub struct AckTrimmer {
    state: State,
}

impl Default for AckTrimmer {
    fn default() -> Self {
        Self { state: State::Kind }
    }
}

/// PUBACK, PUBREC, PUBREL, PUBCOMP: in 3.1.1 exactly a packet id.
fn is_ack(kind: u8) -> bool {
    matches!(kind >> 4, 4..=7)
}

impl AckTrimmer {
    /// Appends to `out` what the client should get for `input`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        for &byte in input {
            self.state = match std::mem::replace(&mut self.state, State::Kind) {
                State::Kind => State::Length {
                    kind: byte,
                    value: 0,
                    shift: 0,
                },
                State::Length { kind, value, shift } => {
                    let value = value | u32::from(byte & 0x7f) << shift;
                    if byte & 0x80 != 0 && shift < 21 {
                        State::Length {
                            kind,
                            value,
                            shift: shift + 7,
                        }
                    } else if is_ack(kind) && value > 2 {
                        out.extend_from_slice(&[kind, 2]);
                        State::Ack {
                            id: 2,
                            skip: value - 2,
                        }
                    } else {
                        out.push(kind);
                        out.extend_from_slice(&encode_length(value));
                        Self::body(value)
                    }
                }
                State::Body { left } => {
                    out.push(byte);
                    Self::body(left - 1)
                }
                State::Ack { id, skip } if id > 0 => {
                    out.push(byte);
                    State::Ack { id: id - 1, skip }
                }
                State::Ack { skip, .. } => {
                    if skip > 1 {
                        State::Ack {
                            id: 0,
                            skip: skip - 1,
                        }
                    } else {
                        State::Kind
                    }
                }
            };
        }
    }

    fn body(left: u32) -> State {
        if left == 0 {
            State::Kind
        } else {
            State::Body { left }
        }
    }
}

fn encode_length(mut value: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(4);
    loop {
        let mut byte = (value % 128) as u8;
        value /= 128;
        if value > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if value == 0 {
            return out;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap_or_default())
            .collect()
    }

    /// The PUBACK mqtt5 sent a 3.1.1 client for a refused publish (captured).
    const REFUSED_PUBACK: &str =
        "40200007871c1f00194e6f7420617574686f72697a656420746f207075626c697368";

    #[test]
    fn refused_acks_are_trimmed_and_everything_else_passes_whole() {
        let publish = "3015000c636f7261636c652f76312f787061796c6f6164";
        let cases = [
            // (broker bytes, client bytes)
            (REFUSED_PUBACK.to_string(), "40020007".to_string()),
            ("40020007".into(), "40020007".into()),
            ("9003001480".into(), "9003001480".into()),
            (publish.into(), publish.into()),
            (
                format!("20020000{REFUSED_PUBACK}{publish}d000"),
                format!("2002000040020007{publish}d000"),
            ),
        ];
        for (input, want) in cases {
            let input = hex(&input);
            // Whole, and in every split into two reads.
            for cut in 0..=input.len() {
                let mut trimmer = AckTrimmer::default();
                let mut out = Vec::new();
                trimmer.feed(&input[..cut], &mut out);
                trimmer.feed(&input[cut..], &mut out);
                assert_eq!(out, hex(&want), "cut at {cut}");
            }
        }
    }

    #[test]
    fn long_bodies_keep_their_multi_byte_length() {
        let mut input = vec![0x30, 0x80, 0x01];
        input.extend(std::iter::repeat_n(7u8, 128));
        let mut out = Vec::new();
        AckTrimmer::default().feed(&input, &mut out);
        assert_eq!(out, input);
    }

    #[test]
    fn the_connect_level_is_read_once_it_has_arrived() {
        let connect = hex("101000044d5154540402001e0004706b2d31");
        assert_eq!(connect_level(&connect), Some(Some(4)));
        assert_eq!(connect_level(&connect[..8]), None);
        let v5 = hex("101100044d5154540502001e000000");
        assert_eq!(connect_level(&v5), Some(Some(5)));
        assert_eq!(connect_level(&hex("30020000")), Some(None));
        assert_eq!(connect_level(&[]), None);
    }
}
