//! Idempotency keys of `POST /v1/jobs`: a key names one submission for
//! [`KEY_TTL`]. The key's row and the job it names are inserted in one
//! transaction, so concurrent submissions with one key make one job (the
//! second waits on the first's uncommitted key, then sees it).

use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

use super::outbox::insert_root_in;
use super::{NewRoot, Result, begin, commit, trip};

/// How long a key names its submission; an older key is free again, and
/// the retention loop deletes it.
pub const KEY_TTL: Duration = Duration::from_secs(24 * 3600);

/// What a submission with a key did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submitted {
    /// The key was new (or expired): the job was inserted.
    Created,
    /// The key names an earlier submission of the same request: its job.
    Replayed(Uuid),
    /// The key names an earlier submission of another request: its job.
    Conflict(Uuid),
}

/// Inserts `job` under idempotency key `key` unless the key already names
/// a live submission; `request` is the normalised submission, whose
/// sha256 tells a replay from a reuse of the key for another request.
pub async fn insert_root_once(
    pool: &PgPool,
    job: &NewRoot<'_>,
    key: &str,
    request: &[u8],
) -> Result<Submitted> {
    let ttl = KEY_TTL.as_secs_f64();
    // A key seen live, then gone before it could be read (pruned at the
    // instant it expired): claim it again.
    for _ in 0..3 {
        let mut tx = begin(pool).await?;
        trip();
        // A live key is left as it is (the update's condition fails) but
        // locked; an expired one is taken over.
        let claimed: Option<Uuid> = sqlx::query_scalar(
            "insert into idempotency_keys (key, job_id, request_hash)
             values ($1, $2, sha256($3))
             on conflict (key) do update set
                job_id = excluded.job_id,
                request_hash = excluded.request_hash,
                created_at = now()
             where idempotency_keys.created_at < now() - make_interval(secs => $4)
             returning job_id",
        )
        .bind(key)
        .bind(job.id)
        .bind(request)
        .bind(ttl)
        .fetch_optional(&mut *tx)
        .await?;
        if claimed.is_some() {
            insert_root_in(&mut tx, job).await?;
            commit(tx).await?;
            return Ok(Submitted::Created);
        }
        trip();
        let earlier: Option<(Uuid, bool)> = sqlx::query_as(
            "select job_id, request_hash = sha256($2) from idempotency_keys where key = $1",
        )
        .bind(key)
        .bind(request)
        .fetch_optional(&mut *tx)
        .await?;
        commit(tx).await?;
        match earlier {
            Some((id, true)) => return Ok(Submitted::Replayed(id)),
            Some((id, false)) => return Ok(Submitted::Conflict(id)),
            None => continue,
        }
    }
    Err(sqlx::Error::RowNotFound.into())
}

/// Deletes up to `batch` keys older than [`KEY_TTL`], oldest first;
/// returns how many. Replicas pruning together skip each other's rows.
pub async fn prune_idempotency_keys(pool: &PgPool, batch: i64) -> Result<u64> {
    trip();
    let done = sqlx::query(
        "delete from idempotency_keys where key in (
             select key from idempotency_keys
             where created_at < now() - make_interval(secs => $1)
             order by created_at
             limit $2
             for update skip locked)",
    )
    .bind(KEY_TTL.as_secs_f64())
    .bind(batch)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}
