//! Delta application: a [`DeltaReader`] yields the rebuilt tar stream op by op, so it can be
//! hashed and unpacked in one pass. It holds at most one reference window, one output window
//! and one payload; literal and copy ops stream through a small buffer.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use tracing::info;

use super::batch::BatchPart;
use super::op::{invalid, OldRef, Op, OpCodec, PatchMethod, PatchShape};
use super::patch::{bsdiff_apply, unbzip2, unbzip2_split, zstd_ref_decode};
use super::whole::{
    decode_whole, rebuild_base_tar, WholeHeader, PREFIX_LEN, WHOLE_FORMAT_VERSION, WHOLE_MAGIC,
};
use super::{
    DeltaError, DeltaHeader, OLDEST_FORMAT_VERSION, OPS_FORMAT_VERSION, OUTER_WINDOW_LOG,
    SKELETON_CHUNK,
};
use crate::digest::{Digest, DigestHasher};
use crate::layer_index::LayerIndex;
use crate::skeleton::{
    headers_before_content, normalise_checksums, restore_checksums, skeleton_path, SkeletonWindows,
};
use crate::store::Store;

/// Largest `delta.json` accepted: it holds a few digests.
const MAX_HEADER_JSON: u64 = 1 << 20;

/// An unpacked base layer and its regular files, numbered in sorted path order exactly like
/// the keys of its [`LayerIndex`].
#[derive(Debug, Clone)]
pub struct BaseDir {
    pub dir: PathBuf,
    pub files: Vec<String>,
}

impl BaseDir {
    pub fn from_index(dir: PathBuf, index: &LayerIndex) -> Self {
        Self {
            dir,
            files: index.files.keys().cloned().collect(),
        }
    }

    /// List the regular files of an unpacked layer that has no index at hand.
    pub fn scan(dir: PathBuf) -> io::Result<Self> {
        let mut files = Vec::new();
        let mut stack = vec![dir.clone()];
        while let Some(here) = stack.pop() {
            for item in std::fs::read_dir(&here)? {
                let item = item?;
                let kind = item.file_type()?;
                if kind.is_dir() {
                    stack.push(item.path());
                } else if kind.is_file() {
                    let path = item.path();
                    let rel = path
                        .strip_prefix(&dir)
                        .expect("walked paths are below the root");
                    files.push(rel.to_string_lossy().into_owned());
                }
            }
        }
        files.sort();
        Ok(Self { dir, files })
    }
}

/// How a delta names a base layer: by diff_id (the tar container's `delta.json`), or by the
/// first bytes of it (a whole-layer delta, [`super::whole`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaseName {
    DiffId(Digest),
    Prefix([u8; PREFIX_LEN]),
}

impl BaseName {
    /// Whether `diff_id` is the layer this names.
    pub fn names(&self, diff_id: &Digest) -> bool {
        match self {
            BaseName::DiffId(d) => d == diff_id,
            BaseName::Prefix(prefix) => diff_id.as_bytes()[..PREFIX_LEN] == prefix[..],
        }
    }
}

impl std::fmt::Display for BaseName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BaseName::DiffId(d) => write!(f, "{d}"),
            BaseName::Prefix(prefix) => {
                f.write_str("sha256:")?;
                prefix.iter().try_for_each(|b| write!(f, "{b:02x}"))?;
                f.write_str("…")
            }
        }
    }
}

/// Where ops come from: the decompressed `ops` entry of a tar container, or nothing for a
/// whole-layer delta, whose new tar is decoded when it is opened.
enum Body<R: Read> {
    Ops(io::Take<zstd::stream::read::Decoder<'static, BufReader<R>>>),
    Whole,
}

impl<R: Read> Read for Body<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Body::Ops(ops) => ops.read(buf),
            Body::Whole => Ok(0),
        }
    }
}

enum Pending {
    Nothing,
    Literal(u64),
    Copy(io::Take<File>),
    Buffer(Vec<u8>, usize),
    /// Bytes still to serve from the current batch.
    FromBatch(u64),
    /// Zero padding still to serve, then bytes from the current skeleton chunk.
    Gap {
        zeros: u64,
        left: u64,
    },
    Done,
}

/// The rebuilt tar stream of the delta's new layer.
pub struct DeltaReader<R: Read> {
    ops: Body<R>,
    header: DeltaHeader,
    bases: Vec<BaseDir>,
    pending: Pending,
    hasher: Option<DigestHasher>,
    /// The current decoded skeleton chunk and how much of it was served.
    skeleton: Vec<u8>,
    skeleton_pos: usize,
    /// Where the current chunk starts in the new compact skeleton.
    skeleton_offset: u64,
    /// The base skeletons' reference windows, each skeleton decoded once.
    old_skeletons: SkeletonWindows,
    codec: OpCodec,
    /// The current batch's output and how much of it was served.
    batch: Vec<u8>,
    batch_pos: usize,
}

impl<R: Read> std::fmt::Debug for DeltaReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeltaReader")
            .field("header", &self.header)
            .field("bases", &self.bases)
            .finish()
    }
}

impl<R: Read> DeltaReader<R> {
    /// Open a delta against the unpacked base layer dirs, in the order of its header.
    /// `expected` is the layer the caller wants; a whole-layer delta needs it.
    pub fn open(
        delta: R,
        bases: Vec<BaseDir>,
        expected: Option<Digest>,
        budget: u64,
    ) -> Result<Self, DeltaError> {
        Self::open_with(delta, budget, expected, |ids| {
            if ids.len() == bases.len() {
                Ok(bases)
            } else {
                Err(DeltaError::BaseCount {
                    expected: ids.len(),
                    given: bases.len(),
                })
            }
        })
    }

    /// Open a delta, mapping the bases it names to unpacked layer dirs. A delta that
    /// rebuilds another layer than `expected` is refused before anything is written.
    pub fn open_with(
        delta: R,
        budget: u64,
        expected: Option<Digest>,
        resolve_bases: impl FnOnce(&[BaseName]) -> Result<Vec<BaseDir>, DeltaError>,
    ) -> Result<Self, DeltaError> {
        let read = DeltaError::ReadDelta;
        let mut delta = BufReader::new(delta);
        if delta.fill_buf().map_err(read)?.starts_with(&WHOLE_MAGIC) {
            delta.consume(WHOLE_MAGIC.len());
            return Self::open_whole(delta, budget, expected, resolve_bases);
        }
        let mut outer = zstd::stream::read::Decoder::with_buffer(delta).map_err(read)?;
        outer.window_log_max(OUTER_WINDOW_LOG).map_err(read)?;
        let json_len = read_tar_header(&mut outer, "delta.json")?;
        if json_len > MAX_HEADER_JSON {
            return Err(DeltaError::Layout {
                expected: "small delta.json",
                found: format!("{json_len} bytes"),
            });
        }
        let mut json = vec![0u8; json_len as usize];
        outer.read_exact(&mut json).map_err(read)?;
        skip_padding(&mut outer, json_len)?;
        let header: DeltaHeader = serde_json::from_slice(&json).map_err(DeltaError::ParseHeader)?;
        if !(OLDEST_FORMAT_VERSION..=OPS_FORMAT_VERSION).contains(&header.version) {
            return Err(DeltaError::Version {
                found: header.version,
            });
        }
        if header.memory_needed() > budget {
            return Err(DeltaError::Budget {
                needed: header.memory_needed(),
                budget,
            });
        }
        if let Some(expected) = expected.filter(|e| *e != header.new_diff_id) {
            return Err(DeltaError::WrongLayer {
                expected,
                found: header.new_diff_id,
            });
        }
        let names: Vec<BaseName> = header.bases.iter().map(|d| BaseName::DiffId(*d)).collect();
        let bases = resolve_bases(&names)?;
        let ops_len = read_tar_header(&mut outer, "ops")?;
        Ok(Self::new(
            Body::Ops(outer.take(ops_len)),
            header,
            bases,
            Pending::Nothing,
        ))
    }

    /// A whole-layer delta (after its magic): the base rebuilt as a tar and the new tar
    /// decoded from it now, within the budget, then served as it is hashed.
    fn open_whole(
        mut delta: BufReader<R>,
        budget: u64,
        expected: Option<Digest>,
        resolve_bases: impl FnOnce(&[BaseName]) -> Result<Vec<BaseDir>, DeltaError>,
    ) -> Result<Self, DeltaError> {
        let whole = WholeHeader::read(&mut delta).map_err(DeltaError::ReadDelta)?;
        let new_diff_id = expected.ok_or(DeltaError::NeedsDiffId)?;
        if whole.memory_needed() > budget {
            return Err(DeltaError::Budget {
                needed: whole.memory_needed(),
                budget,
            });
        }
        let bases = resolve_bases(&[BaseName::Prefix(whole.base_prefix)])?;
        let [base] = &bases[..] else {
            return Err(DeltaError::BaseCount {
                expected: 1,
                given: bases.len(),
            });
        };
        let reference = rebuild_base_tar(&base.dir, whole.ref_len).map_err(|source| {
            DeltaError::RebuildBase {
                dir: base.dir.clone(),
                source,
            }
        })?;
        let tar =
            decode_whole(&whole, &reference, &mut delta).map_err(|source| DeltaError::Rebuild {
                diff_id: new_diff_id,
                source,
            })?;
        drop(reference);
        let header = DeltaHeader {
            version: WHOLE_FORMAT_VERSION,
            new_diff_id,
            new_size: whole.new_size,
            bases: Vec::new(),
            window: 0,
        };
        Ok(Self::new(
            Body::Whole,
            header,
            bases,
            Pending::Buffer(tar, 0),
        ))
    }

    fn new(ops: Body<R>, header: DeltaHeader, bases: Vec<BaseDir>, pending: Pending) -> Self {
        Self {
            ops,
            header,
            bases,
            pending,
            hasher: Some(DigestHasher::default()),
            skeleton: Vec::new(),
            skeleton_pos: 0,
            skeleton_offset: 0,
            old_skeletons: SkeletonWindows::new(),
            codec: OpCodec::default(),
            batch: Vec::new(),
            batch_pos: 0,
        }
    }

    pub fn header(&self) -> &DeltaHeader {
        &self.header
    }

    fn next_op(&mut self) -> io::Result<()> {
        if matches!(self.ops, Body::Whole) {
            // The whole new tar was served from the buffer decoded at open.
            self.verify()?;
            self.pending = Pending::Done;
            return Ok(());
        }
        let padding = self.codec.padding();
        let rest = &self.skeleton[self.skeleton_pos..];
        let op = self
            .codec
            .read_predicting(&mut self.ops, || headers_before_content(rest))?;
        self.pending = match op {
            Op::End => {
                self.batch_served("the end")?;
                self.verify()?;
                Pending::Done
            }
            Op::Literal { len } => Pending::Literal(len),
            op @ (Op::Gap { len } | Op::RawGap { len }) => {
                if len > (self.skeleton.len() - self.skeleton_pos) as u64 {
                    return Err(invalid(format!(
                        "gap of {len} bytes runs past the skeleton chunk"
                    )));
                }
                let zeros = if matches!(op, Op::Gap { .. }) {
                    padding
                } else {
                    0
                };
                Pending::Gap { zeros, left: len }
            }
            Op::Skeleton {
                base,
                normalised,
                shape,
            } => {
                self.next_skeleton_chunk(base, normalised, shape)?;
                Pending::Nothing
            }
            Op::CopyFile { from } => {
                let file = self.open_old(&from)?;
                let len = file.metadata()?.len();
                self.codec.content(len);
                Pending::Copy(file.take(len))
            }
            Op::Copy { from, offset, len } => {
                let mut file = self.open_old(&from)?;
                io::Seek::seek(&mut file, io::SeekFrom::Start(offset))?;
                Pending::Copy(file.take(len))
            }
            Op::Patch { from, shape } => {
                self.batch_served("a patch op")?;
                Pending::Buffer(self.patched_window(&from, shape)?, 0)
            }
            Op::Batch {
                method,
                parts,
                out_len,
                payload_len,
            } => {
                self.batch_served("a batch op")?;
                self.next_batch(method, &parts, out_len, payload_len)?;
                Pending::Nothing
            }
            Op::FromBatch { len } => {
                let left = (self.batch.len() - self.batch_pos) as u64;
                if len > left {
                    return Err(invalid(format!(
                        "op takes {len} bytes from a batch that has {left} left"
                    )));
                }
                Pending::FromBatch(len)
            }
        };
        Ok(())
    }

    /// The next chunk of the new tar skeleton: a patch against a window of a base layer's
    /// skeleton (kept beside each unpacked layer), checksums restored when normalised.
    fn next_skeleton_chunk(
        &mut self,
        base: u16,
        normalised: bool,
        shape: PatchShape,
    ) -> io::Result<()> {
        if shape.out_len > SKELETON_CHUNK
            || shape.ref_len > 2 * SKELETON_CHUNK
            || shape.payload_len > 2 * SKELETON_CHUNK
        {
            return Err(invalid(format!(
                "skeleton chunk exceeds {SKELETON_CHUNK} bytes"
            )));
        }
        let root = self
            .bases
            .get(usize::from(base))
            .ok_or_else(|| invalid(format!("op names base {base}")))?;
        let old = skeleton_path(&root.dir);
        let payload = self.read_payload(&shape)?;
        let mut reference = self
            .old_skeletons
            .window(&old, shape.ref_offset, shape.ref_len)
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("read tar skeleton {} of the base layer (coracle keeps one beside each layer it unpacks): {e}", old.display()),
                )
            })?;
        if normalised {
            normalise_checksums(&mut reference, shape.ref_offset);
        }
        self.skeleton = decode_patch(&shape, &reference, &payload)?;
        if normalised {
            restore_checksums(&mut self.skeleton, self.skeleton_offset);
        }
        self.skeleton_offset += shape.out_len;
        self.skeleton_pos = 0;
        Ok(())
    }

    /// New content made by patching a window of an old file.
    fn patched_window(&mut self, from: &OldRef, shape: PatchShape) -> io::Result<Vec<u8>> {
        let window = self.header.window;
        if shape.out_len > window
            || shape.ref_len > 2 * window
            || shape.payload_len > super::max_payload(window)
        {
            return Err(invalid(format!(
                "patch op exceeds the delta's window of {window} bytes"
            )));
        }
        let file = self.open_old(from)?;
        let payload = self.read_payload(&shape)?;
        let mut reference = vec![0u8; shape.ref_len as usize];
        file.read_exact_at(&mut reference, shape.ref_offset)?;
        decode_patch(&shape, &reference, &payload)
    }

    /// Refuse to go on to `next` while the current batch still holds bytes: a well-formed
    /// delta serves each batch completely before its next patch, so apply never holds a
    /// batch and a patch window at once (the memory budget counts one of them).
    fn batch_served(&mut self, next: &str) -> io::Result<()> {
        let left = self.batch.len() - self.batch_pos;
        if left > 0 {
            return Err(invalid(format!(
                "{next} comes while the current batch still holds {left} unserved bytes"
            )));
        }
        self.batch = Vec::new();
        self.batch_pos = 0;
        Ok(())
    }

    /// Decode a batch: its payload against the concatenated old file ranges it names.
    fn next_batch(
        &mut self,
        method: PatchMethod,
        parts: &[BatchPart],
        out_len: u64,
        payload_len: u64,
    ) -> io::Result<()> {
        let window = self.header.window;
        let ref_len = parts
            .iter()
            .try_fold(0u64, |sum, p| sum.checked_add(p.len))
            .filter(|sum| *sum <= 2 * window);
        let Some(ref_len) = ref_len else {
            return Err(invalid(format!(
                "batch op references more than twice the delta's window of {window} bytes"
            )));
        };
        if out_len > window || payload_len > super::max_payload(window) {
            return Err(invalid(format!(
                "batch op exceeds the delta's window of {window} bytes"
            )));
        }
        let shape = PatchShape {
            method,
            ref_offset: 0,
            ref_len,
            out_len,
            payload_len,
        };
        let payload = self.read_payload(&shape)?;
        let mut reference = vec![0u8; ref_len as usize];
        let mut at = 0;
        for part in parts {
            let end = at + part.len as usize;
            self.open_old(&part.from)?
                .read_exact_at(&mut reference[at..end], part.offset)
                .map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!(
                            "batch part: {} bytes at {} of old file {} of base {}: {e}",
                            part.len, part.offset, part.from.file, part.from.base
                        ),
                    )
                })?;
            at = end;
        }
        self.batch = decode_patch(&shape, &reference, &payload)?;
        self.batch_pos = 0;
        Ok(())
    }

    /// A patch's payload from the op stream. It comes first: a bzip2 payload is expanded
    /// and freed before the reference and the output are allocated.
    fn read_payload(&mut self, shape: &PatchShape) -> io::Result<Vec<u8>> {
        let mut payload = vec![0u8; shape.payload_len as usize];
        self.ops.read_exact(&mut payload)?;
        match shape.method {
            PatchMethod::BsdiffBz2 => payload = unbzip2(&payload, shape.out_len)?,
            PatchMethod::BsdiffBz2Split => payload = unbzip2_split(&payload, shape.out_len)?,
            PatchMethod::ZstdRef | PatchMethod::Bsdiff => {}
        }
        Ok(payload)
    }

    fn open_old(&self, from: &OldRef) -> io::Result<File> {
        let base = self
            .bases
            .get(usize::from(from.base))
            .ok_or_else(|| invalid(format!("op names base {}", from.base)))?;
        let path = base.files.get(from.file as usize).ok_or_else(|| {
            invalid(format!(
                "op names file {} of base {}, which has {} files",
                from.file,
                from.base,
                base.files.len()
            ))
        })?;
        open_in_layer(&base.dir, Path::new(path))
    }

    fn verify(&mut self) -> io::Result<()> {
        let hasher = self
            .hasher
            .take()
            .ok_or_else(|| invalid("delta ended twice".into()))?;
        let bytes = hasher.bytes();
        let actual = hasher.finish();
        if actual != self.header.new_diff_id || bytes != self.header.new_size {
            return Err(io::Error::other(DeltaError::VerifyDigest {
                expected: self.header.new_diff_id,
                actual,
                bytes,
            }));
        }
        Ok(())
    }
}

impl<R: Read> Read for DeltaReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let n = match &mut self.pending {
                Pending::Done => return Ok(0),
                Pending::Nothing => {
                    self.next_op()?;
                    continue;
                }
                Pending::Literal(left) => {
                    let want = buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                    let n = self.ops.read(&mut buf[..want])?;
                    if n == 0 && want > 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                    *left -= n as u64;
                    if *left == 0 {
                        self.pending = Pending::Nothing;
                    }
                    n
                }
                Pending::Copy(file) => {
                    let left = file.limit();
                    let n = file.read(buf)?;
                    if n == 0 && left > 0 {
                        return Err(invalid(format!(
                            "old file is {left} bytes shorter than the copy op"
                        )));
                    }
                    if file.limit() == 0 {
                        self.pending = Pending::Nothing;
                    }
                    n
                }
                Pending::Gap { zeros, left } if *zeros > 0 => {
                    let n = buf.len().min(usize::try_from(*zeros).unwrap_or(usize::MAX));
                    buf[..n].fill(0);
                    *zeros -= n as u64;
                    if *zeros == 0 && *left == 0 {
                        self.pending = Pending::Nothing;
                    }
                    n
                }
                Pending::Gap { left, .. } => {
                    if *left == 0 {
                        self.pending = Pending::Nothing;
                        continue;
                    }
                    let n = buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                    buf[..n]
                        .copy_from_slice(&self.skeleton[self.skeleton_pos..self.skeleton_pos + n]);
                    self.skeleton_pos += n;
                    *left -= n as u64;
                    if *left == 0 {
                        self.pending = Pending::Nothing;
                    }
                    n
                }
                Pending::FromBatch(left) => {
                    let n = buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                    buf[..n].copy_from_slice(&self.batch[self.batch_pos..self.batch_pos + n]);
                    self.batch_pos += n;
                    *left -= n as u64;
                    if *left == 0 {
                        self.pending = Pending::Nothing;
                    }
                    if n == 0 {
                        continue;
                    }
                    n
                }
                Pending::Buffer(data, pos) => {
                    let n = buf.len().min(data.len() - *pos);
                    buf[..n].copy_from_slice(&data[*pos..*pos + n]);
                    *pos += n;
                    if *pos == data.len() {
                        self.pending = Pending::Nothing;
                    }
                    n
                }
            };
            if n > 0 {
                if let Some(h) = self.hasher.as_mut() {
                    h.update(&buf[..n]);
                }
                return Ok(n);
            }
        }
    }
}

/// Open a regular file of an unpacked layer without following any symlink: old paths come
/// from the delta, which is untrusted input.
pub fn open_in_layer(root: &Path, rel: &Path) -> io::Result<File> {
    let clean =
        crate::unpack::sanitize_path(rel).map_err(|p| invalid(format!("old path {rel:?}: {p}")))?;
    let mut here = root.to_path_buf();
    for part in clean.parent().into_iter().flat_map(Path::components) {
        here.push(part);
        if !std::fs::symlink_metadata(&here)?.is_dir() {
            return Err(invalid(format!(
                "old path {rel:?} goes through {here:?}, which is not a directory"
            )));
        }
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(root.join(&clean))?;
    if !file.metadata()?.is_file() {
        return Err(invalid(format!("old path {rel:?} is not a regular file")));
    }
    Ok(file)
}

fn read_tar_header(input: &mut impl Read, expected: &'static str) -> Result<u64, DeltaError> {
    let mut block = [0u8; 512];
    input
        .read_exact(&mut block)
        .map_err(DeltaError::ReadDelta)?;
    let header = tar::Header::from_byte_slice(&block);
    let name = header.path_bytes().into_owned();
    if name != expected.as_bytes() {
        return Err(DeltaError::Layout {
            expected,
            found: String::from_utf8_lossy(&name).into_owned(),
        });
    }
    header.size().map_err(DeltaError::ReadDelta)
}

fn skip_padding(input: &mut impl Read, len: u64) -> Result<(), DeltaError> {
    let pad = (512 - len % 512) % 512;
    io::copy(&mut input.take(pad), &mut io::sink()).map_err(DeltaError::ReadDelta)?;
    Ok(())
}

fn rebuild_error(diff_id: Digest, source: io::Error) -> DeltaError {
    // A digest mismatch travels through `Read` as an io::Error; unwrap it again.
    match source
        .get_ref()
        .and_then(|e| e.downcast_ref::<DeltaError>())
    {
        Some(DeltaError::VerifyDigest {
            expected,
            actual,
            bytes,
        }) => DeltaError::VerifyDigest {
            expected: *expected,
            actual: *actual,
            bytes: *bytes,
        },
        _ => DeltaError::Rebuild { diff_id, source },
    }
}

/// Rebuild the new layer tar into `out` (temp → fsync → rename): the file appears only if
/// its digest is the one the delta promised.
pub fn apply_to_file(
    delta: impl Read,
    bases: Vec<BaseDir>,
    expected: Option<Digest>,
    out: &Path,
    budget: u64,
) -> Result<Digest, DeltaError> {
    write_rebuilt(DeltaReader::open(delta, bases, expected, budget)?, out)
}

/// [`apply_to_file`] with the bases looked up by the diff_ids the delta's header names, so a
/// wrong base is refused by name before anything is written.
pub fn apply_to_file_with(
    delta: impl Read,
    out: &Path,
    budget: u64,
    expected: Option<Digest>,
    resolve_bases: impl FnOnce(&[BaseName]) -> Result<Vec<BaseDir>, DeltaError>,
) -> Result<Digest, DeltaError> {
    write_rebuilt(
        DeltaReader::open_with(delta, budget, expected, resolve_bases)?,
        out,
    )
}

fn write_rebuilt(mut reader: DeltaReader<impl Read>, out: &Path) -> Result<Digest, DeltaError> {
    let diff_id = reader.header.new_diff_id;
    let temp = out.with_extension("partial");
    let write = |source| DeltaError::WriteOutput {
        path: out.into(),
        source,
    };
    let result = (|| {
        let mut file = File::create(&temp).map_err(write)?;
        io::copy(&mut reader, &mut file).map_err(|e| rebuild_error(diff_id, e))?;
        file.flush().and_then(|()| file.sync_all()).map_err(write)?;
        std::fs::rename(&temp, out).map_err(write)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result?;
    info!(diff_id = %diff_id, path = %out.display(), "delta applied");
    Ok(diff_id)
}

/// Rebuild → hash → unpack in one pass into the store, as `layers/<expected>/`. The bases
/// named by the delta must be in the store (a base named by prefix: exactly one layer).
pub fn apply_to_store(
    store: &Store,
    delta: impl Read,
    expected: &Digest,
    budget: u64,
) -> Result<Digest, DeltaError> {
    let store_err = |e| DeltaError::Store(Box::new(e));
    let reader = DeltaReader::open_with(delta, budget, Some(*expected), |names| {
        let held = store.layers().map_err(store_err)?;
        names
            .iter()
            .map(|name| {
                let mut matching = held.iter().filter(|d| name.names(d));
                match (matching.next(), matching.next()) {
                    (Some(d), None) => {
                        let index = store.layer_index(d).map_err(store_err)?;
                        Ok(BaseDir::from_index(store.layer_path(d), &index))
                    }
                    _ => Err(DeltaError::MissingBase { base: *name }),
                }
            })
            .collect()
    })?;
    let diff_id = reader.header.new_diff_id;
    store
        .add_layer(reader, &diff_id)
        .map_err(|e| DeltaError::Store(Box::new(e)))?;
    info!(diff_id = %diff_id, "delta applied into store");
    Ok(diff_id)
}

/// The patch's output from its reference and its (expanded) payload.
fn decode_patch(shape: &PatchShape, reference: &[u8], payload: &[u8]) -> io::Result<Vec<u8>> {
    let out_len = shape.out_len as usize;
    match shape.method {
        PatchMethod::ZstdRef => zstd_ref_decode(reference, payload, out_len),
        PatchMethod::Bsdiff | PatchMethod::BsdiffBz2 | PatchMethod::BsdiffBz2Split => {
            bsdiff_apply(reference, payload, out_len)
        }
    }
}
