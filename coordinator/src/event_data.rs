//! The JSON `data` of each event of `GET /v1/jobs/{id}/events`, one type
//! per event: the applier serializes the payloads it stores with them, the
//! hub ([`crate::events`]) its envelopes, and the OpenAPI document
//! describes them from the same definitions. `counts` and the snapshot's
//! `job` are built in SQL; the end-to-end tests read every event of a run
//! into these types, strictly (no field unknown, none missing), so SQL and
//! types cannot drift apart unseen.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// Jobs of a tree by status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TreeStatusCounts {
    /// Queued, not started.
    pub pending: i64,
    /// A phase is running.
    pub running: i64,
    /// Waiting on children.
    pub waiting: i64,
    /// Held by an operator.
    pub paused: i64,
    /// Ended well.
    pub completed: i64,
    /// Ended in failure.
    pub failed: i64,
    /// Cancelled.
    pub cancelled: i64,
}

/// A phase's latest progress report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProgressChange {
    /// Units done.
    pub done: i64,
    /// Units in all (0: unknown).
    pub total: i64,
    /// What the phase says it is doing.
    pub message: String,
}

/// A job's status or phase moved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusChange {
    /// Its status now.
    pub status: String,
    /// Its current phase.
    pub phase: String,
    /// That phase's number.
    pub phase_seq: i32,
    /// That phase's attempt.
    pub attempt: i32,
    /// That phase's status.
    pub phase_status: String,
    /// Why it failed or was cancelled, if it was (null otherwise).
    #[schema(required = true)]
    pub error: Option<String>,
    /// A fan-in's warning (`mark_warning`), if any.
    #[schema(required = true)]
    pub warning: Option<String>,
}

/// A line a phase logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogLine {
    /// `debug`, `info`, `warn` or `error`.
    pub level: String,
    /// The line (NUL-free, at most 4 KiB).
    pub message: String,
}

/// A job's children counters, as in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BriefChildren {
    /// Children its current fan-out sealed (null before the seal).
    #[schema(required = true)]
    pub expected: Option<i64>,
    /// Children counted so far.
    pub total: i64,
    /// Children that completed.
    pub completed: i64,
    /// Children that failed.
    pub failed: i64,
    /// Children cancelled.
    pub cancelled: i64,
}

/// The watched job in a few fields (never its input or output).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobBrief {
    /// The job.
    pub id: Uuid,
    /// Its kind.
    pub kind: String,
    /// Its status.
    pub status: String,
    /// Its current phase.
    pub phase: String,
    /// That phase's number.
    pub phase_seq: i32,
    /// That phase's attempt.
    pub attempt: i32,
    /// That phase's status.
    pub phase_status: String,
    /// Why it failed or was cancelled (null otherwise).
    #[schema(required = true)]
    pub error: Option<String>,
    /// Its current fan-out.
    pub children: BriefChildren,
    /// Its current phase's progress, if it reported any.
    #[schema(required = true)]
    pub progress: Option<ProgressChange>,
}

/// `data` of a `snapshot` event: where the job and its tree stand, sent
/// first, and again when a position cannot be resumed from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SnapshotData {
    /// The tree's root.
    pub root_id: Uuid,
    /// Null if the job is gone (its tree was deleted by retention).
    #[schema(required = true)]
    pub job: Option<JobBrief>,
    /// The tree's jobs by status.
    pub counts: TreeStatusCounts,
    /// True when the position asked for could not be resumed from (older
    /// than the log keeps, or beyond this tree's latest event).
    pub reset: bool,
}

/// `data` of a `counts` event: the tree's counts as of the event's id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CountsData {
    /// The tree's root.
    pub root_id: Uuid,
    /// The tree's jobs by status.
    pub counts: TreeStatusCounts,
}

/// `data` of a `status`, `progress` or `log` event: which job, when, and
/// what happened (a status change, a progress report or a log line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobEventData<T> {
    /// The tree's root.
    pub root_id: Uuid,
    /// The job it is about.
    pub job_id: Uuid,
    /// When it was written, in ms since the Unix epoch.
    pub at_ms: i64,
    /// What happened.
    pub data: T,
}

/// A payload as stored (these types cannot fail to serialize).
pub fn to_value<T: Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or_default()
}
