//! Partial downloads: bytes already received are kept in `partial/<hex>` so a cut transfer
//! resumes with an HTTP Range request. The HTTP client lives in the agent; this is the
//! byte-range bookkeeping. A partial blob is never used before its digest is verified.

use std::fs;
use std::io::{self, Write};
use std::path::PathBuf;

use crate::digest::{digest_file, Digest};

/// What the server answered to our request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeReply {
    /// 200: the whole blob from byte 0 (the server ignored Range).
    Full,
    /// 206 with `Content-Range: bytes START-...`.
    Partial { start: u64 },
    /// 416: our offset is past the end (we already have everything, or the file is bad).
    NotSatisfiable,
}

/// What to do with the body that follows the reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeAction {
    /// Append the body after the `have` bytes we hold.
    Append,
    /// Drop what we hold and write the body from byte 0.
    Restart,
    /// Nothing to download: verify what we hold.
    Verify,
}

/// Pure decision: how a reply fits the `have` bytes already on disk.
pub fn plan_resume(have: u64, reply: RangeReply) -> ResumeAction {
    match reply {
        RangeReply::Full => ResumeAction::Restart,
        RangeReply::Partial { start } if start == have => ResumeAction::Append,
        RangeReply::Partial { .. } => ResumeAction::Restart,
        RangeReply::NotSatisfiable => ResumeAction::Verify,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PartialError {
    #[error("write partial download of {digest} at {path:?}")]
    Write {
        digest: Digest,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("downloaded blob is not {expected}: it hashes to {actual} ({bytes} bytes); the partial file was removed")]
    VerifyDigest {
        expected: Digest,
        actual: Digest,
        bytes: u64,
    },
}

/// One blob being downloaded.
#[derive(Debug)]
pub struct PartialDownload {
    pub(super) digest: Digest,
    pub(super) path: PathBuf,
    pub(super) have: u64,
    pub(super) file: Option<fs::File>,
}

impl PartialDownload {
    /// Bytes already held from an earlier attempt.
    pub fn have(&self) -> u64 {
        self.have
    }

    /// The `Range` header to send, if any bytes are already held.
    pub fn range_header(&self) -> Option<String> {
        (self.have > 0).then(|| format!("bytes={}-", self.have))
    }

    /// Apply the server's reply before writing its body.
    pub fn begin(&mut self, reply: RangeReply) -> Result<ResumeAction, PartialError> {
        let action = plan_resume(self.have, reply);
        let mut open = fs::OpenOptions::new();
        open.create(true).write(true);
        match action {
            ResumeAction::Append => open.append(true),
            ResumeAction::Restart => open.truncate(true),
            ResumeAction::Verify => return Ok(action),
        };
        self.file = Some(
            open.open(&self.path)
                .map_err(|source| self.write_err(source))?,
        );
        if action == ResumeAction::Restart {
            self.have = 0;
        }
        Ok(action)
    }

    /// Append body bytes (after [`begin`](Self::begin)).
    pub fn write(&mut self, data: &[u8]) -> Result<(), PartialError> {
        let result = match self.file.as_mut() {
            Some(file) => file.write_all(data),
            None => Err(io::Error::other("begin() was not called")),
        };
        result.map_err(|source| self.write_err(source))?;
        self.have += data.len() as u64;
        Ok(())
    }

    /// Flush what we have so a reboot keeps it (call when the transfer is cut).
    pub fn persist(&mut self) -> Result<(), PartialError> {
        if let Some(file) = self.file.as_ref() {
            file.sync_data().map_err(|source| self.write_err(source))?;
        }
        Ok(())
    }

    /// Verify the whole blob; on success return its path (ready to move into the store),
    /// on mismatch delete it.
    pub(super) fn verify(mut self) -> Result<PathBuf, PartialError> {
        self.persist()?;
        self.file = None;
        let (actual, bytes) = digest_file(&self.path).map_err(|source| self.write_err(source))?;
        if actual != self.digest {
            let _ = fs::remove_file(&self.path);
            return Err(PartialError::VerifyDigest {
                expected: self.digest,
                actual,
                bytes,
            });
        }
        Ok(self.path)
    }

    fn write_err(&self, source: io::Error) -> PartialError {
        PartialError::Write {
            digest: self.digest,
            path: self.path.clone(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_resume_table() {
        let cases = [
            (0, RangeReply::Full, ResumeAction::Restart),
            (100, RangeReply::Full, ResumeAction::Restart),
            (
                100,
                RangeReply::Partial { start: 100 },
                ResumeAction::Append,
            ),
            (
                100,
                RangeReply::Partial { start: 50 },
                ResumeAction::Restart,
            ),
            (100, RangeReply::NotSatisfiable, ResumeAction::Verify),
        ];
        for (have, reply, want) in cases {
            assert_eq!(plan_resume(have, reply), want, "{have} {reply:?}");
        }
    }
}
