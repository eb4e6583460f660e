//! Read-only views of the fleet for `GET /v1/fleet`: who is running what,
//! the outbox's backlog, the kinds with work about, and the jobs that ended
//! per minute. Every read is bounded: it walks a partial index
//! (`jobs_leases`, `jobs_dispatch`, `jobs_roots`) or the events' age index,
//! never the jobs table.

use sqlx::PgPool;

use super::{Result, trip};

/// Rows one read of an index may take: the views stay cheap whatever the
/// backlog (a bigger backlog is reported as "at least").
pub const FLEET_SCAN_CAP: i64 = 100_000;

/// A worker running phases now, as the leases of its running phases say.
#[derive(Debug, sqlx::FromRow)]
pub struct WorkerView {
    /// `pid-rand@host` (`unknown` for a worker that did not say).
    pub holder: String,
    /// Kinds of the phases it runs.
    pub kinds: Vec<String>,
    /// Phases it runs.
    pub running: i64,
    /// When the oldest of them started, ms since the epoch.
    pub since_ms: Option<i64>,
    /// The latest lease it holds runs until (ms since the epoch).
    pub lease_until_ms: Option<i64>,
}

/// Workers holding a live lease (a running phase), by holder.
pub async fn running_workers(pool: &PgPool) -> Result<Vec<WorkerView>> {
    trip();
    Ok(sqlx::query_as(
        "select coalesce(lease_holder, 'unknown') as holder,
                array_agg(distinct kind order by kind) as kinds,
                count(*) as running,
                (extract(epoch from min(phase_started_at)) * 1000)::int8 as since_ms,
                (extract(epoch from max(lease_until)) * 1000)::int8 as lease_until_ms
         from (select lease_holder, kind, phase_started_at, lease_until
               from jobs
               where phase_status = 'running' and lease_until > now() - interval '1 minute'
               order by lease_until desc
               limit $1) r
         group by 1
         order by 1",
    )
    .bind(FLEET_SCAN_CAP)
    .fetch_all(pool)
    .await?)
}

/// The outbox: dispatches committed and not yet published.
#[derive(Debug, sqlx::FromRow)]
pub struct OutboxView {
    /// Due now.
    pub due: i64,
    /// Waiting for a later time (a retry's backoff).
    pub delayed: i64,
    /// The oldest due row's due time, ms since the epoch.
    pub oldest_due_ms: Option<i64>,
    /// Whether the count stopped at [`FLEET_SCAN_CAP`].
    pub capped: bool,
}

/// The outbox's backlog, counted over `jobs_dispatch` up to the cap.
pub async fn outbox_backlog(pool: &PgPool) -> Result<OutboxView> {
    trip();
    Ok(sqlx::query_as(
        "select count(*) filter (where available_at <= now()) as due,
                count(*) filter (where available_at > now()) as delayed,
                (extract(epoch from min(available_at) filter (where available_at <= now())) * 1000)::int8
                    as oldest_due_ms,
                count(*) > $1 as capped
         from (select available_at from jobs where dispatch_pending
               order by available_at limit $1 + 1) p",
    )
    .bind(FLEET_SCAN_CAP)
    .fetch_one(pool)
    .await?)
}

/// Kinds with work about: those running, waiting in the outbox, and the
/// kinds of the latest 200 roots (at most 50 kinds).
pub async fn active_kinds(pool: &PgPool) -> Result<Vec<String>> {
    trip();
    Ok(sqlx::query_scalar(
        "select kind from (
            select kind from (select kind from jobs where phase_status = 'running'
                              order by lease_until desc limit 10000) r
            union
            select kind from (select kind from jobs where dispatch_pending
                              order by available_at limit 10000) o
            union
            select kind from (select kind from jobs where parent_id is null
                              order by id desc limit 200) n
         ) k
         order by kind
         limit 50",
    )
    .fetch_all(pool)
    .await?)
}

/// Jobs that ended in one minute.
#[derive(Debug, sqlx::FromRow)]
pub struct MinuteView {
    /// The minute's start, ms since the epoch.
    pub minute_ms: i64,
    /// Jobs (of every tree) that ended in it.
    pub ended: i64,
}

/// Jobs ended per minute over the last `minutes` minutes (the current one
/// included, oldest first, zeros included), from the trees' `counts`
/// events: each tree's ended count at the end of each minute, less its
/// count at the end of the minute before (or at the window's start: 0 for
/// a tree created inside the window, else its first count seen).
pub async fn ended_per_minute(pool: &PgPool, minutes: i32) -> Result<Vec<MinuteView>> {
    trip();
    Ok(sqlx::query_as(
        "with w as (
            select date_trunc('minute', now()) - ($1 - 1) * interval '1 minute' as start
         ), c as (
            select e.root_id,
                   date_trunc('minute', e.at) as minute,
                   max((e.payload->>'completed')::int8 + (e.payload->>'failed')::int8
                       + (e.payload->>'cancelled')::int8) as ended,
                   min((e.payload->>'completed')::int8 + (e.payload->>'failed')::int8
                       + (e.payload->>'cancelled')::int8) as first_seen
            from events e, w
            where e.at >= w.start and e.kind = 'counts'
            group by 1, 2
         ), d as (
            select c.minute,
                   c.ended - coalesce(
                       lag(c.ended) over (partition by c.root_id order by c.minute),
                       case when j.created_at >= w.start then 0 else c.first_seen end
                   ) as ended
            from c
            cross join w
            left join jobs j on j.id = c.root_id
         )
         select (extract(epoch from m.minute) * 1000)::int8 as minute_ms,
                coalesce(sum(greatest(d.ended, 0)), 0)::int8 as ended
         from w,
              generate_series(w.start, date_trunc('minute', now()), interval '1 minute') as m(minute)
         left join d on d.minute = m.minute
         group by m.minute
         order by m.minute",
    )
    .bind(minutes)
    .fetch_all(pool)
    .await?)
}

/// The database's clock, ms since the epoch.
pub async fn now_ms(pool: &PgPool) -> Result<i64> {
    trip();
    Ok(
        sqlx::query_scalar("select (extract(epoch from clock_timestamp()) * 1000)::int8")
            .fetch_one(pool)
            .await?,
    )
}
