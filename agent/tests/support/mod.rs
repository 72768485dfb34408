//! Test support: a throwaway PKI (rcgen), a real Mosquitto broker on a free loopback port
//! with TLS, and a "controller" MQTT client that records what devices publish.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coracle_proto::{Bootstrap, BrokerAuth, SigningKey};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use tokio::sync::mpsc;

pub mod fake_engine;

/// A CA plus the broker's certificate.
pub struct Pki {
    pub ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
    pub server_cert: String,
    pub server_key: String,
}

impl Pki {
    pub fn new() -> Self {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "coracle test ca");
        let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
        let issuer = Issuer::new(ca, ca_key);
        let server_key = KeyPair::generate().unwrap();
        let mut server = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        server
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        server.distinguished_name.push(DnType::CommonName, "broker");
        let server_cert = server.signed_by(&server_key, &issuer).unwrap().pem();
        Self {
            ca_pem,
            issuer,
            server_cert,
            server_key: server_key.serialize_pem(),
        }
    }

    /// A client certificate whose CN (the MQTT username at the broker) is `cn`.
    pub fn client(&self, cn: &str) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.signed_by(&key, &self.issuer).unwrap().pem();
        (cert, key.serialize_pem())
    }
}

/// A free loopback port (bound then released; Mosquitto cannot take a listening fd).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A Mosquitto broker with a mutual-TLS listener and a TLS + password listener.
pub struct Mosquitto {
    pub dir: tempfile::TempDir,
    pub mtls_port: u16,
    pub password_port: u16,
    child: Option<Child>,
}

impl Mosquitto {
    pub fn start(pki: &Pki) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let ca = write("ca.pem", &pki.ca_pem);
        let cert = write("server.pem", &pki.server_cert);
        let key = write("server.key", &pki.server_key);
        let passwords = dir.path().join("passwords");
        let status = Command::new("mosquitto_passwd")
            .args(["-b", "-c"])
            .arg(&passwords)
            .args(["pw-device", "s3cret"])
            .status()
            .expect("mosquitto_passwd runs (apt-get install mosquitto)");
        assert!(status.success());
        let (mtls_port, password_port) = (free_port(), free_port());
        let tls = format!(
            "cafile {}\ncertfile {}\nkeyfile {}\n",
            ca.display(),
            cert.display(),
            key.display()
        );
        write(
            "mosquitto.conf",
            &format!(
                "per_listener_settings true\nuser root\npersistence false\nlog_dest stderr\n\
                 listener {mtls_port} 127.0.0.1\n{tls}require_certificate true\n\
                 use_identity_as_username true\nallow_anonymous false\n\
                 listener {password_port} 127.0.0.1\n{tls}password_file {}\nallow_anonymous false\n",
                passwords.display()
            ),
        );
        let mut broker = Self {
            dir,
            mtls_port,
            password_port,
            child: None,
        };
        broker.restart();
        broker
    }

    /// (Re)starts the broker on the same ports and waits until both accept connections.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "broker already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("mosquitto.log"))
            .unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("mosquitto runs (apt-get install mosquitto)");
        self.child = Some(child);
        for port in [self.mtls_port, self.password_port] {
            wait_until(Duration::from_secs(10), || {
                TcpStream::connect(("127.0.0.1", port)).is_ok()
            });
        }
    }

    /// Kills the broker (SIGKILL: no goodbye to clients) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `ready` until it holds or `timeout` passes (then panics).
pub fn wait_until(timeout: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ready() {
        assert!(
            Instant::now() < deadline,
            "condition not met within {timeout:?}"
        );
        std::thread::yield_now();
    }
}

/// A bootstrap for `device` with mutual TLS against `broker`.
pub fn bootstrap_mtls(pki: &Pki, broker: &Mosquitto, device: &str, key: &SigningKey) -> Bootstrap {
    let (cert_pem, key_pem) = pki.client(device);
    Bootstrap {
        device: device.parse().unwrap(),
        broker_url: format!("mqtts://127.0.0.1:{}", broker.mtls_port),
        ca_pem: pki.ca_pem.clone(),
        auth: BrokerAuth::ClientCert { cert_pem, key_pem },
        deployment_key: coracle_proto::bootstrap::deployment_key_hex(&key.verifying_key()),
        registry_url: "https://127.0.0.1:1".into(),
        registry_token: None,
    }
}

/// A received publish.
#[derive(Debug, Clone)]
pub struct Received {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

/// The test's stand-in for the controller: publishes and records what it receives.
pub struct Controller {
    pub client: AsyncClient,
    pub received: mpsc::UnboundedReceiver<Received>,
    backlog: std::collections::VecDeque<Received>,
    task: tokio::task::JoinHandle<()>,
}

impl Controller {
    /// Connects with a client certificate (CN "controller"), subscribes to `filters` and
    /// returns once the first filter demonstrably delivers.
    pub async fn connect(pki: &Pki, port: u16, filters: &[&str]) -> Self {
        let mut controller = Self::start(pki, port, filters);
        controller
            .wait_subscribed(&filters[0].replace('+', "probe"))
            .await;
        controller
    }

    fn start(pki: &Pki, port: u16, filters: &[&str]) -> Self {
        let (cert, key) = pki.client("controller");
        let mut options =
            MqttOptions::new(format!("controller-{}", free_port()), "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(30));
        options.set_max_packet_size(1 << 20, 1 << 20);
        let tls = TlsConfiguration::Rustls(Arc::new(client_tls(&pki.ca_pem, &cert, &key)));
        options.set_transport(Transport::tls_with_config(tls));
        let (client, mut eventloop) = AsyncClient::new(options, 4096);
        let (tx, received) = mpsc::unbounded_channel();
        let filters: Vec<String> = filters.iter().map(|f| f.to_string()).collect();
        let sub = client.clone();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        for f in &filters {
                            sub.subscribe(f.clone(), QoS::AtLeastOnce).await.unwrap();
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = tx.send(Received {
                            topic: p.topic.clone(),
                            payload: p.payload.to_vec(),
                            retain: p.retain,
                        });
                    }
                    Ok(_) => {}
                    // The broker was killed on purpose; retry at a gentle pace.
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        Self {
            client,
            received,
            backlog: Default::default(),
            task,
        }
    }

    /// The next publish on a topic ending in `suffix`; others are kept for later calls.
    pub async fn next_on(&mut self, suffix: &str) -> Received {
        if let Some(i) = self.backlog.iter().position(|r| r.topic.ends_with(suffix)) {
            return self.backlog.remove(i).unwrap();
        }
        let backlog = &mut self.backlog;
        let received = &mut self.received;
        tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let r = received.recv().await.expect("controller task alive");
                if r.topic.ends_with(suffix) {
                    return r;
                }
                backlog.push_back(r);
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no publish on *{suffix} within 20 s"))
    }

    /// Publishes probes on `topic` (which the controller's filters match) until one comes
    /// back: the controller is connected and subscribed.
    pub async fn wait_subscribed(&mut self, topic: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            assert!(
                Instant::now() < deadline,
                "controller not subscribed within 20 s"
            );
            let _ = self
                .client
                .try_publish(topic, QoS::AtMostOnce, false, b"probe".to_vec());
            let wait = tokio::time::timeout(Duration::from_millis(200), async {
                loop {
                    match self.received.recv().await {
                        Some(r) if r.topic == topic => return,
                        Some(_) => {}
                        None => panic!("controller task ended"),
                    }
                }
            });
            if wait.await.is_ok() {
                return;
            }
        }
    }

    pub async fn publish(&self, topic: String, retain: bool, payload: Vec<u8>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload)
            .await
            .unwrap();
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn client_tls(ca: &str, cert: &str, key: &str) -> rustls::ClientConfig {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            CertificateDer::pem_slice_iter(cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap(),
            PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
        )
        .unwrap()
}

pub fn temp_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}
