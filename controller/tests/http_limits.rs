//! The API and the registry under half-open, idle, too many and slow clients (issue 17):
//! a request head that never completes is closed after the header timeout; at the
//! connection cap a new connection is answered 503 and normal requests work again once the
//! idle ones are gone; an upload body that stops is failed while a slow one that keeps
//! moving is not; out of file descriptors the API refuses and recovers, saying so once.
//! The same over HTTPS (`tls = true`): a handshake that never starts is closed after the
//! header timeout, a half request head after the handshake too, the cap answers 503 over
//! TLS, and out of descriptors an HTTPS listener refuses and recovers.

// Helpers outside #[test] functions unwrap too; a failure there is a test failure.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{Controller, TIMEOUT};

/// How a test client speaks to a listener.
#[derive(Clone)]
enum Scheme {
    Http,
    /// TLS trusting this CA (the controller's).
    Https(Arc<rustls::ClientConfig>),
}

impl Scheme {
    fn https(controller: &Controller) -> Self {
        Self::Https(support::tls_config(&controller.ca_pem()))
    }

    /// A connection to `addr` (TLS handshake done), or `None` if the server closed or
    /// refused it before that. Reads time out after `TIMEOUT`.
    fn connect(&self, addr: SocketAddr) -> Option<Box<dyn ReadWrite>> {
        let mut tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(TIMEOUT)).unwrap();
        match self {
            Self::Http => Some(Box::new(tcp)),
            Self::Https(config) => {
                let name = rustls::pki_types::ServerName::from(addr.ip());
                let mut conn = rustls::ClientConnection::new(config.clone(), name).unwrap();
                while conn.is_handshaking() {
                    match conn.complete_io(&mut tcp) {
                        Ok(_) => {}
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                            ) =>
                        {
                            panic!("the server left a TLS handshake hanging for {TIMEOUT:?}")
                        }
                        Err(_) => return None,
                    }
                }
                Some(Box::new(rustls::StreamOwned::new(conn, tcp)))
            }
        }
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

fn start(api: &str, registry: &str) -> Controller {
    let dir = tempfile::tempdir().unwrap();
    let text = Controller::config_text(dir.path(), "", api, registry);
    Controller::start_with_config(dir, &text)
}

/// Reads until the server closes; the bytes it sent. Panics if it keeps the socket open
/// for `TIMEOUT`.
fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    read_all(stream)
}

/// Reads until the server closes (EOF, reset, or a TLS error); panics on a read timeout
/// (set on the socket).
fn read_all(stream: &mut dyn Read) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!("the server kept the connection open for {TIMEOUT:?}")
            }
            // A reset also closes it.
            Err(_) => return got,
        }
    }
}

/// `GET path` on a fresh connection; the status line, or `None` if the server closed
/// without answering.
fn get_status(addr: SocketAddr, path: &str) -> Option<String> {
    get_status_over(&Scheme::Http, addr, path)
}

fn get_status_over(scheme: &Scheme, addr: SocketAddr, path: &str) -> Option<String> {
    let mut stream = scheme.connect(addr)?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return None;
    }
    let answer = read_all(&mut stream);
    let text = String::from_utf8_lossy(&answer);
    text.lines()
        .next()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
}

/// Retries `GET path` until it answers 200; panics after `TIMEOUT`.
fn eventually_ok(addr: SocketAddr, path: &str) {
    eventually_ok_over(&Scheme::Http, addr, path);
}

fn eventually_ok_over(scheme: &Scheme, addr: SocketAddr, path: &str) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let status = get_status_over(scheme, addr, path);
        if status.as_deref().is_some_and(|s| s.contains(" 200 ")) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no 200 from {path} in time: last {status:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_request_head_that_never_completes_is_closed_after_the_header_timeout() {
    let controller = start("header_timeout_s = 1", "header_timeout_s = 1");
    for addr in [controller.api, controller.registry] {
        let mut half = TcpStream::connect(addr).unwrap();
        half.write_all(b"GET /metrics HTTP/1.1\r\nHost: te")
            .unwrap();
        let answer = read_until_closed(&mut half);
        let text = String::from_utf8_lossy(&answer);
        assert!(
            !text.contains(" 200 "),
            "a half request was answered: {text}"
        );
    }
    // A keep-alive connection idle after its request is closed the same way.
    let mut idle = TcpStream::connect(controller.api).unwrap();
    idle.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
        .unwrap();
    let answer = read_until_closed(&mut idle);
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200 "));
}

#[test]
fn at_the_connection_cap_new_connections_get_503_and_service_returns_when_idle_ones_go() {
    let controller = start(
        "max_connections = 4\nmax_connections_per_ip = 4\nheader_timeout_s = 2",
        "",
    );
    let idle: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(controller.api).unwrap())
        .collect();
    // Accepted after the four (the backlog is in order): over the cap.
    let status = get_status(controller.api, "/metrics");
    assert!(
        status
            .as_deref()
            .is_some_and(|s| s.starts_with("HTTP/1.1 503 ")),
        "over the cap: {status:?}"
    );
    // The idle ones are closed by the header timeout; then requests are served again.
    eventually_ok(controller.api, "/metrics");
    drop(idle);
}

#[test]
fn a_stalled_upload_body_fails_and_a_slow_moving_one_completes() {
    let controller = start("", "body_stall_s = 1");
    let token = controller.admin_token();
    let start_upload = || {
        let mut stream = TcpStream::connect(controller.registry).unwrap();
        let request = format!(
            "POST /v2/app/blobs/uploads/ HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {token}\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).unwrap();
        let answer = String::from_utf8(read_until_closed(&mut stream)).unwrap();
        assert!(answer.starts_with("HTTP/1.1 202 "), "{answer}");
        answer
            .lines()
            .find_map(|l| l.strip_prefix("location: "))
            .unwrap()
            .trim()
            .to_string()
    };
    let patch_head = |location: &str, length: usize| {
        format!(
            "PATCH {location} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/octet-stream\r\nContent-Length: {length}\r\n\
             Connection: close\r\n\r\n"
        )
    };

    // 10 of 1000 announced bytes, then nothing: the request fails, the socket is closed.
    let location = start_upload();
    let mut stalled = TcpStream::connect(controller.registry).unwrap();
    stalled
        .write_all(patch_head(&location, 1000).as_bytes())
        .unwrap();
    stalled.write_all(&[1u8; 10]).unwrap();
    let answer = String::from_utf8_lossy(&read_until_closed(&mut stalled)).to_string();
    assert!(
        !answer.contains(" 202 "),
        "a stalled body was accepted: {answer}"
    );

    // Eight chunks 400 ms apart: 3.2 s in all, more than the 1 s stall time.
    let location = start_upload();
    let mut slow = TcpStream::connect(controller.registry).unwrap();
    slow.write_all(patch_head(&location, 8 * 100).as_bytes())
        .unwrap();
    for _ in 0..8 {
        std::thread::sleep(Duration::from_millis(400));
        slow.write_all(&[2u8; 100]).unwrap();
    }
    let answer = String::from_utf8_lossy(&read_until_closed(&mut slow)).to_string();
    assert!(answer.starts_with("HTTP/1.1 202 "), "slow upload: {answer}");
    assert!(answer.contains("range: 0-799"), "{answer}");
}

/// Lines of `log` that contain `needle`.
fn count_lines(log: &std::path::Path, needle: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

#[test]
fn out_of_file_descriptors_the_api_refuses_recovers_and_logs_it_once() {
    out_of_file_descriptors(false);
}

#[test]
fn out_of_file_descriptors_an_https_api_refuses_recovers_and_logs_it_once() {
    out_of_file_descriptors(true);
}

fn out_of_file_descriptors(tls: bool) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr.log");
    // Caps above the descriptor limit, so it is the limit that is hit.
    let api = format!(
        "max_connections = 1000\nmax_connections_per_ip = 1000\nheader_timeout_s = 3\ntls = {tls}"
    );
    let text = Controller::config_text(dir.path(), "", &api, "");
    let mut command = Command::new("prlimit");
    command
        .arg("--nofile=160:160")
        .arg(env!("CARGO_BIN_EXE_coracle"))
        .env("RUST_LOG", "info")
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()));
    let controller = Controller::start_with_command(dir, &text, command);
    let scheme = if tls {
        Scheme::https(&controller)
    } else {
        Scheme::Http
    };
    eventually_ok_over(&scheme, controller.api, "/metrics");

    // 300 half-open connections: more than the controller has descriptors. (Over TLS they
    // never start their handshake.)
    let half_open: Vec<TcpStream> = (0..300)
        .map(|_| {
            let mut stream = TcpStream::connect(controller.api).unwrap();
            if !tls {
                let _ = stream.write_all(b"GET /metrics HTTP/1.1\r\n");
            }
            stream
        })
        .collect();
    // A request now is refused (503, or closed unanswered), not left hanging.
    let status = get_status_over(&scheme, controller.api, "/metrics");
    assert!(
        status
            .as_deref()
            .is_none_or(|s| s.starts_with("HTTP/1.1 503 ")),
        "out of descriptors: {status:?}"
    );

    // The half-open ones hit the header (or handshake) timeout; the API serves again.
    eventually_ok_over(&scheme, controller.api, "/metrics");
    drop(half_open);
    let failures = count_lines(&log, "cannot accept connections");
    eprintln!("accept failure lines logged: {failures}");
    assert!(
        (1..=2).contains(&failures),
        "{failures} accept failure lines"
    );
    assert!(count_lines(&log, "Too many open files") <= 2, "log storm");
    assert!(count_lines(&log, "accepting connections again") >= 1);
}

#[test]
fn over_tls_a_handshake_or_request_head_that_never_completes_is_closed_after_the_timeout() {
    let controller = start(
        "tls = true\nheader_timeout_s = 1",
        "tls = true\nheader_timeout_s = 1",
    );
    let https = Scheme::https(&controller);
    for addr in [controller.api, controller.registry] {
        // Connects and never says a word: no ClientHello.
        let started = Instant::now();
        let mut silent = TcpStream::connect(addr).unwrap();
        let answer = read_until_closed(&mut silent);
        assert!(answer.is_empty(), "{addr}: {answer:?}");
        eprintln!(
            "{addr}: a silent client closed after {:?}",
            started.elapsed()
        );

        // Completes the handshake, then sends half a request head.
        let mut half = https.connect(addr).expect("handshake");
        half.write_all(b"GET /metrics HTTP/1.1\r\nHost: te")
            .unwrap();
        let answer = read_all(&mut half);
        let text = String::from_utf8_lossy(&answer);
        assert!(
            !text.contains(" 200 "),
            "a half request was answered: {text}"
        );
    }
    // A whole request over TLS is served.
    let status = get_status_over(&https, controller.api, "/metrics");
    assert!(
        status.as_deref().is_some_and(|s| s.contains(" 200 ")),
        "{status:?}"
    );
}

#[test]
fn over_tls_at_the_connection_cap_new_connections_get_503_and_service_returns() {
    let controller = start(
        "tls = true\nmax_connections = 4\nmax_connections_per_ip = 4\nheader_timeout_s = 2",
        "",
    );
    let https = Scheme::https(&controller);
    let idle: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(controller.api).unwrap())
        .collect();
    // Over the cap: the handshake completes and the answer is a 503 over TLS.
    let status = get_status_over(&https, controller.api, "/metrics");
    assert!(
        status
            .as_deref()
            .is_some_and(|s| s.starts_with("HTTP/1.1 503 ")),
        "over the cap: {status:?}"
    );
    // The idle ones are closed by the handshake timeout; then requests are served again.
    eventually_ok_over(&https, controller.api, "/metrics");
    drop(idle);
}

#[test]
fn repeated_wrong_dashboard_logins_from_one_address_get_429() {
    let controller = start("", "");
    let login = |token: &str| {
        let body = format!("{{\"token\":\"{token}\"}}");
        let mut stream = TcpStream::connect(controller.api).unwrap();
        let request = format!(
            "POST /dashboard/login HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).unwrap();
        let answer = String::from_utf8(read_until_closed(&mut stream)).unwrap();
        answer.lines().next().unwrap_or_default().to_string()
    };
    for _ in 0..5 {
        assert!(login("wrong").starts_with("HTTP/1.1 401 "));
    }
    // Locked out for the minute, even with the right token.
    let status = login(controller.admin_token().trim());
    assert!(status.starts_with("HTTP/1.1 429 "), "{status}");
}
