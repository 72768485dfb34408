//! Layers are taken as Docker takes them: setuid/setgid files, device nodes, fifos and hard
//! links stay as the image has them (every Debian-based image carries `su`, `passwd` and
//! `/dev/console`); strict mode (`UnpackLimits::strict`) refuses the first two.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use coracle_images::unpack::{unpack_layer, UnpackError, UnpackLimits};
use tar::{EntryType, Header};

mod support;
use support::RawTar;

/// The shapes of a Debian minbase layer that busybox images never had.
fn debian_like_layer() -> Vec<u8> {
    let mut tar = RawTar::default()
        .entry("usr/", EntryType::Directory, 0o755, b"", None)
        .entry("usr/bin/", EntryType::Directory, 0o755, b"", None)
        .entry(
            "usr/bin/su",
            EntryType::Regular,
            0o4755,
            b"\x7fELF su",
            None,
        )
        .entry(
            "usr/bin/passwd",
            EntryType::Regular,
            0o4755,
            b"\x7fELF pw",
            None,
        )
        // A hard link to a setuid binary, as some packages ship.
        .entry(
            "usr/bin/su-again",
            EntryType::Link,
            0o4755,
            b"",
            Some("usr/bin/su"),
        )
        .entry("var/", EntryType::Directory, 0o755, b"", None)
        .entry("var/mail/", EntryType::Directory, 0o2775, b"", None)
        .entry("run/", EntryType::Directory, 0o755, b"", None)
        .entry("run/initctl", EntryType::Fifo, 0o600, b"", None);
    tar.push(
        &owned_header("usr/bin/chage", EntryType::Regular, 0o2755, 0, 42, 5),
        b"\x7fELF",
    );
    tar.push(&device("dev/console", EntryType::Char, 0o600, 5, 1), b"");
    tar.push(&device("dev/null", EntryType::Char, 0o666, 1, 3), b"");
    tar.push(&device("dev/loop0", EntryType::Block, 0o660, 7, 0), b"");
    tar.finish()
}

fn owned_header(
    path: &str,
    kind: EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
) -> [u8; 512] {
    let mut h = Header::new_gnu();
    h.set_path(path).unwrap();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(uid);
    h.set_gid(gid);
    h.set_size(size);
    h.set_cksum();
    *h.as_bytes()
}

fn device(path: &str, kind: EntryType, mode: u32, major: u32, minor: u32) -> [u8; 512] {
    let mut h = Header::new_gnu();
    h.set_path(path).unwrap();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(0);
    h.set_device_major(major).unwrap();
    h.set_device_minor(minor).unwrap();
    h.set_cksum();
    *h.as_bytes()
}

fn mode_of(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn a_debian_like_layer_unpacks_with_setid_bits_fifos_and_hard_links() {
    let parent = tempfile::tempdir().unwrap();
    let dest = parent.path().join("layer");
    let tar = debian_like_layer();
    let got = unpack_layer(&tar[..], &dest, None, &UnpackLimits::default()).unwrap();
    assert_eq!(mode_of(&dest.join("usr/bin/su")), 0o4755);
    assert_eq!(mode_of(&dest.join("usr/bin/passwd")), 0o4755);
    assert_eq!(mode_of(&dest.join("usr/bin/chage")), 0o2755);
    assert_eq!(mode_of(&dest.join("var/mail")), 0o2775);
    let su = std::fs::metadata(dest.join("usr/bin/su")).unwrap();
    let again = std::fs::metadata(dest.join("usr/bin/su-again")).unwrap();
    assert_eq!(su.ino(), again.ino(), "the hard link shares su's inode");
    assert_eq!(su.nlink(), 2);
    assert_eq!(
        got.index.files["usr/bin/su-again"],
        got.index.files["usr/bin/su"]
    );
    let fifo = std::fs::symlink_metadata(dest.join("run/initctl")).unwrap();
    assert!(fifo.file_type().is_fifo());
}

#[test]
#[ignore = "needs root"]
fn as_root_device_nodes_and_owners_are_kept() {
    let parent = tempfile::tempdir().unwrap();
    let dest = parent.path().join("layer");
    unpack_layer(
        &debian_like_layer()[..],
        &dest,
        None,
        &UnpackLimits::default(),
    )
    .unwrap();
    for (path, char_dev, major, minor) in [
        ("dev/console", true, 5, 1),
        ("dev/null", true, 1, 3),
        ("dev/loop0", false, 7, 0),
    ] {
        let meta = std::fs::symlink_metadata(dest.join(path)).unwrap();
        let kind = meta.file_type();
        assert!(
            if char_dev {
                kind.is_char_device()
            } else {
                kind.is_block_device()
            },
            "{path}"
        );
        assert_eq!(meta.rdev(), makedev(major, minor), "{path}");
    }
    // chown clears setgid; the unpacker puts it back after giving the file its group.
    let chage = std::fs::metadata(dest.join("usr/bin/chage")).unwrap();
    assert_eq!((chage.uid(), chage.gid()), (0, 42));
    assert_eq!(chage.permissions().mode() & 0o7777, 0o2755);
}

#[test]
fn strict_mode_refuses_setid_files_and_device_nodes_naming_them() {
    let parent = tempfile::tempdir().unwrap();
    let err = unpack_layer(
        &debian_like_layer()[..],
        &parent.path().join("layer"),
        None,
        &UnpackLimits::strict(),
    )
    .unwrap_err();
    assert!(
        matches!(err, UnpackError::SetId { mode: 0o4755, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("usr/bin/su"), "{err}");
    let devices_only = {
        let mut tar = RawTar::default();
        tar.push(&device("dev/console", EntryType::Char, 0o600, 5, 1), b"");
        tar.finish()
    };
    let err = unpack_layer(
        &devices_only[..],
        &parent.path().join("layer2"),
        None,
        &UnpackLimits::strict(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("dev/console"), "{err}");
    assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 0);
}

fn makedev(major: u64, minor: u64) -> u64 {
    ((major & 0xfff) << 8) | ((major & !0xfff) << 32) | (minor & 0xff) | ((minor & !0xff) << 12)
}
