//! Subtree control: the `controls` rows the sweeper walks (cancel, pause,
//! resume of a job's descendants), and the one read the walk needs, a level
//! of children.

use sqlx::{PgPool, Postgres, Transaction};
use tributary_common::status::JobStatus;
use uuid::Uuid;

use super::{Result, trip};

/// What a control does to every job of a subtree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// End every open job as `cancelled`; running phases are told to stop.
    Cancel,
    /// Hold dispatch: no new phase starts; running phases finish.
    Pause,
    /// Release what a pause held back.
    Resume,
    /// Run a reopened job's failed and cancelled children again (one
    /// level: a child that itself ended at its fan-in is reopened in turn,
    /// with a walk of its own). The job's fan-in waits until the walk is
    /// done.
    Retry,
}

impl Action {
    /// The text stored in `controls.action` and shown by the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cancel => "cancel",
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::Retry => "retry",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "cancel" => Self::Cancel,
            "pause" => Self::Pause,
            "resume" => Self::Resume,
            "retry" => Self::Retry,
            _ => return None,
        })
    }
}

/// A subtree walk still to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubtreeControl {
    /// The row, deleted when the walk is done.
    pub id: i64,
    /// The job whose descendants the walk reaches.
    pub job_id: Uuid,
    /// What it does to them.
    pub action: Action,
    /// Why, for the error of a job it cancels.
    pub reason: String,
}

/// Records walks of the descendants of jobs (job, action, reason), in the
/// transaction that applied the action to the job itself.
pub async fn insert_controls(
    tx: &mut Transaction<'_, Postgres>,
    walks: &[(Uuid, Action, String)],
) -> Result<()> {
    if walks.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = walks.iter().map(|w| w.0).collect();
    let actions: Vec<&str> = walks.iter().map(|w| w.1.as_str()).collect();
    let reasons: Vec<&str> = walks.iter().map(|w| w.2.as_str()).collect();
    trip();
    sqlx::query(
        "insert into controls (job_id, action, reason)
         select * from unnest(
            $1::uuid[],
            $2::text[],
            $3::text[]
         )",
    )
    .bind(ids)
    .bind(actions)
    .bind(reasons)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The advisory-lock class of subtree walks (the second key is the walk's
/// id): "trib".
const WALK_LOCK_CLASS: i32 = 0x7472_6962;

/// The sweeper's own session: it holds a session-level advisory lock on each
/// walk it is doing, so no other sweeper takes it, and Postgres drops the
/// lock the moment the session ends (a coordinator killed mid-walk frees
/// its walk at once).
pub struct WalkClaims {
    conn: sqlx::PgConnection,
}

impl WalkClaims {
    /// Opens the session, with the pool's connection settings.
    pub async fn open(pool: &PgPool) -> Result<Self> {
        use sqlx::ConnectOptions;
        trip();
        let conn = pool.connect_options().connect().await?;
        Ok(Self { conn })
    }

    /// Claims the oldest walk no live sweeper holds and no older walk of
    /// the same tree comes before: one tree's walks run one at a time, in
    /// the order they were recorded (a pause walked after the resume that
    /// followed it would leave the tree paused), whichever coordinators
    /// run them.
    pub async fn claim(&mut self, pool: &PgPool) -> Result<Option<SubtreeControl>> {
        trip();
        let rows = sqlx::query_as::<_, (i64, Uuid, String, String)>(
            "select c.id, c.job_id, c.action, c.reason
             from controls c
             left join jobs j on j.id = c.job_id
             where not exists (select 1 from controls o
                               join jobs oj on oj.id = o.job_id
                               where oj.root_id = j.root_id and o.id < c.id)
             order by c.id
             limit 64",
        )
        .fetch_all(pool)
        .await?;
        for (id, job_id, action, reason) in rows {
            trip();
            let locked: bool =
                sqlx::query_scalar("select pg_try_advisory_lock($1, ($2 % 2147483647)::int4)")
                    .bind(WALK_LOCK_CLASS)
                    .bind(id)
                    .fetch_one(&mut self.conn)
                    .await?;
            if !locked {
                continue;
            }
            // Its last holder may have finished it between the read and
            // the lock.
            trip();
            let still: bool =
                sqlx::query_scalar("select exists (select 1 from controls where id = $1)")
                    .bind(id)
                    .fetch_one(&mut self.conn)
                    .await?;
            match Action::parse(&action) {
                Some(action) if still => {
                    return Ok(Some(SubtreeControl {
                        id,
                        job_id,
                        action,
                        reason,
                    }));
                }
                _ => self.release(id).await?,
            }
        }
        Ok(None)
    }

    /// Lets go of a walk (done, or to be tried again).
    pub async fn release(&mut self, id: i64) -> Result<()> {
        trip();
        sqlx::query("select pg_advisory_unlock($1, ($2 % 2147483647)::int4)")
            .bind(WALK_LOCK_CLASS)
            .bind(id)
            .execute(&mut self.conn)
            .await?;
        Ok(())
    }
}

/// Deletes a finished walk.
pub async fn finish_control(pool: &PgPool, id: i64) -> Result<()> {
    trip();
    sqlx::query("delete from controls where id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Whether a newer walk of the same job, recorded after `control`, makes
/// it needless: a pause or resume followed by any other action on its job
/// (the newer walk, which comes after it, leaves every descendant where
/// the last action says), or a cancel followed by another cancel (a cancel
/// of an ended job walks for children it did not wait for, each time it is
/// asked). A retry walk is always walked.
pub async fn superseded(pool: &PgPool, control: &SubtreeControl) -> Result<bool> {
    let by: &[&str] = match control.action {
        Action::Pause | Action::Resume => &["cancel", "pause", "resume", "retry"],
        Action::Cancel => &["cancel"],
        Action::Retry => return Ok(false),
    };
    trip();
    Ok(sqlx::query_scalar(
        "select exists (select 1 from controls
                        where job_id = $1 and id > $2 and action = any($3))",
    )
    .bind(control.job_id)
    .bind(control.id)
    .bind(by)
    .fetch_one(pool)
    .await?)
}

/// Deletes a finished walk in the applier's transaction (a retry walk's
/// end releases its job's fan-in in the same commit).
pub async fn delete_control(tx: &mut Transaction<'_, Postgres>, id: i64) -> Result<()> {
    trip();
    sqlx::query("delete from controls where id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Which of `ids` have a retry walk still running: their fan-in waits for
/// it (the children it has not reached yet still count as ended).
pub async fn retrying(tx: &mut Transaction<'_, Postgres>, ids: &[Uuid]) -> Result<Vec<Uuid>> {
    trip();
    Ok(sqlx::query_scalar(
        "select distinct job_id from controls where action = 'retry' and job_id = any($1)",
    )
    .bind(ids)
    .fetch_all(&mut **tx)
    .await?)
}

/// A child met by a walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalkedChild {
    /// The child.
    pub id: Uuid,
    /// Its status now.
    pub status: JobStatus,
    /// Whether it ever fanned out: only those can have children.
    pub fanned_out: bool,
}

/// The children of `parents`, whatever their status (an ended job may
/// still have open descendants from a fan-out it did not wait for).
pub async fn children_of(pool: &PgPool, parents: &[Uuid]) -> Result<Vec<WalkedChild>> {
    if parents.is_empty() {
        return Ok(Vec::new());
    }
    trip();
    let rows = sqlx::query_as::<_, (Uuid, String, bool)>(
        "select id, status, fanout_seq is not null from jobs where parent_id = any($1)",
    )
    .bind(parents)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, status, fanned_out)| {
            Some(WalkedChild {
                id,
                status: JobStatus::parse(&status)?,
                fanned_out,
            })
        })
        .collect())
}

/// A job's status, if the job exists.
pub async fn job_status(pool: &PgPool, id: Uuid) -> Result<Option<JobStatus>> {
    trip();
    let status: Option<String> = sqlx::query_scalar("select status from jobs where id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await?;
    Ok(status.as_deref().and_then(JobStatus::parse))
}

/// The actions still being carried down `id`'s subtree, oldest first.
pub async fn walks_of(pool: &PgPool, id: Uuid) -> Result<Vec<String>> {
    trip();
    Ok(
        sqlx::query_scalar("select action from controls where job_id = $1 order by id")
            .bind(id)
            .fetch_all(pool)
            .await?,
    )
}
