//! The event log: written by the applier with the tree counts, read by the
//! SSE streams ([`crate::events`]) by tree and id, pruned by age.

use std::collections::HashSet;

use serde_json::Value;
use sqlx::{PgPool, Postgres, Transaction};
use tributary_common::status::{JobStatus, TreeCounts};
use uuid::Uuid;

use super::{Result, trip};

/// The channel `NOTIFY` wakes SSE streams on, with a root id as payload.
pub const EVENTS_CHANNEL: &str = "tributary_events";

/// What an event tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A tree's counts by status.
    Counts,
    /// A job's status or phase moved.
    Status,
    /// A phase reported progress.
    Progress,
    /// A log line.
    Log,
}

impl EventKind {
    /// The stored name, also the SSE `event:` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Counts => "counts",
            Self::Status => "status",
            Self::Progress => "progress",
            Self::Log => "log",
        }
    }
}

/// Events to append, one vector per column.
#[derive(Debug, Default)]
pub struct NewEvents {
    root_id: Vec<Uuid>,
    job_id: Vec<Uuid>,
    kind: Vec<&'static str>,
    payload: Vec<Value>,
}

impl NewEvents {
    /// Adds one event about `job` of tree `root`.
    pub fn push(&mut self, root: Uuid, job: Uuid, kind: EventKind, payload: Value) {
        self.root_id.push(root);
        self.job_id.push(job);
        self.kind.push(kind.as_str());
        self.payload.push(payload);
    }

    /// Whether there is nothing to append.
    pub fn is_empty(&self) -> bool {
        self.root_id.is_empty()
    }
}

/// Adds the batch's per-tree deltas (by status, and by phase and status)
/// and appends its events, then asks
/// Postgres to wake every stream watching a tree that changed (delivered
/// at commit). Each tree's summary row is locked (updated) before any of
/// its events takes an id, so one tree's events are numbered in commit
/// order. A tree whose counts changed gets one `counts` event with its
/// counts after the batch.
pub async fn write_tree_and_events(
    tx: &mut Transaction<'_, Postgres>,
    deltas: &[(Uuid, TreeCounts)],
    by_phase: &[(Uuid, String, JobStatus, i64)],
    events: NewEvents,
) -> Result<()> {
    if deltas.is_empty() && events.is_empty() && by_phase.is_empty() {
        return Ok(());
    }
    let mut roots: Vec<Uuid> = deltas.iter().map(|d| d.0).collect();
    let mut seen: HashSet<Uuid> = roots.iter().copied().collect();
    for r in &events.root_id {
        if seen.insert(*r) {
            roots.push(*r);
        }
    }
    // One column per status, bound in the order the statement names them;
    // event-only trees get a zero delta (the update still locks the row).
    let zero = TreeCounts::default();
    let cols = JobStatus::ALL.map(|status| {
        roots
            .iter()
            .map(|r| {
                deltas
                    .iter()
                    .find(|(root, _)| root == r)
                    .map_or(&zero, |(_, d)| d)
                    .get(status)
            })
            .collect::<Vec<i64>>()
    });
    trip();
    let mut q = sqlx::query(
        "with d as (
            select * from unnest(
                $1::uuid[],
                $2::int8[],
                $3::int8[],
                $4::int8[],
                $5::int8[],
                $6::int8[],
                $7::int8[],
                $8::int8[]
            ) as d(
                root_id,
                pending,
                running,
                waiting,
                paused,
                completed,
                failed,
                cancelled
            )
         ), t as (
            update tree_summary t set
                pending = t.pending + d.pending,
                running = t.running + d.running,
                waiting = t.waiting + d.waiting,
                paused = t.paused + d.paused,
                completed = t.completed + d.completed,
                failed = t.failed + d.failed,
                cancelled = t.cancelled + d.cancelled,
                -- The rate window (crate::rate) rotates here too: a batch a
                -- bucket or more after the current bucket began starts a
                -- new one. Every `t.` on the right is the value before.
                rate_prev_at = case when t.rate_at > now() - b.len then t.rate_prev_at
                                    when t.updated_at <= now() - b.len then now() - b.len
                                    else t.rate_at end,
                rate_prev_done = case when t.rate_at > now() - b.len then t.rate_prev_done
                                      when t.updated_at <= now() - b.len then t.completed + t.failed + t.cancelled
                                      else t.rate_done end,
                rate_done = case when t.rate_at > now() - b.len then t.rate_done
                                 else t.completed + t.failed + t.cancelled end,
                rate_at = case when t.rate_at > now() - b.len then t.rate_at else now() end,
                updated_at = now()
            from d, (select $9::int8 * interval '1 millisecond' as len) b
            where t.root_id = d.root_id
            returning t.*, (d.pending, d.running, d.waiting, d.paused, d.completed, d.failed, d.cancelled)
                           <> (0, 0, 0, 0, 0, 0, 0) as changed
         )
         insert into events (root_id, kind, payload)
         select root_id, 'counts', jsonb_build_object(
                'pending', pending, 'running', running, 'waiting', waiting, 'paused', paused,
                'completed', completed, 'failed', failed, 'cancelled', cancelled)
         from t where changed",
    )
    .bind(&roots);
    for c in cols {
        q = q.bind(c);
    }
    q.bind(crate::rate::BUCKET_MS).execute(&mut **tx).await?;
    if !by_phase.is_empty() {
        let roots: Vec<Uuid> = by_phase.iter().map(|p| p.0).collect();
        let phases: Vec<&str> = by_phase.iter().map(|p| p.1.as_str()).collect();
        let statuses: Vec<&str> = by_phase.iter().map(|p| p.2.as_str()).collect();
        let ns: Vec<i64> = by_phase.iter().map(|p| p.3).collect();
        trip();
        sqlx::query(
            "insert into tree_phases (root_id, phase, status, n)
             select * from unnest(
                $1::uuid[],
                $2::text[],
                $3::text[],
                $4::int8[]
             )
             on conflict (root_id, phase, status) do update set n = tree_phases.n + excluded.n",
        )
        .bind(roots)
        .bind(phases)
        .bind(statuses)
        .bind(ns)
        .execute(&mut **tx)
        .await?;
    }
    if !events.is_empty() {
        trip();
        sqlx::query(
            "insert into events (root_id, job_id, kind, payload)
             select * from unnest(
                $1::uuid[],
                $2::uuid[],
                $3::text[],
                $4::jsonb[]
             )",
        )
        .bind(events.root_id)
        .bind(events.job_id)
        .bind(events.kind)
        .bind(events.payload)
        .execute(&mut **tx)
        .await?;
    }
    trip();
    sqlx::query("select pg_notify($1, r::text) from unnest($2::uuid[]) as r")
        .bind(EVENTS_CHANNEL)
        .bind(&roots)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// One stored event.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredEvent {
    /// Its id: the SSE `id`, increasing in commit order within a tree.
    pub id: i64,
    /// The job it is about (none for `counts`).
    pub job_id: Option<Uuid>,
    /// Its kind.
    pub kind: String,
    /// What it says.
    pub payload: Value,
    /// When, in ms since the epoch.
    pub at_ms: i64,
}

/// Up to `limit` events of `root`'s tree after `after`, oldest first.
pub async fn events_after(
    pool: &PgPool,
    root: Uuid,
    after: i64,
    limit: i64,
) -> Result<Vec<StoredEvent>> {
    trip();
    Ok(sqlx::query_as::<_, StoredEvent>(
        "select id, job_id, kind, payload, (extract(epoch from at) * 1000)::int8 as at_ms
         from events where root_id = $1 and id > $2 order by id limit $3",
    )
    .bind(root)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// The id of `root`'s latest event (0 if none).
pub async fn last_event(pool: &PgPool, root: Uuid) -> Result<i64> {
    trip();
    Ok(
        sqlx::query_scalar("select coalesce(max(id), 0)::int8 from events where root_id = $1")
            .bind(root)
            .fetch_one(pool)
            .await?,
    )
}

/// Deletes up to `limit` events older than `retention_secs`; returns the
/// highest id deleted (0 if none), so a stream resuming from an older id
/// knows it missed some.
pub async fn prune_events(pool: &PgPool, retention_secs: i64, limit: i64) -> Result<i64> {
    trip();
    let pruned: Option<i64> = sqlx::query_scalar(
        "with gone as (
            delete from events where id in (
                select id from events where at < now() - $1 * interval '1 second'
                order by at limit $2)
            returning id)
         select max(id) from gone",
    )
    .bind(retention_secs)
    .bind(limit)
    .fetch_one(pool)
    .await?;
    let pruned = pruned.unwrap_or(0);
    if pruned > 0 {
        trip();
        sqlx::query(
            "insert into counters (name, value) values ('events_pruned_through', $1)
             on conflict (name) do update set value = greatest(counters.value, excluded.value)",
        )
        .bind(pruned)
        .execute(pool)
        .await?;
    }
    Ok(pruned)
}

/// A job in a few fields, for a stream's snapshot (never its blobs).
pub async fn job_brief(pool: &PgPool, id: Uuid) -> Result<Option<Value>> {
    trip();
    Ok(sqlx::query_scalar(
        "select jsonb_build_object(
            'id', id, 'kind', kind, 'status', status, 'phase', phase, 'phase_seq', phase_seq,
            'attempt', attempt, 'phase_status', phase_status, 'error', error,
            'children', jsonb_build_object(
                'expected', children_expected, 'total', children_total,
                'completed', children_completed, 'failed', children_failed,
                'cancelled', children_cancelled),
            'progress', case when progress_total is null then null else jsonb_build_object(
                'done', progress_done, 'total', progress_total, 'message', progress_message) end)
         from jobs where id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?)
}
