//! Windows of base layers' compact skeletons, read in one forward pass. A delta's skeleton
//! chunks name reference windows that move forward and overlap (each is twice its chunk), so
//! holding the last window and decoding on from there reads each skeleton once; decoding
//! from the start for every window made applying quadratic in the skeleton's size.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use super::CompactReader;

/// How many times a run of windows may go back (to an earlier offset, or to another base's
/// skeleton after leaving it) before it is refused. Coracle's encoder never does: this
/// bounds the work a crafted delta can cause to a few decodes of each skeleton.
pub const MAX_REWINDS: u32 = 4;

type Decoder = zstd::stream::read::Decoder<'static, BufReader<File>>;

/// The current skeleton being read: its path, its compact stream positioned at
/// `held_start + held.len()`, and the bytes of the last window onwards.
struct Cursor {
    path: PathBuf,
    compact: CompactReader<Decoder>,
    held: Vec<u8>,
    held_start: u64,
}

/// Reads windows of compact skeletons (see [`super::compact_skeleton`]), in increasing order
/// of their start, decoding each skeleton file once.
#[derive(Default)]
pub struct SkeletonWindows {
    cursor: Option<Cursor>,
    opened: Vec<PathBuf>,
    rewinds: u32,
}

impl std::fmt::Debug for SkeletonWindows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SkeletonWindows")
            .field("path", &self.cursor.as_ref().map(|c| &c.path))
            .field("rewinds", &self.rewinds)
            .finish()
    }
}

impl SkeletonWindows {
    pub fn new() -> Self {
        Self::default()
    }

    /// How many times a window went back so far (see [`MAX_REWINDS`]).
    pub fn rewinds(&self) -> u32 {
        self.rewinds
    }

    /// `len` bytes of the compact form of the skeleton at `path`, from `offset`, as a copy
    /// the caller may change (deltas normalise checksums in it). The caller bounds `len`
    /// (it is held in memory).
    pub fn window(&mut self, path: &Path, offset: u64, len: u64) -> io::Result<Vec<u8>> {
        let end = offset.checked_add(len).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, "skeleton window past 2^64")
        })?;
        let cursor = self.cursor_at(path, offset)?;
        // Forget what lies before the window, then skip to it.
        let stale = usize::try_from(offset - cursor.held_start)
            .unwrap_or(usize::MAX)
            .min(cursor.held.len());
        cursor.held.drain(..stale);
        cursor.held_start += stale as u64;
        if offset > cursor.held_start {
            let gap = offset - cursor.held_start;
            cursor.held_start += io::copy(&mut (&mut cursor.compact).take(gap), &mut io::sink())?;
        }
        let wanted = end - offset;
        let have = cursor.held.len() as u64;
        if cursor.held_start == offset && have < wanted {
            cursor
                .held
                .reserve_exact(usize::try_from(wanted - have).unwrap_or(usize::MAX));
            (&mut cursor.compact)
                .take(wanted - have)
                .read_to_end(&mut cursor.held)?;
        }
        if cursor.held_start != offset || (cursor.held.len() as u64) < wanted {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("compact skeleton {} is shorter than {end}", path.display()),
            ));
        }
        Ok(cursor.held[..len as usize].to_vec())
    }

    /// The cursor on `path`, positioned at or before `offset`: the current one when it can
    /// get there going forward, else a fresh one (a rewind, unless `path` is new).
    fn cursor_at(&mut self, path: &Path, offset: u64) -> io::Result<&mut Cursor> {
        let reusable = self
            .cursor
            .as_ref()
            .is_some_and(|c| c.path == path && c.held_start <= offset);
        if !reusable {
            if self.opened.iter().any(|p| p == path) {
                self.rewinds += 1;
                if self.rewinds > MAX_REWINDS {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "skeleton {} read backwards more than {MAX_REWINDS} times: a delta \
                             reads each base's skeleton forwards, once",
                            path.display()
                        ),
                    ));
                }
            } else {
                self.opened.push(path.to_path_buf());
            }
            // Drop the old cursor first: its decoder and window are not needed any more.
            self.cursor = None;
            let file = File::open(path)?;
            self.cursor = Some(Cursor {
                path: path.to_path_buf(),
                compact: CompactReader::new(zstd::stream::read::Decoder::new(file)?),
                held: Vec::new(),
                held_start: 0,
            });
        }
        Ok(self.cursor.as_mut().expect("set above"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delta::window::plan_windows;
    use std::io::Write;

    /// A zstd skeleton file of `blocks` distinct header-like blocks (not tar: it passes
    /// through the compact form unchanged), and its compact form.
    fn skeleton(dir: &Path, name: &str, blocks: u32) -> (PathBuf, Vec<u8>) {
        let mut compact = Vec::new();
        for i in 0..blocks {
            let mut block = [b'h'; 512];
            block[..4].copy_from_slice(&i.to_le_bytes());
            compact.extend_from_slice(&block);
        }
        let path = dir.join(name);
        let mut out = zstd::stream::write::Encoder::new(File::create(&path).unwrap(), 3).unwrap();
        out.write_all(&compact).unwrap();
        out.finish().unwrap();
        (path, compact)
    }

    #[test]
    fn forward_overlapping_windows_read_the_skeleton_once_and_match_it() {
        let dir = tempfile::tempdir().unwrap();
        let (path, compact) = skeleton(dir.path(), "old", 12_000); // ≈ 6 MB
        let mut windows = SkeletonWindows::new();
        // The windows a delta of a slightly longer new skeleton names, 1 MB chunks.
        let plan = plan_windows(
            compact.len() as u64 + 300_000,
            compact.len() as u64,
            1 << 20,
        );
        assert!(plan.len() >= 6);
        for w in &plan {
            let (start, end) = (w.reference.start, w.reference.end);
            let got = windows.window(&path, start, end - start).unwrap();
            assert!(
                got == compact[start as usize..end as usize],
                "window {start}..{end}"
            );
        }
        assert_eq!(windows.rewinds(), 0);
        // Zero-length and repeated windows are no rewind either.
        let last = plan.last().unwrap().reference.start;
        assert!(windows.window(&path, last, 0).unwrap().is_empty());
        assert_eq!(
            windows.window(&path, last, 512).unwrap(),
            &compact[last as usize..][..512]
        );
        assert_eq!(windows.rewinds(), 0);
    }

    #[test]
    fn going_back_is_counted_and_refused_past_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let (a, compact_a) = skeleton(dir.path(), "a", 64);
        let (b, compact_b) = skeleton(dir.path(), "b", 32);
        let mut windows = SkeletonWindows::new();
        assert_eq!(
            windows.window(&a, 8192, 512).unwrap(),
            &compact_a[8192..8704]
        );
        // Another base's skeleton, first time: not a rewind.
        assert_eq!(windows.window(&b, 512, 512).unwrap(), &compact_b[512..1024]);
        assert_eq!(windows.rewinds(), 0);
        // Back to `a`, then backwards within it: rewinds, still correct.
        assert_eq!(windows.window(&a, 0, 512).unwrap(), &compact_a[..512]);
        assert_eq!(
            windows.window(&a, 1024, 512).unwrap(),
            &compact_a[1024..1536]
        );
        assert_eq!(windows.window(&a, 512, 512).unwrap(), &compact_a[512..1024]);
        assert_eq!(windows.rewinds(), 2);
        for _ in 2..MAX_REWINDS {
            windows.window(&a, 2048, 512).unwrap();
            windows.window(&a, 0, 512).unwrap();
        }
        assert_eq!(windows.rewinds(), MAX_REWINDS);
        windows.window(&a, 2048, 512).unwrap();
        let err = windows.window(&a, 0, 512).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let text = err.to_string();
        assert!(text.contains("read backwards more than 4 times"), "{text}");
        assert!(text.contains(&a.display().to_string()), "{text}");
    }

    #[test]
    fn a_window_past_the_end_names_the_skeleton() {
        let dir = tempfile::tempdir().unwrap();
        let (path, compact) = skeleton(dir.path(), "short", 4);
        let mut windows = SkeletonWindows::new();
        let len = compact.len() as u64;
        assert_eq!(
            windows.window(&path, len - 512, 512).unwrap(),
            &compact[1536..]
        );
        for (offset, wanted) in [(len - 100, 200), (len + 1000, 10)] {
            let err = windows.window(&path, offset, wanted).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
            assert!(err.to_string().contains("short is shorter than"), "{err}");
        }
        let missing = dir.path().join("missing");
        let err = windows.window(&missing, 0, 1).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
