//! Free-space preflight: refuse work that would leave less than the configured reserve.

use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use crate::media_type::Compression;

/// The size of the filesystem holding a path and what an unprivileged writer may still use
/// of it, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskSpace {
    pub available: u64,
    pub total: u64,
}

/// The space of the filesystem holding `path` (statvfs).
pub fn disk_space(path: &Path) -> io::Result<DiskSpace> {
    let stat = nix::sys::statvfs::statvfs(path).map_err(io::Error::from)?;
    // The block counts are 32 bits on 32-bit ARM glibc, 64 bits elsewhere.
    #[allow(clippy::useless_conversion)]
    let bytes = |blocks| u64::from(blocks).saturating_mul(u64::from(stat.fragment_size()));
    Ok(DiskSpace {
        available: bytes(stat.blocks_available()),
        total: bytes(stat.blocks()),
    })
}

/// Bytes available to an unprivileged writer on the filesystem holding `path`.
pub fn available_bytes(path: &Path) -> io::Result<u64> {
    disk_space(path).map(|space| space.available)
}

/// Disk a pull of these missing layers (blob size, compression) needs at its peak: every
/// layer's unpacked tree — a plain tar's own size, three times a compressed blob (gzip's
/// usual 2-3x) — plus the largest blob, which is kept until its layer is unpacked (layers
/// are fetched one after another). A delta needs less on the wire but the same tree.
pub fn pull_space_needed(layers: &[(u64, Compression)]) -> u64 {
    let trees = layers
        .iter()
        .map(|&(size, compression)| match compression {
            Compression::None => size,
            Compression::Gzip | Compression::Zstd => size.saturating_mul(3),
        })
        .fold(0u64, u64::saturating_add);
    let largest_blob = layers.iter().map(|&(size, _)| size).max().unwrap_or(0);
    trees.saturating_add(largest_blob)
}

/// A guess of the unpacked size of a layer blob, for the preflight: plain tars are exact,
/// gzip uses the ISIZE trailer (mod 4 GiB, so never below the blob size), zstd the frame's
/// content size when present; otherwise four times the blob.
pub fn estimate_unpacked(blob: &Path, compression: Compression) -> io::Result<u64> {
    let mut file = std::fs::File::open(blob)?;
    let size = file.metadata()?.len();
    let guess = match compression {
        Compression::None => Some(size),
        Compression::Gzip if size >= 18 => {
            file.seek(SeekFrom::End(-4))?;
            let mut isize = [0u8; 4];
            file.read_exact(&mut isize)?;
            Some(u64::from(u32::from_le_bytes(isize)).max(size))
        }
        Compression::Zstd => {
            let mut head = [0u8; 18];
            let n = file.read(&mut head)?;
            zstd::zstd_safe::get_frame_content_size(&head[..n])
                .ok()
                .flatten()
        }
        Compression::Gzip => None,
    };
    Ok(guess.unwrap_or(size.saturating_mul(4)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pull_needs_every_tree_plus_the_largest_blob() {
        assert_eq!(pull_space_needed(&[]), 0);
        assert_eq!(pull_space_needed(&[(10, Compression::Gzip)]), 40);
        assert_eq!(
            pull_space_needed(&[
                (10, Compression::Gzip),
                (100, Compression::None),
                (20, Compression::Zstd)
            ]),
            30 + 100 + 60 + 100
        );
        assert_eq!(
            pull_space_needed(&[(u64::MAX, Compression::Gzip)]),
            u64::MAX
        );
    }
}
