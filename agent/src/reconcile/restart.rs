//! Restart policies (Docker's) and the exponential backoff between restarts.

use coracle_proto::RestartPolicy;

/// First restart delay.
pub const BACKOFF_MIN_MS: u64 = 1_000;
/// Longest restart delay: a crash-looping container costs one start per five minutes.
pub const BACKOFF_MAX_MS: u64 = 300_000;

/// Whether a container that exited with `code` after `restarts` restarts is started again.
/// `stopped` is true when it was stopped on purpose rather than exiting by itself.
pub fn should_restart(policy: RestartPolicy, code: i32, restarts: u32, stopped: bool) -> bool {
    match policy {
        RestartPolicy::No => false,
        RestartPolicy::OnFailure { .. } | RestartPolicy::UnlessStopped if stopped => false,
        RestartPolicy::OnFailure { max_retries } => {
            code != 0 && (max_retries == 0 || restarts < max_retries)
        }
        RestartPolicy::Always => true,
        RestartPolicy::UnlessStopped => true,
    }
}

/// Delay before restart number `restarts + 1`: 1 s, 2 s, 4 s … capped at 5 min.
pub fn backoff_ms(restarts: u32) -> u64 {
    BACKOFF_MIN_MS
        .saturating_mul(1u64.checked_shl(restarts.min(32)).unwrap_or(u64::MAX))
        .min(BACKOFF_MAX_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_follow_docker() {
        use RestartPolicy::*;
        let on3 = OnFailure { max_retries: 3 };
        let unlimited = OnFailure { max_retries: 0 };
        // (policy, exit code, restarts so far, stopped on purpose, restart?)
        let table = [
            (No, 1, 0, false, false),
            (on3, 0, 0, false, false),
            (on3, 1, 0, false, true),
            (on3, 1, 2, false, true),
            (on3, 1, 3, false, false),
            (unlimited, 1, 1000, false, true),
            (on3, 1, 0, true, false),
            (Always, 0, 0, false, true),
            (Always, 0, 0, true, true),
            (UnlessStopped, 0, 5, false, true),
            (UnlessStopped, 0, 0, true, false),
        ];
        for (policy, code, restarts, stopped, want) in table {
            assert_eq!(
                should_restart(policy, code, restarts, stopped),
                want,
                "{policy:?} code={code} restarts={restarts} stopped={stopped}"
            );
        }
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let got: Vec<u64> = [0, 1, 2, 3, 8, 9, 40, u32::MAX]
            .into_iter()
            .map(backoff_ms)
            .collect();
        assert_eq!(
            got,
            [1_000, 2_000, 4_000, 8_000, 256_000, 300_000, 300_000, 300_000]
        );
    }
}
