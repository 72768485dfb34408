//! Delta layers end to end: encode from real tars, rebuild byte for byte, unpack into the
//! store in one pass, and refuse deltas applied to the wrong base or over budget. These are
//! the op stream's tests (no whole-layer delta: see `delta_whole.rs`).

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
        ..ops_only()
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
        Some(Digest::of(&p.new_bytes)),
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
        &Digest::of(&p.new_bytes),
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
        Some(Digest::of(&p.new_bytes)),
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
        Some(Digest::of(&p.new_bytes)),
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
        &Digest::of(&p.new_bytes),
        delta::DEFAULT_BUDGET,
    )
    .unwrap_err();
    assert!(
        matches!(err, DeltaError::MissingBase { base } if base.names(&old_id)),
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

/// The op stream alone: small test layers would otherwise go as whole-layer deltas.
fn ops_only() -> EncodeOptions {
    EncodeOptions {
        try_whole: false,
        ..EncodeOptions::default()
    }
}

/// Encode `new` against `old` (both layer tars) at the default budget, apply it, check the
/// rebuild is byte for byte, and give back the report.
fn round_trip(old: &[u8], new: &[u8]) -> delta::EncodeReport {
    let dir = tempfile::tempdir().unwrap();
    let new_tar = dir.path().join("new.tar");
    std::fs::write(&new_tar, new).unwrap();
    let old_dir = dir.path().join("old");
    let unpacked = unpack_layer(old, &old_dir, None, &UnpackLimits::default()).unwrap();
    let delta_path = dir.path().join("delta.tar.zst");
    let base = BaseLayer {
        diff_id: unpacked.diff_id,
        dir: &old_dir,
        index: &unpacked.index,
    };
    let report = encode(
        &new_tar,
        &[base],
        dir.path(),
        std::fs::File::create(&delta_path).unwrap(),
        &ops_only(),
    )
    .unwrap();
    let out = dir.path().join("rebuilt.tar");
    apply_to_file(
        std::fs::File::open(&delta_path).unwrap(),
        vec![delta::BaseDir::scan(old_dir).unwrap()],
        Some(Digest::of(new)),
        &out,
        delta::DEFAULT_BUDGET,
    )
    .unwrap();
    assert!(std::fs::read(&out).unwrap() == new, "rebuild differs");
    report
}

/// Distinct text files of about `len` bytes each (sizes vary, so paddings vary).
fn many_files(count: usize, len: usize) -> Vec<(String, Vec<u8>)> {
    (0..count)
        .map(|i| {
            let line = format!("module {i}: value = {}\n", i * 7919);
            let body = line.repeat(len / line.len() + 1);
            (
                format!("lib/pkg/mod_{i:04}.py"),
                body.as_bytes()[..len - i % 97].to_vec(),
            )
        })
        .collect()
}

fn tar_of(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let files: Vec<(&str, Vec<u8>)> = files.iter().map(|(p, d)| (p.as_str(), d.clone())).collect();
    layer_tar(&files)
}

#[test]
fn size_change_of_an_early_file_leaves_later_headers_cheap() {
    let old = many_files(3000, 900);
    let mut new = old.clone();
    // The first file grows by 100 bytes: its padding changes, and in a padded skeleton every
    // later header would move by that much.
    new[0].1.extend_from_slice(&[b'#'; 100]);
    let report = round_trip(&tar_of(&old), &tar_of(&new));
    assert!(report.skeleton_bytes > 3000 * 512, "{report:?}");
    assert!(
        report.skeleton_cost_bytes < 300,
        "skeleton of 3000 headers cost {} bytes for one changed size",
        report.skeleton_cost_bytes
    );
    assert!(report.delta_bytes < 1500, "{report:?}");
}

#[test]
fn identical_small_files_become_references() {
    let old: Vec<(String, Vec<u8>)> = (0..500)
        .map(|i| {
            (
                format!("a/f{i}.txt"),
                format!("small file {i} {}\n", i * 31).into_bytes(),
            )
        })
        .collect();
    // Same contents under new paths (a renamed directory), plus one new small file.
    let mut new: Vec<(String, Vec<u8>)> = old
        .iter()
        .map(|(p, d)| (p.replacen("a/", "b/", 1), d.clone()))
        .collect();
    new.push(("b/new.txt".into(), b"not in the old layer\n".to_vec()));
    let small: u64 = old.iter().map(|(_, d)| d.len() as u64).sum();
    assert!(old.iter().all(|(_, d)| d.len() < 128));
    let report = round_trip(&tar_of(&old), &tar_of(&new));
    assert_eq!(report.copied_bytes, small, "{report:?}");
    assert_eq!(
        report.literal_bytes, 21,
        "only the new file is literal: {report:?}"
    );
}

#[test]
fn old_format_delta_is_refused_by_name() {
    // A version 1 delta (padded skeleton) would rebuild a different tar: refuse it up front.
    let header = format!(
        r#"{{"version":1,"new_diff_id":"{}","new_size":1024,"bases":[],"window":1048576}}"#,
        Digest::of(b"x")
    );
    let mut tar = tar::Builder::new(Vec::new());
    for (name, data) in [("delta.json", header.as_bytes()), ("ops", &[0u8][..])] {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        tar.append_data(&mut h, name, data).unwrap();
    }
    let artifact = zstd::bulk::compress(&tar.into_inner().unwrap(), 3).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("new.tar");
    let err = apply_to_file(&artifact[..], vec![], None, &out, delta::DEFAULT_BUDGET).unwrap_err();
    assert!(matches!(err, DeltaError::Version { found: 1 }), "{err:?}");
    assert!(err.to_string().contains("version 1"), "{err}");
    assert!(!out.exists());
}

#[test]
fn delta_rebuilds_padding_that_is_not_zeros_and_a_tar_without_end_blocks() {
    let old = many_files(40, 700);
    let mut new = old.clone();
    new[3].1.extend_from_slice(b"# changed\n");
    let mut tar = tar_of(&new);
    // Junk in the padding after the first file (tar readers ignore it; the rebuild must not).
    let first_pad = 512 + new[0].1.len();
    tar[first_pad..first_pad + 5].copy_from_slice(b"junk!");
    round_trip(&tar_of(&old), &tar);
    // No end-of-archive blocks: the last gap is only the last file's padding.
    let end = tar.len() - 1024;
    assert!(tar[end..].iter().all(|b| *b == 0));
    round_trip(&tar_of(&old), &tar[..end]);
}

#[test]
fn a_mode_change_on_every_header_costs_little() {
    // Wheels rebuilt with another umask: every header differs in mode and so in checksum.
    let files = many_files(2000, 600);
    let tar_with_mode = |mode: u32| {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in &files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(mode);
            b.append_data(&mut h, path, &data[..]).unwrap();
        }
        b.into_inner().unwrap()
    };
    let report = round_trip(&tar_with_mode(0o644), &tar_with_mode(0o664));
    assert!(
        report.skeleton_cost_bytes < 120, // 186 with checksums as they are
        "2000 mode changes cost {} bytes of skeleton",
        report.skeleton_cost_bytes
    );
}

#[test]
fn many_small_text_changes_are_batched_and_rebuild() {
    // A patch release: a version string changes in every third module, the rest are equal.
    let old = many_files(300, 2000);
    let mut new = old.clone();
    for (i, (_, body)) in new.iter_mut().enumerate().filter(|(i, _)| i % 3 == 0) {
        let at = 100 + i % 500;
        body[at..at + 5].copy_from_slice(b"2.0.1");
    }
    let report = round_trip(&tar_of(&old), &tar_of(&new));
    assert!(report.batched_bytes > 90 * 1800, "{report:?}");
    assert_eq!(report.format_version, 3, "{report:?}");
}

#[test]
fn a_delta_without_new_ops_stays_readable_by_version_2_agents() {
    let old = many_files(50, 300);
    let mut new = old.clone();
    new.push(("lib/pkg/extra.py".into(), b"print('new')\n".to_vec()));
    let report = round_trip(&tar_of(&old), &tar_of(&new));
    assert_eq!(report.format_version, 2, "{report:?}");
}

/// A delta artifact from a header and a raw op stream.
fn artifact(header: &str, ops: &[u8]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for (name, data) in [("delta.json", header.as_bytes()), ("ops", ops)] {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        tar.append_data(&mut h, name, data).unwrap();
    }
    zstd::bulk::compress(&tar.into_inner().unwrap(), 3).unwrap()
}

#[test]
fn hostile_batch_ops_are_errors_that_say_what_was_wrong() {
    use delta::batch::BatchPart;
    use delta::op::{OldRef, Op, OpCodec, PatchMethod};

    let dir = tempfile::tempdir().unwrap();
    let old_dir = dir.path().join("old");
    std::fs::create_dir(&old_dir).unwrap();
    std::fs::write(old_dir.join("a.txt"), b"hello world").unwrap();
    let payload = delta::patch::zstd_ref_encode(b"hello world", b"hello there", 3).unwrap();
    let batch = Op::Batch {
        method: PatchMethod::ZstdRef,
        parts: vec![BatchPart {
            from: OldRef { base: 0, file: 0 },
            offset: 0,
            len: 11,
        }],
        out_len: 11,
        payload_len: payload.len() as u64,
    };
    let header = format!(
        r#"{{"version":3,"new_diff_id":"{}","new_size":11,"bases":["{}"],"window":1048576}}"#,
        Digest::of(b"hello there"),
        Digest::of(b"base")
    );
    let run = |after: &[Op]| {
        let mut ops = Vec::new();
        let mut codec = OpCodec::default();
        codec.write(&batch, &mut ops).unwrap();
        ops.extend_from_slice(&payload);
        for op in after {
            codec.write(op, &mut ops).unwrap();
        }
        let out = dir.path().join("new.tar");
        let bases = vec![delta::BaseDir::scan(old_dir.clone()).unwrap()];
        let result = apply_to_file(
            &artifact(&header, &ops)[..],
            bases,
            None,
            &out,
            delta::DEFAULT_BUDGET,
        );
        let err = match result {
            Ok(_) => return String::from("applied"),
            Err(err) => format!("{err:?}"),
        };
        assert!(!out.exists());
        err
    };
    let err = run(&[Op::FromBatch { len: 20 }]);
    assert!(
        err.contains("takes 20 bytes from a batch that has 11 left"),
        "{err}"
    );
    let err = run(&[Op::FromBatch { len: 5 }, Op::End]);
    assert!(
        err.contains("the end comes while the current batch still holds 6"),
        "{err}"
    );
    let err = run(&[Op::Batch {
        method: PatchMethod::ZstdRef,
        parts: vec![],
        out_len: 0,
        payload_len: 0,
    }]);
    assert!(err.contains("a batch op comes while"), "{err}");
    assert_eq!(run(&[Op::FromBatch { len: 11 }, Op::End]), "applied");
    // The reference may not reach past the old file, nor past twice the window.
    let mut ops = Vec::new();
    OpCodec::default()
        .write(
            &Op::Batch {
                method: PatchMethod::ZstdRef,
                parts: vec![BatchPart {
                    from: OldRef { base: 0, file: 0 },
                    offset: 5,
                    len: 100,
                }],
                out_len: 11,
                payload_len: 0,
            },
            &mut ops,
        )
        .unwrap();
    let out = dir.path().join("new.tar");
    let bases = vec![delta::BaseDir::scan(old_dir.clone()).unwrap()];
    let err = apply_to_file(
        &artifact(&header, &ops)[..],
        bases,
        None,
        &out,
        delta::DEFAULT_BUDGET,
    )
    .unwrap_err();
    assert!(
        format!("{err:?}").contains("batch part: 100 bytes at 5"),
        "{err:?}"
    );
    let mut ops = Vec::new();
    OpCodec::default()
        .write(
            &Op::Batch {
                method: PatchMethod::ZstdRef,
                parts: vec![
                    BatchPart {
                        from: OldRef { base: 0, file: 0 },
                        offset: 0,
                        len: u64::MAX,
                    },
                    BatchPart {
                        from: OldRef { base: 0, file: 0 },
                        offset: 0,
                        len: 2,
                    },
                ],
                out_len: 11,
                payload_len: 0,
            },
            &mut ops,
        )
        .unwrap();
    let bases = vec![delta::BaseDir::scan(old_dir.clone()).unwrap()];
    let err = apply_to_file(
        &artifact(&header, &ops)[..],
        bases,
        None,
        &out,
        delta::DEFAULT_BUDGET,
    )
    .unwrap_err();
    assert!(
        format!("{err:?}").contains("twice the delta's window"),
        "{err:?}"
    );
}
