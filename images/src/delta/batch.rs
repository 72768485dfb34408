//! Batches: runs of small changed files patched as one stream. Each file patched on its own
//! pays a frame's fixed cost and starts with no statistics; a release that touches a version
//! string in a hundred small files (a pure-Python patch release, a JS package) then loses to
//! a whole-stream tool like xdelta3. A batch concatenates the new contents of up to
//! [`MAX_BATCH_PARTS`] such files (at most one output window) and patches them against the
//! concatenation of their old counterparts (at most two windows), once; the files then take
//! their bytes from it in tar order (`FromBatch`). The encoder keeps a batch only where it
//! is smaller than patching the same files one by one.

use super::matcher::Counterpart;
use super::op::OldRef;

/// Most files in one batch: bounds what a device allocates for the batch's part list
/// before it has read a byte of the payload.
pub const MAX_BATCH_PARTS: usize = 4096;
/// Largest changed file (new or old side) that goes into a batch; larger ones are patched
/// window by window on their own, where bsdiff and zstd find their best matches.
pub const MAX_BATCH_FILE: u64 = 256 << 10;

/// A range of an old file that is part of a batch's reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchPart {
    pub from: OldRef,
    pub offset: u64,
    pub len: u64,
}

/// What a region of the new tar is to the batch planner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Member {
    /// A small changed file with an old counterpart: may join a batch.
    Candidate { new: u64, old: u64 },
    /// Copied or literal: produces its bytes without a patch, so a batch may span it.
    Neutral,
    /// Patched on its own: a batch must be served completely before it (the device holds
    /// one patch's buffers at a time).
    Breaker,
}

impl Member {
    /// A new file of `size` bytes with this old counterpart.
    pub fn of(size: u64, counterpart: &Counterpart) -> Self {
        match *counterpart {
            Counterpart::Similar { size: old, .. }
                if size <= MAX_BATCH_FILE && old <= MAX_BATCH_FILE =>
            {
                Member::Candidate { new: size, old }
            }
            Counterpart::Similar { .. } => Member::Breaker,
            Counterpart::Identical(_) | Counterpart::None => Member::Neutral,
        }
    }
}

/// Which regions form each batch (indices in `members`, ascending): consecutive candidates,
/// neutral regions allowed between them, cut where a breaker comes or the batch would hold
/// more than `window` new bytes, `2 * window` old bytes or [`MAX_BATCH_PARTS`] files. A
/// batch of one file is left out: it would cost what its own patch costs.
pub fn plan_batches(members: &[Member], window: u64) -> Vec<Vec<usize>> {
    let mut batches = Vec::new();
    let (mut current, mut new_bytes, mut old_bytes) = (Vec::new(), 0u64, 0u64);
    let mut close = |current: &mut Vec<usize>| {
        if current.len() > 1 {
            batches.push(std::mem::take(current));
        }
        current.clear();
    };
    for (i, member) in members.iter().enumerate() {
        match *member {
            Member::Neutral => {}
            Member::Breaker => {
                close(&mut current);
                (new_bytes, old_bytes) = (0, 0);
            }
            Member::Candidate { new, old } => {
                if new > window.min(MAX_BATCH_FILE) || old > (2 * window).min(MAX_BATCH_FILE) {
                    close(&mut current);
                    (new_bytes, old_bytes) = (0, 0);
                    continue;
                }
                if new_bytes + new > window
                    || old_bytes + old > 2 * window
                    || current.len() == MAX_BATCH_PARTS
                {
                    close(&mut current);
                    (new_bytes, old_bytes) = (0, 0);
                }
                current.push(i);
                new_bytes += new;
                old_bytes += old;
            }
        }
    }
    close(&mut current);
    batches
}

#[cfg(test)]
mod tests {
    use super::*;
    use Member::{Breaker, Candidate, Neutral};

    fn small(n: u64) -> Member {
        Candidate { new: n, old: n }
    }

    #[test]
    fn batches_span_neutral_regions_and_stop_at_breakers() {
        let members = [
            small(10),
            Neutral,
            small(20),
            Breaker,
            small(5),
            small(6),
            Neutral,
        ];
        assert_eq!(plan_batches(&members, 1000), vec![vec![0, 2], vec![4, 5]]);
    }

    #[test]
    fn a_lone_changed_file_is_not_a_batch() {
        assert!(plan_batches(&[small(10), Breaker, small(10)], 1000).is_empty());
    }

    #[test]
    fn batches_are_cut_at_the_window() {
        let members = [small(400), small(400), small(400), small(400)];
        assert_eq!(plan_batches(&members, 1000), vec![vec![0, 1], vec![2, 3]]);
    }

    #[test]
    fn old_bytes_are_bounded_by_two_windows() {
        let members = [
            Candidate { new: 1, old: 900 },
            Candidate { new: 1, old: 900 },
            Candidate { new: 1, old: 900 },
        ];
        assert_eq!(plan_batches(&members, 1000), vec![vec![0, 1]]);
    }

    #[test]
    fn large_files_break_batches() {
        let members = [
            small(1),
            small(1),
            small(MAX_BATCH_FILE + 1),
            small(1),
            small(1),
        ];
        assert_eq!(
            plan_batches(&members, 1 << 30),
            vec![vec![0, 1], vec![3, 4]]
        );
    }

    #[test]
    fn batches_hold_at_most_max_parts() {
        let members = vec![small(1); MAX_BATCH_PARTS + 2];
        let batches = plan_batches(&members, 1 << 30);
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[0].len(), MAX_BATCH_PARTS);
        assert_eq!(batches[1].len(), 2);
    }
}
