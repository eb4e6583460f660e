//! Read-only queries behind `GET /v1/jobs/{id}/waiting`: the job with its
//! last error, its paused or cancelled ancestors, and a bounded look at the
//! open children of its current fan-out.
//!
//! Every query reads by primary key or through the children index
//! `(parent_id, parent_seq, child_index)`. The look at children reads at
//! most [`OPEN_SAMPLE`] open ones, under a statement timeout of
//! [`CHILDREN_TIMEOUT_MS`]: in a fan-out of a million children of which a
//! few stragglers are open, finding them walks the index past the finished
//! ones, and that must cost the operator a partial answer, never a stuck
//! request.

use sqlx::PgPool;
use uuid::Uuid;

use super::{Result, trip};

/// Most open children counted by status and stage.
pub const OPEN_SAMPLE: i64 = 10_000;

/// Longest the look at a fan-out's children may take, in milliseconds.
pub const CHILDREN_TIMEOUT_MS: i64 = 3_000;

/// Deepest ancestor looked at.
pub const MAX_DEPTH: i32 = 64;

/// Where a job's current phase stands, in words the reason uses: `stage`
/// in the queries below.
macro_rules! stage_sql {
    ($t:literal) => {
        concat!(
            "case when ",
            $t,
            ".status in ('completed', 'failed', 'cancelled') then 'done'
                  when ",
            $t,
            ".status = 'waiting' then 'waiting'
                  when ",
            $t,
            ".status = 'paused' or ",
            $t,
            ".phase_status = 'paused' then 'paused'
                  when ",
            $t,
            ".phase_status = 'running' then 'running'
                  when ",
            $t,
            ".dispatch_pending and ",
            $t,
            ".available_at > now() then 'scheduled'
                  when ",
            $t,
            ".dispatch_pending then 'unpublished'
                  else 'queued' end"
        )
    };
}

/// The latest error in a job's phase history, by primary key.
macro_rules! last_error_sql {
    ($t:literal) => {
        concat!(
            "(select p.error from phases p where p.job_id = ",
            $t,
            ".id and p.error is not null order by p.seq desc, p.attempt desc limit 1)"
        )
    };
}

/// A job as the waiting view explains it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WaitingJob {
    /// The job.
    pub id: Uuid,
    /// Its kind.
    pub kind: String,
    /// Job status.
    pub status: String,
    /// Current phase.
    pub phase: String,
    /// Current phase status.
    pub phase_status: String,
    /// `done`, `waiting`, `paused`, `running`, `scheduled` (due later),
    /// `unpublished` (due, not yet published) or `queued` (published).
    pub stage: String,
    /// Current attempt.
    pub attempt: i32,
    /// Executions per phase.
    pub max_attempts: i32,
    /// When the current phase is (or was) due, ms since the epoch.
    pub available_ms: i64,
    /// When the current phase started, if it did.
    pub started_ms: Option<i64>,
    /// Its lease, while it runs.
    pub lease_until_ms: Option<i64>,
    /// The worker that reported the start (`id@host`).
    pub lease_holder: Option<String>,
    /// The latest error in its phase history.
    pub last_error: Option<String>,
    /// The job's error, once failed.
    pub error: Option<String>,
    /// Its parent.
    pub parent_id: Option<Uuid>,
    /// The phase that spawned the current fan-out.
    pub fanout_seq: Option<i32>,
    /// Children the sealed fan-out spawned.
    pub children_expected: Option<i64>,
    /// Children counted in.
    pub children_total: i64,
    /// Completed.
    pub children_completed: i64,
    /// Failed.
    pub children_failed: i64,
    /// Cancelled.
    pub children_cancelled: i64,
    /// The database's clock, ms since the epoch.
    pub now_ms: i64,
}

/// Reads job `id` for the waiting view.
pub async fn waiting_job(pool: &PgPool, id: Uuid) -> Result<Option<WaitingJob>> {
    trip();
    let row = sqlx::query_as::<_, WaitingJob>(concat!(
        "select j.id, j.kind, j.status, j.phase, j.phase_status, ",
        stage_sql!("j"),
        " as stage, j.attempt, j.max_attempts,
                (extract(epoch from j.available_at) * 1000)::int8 as available_ms,
                (extract(epoch from j.phase_started_at) * 1000)::int8 as started_ms,
                (extract(epoch from j.lease_until) * 1000)::int8 as lease_until_ms,
                j.lease_holder, ",
        last_error_sql!("j"),
        " as last_error, j.error, j.parent_id, j.fanout_seq, j.children_expected, j.children_total,
                j.children_completed, j.children_failed, j.children_cancelled,
                (extract(epoch from clock_timestamp()) * 1000)::int8 as now_ms
         from jobs j where j.id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(row)
}

/// An ancestor that holds a job back.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Ancestor {
    /// The ancestor.
    pub id: Uuid,
    /// Its kind.
    pub kind: String,
    /// `paused` or `cancelled`.
    pub status: String,
    /// 1 for the parent, 2 for the grandparent...
    pub depth: i32,
}

/// The paused or cancelled ancestors of `id`, nearest first, looking at
/// most [`MAX_DEPTH`] levels up (one primary-key read per level).
pub async fn stopped_ancestors(pool: &PgPool, id: Uuid) -> Result<Vec<Ancestor>> {
    trip();
    let rows = sqlx::query_as::<_, Ancestor>(
        "with recursive up(id, depth) as (
             select parent_id, 1 from jobs where id = $1 and parent_id is not null
             union all
             select j.parent_id, up.depth + 1 from up join jobs j on j.id = up.id
             where j.parent_id is not null and up.depth < $2
         )
         select a.id, a.kind, a.status, up.depth
         from up join jobs a on a.id = up.id
         where a.status in ('paused', 'cancelled')
         order by up.depth",
    )
    .bind(id)
    .bind(MAX_DEPTH)
    .fetch_all(pool)
    .await?;
    Ok(rows)
}

/// Open children of one kind at one stage.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ChildGroup {
    /// Their kind.
    pub kind: String,
    /// Their job status.
    pub status: String,
    /// Their stage (see [`WaitingJob::stage`]).
    pub stage: String,
    /// How many.
    pub n: i64,
    /// The earliest due time among them, ms since the epoch.
    pub next_ms: Option<i64>,
    /// The earliest start among them (running ones).
    pub oldest_started_ms: Option<i64>,
    /// The worker running the one that started first.
    pub oldest_holder: Option<String>,
}

/// An open child, with what explains it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OpenChild {
    /// The child.
    pub id: Uuid,
    /// Its spawn index.
    pub child_index: i64,
    /// Kind.
    pub kind: String,
    /// Job status.
    pub status: String,
    /// Current phase.
    pub phase: String,
    /// Phase status.
    pub phase_status: String,
    /// Stage (see [`WaitingJob::stage`]).
    pub stage: String,
    /// Attempt.
    pub attempt: i32,
    /// Executions per phase.
    pub max_attempts: i32,
    /// When its current phase is due, ms since the epoch.
    pub available_ms: i64,
    /// When its current phase started.
    pub started_ms: Option<i64>,
    /// Its lease.
    pub lease_until_ms: Option<i64>,
    /// The worker that reported the start.
    pub lease_holder: Option<String>,
    /// The latest error in its phase history.
    pub last_error: Option<String>,
}

/// What a bounded look at a fan-out's open children found.
#[derive(Debug, Clone)]
pub struct OpenChildren {
    /// Counts by kind, status and stage, over at most [`OPEN_SAMPLE`].
    pub groups: Vec<ChildGroup>,
    /// The first open ones in spawn order.
    pub oldest: Vec<OpenChild>,
}

/// The open children of `parent`'s fan-out `seq`: counts of at most
/// [`OPEN_SAMPLE`] of them and the first `oldest` in spawn order. `None`
/// when the look took over [`CHILDREN_TIMEOUT_MS`].
pub async fn open_children(
    pool: &PgPool,
    parent: Uuid,
    seq: i32,
    oldest: i64,
) -> Result<Option<OpenChildren>> {
    let mut tx = super::begin(pool).await?;
    trip();
    // `set local` takes no bind parameters; set_config does.
    sqlx::query("select set_config('statement_timeout', $1, true)")
        .bind(CHILDREN_TIMEOUT_MS.to_string())
        .execute(&mut *tx)
        .await?;
    trip();
    let groups = sqlx::query_as::<_, ChildGroup>(concat!(
        "select kind, status, stage, count(*)::int8 as n,
                (extract(epoch from min(available_at)) * 1000)::int8 as next_ms,
                (extract(epoch from min(phase_started_at)) * 1000)::int8 as oldest_started_ms,
                (array_agg(lease_holder order by phase_started_at) filter (where phase_started_at is not null))[1]
                    as oldest_holder
         from (
             select c.kind, c.status, c.available_at, c.phase_started_at, c.lease_holder, ",
        stage_sql!("c"),
        " as stage
             from jobs c
             where c.parent_id = $1 and c.parent_seq = $2
               and c.status in ('pending', 'running', 'waiting', 'paused')
             order by c.child_index
             limit $3
         ) open
         group by kind, status, stage
         order by kind, status, stage"
    ))
    .bind(parent)
    .bind(seq)
    .bind(OPEN_SAMPLE)
    .fetch_all(&mut *tx)
    .await;
    let groups = match groups {
        Ok(groups) => groups,
        Err(e) if timed_out(&e) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    trip();
    let first = sqlx::query_as::<_, OpenChild>(concat!(
        "select c.id, c.child_index, c.kind, c.status, c.phase, c.phase_status, ",
        stage_sql!("c"),
        " as stage, c.attempt, c.max_attempts,
                (extract(epoch from c.available_at) * 1000)::int8 as available_ms,
                (extract(epoch from c.phase_started_at) * 1000)::int8 as started_ms,
                (extract(epoch from c.lease_until) * 1000)::int8 as lease_until_ms,
                c.lease_holder, ",
        last_error_sql!("c"),
        " as last_error
         from jobs c
         where c.parent_id = $1 and c.parent_seq = $2
           and c.status in ('pending', 'running', 'waiting', 'paused')
         order by c.child_index
         limit $3"
    ))
    .bind(parent)
    .bind(seq)
    .bind(oldest)
    .fetch_all(&mut *tx)
    .await;
    let first = match first {
        Ok(rows) => rows,
        Err(e) if timed_out(&e) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    super::commit(tx).await?;
    Ok(Some(OpenChildren {
        groups,
        oldest: first,
    }))
}

/// Whether a query was cancelled by the statement timeout (SQLSTATE 57014).
fn timed_out(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("57014"))
}
