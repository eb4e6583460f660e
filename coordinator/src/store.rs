//! All SQL lives here. Everything else calls these functions.
//!
//! Bulk statements bind one array per column and `UNNEST` them, so a batch
//! of hundreds of outcomes or thousands of children is one round trip.

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Executor, PgPool, Postgres, Row, Transaction};
use tokio_util::sync::CancellationToken;
use tributary_common::config::mask_url;
use uuid::Uuid;

/// What went wrong talking to Postgres.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A query failed.
    #[error("Postgres: {0}")]
    Db(#[from] sqlx::Error),
    /// Migrations failed.
    #[error("migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The URL could not be parsed.
    #[error("invalid database URL {url}: {reason}")]
    BadUrl {
        /// The URL, password masked.
        url: String,
        /// Why.
        reason: String,
    },
    /// Stopped while waiting for the database.
    #[error("stopped before Postgres could be reached")]
    Cancelled,
}

impl StoreError {
    /// Deadlocks and serialization failures: the transaction may simply be
    /// run again.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Db(sqlx::Error::Database(e)) => {
                matches!(e.code().as_deref(), Some("40P01" | "40001"))
            }
            _ => false,
        }
    }

    /// Whether the data itself was refused, so running the same statement
    /// again can never succeed: a data exception (class 22, e.g. a NUL byte
    /// in text), an integrity violation (23), a program limit (54), or a
    /// value that could not be encoded. Connection trouble, resource
    /// shortages, shutdowns and deadlocks are not: they pass.
    pub fn is_poison(&self) -> bool {
        match self {
            Self::Db(sqlx::Error::Database(e)) => e.code().is_some_and(|code| {
                !matches!(
                    &code[..2.min(code.len())],
                    "08" | "40" | "53" | "57" | "58" | "XX"
                )
            }),
            Self::Db(
                sqlx::Error::Encode(_) | sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_),
            ) => true,
            _ => false,
        }
    }

    /// The SQLSTATE of a database error, for log lines and metrics (never
    /// the server's message, which may quote the refused data).
    pub fn sqlstate(&self) -> Option<String> {
        match self {
            Self::Db(sqlx::Error::Database(e)) => e.code().map(|c| c.into_owned()),
            _ => None,
        }
    }
}

/// A `Result` with [`StoreError`].
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Round trips to Postgres made by this process (statements, begins and
/// commits): the benchmark divides it by the children of a run.
static ROUND_TRIPS: AtomicU64 = AtomicU64::new(0);

fn trip() {
    ROUND_TRIPS.fetch_add(1, Relaxed);
}

/// Round trips to Postgres so far.
pub fn round_trips() -> u64 {
    ROUND_TRIPS.load(Relaxed)
}

/// Begins a transaction.
pub async fn begin(pool: &PgPool) -> Result<Transaction<'static, Postgres>> {
    trip();
    Ok(pool.begin().await?)
}

/// Commits a transaction.
pub async fn commit(tx: Transaction<'_, Postgres>) -> Result<()> {
    trip();
    Ok(tx.commit().await?)
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Connects (creating the database if it does not exist), retrying with
/// backoff and logging each failure in one line until `cancel` fires, then
/// runs the migrations under sqlx's advisory lock, so replicas starting
/// together migrate once.
pub async fn connect(
    url: &str,
    max_connections: u32,
    cancel: &CancellationToken,
) -> Result<PgPool> {
    let options = PgConnectOptions::from_str(url).map_err(|e| StoreError::BadUrl {
        url: mask_url(url),
        reason: e.to_string(),
    })?;
    let mut delay = Duration::from_millis(200);
    let mut tries = 0u32;
    loop {
        match try_connect(&options, max_connections).await {
            Ok(pool) => {
                if tries > 0 {
                    tracing::info!(url = %mask_url(url), "connected to Postgres after {tries} failed tries");
                }
                match MIGRATOR.run(&pool).await {
                    Ok(()) => return Ok(pool),
                    // Lost the database mid-migration: the migrations are
                    // transactional and locked, so running them again is safe.
                    Err(sqlx::migrate::MigrateError::Execute(e))
                        if !matches!(e, sqlx::Error::Database(_)) =>
                    {
                        tries += 1;
                        tracing::warn!(
                            "lost Postgres while migrating ({e}); retry {tries} in {delay:?}"
                        );
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) => {
                tries += 1;
                // Only a refused or lost connection suggests a server that
                // is down; a TLS or login failure says what it is itself.
                let hint = match &e {
                    StoreError::Db(sqlx::Error::Io(_)) => ": is it running?",
                    _ => "",
                };
                tracing::warn!(
                    "cannot reach Postgres at {}: {e}{hint}; retry {tries} in {delay:?}",
                    mask_url(url)
                );
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return Err(StoreError::Cancelled),
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

async fn try_connect(options: &PgConnectOptions, max_connections: u32) -> Result<PgPool> {
    let pool_options = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10));
    match pool_options.clone().connect_with(options.clone()).await {
        Ok(pool) => Ok(pool),
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("3D000") => {
            // The database does not exist yet: create it from the maintenance database.
            let name = options.get_database().unwrap_or("tributary").to_owned();
            let admin = PgPoolOptions::new()
                .max_connections(1)
                .connect_with(options.clone().database("postgres"))
                .await?;
            let sql = format!("create database \"{}\"", name.replace('"', "\"\""));
            match admin.execute(sqlx::AssertSqlSafe(sql)).await {
                Ok(_) => tracing::info!(database = %name, "created database"),
                // Another replica created it first.
                Err(sqlx::Error::Database(e))
                    if matches!(e.code().as_deref(), Some("42P04" | "23505")) => {}
                Err(e) => return Err(e.into()),
            }
            admin.close().await;
            Ok(pool_options.connect_with(options.clone()).await?)
        }
        Err(e) => Err(e.into()),
    }
}

/// Drops the database `url` names (for the benchmark's fresh runs).
pub async fn drop_database(url: &str) -> Result<()> {
    let options = PgConnectOptions::from_str(url).map_err(|e| StoreError::BadUrl {
        url: mask_url(url),
        reason: e.to_string(),
    })?;
    let name = options.get_database().unwrap_or("tributary").to_owned();
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options.database("postgres"))
        .await?;
    let sql = format!(
        "drop database if exists \"{}\" with (force)",
        name.replace('"', "\"\"")
    );
    admin.execute(sqlx::AssertSqlSafe(sql)).await?;
    admin.close().await;
    Ok(())
}

/// A new root job.
pub struct NewRoot<'a> {
    /// Its id (also its root id).
    pub id: Uuid,
    /// Its kind.
    pub kind: &'a str,
    /// Its input, MessagePack.
    pub input: &'a [u8],
    /// Its entry phase.
    pub phase: &'a str,
    /// Executions per phase.
    pub max_attempts: i32,
    /// Tolerated child failures.
    pub max_child_failures: Option<i32>,
    /// `continue`, `stop_all` or `mark_warning`.
    pub failure_action: &'a str,
}

/// Inserts a root job, pending and queued for dispatch, and its tree summary.
pub async fn insert_root(pool: &PgPool, job: &NewRoot<'_>) -> Result<()> {
    let mut tx = begin(pool).await?;
    trip();
    sqlx::query(
        "insert into jobs (id, root_id, kind, input, phase, max_attempts, max_child_failures, failure_action)
         values ($1, $1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(job.id)
    .bind(job.kind)
    .bind(job.input)
    .bind(job.phase)
    .bind(job.max_attempts)
    .bind(job.max_child_failures)
    .bind(job.failure_action)
    .execute(&mut *tx)
    .await?;
    trip();
    sqlx::query("insert into tree_summary (root_id, pending) values ($1, 1)")
        .bind(job.id)
        .execute(&mut *tx)
        .await?;
    commit(tx).await
}

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
}

/// Inserts children in one statement, pending and queued for dispatch.
pub async fn insert_children(tx: &mut Transaction<'_, Postgres>, c: NewChildren) -> Result<()> {
    if c.id.is_empty() {
        return Ok(());
    }
    trip();
    sqlx::query(
        "insert into jobs (id, root_id, parent_id, parent_seq, child_index, kind, input, phase, max_attempts,
                           max_child_failures, failure_action)
         select * from unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::int4[], $5::int8[], $6::text[], $7::bytea[],
                              $8::text[], $9::int4[], $10::int4[], $11::text[])",
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
    /// A new lease for the running phase, from now.
    pub lease_ms: Vec<Option<i64>>,
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
            error = coalesce(d.error, j.error),
            warning = coalesce(d.warning, j.warning),
            dispatch_pending = d.dispatch_pending,
            available_at = case when d.delay_ms is null then j.available_at
                                else now() + d.delay_ms * interval '1 millisecond' end,
            fanout_seq = d.fanout_seq, resume_phase = d.resume_phase, children_expected = d.children_expected,
            children_total = d.children_total, children_completed = d.children_completed,
            children_failed = d.children_failed, children_cancelled = d.children_cancelled,
            progress_done = case when d.set_progress then d.progress_done else j.progress_done end,
            progress_total = case when d.set_progress then d.progress_total else j.progress_total end,
            progress_message = case when d.set_progress then d.progress_message else j.progress_message end,
            finished_at = case when d.finished then clock_timestamp() else j.finished_at end,
            lease_until = case when d.lease_ms is not null then clock_timestamp() + d.lease_ms * interval '1 millisecond'
                               when d.phase_status = 'running' then j.lease_until end,
            updated_at = now()
         from unnest($1::uuid[], $2::text[], $3::text[], $4::int4[], $5::int4[], $6::text[], $7::bool[], $8::bool[],
                     $9::bytea[], $10::bool[], $11::bytea[], $12::text[], $13::text[], $14::bool[], $15::int8[],
                     $16::int4[], $17::text[], $18::int8[], $19::int8[], $20::int8[], $21::int8[], $22::int8[],
                     $23::bool[], $24::int8[], $25::int8[], $26::text[], $27::bool[], $28::int8[])
              as d(id, status, phase, phase_seq, attempt, phase_status, started, set_state, state, set_output,
                   output, error, warning, dispatch_pending, delay_ms, fanout_seq, resume_phase,
                   children_expected, children_total, children_completed, children_failed, children_cancelled,
                   set_progress, progress_done, progress_total, progress_message, finished, lease_ms)
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

/// Per-tree changes in the number of jobs by status, in the order of
/// [`STATUS_COLUMNS`].
pub type TreeDelta = [i64; 7];

/// The status columns of `tree_summary`, in [`TreeDelta`] order.
pub const STATUS_COLUMNS: [&str; 7] = [
    "pending",
    "running",
    "waiting",
    "paused",
    "completed",
    "failed",
    "cancelled",
];

/// Adds per-tree deltas, one statement for all trees in a batch.
pub async fn add_tree_deltas(
    tx: &mut Transaction<'_, Postgres>,
    deltas: &[(Uuid, TreeDelta)],
) -> Result<()> {
    if deltas.is_empty() {
        return Ok(());
    }
    let mut cols: Vec<Vec<i64>> = (0..7).map(|_| Vec::with_capacity(deltas.len())).collect();
    let ids: Vec<Uuid> = deltas.iter().map(|d| d.0).collect();
    for (_, d) in deltas {
        for (i, v) in d.iter().enumerate() {
            cols[i].push(*v);
        }
    }
    trip();
    let mut q = sqlx::query(
        "update tree_summary t set
            pending = t.pending + d.pending, running = t.running + d.running, waiting = t.waiting + d.waiting,
            paused = t.paused + d.paused, completed = t.completed + d.completed, failed = t.failed + d.failed,
            cancelled = t.cancelled + d.cancelled, updated_at = now()
         from unnest($1::uuid[], $2::int8[], $3::int8[], $4::int8[], $5::int8[], $6::int8[], $7::int8[], $8::int8[])
              as d(root_id, pending, running, waiting, paused, completed, failed, cancelled)
         where t.root_id = d.root_id",
    )
    .bind(ids);
    for c in cols {
        q = q.bind(c);
    }
    q.execute(&mut **tx).await?;
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

/// Reads a durable counter (0 when never written).
pub async fn counter(pool: &PgPool, name: &str) -> Result<i64> {
    trip();
    let v: Option<i64> = sqlx::query_scalar("select value from counters where name = $1")
        .bind(name)
        .fetch_optional(pool)
        .await?;
    Ok(v.unwrap_or(0))
}

/// A job the relay must publish.
#[derive(Debug, sqlx::FromRow)]
pub struct DueJob {
    /// The job.
    pub id: Uuid,
    /// Its tree.
    pub root_id: Uuid,
    /// Its parent.
    pub parent_id: Option<Uuid>,
    /// Its kind (the routing key).
    pub kind: String,
    /// The phase to run.
    pub phase: String,
    /// Token: phase number.
    pub phase_seq: i32,
    /// Token: attempt.
    pub attempt: i32,
    /// Input, MessagePack.
    pub input: Vec<u8>,
    /// Checkpoint, MessagePack.
    pub state: Option<Vec<u8>>,
    /// Fan-out phase, for a phase after a fan-in.
    pub fanout_seq: Option<i32>,
    /// Children counted in.
    pub children_total: i64,
    /// Children completed.
    pub children_completed: i64,
    /// Children failed.
    pub children_failed: i64,
    /// Children cancelled.
    pub children_cancelled: i64,
}

/// Claims up to `limit` due jobs for publishing. The row locks (skipping rows
/// another replica holds) last until `tx` ends, so no two relays publish the
/// same row at once.
pub async fn claim_due(tx: &mut Transaction<'_, Postgres>, limit: i64) -> Result<Vec<DueJob>> {
    trip();
    let rows = sqlx::query_as::<_, DueJob>(
        "select id, root_id, parent_id, kind, phase, phase_seq, attempt, input, state, fanout_seq,
                children_total, children_completed, children_failed, children_cancelled
         from jobs
         where dispatch_pending and available_at <= now()
         order by available_at
         limit $1
         for update skip locked",
    )
    .bind(limit)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows)
}

/// Clears the outbox flag of published jobs and records the nonce each
/// was published with (`ids[i]` with `nonces[i]`).
pub async fn mark_dispatched(
    tx: &mut Transaction<'_, Postgres>,
    ids: &[Uuid],
    nonces: &[i64],
) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    trip();
    sqlx::query(
        "update jobs j set
            dispatch_pending = false,
            dispatched_at = clock_timestamp(),
            nonce = d.nonce
         from unnest(
            $1::uuid[],
            $2::int8[]
         ) as d(id, nonce)
         where j.id = d.id",
    )
    .bind(ids)
    .bind(nonces)
    .execute(&mut **tx)
    .await?;
    Ok(())
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

/// One round trip to the database: readiness.
pub async fn ping(pool: &PgPool) -> Result<()> {
    trip();
    sqlx::query("select 1").execute(pool).await?;
    Ok(())
}

/// Counts by status for a tree, in [`STATUS_COLUMNS`] order.
pub async fn tree(pool: &PgPool, root: Uuid) -> Result<Option<TreeDelta>> {
    trip();
    let row = sqlx::query(
        "select pending, running, waiting, paused, completed, failed, cancelled from tree_summary where root_id = $1",
    )
    .bind(root)
    .fetch_optional(pool)
    .await?;
    row.map(|r| {
        let mut out = [0i64; 7];
        for (i, v) in out.iter_mut().enumerate() {
            *v = r.try_get(i)?;
        }
        Ok(out)
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

/// Running phases whose lease ran out: (job, phase number, attempt, nonce).
pub async fn expired_leases(pool: &PgPool, limit: i64) -> Result<Vec<(Uuid, i32, i32, i64)>> {
    trip();
    let rows = sqlx::query_as::<_, (Uuid, i32, i32, i64)>(
        "select id, phase_seq, attempt, nonce from jobs
         where phase_status = 'running' and lease_until < now()
         order by lease_until limit $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows)
}
