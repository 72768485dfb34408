//! `coracle image delta create|apply` on real bytes: the fixture's busybox binary and a
//! patched copy of it, rebuilt byte for byte; a wrong base fails and writes nothing.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::path::{Path, PathBuf};
use std::process::Command;

/// An image archive of the workspace's `testdata/images` (or `$CORACLE_FIXTURES`).
fn busybox_docker() -> PathBuf {
    let dir = std::env::var_os("CORACLE_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/images"));
    dir.join("busybox-docker.tar")
}

/// The busybox binary from the fixture's layer.
fn busybox() -> Vec<u8> {
    let mut outer = tar::Archive::new(std::fs::File::open(busybox_docker()).unwrap());
    for entry in outer.entries().unwrap() {
        let entry = entry.unwrap();
        if entry.header().entry_type().is_file()
            && entry
                .path()
                .unwrap()
                .extension()
                .is_some_and(|e| e == "tar")
        {
            let mut layer = tar::Archive::new(entry);
            for file in layer.entries().unwrap() {
                let mut file = file.unwrap();
                if file.path().unwrap().ends_with("bin/busybox") {
                    let mut bytes = Vec::new();
                    std::io::Read::read_to_end(&mut file, &mut bytes).unwrap();
                    return bytes;
                }
            }
        }
    }
    panic!("no bin/busybox in {}", busybox_docker().display());
}

fn layer(path: &Path, files: &[(&str, &[u8])]) {
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o755);
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.finish().unwrap();
}

fn coracle(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_coracle"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn delta_create_then_apply_rebuilds_new_tar_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let old = busybox();
    let mut new = old.clone();
    new.splice(300_000..300_000, *b"patch release");
    new[1_000_000..1_000_400].fill(0x90);
    layer(
        &d.join("old.tar"),
        &[("bin/busybox", &old), ("etc/motd", b"v1\n")],
    );
    layer(
        &d.join("new.tar"),
        &[("bin/busybox", &new), ("etc/motd", b"v2\n")],
    );

    let out = coracle(&[
        "image".as_ref(),
        "delta".as_ref(),
        "create".as_ref(),
        "--from".as_ref(),
        d.join("old.tar").as_os_str(),
        "--to".as_ref(),
        d.join("new.tar").as_os_str(),
        "-o".as_ref(),
        d.join("delta").as_os_str(),
        "--level".as_ref(),
        "9".as_ref(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(report.contains("full zstd"), "{report}");
    let new_diff_id = report
        .split_whitespace()
        .find(|word| word.starts_with("sha256:"))
        .expect("create names the new layer")
        .to_string();
    assert!(
        std::fs::metadata(d.join("delta")).unwrap().len() < 50_000,
        "{report}"
    );

    // The device side: the old layer unpacked by the store's unpacker (which keeps the tar
    // skeleton beside it).
    let old_dir = d.join("old-dir");
    let limits = coracle_images::unpack::UnpackLimits::default();
    coracle_images::unpack::unpack_layer(
        std::fs::File::open(d.join("old.tar")).unwrap(),
        &old_dir,
        None,
        &limits,
    )
    .unwrap();
    let apply = |diff_id: Option<&str>, output: &str| {
        let mut args: Vec<std::ffi::OsString> = vec![
            "image".into(),
            "delta".into(),
            "apply".into(),
            "--from-dir".into(),
            old_dir.clone().into_os_string(),
            d.join("delta").into_os_string(),
            "-o".into(),
            d.join(output).into_os_string(),
        ];
        if let Some(id) = diff_id {
            args.extend(["--diff-id".into(), id.into()]);
        }
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        coracle(&args)
    };
    // A small layer's delta is one frame over the whole old tar and does not name the new
    // layer: applying it needs the diff_id, and without it says so.
    assert!(report.contains("whole layer"), "{report}");
    let out = apply(None, "rebuilt.tar");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("give its diff_id"), "{err}");
    assert!(!d.join("rebuilt.tar").exists());
    let out = apply(Some(&new_diff_id), "rebuilt.tar");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(d.join("rebuilt.tar")).unwrap(),
        std::fs::read(d.join("new.tar")).unwrap()
    );

    // A different base: refused with the digest named, no output left.
    std::fs::write(old_dir.join("bin/busybox"), &new[..old.len()]).unwrap();
    let out = apply(Some(&new_diff_id), "bad.tar");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sha256:"), "{err}");
    assert!(!d.join("bad.tar").exists());
}
