//! Delta encoding (runs once per layer pair on the controller). Two passes over the new tar:
//! find the content regions of regular files, then walk the tar emitting literal bytes for
//! everything between regions and per-window ops for each region. Memory stays within a few
//! windows whatever the layer size; the op stream goes to a scratch file.

use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use tracing::{debug, info};

use super::batch::{plan_batches, Member};
use super::batch_encoder::emit_batch_if_smaller;
use super::gaps::{GapEncoder, GapSpan};
use super::matcher::{Counterpart, OldFiles};
use super::op::{Op, OpCodec, PatchMethod, PatchShape};
use super::patch::{best_bsdiff, zstd_ref_encode};
use super::whole::{encode_whole, MAX_WHOLE_BYTES, WHOLE_FORMAT_VERSION};
use super::window::plan_windows;
use super::{
    window_for_budget, DeltaError, DeltaHeader, DEFAULT_BUDGET, OLDEST_FORMAT_VERSION,
    OUTER_WINDOW_LOG,
};
use crate::digest::{Digest, DigestHasher};
use crate::layer_index::LayerIndex;
use crate::skeleton::skeleton_path;

/// An old layer the delta may take bytes from.
#[derive(Debug)]
pub struct BaseLayer<'a> {
    pub diff_id: Digest,
    pub dir: &'a Path,
    pub index: &'a LayerIndex,
}

#[derive(Debug, Clone)]
pub struct EncodeOptions {
    /// zstd level for literals, patches and the outer stream.
    pub level: i32,
    /// Memory budget the device will apply this delta with.
    pub apply_budget: u64,
    /// Changed files smaller than this are literal, not patched (identical ones are still
    /// copied by reference).
    pub min_patch_size: u64,
    /// Also try a whole-layer delta ([`super::whole`]) for small layers and keep it when it
    /// is smaller.
    pub try_whole: bool,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        Self {
            level: 19,
            apply_budget: DEFAULT_BUDGET,
            min_patch_size: 128,
            try_whole: true,
        }
    }
}

/// Bytes of the new tar by how they were produced, and the delta's size.
#[derive(Debug, Clone, Default)]
pub struct EncodeReport {
    pub new_diff_id: Option<Digest>,
    pub new_tar_bytes: u64,
    pub delta_bytes: u64,
    /// Tar headers, padding and end blocks.
    pub skeleton_bytes: u64,
    /// What the skeleton chunks that encode them cost, each measured compressed on its own.
    pub skeleton_cost_bytes: u64,
    pub literal_bytes: u64,
    pub copied_bytes: u64,
    pub zstd_patched_bytes: u64,
    pub bsdiff_patched_bytes: u64,
    /// Content of small changed files patched together in batches.
    pub batched_bytes: u64,
    /// The oldest format version that holds every op used: an agent that reads only
    /// [`OLDEST_FORMAT_VERSION`] can apply the delta when no newer op paid off; 4 when the
    /// whole-layer delta was smaller and kept (the other fields describe the op stream).
    pub format_version: u32,
    /// What the op stream's tar container came to, whichever was kept.
    pub ops_delta_bytes: u64,
}

/// A regular file's content inside the new tar.
pub(super) struct Region {
    pub(super) path: String,
    pub(super) offset: u64,
    pub(super) size: u64,
}

/// Encode the delta that rebuilds `new_tar` from `bases`, writing it to `out`: the op stream,
/// or for a small layer over one base the whole-layer delta when that is smaller.
pub fn encode(
    new_tar: &Path,
    bases: &[BaseLayer<'_>],
    scratch_dir: &Path,
    mut out: impl Write,
    options: &EncodeOptions,
) -> Result<EncodeReport, DeltaError> {
    let whole = match bases {
        [base] if options.try_whole => whole_candidate(new_tar, base, options.apply_budget)?,
        _ => None,
    };
    let Some(whole) = whole else {
        return encode_ops(new_tar, bases, scratch_dir, out, options);
    };
    // Small layers only: the op stream fits in memory while the two are compared.
    let mut ops = Vec::new();
    let mut report = encode_ops(new_tar, bases, scratch_dir, &mut ops, options)?;
    let kept = if whole.len() < ops.len() {
        report.format_version = WHOLE_FORMAT_VERSION;
        whole
    } else {
        ops
    };
    out.write_all(&kept).map_err(DeltaError::WriteDelta)?;
    out.flush().map_err(DeltaError::WriteDelta)?;
    report.delta_bytes = kept.len() as u64;
    info!(
        delta_bytes = report.delta_bytes,
        op_stream_bytes = report.ops_delta_bytes,
        format = report.format_version,
        "kept the smaller of the whole-layer delta and the op stream"
    );
    Ok(report)
}

/// The whole-layer delta of a small new tar over one base, if it can be made.
fn whole_candidate(
    new_tar: &Path,
    base: &BaseLayer<'_>,
    budget: u64,
) -> Result<Option<Vec<u8>>, DeltaError> {
    let read_new = |source| DeltaError::ReadNewTar {
        path: new_tar.into(),
        source,
    };
    let size = std::fs::metadata(new_tar).map_err(read_new)?.len();
    if size > MAX_WHOLE_BYTES {
        return Ok(None);
    }
    let new = std::fs::read(new_tar).map_err(read_new)?;
    encode_whole(&new, &base.diff_id, base.dir, budget).map_err(DeltaError::WriteDelta)
}

/// Encode the op stream in its tar+zstd container.
fn encode_ops(
    new_tar: &Path,
    bases: &[BaseLayer<'_>],
    scratch_dir: &Path,
    out: impl Write,
    options: &EncodeOptions,
) -> Result<EncodeReport, DeltaError> {
    let read_new = |source| DeltaError::ReadNewTar {
        path: new_tar.into(),
        source,
    };
    let new = File::open(new_tar).map_err(read_new)?;
    let new_size = new.metadata().map_err(read_new)?.len();
    let regions = content_regions(&new).map_err(read_new)?;
    let indexes: Vec<&LayerIndex> = bases.iter().map(|b| b.index).collect();
    let old = OldFiles::new(&indexes);
    let window = window_for_budget(options.apply_budget);

    let ops_path = scratch_dir.join(format!(".delta-ops-{}", std::process::id()));
    let _cleanup = crate::unpack::RemoveFile(ops_path.clone());
    let ops_file = File::create(&ops_path).map_err(DeltaError::WriteDelta)?;
    let mut enc = OpWriter {
        out: BufWriter::new(ops_file),
        codec: OpCodec::default(),
        report: EncodeReport {
            format_version: OLDEST_FORMAT_VERSION,
            ..EncodeReport::default()
        },
    };
    let gaps = gap_spans(&regions, new_size);
    let mut skeleton =
        skeleton_encoder(&new, &gaps, &ops_path, bases, options.level).map_err(read_new)?;
    let counterparts = regions
        .iter()
        .map(|region| {
            let digest = region_digest(&new, region).map_err(read_new)?;
            Ok(old.counterpart(&region.path, region.size, &digest))
        })
        .collect::<Result<Vec<_>, DeltaError>>()?;
    let members: Vec<Member> = regions
        .iter()
        .zip(&counterparts)
        .map(|(region, counterpart)| Member::of(region.size, counterpart))
        .collect();
    let mut batches = plan_batches(&members, window).into_iter().peekable();
    // Regions served from the batch decoded last, in tar order.
    let mut from_batch = std::collections::VecDeque::new();
    for (i, gap) in gaps.iter().enumerate() {
        enc.gap(skeleton.as_mut(), &new, gap).map_err(read_new)?;
        let Some(region) = regions.get(i) else {
            continue;
        };
        if batches.peek().is_some_and(|b| b[0] == i) {
            let batch = batches.next().expect("peeked");
            let members: Vec<(&Region, &Counterpart)> = batch
                .iter()
                .map(|&m| (&regions[m], &counterparts[m]))
                .collect();
            if emit_batch_if_smaller(&mut enc, &new, &members, &old, bases, window, options)? {
                from_batch = batch.into();
            }
        }
        if from_batch.front() == Some(&i) {
            from_batch.pop_front();
            enc.op(&Op::FromBatch { len: region.size })
                .map_err(DeltaError::WriteDelta)?;
            enc.report.batched_bytes += region.size;
            continue;
        }
        encode_region(
            &mut enc,
            &new,
            region,
            &counterparts[i],
            &old,
            bases,
            window,
            options,
        )?;
    }
    enc.op(&Op::End).map_err(DeltaError::WriteDelta)?;
    enc.out.flush().map_err(DeltaError::WriteDelta)?;
    let mut report = enc.report;

    let (new_diff_id, _) = crate::digest::digest_file(new_tar).map_err(read_new)?;
    let header = DeltaHeader {
        version: report.format_version,
        new_diff_id,
        new_size,
        bases: bases.iter().map(|b| b.diff_id).collect(),
        window,
    };
    report.delta_bytes = write_outer(&header, &ops_path, out, options.level)?;
    report.ops_delta_bytes = report.delta_bytes;
    report.new_diff_id = Some(new_diff_id);
    report.new_tar_bytes = new_size;
    info!(diff_id = %new_diff_id, delta_bytes = report.delta_bytes, new_bytes = new_size, "delta encoded");
    Ok(report)
}

/// What lies between file contents (and after the last): tar headers, records, padding.
fn gap_spans(regions: &[Region], new_size: u64) -> Vec<GapSpan> {
    let mut gaps = Vec::with_capacity(regions.len() + 1);
    let (mut cursor, mut padding) = (0u64, 0u64);
    for region in regions {
        gaps.push(GapSpan {
            offset: cursor,
            len: region.offset - cursor,
            padding,
        });
        cursor = region.offset + region.size;
        padding = (512 - region.size % 512) % 512;
    }
    gaps.push(GapSpan {
        offset: cursor,
        len: new_size - cursor,
        padding,
    });
    gaps
}

/// Headers and padding are encoded against the first base's skeleton that exists; with
/// none they are literal (`None`).
fn skeleton_encoder(
    new: &File,
    gaps: &[GapSpan],
    ops_path: &Path,
    bases: &[BaseLayer<'_>],
    level: i32,
) -> io::Result<Option<GapEncoder>> {
    let Some(i) = bases.iter().position(|b| skeleton_path(b.dir).is_file()) else {
        return Ok(None);
    };
    let base = u16::try_from(i).expect("fewer than 65536 bases");
    GapEncoder::new(
        new,
        gaps,
        ops_path,
        skeleton_path(bases[i].dir),
        base,
        level,
    )
    .map(Some)
}

/// First pass: where each regular file's bytes sit in the tar.
fn content_regions(tar: &File) -> io::Result<Vec<Region>> {
    let mut archive = tar::Archive::new(tar);
    let mut regions = Vec::new();
    for entry in archive.entries()? {
        let entry = entry?;
        let kind = entry.header().entry_type();
        if (kind.is_file() || kind == tar::EntryType::Continuous) && entry.size() > 0 {
            let path = entry
                .path()?
                .to_string_lossy()
                .trim_start_matches("./")
                .to_owned();
            regions.push(Region {
                path,
                offset: entry.raw_file_position(),
                size: entry.size(),
            });
        }
    }
    Ok(regions)
}

pub(super) struct OpWriter {
    pub(super) out: BufWriter<File>,
    pub(super) codec: OpCodec,
    pub(super) report: EncodeReport,
}

impl OpWriter {
    pub(super) fn op(&mut self, op: &Op) -> io::Result<()> {
        let version = &mut self.report.format_version;
        *version = (*version).max(op.since_version());
        self.codec.write(op, &mut self.out)
    }

    /// The headers and padding before the next file content (or the end): from the skeleton
    /// encoder, or literal when there is none.
    fn gap(
        &mut self,
        skeleton: Option<&mut GapEncoder>,
        new: &File,
        gap: &GapSpan,
    ) -> io::Result<()> {
        match skeleton {
            Some(gap_encoder) => {
                debug_assert_eq!(self.codec.padding(), gap.padding);
                gap_encoder.emit(self)?
            }
            None => {
                self.literal_from(new, gap.offset, gap.len)?;
                self.report.literal_bytes -= gap.len; // counted as skeleton below
            }
        }
        self.report.skeleton_bytes += gap.len;
        Ok(())
    }

    fn literal_from(&mut self, file: &File, offset: u64, len: u64) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        self.op(&Op::Literal { len })?;
        let mut buf = vec![0u8; (len.min(1 << 20)) as usize];
        let mut done = 0;
        while done < len {
            let n = buf.len().min((len - done) as usize);
            file.read_exact_at(&mut buf[..n], offset + done)?;
            self.out.write_all(&buf[..n])?;
            done += n as u64;
        }
        self.report.literal_bytes += len;
        Ok(())
    }

    fn literal(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.op(&Op::Literal {
            len: bytes.len() as u64,
        })?;
        self.out.write_all(bytes)?;
        self.report.literal_bytes += bytes.len() as u64;
        Ok(())
    }
}

#[allow(clippy::too_many_arguments)] // the encoder's shared state, passed down once
fn encode_region(
    enc: &mut OpWriter,
    new: &File,
    region: &Region,
    counterpart: &Counterpart,
    old: &OldFiles,
    bases: &[BaseLayer<'_>],
    window: u64,
    options: &EncodeOptions,
) -> Result<(), DeltaError> {
    let read_new = |source| DeltaError::ReadNewTar {
        path: region.path.clone().into(),
        source,
    };
    let write = DeltaError::WriteDelta;
    // Identical content anywhere in a base is a reference of a few bytes, whatever the size.
    let (from, old_size) = match *counterpart {
        Counterpart::Identical(from) => {
            enc.op(&Op::CopyFile { from }).map_err(write)?;
            enc.codec.content(region.size);
            enc.report.copied_bytes += region.size;
            return Ok(());
        }
        Counterpart::Similar { .. } if region.size < options.min_patch_size => {
            return enc
                .literal_from(new, region.offset, region.size)
                .map_err(read_new)
        }
        Counterpart::Similar { from, size } => (from, size),
        Counterpart::None => {
            return enc
                .literal_from(new, region.offset, region.size)
                .map_err(read_new)
        }
    };
    let old_path = bases[usize::from(from.base)].dir.join(old.path(&from));
    let read_old = |source| DeltaError::ReadOldFile {
        path: old_path.clone(),
        source,
    };
    let old_file = File::open(&old_path).map_err(read_old)?;
    for w in plan_windows(region.size, old_size, window) {
        let mut chunk = vec![0u8; (w.new.end - w.new.start) as usize];
        new.read_exact_at(&mut chunk, region.offset + w.new.start)
            .map_err(read_new)?;
        let mut reference = vec![0u8; (w.reference.end - w.reference.start) as usize];
        old_file
            .read_exact_at(&mut reference, w.reference.start)
            .map_err(read_old)?;
        // Unchanged range at the same offset: copy it.
        if w.new.end <= old_size {
            let mut same = vec![0u8; chunk.len()];
            old_file
                .read_exact_at(&mut same, w.new.start)
                .map_err(read_old)?;
            if same == chunk {
                enc.op(&Op::Copy {
                    from,
                    offset: w.new.start,
                    len: chunk.len() as u64,
                })
                .map_err(write)?;
                enc.report.copied_bytes += chunk.len() as u64;
                continue;
            }
        }
        let mut choice = cheapest(&reference, &chunk, options.level).map_err(write)?;
        if choice.payload.len() as u64 > super::max_payload(window) {
            choice.method = None; // the device could not hold it within its budget
        }
        debug!(path = %region.path, window = ?w.new, ?choice.method, cost = choice.cost, "window encoded");
        match choice.method {
            None => enc.literal(&chunk).map_err(write)?,
            Some(method) => {
                enc.op(&Op::Patch {
                    from,
                    shape: PatchShape::of(
                        method,
                        w.reference.start,
                        &reference,
                        &chunk,
                        &choice.payload,
                    ),
                })
                .map_err(write)?;
                enc.out.write_all(&choice.payload).map_err(write)?;
                match method {
                    PatchMethod::ZstdRef => enc.report.zstd_patched_bytes += chunk.len() as u64,
                    PatchMethod::Bsdiff | PatchMethod::BsdiffBz2 | PatchMethod::BsdiffBz2Split => {
                        enc.report.bsdiff_patched_bytes += chunk.len() as u64
                    }
                }
            }
        }
    }
    Ok(())
}

fn region_digest(new: &File, region: &Region) -> io::Result<Digest> {
    let mut hasher = DigestHasher::default();
    let mut reader = io::BufReader::new(new);
    reader.seek(SeekFrom::Start(region.offset))?;
    io::copy(&mut reader.take(region.size), &mut hasher)?;
    Ok(hasher.finish())
}

pub(super) struct Choice {
    /// `None`: literal.
    pub(super) method: Option<PatchMethod>,
    pub(super) payload: Vec<u8>,
    pub(super) cost: usize,
}

/// Per window, whatever compresses smallest: literal, zstd patch-from, or bsdiff (raw for
/// the outer zstd, or bzip2 which suits sparse difference bytes better).
pub(super) fn cheapest(reference: &[u8], new: &[u8], level: i32) -> io::Result<Choice> {
    let literal_cost = zstd::bulk::compress(new, level)?.len();
    let mut best = Choice {
        method: None,
        payload: Vec::new(),
        cost: literal_cost,
    };
    let zstd_patch = zstd_ref_encode(reference, new, level)?;
    if zstd_patch.len() < best.cost {
        best = Choice {
            method: Some(PatchMethod::ZstdRef),
            cost: zstd_patch.len(),
            payload: zstd_patch,
        };
    }
    let (method, payload, cost) = best_bsdiff(reference, new, level)?;
    if cost < best.cost {
        best = Choice {
            method: Some(method),
            cost,
            payload,
        };
    }
    Ok(best)
}

/// The artifact: tar { delta.json, ops } compressed with zstd, history capped for the device.
fn write_outer(
    header: &DeltaHeader,
    ops_path: &Path,
    out: impl Write,
    level: i32,
) -> Result<u64, DeltaError> {
    let write = DeltaError::WriteDelta;
    let mut counted = CountingWriter {
        inner: out,
        bytes: 0,
    };
    let mut zstd = zstd::stream::write::Encoder::new(&mut counted, level).map_err(write)?;
    zstd.window_log(OUTER_WINDOW_LOG).map_err(write)?;
    zstd.long_distance_matching(true).map_err(write)?;
    let mut builder = tar::Builder::new(zstd);
    let json = serde_json::to_vec(header).expect("a header always serialises");
    let mut h = tar::Header::new_ustar();
    h.set_size(json.len() as u64);
    h.set_mode(0o644);
    builder
        .append_data(&mut h, "delta.json", &json[..])
        .map_err(write)?;
    let mut ops = File::open(ops_path).map_err(write)?;
    let mut h = tar::Header::new_ustar();
    h.set_size(ops.metadata().map_err(write)?.len());
    h.set_mode(0o644);
    builder
        .append_data(&mut h, "ops", &mut ops)
        .map_err(write)?;
    builder
        .into_inner()
        .map_err(write)?
        .finish()
        .map_err(write)?;
    counted.flush().map_err(write)?;
    Ok(counted.bytes)
}

struct CountingWriter<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Size of the whole layer compressed with zstd at `level` (what serving the full layer costs).
pub fn full_zstd_size(tar: &Path, level: i32) -> io::Result<u64> {
    let mut counted = CountingWriter {
        inner: io::sink(),
        bytes: 0,
    };
    let mut zstd = zstd::stream::write::Encoder::new(&mut counted, level)?;
    io::copy(&mut File::open(tar)?, &mut zstd)?;
    zstd.finish()?;
    Ok(counted.bytes)
}
