//! The retry policy: how often and how long to wait. Whether a failure is worth retrying at
//! all is decided in [`crate::classify`]; this module never looks at a response.

use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::time::Instant;

/// Bounded retries of transient request failures (5xx, 429, connection errors) with capped
/// exponential backoff and jitter. The caller's deadline is an outer limit: a retry whose
/// wait plus [`RetryPolicy::min_attempt_ms`] does not fit before it is not started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RetryPolicy {
    /// Attempts of one HTTP call, the first included (the replay after a token refresh is
    /// not counted: it is a different cause, allowed once).
    pub max_attempts: u32,
    /// Backoff before the first retry; doubles for each further retry.
    pub base_backoff_ms: u64,
    /// Upper bound of one backoff.
    pub max_backoff_ms: u64,
    /// Time an attempt needs at least; a retry with less time left before the deadline
    /// (after its backoff) would only burn an API call on a certain timeout.
    pub min_attempt_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            base_backoff_ms: 500,
            max_backoff_ms: 8_000,
            min_attempt_ms: 1_000,
        }
    }
}

impl RetryPolicy {
    /// The upper bound of the backoff before retry number `retry` (1 = first retry).
    pub fn ceiling(&self, retry: u32) -> Duration {
        let exp = retry.saturating_sub(1).min(32);
        let ms = self
            .base_backoff_ms
            .saturating_mul(1u64 << exp)
            .min(self.max_backoff_ms);
        Duration::from_millis(ms)
    }

    /// Backoff before retry number `retry` with "equal jitter": half the ceiling plus a
    /// random share of the other half, so concurrent clients spread out yet every retry
    /// still waits.
    pub fn backoff(&self, retry: u32) -> Duration {
        let ceiling = self.ceiling(retry).as_millis() as u64;
        let half = ceiling / 2;
        let jitter = if ceiling > half {
            rand::random_range(0..=ceiling - half)
        } else {
            0
        };
        Duration::from_millis(half + jitter)
    }

    /// The wait before the next attempt, or `None` when no further attempt may start:
    /// `attempts_made` reached the maximum, or the wait plus one minimal attempt does not
    /// fit before `deadline`.
    pub fn next_delay(
        &self,
        attempts_made: u32,
        now: Instant,
        deadline: Instant,
    ) -> Option<Duration> {
        if attempts_made >= self.max_attempts.max(1) {
            return None;
        }
        let delay = self.backoff(attempts_made);
        let needed = delay + Duration::from_millis(self.min_attempt_ms);
        (now + needed <= deadline).then_some(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            base_backoff_ms: 100,
            max_backoff_ms: 1_000,
            min_attempt_ms: 50,
        }
    }

    #[test]
    fn ceiling_doubles_and_is_capped() {
        let p = policy();
        let ceilings: Vec<u64> = (1..=6).map(|r| p.ceiling(r).as_millis() as u64).collect();
        assert_eq!(ceilings, vec![100, 200, 400, 800, 1_000, 1_000]);
        assert_eq!(p.ceiling(u32::MAX), Duration::from_millis(1_000));
    }

    #[test]
    fn backoff_stays_between_half_and_full_ceiling() {
        let p = policy();
        for retry in 1..=6 {
            for _ in 0..200 {
                let d = p.backoff(retry);
                assert!(
                    d >= p.ceiling(retry) / 2 && d <= p.ceiling(retry),
                    "{retry}: {d:?}"
                );
            }
        }
    }

    #[test]
    fn no_retry_after_max_attempts() {
        let p = policy();
        let now = Instant::now();
        let far = now + Duration::from_secs(3600);
        assert!(p.next_delay(4, now, far).is_some());
        assert!(p.next_delay(5, now, far).is_none());
    }

    #[test]
    fn no_retry_that_would_not_fit_before_the_deadline() {
        let p = policy();
        let now = Instant::now();
        // First retry waits at most 100 ms and needs 50 ms of attempt: 150 ms always fits,
        // 99 ms never does (the wait alone is at least 50 ms).
        assert!(p
            .next_delay(1, now, now + Duration::from_millis(150))
            .is_some());
        assert!(p
            .next_delay(1, now, now + Duration::from_millis(99))
            .is_none());
    }

    #[test]
    fn serde_defaults_fill_missing_fields() {
        let p: RetryPolicy = serde_json::from_str(r#"{"max_attempts": 2}"#).unwrap();
        assert_eq!(p.max_attempts, 2);
        assert_eq!(p.base_backoff_ms, RetryPolicy::default().base_backoff_ms);
    }
}
