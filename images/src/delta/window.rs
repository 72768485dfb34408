//! Windows: large files are patched piecewise so that applying never holds more than one
//! output window and one reference window, whatever the file size.

use std::ops::Range;

/// A piece of a new file and the region of the old file it is patched against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub new: Range<u64>,
    pub reference: Range<u64>,
}

/// Cut a new file of `new_len` bytes into windows of at most `window` bytes, each paired with
/// at most `2 * window` bytes of the old file around the proportional position.
pub fn plan_windows(new_len: u64, old_len: u64, window: u64) -> Vec<Window> {
    let window = window.max(1);
    let reference_len = 2 * window;
    if new_len <= window && old_len <= reference_len {
        return vec![Window {
            new: 0..new_len,
            reference: 0..old_len,
        }];
    }
    let mut out = Vec::new();
    let mut start = 0;
    while start < new_len {
        let end = (start + window).min(new_len);
        // Map the window's start into the old file, then center the reference on it.
        let mapped = if new_len == 0 {
            0
        } else {
            (u128::from(start) * u128::from(old_len) / u128::from(new_len)) as u64
        };
        let ref_start = mapped
            .saturating_sub(window / 2)
            .min(old_len.saturating_sub(reference_len));
        let ref_end = (ref_start + reference_len).min(old_len);
        out.push(Window {
            new: start..end,
            reference: ref_start..ref_end,
        });
        start = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_files_are_one_window_against_the_whole_old_file() {
        assert_eq!(
            plan_windows(100, 150, 100),
            vec![Window {
                new: 0..100,
                reference: 0..150
            }]
        );
    }

    #[test]
    fn large_files_get_bounded_windows_covering_everything() {
        let windows = plan_windows(1000, 900, 100);
        assert_eq!(windows.len(), 10);
        assert_eq!(windows[0].new, 0..100);
        assert_eq!(windows[9].new, 900..1000);
        for w in &windows {
            assert!(w.reference.end - w.reference.start <= 200);
            assert!(w.reference.end <= 900);
        }
        assert_eq!(windows[9].reference, 700..900);
    }
}
