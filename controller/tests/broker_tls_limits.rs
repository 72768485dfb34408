//! The embedded broker's TLS listener under idle, slow and too many clients (issue 17):
//! idle sockets and a stalled ClientHello do not hold up a device's handshake and are
//! closed after the handshake timeout; the per-address and total caps close connections
//! over them at once, and accepts resume when connections go away. Real `coracle serve`,
//! real MQTT device (rumqttc over TLS), loopback only.

// Helpers outside #[test] functions unwrap too; a failure there is a test failure.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use support::{connect_device, Controller, TIMEOUT};

fn start(broker: &str) -> Controller {
    let dir = tempfile::tempdir().unwrap();
    let text = Controller::config_text(dir.path(), broker, "", "");
    Controller::start_with_config(dir, &text)
}

/// A TCP connection to `to` from the loopback address `from` (127.0.0.x).
async fn connect_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((from, 0))).unwrap();
    socket.connect(to).await.unwrap()
}

/// Waits until the server closes `stream` (EOF or reset); panics after `TIMEOUT`.
async fn closed_by_server(stream: &mut TcpStream) {
    let mut buf = [0u8; 256];
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => continue,
            Err(_) => panic!("the server kept an idle connection open for {TIMEOUT:?}"),
        }
    }
}

/// Whether the server has left `stream` open (nothing to read, no EOF) right now.
fn still_open(stream: &TcpStream) -> bool {
    let mut buf = [0u8; 16];
    matches!(stream.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_on_the_tls_port_do_not_hold_up_a_device_and_are_closed() {
    let controller = start("handshake_timeout_s = 1");
    let boot = controller.enrol("pi-idle");

    // Twenty sockets that connect and never say a word, ahead of the device in the backlog.
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(TcpStream::connect(controller.broker_tls).await.unwrap());
    }
    let started = Instant::now();
    let (_client, _eventloop) = connect_device(controller.broker_tls, &boot)
        .await
        .expect("the device connects while idle sockets are open");
    eprintln!(
        "device connected in {:?} with 20 idle sockets open",
        started.elapsed()
    );

    // The server closes each of them once the handshake timeout passed.
    for socket in &mut idle {
        closed_by_server(socket).await;
    }
    eprintln!(
        "20 idle sockets closed by the server after {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_hello_does_not_hold_up_a_device() {
    let controller = start("handshake_timeout_s = 1");
    let boot = controller.enrol("pi-slow");

    // A TLS record header announcing a 512-byte ClientHello, and five bytes of it.
    let mut slow = TcpStream::connect(controller.broker_tls).await.unwrap();
    slow.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03])
        .await
        .unwrap();
    let (_client, _eventloop) = connect_device(controller.broker_tls, &boot)
        .await
        .expect("the device connects while a handshake is stalled");
    closed_by_server(&mut slow).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_caps_are_closed_and_accepts_resume_when_they_go() {
    // A handshake timeout far longer than the test: only the caps close connections here.
    let controller =
        start("handshake_timeout_s = 60\nmax_connections = 3\nmax_connections_per_ip = 2");
    let boot = controller.enrol("pi-cap");
    let tls = controller.broker_tls;

    // Two from 127.0.0.1 fill its per-address cap: a third from it is closed.
    let mut held = vec![
        connect_from([127, 0, 0, 1], tls).await,
        connect_from([127, 0, 0, 1], tls).await,
    ];
    let mut over_ip = connect_from([127, 0, 0, 1], tls).await;
    closed_by_server(&mut over_ip).await;
    assert!(
        held.iter().all(still_open),
        "admitted connections stay open"
    );

    // Another address still gets in, up to the total cap of 3; a fourth is closed.
    held.push(connect_from([127, 0, 0, 2], tls).await);
    let mut over_total = connect_from([127, 0, 0, 3], tls).await;
    closed_by_server(&mut over_total).await;
    assert!(
        held.iter().all(still_open),
        "admitted connections stay open"
    );

    // The held connections go away; the device gets in once the server noticed.
    drop(held);
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match connect_device(tls, &boot).await {
            Ok(_) => break,
            Err(err) => {
                assert!(
                    Instant::now() < deadline,
                    "no accept after the caps cleared: {err}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_completes_tls_but_never_sends_connect_is_closed() {
    // mqtt5 closes a client without CONNECT after its fixed 10 s; the relay must follow.
    let controller = start("");
    let boot = controller.enrol("pi-mute");
    let connector = tokio_rustls::TlsConnector::from(support::tls_config(&boot.ca_pem));
    let tcp = TcpStream::connect(controller.broker_tls).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut mute = connector.connect(name, tcp).await.unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(TIMEOUT, mute.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "a client that never sent CONNECT was kept: {read:?}"
    );
}
