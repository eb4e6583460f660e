//! A tree's completion rate, ETA and elapsed time, from the sliding window
//! its `tree_summary` row keeps (migration 0007). Pure arithmetic; the SQL
//! that rotates the window is in `store/batch.rs` (`add_tree_deltas`).
//!
//! The row holds two points, each (moment, terminal jobs of the tree at
//! that moment): the start of the current bucket and of the one before.
//! When the applier adds a batch's deltas at least [`BUCKET_MS`] after the
//! current bucket began, it starts a new bucket (now, terminal jobs before
//! the batch) and the old start becomes the previous one; if the tree had
//! not changed for a whole bucket, the previous point is set to exactly one
//! bucket ago instead (the count then is known: it did not move). Writing
//! it costs nothing extra (a few columns of the same update), and reading
//! it is the same single-row read as the counts.
//!
//! ```text
//!   prev ─────────── at ────────── now        rate = (done(now) - done(prev))
//!    |<──── ≥ 20 s ───>|<── < 20 s ──>|             / (now - prev)
//! ```
//!
//! The rate is thus over the last 20 to 60 seconds: 20 to 40 s while
//! batches keep coming, up to 60 s just after a pause. A tree in which no
//! count moved for 20 s has a rate of 0 (exactly: nothing ended in the
//! last 20 s); a tree younger than a second has none yet.

/// Length of one bucket of the sliding window, in milliseconds.
pub const BUCKET_MS: i64 = 20_000;

/// The shortest window a rate is given for: a younger tree has none yet.
pub const MIN_WINDOW_MS: i64 = 1_000;

/// The window's words, for the API and the docs.
pub const WINDOW: &str = "the last 20 to 60 s";

/// What the `tree_summary` row says about the window, all times in
/// milliseconds since the epoch on the database's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateWindow {
    /// The moment of reading.
    pub now_ms: i64,
    /// The last change of any count of the tree.
    pub updated_ms: i64,
    /// When the current bucket began.
    pub at_ms: i64,
    /// Terminal jobs then.
    pub done_at: i64,
    /// When the bucket before began (none before the first rotation).
    pub prev_ms: Option<i64>,
    /// Terminal jobs then.
    pub done_prev: i64,
    /// Terminal jobs now.
    pub done: i64,
}

impl RateWindow {
    /// Terminal jobs per second over the window; `None` while the tree is
    /// younger than [`MIN_WINDOW_MS`].
    pub fn per_second(&self) -> Option<f64> {
        if self.now_ms - self.updated_ms >= BUCKET_MS {
            // No count moved for a whole bucket: nothing ended in it.
            return Some(0.0);
        }
        let (since, base) = match self.prev_ms {
            // The current bucket is old enough to be the window alone.
            _ if self.now_ms - self.at_ms >= BUCKET_MS => (self.at_ms, self.done_at),
            Some(prev) => (prev, self.done_prev),
            // Younger than one bucket: since the tree began.
            None => (self.at_ms, self.done_at),
        };
        let window = self.now_ms - since;
        if window < MIN_WINDOW_MS {
            return None;
        }
        // A retry moves a job back out of the terminal counts: never a
        // negative rate.
        Some((self.done - base).max(0) as f64 * 1000.0 / window as f64)
    }
}

/// Milliseconds until `remaining` open jobs end at `rate` per second: 0 when
/// none remain, `None` when the rate is unknown or 0.
pub fn eta_ms(remaining: i64, rate: Option<f64>) -> Option<i64> {
    if remaining <= 0 {
        return Some(0);
    }
    match rate {
        Some(r) if r > 0.0 && r.is_finite() => Some((remaining as f64 * 1000.0 / r).round() as i64),
        _ => None,
    }
}

/// Milliseconds since the root was created, until it finished if it did.
pub fn elapsed_ms(created_ms: i64, finished_ms: Option<i64>, now_ms: i64) -> i64 {
    (finished_ms.unwrap_or(now_ms) - created_ms).max(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A window read at 100 s, with the tree last changed at 99 s.
    fn window() -> RateWindow {
        RateWindow {
            now_ms: 100_000,
            updated_ms: 99_000,
            at_ms: 90_000,
            done_at: 500,
            prev_ms: Some(70_000),
            done_prev: 200,
            done: 800,
        }
    }

    #[test]
    fn rates_over_the_window() {
        let cases: &[(&str, RateWindow, Option<f64>)] = &[
            // 600 ended since the previous bucket began 30 s ago.
            ("both buckets", window(), Some(20.0)),
            // The current bucket is 25 s old: it is the window alone.
            (
                "an old current bucket",
                RateWindow {
                    at_ms: 75_000,
                    ..window()
                },
                Some(12.0),
            ),
            // Nothing moved for 20 s: nothing ended in the last 20 s.
            (
                "stalled",
                RateWindow {
                    updated_ms: 80_000,
                    ..window()
                },
                Some(0.0),
            ),
            // Younger than a bucket: since the tree began (5 s, 50 ended).
            (
                "a young tree",
                RateWindow {
                    at_ms: 95_000,
                    done_at: 0,
                    prev_ms: None,
                    done_prev: 0,
                    done: 50,
                    ..window()
                },
                Some(10.0),
            ),
            // Under a second old: no rate yet.
            (
                "too young",
                RateWindow {
                    at_ms: 99_500,
                    done_at: 0,
                    prev_ms: None,
                    done_prev: 0,
                    done: 3,
                    updated_ms: 99_900,
                    ..window()
                },
                None,
            ),
            // Retries moved jobs back out of the terminal counts.
            (
                "never negative",
                RateWindow {
                    done: 100,
                    ..window()
                },
                Some(0.0),
            ),
        ];
        for (what, w, expected) in cases {
            assert_eq!(w.per_second(), *expected, "{what}");
        }
    }

    #[test]
    fn etas() {
        let cases: &[(i64, Option<f64>, Option<i64>)] = &[
            (0, None, Some(0)),
            (0, Some(0.0), Some(0)),
            (100, Some(20.0), Some(5000)),
            (1, Some(3.0), Some(333)),
            (100, Some(0.0), None),
            (100, None, None),
            (100, Some(f64::NAN), None),
        ];
        for &(remaining, rate, expected) in cases {
            assert_eq!(eta_ms(remaining, rate), expected, "{remaining} at {rate:?}");
        }
    }

    #[test]
    fn elapsed_stops_when_the_root_ends() {
        assert_eq!(elapsed_ms(1_000, None, 5_000), 4_000);
        assert_eq!(elapsed_ms(1_000, Some(3_000), 5_000), 2_000);
        // Clocks that disagree never make it negative.
        assert_eq!(elapsed_ms(5_000, None, 4_000), 0);
    }
}
