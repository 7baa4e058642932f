//! The retry policy: how many attempts, and how long to wait before each. Exponential backoff
//! with jitter, so a fleet of clients does not retry in lockstep; a server-given Retry-After wins.

use std::time::Duration;

/// The longest a server may make us wait through Retry-After before we call it a failure.
const MAX_SERVER_DELAY: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
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
    /// The default, with `IMPROVE_RETRY_BASE_MS` (tests use it) scaling every delay.
    pub fn from_env_or_default() -> Self {
        match std::env::var("IMPROVE_RETRY_BASE_MS").ok().and_then(|v| v.parse::<u64>().ok()) {
            Some(ms) => RetryPolicy {
                base_delay: Duration::from_millis(ms),
                max_delay: Duration::from_millis(ms.saturating_mul(20)),
                ..RetryPolicy::default()
            },
            None => RetryPolicy::default(),
        }
    }

    /// The wait before attempt `attempt` (2 for the first retry): "equal jitter", half fixed and
    /// half random, of `base * 2^(attempt-2)` capped at `max_delay`; or the server's own delay.
    pub fn delay(&self, attempt: u32, server_says: Option<Duration>) -> Duration {
        if let Some(d) = server_says {
            return d.min(MAX_SERVER_DELAY);
        }
        let exp = attempt.saturating_sub(2).min(20);
        let full = self.base_delay.saturating_mul(1u32 << exp).min(self.max_delay);
        let half = full / 2;
        half + half.mul_f64(fastrand::f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_are_capped() {
        let p = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(800),
        };
        for _ in 0..50 {
            let d2 = p.delay(2, None);
            assert!(d2 >= Duration::from_millis(50) && d2 <= Duration::from_millis(100), "{d2:?}");
            let d4 = p.delay(4, None);
            assert!(d4 >= Duration::from_millis(200) && d4 <= Duration::from_millis(400), "{d4:?}");
            assert!(p.delay(30, None) <= Duration::from_millis(800));
        }
    }

    #[test]
    fn the_server_delay_wins_but_is_bounded() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay(2, Some(Duration::from_secs(7))), Duration::from_secs(7));
        assert_eq!(p.delay(2, Some(Duration::from_secs(99_999))), MAX_SERVER_DELAY);
    }
}
