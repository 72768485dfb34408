//! `coracle serve --broker` with Debian's Mosquitto configured by
//! `coracle broker mosquitto-config`: the controller connects with its own account, a device
//! with its credentials has its reports ingested, and a rogue device can neither read nor
//! write another device's topics.

// Helpers outside #[test] functions unwrap too; a failure there is a test failure.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use coracle_controller::api::devices::DeviceDetail;
use coracle_proto::bootstrap::Bootstrap;
use coracle_proto::{encode, ReportedState, TopicKind};
use coracle_tests::mosquitto::Mosquitto;
use rumqttc::{Incoming, MqttOptions, QoS, SubscribeReasonCode};
use support::mosquitto::{add_account, coracle, mosquitto_config, start_mosquitto};
use support::{connect, eventually, next_matching, password};

/// `coracle serve` on an external broker; killed on drop.
struct Serve {
    child: Child,
    api: SocketAddr,
    data: std::path::PathBuf,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `coracle serve --config` for the data dir `dir/data` on the external broker `url`.
fn serve_command(dir: &Path, url: &str) -> Command {
    let config = dir.join("coracle.toml");
    let text = format!(
        "data_dir = {:?}\n[broker]\nexternal_url = \"{url}\"\n[api]\nlisten = \"127.0.0.1:0\"\n[registry]\nlisten = \"127.0.0.1:0\"\n",
        dir.join("data")
    );
    std::fs::write(&config, text).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_coracle"));
    command
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn");
    command
}

fn serve(dir: &Path, broker_port: u16) -> Serve {
    serve_url(dir, &format!("mqtt://127.0.0.1:{broker_port}"))
}

fn serve_url(dir: &Path, url: &str) -> Serve {
    let mut child = serve_command(dir, url)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut api, mut registry) = (None, None);
    while api.is_none() || registry.is_none() {
        let line = lines.next().expect("coracle serve exited").unwrap();
        let addr = |l: &str| l.rsplit(' ').next().unwrap().parse::<SocketAddr>().unwrap();
        if line.starts_with("api listening on ") {
            api = Some(addr(&line));
        } else if line.starts_with("registry listening on ") {
            registry = Some(addr(&line));
        }
    }
    std::thread::spawn(move || for _ in lines {});
    Serve {
        child,
        api: api.unwrap(),
        data: dir.join("data"),
    }
}

fn enrol(data: &Path, name: &str) -> Bootstrap {
    let out = data.parent().unwrap().join(format!("{name}.toml"));
    let result = coracle(
        data,
        &["device", "add", name, "--out", out.to_str().unwrap()],
    );
    assert!(result.status.success(), "{result:?}");
    toml::from_str(&std::fs::read_to_string(out).unwrap()).unwrap()
}

fn options(port: u16, user: &str, password: &str) -> MqttOptions {
    let mut opts = MqttOptions::new(user, "127.0.0.1", port);
    opts.set_credentials(user, password);
    opts.set_keep_alive(Duration::from_secs(5));
    opts
}

async fn suback(
    client: &rumqttc::AsyncClient,
    el: &mut rumqttc::EventLoop,
    topic: &str,
) -> SubscribeReasonCode {
    client.subscribe(topic, QoS::AtLeastOnce).await.unwrap();
    next_matching(el, |i| match i {
        Incoming::SubAck(ack) => Some(ack.return_codes[0]),
        _ => None,
    })
    .await
    .unwrap()
}

/// `device` publishes a one-service report on the broker's plain listener; returns what the
/// controller's API then holds for it.
async fn report_stored(broker: &Mosquitto, device: &Bootstrap, controller: &Serve) -> DeviceDetail {
    let id = device.device.clone();
    let (client, mut el) = connect(options(broker.port, id.as_str(), &password(device)))
        .await
        .unwrap();
    let mut state = coracle_proto::samples::reported_state(1);
    state.device = id.clone();
    client
        .publish(
            TopicKind::Reported.for_device(&id),
            QoS::AtLeastOnce,
            true,
            encode::<ReportedState>(&state),
        )
        .await
        .unwrap();
    let driver = tokio::spawn(async move { while el.poll().await.is_ok() {} });
    let token = std::fs::read_to_string(controller.data.join("admin.token")).unwrap();
    let url = format!("http://{}/api/v1/devices/{}", controller.api, id.as_str());
    let stored = eventually(&format!("{id}'s report stored via Mosquitto"), || {
        let mut response = ureq::get(&url)
            .header("Authorization", &format!("Bearer {token}"))
            .call()
            .ok()?;
        let detail: DeviceDetail = response.body_mut().read_json().ok()?;
        detail.reported.is_some().then_some(detail)
    })
    .await;
    driver.abort();
    stored
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_on_mosquitto_ingests_reports_and_isolates_devices() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mq = dir.path().join("mosquitto");
    mosquitto_config(&data, &mq, &[]);
    let acl = std::fs::read_to_string(mq.join("acl")).unwrap();
    assert!(acl.contains("pattern readwrite coracle/v1/%u/#"), "{acl}");
    assert!(mq.join("mosquitto.conf").is_file());
    let broker = start_mosquitto(&mq, None);
    let controller = serve(dir.path(), broker.port);
    let a = enrol_on_mosquitto(&data, &mq, &broker, "pi-a");
    let b = enrol_on_mosquitto(&data, &mq, &broker, "pi-b");

    // The rogue device B asks for A's topics: Mosquitto grants the subscription but the ACL
    // delivers nothing; its publish on A's topic is dropped. Its own topics work.
    let (rogue, mut rogue_el) = connect(options(broker.port, b.device.as_str(), &password(&b)))
        .await
        .unwrap();
    let a_reported = TopicKind::Reported.for_device(&a.device);
    let _ = suback(&rogue, &mut rogue_el, &a_reported).await;
    let own = TopicKind::Desired.for_device(&b.device);
    assert!(matches!(
        suback(&rogue, &mut rogue_el, &own).await,
        SubscribeReasonCode::Success(_)
    ));
    let mut forged = coracle_proto::samples::reported_state(3);
    forged.device = a.device.clone();
    rogue
        .publish(
            &a_reported,
            QoS::AtLeastOnce,
            true,
            encode::<ReportedState>(&forged),
        )
        .await
        .unwrap();
    let a_topics = format!("coracle/v1/{}/", a.device.as_str());
    let rogue_saw = tokio::spawn(async move {
        // A negative check needs a bound: A's traffic below arrives well within it.
        let wait = next_matching(&mut rogue_el, |i| match i {
            Incoming::Publish(p) if p.topic.starts_with(&a_topics) => Some(()),
            _ => None,
        });
        tokio::time::timeout(Duration::from_secs(3), wait).await
    });

    // Device A publishes its report; the controller, through Mosquitto, stores it.
    let (a_id, b_id) = (a.device.clone(), b.device.clone());
    let stored = report_stored(&broker, &a, &controller).await;
    let reported = stored.reported.unwrap();
    assert_eq!(reported.device, a_id);
    assert_eq!(
        reported.services.len(),
        1,
        "B's forged report (3 services) was stored"
    );

    // Nothing of A's reached B, and B's forged report was never stored as A's.
    assert!(
        rogue_saw.await.unwrap().is_err(),
        "rogue {b_id} read A's topic"
    );
}

/// Enrols `device` and gives it a Mosquitto account in `mq` (reloaded by SIGHUP).
fn enrol_on_mosquitto(data: &Path, mq: &Path, broker: &Mosquitto, name: &str) -> Bootstrap {
    let device = enrol(data, name);
    add_account(mq, broker, &device);
    device
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_reaches_mosquitto_over_tls_and_refuses_a_broker_of_another_ca() {
    // Mosquitto's TLS listener as `mosquitto-config` sets it up: a broker certificate of
    // this controller's CA. The controller dials that listener, not a plain loopback one.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mq = dir.path().join("mosquitto");
    let tls_port = coracle_tests::mosquitto::free_port().unwrap();
    mosquitto_config(&data, &mq, &["--tls-port", &tls_port.to_string()]);
    let broker = start_mosquitto(&mq, Some(tls_port));
    let tls_url = format!("mqtts://127.0.0.1:{tls_port}");
    let controller = serve_url(dir.path(), &tls_url);

    // A device's report (sent on the plain listener) reaches the controller over TLS.
    let device = enrol_on_mosquitto(&data, &mq, &broker, "pi-tls");
    let stored = report_stored(&broker, &device, &controller).await;
    assert_eq!(stored.reported.unwrap().device, device.device);

    // Another controller (its own CA) does not trust this broker: it stops at start and
    // says which broker and why, instead of sending its password to an unknown server.
    let other = tempfile::tempdir().unwrap();
    let mut child = serve_command(other.path(), &tls_url)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "serve trusted a broker of another CA");
    assert!(
        stderr.contains(&format!("cannot connect to the MQTT broker at {tls_url}")),
        "{stderr}"
    );
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");
}
