//! The op stream inside a delta: how the new tar is rebuilt, one op at a time.
//! Binary: a tag byte, then LEB128 varints.

use std::io::{self, Read, Write};

use super::batch::{BatchPart, MAX_BATCH_PARTS};

/// How a patch payload turns a reference window of an old file into new bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchMethod {
    /// A zstd frame compressed with the reference window as prefix (`--patch-from`).
    ZstdRef = 1,
    /// bsdiff controls + diff + extra bytes, uncompressed (the outer zstd compresses them).
    Bsdiff = 2,
    /// The same, bzip2-compressed (better on sparse difference bytes, like bsdiff's own).
    BsdiffBz2 = 3,
    /// The same with its control, diff and extra streams bzip2-compressed apart, as bsdiff's
    /// own format does (format version 3).
    BsdiffBz2Split = 4,
}

impl PatchMethod {
    /// The oldest delta format version that has this method.
    pub fn since_version(self) -> u32 {
        match self {
            PatchMethod::ZstdRef | PatchMethod::Bsdiff | PatchMethod::BsdiffBz2 => 2,
            PatchMethod::BsdiffBz2Split => 3,
        }
    }
}

/// A patch's method and sizes: `payload_len` bytes following the op turn `ref_len` bytes
/// of a reference at `ref_offset` into `out_len` new bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatchShape {
    pub method: PatchMethod,
    pub ref_offset: u64,
    pub ref_len: u64,
    pub out_len: u64,
    pub payload_len: u64,
}

impl PatchShape {
    /// The shape of `payload` turning `reference` (at `ref_offset` of its source) into
    /// `out`.
    pub fn of(
        method: PatchMethod,
        ref_offset: u64,
        reference: &[u8],
        out: &[u8],
        payload: &[u8],
    ) -> Self {
        Self {
            method,
            ref_offset,
            ref_len: reference.len() as u64,
            out_len: out.len() as u64,
            payload_len: payload.len() as u64,
        }
    }

    /// The four numbers after the op's tag, method and source.
    fn write_lens(&self, out: &mut impl Write) -> io::Result<()> {
        for v in [
            self.ref_offset,
            self.ref_len,
            self.out_len,
            self.payload_len,
        ] {
            write_varint(out, v)?;
        }
        Ok(())
    }

    fn read_lens(method: PatchMethod, input: &mut impl Read) -> io::Result<Self> {
        Ok(Self {
            method,
            ref_offset: read_u64(input)?,
            ref_len: read_u64(input)?,
            out_len: read_u64(input)?,
            payload_len: read_u64(input)?,
        })
    }
}

/// Where old bytes come from: a file of one base layer, by its number in the base's file
/// list (the layer index's paths in sorted order): a few bytes instead of a path per op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OldRef {
    pub base: u16,
    pub file: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `len` bytes follow the op in the stream.
    Literal {
        len: u64,
    },
    /// Copy `len` bytes at `offset` of an old file.
    Copy {
        from: OldRef,
        offset: u64,
        len: u64,
    },
    /// New file content: a patch against a window of an old file.
    Patch {
        from: OldRef,
        shape: PatchShape,
    },
    /// Decode the next chunk of the new tar's skeleton: a patch against a window of the
    /// base's skeleton. With `normalised`, header checksums in both the reference and the
    /// decoded chunk are stand-ins ([`crate::skeleton::normalise_checksums`]) that the
    /// reader restores.
    Skeleton {
        base: u16,
        normalised: bool,
        shape: PatchShape,
    },
    /// The zero padding that completes the file content just produced (the skeleton is
    /// stored without it: [`OpCodec::padding`]), then `len` bytes from the current skeleton
    /// chunk (tar headers, PAX/GNU records, end blocks).
    Gap {
        len: u64,
    },
    /// `len` bytes from the current skeleton chunk and no synthesised padding: for a tar
    /// whose padding after a file is not all zeros.
    RawGap {
        len: u64,
    },
    /// The whole old file (its length is the file's size; the caller accounts for it with
    /// [`OpCodec::content`]).
    CopyFile {
        from: OldRef,
    },
    /// Decode a batch ([`super::batch`]): a patch of `method` whose reference is the `parts`
    /// of old files, concatenated, making `out_len` bytes that the next `FromBatch` ops
    /// serve; produces no bytes itself. `payload_len` payload bytes follow the op.
    Batch {
        method: PatchMethod,
        parts: Vec<BatchPart>,
        out_len: u64,
        payload_len: u64,
    },
    /// The next `len` bytes of the current batch, as file content.
    FromBatch {
        len: u64,
    },
    End,
}

const TAG_END: u8 = 0;
const TAG_LITERAL: u8 = 1;
const TAG_COPY: u8 = 2;
const TAG_PATCH: u8 = 3;
const TAG_SKELETON: u8 = 4;
const TAG_GAP: u8 = 5;
const TAG_COPY_FILE: u8 = 6;
const TAG_RAW_GAP: u8 = 7;
const TAG_BATCH: u8 = 8;
const TAG_FROM_BATCH: u8 = 9;

/// Writes and reads ops with the context that makes them small: file numbers are coded as
/// the difference from the previous one (unchanged files come in order: +1), and a gap's
/// length as the difference from what a plain tar would have (one 512-byte header after
/// file content; the padding is implied), so a run of unchanged files is a repeating byte
/// pattern that the outer zstd squeezes to nearly nothing. Writer and reader keep the same
/// state by seeing the same ops.
#[derive(Debug)]
pub struct OpCodec {
    last_file: u32,
    content: u64,
    after_content: bool,
    /// The length a gap after file content is expected to have ([`OpCodec::predict_gap`]).
    predicted_gap: u64,
}

impl Default for OpCodec {
    fn default() -> Self {
        Self {
            last_file: 0,
            content: 0,
            after_content: true,
            predicted_gap: 512,
        }
    }
}

impl OpCodec {
    fn expected_gap(&self) -> u64 {
        if self.after_content {
            self.predicted_gap
        } else {
            0
        }
    }

    /// Set the expected length of the next gap after file content: writer and reader both
    /// take it from the skeleton chunk as they hold it
    /// ([`crate::skeleton::headers_before_content`]), so a gap of the usual shape codes to 0.
    pub fn predict_gap(&mut self, len: u64) {
        self.predicted_gap = len;
    }

    /// Zero bytes a [`Op::Gap`] read now starts with: the padding of the file content
    /// produced since the last gap (none right after a gap).
    pub fn padding(&self) -> u64 {
        if self.after_content {
            (512 - self.content % 512) % 512
        } else {
            0
        }
    }

    /// Account for `n` bytes of file content produced.
    pub fn content(&mut self, n: u64) {
        self.content += n;
        self.after_content = true;
    }

    fn track(&mut self, op: &Op) {
        match op {
            Op::Literal { len } | Op::Copy { len, .. } | Op::FromBatch { len } => {
                self.content(*len)
            }
            Op::Patch { shape, .. } => self.content(shape.out_len),
            Op::Gap { .. } | Op::RawGap { .. } => {
                self.content = 0;
                self.after_content = false;
            }
            Op::Skeleton { .. } | Op::CopyFile { .. } | Op::Batch { .. } | Op::End => {}
        }
    }

    pub fn write(&mut self, op: &Op, out: &mut impl Write) -> io::Result<()> {
        match op {
            Op::Gap { len } => {
                out.write_all(&[TAG_GAP])?;
                write_varint(out, zigzag(*len as i64 - self.expected_gap() as i64))?;
            }
            Op::CopyFile { from } => {
                out.write_all(&[TAG_COPY_FILE])?;
                self.write_ref(out, from)?;
            }
            Op::Copy { from, offset, len } => {
                out.write_all(&[TAG_COPY])?;
                self.write_ref(out, from)?;
                write_varint(out, *offset)?;
                write_varint(out, *len)?;
            }
            Op::Patch { from, shape } => {
                out.write_all(&[TAG_PATCH, shape.method as u8])?;
                self.write_ref(out, from)?;
                shape.write_lens(out)?;
            }
            Op::Batch {
                method,
                parts,
                out_len,
                payload_len,
            } => {
                out.write_all(&[TAG_BATCH, *method as u8])?;
                write_varint(out, parts.len() as u64)?;
                for part in parts {
                    self.write_ref(out, &part.from)?;
                    write_varint(out, part.offset)?;
                    write_varint(out, part.len)?;
                }
                write_varint(out, *out_len)?;
                write_varint(out, *payload_len)?;
            }
            other => other.write_to(out)?,
        }
        self.track(op);
        Ok(())
    }

    /// Read an op whose gaps were written without [`OpCodec::predict_gap`].
    pub fn read(&mut self, input: &mut impl Read) -> io::Result<Op> {
        self.read_predicting(input, || 512)
    }

    /// Read an op; `predict_gap` gives what the writer passed to [`OpCodec::predict_gap`]
    /// before writing it, and is called only for a gap after file content.
    pub fn read_predicting(
        &mut self,
        input: &mut impl Read,
        predict_gap: impl FnOnce() -> u64,
    ) -> io::Result<Op> {
        let op = match read_u8(input)? {
            TAG_GAP => {
                if self.after_content {
                    self.predicted_gap = predict_gap();
                }
                let len = self.expected_gap() as i64 + unzigzag(read_u64(input)?);
                Op::Gap {
                    len: u64::try_from(len).map_err(|_| invalid(format!("gap of {len} bytes")))?,
                }
            }
            TAG_COPY_FILE => Op::CopyFile {
                from: self.read_ref(input)?,
            },
            TAG_COPY => {
                let from = self.read_ref(input)?;
                Op::Copy {
                    from,
                    offset: read_u64(input)?,
                    len: read_u64(input)?,
                }
            }
            TAG_PATCH => {
                let method = read_method(input)?;
                let from = self.read_ref(input)?;
                let shape = PatchShape::read_lens(method, input)?;
                Op::Patch { from, shape }
            }
            TAG_BATCH => self.read_batch(input)?,
            tag => Op::read_tagged(tag, input)?,
        };
        self.track(&op);
        Ok(op)
    }

    /// A batch op; its part count is checked before the part list is allocated.
    fn read_batch(&mut self, input: &mut impl Read) -> io::Result<Op> {
        let method = read_method(input)?;
        let count = read_u64(input)?;
        if count > MAX_BATCH_PARTS as u64 {
            return Err(invalid(format!(
                "batch op has {count} parts, at most {MAX_BATCH_PARTS} are allowed"
            )));
        }
        let mut parts = Vec::with_capacity(count as usize);
        for _ in 0..count {
            parts.push(BatchPart {
                from: self.read_ref(input)?,
                offset: read_u64(input)?,
                len: read_u64(input)?,
            });
        }
        Ok(Op::Batch {
            method,
            parts,
            out_len: read_u64(input)?,
            payload_len: read_u64(input)?,
        })
    }

    fn write_ref(&mut self, out: &mut impl Write, from: &OldRef) -> io::Result<()> {
        write_varint(out, u64::from(from.base))?;
        write_varint(
            out,
            zigzag(i64::from(from.file) - i64::from(self.last_file)),
        )?;
        self.last_file = from.file;
        Ok(())
    }

    fn read_ref(&mut self, input: &mut impl Read) -> io::Result<OldRef> {
        let base = u16::try_from(read_u64(input)?)
            .map_err(|_| invalid("base number out of range".into()))?;
        let file = i64::from(self.last_file) + unzigzag(read_u64(input)?);
        let file =
            u32::try_from(file).map_err(|_| invalid(format!("file number {file} out of range")))?;
        self.last_file = file;
        Ok(OldRef { base, file })
    }
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Flag in a skeleton op's method byte: header checksums are normalised.
const NORMALISED: u8 = 0x80;

pub(super) fn read_method(input: &mut impl Read) -> io::Result<PatchMethod> {
    method_from(read_u8(input)?)
}

fn method_from(byte: u8) -> io::Result<PatchMethod> {
    match byte {
        1 => Ok(PatchMethod::ZstdRef),
        2 => Ok(PatchMethod::Bsdiff),
        3 => Ok(PatchMethod::BsdiffBz2),
        4 => Ok(PatchMethod::BsdiffBz2Split),
        m => Err(invalid(format!("unknown patch method {m}"))),
    }
}

impl Op {
    /// The oldest delta format version that can carry this op.
    pub fn since_version(&self) -> u32 {
        match self {
            Op::Patch { shape, .. } | Op::Skeleton { shape, .. } => shape.method.since_version(),
            Op::Batch { .. } | Op::FromBatch { .. } => 3,
            _ => 2,
        }
    }

    /// Ops that need no codec context.
    fn write_to(&self, out: &mut impl Write) -> io::Result<()> {
        match self {
            Op::End => out.write_all(&[TAG_END]),
            Op::RawGap { len } => {
                out.write_all(&[TAG_RAW_GAP])?;
                write_varint(out, *len)
            }
            Op::Literal { len } => {
                out.write_all(&[TAG_LITERAL])?;
                write_varint(out, *len)
            }
            Op::FromBatch { len } => {
                out.write_all(&[TAG_FROM_BATCH])?;
                write_varint(out, *len)
            }
            Op::Skeleton {
                base,
                normalised,
                shape,
            } => {
                let flag = if *normalised { NORMALISED } else { 0 };
                out.write_all(&[TAG_SKELETON, shape.method as u8 | flag])?;
                write_varint(out, u64::from(*base))?;
                shape.write_lens(out)
            }
            other => Err(io::Error::other(format!("op {other:?} needs the codec"))),
        }
    }

    fn read_tagged(tag: u8, input: &mut impl Read) -> io::Result<Op> {
        match tag {
            TAG_END => Ok(Op::End),
            TAG_RAW_GAP => Ok(Op::RawGap {
                len: read_u64(input)?,
            }),
            TAG_LITERAL => Ok(Op::Literal {
                len: read_u64(input)?,
            }),
            TAG_FROM_BATCH => Ok(Op::FromBatch {
                len: read_u64(input)?,
            }),
            TAG_SKELETON => {
                let byte = read_u8(input)?;
                let method = method_from(byte & !NORMALISED)?;
                let base = u16::try_from(read_u64(input)?)
                    .map_err(|_| invalid("base number out of range".into()))?;
                Ok(Op::Skeleton {
                    base,
                    normalised: byte & NORMALISED != 0,
                    shape: PatchShape::read_lens(method, input)?,
                })
            }
            tag => Err(invalid(format!("unknown op tag {tag}"))),
        }
    }
}

pub fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// LEB128: small numbers (most lengths and offsets) take one or two bytes.
pub(super) fn write_varint(out: &mut impl Write, mut v: u64) -> io::Result<()> {
    let mut buf = [0u8; 10];
    let mut n = 0;
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            buf[n] = byte;
            n += 1;
            break;
        }
        buf[n] = byte | 0x80;
        n += 1;
    }
    out.write_all(&buf[..n])
}

fn read_u8(input: &mut impl Read) -> io::Result<u8> {
    let mut b = [0u8; 1];
    input.read_exact(&mut b)?;
    Ok(b[0])
}

pub(super) fn read_u64(input: &mut impl Read) -> io::Result<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = read_u8(input)?;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(invalid("varint longer than 64 bits".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_round_trip_through_the_codec() {
        let from = OldRef {
            base: 1,
            file: 70_000,
        };
        let ops = [
            Op::Gap { len: 512 },
            Op::Literal { len: 700 },
            Op::Gap {
                len: 512 + 324 + 1024,
            },
            Op::Copy {
                from,
                offset: 7,
                len: 9,
            },
            Op::CopyFile {
                from: OldRef {
                    base: 1,
                    file: 70_001,
                },
            },
            Op::Gap { len: 3 },
            Op::RawGap { len: 700 },
            Op::Patch {
                from,
                shape: PatchShape {
                    method: PatchMethod::Bsdiff,
                    ref_offset: 1,
                    ref_len: 2,
                    out_len: 3,
                    payload_len: 4,
                },
            },
            Op::Skeleton {
                base: 0,
                normalised: true,
                shape: PatchShape {
                    method: PatchMethod::Bsdiff,
                    ref_offset: 5,
                    ref_len: 6,
                    out_len: u64::MAX,
                    payload_len: 8,
                },
            },
            Op::Gap { len: 1024 },
            Op::Batch {
                method: PatchMethod::BsdiffBz2Split,
                parts: vec![
                    BatchPart {
                        from,
                        offset: 0,
                        len: 10,
                    },
                    BatchPart {
                        from: OldRef { base: 0, file: 3 },
                        offset: 5,
                        len: 1,
                    },
                ],
                out_len: 30,
                payload_len: 12,
            },
            Op::FromBatch { len: 20 },
            Op::Gap { len: 512 },
            Op::FromBatch { len: 10 },
            Op::End,
        ];
        let mut bytes = Vec::new();
        let mut writer = OpCodec::default();
        for op in &ops {
            writer.write(op, &mut bytes).unwrap();
        }
        let mut input = &bytes[..];
        let mut reader = OpCodec::default();
        for op in &ops {
            assert_eq!(&reader.read(&mut input).unwrap(), op);
        }
    }

    #[test]
    fn unchanged_files_code_to_a_repeating_pattern() {
        let mut codec = OpCodec::default();
        let mut runs = Vec::new();
        for (file, size) in [(10u32, 100u64), (11, 3000), (12, 77)] {
            let mut bytes = Vec::new();
            codec
                .write(
                    &Op::CopyFile {
                        from: OldRef { base: 0, file },
                    },
                    &mut bytes,
                )
                .unwrap();
            codec.content(size);
            assert_eq!(codec.padding(), (512 - size % 512) % 512);
            codec.write(&Op::Gap { len: 512 }, &mut bytes).unwrap();
            runs.push(bytes);
        }
        assert_eq!(runs[1], runs[2]);
    }

    #[test]
    fn batch_with_too_many_parts_is_refused_before_allocating() {
        let mut bytes = vec![TAG_BATCH, PatchMethod::ZstdRef as u8];
        write_varint(&mut bytes, u64::MAX).unwrap();
        let err = OpCodec::default().read(&mut &bytes[..]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("parts"), "{err}");
    }

    #[test]
    fn truncated_batch_and_unknown_method_are_errors() {
        let mut bytes = vec![TAG_BATCH, PatchMethod::ZstdRef as u8];
        write_varint(&mut bytes, 3).unwrap();
        assert!(OpCodec::default().read(&mut &bytes[..]).is_err());
        let err = OpCodec::default()
            .read(&mut &[TAG_BATCH, 77][..])
            .unwrap_err();
        assert!(err.to_string().contains("patch method 77"), "{err}");
    }

    #[test]
    fn unknown_tag_is_invalid_data() {
        let err = OpCodec::default().read(&mut &[42u8][..]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
