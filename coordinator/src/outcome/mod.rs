//! The outcome applier: the only code that moves jobs between statuses.
//!
//! ```text
//!  reports queue ──► collect a batch (≤ max_batch deliveries, ≤ linger)
//!                      │ one transaction:
//!                      │  lock jobs + their parents (id order)
//!                      │  record new spawn batches, insert their children
//!                      │  apply every item in memory (state machines, tokens)
//!                      │  fan-in: sealed parents whose children are all terminal
//!                      │  write changed jobs, phase history, logs, tree counts
//!                      ▼ commit, then ack the deliveries
//! ```
//!
//! Tokens fence duplicates: an item whose (job, phase, attempt, nonce) is
//! not the job's current one changes nothing and is counted. Acks follow the
//! commit, so a crash in between redelivers the batch, and the replay is
//! fenced.
//!
//! Reports are hostile until checked ([`guard`]): an item that breaks a rule
//! fails its job with the reason. If the database still refuses a batch for
//! its data, [`isolate`] splits it until the offending items stand alone;
//! they are dead-lettered and their jobs failed, and everything else applies.
//!
//! # Layout
//! - `mod.rs`: the [`Applier`]: one batch's transaction (`apply`) and poison
//!   isolation (`apply_isolating`).
//! - `consume.rs`: the consume loop: gather a batch, apply, ack after commit.
//! - `plan.rs` (and `plan/`): the in-memory plan of a batch, pure: tokens,
//!   state machines, spawn acceptance, fan-in; unit-tested table by table.
//! - [`guard`]: refusals and text cleaning, pure.
//! - [`isolate`]: splitting a refused batch down to its poisoned items.

mod consume;
pub mod guard;
pub mod isolate;
mod plan;

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::{Notify, mpsc};
use tributary_common::job::DispatchToken;
use tributary_common::limits::Limits;
use tributary_common::retry::Backoff;
use tributary_common::wire::{MAX_STOPS_PER_MESSAGE, Outcome, ReportItem};
use uuid::Uuid;

use crate::metrics::Metrics;
use crate::store::{self, Action, StoreError};
use plan::{Plan, Refusal, Writes};

/// Settings of the applier.
#[derive(Debug, Clone)]
pub struct ApplierConfig {
    /// Most deliveries applied in one transaction (default 500).
    pub max_batch: usize,
    /// Most report items applied in one transaction (default 2000).
    pub max_items: usize,
    /// How long to wait for more deliveries once one arrived (default 2 ms).
    pub linger: Duration,
    /// Backoff for retried phases.
    pub backoff: Backoff,
    /// Caps on what reports may create.
    pub limits: Limits,
}

impl Default for ApplierConfig {
    fn default() -> Self {
        Self {
            max_batch: 500,
            max_items: 2000,
            linger: Duration::from_millis(2),
            backoff: Backoff::default(),
            limits: Limits::default(),
        }
    }
}

/// What one batch changed, for metrics and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Items that took effect.
    pub applied: u64,
    /// Items fenced off: stale or duplicate tokens, replayed batches.
    pub fenced: u64,
    /// Phases queued for dispatch (new phases, retries, fan-ins).
    pub queued: u64,
    /// Fan-ins that fired.
    pub fan_ins: u64,
    /// Children created.
    pub children: u64,
    /// Items fenced because their nonce was wrong for a current (job,
    /// phase, attempt): forged, or from a publish that never committed.
    pub forged: u64,
    /// Items refused by a rule ([`guard`]); their jobs failed.
    pub refused: u64,
}

/// Applies report items (and operators' actions) to Postgres.
#[derive(Clone)]
pub struct Applier {
    pool: PgPool,
    config: ApplierConfig,
    metrics: Arc<Metrics>,
    relay_wake: Arc<Notify>,
    /// Where stop orders go after the commit (the relay publishes them).
    stops: Option<mpsc::UnboundedSender<Vec<DispatchToken>>>,
    /// Wakes the subtree sweeper when a batch records a walk.
    sweep_wake: Arc<Notify>,
}

/// What one transaction decided beyond its counts.
#[derive(Debug, Default)]
struct Done {
    applied: Applied,
    stops: Vec<DispatchToken>,
    walks: bool,
    refusal: Option<String>,
}

impl Applier {
    /// An applier writing to `pool` and waking the relay when it queues work.
    pub fn new(
        pool: PgPool,
        config: ApplierConfig,
        metrics: Arc<Metrics>,
        relay_wake: Arc<Notify>,
    ) -> Self {
        Self {
            pool,
            config,
            metrics,
            relay_wake,
            stops: None,
            sweep_wake: Arc::new(Notify::new()),
        }
    }

    /// Sends stop orders to `stops` after each commit, and wakes
    /// `sweep_wake` when a batch records a subtree walk.
    pub fn with_control(
        mut self,
        stops: mpsc::UnboundedSender<Vec<DispatchToken>>,
        sweep_wake: Arc<Notify>,
    ) -> Self {
        self.stops = Some(stops);
        self.sweep_wake = sweep_wake;
        self
    }

    /// A walk's step: applies `action` to `ids` (one transaction, again on
    /// a deadlock).
    pub async fn control(
        &self,
        ids: &[Uuid],
        action: Action,
        reason: &str,
    ) -> Result<Applied, StoreError> {
        self.run_work(Work::Control {
            ids,
            action,
            reason,
            walk: false,
        })
        .await
        .map(|d| d.applied)
    }

    /// An operator's `action` on the job `id` and, through the sweeper, its
    /// subtree. `Ok(Err(reason))` when it may not be done (a resume under a
    /// paused parent).
    pub async fn steer(
        &self,
        id: Uuid,
        action: Action,
        reason: &str,
    ) -> Result<Result<(), String>, StoreError> {
        let done = self
            .run_work(Work::Control {
                ids: &[id],
                action,
                reason,
                walk: true,
            })
            .await?;
        Ok(done.refusal.map_or(Ok(()), Err))
    }

    /// Runs the failed or cancelled job `id` again from `phase` (default:
    /// the phase it ended in). `Ok(Err(reason))` when the job may not be
    /// retried.
    pub async fn rerun(
        &self,
        id: Uuid,
        phase: Option<&str>,
    ) -> Result<Result<(), String>, StoreError> {
        let done = self.run_work(Work::Rerun { id, phase }).await?;
        Ok(done.refusal.map_or(Ok(()), Err))
    }

    /// Ends the retry walk `control` of `id`'s children: in one
    /// transaction its row goes and the job's fan-in is settled.
    pub async fn retry_walked(&self, control: i64, id: Uuid) -> Result<(), StoreError> {
        self.run_work(Work::RetryWalked { control, id })
            .await
            .map(drop)
    }

    /// Applies `items` in one transaction, running it again on a deadlock.
    pub async fn apply(&self, items: &[ReportItem]) -> Result<Applied, StoreError> {
        self.run_work(Work::Reports(items)).await.map(|d| d.applied)
    }

    /// Runs `work` in one transaction, again on a deadlock; after the
    /// commit, wakes the relay and the sweeper and sends stop orders.
    async fn run_work(&self, work: Work<'_>) -> Result<Done, StoreError> {
        let mut tries = 0;
        loop {
            match self.try_apply(work).await {
                Err(e) if e.is_retryable() && tries < 5 => {
                    tries += 1;
                    tracing::debug!("batch hit {e}; running it again");
                }
                Ok(mut done) => {
                    self.metrics.record_applied(&done.applied);
                    if done.applied.queued > 0 {
                        self.relay_wake.notify_one();
                    }
                    if done.walks {
                        self.sweep_wake.notify_one();
                    }
                    self.send_stops(std::mem::take(&mut done.stops));
                    return Ok(done);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Hands stop orders (deduplicated by the plan) to the relay, in messages of at
    /// most [`MAX_STOPS_PER_MESSAGE`] tokens. Losing them (no relay, or
    /// the broker down) costs only time: a stopped execution's next
    /// heartbeat is fenced and asks again.
    fn send_stops(&self, stops: Vec<DispatchToken>) {
        let Some(tx) = &self.stops else {
            return;
        };
        for chunk in stops.chunks(MAX_STOPS_PER_MESSAGE) {
            let _ = tx.send(chunk.to_vec());
        }
    }

    /// One transaction: lock, plan, write. The steps are the plan's
    /// (`plan.rs`); this function only reads what it needs and writes what
    /// it says.
    async fn try_apply(&self, work: Work<'_>) -> Result<Done, StoreError> {
        let mut tx = store::begin(&self.pool).await?;
        // Lock the jobs the work names and their parents.
        let ids = match work {
            Work::Reports(items) => plan::job_ids(items),
            Work::PoisonedSpawn(token, _) => vec![token.job_id],
            Work::Control { ids, .. } => {
                let mut ids = ids.to_vec();
                ids.sort_unstable();
                ids.dedup();
                ids
            }
            Work::Rerun { id, .. } => vec![id],
            Work::RetryWalked { id, .. } => vec![id],
        };
        let rows = store::lock_jobs_and_parents(&mut tx, &ids).await?;
        let mut plan = Plan::new(rows, self.config.backoff);
        let mut refusal = None;
        match work {
            Work::Reports(items) => self.plan_reports(&mut tx, items, &mut plan).await?,
            Work::PoisonedSpawn(token, error) => plan.fail_spawner(token, error),
            Work::Control {
                action,
                reason,
                walk,
                ..
            } => {
                for &id in &ids {
                    if walk && let Some(why) = plan.steer_refusal(id, action) {
                        refusal = Some(why);
                        continue;
                    }
                    let needs_walk = plan.needs_walk(id, action);
                    plan.control(id, action, reason);
                    if walk && needs_walk {
                        plan.walk(id, action, reason);
                    }
                }
            }
            Work::Rerun { id, phase } => refusal = plan.rerun(id, phase).err(),
            Work::RetryWalked { control, id } => {
                store::delete_control(&mut tx, control).await?;
                plan.recheck_fan_in(id);
            }
        }
        // Then the fan-ins it touched. A fan-in about to fire waits while
        // a retry walk of its children runs. A parent that ended by its
        // fan-in rule may have a parent of its own that is not locked yet:
        // lock it and settle again.
        loop {
            let due = plan.fan_ins_due();
            if !due.is_empty() {
                let held = store::retrying(&mut tx, &due).await?;
                plan.hold_fan_ins(&due, held);
            }
            plan.settle_fan_ins();
            let missing = plan.missing_parents();
            if missing.is_empty() {
                break;
            }
            let rows = store::lock_jobs(&mut tx, &missing).await?;
            plan.add_late_parents(rows);
        }
        let applied = plan.applied();
        let stops = plan.stops();
        let writes = plan.into_writes();
        let walks = !writes.walks.is_empty();
        write(&mut tx, writes, &applied).await?;
        store::commit(tx).await?;
        Ok(Done {
            applied,
            stops,
            walks,
            refusal,
        })
    }

    /// Refusals, spawn batches and their children, then every item in
    /// order.
    async fn plan_reports(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
        items: &[ReportItem],
        plan: &mut Plan,
    ) -> Result<(), StoreError> {
        let mut refused = plan.refusals(items, &self.config.limits);
        let spawns = self.accepted_spawns(tx, items, plan, &mut refused).await?;
        // Record the batches; only new ones insert their children.
        let batches = plan::spawn_batches(items, &spawns);
        let new_batches = store::insert_spawn_batches(tx, &batches).await?;
        let children = plan.new_children(items, &spawns, &new_batches);
        store::insert_children(tx, children).await?;
        plan.apply_items(items, &refused, &new_batches);
        Ok(())
    }

    /// The indices of the `Spawned` items that may create children
    /// ([`Plan::spawns_to_accept`] and [`Plan::cap_trees`]), given the
    /// recorded nonces of earlier attempts and the trees' sizes.
    async fn accepted_spawns(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
        items: &[ReportItem],
        plan: &Plan,
        refused: &mut Vec<Refusal>,
    ) -> Result<Vec<usize>, StoreError> {
        let limits = &self.config.limits;
        let earlier_nonces = store::phase_nonces(tx, &plan.earlier_spawn_tokens(items)).await?;
        let accepted = plan.spawns_to_accept(items, &earlier_nonces, limits, refused);
        let sizes = store::tree_sizes(tx, &plan.spawn_roots(items, &accepted)).await?;
        Ok(plan.cap_trees(items, accepted, sizes, limits, refused))
    }

    /// Applies `items`; if the database refuses them for their data, splits
    /// the batch until the poisoned items stand alone, applies the rest, and
    /// fails the jobs whose outcome or spawn was poisoned (so they end
    /// readably instead of waiting forever). Returns the poisoned indices;
    /// an outage is an error, and the caller retries the whole batch.
    pub async fn apply_isolating(&self, items: &[ReportItem]) -> Result<Vec<usize>, StoreError> {
        match self.apply(items).await {
            Ok(_) => return Ok(Vec::new()),
            Err(e) if !e.is_poison() => return Err(e),
            Err(e) => tracing::warn!(
                sqlstate = ?e.sqlstate(),
                items = items.len(),
                "the database refuses a batch of reports; isolating the poisoned items"
            ),
        }
        let poisoned = isolate::isolate(items, StoreError::is_poison, |part| async move {
            self.apply(part).await.map(|_| ())
        })
        .await?;
        for &i in &poisoned {
            let item = &items[i];
            let token = *item.token();
            tracing::error!(
                job = %token.job_id,
                item = item_name(item),
                "dead-lettering a report item the database refuses"
            );
            self.metrics.poisoned();
            let error = format!(
                "the database refused a {} report for this phase; it was dead-lettered (see the coordinator's log)",
                item_name(item)
            );
            let failed = match item {
                ReportItem::Finished { .. } => {
                    let fail = ReportItem::Finished {
                        token,
                        outcome: Outcome::Fail {
                            error,
                            retryable: false,
                        },
                    };
                    self.apply(&[fail]).await
                }
                // Not through a Finished: a batch applied after its job's
                // Wait has no current token, and its job would wait forever
                // for children that were never created.
                ReportItem::Spawned { .. } => self
                    .run_work(Work::PoisonedSpawn(&token, &error))
                    .await
                    .map(|d| d.applied),
                _ => continue,
            };
            if let Err(e) = failed {
                tracing::error!(job = %token.job_id, "cannot fail the job of a poisoned report: {e}");
            }
        }
        let mut tx = store::begin(&self.pool).await?;
        store::add_counter(&mut tx, "poisoned_reports", poisoned.len() as i64).await?;
        store::commit(tx).await?;
        Ok(poisoned)
    }
}

/// What one transaction of the applier does.
#[derive(Clone, Copy)]
enum Work<'a> {
    /// Apply report items, in order.
    Reports(&'a [ReportItem]),
    /// Fail the job whose genuine spawn batch the database refused, with
    /// the error.
    PoisonedSpawn(&'a DispatchToken, &'a str),
    /// An operator's action on jobs (and, with `walk`, a walk of their
    /// descendants recorded for the sweeper).
    Control {
        ids: &'a [Uuid],
        action: Action,
        reason: &'a str,
        walk: bool,
    },
    /// Run an ended job again.
    Rerun { id: Uuid, phase: Option<&'a str> },
    /// A retry walk of `id`'s children is done: delete its row and let the
    /// job's fan-in fire if its children have all ended.
    RetryWalked { control: i64, id: Uuid },
}

/// An item's variant name, for log lines (never its contents).
fn item_name(item: &ReportItem) -> &'static str {
    match item {
        ReportItem::Started { .. } => "Started",
        ReportItem::Heartbeat { .. } => "Heartbeat",
        ReportItem::Spawned { .. } => "Spawned",
        ReportItem::Checkpoint { .. } => "Checkpoint",
        ReportItem::Progress { .. } => "Progress",
        ReportItem::Log { .. } => "Log",
        ReportItem::Finished { .. } => "Finished",
    }
}

/// Writes what a plan says, and the batch's counters.
async fn write(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    writes: Writes,
    applied: &Applied,
) -> Result<(), StoreError> {
    store::write_jobs(tx, writes.jobs).await?;
    store::insert_phases(tx, writes.phases).await?;
    store::insert_logs(tx, &writes.logs).await?;
    store::write_tree_and_events(tx, &writes.tree, &writes.phase_counts, writes.events).await?;
    store::insert_controls(tx, &writes.walks).await?;
    store::add_counter(tx, "fenced_reports", applied.fenced as i64).await?;
    store::add_counter(tx, "forged_reports", applied.forged as i64).await?;
    store::add_counter(tx, "refused_reports", applied.refused as i64).await?;
    Ok(())
}
