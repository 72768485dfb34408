//! Import, store, GC, preflight and resume against the real podman/skopeo fixtures in
//! testdata/images (see its README for the expected trees).

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::path::{Path, PathBuf};

use coracle_images::digest::Digest;
use coracle_images::import::{open_archive, ImportError};
use coracle_images::oci::Platform;
use coracle_images::store::{RangeReply, ResumeAction, Store, StoreConfig, StoreError};
use coracle_images::unpack::{is_opaque, OverlayXattrs};

const BUSYBOX_SIZE: u64 = 1_982_256;

/// An image archive of the workspace's `testdata/images` (or `$CORACLE_FIXTURES`).
fn fixture(name: &str) -> PathBuf {
    let dir = std::env::var_os("CORACLE_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/images"));
    dir.join(name)
}

fn amd64() -> Platform {
    Platform::parse("linux/amd64").unwrap()
}

fn store(dir: &Path) -> Store {
    Store::open(
        dir,
        StoreConfig {
            reserve_bytes: 0,
            ..StoreConfig::default()
        },
    )
    .unwrap()
}

#[test]
fn import_oci_archive_unpacks_busybox() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let source = open_archive(
        &fixture("busybox-oci.tar"),
        &dir.path().join("tmp"),
        &amd64(),
    )
    .unwrap();
    assert!(source
        .manifest_digest
        .to_string()
        .starts_with("sha256:0b006957"));
    // The manifest's own bytes, not a re-serialisation: they hash to the index's digest.
    assert_eq!(
        coracle_images::Digest::of(&source.manifest_bytes),
        source.manifest_digest
    );
    assert_eq!(
        source.manifest_media_type,
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        source.config.config.cmd.as_deref(),
        Some(&["/bin/true".to_owned()][..])
    );
    let record = store.import(&source).unwrap();
    let layer = store.layer_path(&record.layers[0]);
    assert_eq!(
        std::fs::metadata(layer.join("bin/busybox")).unwrap().len(),
        BUSYBOX_SIZE
    );
    assert_eq!(
        std::fs::read_link(layer.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    let index = store.layer_index(&record.layers[0]).unwrap();
    let (sha, _) = coracle_images::digest::digest_file(&layer.join("bin/busybox")).unwrap();
    assert_eq!(index.files["bin/busybox"].sha256, sha);
}

#[test]
fn import_docker_archive_follows_symlinked_layer_paths() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let docker = open_archive(
        &fixture("busybox-docker.tar"),
        &dir.path().join("tmp"),
        &amd64(),
    )
    .unwrap();
    let oci = open_archive(
        &fixture("busybox-oci.tar"),
        &dir.path().join("tmp2"),
        &amd64(),
    )
    .unwrap();
    assert!(docker.manifest.is_docker());
    assert_eq!(docker.layers[0].diff_id, oci.layers[0].diff_id);
    assert_eq!(docker.config_digest, oci.config_digest);
    let record = store.import(&docker).unwrap();
    assert!(store
        .layer_path(&record.layers[0])
        .join("bin/busybox")
        .is_file());
}

#[test]
fn import_zstd_oci_archive_without_ref_name() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let source = open_archive(
        &fixture("busybox-zstd-oci.tar"),
        &dir.path().join("tmp"),
        &amd64(),
    )
    .unwrap();
    assert_eq!(
        source.layers[0].compression,
        coracle_images::media_type::Compression::Zstd
    );
    let record = store.import(&source).unwrap();
    assert_eq!(
        std::fs::metadata(store.layer_path(&record.layers[0]).join("bin/busybox"))
            .unwrap()
            .len(),
        BUSYBOX_SIZE
    );
}

#[test]
fn import_refuses_unknown_archive_and_wrong_platform() {
    let dir = tempfile::tempdir().unwrap();
    let err = open_archive(
        &fixture("busybox-oci.tar"),
        dir.path(),
        &Platform::parse("linux/riscv64").unwrap(),
    )
    .unwrap_err();
    assert!(
        format!("{:#}", anyhow_chain(&err)).contains("linux/riscv64"),
        "{err}"
    );
    // A layer tar is neither an OCI nor a docker archive.
    let plain = dir.path().join("plain.tar");
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(1);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, "hello", &b"x"[..]).unwrap();
    std::fs::write(&plain, b.into_inner().unwrap()).unwrap();
    let err = open_archive(&plain, dir.path(), &amd64()).unwrap_err();
    assert!(
        matches!(err, ImportError::UnknownArchive { .. }),
        "{}",
        anyhow_chain(&err)
    );
}

fn anyhow_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[test]
fn import_rejects_tampered_layer_blob_and_keeps_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let mut source = open_archive(
        &fixture("busybox-docker.tar"),
        &dir.path().join("tmp"),
        &amd64(),
    )
    .unwrap();
    source.layers[0].diff_id = Digest::of(b"not this layer");
    let err = store.import(&source).unwrap_err();
    assert!(matches!(err, StoreError::UnpackLayer { .. }), "{err}");
    assert!(
        anyhow_chain(&err).contains("digest mismatch"),
        "{}",
        anyhow_chain(&err)
    );
    assert!(store.layers().unwrap().is_empty());
    assert!(store.images().unwrap().is_empty());
}

#[test]
fn preflight_names_the_bytes_needed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        dir.path(),
        StoreConfig {
            reserve_bytes: 1 << 60,
            ..StoreConfig::default()
        },
    )
    .unwrap();
    let source = open_archive(
        &fixture("busybox-oci.tar"),
        &dir.path().join("tmp"),
        &amd64(),
    )
    .unwrap();
    let err = store.import(&source).unwrap_err();
    match &err {
        StoreError::InsufficientSpace {
            needed,
            reserve,
            short,
            ..
        } => {
            assert!(*needed >= BUSYBOX_SIZE, "{err}");
            assert_eq!(*reserve, 1 << 60);
            assert!(*short > 0);
        }
        other => panic!("wrong error {other}"),
    }
    assert!(err.to_string().contains("need"), "{err}");
    assert!(store.layers().unwrap().is_empty());
}

#[test]
#[ignore = "needs root"]
fn layered_image_whiteouts_become_overlay_whiteouts_and_mount_to_expected_tree() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let source = open_archive(
        &fixture("busybox-layers-oci.tar"),
        &dir.path().join("tmp"),
        &amd64(),
    )
    .unwrap();
    let record = store.import(&source).unwrap();
    assert_eq!(record.layers.len(), 4);
    let l3 = store.layer_path(&record.layers[2]);
    let l4 = store.layer_path(&record.layers[3]);
    let gone = std::fs::symlink_metadata(l3.join("data/gone.txt")).unwrap();
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    assert!(
        gone.file_type().is_char_device() && gone.rdev() == 0,
        "gone.txt is not a 0/0 whiteout"
    );
    assert!(!l3.join("data/.wh.gone.txt").exists());
    assert!(is_opaque(&l4.join("data/dir"), OverlayXattrs::Trusted).unwrap());

    // The real path: mount the layers as overlayfs lower dirs and look at the final tree.
    let merged = dir.path().join("merged");
    std::fs::create_dir(&merged).unwrap();
    let lower: Vec<String> = record
        .layers
        .iter()
        .rev()
        .map(|d| store.layer_path(d).display().to_string())
        .collect();
    let status = std::process::Command::new("mount")
        .args([
            "-t",
            "overlay",
            "overlay",
            "-o",
            &format!("lowerdir={}", lower.join(":")),
        ])
        .arg(&merged)
        .status()
        .unwrap();
    assert!(status.success(), "mount overlay failed");
    let _unmount = Unmount(merged.clone());
    let mut data: Vec<String> = walk(&merged.join("data"));
    data.sort();
    assert_eq!(data, ["dir", "dir/b.txt", "keep.txt"]);
    assert!(merged.join("bin/busybox").is_file());
}

struct Unmount(PathBuf);
impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

fn walk(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(root).unwrap() {
        let p = e.unwrap().path();
        let rel = p.strip_prefix(root).unwrap().display().to_string();
        if p.is_dir() {
            out.extend(walk(&p).into_iter().map(|c| format!("{rel}/{c}")));
        }
        out.push(rel);
    }
    out
}

#[test]
fn gc_removes_only_unreferenced_layers_down_to_budget() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let busybox = store
        .import(
            &open_archive(
                &fixture("busybox-oci.tar"),
                &dir.path().join("t1"),
                &amd64(),
            )
            .unwrap(),
        )
        .unwrap();
    let extra = Digest::of(b"extra layer");
    let tar = {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(5000);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "big", &[1u8; 5000][..]).unwrap();
        b.into_inner().unwrap()
    };
    let extra_id = Digest::of(&tar);
    store.add_layer(&tar[..], &extra_id).unwrap();
    let other = coracle_images::store::ImageRecord {
        manifest_digest: extra,
        config_digest: extra,
        layers: vec![extra_id, busybox.layers[0]],
    };
    store.add_image(&other).unwrap();
    assert_eq!(store.refcounts().unwrap()[&busybox.layers[0]], 2);

    // Everything referenced: nothing goes, and the report says the budget is not met.
    let report = store.gc(0).unwrap();
    assert!(report.removed_layers.is_empty() && report.over_budget);

    store.remove_image(&extra).unwrap();
    // A generous budget keeps the unreferenced layer.
    assert!(store.gc(u64::MAX).unwrap().removed_layers.is_empty());
    let report = store.gc(BUSYBOX_SIZE).unwrap();
    assert_eq!(report.removed_layers, vec![extra_id]);
    assert_eq!(report.freed_bytes, 5000);
    assert!(!store.has_layer(&extra_id));
    assert!(store.has_layer(&busybox.layers[0]));
}

#[test]
fn open_repairs_half_written_layers_and_missing_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let record = {
        let store = store(dir.path());
        store
            .import(
                &open_archive(
                    &fixture("busybox-oci.tar"),
                    &dir.path().join("tmp"),
                    &amd64(),
                )
                .unwrap(),
            )
            .unwrap()
    };
    let layers = dir.path().join("layers");
    std::fs::create_dir_all(layers.join(".partial-x-1-0/bin")).unwrap();
    std::fs::remove_file(layers.join(format!("{}.index.json", record.layers[0].hex()))).unwrap();
    let store = store(dir.path());
    assert!(!layers.join(".partial-x-1-0").exists());
    assert_eq!(
        store.layer_index(&record.layers[0]).unwrap().files["bin/busybox"].size,
        BUSYBOX_SIZE
    );
}

#[test]
fn partial_download_resumes_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let blob = std::fs::read(fixture("busybox-oci.tar")).unwrap();
    let digest = Digest::of(&blob);

    let mut first = store.partial(&digest);
    assert_eq!(first.range_header(), None);
    assert_eq!(
        first.begin(RangeReply::Full).unwrap(),
        ResumeAction::Restart
    );
    first.write(&blob[..400_000]).unwrap();
    first.persist().unwrap();
    drop(first); // the link is cut

    let mut again = store.partial(&digest);
    assert_eq!(again.have(), 400_000);
    assert_eq!(again.range_header().as_deref(), Some("bytes=400000-"));
    assert_eq!(
        again.begin(RangeReply::Partial { start: 400_000 }).unwrap(),
        ResumeAction::Append
    );
    again.write(&blob[400_000..]).unwrap();
    let path = store.commit_partial(again).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), blob);
}

#[test]
fn partial_download_with_wrong_bytes_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let digest = Digest::of(b"the real blob");
    let mut d = store.partial(&digest);
    d.begin(RangeReply::Full).unwrap();
    d.write(b"a forged blob").unwrap();
    let err = store.commit_partial(d).unwrap_err();
    assert!(
        anyhow_chain(&err).contains("hashes to"),
        "{}",
        anyhow_chain(&err)
    );
    assert_eq!(store.partial(&digest).have(), 0);
    assert!(!dir.path().join("blobs/sha256").join(digest.hex()).exists());
}
