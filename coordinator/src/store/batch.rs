//! The outcome applier's statements, all on its transaction: lock the jobs
//! a batch names, record spawn batches and insert their children, write
//! back every changed job in one statement, and append history, logs, tree
//! counts and counters.

use std::collections::HashSet;

use sqlx::{Postgres, Row, Transaction};
use uuid::Uuid;

use super::{Result, trip};

/// The fields of a job the outcome applier decides with, read under a row lock.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LockedJob {
    /// The job.
    pub id: Uuid,
    /// Its tree.
    pub root_id: Uuid,
    /// Its parent.
    pub parent_id: Option<Uuid>,
    /// The parent's phase that spawned it.
    pub parent_seq: Option<i32>,
    /// Job status (text).
    pub status: String,
    /// Current phase name.
    pub phase: String,
    /// Current phase number.
    pub phase_seq: i32,
    /// Current attempt.
    pub attempt: i32,
    /// Current phase status (text).
    pub phase_status: String,
    /// Executions per phase.
    pub max_attempts: i32,
    /// Whether the current phase still needs publishing.
    pub dispatch_pending: bool,
    /// The phase that spawned the current fan-out.
    pub fanout_seq: Option<i32>,
    /// Phase to run after the fan-in.
    pub resume_phase: Option<String>,
    /// Children the sealed fan-out spawned (None until sealed).
    pub children_expected: Option<i64>,
    /// Children counted in.
    pub children_total: i64,
    /// Children completed.
    pub children_completed: i64,
    /// Children failed.
    pub children_failed: i64,
    /// Children cancelled.
    pub children_cancelled: i64,
    /// Tolerated child failures.
    pub max_child_failures: Option<i32>,
    /// What to do past them.
    pub failure_action: String,
    /// The nonce of the current phase's latest publish.
    pub nonce: i64,
}

/// The columns of [`LockedJob`], for `concat!` into static queries.
macro_rules! locked_columns {
    () => {
        "id, root_id, parent_id, parent_seq, status, phase, phase_seq, attempt, phase_status, max_attempts,
    dispatch_pending, fanout_seq, resume_phase, children_expected, children_total, children_completed,
    children_failed, children_cancelled, max_child_failures, failure_action, nonce"
    };
}

/// Locks `ids` and their parents, in id order (so concurrent batches cannot
/// deadlock on them), and reads them.
pub async fn lock_jobs_and_parents(
    tx: &mut Transaction<'_, Postgres>,
    ids: &[Uuid],
) -> Result<Vec<LockedJob>> {
    trip();
    let rows = sqlx::query_as::<_, LockedJob>(concat!(
        "select ",
        locked_columns!(),
        " from jobs
             where id = any($1 || array(select distinct parent_id from jobs
                                         where id = any($1) and parent_id is not null))
             order by id
             for update"
    ))
    .bind(ids)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows)
}

/// Locks and reads `ids` (parents reached late, e.g. a grandparent).
pub async fn lock_jobs(tx: &mut Transaction<'_, Postgres>, ids: &[Uuid]) -> Result<Vec<LockedJob>> {
    trip();
    let rows = sqlx::query_as::<_, LockedJob>(concat!(
        "select ",
        locked_columns!(),
        " from jobs where id = any($1) order by id for update"
    ))
    .bind(ids)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows)
}

/// Records spawn batches; returns the ones not seen before.
pub async fn insert_spawn_batches(
    tx: &mut Transaction<'_, Postgres>,
    batches: &[(Uuid, i32, i32, i32)],
) -> Result<HashSet<(Uuid, i32, i32)>> {
    if batches.is_empty() {
        return Ok(HashSet::new());
    }
    let (ids, seqs, nums, sizes) = unzip4(batches);
    trip();
    let rows = sqlx::query(
        "insert into spawn_batches (job_id, seq, batch, children)
         select * from unnest($1::uuid[], $2::int4[], $3::int4[], $4::int4[])
         on conflict do nothing
         returning job_id, seq, batch",
    )
    .bind(ids)
    .bind(seqs)
    .bind(nums)
    .bind(sizes)
    .fetch_all(&mut **tx)
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get::<Uuid, _>(0)?,
                r.try_get::<i32, _>(1)?,
                r.try_get::<i32, _>(2)?,
            ))
        })
        .collect()
}

/// Of the earlier executions `keys` (job, phase number, attempt), the ones
/// recorded in the phase history, with the nonce each ran under.
pub async fn phase_nonces(
    tx: &mut Transaction<'_, Postgres>,
    keys: &[(Uuid, i32, i32)],
) -> Result<HashSet<(Uuid, i32, i32, i64)>> {
    if keys.is_empty() {
        return Ok(HashSet::new());
    }
    let ids: Vec<Uuid> = keys.iter().map(|k| k.0).collect();
    let seqs: Vec<i32> = keys.iter().map(|k| k.1).collect();
    let attempts: Vec<i32> = keys.iter().map(|k| k.2).collect();
    trip();
    let rows = sqlx::query_as::<_, (Uuid, i32, i32, i64)>(
        "select p.job_id, p.seq, p.attempt, p.nonce
         from phases p
         join unnest(
            $1::uuid[],
            $2::int4[],
            $3::int4[]
         ) as k(job_id, seq, attempt)
           on p.job_id = k.job_id and p.seq = k.seq and p.attempt = k.attempt
         where p.nonce is not null",
    )
    .bind(ids)
    .bind(seqs)
    .bind(attempts)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows.into_iter().collect())
}

/// How many jobs each of `roots`' trees holds now.
pub async fn tree_sizes(
    tx: &mut Transaction<'_, Postgres>,
    roots: &[Uuid],
) -> Result<std::collections::HashMap<Uuid, i64>> {
    if roots.is_empty() {
        return Ok(Default::default());
    }
    trip();
    let rows = sqlx::query_as::<_, (Uuid, i64)>(
        "select root_id, (pending + running + waiting + paused + completed + failed + cancelled)::int8
         from tree_summary where root_id = any($1)",
    )
    .bind(roots)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows.into_iter().collect())
}

fn unzip4<A: Clone, B: Clone, C: Clone, D: Clone>(
    v: &[(A, B, C, D)],
) -> (Vec<A>, Vec<B>, Vec<C>, Vec<D>) {
    let mut out = (
        Vec::with_capacity(v.len()),
        Vec::with_capacity(v.len()),
        Vec::with_capacity(v.len()),
        Vec::with_capacity(v.len()),
    );
    for (a, b, c, d) in v {
        out.0.push(a.clone());
        out.1.push(b.clone());
        out.2.push(c.clone());
        out.3.push(d.clone());
    }
    out
}

/// Children to insert, one vector per column.
#[derive(Default)]
pub struct NewChildren {
    /// Ids.
    pub id: Vec<Uuid>,
    /// Root of the tree.
    pub root_id: Vec<Uuid>,
    /// Parent.
    pub parent_id: Vec<Uuid>,
    /// The parent's phase that spawned them.
    pub parent_seq: Vec<i32>,
    /// Spawn index.
    pub child_index: Vec<i64>,
    /// Kind.
    pub kind: Vec<String>,
    /// Input, MessagePack.
    pub input: Vec<Vec<u8>>,
    /// Entry phase.
    pub phase: Vec<String>,
    /// Executions per phase.
    pub max_attempts: Vec<i32>,
    /// Tolerated child failures.
    pub max_child_failures: Vec<Option<i32>>,
    /// What to do past them.
    pub failure_action: Vec<String>,
    /// Born held: an ancestor is paused, so the child waits for resume
    /// (status and phase status `paused`, not queued for dispatch).
    pub paused: Vec<bool>,
}

/// Inserts children in one statement: pending and queued for dispatch, or
/// paused and held.
pub async fn insert_children(tx: &mut Transaction<'_, Postgres>, c: NewChildren) -> Result<()> {
    if c.id.is_empty() {
        return Ok(());
    }
    trip();
    sqlx::query(
        "insert into jobs (id, root_id, parent_id, parent_seq, child_index, kind, input, phase, max_attempts,
                           max_child_failures, failure_action, status, phase_status, dispatch_pending)
         select id, root_id, parent_id, parent_seq, child_index, kind, input, phase, max_attempts,
                max_child_failures, failure_action,
                case when paused then 'paused' else 'pending' end,
                case when paused then 'paused' else 'not_started' end,
                not paused
         from unnest(
            $1::uuid[],
            $2::uuid[],
            $3::uuid[],
            $4::int4[],
            $5::int8[],
            $6::text[],
            $7::bytea[],
            $8::text[],
            $9::int4[],
            $10::int4[],
            $11::text[],
            $12::bool[]
         ) as c(
            id,
            root_id,
            parent_id,
            parent_seq,
            child_index,
            kind,
            input,
            phase,
            max_attempts,
            max_child_failures,
            failure_action,
            paused
         )",
    )
    .bind(c.id)
    .bind(c.root_id)
    .bind(c.parent_id)
    .bind(c.parent_seq)
    .bind(c.child_index)
    .bind(c.kind)
    .bind(c.input)
    .bind(c.phase)
    .bind(c.max_attempts)
    .bind(c.max_child_failures)
    .bind(c.failure_action)
    .bind(c.paused)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// New values for jobs the applier changed, one vector per column. The
/// `set_*` flags say whether a nullable column is written at all.
#[derive(Default)]
pub struct JobWrites {
    /// Ids.
    pub id: Vec<Uuid>,
    /// Job status.
    pub status: Vec<String>,
    /// Phase name.
    pub phase: Vec<String>,
    /// Phase number.
    pub phase_seq: Vec<i32>,
    /// Attempt.
    pub attempt: Vec<i32>,
    /// Phase status.
    pub phase_status: Vec<String>,
    /// Whether the phase started now.
    pub started: Vec<bool>,
    /// Whether `state` is written.
    pub set_state: Vec<bool>,
    /// Checkpoint state.
    pub state: Vec<Option<Vec<u8>>>,
    /// Whether `output` is written.
    pub set_output: Vec<bool>,
    /// Output.
    pub output: Vec<Option<Vec<u8>>>,
    /// Error (kept when null).
    pub error: Vec<Option<String>>,
    /// Warning (kept when null).
    pub warning: Vec<Option<String>>,
    /// Outbox flag.
    pub dispatch_pending: Vec<bool>,
    /// Delay before dispatch, when (re)queued.
    pub delay_ms: Vec<Option<i64>>,
    /// Fan-out phase.
    pub fanout_seq: Vec<Option<i32>>,
    /// Phase after the fan-in.
    pub resume_phase: Vec<Option<String>>,
    /// Sealed child count.
    pub children_expected: Vec<Option<i64>>,
    /// Children counted in.
    pub children_total: Vec<i64>,
    /// Children completed.
    pub children_completed: Vec<i64>,
    /// Children failed.
    pub children_failed: Vec<i64>,
    /// Children cancelled.
    pub children_cancelled: Vec<i64>,
    /// Whether progress is written.
    pub set_progress: Vec<bool>,
    /// Progress: done.
    pub progress_done: Vec<Option<i64>>,
    /// Progress: total.
    pub progress_total: Vec<Option<i64>>,
    /// Progress: message.
    pub progress_message: Vec<Option<String>>,
    /// Whether the job became terminal now.
    pub finished: Vec<bool>,
    /// Whether an ended job runs again: its error, warning and end time go.
    pub rerun: Vec<bool>,
    /// A new lease for the running phase, from now.
    pub lease_ms: Vec<Option<i64>>,
    /// The worker that reported the start (written when `started`).
    pub lease_holder: Vec<Option<String>>,
}

/// Writes changed jobs in one statement.
pub async fn write_jobs(tx: &mut Transaction<'_, Postgres>, w: JobWrites) -> Result<()> {
    if w.id.is_empty() {
        return Ok(());
    }
    trip();
    sqlx::query(
        "update jobs j set
            status = d.status, phase = d.phase, phase_seq = d.phase_seq, attempt = d.attempt,
            phase_status = d.phase_status,
            phase_started_at = case when d.started then now() else j.phase_started_at end,
            state = case when d.set_state then d.state else j.state end,
            output = case when d.set_output then d.output else j.output end,
            error = case when d.rerun then d.error else coalesce(d.error, j.error) end,
            warning = case when d.rerun then d.warning else coalesce(d.warning, j.warning) end,
            dispatch_pending = d.dispatch_pending,
            available_at = case when d.delay_ms is null then j.available_at
                                else now() + d.delay_ms * interval '1 millisecond' end,
            fanout_seq = d.fanout_seq, resume_phase = d.resume_phase, children_expected = d.children_expected,
            children_total = d.children_total, children_completed = d.children_completed,
            children_failed = d.children_failed, children_cancelled = d.children_cancelled,
            progress_done = case when d.set_progress then d.progress_done else j.progress_done end,
            progress_total = case when d.set_progress then d.progress_total else j.progress_total end,
            progress_message = case when d.set_progress then d.progress_message else j.progress_message end,
            finished_at = case when d.finished then clock_timestamp()
                               when d.rerun then null else j.finished_at end,
            lease_until = case when d.lease_ms is not null then clock_timestamp() + d.lease_ms * interval '1 millisecond'
                               when d.phase_status = 'running' then j.lease_until end,
            lease_holder = case when d.started then d.lease_holder else j.lease_holder end,
            updated_at = now()
         from unnest(
            $1::uuid[],
            $2::text[],
            $3::text[],
            $4::int4[],
            $5::int4[],
            $6::text[],
            $7::bool[],
            $8::bool[],
            $9::bytea[],
            $10::bool[],
            $11::bytea[],
            $12::text[],
            $13::text[],
            $14::bool[],
            $15::int8[],
            $16::int4[],
            $17::text[],
            $18::int8[],
            $19::int8[],
            $20::int8[],
            $21::int8[],
            $22::int8[],
            $23::bool[],
            $24::int8[],
            $25::int8[],
            $26::text[],
            $27::bool[],
            $28::int8[],
            $29::bool[],
            $30::text[]
         ) as d(
            id,
            status,
            phase,
            phase_seq,
            attempt,
            phase_status,
            started,
            set_state,
            state,
            set_output,
            output,
            error,
            warning,
            dispatch_pending,
            delay_ms,
            fanout_seq,
            resume_phase,
            children_expected,
            children_total,
            children_completed,
            children_failed,
            children_cancelled,
            set_progress,
            progress_done,
            progress_total,
            progress_message,
            finished,
            lease_ms,
            rerun,
            lease_holder
         )
         where j.id = d.id",
    )
    .bind(w.id)
    .bind(w.status)
    .bind(w.phase)
    .bind(w.phase_seq)
    .bind(w.attempt)
    .bind(w.phase_status)
    .bind(w.started)
    .bind(w.set_state)
    .bind(w.state)
    .bind(w.set_output)
    .bind(w.output)
    .bind(w.error)
    .bind(w.warning)
    .bind(w.dispatch_pending)
    .bind(w.delay_ms)
    .bind(w.fanout_seq)
    .bind(w.resume_phase)
    .bind(w.children_expected)
    .bind(w.children_total)
    .bind(w.children_completed)
    .bind(w.children_failed)
    .bind(w.children_cancelled)
    .bind(w.set_progress)
    .bind(w.progress_done)
    .bind(w.progress_total)
    .bind(w.progress_message)
    .bind(w.finished)
    .bind(w.lease_ms)
    .bind(w.rerun)
    .bind(w.lease_holder)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Finished phase executions, one vector per column.
#[derive(Default)]
pub struct PhaseRows {
    /// Job.
    pub job_id: Vec<Uuid>,
    /// Phase number.
    pub seq: Vec<i32>,
    /// Attempt.
    pub attempt: Vec<i32>,
    /// Name.
    pub name: Vec<String>,
    /// Final phase status.
    pub status: Vec<String>,
    /// Error, if it failed.
    pub error: Vec<Option<String>>,
    /// The nonce the execution ran under.
    pub nonce: Vec<i64>,
}

/// Appends finished phase executions (a replayed one is ignored).
pub async fn insert_phases(tx: &mut Transaction<'_, Postgres>, p: PhaseRows) -> Result<()> {
    if p.job_id.is_empty() {
        return Ok(());
    }
    trip();
    sqlx::query(
        "insert into phases (job_id, seq, attempt, name, status, error, nonce)
         select * from unnest(
            $1::uuid[],
            $2::int4[],
            $3::int4[],
            $4::text[],
            $5::text[],
            $6::text[],
            $7::int8[]
         )
         on conflict do nothing",
    )
    .bind(p.job_id)
    .bind(p.seq)
    .bind(p.attempt)
    .bind(p.name)
    .bind(p.status)
    .bind(p.error)
    .bind(p.nonce)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Appends log lines.
pub async fn insert_logs(
    tx: &mut Transaction<'_, Postgres>,
    logs: &[(Uuid, String, String)],
) -> Result<()> {
    if logs.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = logs.iter().map(|l| l.0).collect();
    let levels: Vec<&str> = logs.iter().map(|l| l.1.as_str()).collect();
    let messages: Vec<&str> = logs.iter().map(|l| l.2.as_str()).collect();
    trip();
    sqlx::query(
        "insert into job_logs (job_id, level, message) select * from unnest($1::uuid[], $2::text[], $3::text[])",
    )
    .bind(ids)
    .bind(levels)
    .bind(messages)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Adds to a durable counter.
pub async fn add_counter(
    tx: &mut Transaction<'_, Postgres>,
    name: &'static str,
    by: i64,
) -> Result<()> {
    if by == 0 {
        return Ok(());
    }
    trip();
    sqlx::query(
        "insert into counters (name, value) values ($1, $2)
         on conflict (name) do update set value = counters.value + excluded.value",
    )
    .bind(name)
    .bind(by)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
