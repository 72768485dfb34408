//! Time stamps of container log lines. The shim writes every line as `TIME SP LINE`, TIME
//! being the device clock in RFC 3339 with nanoseconds, UTC (`2026-12-04T22:35:01.123456789Z`,
//! Docker's `logs --timestamps` format), so `--since` and `--timestamps` work on the device.
//! A line the container writes in pieces is stamped when its first piece arrives; a piece
//! longer than [`MAX_LINE`] is written as a line of its own. Lines of log files written
//! before stamps existed have no time ([`split`] returns `None`).
//!
//! Pure: the clock is an argument.

/// A partial line is written out (as its own line) once it is this long.
pub const MAX_LINE: usize = 16 * 1024;
/// `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`.
const STAMP_LEN: usize = 30;

pub use coracle_proto::time::{format_rfc3339, parse_rfc3339};

/// Splits a stored log line into its time and text; `None` for a line without a stamp.
pub fn split(line: &str) -> (Option<i64>, &str) {
    if line.len() > STAMP_LEN && line.as_bytes()[STAMP_LEN] == b' ' {
        if let Some(at) = line.get(..STAMP_LEN).and_then(parse_rfc3339) {
            return (Some(at), &line[STAMP_LEN + 1..]);
        }
    }
    (None, line)
}

/// The text of a stored log with the stamps taken off its lines (what the container wrote,
/// each line ended by a newline).
pub fn text_of(stored: &str) -> String {
    stored.lines().fold(String::new(), |mut out, line| {
        out.push_str(split(line).1);
        out.push('\n');
        out
    })
}

/// Cuts one output stream into stamped lines.
#[derive(Debug, Default)]
pub struct LineStamper {
    /// The partial line so far (with its stamp already in front).
    partial: Vec<u8>,
}

impl LineStamper {
    /// Feeds bytes read at `now_ns`; appends the complete stamped lines to `out`.
    pub fn feed(&mut self, mut bytes: &[u8], now_ns: i64, out: &mut Vec<u8>) {
        while !bytes.is_empty() {
            if self.partial.is_empty() {
                self.partial
                    .extend_from_slice(format_rfc3339(now_ns).as_bytes());
                self.partial.push(b' ');
            }
            let room = MAX_LINE.saturating_sub(self.partial.len() - STAMP_LEN - 1);
            let (piece, ended) = match bytes.iter().position(|&b| b == b'\n') {
                Some(i) if i < room => (&bytes[..=i], true),
                _ if bytes.len() >= room => (&bytes[..room], true),
                _ => (bytes, false),
            };
            self.partial.extend_from_slice(piece);
            bytes = &bytes[piece.len()..];
            if ended {
                if self.partial.last() != Some(&b'\n') {
                    self.partial.push(b'\n');
                }
                out.append(&mut self.partial);
            }
        }
    }

    /// The stream closed: writes what is left of a line.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.partial.is_empty() {
            self.partial.push(b'\n');
            out.append(&mut self.partial);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_stamped_when_they_begin_and_cut_when_too_long() {
        let mut stamper = LineStamper::default();
        let mut out = Vec::new();
        stamper.feed(b"one\ntw", 0, &mut out);
        stamper.feed(b"o\nthree", 1_000_000_000, &mut out);
        stamper.finish(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "1970-01-01T00:00:00.000000000Z one\n\
             1970-01-01T00:00:00.000000000Z two\n\
             1970-01-01T00:00:01.000000000Z three\n"
        );
        let mut out = Vec::new();
        LineStamper::default().feed(&vec![b'x'; MAX_LINE + 5], 0, &mut out);
        let lines: Vec<&[u8]> = out.split(|&b| b == b'\n').collect();
        assert_eq!(lines[0].len(), STAMP_LEN + 1 + MAX_LINE);
    }

    #[test]
    fn text_of_a_stored_log_has_no_stamps() {
        let stored = "2026-12-04T22:35:01.123456789Z ran\nold line\n2026-12-04T22:35:02.000000000Z  two spaces\n";
        assert_eq!(text_of(stored), "ran\nold line\n two spaces\n");
        assert_eq!(text_of(""), "");
    }

    #[test]
    fn split_takes_the_stamp_off_and_leaves_old_lines_alone() {
        let (at, text) = split("2026-12-04T22:35:01.123456789Z hello world");
        assert_eq!((at, text), (Some(1_796_423_701_123_456_789), "hello world"));
        assert_eq!(split("plain old line"), (None, "plain old line"));
    }
}
