//! The real `coracle serve` for end-to-end tests: devices reach it on the test network's
//! gateway address, the test drives it through the real `coracle` CLI. Its ports are chosen
//! once, so a restarted controller is where the devices' bootstrap files say it is. It runs
//! its embedded broker, or uses an [`ExternalBroker`] (Debian's Mosquitto). The API and the
//! registry serve HTTPS (`tls = true`), as a controller whose registry devices reach on the
//! network must: agents get an `https://` registry URL and the CA in their bootstrap files,
//! the CLI trusts the data dir's CA, and skopeo pushes verifying the certificate.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};

use super::external_broker::ExternalBroker;
use super::{binary, free_port};
use crate::process::TestProcess;
use crate::registry::skopeo;

/// A running (or stopped, between restarts) controller.
#[derive(Debug)]
pub struct Controller {
    pub data_dir: PathBuf,
    config: PathBuf,
    /// `host:port` of the registry, as devices and skopeo reach it.
    pub registry: String,
    /// The broker's plain listener (loopback), where the controller's own client connects
    /// (the embedded broker's, or the external broker's).
    pub broker: SocketAddr,
    process: Option<TestProcess>,
}

impl Controller {
    /// Where a controller started in `dir` keeps its data (`coracle broker mosquitto-config`
    /// reads it before the controller starts).
    pub fn data_dir_in(dir: &Path) -> PathBuf {
        dir.join("controller")
    }

    /// Starts a controller with its state in `dir` and its embedded broker; devices reach it
    /// at `public` (the test network's gateway), the test's own CLI calls use loopback.
    pub fn start(dir: &Path, public: Ipv4Addr) -> anyhow::Result<Self> {
        Self::start_with_config(dir, public, "")
    }

    /// [`Self::start`] with more of the serve config (e.g. `[[registries]]` tables) after the
    /// listeners.
    pub fn start_with_config(dir: &Path, public: Ipv4Addr, extra: &str) -> anyhow::Result<Self> {
        let local = Ipv4Addr::LOCALHOST;
        let broker = SocketAddr::from((local, free_port(local)?));
        let broker_tls = SocketAddr::from((public, free_port(public)?));
        let section = format!("listen = \"{broker}\"\ntls_listen = \"{broker_tls}\"\n");
        Self::start_with(dir, public, broker, &section, extra)
    }

    /// Starts a controller on `broker` instead of an embedded one (`coracle serve --broker`):
    /// its own client on the broker's loopback listener, devices told the TLS listener,
    /// device accounts kept in the broker's password file.
    pub fn start_on_broker(
        dir: &Path,
        public: Ipv4Addr,
        broker: &ExternalBroker,
    ) -> anyhow::Result<Self> {
        let section = format!(
            "external_url = \"{}\"\ndevice_url = \"{}\"\nmosquitto_dir = {:?}\n",
            broker.controller_url(),
            broker.device_url(),
            broker.dir.display().to_string()
        );
        Self::start_with(dir, public, broker.local, &section, "")
    }

    fn start_with(
        dir: &Path,
        public: Ipv4Addr,
        broker: SocketAddr,
        broker_section: &str,
        extra: &str,
    ) -> anyhow::Result<Self> {
        let data_dir = Self::data_dir_in(dir);
        let local = Ipv4Addr::LOCALHOST;
        let api = SocketAddr::from((local, free_port(local)?));
        let registry = SocketAddr::from((public, free_port(public)?));
        let config = dir.join("serve.toml");
        let text = format!(
            "data_dir = {data:?}\npublic_host = \"{public}\"\n\n[broker]\n{broker_section}\n\
             [api]\nlisten = \"{api}\"\ntls = true\n\n\
             [registry]\nlisten = \"{registry}\"\ntls = true\n{extra}",
            data = data_dir.display().to_string(),
        );
        std::fs::write(&config, text).with_context(|| format!("write {}", config.display()))?;
        let mut controller = Self {
            data_dir,
            config,
            registry: registry.to_string(),
            broker,
            process: None,
        };
        controller.start_process()?;
        Ok(controller)
    }

    fn start_process(&mut self) -> anyhow::Result<()> {
        let mut cmd = Command::new(binary("coracle")?);
        cmd.arg("serve").arg("--config").arg(&self.config);
        cmd.env("RUST_LOG", "info");
        let mut process = TestProcess::spawn(cmd)?;
        // The registry is the last listener `serve` announces.
        process.wait_for_line("registry listening on", Duration::from_secs(30))?;
        self.process = Some(process);
        Ok(())
    }

    /// Stops the controller (SIGTERM) and starts it again on the same data dir and ports.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop()?;
        self.start_process()
    }

    /// Stops the controller with SIGTERM and waits for it.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(process) = self.process.take() {
            process.terminate(Duration::from_secs(20))?;
        }
        Ok(())
    }

    /// Everything the controller printed so far (for failure messages).
    pub fn output(&self) -> String {
        self.process
            .as_ref()
            .map(TestProcess::output)
            .unwrap_or_default()
    }

    /// Runs the `coracle` CLI against this controller and returns its stdout.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(binary("coracle")?)
            .args(args)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .output()
            .context("run coracle")?;
        if !out.status.success() {
            bail!(
                "coracle {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Enrols a device and returns its bootstrap file.
    pub fn enrol(&self, name: &str, dir: &Path) -> anyhow::Result<PathBuf> {
        let bootstrap = dir.join(format!("{name}.bootstrap.toml"));
        let path = bootstrap.display().to_string();
        self.cli(&["device", "add", name, "-o", &path])?;
        Ok(bootstrap)
    }

    /// Deploys a compose file to one device; returns the CLI's message.
    pub fn deploy(&self, compose: &Path, device: &str) -> anyhow::Result<String> {
        let path = compose.display().to_string();
        self.cli(&["deploy", &path, "--device", device])
    }

    /// `coracle device show NAME` as JSON.
    pub fn device(&self, name: &str) -> anyhow::Result<serde_json::Value> {
        let text = self.cli(&["device", "show", name])?;
        serde_json::from_str(&text).with_context(|| format!("device show {name}: {text}"))
    }

    /// The API's URL as the controller wrote it for the CLI (`https://127.0.0.1:PORT`).
    pub fn api_url(&self) -> anyhow::Result<String> {
        let path = self.data_dir.join("api.url");
        let url =
            std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        Ok(url.trim().to_string())
    }

    /// A directory holding the controller CA as `ca.crt`, for skopeo's `--dest-cert-dir`.
    fn registry_certs(&self) -> anyhow::Result<PathBuf> {
        let dir = self.data_dir.with_file_name("registry-certs");
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let ca = self.data_dir.join("ca.pem");
        std::fs::copy(&ca, dir.join("ca.crt"))
            .with_context(|| format!("copy {} into {}", ca.display(), dir.display()))?;
        Ok(dir)
    }

    /// The admin token (the registry's push credential).
    pub fn admin_token(&self) -> anyhow::Result<String> {
        let path = self.data_dir.join("admin.token");
        let token =
            std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        Ok(token.trim().to_string())
    }

    /// A secret file of the data dir, trimmed (`controller-mqtt.password`, `deployment.key`).
    pub fn secret(&self, name: &str) -> anyhow::Result<String> {
        let path = self.data_dir.join(name);
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        Ok(text.trim().to_string())
    }

    /// Whether the registry lets a device token (`DEVICE:HEX` or `DEVICE:EPOCH:HEX`, sent as
    /// basic auth with the device id as user) read `repo:tag`'s manifest; `Err` names the
    /// refusal.
    pub fn pull_manifest_as(&self, token: &str, repo_tag: &str) -> anyhow::Result<()> {
        let (user, password) = token
            .split_once(':')
            .with_context(|| format!("{token:?} is not a device token"))?;
        let creds = format!("{user}:{password}");
        let source = format!("docker://{}/{repo_tag}", self.registry);
        let certs = self.registry_certs()?.display().to_string();
        skopeo(&[
            "inspect",
            "--raw",
            "--cert-dir",
            &certs,
            "--creds",
            &creds,
            &source,
        ])?;
        Ok(())
    }

    /// Pushes an image (a skopeo source such as `oci:DIR:TAG`) as `repo:tag`, over HTTPS
    /// verified against the controller CA.
    pub fn push(&self, source: &str, repo_tag: &str) -> anyhow::Result<()> {
        let creds = format!("coracle:{}", self.admin_token()?);
        let dest = format!("docker://{}/{repo_tag}", self.registry);
        let certs = self.registry_certs()?.display().to_string();
        skopeo(&[
            "copy",
            "--quiet",
            "--dest-cert-dir",
            &certs,
            "--dest-creds",
            &creds,
            source,
            &dest,
        ])?;
        Ok(())
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
