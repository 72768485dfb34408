//! A log session: the lines of the service's log files that match the query (`--since`,
//! `--tail`), with or without their time stamps, then with `follow` the lines the container
//! writes from then on, until the client goes away. Rotation while following is seen as
//! the followed file being renamed: what is left of it is read, then the new one.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

use coracle_proto::session::MAX_CHUNK;
use coracle_proto::{OutputStream, ServiceName, SessionFailure};

use super::{service_status, Context, Ended, LIVENESS_CHECK};
use crate::runtime::log_time;

/// How often a followed log is looked at for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(200);
/// New bytes read per look (a log storm is caught up with over several looks).
const FOLLOW_READ_MAX: u64 = 1024 * 1024;

/// Which lines, and how they look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogQuery {
    pub since_unix_ns: Option<i64>,
    pub tail: Option<u32>,
    pub timestamps: bool,
}

impl LogQuery {
    /// The stored line as the client sees it, or `None` when the query leaves it out.
    fn show(&self, stored: &str) -> Option<String> {
        let (at, text) = log_time::split(stored);
        if let Some(since) = self.since_unix_ns {
            // A line without a time (written before stamps) cannot be placed after `since`.
            if at.is_none_or(|at| at < since) {
                return None;
            }
        }
        Some(if self.timestamps { stored } else { text }.to_owned())
    }

    /// The history: matching lines of `text` (every file, oldest first), the last `tail`.
    pub fn select(&self, text: &str) -> Vec<String> {
        let mut lines: Vec<String> = text.lines().filter_map(|l| self.show(l)).collect();
        if let Some(tail) = self.tail {
            let skip = lines.len().saturating_sub(tail as usize);
            lines.drain(..skip);
        }
        lines
    }
}

/// The followed file: where reading stopped, and the start of a line not yet complete.
#[derive(Debug)]
struct Follower {
    path: PathBuf,
    file: File,
    carry: Vec<u8>,
}

impl Follower {
    /// Complete new lines; switches to a new file at `path` once the followed one was
    /// rotated away and read to its end.
    fn poll(&mut self) -> std::io::Result<Vec<String>> {
        let mut bytes = std::mem::take(&mut self.carry);
        let read = (&mut self.file)
            .take(FOLLOW_READ_MAX)
            .read_to_end(&mut bytes)?;
        if read == 0 {
            let ours = self.file.metadata()?;
            if let Ok(now) = std::fs::metadata(&self.path) {
                if now.ino() != ours.ino() || now.dev() != ours.dev() {
                    self.file = File::open(&self.path)?;
                } else if now.len() < self.file.stream_position()? {
                    // Truncated in place (`keep = 0` rotation).
                    self.file.seek(SeekFrom::Start(0))?;
                }
            }
        }
        let cut = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        self.carry = bytes.split_off(cut);
        Ok(String::from_utf8_lossy(&bytes)
            .lines()
            .map(str::to_owned)
            .collect())
    }
}

/// Reads the history of `files` (the last one is followed) and opens the follower at its end.
fn read_history(files: Vec<PathBuf>) -> std::io::Result<(String, Option<Follower>)> {
    let mut text = Vec::new();
    let mut follower = None;
    let count = files.len();
    for (i, path) in files.into_iter().enumerate() {
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => return Err(err),
        };
        file.read_to_end(&mut text)?;
        if !text.ends_with(b"\n") && !text.is_empty() {
            text.push(b'\n');
        }
        if i + 1 == count {
            follower = Some(Follower {
                path,
                file,
                carry: Vec::new(),
            });
        }
    }
    Ok((String::from_utf8_lossy(&text).into_owned(), follower))
}

pub(super) async fn run(mut cx: Context, service: ServiceName, query: LogQuery, follow: bool) {
    if let Err(failure) = service_status(&cx.engine, &service).await {
        cx.sender.failed(failure).await;
        return;
    }
    let engine = cx.engine.clone();
    let history = tokio::task::spawn_blocking(move || {
        let files = engine.log_files(&service).map_err(|e| e.to_string())?;
        read_history(files).map_err(|e| format!("read the log: {e}"))
    })
    .await;
    let (text, follower) = match history {
        Ok(Ok(found)) => found,
        Ok(Err(reason)) => return cx.sender.failed(SessionFailure::Other(reason)).await,
        Err(err) => {
            let reason = format!("read the log: {err}");
            return cx.sender.failed(SessionFailure::Other(reason)).await;
        }
    };
    cx.sender.opened().await;
    let ended = async {
        send_lines(&mut cx, query.select(&text)).await?;
        match follower {
            Some(follower) if follow => follow_log(&mut cx, follower, query).await,
            _ => Ok(()),
        }
    }
    .await;
    match ended {
        Ok(()) => cx.sender.exited(0).await,
        Err(ended) => cx.report_end(ended).await,
    }
}

/// Sends lines in chunks of at most `MAX_CHUNK` bytes (a longer line is cut).
async fn send_lines(cx: &mut Context, lines: Vec<String>) -> Result<(), Ended> {
    let mut chunk = Vec::with_capacity(MAX_CHUNK);
    for line in lines {
        let mut bytes = line.into_bytes();
        bytes.push(b'\n');
        if chunk.len() + bytes.len() > MAX_CHUNK && !chunk.is_empty() {
            cx.send(OutputStream::Stdout, std::mem::take(&mut chunk))
                .await?;
        }
        for piece in bytes.chunks(MAX_CHUNK) {
            chunk.extend_from_slice(piece);
            if chunk.len() >= MAX_CHUNK {
                cx.send(OutputStream::Stdout, std::mem::take(&mut chunk))
                    .await?;
            }
        }
    }
    if !chunk.is_empty() {
        cx.send(OutputStream::Stdout, chunk).await?;
    }
    Ok(())
}

/// New lines as they come (`since` and `timestamps` apply; `tail` was the history's).
async fn follow_log(
    cx: &mut Context,
    mut follower: Follower,
    query: LogQuery,
) -> Result<(), Ended> {
    let mut poll = tokio::time::interval(FOLLOW_POLL);
    let mut liveness = tokio::time::interval(LIVENESS_CHECK);
    loop {
        tokio::select! {
            input = cx.input.recv() => { cx.on_input(input)?; }
            _ = liveness.tick() => {
                if cx.liveness.client_gone() {
                    return Err(Ended::ClientGone);
                }
            }
            _ = poll.tick() => {
                let read = tokio::task::spawn_blocking(move || {
                    let lines = follower.poll();
                    (follower, lines)
                })
                .await;
                let lines;
                (follower, lines) = match read {
                    Ok((follower, Ok(lines))) => (follower, lines),
                    Ok((_, Err(err))) => {
                        let reason = format!("follow the log: {err}");
                        cx.sender.failed(SessionFailure::Other(reason)).await;
                        return Err(Ended::Closed);
                    }
                    Err(err) => {
                        let reason = format!("follow the log: {err}");
                        cx.sender.failed(SessionFailure::Other(reason)).await;
                        return Err(Ended::Closed);
                    }
                };
                let shown = lines.iter().filter_map(|l| query.show(l)).collect();
                send_lines(cx, shown).await?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "old line without a time\n\
        2026-12-04T22:00:00.000000000Z first\n\
        2026-12-04T22:10:00.000000000Z second\n\
        2026-12-04T22:20:00.000000000Z third\n";

    #[test]
    fn history_keeps_lines_since_and_the_last_tail() {
        let since = log_time::parse_rfc3339("2026-12-04T22:05:00Z");
        let query = LogQuery {
            since_unix_ns: since,
            tail: None,
            timestamps: false,
        };
        assert_eq!(query.select(LOG), ["second", "third"]);
        let query = LogQuery {
            since_unix_ns: None,
            tail: Some(3),
            timestamps: true,
        };
        assert_eq!(
            query.select(LOG),
            [
                "2026-12-04T22:00:00.000000000Z first",
                "2026-12-04T22:10:00.000000000Z second",
                "2026-12-04T22:20:00.000000000Z third"
            ]
        );
        let all = LogQuery {
            since_unix_ns: None,
            tail: None,
            timestamps: false,
        };
        assert_eq!(all.select(LOG)[0], "old line without a time");
    }

    #[test]
    fn the_follower_returns_complete_lines_and_survives_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("container.log");
        std::fs::write(&path, "a\nb").unwrap();
        let (text, follower) = read_history(vec![path.clone()]).unwrap();
        assert_eq!(text, "a\nb\n");
        let mut follower = follower.unwrap();
        assert!(follower.poll().unwrap().is_empty());
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        file.write_all(b"c\nd\ne").unwrap();
        assert_eq!(follower.poll().unwrap(), ["c", "d"]);
        std::fs::rename(&path, dir.path().join("container.log.1")).unwrap();
        std::fs::write(&path, "f\n").unwrap();
        file.write_all(b"\n").unwrap();
        assert_eq!(follower.poll().unwrap(), ["e"]);
        assert!(follower.poll().unwrap().is_empty());
        assert_eq!(follower.poll().unwrap(), ["f"]);
    }
}
