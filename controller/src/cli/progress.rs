//! `Transfer`: progress of one blob the CLI reads or writes, on stderr. On a terminal one
//! line is redrawn in place (at most 10 times a second): what, bytes done of total, percent,
//! rate. Elsewhere (pipes, CI logs) nothing is drawn while it runs and one plain line is
//! printed when it ends, so logs stay line-based. Hand-written: a bar this small does not
//! need `indicatif` and its terminal crates.

use std::io::{IsTerminal, Read, Write};
use std::time::{Duration, Instant};

/// How often a terminal line is redrawn.
const REDRAW: Duration = Duration::from_millis(100);

/// One transfer being reported.
#[derive(Debug)]
pub struct Transfer {
    label: String,
    total: u64,
    done: u64,
    started: Instant,
    last_draw: Option<Instant>,
    tty: bool,
}

impl Transfer {
    /// Starts reporting `label` (e.g. `layer 1/3 sha256:0123…`) of `total` bytes.
    pub fn start(label: String, total: u64) -> Self {
        Self::with_terminal(label, total, std::io::stderr().is_terminal())
    }

    fn with_terminal(label: String, total: u64, tty: bool) -> Self {
        Self {
            label,
            total,
            done: 0,
            started: Instant::now(),
            last_draw: None,
            tty,
        }
    }

    pub fn advance(&mut self, bytes: u64) {
        self.done += bytes;
        if !self.tty {
            return;
        }
        let now = Instant::now();
        if self.last_draw.is_some_and(|t| now - t < REDRAW) {
            return;
        }
        self.last_draw = Some(now);
        let line = self.line(now - self.started, false);
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r{line}\x1b[K");
        let _ = err.flush();
    }

    /// Sets the bytes done so far (progress read from elsewhere, e.g. a device's report).
    pub fn set_done(&mut self, done: u64) {
        if done > self.done {
            self.advance(done - self.done);
        }
    }

    /// Ends the report with its final line (`verb`: what was done, e.g. `verified`).
    pub fn finish(self, verb: &str) {
        let line = self.line(self.started.elapsed(), true);
        let mut err = std::io::stderr().lock();
        let clear = if self.tty { "\r\x1b[K" } else { "" };
        let _ = writeln!(err, "{clear}{line} {verb}");
    }

    fn line(&self, elapsed: Duration, end: bool) -> String {
        let rate = rate(self.done, elapsed);
        if end {
            return format!(
                "{} {} in {:.1} s ({rate})",
                self.label,
                bytes(self.done),
                elapsed.as_secs_f64()
            );
        }
        let percent = (self.done * 100).checked_div(self.total).unwrap_or(100);
        format!(
            "{} {} / {} {percent:>3} % {rate}",
            self.label,
            bytes(self.done),
            bytes(self.total)
        )
    }

    /// A reader that reports what is read through it.
    pub fn reader<R: Read>(&mut self, inner: R) -> TransferReader<'_, R> {
        TransferReader {
            inner,
            transfer: self,
        }
    }
}

/// Reads through to `inner`, advancing the transfer.
#[derive(Debug)]
pub struct TransferReader<'a, R> {
    inner: R,
    transfer: &'a mut Transfer,
}

impl<R: Read> Read for TransferReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.transfer.advance(n as u64);
        Ok(n)
    }
}

/// Bytes in decimal units, as the dashboard shows them (`1.2 MB`).
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    match unit {
        0 => format!("{n} B"),
        _ if value < 10.0 => format!("{value:.1} {}", UNITS[unit]),
        _ => format!("{value:.0} {}", UNITS[unit]),
    }
}

fn rate(done: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    if secs < 0.001 {
        return "— /s".into();
    }
    format!("{}/s", bytes((done as f64 / secs) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_the_dashboard() {
        assert_eq!(bytes(999), "999 B");
        assert_eq!(bytes(1_234_567), "1.2 MB");
        assert_eq!(bytes(42_000_000), "42 MB");
    }

    #[test]
    fn a_transfer_counts_what_is_read_through_it() {
        let mut transfer = Transfer::with_terminal("layer 1/1".into(), 10_000, false);
        let mut sink = Vec::new();
        std::io::copy(&mut transfer.reader(&[7u8; 10_000][..]), &mut sink).unwrap();
        assert_eq!(transfer.done, 10_000);
        let line = transfer.line(Duration::from_secs(2), false);
        assert_eq!(line, "layer 1/1 10 KB / 10 KB 100 % 5.0 KB/s");
        let end = transfer.line(Duration::from_secs(2), true);
        assert_eq!(end, "layer 1/1 10 KB in 2.0 s (5.0 KB/s)");
    }
}
