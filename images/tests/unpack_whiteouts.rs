//! Whiteouts can only ever hide a sibling inside the layer being unpacked, and a layer cannot
//! make the unpacker read an unbounded tail after its end blocks. Each hostile layer is
//! unpacked beside a stored layer, which must come through untouched.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::io::Read;
use std::path::Path;

use coracle_images::unpack::{
    unpack_layer, UnpackError, UnpackLimits, WhiteoutProblem, MAX_BYTES_AFTER_END,
};
use tar::EntryType;

mod support;
use support::RawTar;

/// A store's layers dir: one stored layer, and the destination of the next unpack beside it.
struct LayersDir {
    dir: tempfile::TempDir,
}

impl LayersDir {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("stored/etc")).unwrap();
        std::fs::write(dir.path().join("stored/etc/os-release"), b"debian").unwrap();
        Self { dir }
    }

    fn unpack(&self, tar: impl Read) -> Result<(), UnpackError> {
        let dest = self.dir.path().join("new");
        unpack_layer(tar, &dest, None, &UnpackLimits::default()).map(|_| ())
    }

    /// The stored layer is whole and the failed unpack left nothing.
    fn assert_untouched(&self) {
        let os_release = self.dir.path().join("stored/etc/os-release");
        assert_eq!(std::fs::read(os_release).unwrap(), b"debian");
        let mut names: Vec<_> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["stored"], "unpack left something behind");
    }
}

fn expect_whiteout_refused(tar: &[u8], want: WhiteoutProblem) {
    let layers = LayersDir::new();
    let err = layers.unpack(tar).unwrap_err();
    match &err {
        UnpackError::Whiteout { problem, .. } => assert_eq!(problem, &want, "{err}"),
        other => panic!("expected a refused whiteout, got {other}"),
    }
    layers.assert_untouched();
}

#[test]
fn whiteout_of_the_parent_dir_is_refused_and_deletes_nothing() {
    let top = RawTar::default()
        .entry(".wh...", EntryType::Regular, 0o644, b"", None)
        .finish();
    expect_whiteout_refused(&top, WhiteoutProblem::NotASibling("..".into()));
    let nested = RawTar::default()
        .file("etc/keep", b"x")
        .entry("etc/.wh...", EntryType::Regular, 0o644, b"", None)
        .finish();
    expect_whiteout_refused(&nested, WhiteoutProblem::NotASibling("..".into()));
}

#[test]
fn whiteout_of_the_dir_itself_or_of_nothing_is_refused() {
    let dot = RawTar::default()
        .file("etc/keep", b"x")
        .entry("etc/.wh..", EntryType::Regular, 0o644, b"", None)
        .finish();
    expect_whiteout_refused(&dot, WhiteoutProblem::NotASibling(".".into()));
    let empty = RawTar::default()
        .file("etc/keep", b"x")
        .entry("etc/.wh.", EntryType::Regular, 0o644, b"", None)
        .finish();
    expect_whiteout_refused(&empty, WhiteoutProblem::NotASibling(String::new()));
}

#[test]
fn whiteout_used_as_a_directory_is_refused() {
    let tar = RawTar::default()
        .entry(".wh.etc/passwd", EntryType::Regular, 0o644, b"", None)
        .finish();
    expect_whiteout_refused(&tar, WhiteoutProblem::NotLast(".wh.etc".into()));
}

#[test]
fn hostile_whiteouts_in_pax_names_are_refused_too() {
    let cases = [
        (".wh...", WhiteoutProblem::NotASibling("..".into())),
        ("usr/.wh..", WhiteoutProblem::NotASibling(".".into())),
        ("usr/lib/.wh.", WhiteoutProblem::NotASibling(String::new())),
        ("usr/.wh.lib/x", WhiteoutProblem::NotLast(".wh.lib".into())),
    ];
    for (path, want) in cases {
        let tar = RawTar::default()
            .pax_entry(path, EntryType::Regular, b"")
            .finish();
        expect_whiteout_refused(&tar, want);
    }
}

#[test]
fn ordinary_whiteouts_still_hide_their_sibling() {
    let layers = LayersDir::new();
    let tar = RawTar::default()
        .file("data/keep.txt", b"k")
        .entry("data/.wh.gone.txt", EntryType::Regular, 0o644, b"", None)
        .entry("data/.wh...hidden", EntryType::Regular, 0o644, b"", None)
        .finish();
    if let Err(err) = layers.unpack(&tar[..]) {
        // Making the 0/0 whiteout node needs Linux >= 5.8 unprivileged, or root.
        panic!("unpack with ordinary whiteouts: {err}");
    }
    use std::os::unix::fs::FileTypeExt;
    let new = layers.dir.path().join("new/data");
    for hidden in ["gone.txt", "..hidden"] {
        let meta = std::fs::symlink_metadata(new.join(hidden)).unwrap();
        assert!(meta.file_type().is_char_device(), "{hidden} is no whiteout");
    }
    assert_eq!(std::fs::read(new.join("keep.txt")).unwrap(), b"k");
    assert!(Path::new(&layers.dir.path().join("stored/etc/os-release")).is_file());
}

#[test]
fn endless_data_after_the_end_blocks_is_refused_without_reading_it() {
    let layers = LayersDir::new();
    let tar = RawTar::default().file("etc/hostname", b"pi\n").finish();
    // An endless stream of zeros behind a valid layer: the unpack must stop on its own.
    let err = layers
        .unpack((&tar[..]).chain(std::io::repeat(0)))
        .unwrap_err();
    assert!(
        matches!(err, UnpackError::TrailingData { limit } if limit == MAX_BYTES_AFTER_END),
        "{err}"
    );
    assert!(err.to_string().contains("end-of-archive"), "{err}");
    layers.assert_untouched();
}

#[test]
fn a_zstd_layer_with_gigabytes_of_zeros_after_its_end_is_refused() {
    let tar = RawTar::default().file("etc/hostname", b"pi\n").finish();
    // 1 GiB of zeros compresses to a few tens of KB: what an attacker would serve.
    let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    std::io::Write::write_all(&mut encoder, &tar).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..1024 {
        std::io::Write::write_all(&mut encoder, &zeros).unwrap();
    }
    let blob = encoder.finish().unwrap();
    assert!(blob.len() < 1 << 20, "{} bytes", blob.len());
    let layers = LayersDir::new();
    let read = std::cell::Cell::new(0u64);
    let counting = CountingReader {
        inner: coracle_images::codec::decompress_sniffed(&blob[..]).unwrap(),
        read: &read,
    };
    let err = layers.unpack(counting).unwrap_err();
    assert!(matches!(err, UnpackError::TrailingData { .. }), "{err}");
    assert!(
        read.get() < 16 << 20,
        "read {} bytes of the decompressed stream",
        read.get()
    );
    layers.assert_untouched();
}

#[test]
fn the_usual_record_padding_after_the_end_blocks_is_accepted() {
    let layers = LayersDir::new();
    let mut tar = RawTar::default().file("etc/hostname", b"pi\n").finish();
    tar.resize(tar.len().div_ceil(10240) * 10240 + 10240, 0);
    layers.unpack(&tar[..]).unwrap();
}

struct CountingReader<'a, R> {
    inner: R,
    read: &'a std::cell::Cell<u64>,
}

impl<R: Read> Read for CountingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.set(self.read.get() + n as u64);
        Ok(n)
    }
}
