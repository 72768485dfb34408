//! `process.terminal` and `--console-socket`: which combinations are valid (runc's rules),
//! and the connection to the socket the init sends its pty's master to
//! (`runtime::init::console`). A terminal without a console socket — `run` in the
//! foreground, which would have to copy between its own terminal and the pty — is refused.

use std::os::unix::net::UnixStream;
use std::path::Path;

use oci_spec::runtime::Spec;

use super::OciError;
use crate::runtime::init::console::Console;

/// The console for this bundle and flag: `None` when the process has no terminal.
pub fn connect(oci: &Spec, socket: Option<&Path>) -> Result<Option<Console>, OciError> {
    let process = oci.process().as_ref();
    let terminal = process.and_then(|p| p.terminal()).unwrap_or(false);
    let path = match (terminal, socket) {
        (false, None) => return Ok(None),
        (false, Some(path)) => {
            return Err(OciError::ConsoleWithoutTerminal {
                path: path.to_owned(),
            })
        }
        (true, None) => {
            return Err(OciError::Unsupported {
                field: "process.terminal",
                reason: "a terminal needs --console-socket (its pty's master is sent there)",
            })
        }
        (true, Some(path)) => path,
    };
    let stream = UnixStream::connect(path).map_err(|source| OciError::ConnectConsole {
        path: path.to_owned(),
        source,
    })?;
    let size = process
        .and_then(|p| p.console_size())
        .map(|b| (clamp(b.height()), clamp(b.width())));
    Ok(Some(Console {
        socket: stream.into(),
        size,
    }))
}

fn clamp(n: u64) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(terminal: bool) -> Spec {
        serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2", "root": {"path": "rootfs"},
            "process": {"terminal": terminal, "cwd": "/", "user": {"uid": 0, "gid": 0},
                        "args": ["sh"], "consoleSize": {"height": 40, "width": 120}}
        }))
        .unwrap()
    }

    #[test]
    fn console_needs_terminal_and_socket_together() {
        assert!(connect(&spec(false), None).unwrap().is_none());
        let err = connect(&spec(true), None).unwrap_err();
        assert!(err.to_string().contains("--console-socket"), "{err}");
        let err = connect(&spec(false), Some(Path::new("/x.sock"))).unwrap_err();
        assert!(
            matches!(err, OciError::ConsoleWithoutTerminal { .. }),
            "{err}"
        );
    }

    #[test]
    fn console_connects_and_keeps_the_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let console = connect(&spec(true), Some(&path)).unwrap().unwrap();
        assert_eq!(console.size, Some((40, 120)));
        let err = connect(&spec(true), Some(&dir.path().join("none.sock"))).unwrap_err();
        assert!(err.to_string().contains("none.sock"), "{err}");
    }
}
