//! Every attack on the unpacker gets a clear error and leaves nothing behind. Hostile tars are
//! built byte by byte with the `tar` crate's low-level header API.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::path::Path;

use coracle_images::digest::Digest;
use coracle_images::unpack::{unpack_layer, PathProblem, UnpackError, UnpackLimits};
use tar::{EntryType, Header};

mod support;
use support::RawTar;

/// Unpack into a fresh parent dir; on error check that the parent is left empty.
fn unpack_expect_err(tar: &[u8], limits: &UnpackLimits, expected: Option<&Digest>) -> UnpackError {
    let parent = tempfile::tempdir().unwrap();
    let dest = parent.path().join("layer");
    let err = unpack_layer(tar, &dest, expected, limits).unwrap_err();
    assert_empty(parent.path());
    err
}

fn assert_empty(dir: &Path) {
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "unpack left {left:?} behind");
}

#[test]
fn unpack_accepts_a_plain_layer_and_indexes_it() {
    let tar = RawTar::default()
        .entry("bin/", EntryType::Directory, 0o755, b"", None)
        .file("bin/tool", b"#!/bin/sh\n")
        .entry(
            "bin/alias",
            EntryType::Symlink,
            0o777,
            b"",
            Some("/bin/tool"),
        )
        .entry("bin/hard", EntryType::Link, 0o644, b"", Some("bin/tool"))
        .finish();
    let parent = tempfile::tempdir().unwrap();
    let dest = parent.path().join("layer");
    let got = unpack_layer(
        &tar[..],
        &dest,
        Some(&Digest::of(&tar)),
        &UnpackLimits::default(),
    )
    .unwrap();
    assert_eq!(got.diff_id, Digest::of(&tar));
    assert_eq!(
        std::fs::read(dest.join("bin/hard")).unwrap(),
        b"#!/bin/sh\n"
    );
    assert_eq!(
        std::fs::read_link(dest.join("bin/alias")).unwrap(),
        Path::new("/bin/tool")
    );
    assert_eq!(
        got.index.files["bin/tool"].sha256,
        Digest::of(b"#!/bin/sh\n")
    );
    assert_eq!(got.index.files["bin/hard"].size, 10);
}

#[test]
fn unpack_rejects_parent_dir_path() {
    let tar = RawTar::default()
        .file("ok", b"x")
        .file("a/../../evil", b"x")
        .finish();
    let err = unpack_expect_err(&tar, &UnpackLimits::default(), None);
    assert!(
        matches!(
            err,
            UnpackError::EntryPath {
                problem: PathProblem::ParentComponent,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("a/../../evil"), "{err}");
}

#[test]
fn unpack_rejects_absolute_path() {
    let tar = RawTar::default().file("/etc/evil", b"x").finish();
    let err = unpack_expect_err(&tar, &UnpackLimits::default(), None);
    assert!(
        matches!(
            err,
            UnpackError::EntryPath {
                problem: PathProblem::Absolute,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn unpack_rejects_symlink_escape() {
    let outside = tempfile::tempdir().unwrap();
    let link = outside.path().to_str().unwrap().to_owned();
    let tar = RawTar::default()
        .entry("escape", EntryType::Symlink, 0o777, b"", Some(&link))
        .file("escape/owned", b"pwned")
        .finish();
    let err = unpack_expect_err(&tar, &UnpackLimits::default(), None);
    assert!(
        matches!(err, UnpackError::WriteThroughSymlink { .. }),
        "{err}"
    );
    assert_empty(outside.path());
}

#[test]
fn unpack_rejects_hardlink_escape() {
    for target in ["../../etc/passwd", "/etc/passwd", "missing"] {
        let tar = RawTar::default()
            .entry("hl", EntryType::Link, 0o644, b"", Some(target))
            .finish();
        let err = unpack_expect_err(&tar, &UnpackLimits::default(), None);
        assert!(
            matches!(err, UnpackError::HardlinkTarget { .. }),
            "{target}: {err}"
        );
    }
}

#[test]
fn unpack_rejects_hardlink_through_symlinked_dir() {
    let tar = RawTar::default()
        .entry("etc", EntryType::Symlink, 0o777, b"", Some("/etc"))
        .entry("hl", EntryType::Link, 0o644, b"", Some("etc/passwd"))
        .finish();
    let err = unpack_expect_err(&tar, &UnpackLimits::default(), None);
    assert!(matches!(err, UnpackError::HardlinkTarget { .. }), "{err}");
}

#[test]
fn unpack_rejects_device_nodes_in_strict_mode() {
    let tar = RawTar::default()
        .entry("dev/sda", EntryType::Block, 0o600, b"", None)
        .finish();
    let err = unpack_expect_err(&tar, &UnpackLimits::strict(), None);
    assert!(matches!(err, UnpackError::DeviceNode { .. }), "{err}");
    assert!(err.to_string().contains("dev/sda"), "{err}");
}

#[test]
fn unpack_rejects_setuid_in_strict_mode() {
    let tar = RawTar::default()
        .entry("bin/su", EntryType::Regular, 0o4755, b"elf", None)
        .finish();
    let err = unpack_expect_err(&tar, &UnpackLimits::strict(), None);
    assert!(
        matches!(err, UnpackError::SetId { mode: 0o4755, .. }),
        "{err}"
    );
    let setgid = RawTar::default()
        .entry("bin/wall", EntryType::Regular, 0o2755, b"elf", None)
        .finish();
    assert!(matches!(
        unpack_expect_err(&setgid, &UnpackLimits::strict(), None),
        UnpackError::SetId { .. }
    ));
}

#[test]
fn unpack_enforces_size_quota() {
    let tar = RawTar::default()
        .file("a", &[1u8; 600])
        .file("b", &[2u8; 600])
        .finish();
    let limits = UnpackLimits {
        max_bytes: 1000,
        ..UnpackLimits::default()
    };
    let err = unpack_expect_err(&tar, &limits, None);
    assert!(
        matches!(err, UnpackError::QuotaBytes { limit: 1000, .. }),
        "{err}"
    );
}

#[test]
fn unpack_enforces_file_count_quota() {
    let mut tar = RawTar::default();
    for i in 0..10 {
        tar = tar.file(&format!("f{i}"), b"");
    }
    let limits = UnpackLimits {
        max_entries: 5,
        ..UnpackLimits::default()
    };
    let err = unpack_expect_err(&tar.finish(), &limits, None);
    assert!(
        matches!(err, UnpackError::QuotaEntries { limit: 5 }),
        "{err}"
    );
}

#[test]
fn unpack_rejects_huge_sparse_file_before_writing() {
    // One 512-byte block at the end of a 1 TiB sparse file: tiny archive, huge file.
    let real_size: u64 = 1 << 40;
    let mut h = Header::new_gnu();
    h.set_path("sparse.img").unwrap();
    h.set_entry_type(EntryType::GNUSparse);
    h.set_mode(0o644);
    h.set_size(512);
    let gnu = h.as_gnu_mut().unwrap();
    gnu.set_real_size(real_size);
    gnu.sparse[0].set_offset(real_size - 512);
    gnu.sparse[0].set_length(512);
    h.set_cksum();
    let mut tar = RawTar::default();
    tar.push(h.as_bytes(), &[9u8; 512]);
    let err = unpack_expect_err(&tar.finish(), &UnpackLimits::default(), None);
    assert!(matches!(err, UnpackError::QuotaBytes { .. }), "{err}");
    assert!(err.to_string().contains("sparse.img"), "{err}");
}

#[test]
fn unpack_rejects_wrong_digest() {
    let tar = RawTar::default().file("a", b"content").finish();
    let wrong = Digest::of(b"something else");
    let err = unpack_expect_err(&tar, &UnpackLimits::default(), Some(&wrong));
    match err {
        UnpackError::VerifyDigest { expected, actual } => {
            assert_eq!(expected, wrong);
            assert_eq!(actual, Digest::of(&tar));
        }
        other => panic!("wrong error: {other}"),
    }
}

#[test]
fn unpack_rejects_truncated_stream() {
    let tar = RawTar::default().file("a", &[5u8; 4096]).finish();
    let err = unpack_expect_err(&tar[..2000], &UnpackLimits::default(), None);
    assert!(
        matches!(
            err,
            UnpackError::ReadTar(_) | UnpackError::CreateEntry { .. }
        ),
        "{err}"
    );
}

#[test]
fn unpack_refuses_existing_destination() {
    let parent = tempfile::tempdir().unwrap();
    std::fs::create_dir(parent.path().join("layer")).unwrap();
    std::fs::write(parent.path().join("layer/keep"), b"old").unwrap();
    let tar = RawTar::default().file("a", b"x").finish();
    let err = unpack_layer(
        &tar[..],
        &parent.path().join("layer"),
        None,
        &UnpackLimits::default(),
    )
    .unwrap_err();
    assert!(
        matches!(err, UnpackError::DestinationExists { .. }),
        "{err}"
    );
    assert_eq!(
        std::fs::read(parent.path().join("layer/keep")).unwrap(),
        b"old"
    );
}

#[test]
fn unpack_rejects_symlink_that_replaces_a_directory_before_a_write_below_it() {
    let outside = tempfile::tempdir().unwrap();
    let link = outside.path().to_str().unwrap().to_owned();
    let tar = RawTar::default()
        .entry("a/", EntryType::Directory, 0o755, b"", None)
        .file("a/x", b"fine")
        .entry("a", EntryType::Symlink, 0o777, b"", Some(&link))
        .file("a/y", b"pwned")
        .finish();
    let err = unpack_expect_err(&tar, &UnpackLimits::default(), None);
    assert!(
        matches!(err, UnpackError::WriteThroughSymlink { .. }),
        "{err}"
    );
    assert_empty(outside.path());
}
