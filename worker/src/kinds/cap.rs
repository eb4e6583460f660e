//! Caps on the numbers a submitter controls.
//!
//! Anyone who can submit a job chooses the built-in kinds' inputs, so every
//! number that sizes an allocation, a loop, a fan-out or a wait is checked
//! against a documented [`Cap`] before it is used. Going over fails the
//! job permanently with a message naming the knob and its cap: another
//! attempt would be refused the same way.

use crate::job::PhaseError;

/// The largest value a knob of a built-in kind accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cap {
    /// The knob, as the submitter writes it (`"bench.fanout n"`).
    knob: &'static str,
    /// The largest accepted value.
    max: u64,
}

impl Cap {
    /// A cap of `max` on `knob`.
    pub const fn new(knob: &'static str, max: u64) -> Self {
        Self { knob, max }
    }

    /// The largest accepted value.
    pub const fn max(&self) -> u64 {
        self.max
    }

    /// `value` if it is within the cap; otherwise a permanent failure
    /// naming the knob and the cap.
    pub fn check(&self, value: u64) -> Result<u64, PhaseError> {
        if value <= self.max {
            Ok(value)
        } else {
            Err(PhaseError::permanent(format!(
                "{} = {value} is over its cap of {}: ask for at most {}",
                self.knob, self.max, self.max
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Cap;

    #[test]
    fn within_passes_and_over_fails_permanently_naming_the_cap() {
        let cap = Cap::new("bench.fanout n", 10);
        assert_eq!(cap.check(10), Ok(10));
        let err = cap.check(11).expect_err("over the cap");
        assert!(!err.is_retryable());
        assert!(err.message().contains("bench.fanout n = 11"), "{err}");
        assert!(err.message().contains("cap of 10"), "{err}");
    }
}
