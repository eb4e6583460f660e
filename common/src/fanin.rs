//! Fan-in: when a parent's next phase may run, and what a parent does when
//! too many of its children failed.

use serde::{Deserialize, Serialize};

use crate::job::ChildCounts;

/// What a parent does once more of its children failed than it tolerates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureAction {
    /// Run the next phase anyway; the failures are visible to it.
    #[default]
    Continue,
    /// Fail the parent as soon as the limit is passed; its remaining
    /// children are cancelled.
    StopAll,
    /// Skip the next phase and complete the parent, flagged with a warning.
    MarkWarning,
}

/// What the fan-in rule decides for a parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FanIn {
    /// Keep waiting: the fan-out is not sealed or children are still open.
    Wait,
    /// Every child is terminal: run the next phase.
    Resume,
    /// Too many children failed under `stop_all`: fail now.
    Fail,
    /// Too many children failed under `mark_warning`: complete with a warning
    /// once every child is terminal.
    CompleteWithWarning,
}

/// The fan-in rule. `expected` is the child count the spawning phase sealed
/// (None while it still runs), `counts` what the coordinator has counted.
pub fn decide(
    expected: Option<u64>,
    counts: &ChildCounts,
    max_child_failures: Option<u32>,
    action: FailureAction,
) -> FanIn {
    let over_limit = max_child_failures.is_some_and(|max| counts.failed > u64::from(max));
    if over_limit && action == FailureAction::StopAll {
        return FanIn::Fail;
    }
    let Some(expected) = expected else {
        return FanIn::Wait;
    };
    if counts.total != expected || counts.terminal() != expected {
        return FanIn::Wait;
    }
    if over_limit && action == FailureAction::MarkWarning {
        FanIn::CompleteWithWarning
    } else {
        FanIn::Resume
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(total: u64, completed: u64, failed: u64) -> ChildCounts {
        ChildCounts {
            total,
            completed,
            failed,
            cancelled: 0,
        }
    }

    #[test]
    fn fan_in_rule_table() {
        use FailureAction::*;
        use FanIn::*;
        let cases = [
            // (expected, counts, max failures, action, decision)
            (None, counts(3, 3, 0), None, Continue, Wait),
            (Some(3), counts(3, 2, 0), None, Continue, Wait),
            (Some(3), counts(2, 2, 0), None, Continue, Wait),
            (Some(3), counts(3, 3, 0), None, Continue, Resume),
            (Some(0), counts(0, 0, 0), None, Continue, Resume),
            (Some(3), counts(3, 1, 2), Some(1), Continue, Resume),
            (
                Some(3),
                counts(3, 1, 2),
                Some(1),
                MarkWarning,
                CompleteWithWarning,
            ),
            (Some(3), counts(3, 2, 1), Some(1), MarkWarning, Resume),
            (None, counts(2, 0, 2), Some(1), StopAll, Fail),
            (Some(3), counts(3, 1, 1), Some(1), StopAll, Wait),
        ];
        for (expected, c, max, action, want) in cases {
            assert_eq!(
                decide(expected, &c, max, action),
                want,
                "{expected:?} {c:?} {max:?} {action:?}"
            );
        }
    }
}
