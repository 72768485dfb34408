//! The op stream inside a delta: how the new tar is rebuilt, one op at a time.
//! Binary: a tag byte, then LEB128 varints.

use std::io::{self, Read, Write};

/// How a patch payload turns a reference window of an old file into new bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchMethod {
    /// A zstd frame compressed with the reference window as prefix (`--patch-from`).
    ZstdRef = 1,
    /// bsdiff controls + diff + extra bytes, uncompressed (the outer zstd compresses them).
    Bsdiff = 2,
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
    /// Apply a payload of `payload_len` bytes (following the op) to `ref_len` bytes of an old
    /// file at `ref_offset`, producing `out_len` bytes.
    Patch {
        from: OldRef,
        method: PatchMethod,
        ref_offset: u64,
        ref_len: u64,
        out_len: u64,
        payload_len: u64,
    },
    /// Decode the next chunk of the new tar's skeleton: a zstd frame (`payload_len` bytes
    /// following) with `ref_len` bytes of the base's skeleton at `ref_offset` as prefix.
    Skeleton {
        base: u16,
        ref_offset: u64,
        ref_len: u64,
        out_len: u64,
        payload_len: u64,
    },
    /// `len` bytes from the current skeleton chunk (tar headers, padding).
    Gap {
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

impl Op {
    pub fn write_to(&self, out: &mut impl Write) -> io::Result<()> {
        match self {
            Op::End => out.write_all(&[TAG_END]),
            Op::Literal { len } => {
                out.write_all(&[TAG_LITERAL])?;
                write_varint(out, *len)
            }
            Op::Gap { len } => {
                out.write_all(&[TAG_GAP])?;
                write_varint(out, *len)
            }
            Op::Skeleton {
                base,
                ref_offset,
                ref_len,
                out_len,
                payload_len,
            } => {
                out.write_all(&[TAG_SKELETON])?;
                write_varint(out, u64::from(*base))?;
                for v in [ref_offset, ref_len, out_len, payload_len] {
                    write_varint(out, *v)?;
                }
                Ok(())
            }
            Op::Copy { from, offset, len } => {
                out.write_all(&[TAG_COPY])?;
                write_ref(out, from)?;
                write_varint(out, *offset)?;
                write_varint(out, *len)
            }
            Op::Patch {
                from,
                method,
                ref_offset,
                ref_len,
                out_len,
                payload_len,
            } => {
                out.write_all(&[TAG_PATCH, *method as u8])?;
                write_ref(out, from)?;
                for v in [ref_offset, ref_len, out_len, payload_len] {
                    write_varint(out, *v)?;
                }
                Ok(())
            }
        }
    }

    pub fn read_from(input: &mut impl Read) -> io::Result<Op> {
        match read_u8(input)? {
            TAG_END => Ok(Op::End),
            TAG_LITERAL => Ok(Op::Literal {
                len: read_u64(input)?,
            }),
            TAG_GAP => Ok(Op::Gap {
                len: read_u64(input)?,
            }),
            TAG_SKELETON => {
                let base = u16::try_from(read_u64(input)?)
                    .map_err(|_| invalid("base number out of range".into()))?;
                Ok(Op::Skeleton {
                    base,
                    ref_offset: read_u64(input)?,
                    ref_len: read_u64(input)?,
                    out_len: read_u64(input)?,
                    payload_len: read_u64(input)?,
                })
            }
            TAG_COPY => {
                let from = read_ref(input)?;
                Ok(Op::Copy {
                    from,
                    offset: read_u64(input)?,
                    len: read_u64(input)?,
                })
            }
            TAG_PATCH => {
                let method = match read_u8(input)? {
                    1 => PatchMethod::ZstdRef,
                    2 => PatchMethod::Bsdiff,
                    m => return Err(invalid(format!("unknown patch method {m}"))),
                };
                let from = read_ref(input)?;
                Ok(Op::Patch {
                    from,
                    method,
                    ref_offset: read_u64(input)?,
                    ref_len: read_u64(input)?,
                    out_len: read_u64(input)?,
                    payload_len: read_u64(input)?,
                })
            }
            tag => Err(invalid(format!("unknown op tag {tag}"))),
        }
    }
}

pub fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn write_ref(out: &mut impl Write, from: &OldRef) -> io::Result<()> {
    write_varint(out, u64::from(from.base))?;
    write_varint(out, u64::from(from.file))
}

fn read_ref(input: &mut impl Read) -> io::Result<OldRef> {
    let base =
        u16::try_from(read_u64(input)?).map_err(|_| invalid("base number out of range".into()))?;
    let file =
        u32::try_from(read_u64(input)?).map_err(|_| invalid("file number out of range".into()))?;
    Ok(OldRef { base, file })
}

/// LEB128: small numbers (most lengths and offsets) take one or two bytes.
fn write_varint(out: &mut impl Write, mut v: u64) -> io::Result<()> {
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

fn read_u64(input: &mut impl Read) -> io::Result<u64> {
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
    fn ops_round_trip() {
        let from = OldRef {
            base: 1,
            file: 70_000,
        };
        let ops = [
            Op::Literal { len: 512 },
            Op::Copy {
                from,
                offset: 7,
                len: 9,
            },
            Op::Patch {
                from,
                method: PatchMethod::Bsdiff,
                ref_offset: 1,
                ref_len: 2,
                out_len: 3,
                payload_len: 4,
            },
            Op::Skeleton {
                base: 0,
                ref_offset: 5,
                ref_len: 6,
                out_len: u64::MAX,
                payload_len: 8,
            },
            Op::Gap { len: 1024 },
            Op::End,
        ];
        let mut bytes = Vec::new();
        for op in &ops {
            op.write_to(&mut bytes).unwrap();
        }
        let mut input = &bytes[..];
        for op in &ops {
            assert_eq!(&Op::read_from(&mut input).unwrap(), op);
        }
    }

    #[test]
    fn unknown_tag_is_invalid_data() {
        let err = Op::read_from(&mut &[9u8][..]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
