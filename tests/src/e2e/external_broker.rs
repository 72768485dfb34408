//! Debian's Mosquitto as the controller's external broker, set up the way the README tells an
//! operator to: `coracle broker mosquitto-config` writes the password file, ACL, TLS files and
//! `mosquitto.conf` from the controller's data dir; the files are handed to the `mosquitto`
//! user; the controller (`--mosquitto-dir`) adds each device it enrols to the password file
//! and reloads Mosquitto. The devices' TLS listener is on the test network's gateway, the
//! controller's plain listener on loopback. Ports are chosen once, so a restarted broker is where the bootstrap files say.
//! Dropping it stops Mosquitto.

use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};
use nix::sys::signal::Signal;

use super::controller::Controller;
use super::{binary, free_port};
use crate::process::TestProcess;

/// A running (or stopped, between restarts) Mosquitto.
#[derive(Debug)]
pub struct ExternalBroker {
    /// What `coracle broker mosquitto-config` wrote (and Mosquitto's persistence file).
    pub dir: PathBuf,
    /// The controller's plain listener (loopback).
    pub local: SocketAddr,
    /// The devices' TLS listener (on the test network's gateway).
    pub tls: SocketAddr,
    process: Option<TestProcess>,
}

/// Runs a command and fails with its stderr.
fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl ExternalBroker {
    /// Generates Mosquitto's files for the controller that will run in `dir` (see
    /// [`Controller::data_dir_in`]) and starts Mosquitto; devices reach it at `public`.
    pub fn start(dir: &Path, public: Ipv4Addr) -> anyhow::Result<Self> {
        let local = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port(Ipv4Addr::LOCALHOST)?));
        let tls = SocketAddr::from((public, free_port(public)?));
        let out = dir.join("mosquitto");
        run(Command::new(binary("coracle")?)
            .args(["broker", "mosquitto-config", "--out"])
            .arg(&out)
            .arg("--data-dir")
            .arg(Controller::data_dir_in(dir))
            .args(["--host", &public.to_string()])
            .args(["--tls-bind", &public.to_string()])
            .args(["--tls-port", &tls.port().to_string()])
            .args(["--local-port", &local.port().to_string()])
            .env("RUST_LOG", "warn"))?;
        // Mosquitto started as root drops to the `mosquitto` user before it reads the password
        // file and ACL (and again on every reload), so that user owns the files and may walk
        // into the test's directory, as the README's `chown -R mosquitto DIR` says.
        run(Command::new("chown").arg("-R").arg("mosquitto:").arg(&out))?;
        let mode = std::fs::metadata(dir)
            .with_context(|| format!("stat {}", dir.display()))?
            .permissions()
            .mode();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o711))
            .with_context(|| format!("chmod {}", dir.display()))?;
        let mut broker = Self {
            dir: out,
            local,
            tls,
            process: None,
        };
        broker.start_process()?;
        Ok(broker)
    }

    fn start_process(&mut self) -> anyhow::Result<()> {
        let mut cmd = Command::new("mosquitto");
        cmd.arg("-c").arg(self.dir.join("mosquitto.conf"));
        let mut process = TestProcess::spawn(cmd).context("start mosquitto (Debian package)")?;
        process.wait_for_line("running", Duration::from_secs(10))?;
        self.process = Some(process);
        Ok(())
    }

    /// `mqtt://` URL of the controller's listener.
    pub fn controller_url(&self) -> String {
        format!("mqtt://{}", self.local)
    }

    /// `mqtts://` URL of the devices' listener.
    pub fn device_url(&self) -> String {
        format!("mqtts://{}", self.tls)
    }

    /// How many times Mosquitto has reloaded its config (SIGHUP) since it started.
    pub fn reloads(&self) -> usize {
        self.output().matches("Reloading config").count()
    }

    /// Waits until Mosquitto has reloaded more than `seen` times: the controller changed a
    /// device's account and told it to.
    pub fn wait_reloaded(&self, seen: usize) -> anyhow::Result<()> {
        super::wait_until("mosquitto to reload", Duration::from_secs(10), || {
            let now = self.reloads();
            if now > seen {
                Ok(())
            } else {
                Err(format!("{now} reloads"))
            }
        })
    }

    /// Kills Mosquitto with SIGKILL, as a crash or power cut would: retained messages since
    /// its last save are gone. `forget` also removes its persistence file, as a broker
    /// replaced by a fresh one would have nothing.
    pub fn kill9(&mut self, forget: bool) -> anyhow::Result<()> {
        if let Some(mut process) = self.process.take() {
            process.signal(Signal::SIGKILL)?;
            process.wait_timeout(Duration::from_secs(10))?;
        }
        let db = self.dir.join("mosquitto.db");
        if forget && db.exists() {
            std::fs::remove_file(&db).with_context(|| format!("remove {}", db.display()))?;
        }
        Ok(())
    }

    /// Starts Mosquitto again with the same files and ports.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop()?;
        self.start_process()
    }

    /// Stops Mosquitto with SIGTERM (it saves its retained messages) and waits for it.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(process) = self.process.take() {
            process.terminate(Duration::from_secs(10))?;
        }
        Ok(())
    }

    /// Everything Mosquitto logged so far (connections, refusals, reloads).
    pub fn output(&self) -> String {
        self.process
            .as_ref()
            .map(TestProcess::output)
            .unwrap_or_default()
    }
}

impl Drop for ExternalBroker {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
