//! `coracle-agent apply-delta` on the fixture that the cross smoke test also uses
//! (cross/testdata/delta): the rebuilt layer's digest, and refusals that leave nothing behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../cross/testdata/delta")
        .join(name)
}

fn apply_delta(args: &[&Path]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_coracle-agent"))
        .arg("apply-delta")
        .args(args)
        .output()
        .expect("run coracle-agent")
}

fn sha256_of(path: &Path) -> String {
    let bytes = std::fs::read(path).expect("read rebuilt layer");
    coracle_proto::Digest::of(&bytes).to_string()
}

#[test]
fn rebuilds_the_new_layer_from_the_old_tar_and_the_delta() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("new.tar");
    let old = fixture("old.tar.gz");
    let delta = fixture("delta.tar.zst");
    let o = Path::new("-o");
    let result = apply_delta(&[Path::new("--from-tar"), &old, &delta, o, &out]);
    assert!(result.status.success(), "{result:?}");
    let want = std::fs::read_to_string(fixture("new.diff_id")).unwrap();
    assert_eq!(sha256_of(&out), want.trim());
    assert!(String::from_utf8_lossy(&result.stdout).contains(want.trim()));
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "only the output is left: {left:?}");
}

#[test]
fn a_truncated_delta_is_refused_and_leaves_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let cut = dir.path().join("cut.delta");
    let bytes = std::fs::read(fixture("delta.tar.zst")).unwrap();
    std::fs::write(&cut, &bytes[..200]).unwrap();
    let out = dir.path().join("new.tar");
    let old = fixture("old.tar.gz");
    let result = apply_delta(&[Path::new("--from-tar"), &old, &cut, Path::new("-o"), &out]);
    assert!(!result.status.success());
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(
        stderr.contains("apply delta") && stderr.contains("cut.delta"),
        "{stderr}"
    );
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "only the cut delta is left: {left:?}");
}

#[test]
fn the_wrong_old_layer_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other.tar");
    let mut builder = tar::Builder::new(std::fs::File::create(&other).unwrap());
    let mut header = tar::Header::new_gnu();
    header.set_size(5);
    header.set_mode(0o644);
    header.set_cksum();
    builder
        .append_data(&mut header, "etc/unrelated", &b"hello"[..])
        .unwrap();
    builder.finish().unwrap();
    drop(builder);
    let out = dir.path().join("new.tar");
    let delta = fixture("delta.tar.zst");
    let result = apply_delta(&[
        Path::new("--from-tar"),
        &other,
        &delta,
        Path::new("-o"),
        &out,
    ]);
    assert!(!result.status.success());
    assert!(!out.exists());
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(
        stderr.contains("base layer sha256:") && stderr.contains("the old layers given are"),
        "the error names the base the delta needs and the one given: {stderr}"
    );
}
