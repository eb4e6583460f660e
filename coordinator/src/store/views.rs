//! Read-only queries for the HTTP API: a job, its phase history, a page of
//! its children (within a byte budget), its tree's counts, its log, its
//! latest fan-out's timing, and durable counters.

use sqlx::{PgPool, Row};
use uuid::Uuid;

use tributary_common::status::{JobStatus, TreeCounts};

use super::{Result, trip};
use crate::rate::RateWindow;

/// Reads a durable counter (0 when never written).
pub async fn counter(pool: &PgPool, name: &str) -> Result<i64> {
    trip();
    let v: Option<i64> = sqlx::query_scalar("select value from counters where name = $1")
        .bind(name)
        .fetch_optional(pool)
        .await?;
    Ok(v.unwrap_or(0))
}

/// A job as the status API shows it.
#[derive(Debug, sqlx::FromRow)]
pub struct JobView {
    /// The job.
    pub id: Uuid,
    /// Its tree.
    pub root_id: Uuid,
    /// Its parent.
    pub parent_id: Option<Uuid>,
    /// Its spawn index.
    pub child_index: Option<i64>,
    /// Kind.
    pub kind: String,
    /// Status.
    pub status: String,
    /// Current phase.
    pub phase: String,
    /// Phase number.
    pub phase_seq: i32,
    /// Attempt.
    pub attempt: i32,
    /// Phase status.
    pub phase_status: String,
    /// Output, MessagePack.
    pub output: Option<Vec<u8>>,
    /// Error.
    pub error: Option<String>,
    /// Warning.
    pub warning: Option<String>,
    /// Sealed child count.
    pub children_expected: Option<i64>,
    /// Children counted in.
    pub children_total: i64,
    /// Completed.
    pub children_completed: i64,
    /// Failed.
    pub children_failed: i64,
    /// Cancelled.
    pub children_cancelled: i64,
    /// Progress done.
    pub progress_done: Option<i64>,
    /// Progress total.
    pub progress_total: Option<i64>,
    /// Progress message.
    pub progress_message: Option<String>,
    /// Created, ms since the epoch.
    pub created_ms: i64,
    /// Last change, ms since the epoch.
    pub updated_ms: i64,
    /// Finished, ms since the epoch.
    pub finished_ms: Option<i64>,
}

/// Reads one job for the API.
pub async fn job(pool: &PgPool, id: Uuid) -> Result<Option<JobView>> {
    trip();
    let row = sqlx::query_as::<_, JobView>(
        "select id, root_id, parent_id, child_index, kind, status, phase, phase_seq, attempt, phase_status, output,
                error, warning, children_expected, children_total, children_completed, children_failed,
                children_cancelled, progress_done, progress_total, progress_message,
                (extract(epoch from created_at) * 1000)::int8 as created_ms,
                (extract(epoch from updated_at) * 1000)::int8 as updated_ms,
                (extract(epoch from finished_at) * 1000)::int8 as finished_ms
         from jobs where id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(row)
}

/// A finished phase execution.
#[derive(Debug, sqlx::FromRow)]
pub struct PhaseView {
    /// Phase number.
    pub seq: i32,
    /// Attempt.
    pub attempt: i32,
    /// Name.
    pub name: String,
    /// Status.
    pub status: String,
    /// Error.
    pub error: Option<String>,
    /// Finished, ms since the epoch.
    pub finished_ms: i64,
}

/// The finished phase executions of a job, oldest first.
pub async fn phases(pool: &PgPool, id: Uuid) -> Result<Vec<PhaseView>> {
    trip();
    let rows = sqlx::query_as::<_, PhaseView>(
        "select seq, attempt, name, status, error, (extract(epoch from finished_at) * 1000)::int8 as finished_ms
         from phases where job_id = $1 order by seq, attempt",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    Ok(rows)
}

/// A child as the results API pages it.
#[derive(Debug, sqlx::FromRow)]
pub struct ChildRow {
    /// The child.
    pub id: Uuid,
    /// Spawn index.
    pub child_index: i64,
    /// Kind.
    pub kind: String,
    /// Status.
    pub status: String,
    /// Output, MessagePack.
    pub output: Option<Vec<u8>>,
    /// Error.
    pub error: Option<String>,
}

/// One page of a parent's children in spawn order, after spawn index `after`:
/// at most `limit` children, and no more than `max_bytes` of outputs and
/// errors (counting 64 bytes of overhead per child), except that the first
/// child is always returned so a reader paging "after the last index" always
/// moves on. `seq` selects the fan-out (default: the latest).
///
/// The byte budget is a window running sum in the query, so rows past it
/// never leave Postgres: `octet_length` reads the stored size without
/// detoasting the value.
pub async fn children(
    pool: &PgPool,
    parent: Uuid,
    seq: Option<i32>,
    after: i64,
    limit: i64,
    max_bytes: i64,
) -> Result<Vec<ChildRow>> {
    trip();
    let rows = sqlx::query_as::<_, ChildRow>(
        "select id, child_index, kind, status, output, error
         from (
             select page.*, sum(page.size) over (order by page.child_index) as upto
             from (
                 select id, child_index, kind, status, output, error,
                        64 + coalesce(octet_length(output), 0)::int8
                           + coalesce(octet_length(error), 0)::int8 as size
                 from jobs
                 where parent_id = $1
                   and parent_seq = coalesce($2, (select fanout_seq from jobs where id = $1))
                   and child_index > $3
                 order by child_index
                 limit $4
             ) page
         ) sized
         where upto = size or upto <= $5
         order by child_index",
    )
    .bind(parent)
    .bind(seq)
    .bind(after)
    .bind(limit)
    .bind(max_bytes)
    .fetch_all(pool)
    .await?;
    Ok(rows)
}

/// Whether job `id` exists (the API answers 404 for sub-resources of an
/// unknown job).
pub async fn job_exists(pool: &PgPool, id: Uuid) -> Result<bool> {
    trip();
    let found: bool = sqlx::query_scalar("select exists (select 1 from jobs where id = $1)")
        .bind(id)
        .fetch_one(pool)
        .await?;
    Ok(found)
}

/// The root of `id`'s tree, if the job exists (one indexed read, without
/// the job's input or output).
pub async fn root_of(pool: &PgPool, id: Uuid) -> Result<Option<Uuid>> {
    trip();
    let root = sqlx::query_scalar::<_, Uuid>("select root_id from jobs where id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await?;
    Ok(root)
}

/// A tree's summary: its counts, its rate window and its root's times.
#[derive(Debug, Clone, PartialEq)]
pub struct TreeView {
    /// Counts by status.
    pub counts: TreeCounts,
    /// The rate window, read at the database's `now`.
    pub window: RateWindow,
    /// The root's creation, ms since the epoch.
    pub created_ms: i64,
    /// When the root ended, ms since the epoch.
    pub finished_ms: Option<i64>,
    /// Where the jobs are: (phase, status, count), counts not 0, read in
    /// the same statement as the counts (one snapshot: they agree).
    pub phases: Vec<(String, String, i64)>,
}

/// The summary of the tree of `root`: one read of its `tree_summary` row
/// and its root's row, both by primary key, and of its `tree_phases` rows,
/// whatever the tree's size.
pub async fn tree(pool: &PgPool, root: Uuid) -> Result<Option<TreeView>> {
    trip();
    let row = sqlx::query(
        "select t.pending, t.running, t.waiting, t.paused, t.completed, t.failed, t.cancelled,
                (extract(epoch from t.updated_at) * 1000)::int8 as updated_ms,
                (extract(epoch from t.rate_at) * 1000)::int8 as rate_at_ms,
                t.rate_done,
                (extract(epoch from t.rate_prev_at) * 1000)::int8 as rate_prev_ms,
                t.rate_prev_done,
                (extract(epoch from r.created_at) * 1000)::int8 as created_ms,
                (extract(epoch from r.finished_at) * 1000)::int8 as finished_ms,
                (extract(epoch from clock_timestamp()) * 1000)::int8 as now_ms,
                (select coalesce(jsonb_agg(jsonb_build_array(p.phase, p.status, p.n)
                                           order by p.phase, p.status), '[]')
                 from tree_phases p where p.root_id = t.root_id and p.n <> 0) as phases
         from tree_summary t join jobs r on r.id = t.root_id
         where t.root_id = $1",
    )
    .bind(root)
    .fetch_optional(pool)
    .await?;
    row.map(|r| {
        let mut counts = TreeCounts::default();
        for status in JobStatus::ALL {
            counts.add(status, r.try_get::<i64, _>(status.as_str())?);
        }
        let window = RateWindow {
            now_ms: r.try_get("now_ms")?,
            updated_ms: r.try_get("updated_ms")?,
            at_ms: r.try_get("rate_at_ms")?,
            done_at: r.try_get("rate_done")?,
            prev_ms: r.try_get("rate_prev_ms")?,
            done_prev: r.try_get("rate_prev_done")?,
            done: counts.terminal(),
        };
        let phases: sqlx::types::Json<Vec<(String, String, i64)>> = r.try_get("phases")?;
        Ok(TreeView {
            counts,
            window,
            created_ms: r.try_get("created_ms")?,
            finished_ms: r.try_get("finished_ms")?,
            phases: phases.0,
        })
    })
    .transpose()
}

/// A job log line.
#[derive(Debug, sqlx::FromRow)]
pub struct LogRow {
    /// Its position.
    pub id: i64,
    /// Level.
    pub level: String,
    /// Text.
    pub message: String,
    /// When, ms since the epoch.
    pub at_ms: i64,
}

/// One page of a job's log after line `after`.
pub async fn logs(pool: &PgPool, job: Uuid, after: i64, limit: i64) -> Result<Vec<LogRow>> {
    trip();
    let rows = sqlx::query_as::<_, LogRow>(
        "select id, level, message, (extract(epoch from at) * 1000)::int8 as at_ms
         from job_logs where job_id = $1 and id > $2 order by id limit $3",
    )
    .bind(job)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows)
}

/// Latencies of a parent's latest fan-out, in milliseconds.
#[derive(Debug, sqlx::FromRow)]
pub struct FanOutTiming {
    /// Children counted.
    pub children: i64,
    /// Median child latency, dispatched -> outcome applied.
    pub child_p50_ms: Option<f64>,
    /// 99th percentile of the same.
    pub child_p99_ms: Option<f64>,
    /// Last child outcome applied -> the parent's next phase dispatched.
    pub fanin_latency_ms: Option<f64>,
}

/// Timing of `parent`'s latest fan-out (children that were dispatched once).
pub async fn fanout_timing(pool: &PgPool, parent: Uuid) -> Result<FanOutTiming> {
    trip();
    let row = sqlx::query_as::<_, FanOutTiming>(
        "select count(*) as children,
                percentile_cont(0.5) within group (order by extract(epoch from c.finished_at - c.dispatched_at) * 1000)
                    as child_p50_ms,
                percentile_cont(0.99) within group (order by extract(epoch from c.finished_at - c.dispatched_at) * 1000)
                    as child_p99_ms,
                (extract(epoch from max(p.dispatched_at) - max(c.finished_at)) * 1000)::float8 as fanin_latency_ms
         from jobs p join jobs c on c.parent_id = p.id and c.parent_seq = p.fanout_seq
         where p.id = $1",
    )
    .bind(parent)
    .fetch_one(pool)
    .await?;
    Ok(row)
}
