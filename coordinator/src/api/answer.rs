//! The JSON bodies the API answers with, as types: the handlers build
//! them, serde writes them, and the OpenAPI document
//! ([`super::openapi`]) describes them from the same definitions, so the
//! two cannot drift apart.
//!
//! A field that may be empty is always sent, as `null` (never left out),
//! so every `Option` field is marked required. Outputs are whatever a job
//! returned: free-form JSON.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use tributary_common::status::JobStatus;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::{RefOr, SchemaFormat};
use utoipa::{PartialSchema, ToSchema};
use uuid::Uuid;

use crate::queues::QueueState;

/// A job's status: `pending`, `running`, `waiting`, `paused`,
/// `completed`, `failed` or `cancelled` (the schema lists
/// [`JobStatus::ALL`]).
pub struct JobStatusName;

impl PartialSchema for JobStatusName {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(JobStatus::ALL.map(JobStatus::as_str)))
            .description(Some("A job's status."))
            .into()
    }
}

impl ToSchema for JobStatusName {}

/// Counts by job status: one entry per status, zeros included.
pub struct StatusCounts;

impl PartialSchema for StatusCounts {
    fn schema() -> RefOr<Schema> {
        let mut counts = ObjectBuilder::new().description(Some(
            "Jobs by status: one entry per status (zeros included).",
        ));
        for status in JobStatus::ALL {
            counts = counts
                .property(
                    status.as_str(),
                    ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .format(Some(SchemaFormat::KnownFormat(
                            utoipa::openapi::KnownFormat::Int64,
                        )))
                        .minimum(Some(0)),
                )
                .required(status.as_str());
        }
        counts
            .additional_properties(Some(
                utoipa::openapi::schema::AdditionalProperties::FreeForm(false),
            ))
            .into()
    }
}

impl ToSchema for StatusCounts {}

/// One Server-Sent Event of `GET /v1/jobs/{id}/events` (OpenAPI 3.1
/// describes a stream by its events): `event` names it, `id` is its
/// position (resume with `Last-Event-ID`), `data` one JSON object, whose
/// schema the event names (components of this document): `snapshot` a
/// `SnapshotData`, `counts` a `CountsData`, `status`, `progress` and `log`
/// a `JobEventData` of a `StatusChange`, a `ProgressChange` or a
/// `LogLine`.
pub struct StreamEvent;

impl PartialSchema for StreamEvent {
    fn schema() -> RefOr<Schema> {
        let string = || ObjectBuilder::new().schema_type(Type::String);
        ObjectBuilder::new()
            .description(Some("One event of the stream."))
            .property(
                "event",
                string().enum_values(Some(["snapshot", "status", "counts", "progress", "log"])),
            )
            .required("event")
            .property("id", string().pattern(Some("^[0-9]+$")))
            .required("id")
            .property(
                "data",
                string()
                    .content_media_type("application/json")
                    .description(Some("The event's JSON object: for `snapshot` a SnapshotData, `counts` a CountsData, `status` a JobEventData_StatusChange, `progress` a JobEventData_ProgressChange, `log` a JobEventData_LogLine (see components.schemas).")),
            )
            .required("data")
            .into()
    }
}

impl ToSchema for StreamEvent {}

/// Every 4xx and 5xx answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong and, where it can, what to do about it.
    pub error: String,
}

/// `POST /v1/jobs`: the job made (or, for a replayed idempotency key, the
/// job the key made).
#[derive(Debug, Serialize, ToSchema)]
pub struct Submitted {
    /// The job's id (also in `Location`).
    pub id: Uuid,
    /// With an `Idempotency-Key` only: whether this answer replays an
    /// earlier submission (absent without a key).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub replayed: Option<bool>,
}

/// `GET /v1/jobs/{id}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Job {
    /// The job.
    pub id: Uuid,
    /// Its tree's root (itself for a root).
    pub root_id: Uuid,
    /// Its parent (null for a root).
    #[schema(required = true)]
    pub parent_id: Option<Uuid>,
    /// Its position in its parent's fan-out (null for a root).
    #[schema(required = true)]
    pub child_index: Option<i64>,
    /// Its kind.
    pub kind: String,
    /// Its status.
    #[schema(value_type = JobStatusName)]
    pub status: String,
    /// Whether the status is final (`completed`, `failed`, `cancelled`).
    pub terminal: bool,
    /// The current (or last) phase.
    pub phase: String,
    /// The current phase's position in the job's history.
    pub phase_seq: i32,
    /// The current phase's attempt.
    pub attempt: i32,
    /// The current phase's status (`not_started`, `running`, `paused`,
    /// `completed`, `failed`, `skipped`).
    pub phase_status: String,
    /// Every phase execution, oldest first, the current one last.
    pub phases: Vec<PhaseRun>,
    /// The current fan-out's children.
    pub children: ChildCounts,
    /// The latest progress the phase reported (null when none).
    #[schema(required = true)]
    pub progress: Option<Progress>,
    /// The job's output: whatever it returned (null until it completes;
    /// an object `{"msgpack_bytes", "note"}` when it is not representable
    /// as JSON).
    pub output: Value,
    /// Why it failed or was cancelled.
    #[schema(required = true)]
    pub error: Option<String>,
    /// Set when it completed with a warning (`mark_warning`).
    #[schema(required = true)]
    pub warning: Option<String>,
    /// Actions (`cancel`, `pause`, `resume`) still being carried down the
    /// job's subtree.
    pub control_pending: Vec<String>,
    /// Created, ms since the epoch.
    pub created_ms: i64,
    /// Last changed, ms since the epoch.
    pub updated_ms: i64,
    /// Ended, ms since the epoch (null while it runs).
    #[schema(required = true)]
    pub finished_ms: Option<i64>,
}

/// One phase execution of a job.
#[derive(Debug, Serialize, ToSchema)]
pub struct PhaseRun {
    /// Its position in the job's history.
    pub seq: i32,
    /// Its attempt.
    pub attempt: i32,
    /// The phase's name.
    pub name: String,
    /// Its status.
    pub status: String,
    /// Why it failed.
    #[schema(required = true)]
    pub error: Option<String>,
    /// When it ended, ms since the epoch (null while it runs).
    #[schema(required = true)]
    pub finished_ms: Option<i64>,
}

/// A parent's counters for its current fan-out.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChildCounts {
    /// How many the spawning phase sealed (null while it still spawns, or
    /// when it spawned none).
    #[schema(required = true)]
    pub expected: Option<i64>,
    /// Spawned so far.
    pub total: i64,
    /// Completed.
    pub completed: i64,
    /// Failed.
    pub failed: i64,
    /// Cancelled.
    pub cancelled: i64,
    /// Not ended yet.
    pub open: i64,
}

/// Progress a phase reported.
#[derive(Debug, Serialize, ToSchema)]
pub struct Progress {
    /// Done so far.
    #[schema(required = true)]
    pub done: Option<i64>,
    /// Out of.
    pub total: i64,
    /// What it says it is doing.
    #[schema(required = true)]
    pub message: Option<String>,
}

/// `GET /v1/jobs/{id}/children`, as JSON.
#[derive(Debug, Serialize, ToSchema)]
pub struct Children {
    /// Children in spawn order (empty past the last).
    pub children: Vec<Child>,
}

/// One child and its result.
#[derive(Debug, Serialize, ToSchema)]
pub struct Child {
    /// The child.
    pub id: Uuid,
    /// Its position in the fan-out.
    pub index: i64,
    /// Its kind.
    pub kind: String,
    /// Its status.
    #[schema(value_type = JobStatusName)]
    pub status: String,
    /// Its output (free-form; null unless it completed).
    pub output: Value,
    /// Why it failed.
    #[schema(required = true)]
    pub error: Option<String>,
}

/// `GET /v1/jobs/{id}/tree`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Tree {
    /// The tree's root.
    pub root_id: Uuid,
    /// Jobs in the tree (spawned so far).
    pub jobs: i64,
    /// Jobs by status.
    #[schema(value_type = StatusCounts)]
    pub counts: BTreeMap<String, i64>,
    /// Jobs by phase, then by phase status (only non-zero counts).
    pub phases: BTreeMap<String, BTreeMap<String, i64>>,
    /// Ended jobs over all jobs, 0 to 1.
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub progress: f64,
    /// Jobs not ended.
    pub remaining: i64,
    /// Since the root was created, until it ended.
    pub elapsed_ms: i64,
    /// Jobs that ended per second over the window (null in the tree's
    /// first second).
    #[schema(required = true)]
    pub rate_per_s: Option<f64>,
    /// The rate's window, in words.
    pub rate_window: String,
    /// Remaining over rate (null while the rate is 0 or unknown; 0 when
    /// none remain).
    #[schema(required = true)]
    pub eta_ms: Option<i64>,
}

/// `GET /v1/jobs/{id}/logs`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Logs {
    /// Log lines, oldest first (empty past the last).
    pub logs: Vec<LogLine>,
}

/// One log line.
#[derive(Debug, Serialize, ToSchema)]
pub struct LogLine {
    /// Its id: page on with `after` = the last one.
    pub id: i64,
    /// `trace`, `debug`, `info`, `warn` or `error`.
    pub level: String,
    /// The text.
    pub message: String,
    /// When, ms since the epoch.
    pub at_ms: i64,
}

/// `GET /v1/jobs/{id}/timing`: the latest fan-out's latencies.
#[derive(Debug, Serialize, ToSchema)]
pub struct Timing {
    /// Children counted (those dispatched once).
    pub children: i64,
    /// Median child latency, dispatched to outcome applied.
    #[schema(required = true)]
    pub child_p50_ms: Option<f64>,
    /// 99th percentile of the same.
    #[schema(required = true)]
    pub child_p99_ms: Option<f64>,
    /// Last child outcome applied to the parent's next phase dispatched.
    #[schema(required = true)]
    pub fanin_latency_ms: Option<f64>,
}

/// `GET /v1/stats`: durable counters.
#[derive(Debug, Serialize, ToSchema)]
pub struct Stats {
    /// Stale, duplicate or forged report items.
    pub fenced_reports: i64,
    /// Report items with a wrong nonce.
    pub forged_reports: i64,
    /// Items a rule refused (their jobs failed).
    pub refused_reports: i64,
    /// Items the database refused (dead-lettered).
    pub poisoned_reports: i64,
}

/// Cancel, pause, resume and retry: what was asked and where the job now
/// stands.
#[derive(Debug, Serialize, ToSchema)]
pub struct Steered {
    /// The job.
    pub id: Uuid,
    /// `cancel`, `pause`, `resume` or `retry`.
    pub action: String,
    /// The job's status after the action.
    #[schema(value_type = JobStatusName)]
    pub status: String,
    /// Whether this request moved the job; `false` when it already stood
    /// where the action leads (a repeated request), and nothing was done.
    pub changed: bool,
}

/// `GET /v1/jobs`: one page.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobList {
    /// The jobs of this page.
    pub jobs: Vec<ListedJob>,
    /// Pass it back as `cursor` for the next page; null on the last one.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// A listed job: never its input or output.
#[derive(Debug, Serialize, ToSchema)]
pub struct ListedJob {
    /// The job.
    pub id: Uuid,
    /// Its tree's root.
    pub root_id: Uuid,
    /// Its parent (null for a root).
    #[schema(required = true)]
    pub parent_id: Option<Uuid>,
    /// Its position in its parent's fan-out.
    #[schema(required = true)]
    pub child_index: Option<i64>,
    /// Its kind.
    pub kind: String,
    /// Its status.
    #[schema(value_type = JobStatusName)]
    pub status: String,
    /// Whether the status is final.
    pub terminal: bool,
    /// The current (or last) phase.
    pub phase: String,
    /// That phase's status.
    pub phase_status: String,
    /// That phase's attempt.
    pub attempt: i32,
    /// Its current fan-out's counters.
    pub children: ListedChildren,
    /// Why it failed, cut to 512 characters.
    #[schema(required = true)]
    pub error: Option<String>,
    /// Whether `error` was cut.
    pub error_truncated: bool,
    /// Created (RFC 3339, UTC).
    #[schema(format = DateTime)]
    pub created_at: String,
    /// Last changed (RFC 3339, UTC).
    #[schema(format = DateTime)]
    pub updated_at: String,
    /// Ended (RFC 3339, UTC; null while it runs).
    #[schema(required = true, format = DateTime)]
    pub finished_at: Option<String>,
    /// Created, ms since the epoch.
    pub created_ms: i64,
}

/// A listed job's fan-out counters.
#[derive(Debug, Serialize, ToSchema)]
pub struct ListedChildren {
    /// How many the spawning phase sealed.
    #[schema(required = true)]
    pub expected: Option<i64>,
    /// Spawned so far.
    pub total: i64,
    /// Completed.
    pub completed: i64,
    /// Failed.
    pub failed: i64,
    /// Cancelled.
    pub cancelled: i64,
}

/// `GET /v1/jobs/{id}/waiting`: why the job is not progressing.
#[derive(Debug, Serialize, ToSchema)]
pub struct Waiting {
    /// The job.
    pub id: Uuid,
    /// Its kind.
    pub kind: String,
    /// Its status.
    #[schema(value_type = JobStatusName)]
    pub status: String,
    /// Its current phase.
    pub phase: String,
    /// That phase's status.
    pub phase_status: String,
    /// Where the current phase stands: `scheduled`, `unpublished`,
    /// `queued`, `running`, `waiting`, `paused` or `done`.
    pub stage: String,
    /// The current phase's attempt.
    pub attempt: i32,
    /// Attempts allowed per phase.
    pub max_attempts: i32,
    /// When the current phase is (or was) due, ms since the epoch.
    pub available_at_ms: i64,
    /// The last failed attempt's error.
    #[schema(required = true)]
    pub last_error: Option<String>,
    /// The job's own error.
    #[schema(required = true)]
    pub error: Option<String>,
    /// The running phase's lease (null unless running).
    #[schema(required = true)]
    pub lease: Option<Lease>,
    /// Why, in one line.
    pub reason: String,
    /// Its current fan-out (null when it has none).
    #[schema(required = true)]
    pub children: Option<WaitingChildren>,
    /// The task queues of the kinds involved.
    pub queues: Vec<Queue>,
    /// Paused or cancelled ancestors, nearest first.
    pub stopped_ancestors: Vec<StoppedAncestor>,
    /// Its parent.
    #[schema(required = true)]
    pub parent_id: Option<Uuid>,
    /// The database's clock when this was read, ms since the epoch.
    pub now_ms: i64,
}

/// A running phase's lease.
#[derive(Debug, Serialize, ToSchema)]
pub struct Lease {
    /// The worker that started it (`pid-rand@host`).
    #[schema(required = true)]
    pub holder: Option<String>,
    /// When it started, ms since the epoch.
    #[schema(required = true)]
    pub started_ms: Option<i64>,
    /// When the lease runs out unless the worker heartbeats.
    #[schema(required = true)]
    pub until_ms: Option<i64>,
}

/// The open children of a job's current fan-out.
#[derive(Debug, Serialize, ToSchema)]
pub struct WaitingChildren {
    /// The fan-out's phase position.
    pub fanout_seq: i32,
    /// How many the spawning phase sealed.
    #[schema(required = true)]
    pub expected: Option<i64>,
    /// Spawned so far.
    pub total: i64,
    /// Completed.
    pub completed: i64,
    /// Failed.
    pub failed: i64,
    /// Cancelled.
    pub cancelled: i64,
    /// Not ended (from the counters).
    pub open: i64,
    /// Open children counted, by status.
    pub open_by_status: BTreeMap<String, i64>,
    /// Open children counted, by stage.
    pub open_by_stage: BTreeMap<String, i64>,
    /// Open children counted (at most 10,000).
    pub counted: i64,
    /// Whether every open child was counted.
    pub counted_all: bool,
    /// The oldest open children, in spawn order.
    pub oldest: Vec<OpenChild>,
}

/// One open child.
#[derive(Debug, Serialize, ToSchema)]
pub struct OpenChild {
    /// The child.
    pub id: Uuid,
    /// Its position in the fan-out.
    pub index: i64,
    /// Its kind.
    pub kind: String,
    /// Its status.
    #[schema(value_type = JobStatusName)]
    pub status: String,
    /// Its current phase.
    pub phase: String,
    /// That phase's status.
    pub phase_status: String,
    /// Its stage.
    pub stage: String,
    /// The current phase's attempt.
    pub attempt: i32,
    /// Attempts allowed per phase.
    pub max_attempts: i32,
    /// When its phase is due, ms since the epoch.
    pub available_at_ms: i64,
    /// The last failed attempt's error.
    #[schema(required = true)]
    pub last_error: Option<String>,
    /// The worker that started the latest execution.
    #[schema(required = true)]
    pub lease_holder: Option<String>,
    /// When that execution started, ms since the epoch.
    #[schema(required = true)]
    pub started_ms: Option<i64>,
    /// When its lease runs out.
    #[schema(required = true)]
    pub lease_until_ms: Option<i64>,
}

/// One task queue, as the broker describes it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Queue {
    /// The kind it serves.
    pub kind: String,
    /// What the broker said.
    #[serde(flatten)]
    pub state: QueueState,
}

/// A paused or cancelled ancestor.
#[derive(Debug, Serialize, ToSchema)]
pub struct StoppedAncestor {
    /// The ancestor.
    pub id: Uuid,
    /// Its kind.
    pub kind: String,
    /// `paused` or `cancelled`.
    #[schema(value_type = JobStatusName)]
    pub status: String,
    /// Levels up (1: the parent).
    pub depth: i32,
}
