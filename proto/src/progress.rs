//! `PullProgress`: how far a device's pull of a generation's images has come, one layer at a
//! time. Published on its own topic (`TopicKind::Progress`, QoS 0, not retained) at most once
//! a second while a layer downloads, plus once when each layer is stored, so a 40 MB pull
//! is no longer silent and costs a few hundred bytes a minute on a metered link.
//!
//! It is a separate message rather than a field of [`crate::ReportedState`] because the
//! reported state is retained, sent at QoS 1 and carries every held layer's digest (32 bytes
//! each): resending it every second would cost far more than this ~20-byte body.

use serde::{Deserialize, Serialize};

use crate::ids::{Generation, ServiceName};

/// One layer's progress in the pull of `generation`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullProgress {
    /// The desired generation the pull is for.
    pub generation: Generation,
    /// The first service of that generation that runs the image being pulled.
    pub service: ServiceName,
    /// The layer's position in the image (0-based) and the image's layer count.
    pub layer: u16,
    pub layers: u16,
    /// Bytes of the blob on the wire received so far, and its size (the delta's size when
    /// `delta`, else the compressed layer's); `total_bytes` is 0 when the registry did not
    /// say.
    pub done_bytes: u64,
    pub total_bytes: u64,
    /// The layer comes as a delta against layers the device holds, not whole.
    pub delta: bool,
    /// The layer is verified and in the store (the last report for it).
    pub stored: bool,
}

impl PullProgress {
    /// Whole percent of the blob received (100 once stored, 0 when the size is unknown).
    pub fn percent(&self) -> u8 {
        if self.stored {
            return 100;
        }
        if self.total_bytes == 0 {
            return 0;
        }
        let permille = self.done_bytes.min(self.total_bytes) * 100 / self.total_bytes;
        u8::try_from(permille).unwrap_or(100)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::samples;

    #[test]
    fn a_progress_report_is_a_few_dozen_bytes() {
        let sample = samples::pull_progress();
        let body = crate::codec::encode(&sample);
        assert_eq!(crate::codec::decode::<PullProgress>(&body).unwrap(), sample);
        // version byte, generation, "web", layer 1 of 3, 38 MB of 40 MB, two flags.
        assert_eq!(body.len(), 18, "{body:?}");
    }

    #[test]
    fn percent_is_clamped_and_unknown_sizes_are_zero() {
        let mut p = samples::pull_progress();
        assert_eq!(p.percent(), 95);
        p.done_bytes = p.total_bytes + 10;
        assert_eq!(p.percent(), 100);
        p.total_bytes = 0;
        assert_eq!(p.percent(), 0);
        p.stored = true;
        assert_eq!(p.percent(), 100);
    }
}
