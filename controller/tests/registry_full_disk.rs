//! The registry when the controller's disk fills up during a push (root: the data dir is a
//! small tmpfs). The client gets 507 with a message that says the disk is full, the upload
//! session keeps the length it had so the push can resume once there is room, the failed
//! chunk's space is given back, and the blobs already stored are untouched.

// Helpers outside #[test] functions unwrap too; a failure there is a test failure.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest as _, Sha256};
use support::Controller;

/// A tmpfs mounted on `dir`; unmounted (lazily: the controller may still hold files) and
/// `remove` deleted on drop.
struct Tmpfs {
    dir: PathBuf,
    remove: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str, remove: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "coracle-test"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(status.success(), "mount tmpfs on {}", dir.display());
        Self {
            dir: dir.to_path_buf(),
            remove: remove.to_path_buf(),
        }
    }

    fn free_bytes(&self) -> u64 {
        let out = Command::new("stat")
            .args(["-f", "-c", "%a %S"])
            .arg(&self.dir)
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let (blocks, size) = text.trim().split_once(' ').unwrap();
        blocks.parse::<u64>().unwrap() * size.parse::<u64>().unwrap()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        let _ = std::fs::remove_dir_all(&self.remove);
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent()
}

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

#[test]
#[ignore = "needs root"]
fn a_push_onto_a_full_disk_gets_507_and_can_resume_when_there_is_room() {
    let dir = tempfile::tempdir().unwrap();
    let top = dir.path().to_path_buf();
    let disk = Tmpfs::mount(&support::data_dir(&top), "8m", &top);
    let controller = Controller::start_in(dir);
    let base = format!("http://{}", controller.registry);
    let token = format!("Bearer {}", controller.admin_token());

    // A blob that fits, stored whole.
    let stored = vec![7u8; 10_000];
    let response = agent()
        .post(&format!(
            "{base}/v2/app/blobs/uploads/?digest={}",
            digest(&stored)
        ))
        .header("Authorization", &token)
        .send(&stored[..])
        .unwrap();
    assert_eq!(response.status(), 201);

    // A chunked push: the first chunk fits, the second (16 MB) does not.
    let started = agent()
        .post(&format!("{base}/v2/app/blobs/uploads/"))
        .header("Authorization", &token)
        .send_empty()
        .unwrap();
    let location = started.headers()["location"].to_str().unwrap().to_string();
    let upload = format!("{base}{location}");
    let patch = |chunk: &[u8]| {
        agent()
            .patch(&upload)
            .header("Authorization", &token)
            .send(chunk)
            .unwrap()
    };
    let first = vec![1u8; 1024];
    assert_eq!(patch(&first).status(), 202);
    let free_before = disk.free_bytes();
    let mut response = patch(&vec![2u8; 16 << 20]);
    assert_eq!(response.status(), 507);
    let body = response.body_mut().read_to_string().unwrap();
    assert!(
        body.contains("registry disk is full: write upload"),
        "{body}"
    );

    // The failed chunk is cut off: the session still has the first chunk only, and the
    // disk has its space back.
    let status = agent()
        .get(&upload)
        .header("Authorization", &token)
        .call()
        .unwrap();
    assert_eq!(status.status(), 204);
    assert_eq!(status.headers()["range"].to_str().unwrap(), "0-1023");
    let free_after = disk.free_bytes();
    assert!(
        free_after + (64 << 10) >= free_before,
        "the failed chunk still takes space: {free_before} free before, {free_after} after"
    );

    // The push resumes with a chunk that fits and completes.
    let rest = vec![3u8; 2048];
    assert_eq!(patch(&rest).status(), 202);
    let whole = [first, rest].concat();
    let done = agent()
        .put(&format!("{upload}?digest={}", digest(&whole)))
        .header("Authorization", &token)
        .send_empty()
        .unwrap();
    assert_eq!(done.status(), 201);

    // Both blobs read back whole.
    for blob in [&stored, &whole] {
        let mut got = agent()
            .get(&format!("{base}/v2/app/blobs/{}", digest(blob)))
            .header("Authorization", &token)
            .call()
            .unwrap();
        assert_eq!(got.status(), 200);
        assert!(got.body_mut().read_to_vec().unwrap() == *blob);
    }
    drop(controller);
}
