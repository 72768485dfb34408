//! Body encoding: one protocol-version byte, then postcard. Decoding refuses empty, oversized,
//! unknown-version, malformed and trailing-garbage bodies, each with its own error.

use alloc::vec::Vec;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::event::RejectReason;

/// Version byte in front of every encoded body.
pub const PROTOCOL_VERSION: u8 = 1;

/// Largest body any peer accepts. Keep the agent's MQTT max packet size above this.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// Why a body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("body is empty")]
    Empty,
    #[error("body of {len} bytes exceeds the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("body has protocol version {found}, this build speaks {PROTOCOL_VERSION}")]
    UnsupportedVersion { found: u8 },
    #[error("body is malformed: {0}")]
    Malformed(postcard::Error),
    #[error("body has {count} unexpected trailing bytes")]
    TrailingBytes { count: usize },
}

impl DecodeError {
    /// The class reported in a `Rejected` event.
    pub fn reject_reason(&self) -> RejectReason {
        match self {
            DecodeError::TooLarge { .. } => RejectReason::TooLarge,
            DecodeError::UnsupportedVersion { .. } => RejectReason::UnsupportedVersion,
            DecodeError::Empty | DecodeError::Malformed(_) | DecodeError::TrailingBytes { .. } => {
                RejectReason::Malformed
            }
        }
    }
}

/// Encodes a message as `[PROTOCOL_VERSION] ++ postcard(msg)`.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.push(PROTOCOL_VERSION);
    // Serializing our own plain types into a growable Vec has no failure mode: postcard only
    // errors on unsupported serde features (which the types do not use) or a full buffer.
    match postcard::to_extend(msg, out) {
        Ok(out) => out,
        Err(err) => panic!("postcard cannot encode a coracle message: {err}"),
    }
}

/// Whether decoding failed because the body ended where a field was still expected: the
/// sign of an older, shorter layout (see the `decode` functions of evolving messages).
pub fn ended_early<T>(result: &Result<T, DecodeError>) -> bool {
    matches!(
        result,
        Err(DecodeError::Malformed(
            postcard::Error::DeserializeUnexpectedEnd
        ))
    )
}

/// Decodes a body produced by [`encode`].
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, DecodeError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(DecodeError::TooLarge {
            len: body.len(),
            max: MAX_BODY_BYTES,
        });
    }
    let (&version, rest) = body.split_first().ok_or(DecodeError::Empty)?;
    if version != PROTOCOL_VERSION {
        return Err(DecodeError::UnsupportedVersion { found: version });
    }
    let (msg, trailing) = postcard::take_from_bytes(rest).map_err(DecodeError::Malformed)?;
    if !trailing.is_empty() {
        return Err(DecodeError::TrailingBytes {
            count: trailing.len(),
        });
    }
    Ok(msg)
}
