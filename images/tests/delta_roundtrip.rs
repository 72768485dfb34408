//! Delta layers end to end: encode from real tars, rebuild byte for byte, unpack into the
//! store in one pass, and refuse deltas applied to the wrong base or over budget.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::path::{Path, PathBuf};

use coracle_images::delta::{
    self, apply_to_file, apply_to_store, encode, BaseLayer, DeltaError, EncodeOptions,
};
use coracle_images::digest::Digest;
use coracle_images::store::{Store, StoreConfig};
use coracle_images::unpack::{unpack_layer, UnpackLimits};

fn layer_tar(files: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o755);
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, path, &data[..]).unwrap();
    }
    b.into_inner().unwrap()
}

/// Pseudo machine code: words that change when code moves.
fn binary(seed: u32, len: usize) -> Vec<u8> {
    (0..len as u32 / 4)
        .flat_map(|i| (i.wrapping_mul(2_654_435_761) ^ seed).to_le_bytes())
        .collect()
}

fn text(version: &str, lines: usize) -> Vec<u8> {
    (0..lines)
        .map(|i| {
            format!(
                "def function_{i}(x):  # version {}\n    return x * {i}\n",
                if i % 50 == 0 { version } else { "" }
            )
        })
        .collect::<String>()
        .into_bytes()
}

struct Pair {
    dir: tempfile::TempDir,
    old_tar: Vec<u8>,
    new_tar: PathBuf,
    new_bytes: Vec<u8>,
}

fn pair() -> Pair {
    let mut new_bin = binary(0, 600_000);
    new_bin.splice(4000..4000, [0x90; 12]);
    for w in new_bin[100_000..300_000].chunks_mut(64) {
        w[0] = w[0].wrapping_add(16);
    }
    let big_old = binary(7, 3_000_000);
    let mut big_new = big_old.clone();
    big_new[2_000_000..2_000_100].fill(1);
    let old = layer_tar(&[
        ("usr/lib/libfoo.so.1.2", binary(0, 600_000)),
        ("app/main.py", text("1.2", 2000)),
        ("app/foo-1.2.dist-info/RECORD", text("1.2", 300)),
        ("data/same.bin", binary(3, 100_000)),
        ("data/big.bin", big_old),
    ]);
    let new = layer_tar(&[
        ("usr/lib/libfoo.so.1.3", new_bin),
        ("app/main.py", text("1.3", 2010)),
        ("app/foo-1.3.dist-info/RECORD", text("1.3", 300)),
        ("data/moved/same.bin", binary(3, 100_000)),
        ("data/big.bin", big_new),
        ("data/new.txt", b"brand new file\n".repeat(20)),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let new_tar = dir.path().join("new.tar");
    std::fs::write(&new_tar, &new).unwrap();
    Pair {
        dir,
        old_tar: old,
        new_tar,
        new_bytes: new,
    }
}

/// A budget small enough that `data/big.bin` needs several windows.
const SMALL_BUDGET: u64 = (17 << 20) + (2 << 20);

fn encode_pair(p: &Pair, budget: u64) -> (PathBuf, Digest, PathBuf, delta::EncodeReport) {
    let old_dir = p.dir.path().join("old");
    let unpacked = unpack_layer(&p.old_tar[..], &old_dir, None, &UnpackLimits::default()).unwrap();
    let delta_path = p.dir.path().join("delta.tar.zst");
    let base = BaseLayer {
        diff_id: unpacked.diff_id,
        dir: &old_dir,
        index: &unpacked.index,
    };
    let options = EncodeOptions {
        level: 9,
        apply_budget: budget,
        ..EncodeOptions::default()
    };
    let report = encode(
        &p.new_tar,
        &[base],
        p.dir.path(),
        std::fs::File::create(&delta_path).unwrap(),
        &options,
    )
    .unwrap();
    (delta_path, unpacked.diff_id, old_dir, report)
}

#[test]
fn delta_rebuilds_new_tar_byte_for_byte_and_is_small() {
    let p = pair();
    let (delta_path, _, old_dir, report) = encode_pair(&p, SMALL_BUDGET);
    let full = delta::full_zstd_size(&p.new_tar, 9).unwrap();
    assert!(
        report.delta_bytes * 5 < full,
        "delta {} vs full zstd {full}",
        report.delta_bytes
    );
    assert!(
        report.copied_bytes >= 100_000,
        "moved file not copied: {report:?}"
    );
    assert!(
        report.zstd_patched_bytes + report.bsdiff_patched_bytes > 0,
        "{report:?}"
    );

    let out = p.dir.path().join("rebuilt.tar");
    let digest = apply_to_file(
        std::fs::File::open(&delta_path).unwrap(),
        vec![delta::BaseDir::scan(old_dir).unwrap()],
        &out,
        SMALL_BUDGET,
    )
    .unwrap();
    assert_eq!(digest, Digest::of(&p.new_bytes));
    assert_eq!(std::fs::read(&out).unwrap(), p.new_bytes);
}

#[test]
fn delta_applies_into_store_in_one_pass() {
    let p = pair();
    let (delta_path, _, _, _) = encode_pair(&p, delta::DEFAULT_BUDGET);
    let store_dir = p.dir.path().join("store");
    let store = Store::open(
        &store_dir,
        StoreConfig {
            reserve_bytes: 0,
            ..StoreConfig::default()
        },
    )
    .unwrap();
    store
        .add_layer(&p.old_tar[..], &Digest::of(&p.old_tar))
        .unwrap();
    let diff_id = apply_to_store(
        &store,
        std::fs::File::open(&delta_path).unwrap(),
        delta::DEFAULT_BUDGET,
    )
    .unwrap();
    assert_eq!(diff_id, Digest::of(&p.new_bytes));
    let layer = store.layer_path(&diff_id);
    assert_eq!(
        std::fs::read(layer.join("data/new.txt")).unwrap(),
        b"brand new file\n".repeat(20)
    );
    assert!(store
        .layer_index(&diff_id)
        .unwrap()
        .files
        .contains_key("usr/lib/libfoo.so.1.3"));
}

#[test]
fn delta_on_a_changed_base_fails_and_writes_nothing() {
    let p = pair();
    let (delta_path, _, old_dir, _) = encode_pair(&p, delta::DEFAULT_BUDGET);
    let main = old_dir.join("app/main.py");
    let mut bytes = std::fs::read(&main).unwrap();
    bytes[10] ^= 1;
    std::fs::write(&main, bytes).unwrap();
    let out = p.dir.path().join("rebuilt.tar");
    let err = apply_to_file(
        std::fs::File::open(&delta_path).unwrap(),
        vec![delta::BaseDir::scan(old_dir).unwrap()],
        &out,
        delta::DEFAULT_BUDGET,
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            DeltaError::VerifyDigest { .. } | DeltaError::Rebuild { .. }
        ),
        "{err}"
    );
    assert!(!out.exists());
    assert!(!out.with_extension("partial").exists());
}

#[test]
fn delta_refuses_a_budget_below_its_windows() {
    let p = pair();
    let (delta_path, _, old_dir, _) = encode_pair(&p, delta::DEFAULT_BUDGET);
    let out = p.dir.path().join("rebuilt.tar");
    let err = apply_to_file(
        std::fs::File::open(&delta_path).unwrap(),
        vec![delta::BaseDir::scan(old_dir).unwrap()],
        &out,
        16 << 20,
    )
    .unwrap_err();
    assert!(
        matches!(err, DeltaError::Budget { budget, .. } if budget == 16 << 20),
        "{err}"
    );
    assert!(!out.exists());
}

#[test]
fn delta_with_missing_base_in_store_names_it() {
    let p = pair();
    let (delta_path, old_id, _, _) = encode_pair(&p, delta::DEFAULT_BUDGET);
    let store = Store::open(
        &p.dir.path().join("store"),
        StoreConfig {
            reserve_bytes: 0,
            ..StoreConfig::default()
        },
    )
    .unwrap();
    let err = apply_to_store(
        &store,
        std::fs::File::open(&delta_path).unwrap(),
        delta::DEFAULT_BUDGET,
    )
    .unwrap_err();
    assert!(
        matches!(err, DeltaError::MissingBase { diff_id } if diff_id == old_id),
        "{err}"
    );
    assert!(store.layers().unwrap().is_empty());
}

#[test]
fn delta_old_paths_cannot_leave_the_base_layer() {
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/etc", dir.path().join("etc")).unwrap();
    for bad in ["../x", "/etc/passwd", "etc/passwd"] {
        assert!(
            delta::open_in_layer(dir.path(), Path::new(bad)).is_err(),
            "{bad}"
        );
    }
}
