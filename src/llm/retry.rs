//! The retry policy: how many attempts an LLM call gets and how long to wait between them.
//!
//! Only the numbers live here; the loop that applies them is `LlmClient::complete`, and which
//! failures are worth retrying is decided by `LlmError::is_retryable`.

use std::time::Duration;

/// Env var that shrinks every backoff, so tests (and CI) exercising retries stay fast.
pub const RETRY_BASE_ENV: &str = "IMPROVE_RETRY_BASE_MS";

/// A server may ask for a long pause (quota resets); past this we stop trusting it and retry
/// anyway, because an overnight run should not sit idle for hours on one header.
pub const MAX_SERVER_DELAY: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts, the first one included (0 is treated as 1).
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The default policy, or one scaled down by `IMPROVE_RETRY_BASE_MS` when that is set.
    pub fn from_env_or_default() -> Self {
        Self::from_base_ms(std::env::var(RETRY_BASE_ENV).ok().as_deref())
    }

    fn from_base_ms(value: Option<&str>) -> Self {
        let default = RetryPolicy::default();
        let Some(raw) = value else {
            return default;
        };
        match raw.trim().parse::<u64>() {
            Ok(ms) => {
                let base = Duration::from_millis(ms);
                RetryPolicy {
                    base_delay: base,
                    max_delay: base.saturating_mul(20),
                    ..default
                }
            }
            Err(_) => {
                tracing::warn!(
                    value = raw,
                    "{RETRY_BASE_ENV} is not a number of milliseconds; using the default retry policy"
                );
                default
            }
        }
    }

    /// Attempts actually allowed: a policy of 0 still sends the request once.
    pub fn attempts(&self) -> u32 {
        self.max_attempts.max(1)
    }

    /// The wait before retry number `retry` (1 = the wait before the second attempt).
    ///
    /// A delay the server asked for wins, capped at [`MAX_SERVER_DELAY`]. Otherwise the wait is
    /// `base * 2^(retry-1)` capped at `max_delay`, with equal jitter: half of it is fixed and
    /// half random. Full jitter could draw ~0 and hammer a rate-limited server; no jitter
    /// would make parallel iterations retry in lockstep.
    pub fn delay_before_retry(&self, retry: u32, server_delay: Option<Duration>) -> Duration {
        if let Some(server) = server_delay {
            return server.min(MAX_SERVER_DELAY);
        }
        let exponent = retry.saturating_sub(1);
        let backoff = 2u32
            .checked_pow(exponent)
            .and_then(|factor| self.base_delay.checked_mul(factor))
            .unwrap_or(self.max_delay)
            .min(self.max_delay);
        let half = backoff / 2;
        let spread = backoff.saturating_sub(half);
        let nanos = u64::try_from(spread.as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(fastrand::u64(0..=nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
        }
    }

    #[test]
    fn default_is_five_attempts_one_second_sixty_cap() {
        let p = RetryPolicy::default();
        assert_eq!(p.max_attempts, 5);
        assert_eq!(p.base_delay, Duration::from_secs(1));
        assert_eq!(p.max_delay, Duration::from_secs(60));
    }

    #[test]
    fn backoff_doubles_within_equal_jitter_bounds() {
        let p = policy();
        for _ in 0..200 {
            for (retry, full_ms) in [(1u32, 100u64), (2, 200), (3, 400), (4, 800)] {
                let d = p.delay_before_retry(retry, None);
                let full = Duration::from_millis(full_ms);
                assert!(
                    d >= full / 2 && d <= full,
                    "retry {retry}: {d:?} not in [{:?}, {full:?}]",
                    full / 2
                );
            }
        }
    }

    #[test]
    fn backoff_is_capped_even_for_huge_retry_numbers() {
        let p = policy();
        for retry in [5, 6, 31, 32, 33, 1000, u32::MAX] {
            let d = p.delay_before_retry(retry, None);
            assert!(d <= p.max_delay, "retry {retry}: {d:?}");
            assert!(d >= p.max_delay / 2, "retry {retry}: {d:?}");
        }
    }

    #[test]
    fn jitter_actually_varies() {
        let p = policy();
        let draws: std::collections::HashSet<Duration> =
            (0..50).map(|_| p.delay_before_retry(3, None)).collect();
        assert!(draws.len() > 1, "50 draws gave the same delay");
    }

    #[test]
    fn server_delay_wins_and_is_capped() {
        let p = policy();
        assert_eq!(
            p.delay_before_retry(1, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
        assert_eq!(
            p.delay_before_retry(1, Some(Duration::ZERO)),
            Duration::ZERO
        );
        assert_eq!(
            p.delay_before_retry(1, Some(Duration::from_secs(86_400))),
            MAX_SERVER_DELAY
        );
    }

    #[test]
    fn env_base_scales_the_policy() {
        let p = RetryPolicy::from_base_ms(Some("5"));
        assert_eq!(p.base_delay, Duration::from_millis(5));
        assert_eq!(p.max_delay, Duration::from_millis(100));
        assert_eq!(p.max_attempts, 5);
        assert_eq!(RetryPolicy::from_base_ms(None), RetryPolicy::default());
        assert_eq!(
            RetryPolicy::from_base_ms(Some("soon")),
            RetryPolicy::default()
        );
    }

    #[test]
    fn zero_attempts_still_means_one() {
        let p = RetryPolicy {
            max_attempts: 0,
            ..policy()
        };
        assert_eq!(p.attempts(), 1);
    }
}
