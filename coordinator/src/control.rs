//! The subtree sweeper: carries an operator's cancel, pause or resume (and
//! `stop_all`'s cancel) from the job it names down to every descendant, and
//! a retry of a job that ended at its fan-in to its failed and cancelled
//! children.
//!
//! ```text
//!  API / applier ──(job moved + controls row, one tx)──► controls
//!  sweeper: claim a row ─► children of the level ─► applier.control (≤ BATCH per tx)
//!           ▲ next level = children that ever fanned out ─┘   delete the row when done
//! ```
//!
//! The walk goes level by level, and reads a level only after the level
//! above it committed: a job moved by the walk spawns its later children
//! already moved (born paused, or refused once cancelled), and every child
//! it spawned before is in the next read. The cost is one indexed read per
//! level and one transaction per batch of open jobs, never a scan per
//! event. A walk is claimed with a session-level advisory lock on the
//! sweeper's own connection: a coordinator that dies mid-walk frees it at
//! once, and another sweeper (or the restarted one) walks again (every step
//! is idempotent). While a cancel or pause of a root is being walked, the
//! relay publishes nothing of that tree.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tributary_common::status::JobStatus;
use uuid::Uuid;

use crate::dispatch::sleep_or_cancel;
use crate::outcome::Applier;
use crate::store::{self, Action, StoreError, SubtreeControl, WalkedChild};

/// Jobs moved per transaction.
const BATCH: usize = 1000;
/// Parents whose children one read fetches.
const LEVEL_READ: usize = 1000;

/// Walks recorded subtree controls.
pub struct Sweeper {
    pool: PgPool,
    applier: Applier,
    wake: Arc<Notify>,
}

impl Sweeper {
    /// A sweeper moving jobs through `applier`; `wake` makes it look at
    /// once.
    pub fn new(pool: PgPool, applier: Applier, wake: Arc<Notify>) -> Self {
        Self {
            pool,
            applier,
            wake,
        }
    }

    /// Walks recorded controls until `cancel` fires.
    pub async fn run(self, cancel: CancellationToken) {
        let mut claims: Option<store::WalkClaims> = None;
        while !cancel.is_cancelled() {
            let session = match claims.as_mut() {
                Some(c) => c,
                None => match store::WalkClaims::open(&self.pool).await {
                    Ok(c) => claims.insert(c),
                    Err(e) => {
                        tracing::warn!("subtree sweeper cannot open its session: {e}");
                        sleep_or_cancel(Duration::from_secs(1), &cancel).await;
                        continue;
                    }
                },
            };
            match session.claim(&self.pool).await {
                Ok(Some(control)) => {
                    let started = Instant::now();
                    let walked = match store::superseded(&self.pool, &control).await {
                        Ok(true) => {
                            tracing::debug!(job = %control.job_id, action = control.action.as_str(), "walk superseded by a newer one");
                            store::finish_control(&self.pool, control.id)
                                .await
                                .map(|()| 0)
                        }
                        Ok(false) => self.walk(&control, &cancel).await,
                        Err(e) => Err(e),
                    };
                    match &walked {
                        Ok(moved) => tracing::info!(
                            job = %control.job_id,
                            action = control.action.as_str(),
                            moved,
                            elapsed = ?started.elapsed(),
                            "subtree walk done"
                        ),
                        Err(e) => {
                            tracing::warn!(job = %control.job_id, "subtree walk failed: {e}; it will run again");
                        }
                    }
                    if let Err(e) = session.release(control.id).await {
                        tracing::warn!("subtree sweeper lost its session: {e}");
                        claims = None;
                    }
                    if walked.is_err() {
                        sleep_or_cancel(Duration::from_secs(1), &cancel).await;
                    }
                }
                Ok(None) => {
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = self.wake.notified() => {}
                        // Another coordinator's walks, and walks whose
                        // sweeper died.
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
                Err(e) => {
                    tracing::warn!("subtree sweeper cannot read its work: {e}");
                    claims = None;
                    sleep_or_cancel(Duration::from_secs(1), &cancel).await;
                }
            }
        }
    }

    /// Moves every open descendant of the control's job, level by level;
    /// returns how many jobs it handed to the applier.
    async fn walk(
        &self,
        control: &SubtreeControl,
        cancel: &CancellationToken,
    ) -> Result<u64, StoreError> {
        let mut level = vec![control.job_id];
        let mut moved = 0u64;
        while !level.is_empty() {
            let mut next = Vec::new();
            for parents in level.chunks(LEVEL_READ) {
                if cancel.is_cancelled() {
                    // Unfinished: the row stays, and the walk runs again.
                    return Ok(moved);
                }
                let children = store::children_of(&self.pool, parents).await?;
                let targets: Vec<Uuid> = children
                    .iter()
                    .filter(|c| applies(control.action, c.status))
                    .map(|c| c.id)
                    .collect();
                for batch in targets.chunks(BATCH) {
                    self.applier
                        .control(batch, control.action, &control.reason)
                        .await?;
                    moved += batch.len() as u64;
                }
                // A retry reaches one level: a child that ended at its own
                // fan-in is reopened with a walk of its own.
                if control.action != Action::Retry {
                    next.extend(
                        children
                            .iter()
                            .filter(|c| c.fanned_out)
                            .map(|c: &WalkedChild| c.id),
                    );
                }
            }
            level = next;
        }
        if control.action == Action::Retry {
            self.applier
                .retry_walked(control.id, control.job_id)
                .await?;
        } else {
            store::finish_control(&self.pool, control.id).await?;
        }
        Ok(moved)
    }
}

/// Whether `action` changes a job in `status` (the rest are skipped
/// without a transaction; the plan checks again under the row lock).
fn applies(action: Action, status: JobStatus) -> bool {
    match action {
        Action::Cancel => !status.is_terminal(),
        Action::Pause => matches!(
            status,
            JobStatus::Pending | JobStatus::Running | JobStatus::Waiting
        ),
        Action::Resume => status == JobStatus::Paused,
        Action::Retry => matches!(status, JobStatus::Failed | JobStatus::Cancelled),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_walk_skips_jobs_its_action_cannot_move() {
        use JobStatus as S;
        for s in JobStatus::ALL {
            assert_eq!(applies(Action::Cancel, s), !s.is_terminal(), "{s:?}");
            assert_eq!(applies(Action::Resume, s), s == S::Paused, "{s:?}");
            assert_eq!(
                applies(Action::Retry, s),
                matches!(s, S::Failed | S::Cancelled),
                "{s:?}"
            );
        }
        assert!(applies(Action::Pause, S::Waiting));
        assert!(!applies(Action::Pause, S::Paused));
        assert!(!applies(Action::Pause, S::Completed));
    }
}
