//! An exec session: `argv` in the service's running container (`runtime::exec_interactive`),
//! stdin from the controller, stdout and stderr (or the terminal) back within the output
//! window, window-size changes applied to the terminal, and the exit code at the end.
//! Ending the session early (close, client gone, idle) drops the lifeline: the helper then
//! kills the process group.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use coracle_proto::session::MAX_CHUNK;
use coracle_proto::{OutputStream, ServiceName, SessionFailure, SessionInput};
use tokio::sync::mpsc;

use super::async_pipe::AsyncPipe;
use super::{service_status, Context, Ended, EXEC_IDLE, LIVENESS_CHECK};
use crate::engine::EngineStatus;
use crate::runtime::exec_interactive::InteractiveExec;

/// Stdin chunks waiting for the process to read them; beyond it the session ends (a
/// process that never reads stdin cannot hold the agent's memory).
const STDIN_QUEUE: usize = 64;
/// After the process exited, how long output still in flight is waited for (a process left
/// in the background may hold the pipes open forever).
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(200);

/// Stdin on its own task, so a process that does not read never stalls the session loop.
fn spawn_stdin_writer(stdin: AsyncPipe) -> mpsc::Sender<Option<Vec<u8>>> {
    let (tx, mut rx) = mpsc::channel::<Option<Vec<u8>>>(STDIN_QUEUE);
    tokio::spawn(async move {
        // `None`: end of stdin; the pipe (or the terminal's EOF character) closes it.
        while let Some(Some(data)) = rx.recv().await {
            if stdin.write_all(&data).await.is_err() {
                break;
            }
        }
    });
    tx
}

pub(super) async fn run(
    mut cx: Context,
    service: ServiceName,
    argv: Vec<String>,
    tty: Option<(u16, u16)>,
) {
    match service_status(&cx.engine, &service).await {
        Ok(EngineStatus::Running) => {}
        Ok(_) => return cx.sender.failed(SessionFailure::NotRunning).await,
        Err(failure) => return cx.sender.failed(failure).await,
    }
    let engine = cx.engine.clone();
    let started =
        tokio::task::spawn_blocking(move || engine.exec_interactive(&service, &argv, tty)).await;
    let process = match started {
        Ok(Ok(process)) => process,
        Ok(Err(err)) => {
            return cx
                .sender
                .failed(SessionFailure::Other(err.to_string()))
                .await
        }
        Err(err) => {
            let reason = format!("start the exec: {err}");
            return cx.sender.failed(SessionFailure::Other(reason)).await;
        }
    };
    match pump(&mut cx, process, tty.is_some()).await {
        Ok(code) => cx.sender.exited(code).await,
        Err(ended) => cx.report_end(ended).await,
    }
}

/// The session loop; the exit code once the process has ended and its output is sent.
async fn pump(cx: &mut Context, process: InteractiveExec, tty: bool) -> Result<i32, Ended> {
    let InteractiveExec {
        mut helper,
        stdin,
        stdout,
        stderr,
        pty,
        report,
        lifeline,
    } = process;
    let io = |fd| AsyncPipe::new(fd).map_err(|_| Ended::Closed);
    let stdin = spawn_stdin_writer(io(stdin)?);
    let stdout = io(stdout)?;
    let stderr = stderr.map(io).transpose()?;
    let report = io(report)?;
    cx.sender.opened().await;
    let (mut out_open, mut err_open) = (true, stderr.is_some());
    let mut report_text = Vec::new();
    let mut exited_at: Option<Instant> = None;
    let mut active = Instant::now();
    let mut liveness = tokio::time::interval(LIVENESS_CHECK);
    let (mut out_buf, mut err_buf, mut rep_buf) =
        (vec![0u8; MAX_CHUNK], vec![0u8; MAX_CHUNK], [0u8; 256]);
    loop {
        let output_open = out_open || err_open;
        if exited_at.is_some_and(|at| !output_open || at.elapsed() >= DRAIN_AFTER_EXIT) {
            break;
        }
        let room = cx.sender.window.has_room();
        tokio::select! {
            input = cx.input.recv() => {
                match cx.on_input(input)? {
                    Some(SessionInput::Stdin(data)) => {
                        active = Instant::now();
                        if stdin.try_send(Some(data)).is_err() {
                            return Err(Ended::Closed);
                        }
                    }
                    Some(SessionInput::CloseStdin) => {
                        if tty {
                            // A terminal has no half close: its EOF character (^D) says it.
                            let _ = stdin.try_send(Some(vec![4]));
                        } else {
                            let _ = stdin.try_send(None);
                        }
                    }
                    Some(SessionInput::Resize(size)) => {
                        if let Some(pty) = &pty {
                            let _ = crate::runtime::pty::resize(pty.as_fd(), size.rows, size.cols);
                        }
                    }
                    _ => {}
                }
            }
            read = stdout.read(&mut out_buf), if out_open && room => match read {
                Ok(0) | Err(_) => out_open = false,
                Ok(n) => {
                    active = Instant::now();
                    cx.sender.data(OutputStream::Stdout, out_buf[..n].to_vec()).await;
                }
            },
            read = read_optional(stderr.as_ref(), &mut err_buf), if err_open && room => match read {
                Ok(0) | Err(_) => err_open = false,
                Ok(n) => {
                    active = Instant::now();
                    cx.sender.data(OutputStream::Stderr, err_buf[..n].to_vec()).await;
                }
            },
            read = report.read(&mut rep_buf), if exited_at.is_none() => match read {
                Ok(0) | Err(_) => exited_at = Some(Instant::now()),
                Ok(n) => report_text.extend_from_slice(&rep_buf[..n]),
            },
            _ = liveness.tick() => {
                if cx.liveness.client_gone() {
                    return Err(Ended::ClientGone);
                }
                if active.elapsed() > EXEC_IDLE {
                    return Err(Ended::ClientGone);
                }
            }
        }
    }
    drop(lifeline);
    let _ = tokio::task::spawn_blocking(move || helper.wait()).await;
    let (code, errors) = read_report(&String::from_utf8_lossy(&report_text));
    if !errors.is_empty() {
        // What stopped the exec (no such program, a setup step), as the shell would say it.
        let stream = if tty {
            OutputStream::Stdout
        } else {
            OutputStream::Stderr
        };
        cx.send(stream, errors.into_bytes()).await?;
    }
    Ok(code)
}

async fn read_optional(pipe: Option<&AsyncPipe>, buf: &mut [u8]) -> std::io::Result<usize> {
    match pipe {
        Some(pipe) => pipe.read(buf).await,
        None => std::future::pending().await,
    }
}

/// The helper's report: the exit code (126, "cannot execute", when it has none) and the
/// setup errors it names, one `coracle: …` line each.
fn read_report(report: &str) -> (i32, String) {
    let mut code = None;
    let mut errors = String::new();
    for line in report.lines() {
        if let Some(message) = line.strip_prefix("error: ") {
            errors.push_str(&format!("coracle: {message}\r\n"));
        } else if let Some(("exit" | "timeout", n)) = line.split_once(' ') {
            code = n.trim().parse().ok();
        }
    }
    (code.unwrap_or(126), errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_give_the_code_and_the_setup_errors() {
        assert_eq!(read_report("exit 3\n"), (3, String::new()));
        let (code, errors) = read_report("error: exec nope: No such file\nexit 127\n");
        assert_eq!(code, 127);
        assert!(errors.contains("coracle: exec nope"), "{errors}");
        assert_eq!(read_report("").0, 126);
    }
}
