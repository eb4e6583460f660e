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
//! - `mod.rs`: the [`Applier`] (consume, batch, ack) and the in-memory plan.
//! - [`guard`]: refusals and text cleaning, pure.
//! - [`isolate`]: splitting a refused batch down to its poisoned items.

pub mod guard;
pub mod isolate;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, BasicRejectOptions};
use lapin::types::FieldTable;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tributary_common::broker;
use tributary_common::fanin::{self, FailureAction, FanIn};
use tributary_common::job::{ChildCounts, DEFAULT_MAX_ATTEMPTS, DispatchToken, ENTRY_PHASE};
use tributary_common::limits::Limits;
use tributary_common::retry::Backoff;
use tributary_common::status::{JobEvent, JobStatus, PhaseEvent, PhaseStatus};
use tributary_common::topology::Topology;
use tributary_common::wire::{self, Outcome, Report, ReportItem};
use uuid::Uuid;

use crate::metrics::Metrics;
use crate::store::{self, JobWrites, LockedJob, NewChildren, PhaseRows, StoreError, TreeDelta};

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

/// Applies report items to Postgres.
#[derive(Clone)]
pub struct Applier {
    pool: PgPool,
    config: ApplierConfig,
    metrics: Arc<Metrics>,
    relay_wake: Arc<Notify>,
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
        }
    }

    /// Applies `items` in one transaction, running it again on a deadlock.
    pub async fn apply(&self, items: &[ReportItem]) -> Result<Applied, StoreError> {
        let mut tries = 0;
        loop {
            match self.try_apply(items).await {
                Err(e) if e.is_retryable() && tries < 5 => {
                    tries += 1;
                    tracing::debug!("batch hit {e}; running it again");
                }
                Ok(applied) => {
                    self.metrics.record_applied(&applied);
                    if applied.queued > 0 {
                        self.relay_wake.notify_one();
                    }
                    return Ok(applied);
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn try_apply(&self, items: &[ReportItem]) -> Result<Applied, StoreError> {
        let mut ids: Vec<Uuid> = items.iter().map(|i| i.token().job_id).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut tx = store::begin(&self.pool).await?;
        let rows = store::lock_jobs_and_parents(&mut tx, &ids).await?;
        let mut plan = Plan::new(rows, self.config.backoff);
        let mut refused = self.refusals(items, &plan);

        // Spawn batches first: only new, genuine, allowed ones create children.
        let spawns = self
            .accepted_spawns(&mut tx, items, &plan, &mut refused)
            .await?;
        let batches: Vec<(Uuid, i32, i32, i32)> = spawns
            .iter()
            .map(|&i| match &items[i] {
                ReportItem::Spawned {
                    token,
                    batch,
                    children,
                    ..
                } => (
                    token.job_id,
                    token.seq as i32,
                    *batch as i32,
                    children.len() as i32,
                ),
                _ => unreachable!("accepted_spawns returns Spawned items only"),
            })
            .collect();
        let new_batches = store::insert_spawn_batches(&mut tx, &batches).await?;
        let children = plan.new_children(items, &spawns, &new_batches);
        store::insert_children(&mut tx, children).await?;

        let mut counted = HashSet::new();
        for (i, item) in items.iter().enumerate() {
            match refused.iter().find(|r| r.index == i) {
                Some(r) => plan.refuse(item.token(), r.spawn, &r.reason),
                None => plan.apply(item, &new_batches, &mut counted),
            }
        }
        plan.settle_fan_ins();
        // A parent that ended by its fan-in rule may have a parent of its own
        // that is not locked yet: lock it and settle again.
        loop {
            let missing: Vec<Uuid> = plan.missing_parents();
            if missing.is_empty() {
                break;
            }
            for row in store::lock_jobs(&mut tx, &missing).await? {
                plan.insert(row);
            }
            // A parent that no longer exists cannot count anything.
            plan.parent_deltas
                .retain(|(p, _), _| plan.jobs.contains_key(p));
            plan.flush_parent_deltas();
            plan.settle_fan_ins();
        }

        let applied = plan.applied;
        let writes = plan.into_writes();
        store::write_jobs(&mut tx, writes.jobs).await?;
        store::insert_phases(&mut tx, writes.phases).await?;
        store::insert_logs(&mut tx, &writes.logs).await?;
        store::add_tree_deltas(&mut tx, &writes.tree).await?;
        store::add_counter(&mut tx, "fenced_reports", applied.fenced as i64).await?;
        store::add_counter(&mut tx, "forged_reports", applied.forged as i64).await?;
        store::add_counter(&mut tx, "refused_reports", applied.refused as i64).await?;
        store::commit(tx).await?;
        Ok(applied)
    }

    /// The items a rule refuses (all but the tree-wide cap, which needs the
    /// database).
    fn refusals(&self, items: &[ReportItem], plan: &Plan) -> Vec<Refusal> {
        items
            .iter()
            .enumerate()
            .filter(|(_, item)| !matches!(item, ReportItem::Spawned { .. }))
            .filter_map(|(index, item)| {
                let reason = guard::refusal(item, &self.config.limits)?;
                plan.jobs
                    .contains_key(&item.token().job_id)
                    .then_some(Refusal {
                        index,
                        spawn: false,
                        reason,
                    })
            })
            .collect()
    }

    /// The indices of the `Spawned` items that may create children: sent by
    /// a genuine execution of the job's current phase (its nonce, or the
    /// recorded nonce of an earlier attempt of that phase), inside a sealed
    /// total, and within every cap. A genuine batch that breaks a cap is
    /// added to `refused` (its job fails); a stale or forged one is fenced
    /// later, when the plan applies it.
    async fn accepted_spawns(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
        items: &[ReportItem],
        plan: &Plan,
        refused: &mut Vec<Refusal>,
    ) -> Result<Vec<usize>, StoreError> {
        let earlier: Vec<(Uuid, i32, i32)> = items
            .iter()
            .filter_map(|item| match item {
                ReportItem::Spawned { token, .. } => plan
                    .jobs
                    .get(&token.job_id)
                    .filter(|j| {
                        j.row.phase_seq == token.seq as i32 && j.row.attempt > token.attempt as i32
                    })
                    .map(|_| (token.job_id, token.seq as i32, token.attempt as i32)),
                _ => None,
            })
            .collect();
        let earlier_nonces = store::phase_nonces(tx, &earlier).await?;
        let mut accepted = Vec::new();
        for (i, item) in items.iter().enumerate() {
            if let ReportItem::Spawned {
                token,
                first_index,
                children,
                ..
            } = item
                && plan.accepts_spawn(token, *first_index, children.len(), &earlier_nonces)
            {
                match guard::refusal(item, &self.config.limits) {
                    Some(reason) => refused.push(Refusal {
                        index: i,
                        spawn: true,
                        reason,
                    }),
                    None => accepted.push(i),
                }
            }
        }
        // The tree-wide cap: count each tree's jobs as batches are taken.
        let mut roots: Vec<Uuid> = accepted
            .iter()
            .filter_map(|&i| plan.jobs.get(&items[i].token().job_id))
            .map(|j| j.row.root_id)
            .collect();
        roots.sort_unstable();
        roots.dedup();
        let mut sizes = store::tree_sizes(tx, &roots).await?;
        let max = self.config.limits.max_jobs_per_tree as i64;
        accepted.retain(|&i| {
            let item = &items[i];
            let (ReportItem::Spawned { children, .. }, Some(job)) =
                (item, plan.jobs.get(&item.token().job_id))
            else {
                return false;
            };
            let size = sizes.entry(job.row.root_id).or_default();
            if *size + children.len() as i64 > max {
                refused.push(Refusal {
                    index: i,
                    spawn: true,
                    reason: format!(
                        "the tree would hold more than {max} jobs, the cap per tree (TRIBUTARY_MAX_JOBS_PER_TREE)"
                    ),
                });
                return false;
            }
            *size += children.len() as i64;
            true
        });
        Ok(accepted)
    }

    /// Consumes the reports queue until `cancel` fires, applying batches.
    /// Reconnects (with backoff) when the broker goes away.
    pub async fn run(self, amqp_url: String, topology: Topology, cancel: CancellationToken) {
        while !cancel.is_cancelled() {
            match self.consume(&amqp_url, &topology, &cancel).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!("outcome applier lost RabbitMQ: {e}; reconnecting");
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                }
            }
        }
    }

    /// Decodes one delivery into `items`; an unreadable one is dead-lettered.
    async fn take(
        &self,
        delivery: lapin::message::Delivery,
        items: &mut Vec<ReportItem>,
        owners: &mut Vec<usize>,
        good: &mut Vec<lapin::message::Delivery>,
    ) -> Result<(), broker::BrokerError> {
        match wire::decode::<Report>(&delivery.data) {
            Ok(report) => {
                owners.extend(std::iter::repeat_n(good.len(), report.items.len()));
                items.extend(report.items);
                good.push(delivery);
            }
            Err(e) => {
                tracing::error!(
                    "dead-lettering a report that cannot be read ({} bytes): {e}",
                    delivery.data.len()
                );
                self.metrics.dead_lettered();
                broker::settle(delivery.reject(BasicRejectOptions { requeue: false })).await?;
            }
        }
        Ok(())
    }

    async fn consume(
        &self,
        amqp_url: &str,
        topology: &Topology,
        cancel: &CancellationToken,
    ) -> Result<(), broker::BrokerError> {
        let conn = broker::connect(amqp_url, "tributary-coordinator-applier", cancel).await?;
        let channel = conn.create_channel().await?;
        broker::declare_base(&channel, topology).await?;
        let prefetch = u16::try_from(self.config.max_batch * 2).unwrap_or(u16::MAX);
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await?;
        let mut consumer = channel
            .basic_consume(
                topology.reports_queue().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        tracing::info!(queue = %topology.reports_queue(), "applying outcomes");
        loop {
            let first = tokio::select! {
                _ = cancel.cancelled() => break,
                d = consumer.next() => d,
            };
            let Some(first) = first else {
                return Err(broker::BrokerError::Cancelled);
            };
            let mut items = Vec::new();
            let mut owners = Vec::new();
            let mut good = Vec::new();
            self.take(first?, &mut items, &mut owners, &mut good)
                .await?;
            let deadline = tokio::time::sleep(self.config.linger);
            tokio::pin!(deadline);
            // A batch ends at max_batch deliveries or max_items items: small
            // enough that a fan-in is never held behind a long transaction.
            while good.len() < self.config.max_batch && items.len() < self.config.max_items {
                tokio::select! {
                    _ = &mut deadline => break,
                    d = consumer.next() => match d {
                        Some(d) => self.take(d?, &mut items, &mut owners, &mut good).await?,
                        None => break,
                    },
                }
            }
            if items.is_empty() {
                continue;
            }
            // Keep the deliveries (unacked) and retry until the database
            // answers: requeueing would burn the queue's delivery limit.
            // Data the database refuses is isolated, not retried.
            let mut delay = Duration::from_millis(100);
            let poisoned = loop {
                match self.apply_isolating(&items).await {
                    Ok(poisoned) => break poisoned,
                    Err(e) => {
                        tracing::warn!(
                            "cannot apply a batch of {} report items: {e}; retrying in {delay:?}",
                            items.len()
                        );
                        tokio::select! {
                            _ = cancel.cancelled() => return Ok(()),
                            _ = tokio::time::sleep(delay) => {}
                        }
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                }
            };
            let bad: HashSet<usize> = poisoned.iter().map(|&i| owners[i]).collect();
            if bad.is_empty() {
                if let Some(last) = good.last() {
                    broker::settle(last.acker.ack(BasicAckOptions { multiple: true })).await?;
                }
            } else {
                // The message holding a poisoned item goes to the dead-letter
                // queue for an operator to inspect (its healthy items are
                // applied; replaying it later is fenced).
                for (i, delivery) in good.iter().enumerate() {
                    if bad.contains(&i) {
                        broker::settle(delivery.reject(BasicRejectOptions { requeue: false }))
                            .await?;
                    } else {
                        broker::settle(delivery.ack(BasicAckOptions::default())).await?;
                    }
                }
            }
        }
        Ok(())
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
            if matches!(
                item,
                ReportItem::Spawned { .. } | ReportItem::Finished { .. }
            ) {
                let fail = ReportItem::Finished {
                    token,
                    outcome: Outcome::Fail {
                        error: format!(
                            "the database refused a {} report for this phase; it was dead-lettered (see the coordinator's log)",
                            item_name(item)
                        ),
                        retryable: false,
                    },
                };
                if let Err(e) = self.apply(&[fail]).await {
                    tracing::error!(job = %token.job_id, "cannot fail the job of a poisoned report: {e}");
                }
            }
        }
        let mut tx = store::begin(&self.pool).await?;
        store::add_counter(&mut tx, "poisoned_reports", poisoned.len() as i64).await?;
        store::commit(tx).await?;
        Ok(poisoned)
    }
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

/// A lease as asked for, within one second and one day (a wild value must
/// not poison the batch with an out-of-range timestamp).
fn lease(ms: u64) -> i64 {
    ms.clamp(1000, 86_400_000) as i64
}

fn action_name(action: FailureAction) -> &'static str {
    match action {
        FailureAction::Continue => "continue",
        FailureAction::StopAll => "stop_all",
        FailureAction::MarkWarning => "mark_warning",
    }
}

fn parse_action(s: &str) -> FailureAction {
    match s {
        "stop_all" => FailureAction::StopAll,
        "mark_warning" => FailureAction::MarkWarning,
        _ => FailureAction::Continue,
    }
}

/// An item a rule refused: its job fails with `reason`.
struct Refusal {
    /// The item's position in the batch.
    index: usize,
    /// A `Spawned` item already known to be genuine.
    spawn: bool,
    /// Why, for the job's error.
    reason: String,
}

/// One locked job and what the batch does to it.
struct JobPlan {
    row: LockedJob,
    status: JobStatus,
    phase_status: PhaseStatus,
    dirty: bool,
    started: bool,
    finished: bool,
    state: Option<Option<Vec<u8>>>,
    output: Option<Option<Vec<u8>>>,
    error: Option<String>,
    warning: Option<String>,
    delay_ms: Option<i64>,
    progress: Option<(i64, i64, String)>,
    lease_ms: Option<i64>,
}

impl JobPlan {
    fn new(row: LockedJob) -> Self {
        // Stored statuses are written only by this module; an unknown one
        // means a newer coordinator wrote it, and the job is left alone.
        let status = JobStatus::parse(&row.status).unwrap_or(JobStatus::Cancelled);
        let phase_status = PhaseStatus::parse(&row.phase_status).unwrap_or(PhaseStatus::Skipped);
        Self {
            row,
            status,
            phase_status,
            dirty: false,
            started: false,
            finished: false,
            state: None,
            output: None,
            error: None,
            warning: None,
            delay_ms: None,
            progress: None,
            lease_ms: None,
        }
    }

    /// Whether `token` names the execution this job is waiting on.
    fn is_current(&self, token: &DispatchToken) -> bool {
        self.row.phase_seq == token.seq as i32
            && self.row.attempt == token.attempt as i32
            && self.row.nonce == token.nonce as i64
            && matches!(self.status, JobStatus::Pending | JobStatus::Running)
            && matches!(
                self.phase_status,
                PhaseStatus::NotStarted | PhaseStatus::Running
            )
    }

    fn counts(&self) -> ChildCounts {
        ChildCounts {
            total: self.row.children_total as u64,
            completed: self.row.children_completed as u64,
            failed: self.row.children_failed as u64,
            cancelled: self.row.children_cancelled as u64,
        }
    }

    fn queue_phase(&mut self, phase: String, delay_ms: i64) {
        self.row.phase_seq += 1;
        self.row.attempt = 1;
        self.row.phase = phase;
        self.phase_status = PhaseStatus::NotStarted;
        self.state = Some(None);
        self.progress = Some((0, 0, String::new()));
        self.row.dispatch_pending = true;
        self.delay_ms = Some(delay_ms);
        self.dirty = true;
    }

    fn open_fanout(&mut self, seq: i32) {
        if self.row.fanout_seq != Some(seq) {
            self.row.fanout_seq = Some(seq);
            self.row.children_expected = None;
            self.row.children_total = 0;
            self.row.children_completed = 0;
            self.row.children_failed = 0;
            self.row.children_cancelled = 0;
            self.dirty = true;
        }
    }
}

/// What a batch writes.
struct Writes {
    jobs: JobWrites,
    phases: PhaseRows,
    logs: Vec<(Uuid, String, String)>,
    tree: Vec<(Uuid, TreeDelta)>,
}

/// The in-memory plan of one batch.
struct Plan {
    jobs: HashMap<Uuid, JobPlan>,
    backoff: Backoff,
    applied: Applied,
    phases: PhaseRows,
    logs: Vec<(Uuid, String, String)>,
    tree: HashMap<Uuid, TreeDelta>,
    /// Parents whose fan-in must be re-evaluated.
    fan_in_check: Vec<Uuid>,
    /// Child endings for parents not locked yet: (completed, failed, cancelled).
    parent_deltas: HashMap<(Uuid, i32), [i64; 3]>,
}

impl Plan {
    fn new(rows: Vec<LockedJob>, backoff: Backoff) -> Self {
        let mut plan = Self {
            jobs: HashMap::with_capacity(rows.len()),
            backoff,
            applied: Applied::default(),
            phases: PhaseRows::default(),
            logs: Vec::new(),
            tree: HashMap::new(),
            fan_in_check: Vec::new(),
            parent_deltas: HashMap::new(),
        };
        for row in rows {
            plan.insert(row);
        }
        plan
    }

    fn insert(&mut self, row: LockedJob) {
        self.jobs.entry(row.id).or_insert_with(|| JobPlan::new(row));
    }

    fn accepts_spawn(
        &self,
        token: &DispatchToken,
        first_index: u64,
        len: usize,
        earlier_nonces: &HashSet<(Uuid, i32, i32, i64)>,
    ) -> bool {
        // Any genuine attempt of the current phase may spawn: batches are
        // keyed by phase and number, so a re-executed phase re-sends the
        // same ones. After the seal, only batches inside the sealed range
        // are taken (a batch sent before the Wait may be applied after it);
        // anything beyond would keep the fan-in from ever firing.
        self.jobs.get(&token.job_id).is_some_and(|j| {
            let (seq, attempt, nonce) =
                (token.seq as i32, token.attempt as i32, token.nonce as i64);
            let genuine = if attempt == j.row.attempt {
                nonce == j.row.nonce
            } else {
                earlier_nonces.contains(&(token.job_id, seq, attempt, nonce))
            };
            genuine
                && j.row.phase_seq == seq
                && match j.status {
                    JobStatus::Pending | JobStatus::Running => true,
                    JobStatus::Waiting => {
                        j.row.fanout_seq == Some(token.seq as i32)
                            && j.row
                                .children_expected
                                .is_some_and(|e| first_index + len as u64 <= e as u64)
                    }
                    _ => false,
                }
        })
    }

    fn tree_delta(&mut self, root: Uuid, status: JobStatus, by: i64) {
        let i = match status {
            JobStatus::Pending => 0,
            JobStatus::Running => 1,
            JobStatus::Waiting => 2,
            JobStatus::Paused => 3,
            JobStatus::Completed => 4,
            JobStatus::Failed => 5,
            JobStatus::Cancelled => 6,
        };
        self.tree.entry(root).or_default()[i] += by;
    }

    /// Moves a job and its current phase by one event each; an illegal move
    /// changes nothing and is logged (it means a bug, not bad input).
    fn step(&mut self, id: Uuid, job_event: JobEvent, phase_event: Option<PhaseEvent>) -> bool {
        let Some(job) = self.jobs.get_mut(&id) else {
            return false;
        };
        let next_phase = match phase_event.map(|e| job.phase_status.apply(e)).transpose() {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(job = %id, "refusing phase move: {e}");
                return false;
            }
        };
        let next = match job.status.apply(job_event) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(job = %id, "refusing job move: {e}");
                return false;
            }
        };
        let (old, root) = (job.status, job.row.root_id);
        job.status = next;
        if let Some(p) = next_phase {
            job.phase_status = p;
        }
        job.dirty = true;
        if next.is_terminal() {
            job.finished = true;
            job.row.dispatch_pending = false;
        }
        if old != next {
            self.tree_delta(root, old, -1);
            self.tree_delta(root, next, 1);
        }
        true
    }

    fn record_phase(&mut self, id: Uuid, status: PhaseStatus, error: Option<String>) {
        let Some(job) = self.jobs.get(&id) else {
            return;
        };
        self.phases.job_id.push(id);
        self.phases.seq.push(job.row.phase_seq);
        self.phases.attempt.push(job.row.attempt);
        self.phases.name.push(job.row.phase.clone());
        self.phases.status.push(status.as_str().to_owned());
        self.phases.error.push(error);
        self.phases.nonce.push(job.row.nonce);
    }

    /// The children of the accepted spawn batches that are new, one
    /// vector per column, counted into their trees as pending.
    fn new_children(
        &mut self,
        items: &[ReportItem],
        spawns: &[usize],
        new_batches: &HashSet<(Uuid, i32, i32)>,
    ) -> NewChildren {
        let mut children = NewChildren::default();
        let mut seen = HashSet::new();
        for &i in spawns {
            let ReportItem::Spawned {
                token,
                batch,
                first_index,
                children: specs,
            } = &items[i]
            else {
                continue;
            };
            let key = (token.job_id, token.seq as i32, *batch as i32);
            if !new_batches.contains(&key) || !seen.insert(key) {
                continue;
            }
            let Some(root_id) = self.jobs.get(&token.job_id).map(|p| p.row.root_id) else {
                continue;
            };
            for (i, spec) in specs.iter().enumerate() {
                let options = spec.options.clone().unwrap_or_default();
                children.id.push(Uuid::now_v7());
                children.root_id.push(root_id);
                children.parent_id.push(token.job_id);
                children.parent_seq.push(token.seq as i32);
                children.child_index.push((*first_index + i as u64) as i64);
                children.kind.push(spec.kind.clone());
                children.input.push(spec.input.to_vec());
                children
                    .phase
                    .push(options.phase.unwrap_or_else(|| ENTRY_PHASE.to_owned()));
                children
                    .max_attempts
                    .push(options.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS) as i32);
                children
                    .max_child_failures
                    .push(options.max_child_failures.map(|m| m as i32));
                children
                    .failure_action
                    .push(action_name(options.failure_action.unwrap_or_default()).to_owned());
            }
            self.tree_delta(root_id, JobStatus::Pending, specs.len() as i64);
        }
        self.applied.children = children.id.len() as u64;
        children
    }

    /// Fails the job a refused item names, if the item is genuine (a
    /// stale or forged one is fenced like any other).
    fn refuse(&mut self, token: &DispatchToken, genuine_spawn: bool, reason: &str) {
        let Some(job) = self.jobs.get(&token.job_id) else {
            self.applied.fenced += 1;
            return;
        };
        let genuine = if genuine_spawn {
            !job.status.is_terminal()
        } else {
            job.is_current(token)
        };
        if !genuine {
            self.applied.fenced += 1;
            return;
        }
        tracing::warn!(job = %token.job_id, "report refused: {reason}");
        self.applied.refused += 1;
        self.fail_job(token.job_id, format!("report refused: {reason}"));
    }

    /// Fails a job that is not terminal yet, with `error`, ending its open
    /// phase, and counts it into its parent.
    fn fail_job(&mut self, id: Uuid, error: String) {
        let Some(job) = self.jobs.get(&id) else {
            return;
        };
        if job.status.is_terminal() {
            return;
        }
        let open_phase = matches!(
            job.phase_status,
            PhaseStatus::NotStarted | PhaseStatus::Running | PhaseStatus::Paused
        );
        if self.step(id, JobEvent::Fail, open_phase.then_some(PhaseEvent::Fail)) {
            if open_phase {
                self.record_phase(id, PhaseStatus::Failed, Some(error.clone()));
            }
            if let Some(job) = self.jobs.get_mut(&id) {
                job.row.dispatch_pending = false;
                job.error = Some(error);
            }
            self.child_ended(id, JobStatus::Failed);
        }
    }

    fn apply(
        &mut self,
        item: &ReportItem,
        new_batches: &HashSet<(Uuid, i32, i32)>,
        counted: &mut HashSet<(Uuid, i32, i32)>,
    ) {
        let token = *item.token();
        let Some(job) = self.jobs.get_mut(&token.job_id) else {
            tracing::warn!(%token, "report for an unknown job ignored");
            self.applied.fenced += 1;
            return;
        };
        if job.row.phase_seq == token.seq as i32
            && job.row.attempt == token.attempt as i32
            && job.row.nonce != token.nonce as i64
            && !matches!(item, ReportItem::Spawned { .. })
        {
            tracing::debug!(%token, "report with a wrong nonce fenced");
            self.applied.forged += 1;
            self.applied.fenced += 1;
            return;
        }
        match item {
            ReportItem::Started {
                phase, lease_ms, ..
            } => {
                if !job.is_current(&token) || job.phase_status != PhaseStatus::NotStarted {
                    self.applied.fenced += 1;
                    return;
                }
                job.row.phase = phase.clone();
                job.started = true;
                job.lease_ms = Some(lease(*lease_ms));
                self.step(token.job_id, JobEvent::Start, Some(PhaseEvent::Start));
            }
            ReportItem::Spawned {
                batch, children, ..
            } => {
                let key = (token.job_id, token.seq as i32, *batch as i32);
                if !new_batches.contains(&key) || !counted.insert(key) {
                    self.applied.fenced += 1;
                    return;
                }
                job.open_fanout(token.seq as i32);
                job.row.children_total += children.len() as i64;
                job.dirty = true;
                self.fan_in_check.push(token.job_id);
            }
            ReportItem::Heartbeat { lease_ms, .. } => {
                if !job.is_current(&token) || job.phase_status != PhaseStatus::Running {
                    self.applied.fenced += 1;
                    return;
                }
                job.lease_ms = Some(lease(*lease_ms));
                job.dirty = true;
            }
            ReportItem::Checkpoint { state, .. } => {
                if !job.is_current(&token) {
                    self.applied.fenced += 1;
                    return;
                }
                job.state = Some(Some(state.to_vec()));
                job.dirty = true;
            }
            ReportItem::Progress {
                done,
                total,
                message,
                ..
            } => {
                if !job.is_current(&token) {
                    self.applied.fenced += 1;
                    return;
                }
                job.progress = Some((
                    i64::try_from(*done).unwrap_or(i64::MAX),
                    i64::try_from(*total).unwrap_or(i64::MAX),
                    guard::text(message),
                ));
                job.dirty = true;
            }
            ReportItem::Log { level, message, .. } => {
                if job.row.nonce != token.nonce as i64 {
                    // Only a worker that ran some execution of this job
                    // writes to its log.
                    self.applied.fenced += 1;
                    return;
                }
                self.logs.push((
                    token.job_id,
                    guard::level(level).to_owned(),
                    guard::text(message),
                ));
            }
            ReportItem::Finished { outcome, .. } => {
                if !job.is_current(&token) {
                    self.applied.fenced += 1;
                    return;
                }
                self.finish(token, outcome);
            }
        }
        self.applied.applied += 1;
    }

    fn finish(&mut self, token: DispatchToken, outcome: &Outcome) {
        let id = token.job_id;
        match outcome {
            Outcome::Complete { output } => {
                // The last phase stays on the job row (phase, seq, attempt,
                // status): no history row, one write fewer per leaf job.
                if self.step(id, JobEvent::Complete, Some(PhaseEvent::Complete)) {
                    if let Some(job) = self.jobs.get_mut(&id) {
                        job.output = Some(Some(output.to_vec()));
                    }
                    self.child_ended(id, JobStatus::Completed);
                }
            }
            Outcome::Next { phase } => {
                if self.step(id, JobEvent::Next, Some(PhaseEvent::Complete)) {
                    self.record_phase(id, PhaseStatus::Completed, None);
                    if let Some(job) = self.jobs.get_mut(&id) {
                        job.queue_phase(phase.clone(), 0);
                        self.applied.queued += 1;
                    }
                }
            }
            Outcome::Wait { then, children } => {
                if self.step(id, JobEvent::Seal, Some(PhaseEvent::Complete)) {
                    self.record_phase(id, PhaseStatus::Completed, None);
                    if let Some(job) = self.jobs.get_mut(&id) {
                        job.open_fanout(token.seq as i32);
                        job.row.children_expected = Some(*children as i64);
                        job.row.resume_phase = Some(then.clone());
                        self.fan_in_check.push(id);
                    }
                }
            }
            Outcome::Fail { error, retryable } => {
                let error = guard::text(error);
                let Some(job) = self.jobs.get(&id) else {
                    return;
                };
                if *retryable && job.row.attempt < job.row.max_attempts {
                    let retry = job.row.attempt as u32;
                    if self.step(id, JobEvent::Retry, Some(PhaseEvent::Retry)) {
                        self.record_phase(id, PhaseStatus::Failed, Some(error.clone()));
                        let delay = self.backoff.delay(retry).as_millis() as i64;
                        if let Some(job) = self.jobs.get_mut(&id) {
                            job.row.attempt += 1;
                            job.row.dispatch_pending = true;
                            job.delay_ms = Some(delay);
                            self.applied.queued += 1;
                        }
                    }
                } else if self.step(id, JobEvent::Fail, Some(PhaseEvent::Fail)) {
                    self.record_phase(id, PhaseStatus::Failed, Some(error.clone()));
                    if let Some(job) = self.jobs.get_mut(&id) {
                        job.error = Some(error.clone());
                    }
                    self.child_ended(id, JobStatus::Failed);
                }
            }
        }
    }

    /// Counts a job's ending into its parent.
    fn child_ended(&mut self, id: Uuid, status: JobStatus) {
        let Some((parent_id, parent_seq)) = self
            .jobs
            .get(&id)
            .and_then(|j| j.row.parent_id.zip(j.row.parent_seq))
        else {
            return;
        };
        let slot = match status {
            JobStatus::Completed => 0,
            JobStatus::Failed => 1,
            _ => 2,
        };
        self.parent_deltas
            .entry((parent_id, parent_seq))
            .or_default()[slot] += 1;
        self.flush_parent_deltas();
    }

    /// Applies child endings to parents that are locked. A child counts
    /// only into the fan-out that spawned it: one left over from an earlier
    /// fan-out (its parent moved on under `mark_warning` or `stop_all`, or
    /// returned without waiting) changes no later fan-in.
    fn flush_parent_deltas(&mut self) {
        let ready: Vec<(Uuid, i32)> = self
            .parent_deltas
            .keys()
            .filter(|(p, _)| self.jobs.contains_key(p))
            .copied()
            .collect();
        for key in ready {
            let Some([c, f, x]) = self.parent_deltas.remove(&key) else {
                continue;
            };
            let (parent_id, seq) = key;
            if let Some(parent) = self.jobs.get_mut(&parent_id) {
                if parent.row.fanout_seq != Some(seq) {
                    tracing::debug!(parent = %parent_id, seq, "child of an earlier fan-out ended; not counted");
                    continue;
                }
                parent.row.children_completed += c;
                parent.row.children_failed += f;
                parent.row.children_cancelled += x;
                parent.dirty = true;
                self.fan_in_check.push(parent_id);
            }
        }
    }

    fn missing_parents(&self) -> Vec<Uuid> {
        let mut ids: Vec<Uuid> = self.parent_deltas.keys().map(|(p, _)| *p).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Runs the fan-in rule on every parent whose counts or seal changed.
    /// Under the row lock, `waiting` → `running` happens once: the fan-in
    /// fires exactly once.
    fn settle_fan_ins(&mut self) {
        while let Some(id) = self.fan_in_check.pop() {
            let Some(job) = self.jobs.get(&id) else {
                continue;
            };
            if !matches!(job.status, JobStatus::Running | JobStatus::Waiting) {
                continue;
            }
            let expected = if job.status == JobStatus::Waiting {
                job.row.children_expected.map(|e| e as u64)
            } else {
                None
            };
            let counts = job.counts();
            let max = job.row.max_child_failures.map(|m| m as u32);
            let action = parse_action(&job.row.failure_action);
            match fanin::decide(expected, &counts, max, action) {
                FanIn::Wait => {}
                FanIn::Resume => {
                    let then = job
                        .row
                        .resume_phase
                        .clone()
                        .unwrap_or_else(|| ENTRY_PHASE.to_owned());
                    if self.step(id, JobEvent::FanIn, None) {
                        if let Some(job) = self.jobs.get_mut(&id) {
                            job.queue_phase(then, 0);
                        }
                        self.applied.fan_ins += 1;
                        self.applied.queued += 1;
                    }
                }
                FanIn::Fail => {
                    let error = format!(
                        "{} children failed, more than max_child_failures = {}",
                        counts.failed,
                        max.unwrap_or_default()
                    );
                    self.fail_job(id, error);
                }
                FanIn::CompleteWithWarning => {
                    let warning = format!(
                        "{} children failed, more than max_child_failures = {}; phase {:?} skipped",
                        counts.failed,
                        max.unwrap_or_default(),
                        job.row.resume_phase.as_deref().unwrap_or_default()
                    );
                    if self.step(id, JobEvent::Complete, None) {
                        if let Some(job) = self.jobs.get_mut(&id) {
                            job.warning = Some(warning);
                        }
                        self.child_ended(id, JobStatus::Completed);
                    }
                }
            }
        }
    }

    fn into_writes(self) -> Writes {
        let mut w = JobWrites::default();
        for job in self.jobs.into_values().filter(|j| j.dirty) {
            w.id.push(job.row.id);
            w.status.push(job.status.as_str().to_owned());
            w.phase.push(job.row.phase);
            w.phase_seq.push(job.row.phase_seq);
            w.attempt.push(job.row.attempt);
            w.phase_status.push(job.phase_status.as_str().to_owned());
            w.started.push(job.started);
            w.set_state.push(job.state.is_some());
            w.state.push(job.state.flatten());
            w.set_output.push(job.output.is_some());
            w.output.push(job.output.flatten());
            w.error.push(job.error);
            w.warning.push(job.warning);
            w.dispatch_pending.push(job.row.dispatch_pending);
            w.delay_ms.push(job.delay_ms);
            w.fanout_seq.push(job.row.fanout_seq);
            w.resume_phase.push(job.row.resume_phase);
            w.children_expected.push(job.row.children_expected);
            w.children_total.push(job.row.children_total);
            w.children_completed.push(job.row.children_completed);
            w.children_failed.push(job.row.children_failed);
            w.children_cancelled.push(job.row.children_cancelled);
            w.set_progress.push(job.progress.is_some());
            let (d, t, m) = job
                .progress
                .map(|(d, t, m)| (Some(d), Some(t), Some(m)))
                .unwrap_or_default();
            w.progress_done.push(d);
            w.progress_total.push(t);
            w.progress_message.push(m);
            w.finished.push(job.finished);
            w.lease_ms.push(job.lease_ms);
        }
        let deltas = self
            .tree
            .into_iter()
            .filter(|(_, d)| d.iter().any(|v| *v != 0))
            .collect();
        Writes {
            jobs: w,
            phases: self.phases,
            logs: self.logs,
            tree: deltas,
        }
    }
}
