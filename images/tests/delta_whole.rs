//! Whole-layer deltas (format 4): a small layer's delta as one zstd frame over the base's
//! whole tar, rebuilt on the device from the unpacked layer and its skeleton.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::path::{Path, PathBuf};

use coracle_images::delta::op::PatchMethod;
use coracle_images::delta::whole::{rebuild_base_tar, WholeHeader, WHOLE_FORMAT_VERSION};
use coracle_images::delta::{
    self, apply_to_file, apply_to_store, encode, BaseDir, BaseLayer, DeltaError, EncodeOptions,
    EncodeReport,
};
use coracle_images::digest::Digest;
use coracle_images::store::{Store, StoreConfig};
use coracle_images::unpack::{unpack_layer, UnpackLimits};

/// Python-like modules: distinct text of a few KB each.
fn module(i: usize, version: &str, extra: usize) -> Vec<u8> {
    let mut body = format!("\"\"\"Module {i} of the package, version {version}.\"\"\"\n");
    for f in 0..40 + i % 7 {
        body += &format!(
            "def handler_{i}_{f}(request, timeout=None):\n    return request.send(timeout or {})\n\n",
            f * 13 + i
        );
    }
    for f in 0..extra {
        body += &format!("def added_in_{version}_{f}(session):\n    return session.close()\n\n");
    }
    body.into_bytes()
}

/// A pure-Python package unpacked into site-packages: directories, modules and a
/// `dist-info` directory named after the version.
fn package_tar(version: &str, changed: &[usize]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let dir = |b: &mut tar::Builder<Vec<u8>>, path: &str| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        b.append_data(&mut h, path, &[][..]).unwrap();
    };
    let file = |b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, path, data).unwrap();
    };
    dir(&mut b, "usr/lib/python3/site-packages/pkg/");
    let mut record = String::new();
    for i in 0..24 {
        let extra = if changed.contains(&i) { 12 } else { 0 };
        let tag = if changed.contains(&i) { version } else { "1.0" };
        let data = module(i, tag, extra);
        let path = format!("usr/lib/python3/site-packages/pkg/mod_{i:02}.py");
        record += &format!("{path},sha256={},{}\n", Digest::of(&data).hex(), data.len());
        file(&mut b, &path, &data);
    }
    let info = format!("usr/lib/python3/site-packages/pkg-{version}.dist-info");
    dir(&mut b, &format!("{info}/"));
    let metadata = format!("Metadata-Version: 2.1\nName: pkg\nVersion: {version}\n");
    file(&mut b, &format!("{info}/METADATA"), metadata.as_bytes());
    file(&mut b, &format!("{info}/RECORD"), record.as_bytes());
    b.into_inner().unwrap()
}

struct Encoded {
    dir: tempfile::TempDir,
    old_tar: Vec<u8>,
    old_dir: PathBuf,
    old_diff_id: Digest,
    new_tar: Vec<u8>,
    delta: Vec<u8>,
    report: EncodeReport,
}

fn encode_pair(old_tar: Vec<u8>, new_tar: Vec<u8>, budget: u64) -> Encoded {
    let options = EncodeOptions {
        apply_budget: budget,
        ..EncodeOptions::default()
    };
    encode_pair_with(old_tar, new_tar, &options)
}

fn encode_pair_with(old_tar: Vec<u8>, new_tar: Vec<u8>, options: &EncodeOptions) -> Encoded {
    let dir = tempfile::tempdir().unwrap();
    let old_dir = dir.path().join("old");
    let unpacked = unpack_layer(&old_tar[..], &old_dir, None, &UnpackLimits::default()).unwrap();
    let new_path = dir.path().join("new.tar");
    std::fs::write(&new_path, &new_tar).unwrap();
    let base = BaseLayer {
        diff_id: unpacked.diff_id,
        dir: &old_dir,
        index: &unpacked.index,
    };
    let mut delta = Vec::new();
    let report = encode(&new_path, &[base], dir.path(), &mut delta, options).unwrap();
    Encoded {
        dir,
        old_tar,
        old_dir,
        old_diff_id: unpacked.diff_id,
        new_tar,
        delta,
        report,
    }
}

fn patch_release() -> Encoded {
    encode_pair(
        package_tar("1.0", &[]),
        package_tar("1.0.1", &[3, 17]),
        delta::DEFAULT_BUDGET,
    )
}

/// Apply `delta` to the pair's unpacked base as a file, naming `expected`; an error leaves
/// no output behind.
fn apply_as_file(
    e: &Encoded,
    delta: &[u8],
    expected: Option<Digest>,
    budget: u64,
) -> Result<Digest, DeltaError> {
    let out = e.dir.path().join("rebuilt.tar");
    let bases = vec![BaseDir::scan(e.old_dir.clone()).unwrap()];
    let result = apply_to_file(delta, bases, expected, &out, budget);
    match &result {
        Ok(_) => assert_eq!(std::fs::read(&out).unwrap(), e.new_tar),
        Err(_) => assert!(!out.exists() && !out.with_extension("partial").exists()),
    }
    let _ = std::fs::remove_file(&out);
    result
}

/// Applying the pair's delta naming `expected` rebuilds a tar that does not hash to it.
fn refused_as_not_hashing_to(e: &Encoded, expected: Digest) {
    let err = apply_as_file(e, &e.delta, Some(expected), delta::DEFAULT_BUDGET).unwrap_err();
    assert!(
        matches!(err, DeltaError::VerifyDigest { expected: named, .. } if named == expected),
        "{err:?}"
    );
}

fn store_holding(dir: &Path, layers: &[&[u8]]) -> Store {
    let no_reserve = StoreConfig {
        reserve_bytes: 0,
        ..StoreConfig::default()
    };
    let store = Store::open(&dir.join("store"), no_reserve).unwrap();
    for tar in layers {
        store.add_layer(*tar, &Digest::of(tar)).unwrap();
    }
    store
}

#[test]
fn a_small_patch_release_is_one_frame_over_the_whole_old_tar() {
    let e = patch_release();
    assert_eq!(
        e.report.format_version, WHOLE_FORMAT_VERSION,
        "{:?}",
        e.report
    );
    assert!(
        e.report.delta_bytes < e.report.ops_delta_bytes,
        "{:?}",
        e.report
    );
    assert_eq!(e.delta.len() as u64, e.report.delta_bytes);
    // It costs no more than zstd --patch-from of the whole tars, whose frame it is.
    let zstd_whole = delta::patch::zstd_ref_encode(&e.old_tar, &e.new_tar, 19).unwrap();
    assert!(
        e.delta.len() <= zstd_whole.len() + 8,
        "whole-layer delta {} bytes, zstd --patch-from {}",
        e.delta.len(),
        zstd_whole.len()
    );

    let new_id = Digest::of(&e.new_tar);
    let digest = apply_as_file(&e, &e.delta, Some(new_id), delta::DEFAULT_BUDGET).unwrap();
    assert_eq!(digest, new_id);

    // The agent's path: into the store, the base found by the prefix the delta carries.
    let store = store_holding(e.dir.path(), &[&e.old_tar]);
    let diff_id = apply_to_store(&store, &e.delta[..], &new_id, delta::DEFAULT_BUDGET).unwrap();
    assert_eq!(diff_id, new_id);
    let index = store.layer_index(&new_id).unwrap();
    assert!(index
        .files
        .contains_key("usr/lib/python3/site-packages/pkg-1.0.1.dist-info/RECORD"));
}

#[test]
fn a_whole_layer_delta_needs_the_layer_it_rebuilds_named() {
    let e = patch_release();
    let err = apply_as_file(&e, &e.delta, None, delta::DEFAULT_BUDGET).unwrap_err();
    assert!(matches!(err, DeltaError::NeedsDiffId), "{err:?}");
    // Naming another layer: the rebuilt tar does not hash to it, and nothing is kept.
    refused_as_not_hashing_to(&e, Digest::of(b"another layer"));
}

#[test]
fn a_tar_container_delta_for_another_layer_is_refused_before_writing() {
    let options = EncodeOptions {
        try_whole: false,
        ..EncodeOptions::default()
    };
    let e = encode_pair_with(
        package_tar("1.0", &[]),
        package_tar("1.0.1", &[3, 17]),
        &options,
    );
    assert!(e.report.format_version < WHOLE_FORMAT_VERSION);
    let other = Digest::of(b"another layer");
    let err = apply_as_file(&e, &e.delta, Some(other), delta::DEFAULT_BUDGET).unwrap_err();
    let new_id = Digest::of(&e.new_tar);
    assert!(
        matches!(err, DeltaError::WrongLayer { expected, found } if expected == other && found == new_id),
        "{err:?}"
    );
}

/// The delta with its header replaced (the payload kept).
fn with_header(e: &Encoded, edit: impl FnOnce(&mut WholeHeader)) -> Vec<u8> {
    let mut rest = &e.delta[2..];
    let mut header = WholeHeader::read(&mut rest).unwrap();
    edit(&mut header);
    let mut delta = Vec::new();
    header.write(&mut delta).unwrap();
    delta.extend_from_slice(rest);
    delta
}

/// Bytes of the delta's header (magic included).
fn header_len_after(e: &Encoded) -> usize {
    let mut rest = &e.delta[2..];
    WholeHeader::read(&mut rest).unwrap();
    e.delta.len() - rest.len()
}

#[test]
fn hostile_whole_layer_deltas_are_refused_saying_what_was_wrong() {
    let e = patch_release();
    let new_id = Digest::of(&e.new_tar);
    let apply =
        |delta: &[u8], budget: u64| apply_as_file(&e, delta, Some(new_id), budget).unwrap_err();
    let err = apply(&e.delta[..5], delta::DEFAULT_BUDGET);
    assert!(matches!(err, DeltaError::ReadDelta(_)), "{err:?}");

    let mut unknown_method = e.delta.clone();
    let header_len = header_len_after(&e);
    unknown_method[header_len - 1] = 9;
    let err = apply(&unknown_method, delta::DEFAULT_BUDGET);
    assert!(
        format!("{err:?}").contains("unknown patch method 9"),
        "{err:?}"
    );

    let err = apply(&with_header(&e, |h| h.ref_len += 1), delta::DEFAULT_BUDGET);
    assert!(format!("{err:?}").contains("rebuilds as a"), "{err:?}");

    let err = apply(
        &with_header(&e, |h| h.new_size = 1 << 40),
        delta::DEFAULT_BUDGET,
    );
    assert!(matches!(err, DeltaError::Budget { .. }), "{err:?}");

    let err = apply(&e.delta, 1 << 20);
    assert!(
        matches!(err, DeltaError::Budget { budget, .. } if budget == 1 << 20),
        "{err:?}"
    );

    let mut garbled = e.delta.clone();
    let end = garbled.len();
    garbled[end - 40..].fill(0x5a);
    let err = apply(&garbled, delta::DEFAULT_BUDGET);
    assert!(
        matches!(
            err,
            DeltaError::Rebuild { .. } | DeltaError::VerifyDigest { .. }
        ),
        "{err:?}"
    );

    // A payload longer than any patch of the layer: refused, not read to the end.
    let mut long = with_header(&e, |h| h.new_size = 100);
    long.extend(std::iter::repeat_n(0u8, 4096));
    let err = apply(&long, delta::DEFAULT_BUDGET);
    assert!(format!("{err:?}").contains("larger than"), "{err:?}");

    // A base the store does not hold (the prefix of another layer) is named.
    let unrelated = package_tar("2.0", &[1]);
    let store = store_holding(e.dir.path(), &[&unrelated]);
    let err = apply_to_store(&store, &e.delta[..], &new_id, delta::DEFAULT_BUDGET).unwrap_err();
    assert!(
        matches!(err, DeltaError::MissingBase { base } if base.names(&e.old_diff_id)),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(&e.old_diff_id.hex()[..16]),
        "{err}"
    );
    assert!(!store.has_layer(&new_id));
}

#[test]
fn a_changed_base_file_fails_the_rebuild_and_keeps_nothing() {
    let e = patch_release();
    let module = e
        .old_dir
        .join("usr/lib/python3/site-packages/pkg/mod_05.py");
    let mut bytes = std::fs::read(&module).unwrap();
    bytes[20] ^= 1;
    std::fs::write(&module, bytes).unwrap();
    // The reference differs by one byte, so zstd decodes another tar of the same length.
    refused_as_not_hashing_to(&e, Digest::of(&e.new_tar));
}

#[test]
fn a_budget_too_small_for_both_tars_keeps_the_op_stream() {
    // 2 × 6 MB of tars and the payload do not fit in 24 MiB; the op stream's windows do.
    let big = |seed: u8| -> Vec<u8> {
        (0..6_000_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 ^ seed)
            .collect()
    };
    let tar = |data: Vec<u8>| {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, "opt/blob.bin", &data[..]).unwrap();
        b.into_inner().unwrap()
    };
    let mut changed = big(1);
    changed[3_000_000..3_000_100].fill(7);
    let e = encode_pair(tar(big(1)), tar(changed), 24 << 20);
    assert!(
        e.report.format_version < WHOLE_FORMAT_VERSION,
        "{:?}",
        e.report
    );
}

/// Pseudo machine code: words that change when code moves.
fn binary(seed: u32, len: usize) -> Vec<u8> {
    (0..len as u32 / 4)
        .flat_map(|i| (i.wrapping_mul(2_654_435_761) ^ seed).to_le_bytes())
        .collect()
}

#[test]
fn a_relinked_library_in_a_small_layer_is_one_bsdiff_over_the_whole_old_tar() {
    let lib = binary(5, 400_000);
    let mut relinked = lib.clone();
    // Code moved by a few bytes, and every address after it shifted by a constant.
    relinked.splice(10_000..10_000, [0x90; 24]);
    for word in relinked[20_000..].chunks_mut(32) {
        word[0] = word[0].wrapping_add(24);
    }
    let layer = |lib: &[u8], version: &str| {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in [
            ("usr/lib/libthing.so.1", lib),
            ("usr/share/doc/thing/VERSION", version.as_bytes()),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o755);
            b.append_data(&mut h, path, data).unwrap();
        }
        b.into_inner().unwrap()
    };
    let e = encode_pair(
        layer(&lib, "1.0.0\n"),
        layer(&relinked, "1.0.1\n"),
        delta::DEFAULT_BUDGET,
    );
    assert_eq!(
        e.report.format_version, WHOLE_FORMAT_VERSION,
        "{:?}",
        e.report
    );
    let header = WholeHeader::read(&mut &e.delta[2..]).unwrap();
    assert_eq!(header.method, PatchMethod::BsdiffBz2Split, "{header:?}");
    let zstd_whole = delta::patch::zstd_ref_encode(&e.old_tar, &e.new_tar, 19).unwrap();
    assert!(
        e.delta.len() < zstd_whole.len(),
        "{} vs zstd {}",
        e.delta.len(),
        zstd_whole.len()
    );

    let new_id = Digest::of(&e.new_tar);
    let store = store_holding(e.dir.path(), &[&e.old_tar]);
    apply_to_store(&store, &e.delta[..], &new_id, delta::DEFAULT_BUDGET).unwrap();
    let rebuilt = std::fs::read(store.layer_path(&new_id).join("usr/lib/libthing.so.1")).unwrap();
    assert!(rebuilt == relinked, "relinked library differs");
}

/// A tar of every kind of entry a base layer holds: directories, a GNU long name, a PAX
/// path, symlinks, hard links, empty and executable files.
fn varied_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_size(0);
    b.append_data(&mut h, "srv/", &[][..]).unwrap();
    let mut file = |path: &str, data: &[u8], mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, path, data).unwrap();
    };
    file("srv/run.sh", b"#!/bin/sh\nexec true\n", 0o755);
    file("srv/empty", b"", 0o644);
    let long = format!("srv/{}/data.txt", "deep".repeat(40));
    file(&long, &b"long name content\n".repeat(50), 0o644);
    let mut b = b;
    // A PAX `path` record, as Python's tarfile and Go write for long names.
    let pax_path = format!("srv/{}/pax.txt", "pax".repeat(50));
    let record = {
        let body = format!(" path={pax_path}\n");
        let mut len = body.len() + 1;
        while format!("{len}{body}").len() != len {
            len += 1;
        }
        format!("{len}{body}")
    };
    let mut x = tar::Header::new_ustar();
    x.set_entry_type(tar::EntryType::XHeader);
    x.set_path("PaxHeaders/pax.txt").unwrap();
    x.set_size(record.len() as u64);
    x.set_mode(0o644);
    x.set_cksum();
    b.append(&x, record.as_bytes()).unwrap();
    let content = b"content named by a PAX record\n".repeat(30);
    let mut h = tar::Header::new_ustar();
    h.set_path("srv/pax.txt").unwrap();
    h.set_size(content.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append(&h, &content[..]).unwrap();
    let mut link = tar::Header::new_gnu();
    link.set_entry_type(tar::EntryType::Symlink);
    link.set_size(0);
    link.set_mode(0o777);
    b.append_link(&mut link, "srv/current", "run.sh").unwrap();
    let mut hard = tar::Header::new_gnu();
    hard.set_entry_type(tar::EntryType::Link);
    hard.set_size(0);
    hard.set_mode(0o755);
    b.append_link(&mut hard, "srv/run-again.sh", "srv/run.sh")
        .unwrap();
    b.into_inner().unwrap()
}

#[test]
fn the_base_is_rebuilt_as_its_original_tar_from_the_unpacked_layer() {
    let tar = varied_tar();
    let dir = tempfile::tempdir().unwrap();
    let layer = dir.path().join("layer");
    unpack_layer(&tar[..], &layer, None, &UnpackLimits::default()).unwrap();
    assert!(layer
        .join(format!("srv/{}/pax.txt", "pax".repeat(50)))
        .is_file());
    let rebuilt = rebuild_base_tar(&layer, 1 << 30).unwrap();
    assert!(rebuilt == tar, "rebuilt tar differs from the original");
    // Past the limit it is refused, not truncated.
    let err = rebuild_base_tar(&layer, tar.len() as u64 - 1).unwrap_err();
    assert!(err.to_string().contains("larger than"), "{err}");
    // A file whose size no longer matches its header cannot stand in for it.
    std::fs::write(layer.join("srv/run.sh"), b"#!/bin/sh\n").unwrap();
    let err = rebuild_base_tar(&layer, 1 << 30).unwrap_err();
    assert!(err.to_string().contains("srv/run.sh"), "{err}");
}
