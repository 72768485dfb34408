//! Length-delimited frames over `embedded-io` streams: a 4-byte big-endian length, then the
//! body. Used by the agent's local control socket; works on `no_std` serial links too.

use alloc::vec;
use alloc::vec::Vec;
use embedded_io::{Read, ReadExactError, Write};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec::{self, DecodeError, MAX_BODY_BYTES};

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError<E: core::fmt::Debug> {
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("stream ended inside a frame")]
    UnexpectedEof,
    #[error("stream i/o failed: {0:?}")]
    Io(E),
    #[error("frame body cannot be decoded")]
    Decode(#[source] DecodeError),
}

/// Writes one frame.
pub fn write_frame<W: Write>(w: &mut W, body: &[u8]) -> Result<(), FrameError<W::Error>> {
    if body.len() > MAX_BODY_BYTES {
        return Err(FrameError::TooLarge {
            len: body.len(),
            max: MAX_BODY_BYTES,
        });
    }
    let len = u32::try_from(body.len()).map_err(|_| FrameError::TooLarge {
        len: body.len(),
        max: MAX_BODY_BYTES,
    })?;
    w.write_all(&len.to_be_bytes()).map_err(FrameError::Io)?;
    w.write_all(body).map_err(FrameError::Io)?;
    w.flush().map_err(FrameError::Io)
}

/// Reads one frame of at most `max` bytes; `Ok(None)` when the stream ended cleanly between
/// frames. The length is checked before any allocation, so a hostile peer cannot make the
/// reader allocate more than `max`.
pub fn read_frame<R: Read>(r: &mut R, max: usize) -> Result<Option<Vec<u8>>, FrameError<R::Error>> {
    let mut header = [0u8; 4];
    let first = r.read(&mut header[..1]).map_err(FrameError::Io)?;
    if first == 0 {
        return Ok(None);
    }
    read_exact(r, &mut header[1..])?;
    let len = usize::try_from(u32::from_be_bytes(header)).unwrap_or(usize::MAX);
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    let mut body = vec![0u8; len];
    read_exact(r, &mut body)?;
    Ok(Some(body))
}

fn read_exact<R: Read>(r: &mut R, buf: &mut [u8]) -> Result<(), FrameError<R::Error>> {
    r.read_exact(buf).map_err(|err| match err {
        ReadExactError::UnexpectedEof => FrameError::UnexpectedEof,
        ReadExactError::Other(e) => FrameError::Io(e),
    })
}

/// Encodes a message and writes it as one frame.
pub fn write_message<W: Write, T: Serialize>(
    w: &mut W,
    msg: &T,
) -> Result<(), FrameError<W::Error>> {
    write_frame(w, &codec::encode(msg))
}

/// Reads one frame and decodes it; `Ok(None)` at a clean end of stream.
pub fn read_message<R: Read, T: DeserializeOwned>(
    r: &mut R,
) -> Result<Option<T>, FrameError<R::Error>> {
    match read_frame(r, MAX_BODY_BYTES)? {
        Some(body) => codec::decode(&body).map(Some).map_err(FrameError::Decode),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, CommandRequest};
    use embedded_io_adapters::std::FromStd;
    use std::io::Cursor;

    #[test]
    fn messages_round_trip_through_frames() {
        let req = CommandRequest {
            id: 7,
            command: Command::Recheck,
        };
        let mut buf = FromStd::new(Vec::new());
        write_message(&mut buf, &req).unwrap();
        write_message(&mut buf, &req).unwrap();
        let bytes = buf.into_inner();
        let mut r = FromStd::new(Cursor::new(bytes));
        assert_eq!(
            read_message::<_, CommandRequest>(&mut r).unwrap(),
            Some(req.clone())
        );
        assert_eq!(
            read_message::<_, CommandRequest>(&mut r).unwrap(),
            Some(req)
        );
        assert_eq!(read_message::<_, CommandRequest>(&mut r).unwrap(), None);
    }

    #[test]
    fn oversized_length_is_refused_before_allocating() {
        let mut r = FromStd::new(Cursor::new(u32::MAX.to_be_bytes().to_vec()));
        assert!(matches!(
            read_frame(&mut r, 1024),
            Err(FrameError::TooLarge { len, max: 1024 }) if len == u32::MAX as usize
        ));
    }

    #[test]
    fn truncated_frames_are_unexpected_eof() {
        for bytes in [vec![0u8, 0], vec![0, 0, 0, 5, 1, 2]] {
            let mut r = FromStd::new(Cursor::new(bytes));
            assert!(matches!(
                read_frame(&mut r, 1024),
                Err(FrameError::UnexpectedEof)
            ));
        }
    }

    #[test]
    fn garbage_body_is_a_decode_error() {
        let mut buf = FromStd::new(Vec::new());
        write_frame(&mut buf, &[9, 9, 9]).unwrap();
        let mut r = FromStd::new(Cursor::new(buf.into_inner()));
        assert!(matches!(
            read_message::<_, CommandRequest>(&mut r),
            Err(FrameError::Decode(DecodeError::UnsupportedVersion {
                found: 9
            }))
        ));
    }

    #[test]
    fn writing_an_oversized_frame_is_refused() {
        let mut buf = FromStd::new(Vec::new());
        let big = vec![0u8; MAX_BODY_BYTES + 1];
        assert!(matches!(
            write_frame(&mut buf, &big),
            Err(FrameError::TooLarge { .. })
        ));
        assert!(buf.into_inner().is_empty());
    }
}
