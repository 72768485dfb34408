//! Debian's Mosquitto as a real external broker for tests: started on a free loopback port
//! with a config the test writes, stopped on drop.

use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::process::{ProcessError, TestProcess};

/// Why Mosquitto could not be started.
#[derive(Debug, thiserror::Error)]
pub enum MosquittoError {
    #[error("cannot prepare mosquitto's config in {path}")]
    Config {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("mosquitto did not start")]
    Start(#[source] ProcessError),
}

/// A running Mosquitto.
#[derive(Debug)]
pub struct Mosquitto {
    pub port: u16,
    pub dir: tempfile::TempDir,
    process: TestProcess,
}

/// A loopback port that was free a moment ago. Mosquitto cannot take a listening socket from
/// us, so there is a small window in which another process could take it.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Mosquitto {
    /// Starts Mosquitto with a listener on 127.0.0.1 and `extra` config lines (auth, TLS, ACL).
    pub fn start(extra: &str) -> Result<Self, MosquittoError> {
        let dir = tempfile::tempdir().map_err(|source| MosquittoError::Config {
            path: std::env::temp_dir(),
            source,
        })?;
        let path = dir.path().join("mosquitto.conf");
        let port = free_port().map_err(|source| MosquittoError::Config {
            path: path.clone(),
            source,
        })?;
        let conf = format!(
            "listener {port} 127.0.0.1\npersistence false\nlog_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\nlog_type information\nmax_connections -1\n{extra}\n"
        );
        std::fs::File::create(&path)
            .and_then(|mut f| f.write_all(conf.as_bytes()))
            .map_err(|source| MosquittoError::Config {
                path: path.clone(),
                source,
            })?;
        let mut cmd = Command::new("mosquitto");
        cmd.arg("-c").arg(&path);
        let mut process = TestProcess::spawn(cmd).map_err(MosquittoError::Start)?;
        process
            .wait_for_line("running", Duration::from_secs(10))
            .map_err(MosquittoError::Start)?;
        Ok(Self { port, dir, process })
    }

    /// Mosquitto's pid, e.g. to kill it in a broker-down test.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }
}
