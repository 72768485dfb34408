//! A disk that fills up while a layer is unpacked (root: the store lives on a small tmpfs).
//! The preflight only estimates; a layer that compresses well, or another writer on the
//! same disk, can still run the disk full half way. Then the error must say so, nothing of
//! the layer may stay behind, and what the store already held must be intact and usable.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::path::{Path, PathBuf};
use std::process::Command;

use coracle_images::digest::Digest;
use coracle_images::store::{Store, StoreConfig, StoreError};

/// A tmpfs of `size` mounted on a temp dir; unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "coracle-test"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "mount tmpfs");
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// A layer tar with one file of `len` bytes that do not compress.
fn layer(name: &str, len: usize) -> Vec<u8> {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ len as u64;
    let body: Vec<u8> = (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect();
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(len as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, name, &body[..]).unwrap();
    tar.into_inner().unwrap()
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    names
}

#[test]
#[ignore = "needs root"]
fn a_disk_that_fills_up_during_unpack_is_named_and_loses_nothing() {
    let disk = SmallDisk::mount("4m");
    let store = Store::open(
        disk.path(),
        StoreConfig {
            reserve_bytes: 0,
            ..StoreConfig::default()
        },
    )
    .unwrap();
    let small = layer("etc/app.conf", 100_000);
    let small_id = Digest::of(&small);
    store.add_layer(&small[..], &small_id).unwrap();
    let layers_dir = store.layer_path(&small_id).parent().unwrap().to_path_buf();
    let before = entries(&layers_dir);

    // 8 MB into a 4 MB disk.
    let big = layer("usr/lib/model.bin", 8 << 20);
    let big_id = Digest::of(&big);
    let err = store.add_layer(&big[..], &big_id).unwrap_err();
    let chain = {
        let mut text = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        text
    };
    assert!(
        matches!(err, StoreError::UnpackLayer { diff_id, .. } if diff_id == big_id),
        "{chain}"
    );
    assert!(chain.contains("No space left on device"), "{chain}");
    assert!(chain.contains("model.bin"), "names the file: {chain}");

    // Nothing of the big layer is left: no layer dir, no temp dir, no skeleton.
    assert!(!store.has_layer(&big_id));
    assert_eq!(
        entries(&layers_dir),
        before,
        "the failed unpack left files behind"
    );

    // What was stored is intact, and the store still takes layers that fit.
    assert!(store.has_layer(&small_id));
    let index = store.layer_index(&small_id).unwrap();
    assert_eq!(index.files.len(), 1, "{index:?}");
    let content = std::fs::read(store.layer_path(&small_id).join("etc/app.conf")).unwrap();
    assert_eq!(content.len(), 100_000);
    let next = layer("etc/other.conf", 50_000);
    store.add_layer(&next[..], &Digest::of(&next)).unwrap();
}
