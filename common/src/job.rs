//! The job model shared by every process: ids, dispatch tokens, child counts
//! and the options a submitter may set.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::fanin::FailureAction;

/// A job id: a UUID v7, so ids sort by creation time.
pub type JobId = Uuid;

/// The phase a job starts in when the submitter names none.
pub const ENTRY_PHASE: &str = "start";

/// Names the one execution of a phase that a task asks for and an outcome
/// answers. The coordinator applies an outcome only while its token is the
/// job's current one, so duplicates and late answers are no-ops; the random
/// `nonce` makes the token unforgeable by anyone who did not receive the task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DispatchToken {
    /// The job the phase belongs to.
    pub job_id: JobId,
    /// Counts the phases this job has entered (1 for the first); a new
    /// phase, including the one after a fan-in, takes the next number.
    pub seq: u32,
    /// Counts the executions of this phase (1 for the first); a retry takes
    /// the next number.
    pub attempt: u32,
    /// Random, drawn by the coordinator for each publish of the task: only
    /// the worker that received the task knows it. Workers echo it.
    pub nonce: u64,
}

impl DispatchToken {
    /// A fresh nonce from the operating system's random source.
    pub fn new_nonce() -> u64 {
        Uuid::new_v4().as_u64_pair().0
    }
}

impl std::fmt::Display for DispatchToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.job_id, self.seq, self.attempt)
    }
}

/// How a parent's children ended, as the phase after a fan-in sees them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildCounts {
    /// Children spawned by the fan-out.
    pub total: u64,
    /// Children that completed.
    pub completed: u64,
    /// Children that failed (after their retries).
    pub failed: u64,
    /// Children that were cancelled.
    pub cancelled: u64,
}

impl ChildCounts {
    /// Children that reached a terminal state.
    pub fn terminal(&self) -> u64 {
        self.completed + self.failed + self.cancelled
    }
}

/// What a submitter (or a spawning phase, per child) may set on a job.
/// Every field is optional; absent ones take the documented defaults. On the
/// wire unknown fields are ignored (a newer worker may send more); the HTTP
/// API refuses them (see [`JobOptions::FIELDS`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobOptions {
    /// Phase to start in; default [`ENTRY_PHASE`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Executions allowed per phase before the job fails; default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Failed children tolerated before `failure_action` applies; default
    /// unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_child_failures: Option<u32>,
    /// What to do once more than `max_child_failures` children failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_action: Option<FailureAction>,
}

impl JobOptions {
    /// The field names this build knows.
    pub const FIELDS: [&'static str; 4] = [
        "phase",
        "max_attempts",
        "max_child_failures",
        "failure_action",
    ];
}

/// Default executions per phase.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
