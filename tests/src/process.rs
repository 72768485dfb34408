//! Child processes for end-to-end tests: output captured line by line, waits on a line with a
//! timeout (never a sleep), and SIGKILL plus reap on drop so a failing test leaves no process.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Why a process step failed.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot start {program}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{program} printed no line containing {wanted:?} within {timeout:?}; its output:\n{output}"
    )]
    NoSuchLine {
        program: String,
        wanted: String,
        timeout: Duration,
        output: String,
    },
    #[error("cannot signal {program} (pid {pid})")]
    Signal {
        program: String,
        pid: u32,
        #[source]
        source: nix::Error,
    },
    #[error("waiting for {program} failed")]
    Wait {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} did not exit within {timeout:?}")]
    StillRunning { program: String, timeout: Duration },
}

/// A running child whose stdout and stderr lines are collected.
#[derive(Debug)]
pub struct TestProcess {
    program: String,
    child: Child,
    lines: Receiver<String>,
    output: Arc<Mutex<String>>,
}

fn forward(
    stream: impl Read + Send + 'static,
    tx: std::sync::mpsc::Sender<String>,
    all: Arc<Mutex<String>>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if let Ok(mut all) = all.lock() {
                all.push_str(&line);
                all.push('\n');
            }
            let _ = tx.send(line);
        }
    });
}

impl TestProcess {
    /// Starts `cmd` with its output piped to the test.
    pub fn spawn(mut cmd: Command) -> Result<Self, ProcessError> {
        let program = format!("{:?}", cmd.get_program());
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| ProcessError::Spawn {
                program: program.clone(),
                source,
            })?;
        let (tx, lines) = channel();
        let output = Arc::new(Mutex::new(String::new()));
        if let Some(out) = child.stdout.take() {
            forward(out, tx.clone(), output.clone());
        }
        if let Some(err) = child.stderr.take() {
            forward(err, tx, output.clone());
        }
        Ok(Self {
            program,
            child,
            lines,
            output,
        })
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the child printed so far.
    pub fn output(&self) -> String {
        self.output.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Waits for a line containing `wanted` and returns it.
    pub fn wait_for_line(
        &mut self,
        wanted: &str,
        timeout: Duration,
    ) -> Result<String, ProcessError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(wanted) => return Ok(line),
                Ok(_) => continue,
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                    return Err(ProcessError::NoSuchLine {
                        program: self.program.clone(),
                        wanted: wanted.to_string(),
                        timeout,
                        output: self.output(),
                    })
                }
            }
        }
    }

    /// Sends a signal (SIGKILL to simulate a crash or power loss, SIGTERM to stop).
    pub fn signal(&self, signal: Signal) -> Result<(), ProcessError> {
        let pid = self.pid();
        let raw = i32::try_from(pid).unwrap_or(i32::MAX);
        kill(Pid::from_raw(raw), signal).map_err(|source| ProcessError::Signal {
            program: self.program.clone(),
            pid,
            source,
        })
    }

    /// Stops the child with SIGTERM and waits for it, `timeout` at most.
    pub fn terminate(mut self, timeout: Duration) -> Result<ExitStatus, ProcessError> {
        self.signal(Signal::SIGTERM)?;
        self.wait_timeout(timeout)
    }

    /// Waits for the child to exit, polling so the wait is bounded.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<ExitStatus, ProcessError> {
        let deadline = Instant::now() + timeout;
        loop {
            let polled = self.child.try_wait().map_err(|source| ProcessError::Wait {
                program: self.program.clone(),
                source,
            })?;
            if let Some(status) = polled {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                return Err(ProcessError::StillRunning {
                    program: self.program.clone(),
                    timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for TestProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_for_a_line_and_reports_what_was_printed_when_it_never_comes() {
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "echo starting; echo 'listening on 127.0.0.1:4242' >&2; exec sleep 30",
        ]);
        let mut proc = TestProcess::spawn(cmd).unwrap();
        let line = proc
            .wait_for_line("listening on", Duration::from_secs(5))
            .unwrap();
        assert!(line.ends_with(":4242"));
        let err = proc
            .wait_for_line("never printed", Duration::from_millis(100))
            .unwrap_err()
            .to_string();
        assert!(err.contains("starting"), "{err}");
        proc.signal(Signal::SIGTERM).unwrap();
        let status = proc.wait_timeout(Duration::from_secs(5)).unwrap();
        assert!(!status.success());
    }

    #[test]
    fn drop_kills_and_reaps_the_child() {
        let proc = TestProcess::spawn({
            let mut c = Command::new("sleep");
            c.arg("30");
            c
        })
        .unwrap();
        let pid = proc.pid();
        drop(proc);
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    }
}
