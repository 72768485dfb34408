//! Chunked uploads against the distribution-spec: chunks must arrive in order
//! (`Content-Range`), a chunk arriving after the upload was closed never reaches the stored
//! blob, and abandoned sessions are removed after `registry.upload_expiry_s`.

// Helpers outside #[test] functions unwrap too; a failure there is a test failure.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use support::registry_client::{digest_of, RegistryClient};
use support::{Controller, TIMEOUT};

/// Polls `check` every 20 ms until it holds, or panics after the timeout.
fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts an upload session; returns its path (`/v2/<repo>/blobs/uploads/<id>`).
fn start_upload(registry: &RegistryClient, repo: &str) -> String {
    let answer = registry.send("POST", &format!("/v2/{repo}/blobs/uploads/"), &[], b"");
    assert_eq!(answer.status, 202);
    answer.header("location").unwrap()
}

fn patch(registry: &RegistryClient, location: &str, start: usize, chunk: &[u8]) -> u16 {
    let range = format!("{start}-{}", start + chunk.len() - 1);
    let answer = registry.send(
        "PATCH",
        location,
        &[
            ("Content-Type", "application/octet-stream"),
            ("Content-Range", &range),
        ],
        chunk,
    );
    if answer.status == 202 {
        assert_eq!(
            answer.header("range"),
            Some(format!("0-{}", start + chunk.len() - 1))
        );
    }
    answer.status
}

fn session_file(controller: &Controller, location: &str) -> PathBuf {
    let id = location.rsplit('/').next().unwrap();
    controller.data_dir().join("uploads").join(id)
}

#[test]
fn out_of_order_and_repeated_chunks_answer_416_and_leave_the_upload_intact() {
    let controller = Controller::start();
    let registry = RegistryClient::new(&controller);
    let location = start_upload(&registry, "app");
    // The second chunk first: refused, nothing written.
    assert_eq!(patch(&registry, &location, 6, b"second"), 416);
    assert_eq!(patch(&registry, &location, 0, b"first "), 202);
    // The first chunk again (a client retrying): refused, not appended twice.
    let again = registry.send("PATCH", &location, &[("Content-Range", "0-5")], b"first ");
    assert_eq!(again.status, 416);
    assert_eq!(again.error_code(), "RANGE_INVALID");
    let status = registry.get(&location);
    assert_eq!(status.status, 204);
    assert_eq!(status.header("range").as_deref(), Some("0-5"));
    assert_eq!(patch(&registry, &location, 6, b"second"), 202);

    let whole = b"first second";
    let digest = digest_of(whole);
    let done = registry.send("PUT", &format!("{location}?digest={digest}"), &[], b"");
    assert_eq!(done.status, 201);
    assert_eq!(registry.get(&format!("/v2/app/blobs/{digest}")).body, whole);
}

#[test]
fn a_chunk_after_the_upload_closed_is_refused_and_the_blob_keeps_its_digest() {
    let controller = Controller::start();
    let registry = RegistryClient::new(&controller);
    let location = start_upload(&registry, "app");
    assert_eq!(patch(&registry, &location, 0, b"content"), 202);
    let digest = digest_of(b"content");
    let done = registry.send("PUT", &format!("{location}?digest={digest}"), &[], b"");
    assert_eq!(done.status, 201);
    let late = registry.send("PATCH", &location, &[("Content-Range", "7-10")], b"late");
    assert_eq!(late.status, 404);
    assert_eq!(late.error_code(), "BLOB_UPLOAD_UNKNOWN");
    assert_eq!(
        registry.get(&format!("/v2/app/blobs/{digest}")).body,
        b"content"
    );
}

#[test]
fn a_chunk_still_streaming_when_the_upload_closes_never_lands_in_the_blob() {
    let controller = Controller::start();
    let registry = RegistryClient::new(&controller);
    let location = start_upload(&registry, "app");
    assert_eq!(patch(&registry, &location, 0, b"verified"), 202);

    // A chunk of 10 bytes of which only 5 are sent yet: its request is being written.
    let mut slow = TcpStream::connect(controller.registry).unwrap();
    let head = format!(
        "PATCH {location} HTTP/1.1\r\nHost: registry\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: 10\r\nConnection: close\r\n\r\nlate-",
        controller.admin_token()
    );
    slow.write_all(head.as_bytes()).unwrap();
    let file = session_file(&controller, &location);
    wait_until("the first half of the chunk on disk", || {
        std::fs::metadata(&file).is_ok_and(|m| m.len() == 13)
    });

    // The upload is closed with the digest of exactly what is on disk at this moment: an
    // unlocked registry verifies it and renames the file into the store while the chunk's
    // writer still holds it open.
    let on_disk = b"verifiedlate-";
    let digest = digest_of(on_disk);
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let closing = {
        let registry = RegistryClient::new(&controller);
        let path = format!("{location}?digest={digest}");
        std::thread::spawn(move || {
            let answer = registry.send("PUT", &path, &[], b"");
            done_tx.send(()).unwrap();
            answer
        })
    };
    // Give an unlocked registry the chance to finish the upload before the chunk ends
    // (it would then write the rest into the stored blob); a locked one keeps waiting.
    let _ = done_rx.recv_timeout(Duration::from_millis(500));
    slow.write_all(b"chunk").unwrap();
    let mut reply = String::new();
    slow.read_to_string(&mut reply).unwrap();
    let closed = closing.join().unwrap();

    // Whatever the order, the store never holds bytes that differ from their digest.
    let blob = registry.get(&format!("/v2/app/blobs/{digest}"));
    if closed.status == 201 {
        assert_eq!(blob.body, on_disk, "the late chunk reached the stored blob");
    } else {
        assert_eq!(
            closed.status,
            400,
            "{}",
            String::from_utf8_lossy(&closed.body)
        );
        assert_eq!(closed.error_code(), "DIGEST_INVALID");
        assert_eq!(blob.status, 404);
    }
}

#[test]
fn abandoned_upload_sessions_expire() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "data_dir = {:?}\n[broker]\nlisten = \"127.0.0.1:0\"\ntls_listen = \"127.0.0.1:0\"\n[api]\nlisten = \"127.0.0.1:0\"\n[registry]\nlisten = \"127.0.0.1:0\"\nupload_expiry_s = 1\n",
        support::data_dir(dir.path())
    );
    let controller = Controller::start_with_config(dir, &text);
    let registry = RegistryClient::new(&controller);
    let kept = registry.push_blob("app", b"a finished blob");
    let location = start_upload(&registry, "app");
    assert_eq!(patch(&registry, &location, 0, b"half of a blob"), 202);
    let file = session_file(&controller, &location);
    assert!(file.exists());

    wait_until("the abandoned session removed", || !file.exists());
    let answer = registry.get(&location);
    assert_eq!(answer.status, 404);
    assert_eq!(answer.error_code(), "BLOB_UPLOAD_UNKNOWN");
    assert_eq!(registry.get(&format!("/v2/app/blobs/{kept}")).status, 200);
}
