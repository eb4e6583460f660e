//! The dispatch queue: the jobs table is the outbox. A submitted root is
//! inserted pending and due; the relay claims due rows (`FOR UPDATE SKIP
//! LOCKED`) and marks them published with their nonce in the same
//! transaction; the lease reaper finds running phases whose lease ran out.

use sqlx::{PgPool, Postgres, Transaction};
use tributary_common::job::DispatchToken;
use uuid::Uuid;

use super::{Result, begin, commit, trip};

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
    insert_root_in(&mut tx, job).await?;
    commit(tx).await
}

/// [`insert_root`] inside the caller's transaction (an idempotent
/// submission records its key in the same one).
pub(super) async fn insert_root_in(
    tx: &mut Transaction<'_, Postgres>,
    job: &NewRoot<'_>,
) -> Result<()> {
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
    .execute(&mut **tx)
    .await?;
    trip();
    sqlx::query("insert into tree_summary (root_id, pending) values ($1, 1)")
        .bind(job.id)
        .execute(&mut **tx)
        .await?;
    trip();
    sqlx::query(
        "insert into tree_phases (root_id, phase, status, n) values ($1, $2, 'pending', 1)",
    )
    .bind(job.id)
    .bind(job.phase)
    .execute(&mut **tx)
    .await?;
    Ok(())
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
           -- A tree whose root is being cancelled or paused publishes
           -- nothing while the walk goes on: the walk moves these rows.
           and not exists (select 1 from controls c
                           where c.job_id = jobs.root_id and c.action in ('cancel', 'pause'))
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

/// The tokens of running phases whose lease ran out, oldest lease first.
pub async fn expired_leases(pool: &PgPool, limit: i64) -> Result<Vec<DispatchToken>> {
    trip();
    let rows = sqlx::query_as::<_, (Uuid, i32, i32, i64)>(
        "select id, phase_seq, attempt, nonce from jobs
         where phase_status = 'running' and lease_until < now()
         order by lease_until limit $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(job_id, seq, attempt, nonce)| DispatchToken {
            job_id,
            seq: seq as u32,
            attempt: attempt as u32,
            nonce: nonce as u64,
        })
        .collect())
}
