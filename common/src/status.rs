//! The job and phase state machines. Pure functions: the coordinator's
//! outcome applier computes every move with them and only then persists it,
//! so an illegal move is an error instead of a silent overwrite.

use serde::{Deserialize, Serialize};

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Queued; no phase has started yet.
    Pending,
    /// A phase is queued or executing.
    Running,
    /// The fan-out is sealed and children are still open.
    Waiting,
    /// Dispatch is held by an operator.
    Paused,
    /// Terminal: the job produced its output.
    Completed,
    /// Terminal: a phase failed for good.
    Failed,
    /// Terminal: cancelled before it finished.
    Cancelled,
}

/// Jobs counted by status: a tree's summary, or a batch's change to it.
/// Replaces arrays indexed by hand-copied positions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TreeCounts([i64; 7]);

impl TreeCounts {
    fn slot(status: JobStatus) -> usize {
        match status {
            JobStatus::Pending => 0,
            JobStatus::Running => 1,
            JobStatus::Waiting => 2,
            JobStatus::Paused => 3,
            JobStatus::Completed => 4,
            JobStatus::Failed => 5,
            JobStatus::Cancelled => 6,
        }
    }

    /// The count for `status`.
    pub fn get(&self, status: JobStatus) -> i64 {
        self.0[Self::slot(status)]
    }

    /// Adds `by` (which may be negative) to `status`.
    pub fn add(&mut self, status: JobStatus, by: i64) {
        self.0[Self::slot(status)] += by;
    }

    /// Every status with its count, in [`JobStatus::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (JobStatus, i64)> + '_ {
        JobStatus::ALL.into_iter().map(|s| (s, self.get(s)))
    }

    /// All jobs counted.
    pub fn total(&self) -> i64 {
        self.0.iter().sum()
    }

    /// Completed, failed and cancelled jobs.
    pub fn terminal(&self) -> i64 {
        self.iter()
            .filter(|(s, _)| s.is_terminal())
            .map(|(_, n)| n)
            .sum()
    }

    /// Whether every count is zero (a change that changes nothing).
    pub fn is_zero(&self) -> bool {
        self.0.iter().all(|n| *n == 0)
    }
}

/// What can happen to a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobEvent {
    /// A worker started a phase.
    Start,
    /// A phase ended and asked for another phase.
    Next,
    /// A phase failed and will be retried.
    Retry,
    /// A phase ended by sealing a fan-out.
    Seal,
    /// Every child is terminal; the next phase is queued.
    FanIn,
    /// The last phase completed.
    Complete,
    /// A phase failed for good (or the job could not be dispatched).
    Fail,
    /// An operator cancelled the job (or its tree).
    Cancel,
    /// An operator paused dispatch.
    Pause,
    /// An operator resumed dispatch: the job goes back to the status its
    /// phase implies ([`PhaseStatus::resumed_job_status`]): `pending`,
    /// `running` or `waiting`.
    Resume(JobStatus),
    /// An operator ran an ended (failed or cancelled) job again, with a
    /// fresh attempt budget.
    Rerun,
    /// An operator retried a job that ended while waiting on its fan-out
    /// (`stop_all`, or cancelled): it waits again while its failed and
    /// cancelled children run again.
    Reopen,
}

/// Names a move the state machine does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("illegal transition: {event:?} from {from:?}")]
pub struct IllegalTransition<S: std::fmt::Debug, E: std::fmt::Debug> {
    /// The state the move started from.
    pub from: S,
    /// The event that does not apply there.
    pub event: E,
}

impl JobStatus {
    /// Every status, in the order the tree summary stores them.
    pub const ALL: [JobStatus; 7] = [
        Self::Pending,
        Self::Running,
        Self::Waiting,
        Self::Paused,
        Self::Completed,
        Self::Failed,
        Self::Cancelled,
    ];

    /// Completed, failed and cancelled jobs never move again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }

    /// The text stored in Postgres and shown by the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Waiting => "waiting",
            Self::Paused => "paused",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Parses the stored text.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "running" => Self::Running,
            "waiting" => Self::Waiting,
            "paused" => Self::Paused,
            "completed" => Self::Completed,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            _ => return None,
        })
    }

    /// Applies `event`, or says why it cannot apply.
    pub fn apply(self, event: JobEvent) -> Result<Self, IllegalTransition<Self, JobEvent>> {
        use JobEvent as E;
        use JobStatus as S;
        let next = match (self, event) {
            (S::Pending | S::Running, E::Start) => S::Running,
            (S::Pending | S::Running, E::Next | E::Retry) => S::Running,
            (S::Pending | S::Running, E::Seal) => S::Waiting,
            (S::Waiting, E::FanIn) => S::Running,
            // A paused job's running phase finishes, and its outcome is
            // kept; whatever it queues next is held until resume.
            (S::Paused, E::Next | E::Retry | E::Seal) => S::Paused,
            (S::Pending | S::Running | S::Waiting | S::Paused, E::Complete) => S::Completed,
            (S::Pending | S::Running | S::Waiting | S::Paused, E::Fail) => S::Failed,
            (S::Pending | S::Running | S::Waiting | S::Paused, E::Cancel) => S::Cancelled,
            (S::Pending | S::Running | S::Waiting, E::Pause) => S::Paused,
            (S::Paused, E::Resume(to @ (S::Pending | S::Running | S::Waiting))) => to,
            (S::Failed | S::Cancelled, E::Rerun) => S::Pending,
            (S::Failed | S::Cancelled, E::Reopen) => S::Waiting,
            (from, event) => return Err(IllegalTransition { from, event }),
        };
        Ok(next)
    }
}

/// Where one phase of a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PhaseStatus {
    /// Queued (first execution or a retry), not yet picked up.
    NotStarted,
    /// A worker is executing it.
    Running,
    /// Held by an operator.
    Paused,
    /// Ended successfully (including by sealing a fan-out).
    Completed,
    /// Ended in a failure that will not be retried.
    Failed,
    /// Never ran (its job ended before it).
    Skipped,
}

/// What can happen to a phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhaseEvent {
    /// A worker began executing it.
    Start,
    /// Its execution ended well.
    Complete,
    /// Its execution failed; another attempt is queued.
    Retry,
    /// It failed for good.
    Fail,
    /// Its job ended (cancelled, or a warning skipped it) before it ran.
    Skip,
    /// An operator paused it.
    Pause,
    /// An operator resumed it.
    Resume,
    /// Its job was cancelled while it ran; whatever it reports is fenced.
    Abandon,
}

impl PhaseStatus {
    /// The status a paused job goes back to on resume, given its current
    /// phase: a held phase is queued again (`pending` if it is the job's
    /// very first execution, else `running`), a running one runs on, and a
    /// completed one sealed a fan-out the job waits on.
    pub fn resumed_job_status(self, first_execution: bool) -> JobStatus {
        match self {
            Self::Paused | Self::NotStarted if first_execution => JobStatus::Pending,
            Self::Completed => JobStatus::Waiting,
            _ => JobStatus::Running,
        }
    }

    /// The text stored in Postgres and shown by the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotStarted => "not_started",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
        }
    }

    /// Parses the stored text.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "not_started" => Self::NotStarted,
            "running" => Self::Running,
            "paused" => Self::Paused,
            "completed" => Self::Completed,
            "failed" => Self::Failed,
            "skipped" => Self::Skipped,
            _ => return None,
        })
    }

    /// Applies `event`, or says why it cannot apply.
    pub fn apply(self, event: PhaseEvent) -> Result<Self, IllegalTransition<Self, PhaseEvent>> {
        use PhaseEvent as E;
        use PhaseStatus as S;
        let next = match (self, event) {
            (S::NotStarted, E::Start) => S::Running,
            // An outcome may arrive without its start report (they are
            // coalesced), so a queued phase may end directly.
            (S::NotStarted | S::Running, E::Complete) => S::Completed,
            (S::NotStarted | S::Running, E::Retry) => S::NotStarted,
            (S::NotStarted | S::Running | S::Paused, E::Fail) => S::Failed,
            (S::NotStarted | S::Paused, E::Skip) => S::Skipped,
            // Cancelled while executing: the execution is abandoned.
            (S::Running, E::Abandon) => S::Failed,
            (S::NotStarted, E::Pause) => S::Paused,
            (S::Paused, E::Resume) => S::NotStarted,
            (from, event) => return Err(IllegalTransition { from, event }),
        };
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_counts_are_keyed_by_status() {
        let mut c = TreeCounts::default();
        assert!(c.is_zero());
        for (i, s) in JobStatus::ALL.into_iter().enumerate() {
            c.add(s, i as i64 + 1);
        }
        assert_eq!(c.get(JobStatus::Pending), 1);
        assert_eq!(c.get(JobStatus::Cancelled), 7);
        assert_eq!(c.total(), 28);
        assert_eq!(c.terminal(), 5 + 6 + 7);
        c.add(JobStatus::Running, -2);
        assert_eq!(c.get(JobStatus::Running), 0);
        let names: Vec<&str> = c.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(
            names,
            [
                "pending",
                "running",
                "waiting",
                "paused",
                "completed",
                "failed",
                "cancelled"
            ]
        );
    }

    #[test]
    fn job_transitions_table() {
        use JobEvent as E;
        use JobStatus as S;
        let legal = [
            (S::Pending, E::Start, S::Running),
            (S::Running, E::Next, S::Running),
            (S::Running, E::Retry, S::Running),
            (S::Running, E::Seal, S::Waiting),
            (S::Waiting, E::FanIn, S::Running),
            (S::Running, E::Complete, S::Completed),
            (S::Waiting, E::Complete, S::Completed),
            (S::Pending, E::Fail, S::Failed),
            (S::Waiting, E::Fail, S::Failed),
            (S::Waiting, E::Cancel, S::Cancelled),
            (S::Running, E::Pause, S::Paused),
            (S::Paused, E::Resume(S::Pending), S::Pending),
            (S::Paused, E::Resume(S::Waiting), S::Waiting),
            (S::Paused, E::Next, S::Paused),
            (S::Paused, E::Seal, S::Paused),
            (S::Paused, E::Complete, S::Completed),
            (S::Paused, E::Cancel, S::Cancelled),
            (S::Failed, E::Rerun, S::Pending),
            (S::Cancelled, E::Rerun, S::Pending),
            (S::Failed, E::Reopen, S::Waiting),
            (S::Cancelled, E::Reopen, S::Waiting),
        ];
        for (from, event, to) in legal {
            assert_eq!(from.apply(event), Ok(to), "{from:?} + {event:?}");
        }
        let illegal = [
            (S::Completed, E::Start),
            (S::Completed, E::Complete),
            (S::Failed, E::Retry),
            (S::Cancelled, E::Fail),
            (S::Running, E::FanIn),
            (S::Waiting, E::Start),
            (S::Waiting, E::Seal),
            (S::Paused, E::Start),
            (S::Paused, E::FanIn),
            (S::Paused, E::Pause),
            (S::Running, E::Resume(S::Running)),
            (S::Paused, E::Resume(S::Paused)),
            (S::Paused, E::Resume(S::Completed)),
            (S::Completed, E::Rerun),
            (S::Running, E::Rerun),
            (S::Cancelled, E::Cancel),
            (S::Completed, E::Reopen),
            (S::Waiting, E::Reopen),
        ];
        for (from, event) in illegal {
            assert_eq!(from.apply(event), Err(IllegalTransition { from, event }));
        }
    }

    #[test]
    fn phase_transitions_table() {
        use PhaseEvent as E;
        use PhaseStatus as S;
        let legal = [
            (S::NotStarted, E::Start, S::Running),
            (S::Running, E::Complete, S::Completed),
            (S::NotStarted, E::Complete, S::Completed),
            (S::Running, E::Retry, S::NotStarted),
            (S::Running, E::Fail, S::Failed),
            (S::NotStarted, E::Skip, S::Skipped),
            (S::NotStarted, E::Pause, S::Paused),
            (S::Paused, E::Resume, S::NotStarted),
            (S::Running, E::Abandon, S::Failed),
        ];
        for (from, event, to) in legal {
            assert_eq!(from.apply(event), Ok(to), "{from:?} + {event:?}");
        }
        for (from, event) in [
            (S::Completed, E::Start),
            (S::Completed, E::Complete),
            (S::Failed, E::Retry),
            (S::Running, E::Start),
            (S::Skipped, E::Resume),
            (S::Running, E::Pause),
            (S::NotStarted, E::Abandon),
        ] {
            assert!(from.apply(event).is_err(), "{from:?} + {event:?}");
        }
    }

    #[test]
    fn resume_returns_to_what_the_phase_implies() {
        use JobStatus as J;
        use PhaseStatus as P;
        assert_eq!(P::Paused.resumed_job_status(true), J::Pending);
        assert_eq!(P::Paused.resumed_job_status(false), J::Running);
        assert_eq!(P::Running.resumed_job_status(false), J::Running);
        assert_eq!(P::Completed.resumed_job_status(false), J::Waiting);
        for p in [P::Paused, P::Running, P::Completed] {
            for first in [true, false] {
                let to = p.resumed_job_status(first);
                assert!(J::Paused.apply(JobEvent::Resume(to)).is_ok(), "{p:?}");
            }
        }
    }

    #[test]
    fn stored_names_round_trip() {
        for s in [
            JobStatus::Pending,
            JobStatus::Running,
            JobStatus::Waiting,
            JobStatus::Paused,
            JobStatus::Completed,
            JobStatus::Failed,
            JobStatus::Cancelled,
        ] {
            assert_eq!(JobStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(
            PhaseStatus::parse("not_started"),
            Some(PhaseStatus::NotStarted)
        );
        assert_eq!(JobStatus::parse("bogus"), None);
    }
}
