//! Test harness: runs the real `coracle serve` on port 0 in a temp dir, reads the addresses
//! it prints, enrols devices through the real CLI, and connects device MQTT clients
//! (rumqttc over TLS, checked against the controller CA).

#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coracle_proto::{Bootstrap, BrokerAuth};
pub mod fake_agent;
pub mod image_layouts;
pub mod mosquitto;
pub mod nats;
pub mod registry_client;
pub mod replica;

use rumqttc::{AsyncClient, ConnectReturnCode, Event, EventLoop, Incoming, MqttOptions};

pub const TIMEOUT: Duration = Duration::from_secs(15);

/// A running controller; killed on drop.
pub struct Controller {
    child: Child,
    pub dir: tempfile::TempDir,
    pub broker: SocketAddr,
    pub broker_tls: SocketAddr,
    pub api: SocketAddr,
    pub registry: SocketAddr,
    /// The `[store] url` the harness added (`CORACLE_TEST_STORE=postgres`).
    pub store_url: Option<String>,
}

pub fn data_dir(dir: &Path) -> PathBuf {
    dir.join("data")
}

impl Controller {
    pub fn start() -> Self {
        Self::start_in(tempfile::tempdir().unwrap())
    }

    /// Starts with the API and the registry serving HTTPS (`tls = true`) on loopback.
    pub fn start_tls() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let text = Self::config_text(dir.path(), "", "tls = true", "tls = true");
        Self::start_with_config(dir, &text)
    }

    /// Starts on an existing temp dir (for restart tests).
    pub fn start_in(dir: tempfile::TempDir) -> Self {
        let text = format!(
            "data_dir = {:?}\n[broker]\nlisten = \"127.0.0.1:0\"\ntls_listen = \"127.0.0.1:0\"\n[api]\nlisten = \"127.0.0.1:0\"\n[registry]\nlisten = \"127.0.0.1:0\"\n",
            data_dir(dir.path())
        );
        Self::start_with_config(dir, &text)
    }

    /// Starts with a given config file text (its `data_dir` should be `data_dir(dir)`).
    pub fn start_with_config(dir: tempfile::TempDir, text: &str) -> Self {
        Self::start_with_command(dir, text, Command::new(env!("CARGO_BIN_EXE_coracle")))
    }

    /// The config for port-0 listeners in `dir`, with `extra` TOML lines in each section
    /// (`[broker]`, `[api]`, `[registry]`).
    pub fn config_text(dir: &Path, broker: &str, api: &str, registry: &str) -> String {
        format!(
            "data_dir = {:?}\n[broker]\nlisten = \"127.0.0.1:0\"\ntls_listen = \"127.0.0.1:0\"\n{broker}\n[api]\nlisten = \"127.0.0.1:0\"\n{api}\n[registry]\nlisten = \"127.0.0.1:0\"\n{registry}\n",
            data_dir(dir)
        )
    }

    /// Starts with `command` as the program: `coracle` itself, or a wrapper that runs it
    /// (`prlimit --nofile=… coracle`); stderr as the command has it set.
    pub fn start_with_command(dir: tempfile::TempDir, text: &str, mut command: Command) -> Self {
        let config = dir.path().join("coracle.toml");
        let store_url = test_store_url(text, dir.path());
        let text = match &store_url {
            Some(url) => format!("{text}\n[store]\nurl = {url:?}\n"),
            None => text.to_string(),
        };
        std::fs::write(&config, text).unwrap();
        if !command.get_envs().any(|(key, _)| key == "RUST_LOG") {
            command.env(
                "RUST_LOG",
                std::env::var("CORACLE_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            );
        }
        let mut child = command
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let (mut broker, mut broker_tls, mut api, mut registry) = (None, None, None, None);
        while registry.is_none() {
            let line = lines
                .next()
                .expect("coracle serve exited before listening")
                .unwrap();
            let addr = |l: &str| l.rsplit(' ').next().unwrap().parse::<SocketAddr>().unwrap();
            if line.starts_with("broker tls listening on ") {
                broker_tls = Some(addr(&line));
            } else if line.starts_with("broker listening on ") {
                broker = Some(addr(&line));
            } else if line.starts_with("api listening on ") {
                api = Some(addr(&line));
            } else if line.starts_with("registry listening on ") {
                registry = Some(addr(&line));
            }
        }
        // Keep draining stdout so the controller never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self {
            child,
            dir,
            broker: broker.unwrap(),
            broker_tls: broker_tls.unwrap(),
            api: api.unwrap(),
            registry: registry.unwrap(),
            store_url,
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        data_dir(self.dir.path())
    }

    /// The controller's process id (for /proc readings).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.data_dir().join("admin.token")).unwrap()
    }

    /// The controller CA (PEM), as bootstrap files carry it.
    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.data_dir().join("ca.pem")).unwrap()
    }

    /// The API URL the controller wrote for the CLI (`api.url`).
    pub fn api_url(&self) -> String {
        std::fs::read_to_string(self.data_dir().join("api.url"))
            .unwrap()
            .trim()
            .to_string()
    }

    /// Runs the real CLI against this controller.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        let mut cli = Command::new(env!("CARGO_BIN_EXE_coracle"));
        if let Some(url) = &self.store_url {
            // For the commands that read the fleet database themselves (`image gc`).
            cli.env("CORACLE_STORE_URL", url);
        }
        cli.args(args)
            .arg("--data-dir")
            .arg(self.data_dir())
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    }

    /// Enrols a device with the CLI and reads back its bootstrap file.
    pub fn enrol(&self, name: &str) -> Bootstrap {
        let out = self.dir.path().join(format!("{name}.toml"));
        let result = self.cli(&["device", "add", name, "--out", out.to_str().unwrap()]);
        assert!(result.status.success(), "{result:?}");
        toml::from_str(&std::fs::read_to_string(out).unwrap()).unwrap()
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn stop(mut self) -> tempfile::TempDir {
        let kill = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "controller exited with {status}");
        let dir = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.dir, dir)
    }
}

/// With `CORACLE_TEST_STORE=postgres`, every controller a test starts keeps its fleet
/// database on the test process's PostgreSQL (one database per temp dir, so a restart finds
/// its data): the whole suite then runs on the PostgreSQL backend. Tests that set their own
/// `[store]` keep it. `backup_restore.rs` is SQLite-only (`coracle backup` refuses a
/// PostgreSQL store, as it should).
fn test_store_url(text: &str, dir: &Path) -> Option<String> {
    if std::env::var("CORACLE_TEST_STORE").as_deref() != Ok("postgres") || text.contains("[store]")
    {
        return None;
    }
    let name = dir
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_ascii_lowercase()
        .replace(|c: char| !c.is_ascii_alphanumeric(), "_");
    let url = coracle_tests::postgres::shared_database_named(&format!("dir{name}"))
        .unwrap()
        .expect("CORACLE_TEST_STORE=postgres needs PostgreSQL installed");
    Some(url)
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn tls_config(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// A ureq agent that trusts `ca_pem` only and leaves statuses to the caller.
pub fn https_agent(ca_pem: &str) -> ureq::Agent {
    let cert = ureq::tls::Certificate::from_pem(ca_pem.as_bytes()).unwrap();
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::new_with_certs(&[cert]))
                .build(),
        )
        .build()
        .new_agent()
}

/// MQTT options for a device over TLS with the given credentials.
pub fn device_options(
    tls_addr: SocketAddr,
    ca_pem: &str,
    client_id: &str,
    username: &str,
    password: &str,
) -> MqttOptions {
    let mut opts = MqttOptions::new(client_id, "127.0.0.1", tls_addr.port());
    opts.set_credentials(username, password);
    opts.set_keep_alive(Duration::from_secs(5));
    opts.set_transport(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Rustls(tls_config(ca_pem)),
    ));
    opts
}

pub fn password(bootstrap: &Bootstrap) -> String {
    match &bootstrap.auth {
        BrokerAuth::Password { password, .. } => password.clone(),
        other => panic!("unexpected auth {other}"),
    }
}

/// Connects as the enrolled device.
pub async fn connect_device(
    tls_addr: SocketAddr,
    bootstrap: &Bootstrap,
) -> Result<(AsyncClient, EventLoop), String> {
    let id = bootstrap.device.as_str();
    connect(device_options(
        tls_addr,
        &bootstrap.ca_pem,
        id,
        id,
        &password(bootstrap),
    ))
    .await
}

/// Connects and waits for the CONNACK; a refusal is `Err` with its reason.
pub async fn connect(opts: MqttOptions) -> Result<(AsyncClient, EventLoop), String> {
    let (client, mut eventloop) = AsyncClient::new(opts, 16);
    let deadline = Instant::now() + TIMEOUT;
    loop {
        assert!(Instant::now() < deadline, "no CONNACK in time");
        match tokio::time::timeout(TIMEOUT, eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Incoming::ConnAck(ack)))) => {
                return if ack.code == ConnectReturnCode::Success {
                    Ok((client, eventloop))
                } else {
                    Err(format!("{:?}", ack.code))
                };
            }
            Ok(Ok(_)) => continue,
            Ok(Err(err)) => return Err(err.to_string()),
            Err(_) => return Err("timeout".into()),
        }
    }
}

/// Polls the event loop until `pick` returns something, or the loop fails (`Err`).
pub async fn next_matching<T>(
    eventloop: &mut EventLoop,
    mut pick: impl FnMut(&Incoming) -> Option<T>,
) -> Result<T, String> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, eventloop.poll()).await {
            Ok(Ok(Event::Incoming(incoming))) => {
                if let Some(found) = pick(&incoming) {
                    return Ok(found);
                }
            }
            Ok(Ok(Event::Outgoing(_))) => {}
            Ok(Err(err)) => return Err(err.to_string()),
            Err(_) => panic!("timed out waiting on the MQTT event loop"),
        }
    }
}

/// Polls `check` every 20 ms until it returns `Some`, or panics after the timeout.
pub async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The controller's API, as the CLI reaches it.
pub fn api(controller: &Controller) -> coracle_controller::cli::ApiClient {
    coracle_controller::cli::ApiClient::from_args(&coracle_controller::cli::ApiArgs {
        data_dir: controller.data_dir(),
        api: None,
        token: None,
        json: false,
    })
    .unwrap()
}

/// An image archive of the workspace's `testdata/images` (or `$CORACLE_FIXTURES`).
pub fn fixture(name: &str) -> PathBuf {
    let dir = std::env::var_os("CORACLE_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/images"));
    dir.join(name)
}

/// Pushes the busybox fixture as `repo_tag` with the admin token; its manifest digest.
pub fn push_fixture(controller: &Controller, repo_tag: &str) -> String {
    push_fixture_to(
        &controller.registry.to_string(),
        &controller.admin_token(),
        repo_tag,
    )
}

/// [`push_fixture`] to the registry at `registry` (`host:port`) with the admin token.
pub fn push_fixture_to(registry: &str, admin_token: &str, repo_tag: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let digest_file = dir.path().join("digest");
    let out = Command::new("skopeo")
        .args([
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            "--dest-creds",
            &format!("coracle:{}", admin_token.trim()),
            "--digestfile",
            &digest_file.to_string_lossy(),
            &format!("oci-archive:{}", fixture("busybox-oci.tar").display()),
            &format!("docker://{registry}/{repo_tag}"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(digest_file)
        .unwrap()
        .trim()
        .to_string()
}
