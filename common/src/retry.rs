//! Retry policy: how many executions a phase gets and how long a retry waits.

use std::time::Duration;

/// Exponential backoff with full jitter, capped.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Delay before the first retry, before jitter.
    pub base: Duration,
    /// Upper bound on any delay.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(500),
            max: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// The un-jittered ceiling for retry number `retry` (1 for the first).
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.saturating_sub(1).min(30));
        self.base.saturating_mul(factor).min(self.max)
    }

    /// The delay for retry number `retry`: uniform in [ceiling/2, ceiling],
    /// so retries of many children that failed together spread out.
    pub fn delay(&self, retry: u32) -> Duration {
        let ceiling = self.ceiling(retry);
        let half = ceiling / 2;
        half + half.mul_f64(fastrand::f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_then_caps() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        assert_eq!(b.ceiling(1), Duration::from_millis(100));
        assert_eq!(b.ceiling(2), Duration::from_millis(200));
        assert_eq!(b.ceiling(4), Duration::from_millis(800));
        assert_eq!(b.ceiling(5), Duration::from_secs(1));
        assert_eq!(b.ceiling(40), Duration::from_secs(1));
    }

    #[test]
    fn jittered_delay_stays_in_its_band() {
        let b = Backoff::default();
        for retry in 1..8 {
            let d = b.delay(retry);
            assert!(
                d <= b.ceiling(retry) && d >= b.ceiling(retry) / 2,
                "{retry}: {d:?}"
            );
        }
    }
}
