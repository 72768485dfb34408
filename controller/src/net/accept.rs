//! `Acceptor`: a listener's accept loop that survives its errors. A failed accept (most of
//! all EMFILE, "too many open files") is retried after a pause that doubles from 50 ms to
//! 1 s instead of at once, and logged once per 10 s with a count, never once per attempt.
//!
//! When the process is out of file descriptors, the acceptor gives back one spare
//! descriptor it holds for this, accepts the waiting connection with it and hands it out
//! marked `shed`: the caller refuses it (a 503, or a close) at once, so clients see a
//! refusal instead of hanging in the backlog, and the spare is taken again on the next call.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use super::throttle::LogThrottle;

const FIRST_PAUSE: Duration = Duration::from_millis(50);
const LONGEST_PAUSE: Duration = Duration::from_secs(1);
const LOG_EVERY: Duration = Duration::from_secs(10);
/// How long the accept of a connection waiting in the backlog may take after the spare
/// descriptor was given back (readiness is already known: it returns at once).
const SHED_ACCEPT: Duration = Duration::from_millis(20);

/// One accepted connection.
#[derive(Debug)]
pub struct Incoming {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    /// Accepted on the spare descriptor while the process has none left: refuse it now.
    pub shed: bool,
}

/// The pause after a failed accept: doubles up to a ceiling, back to the start on success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { next: FIRST_PAUSE }
    }
}

impl Backoff {
    /// The pause to take now; the next one is twice as long, up to the ceiling.
    pub fn pause(&mut self) -> Duration {
        let now = self.next;
        self.next = (self.next * 2).min(LONGEST_PAUSE);
        now
    }

    pub fn reset(&mut self) {
        self.next = FIRST_PAUSE;
    }
}

/// Whether an accept error is about the process (descriptors, memory) rather than one
/// connection that went away before it was accepted.
fn is_resource_error(err: &std::io::Error) -> bool {
    !matches!(
        err.kind(),
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::ConnectionRefused
    )
}

fn is_out_of_descriptors(err: &std::io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

/// A listener with its error handling.
#[derive(Debug)]
pub struct Acceptor {
    listener: TcpListener,
    /// Names the listener in logs (`api`, `registry`, `broker tls`).
    what: &'static str,
    backoff: Backoff,
    errors: LogThrottle,
    /// Whether the last accept failed; the first success after that is logged.
    failing: bool,
    /// Held open so one descriptor is free when the process runs out (see module doc).
    spare: Option<std::fs::File>,
}

impl Acceptor {
    pub fn new(listener: TcpListener, what: &'static str) -> Self {
        Self {
            listener,
            what,
            backoff: Backoff::default(),
            errors: LogThrottle::new(LOG_EVERY),
            failing: false,
            spare: open_spare(),
        }
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The next connection. Never fails: errors are paused on, logged rate-limited, retried.
    pub async fn next(&mut self) -> Incoming {
        loop {
            if self.spare.is_none() {
                self.spare = open_spare();
            }
            match self.listener.accept().await {
                Ok((stream, peer)) => {
                    if self.failing {
                        self.failing = false;
                        self.backoff.reset();
                        tracing::info!(listener = self.what, "accepting connections again");
                    }
                    return Incoming {
                        stream,
                        peer,
                        shed: false,
                    };
                }
                Err(err) if !is_resource_error(&err) => {
                    tracing::debug!(listener = self.what, error = %err, "connection gone before accept");
                }
                Err(err) => {
                    self.failing = true;
                    if let Some(count) = self.errors.hit(std::time::Instant::now()) {
                        tracing::warn!(
                            listener = self.what,
                            error = %err,
                            count,
                            "cannot accept connections; new ones are refused until this clears"
                        );
                    }
                    if is_out_of_descriptors(&err) {
                        if let Some(shed) = self.shed_one().await {
                            return shed;
                        }
                    }
                    tokio::time::sleep(self.backoff.pause()).await;
                }
            }
        }
    }

    /// Gives back the spare descriptor and accepts the waiting connection on it.
    async fn shed_one(&mut self) -> Option<Incoming> {
        self.spare.take()?;
        match tokio::time::timeout(SHED_ACCEPT, self.listener.accept()).await {
            Ok(Ok((stream, peer))) => Some(Incoming {
                stream,
                peer,
                shed: true,
            }),
            _ => None,
        }
    }
}

fn open_spare() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null").ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_50_ms_to_1_s_and_resets() {
        let mut backoff = Backoff::default();
        let pauses: Vec<u64> = (0..7).map(|_| backoff.pause().as_millis() as u64).collect();
        assert_eq!(pauses, [50, 100, 200, 400, 800, 1000, 1000]);
        backoff.reset();
        assert_eq!(backoff.pause(), FIRST_PAUSE);
    }

    #[test]
    fn only_process_errors_count_as_failures() {
        let gone = std::io::Error::from(ErrorKind::ConnectionAborted);
        assert!(!is_resource_error(&gone));
        let emfile = std::io::Error::from_raw_os_error(libc::EMFILE);
        assert!(is_resource_error(&emfile));
        assert!(is_out_of_descriptors(&emfile));
        let nomem = std::io::Error::from_raw_os_error(libc::ENOMEM);
        assert!(is_resource_error(&nomem) && !is_out_of_descriptors(&nomem));
    }
}
