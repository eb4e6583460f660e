//! The in-memory plan of one batch: the locked rows, every report item run
//! through the state machines against them, and the writes that follow.
//! Pure: no SQL, no broker, no `async`. The [`Applier`](super::Applier)
//! reads the rows, feeds them here, and writes back what the plan says.
//!
//! ```text
//!  Plan::new(locked rows)
//!   ├─ refusals            items a rule refuses (spawn.rs for Spawned)
//!   ├─ spawns_to_accept    genuine, allowed spawn batches → new_children
//!   ├─ apply_items         every item in order: tokens fence, state moves
//!   │  (or fail_spawner    the job of a spawn batch the database refused)
//!   ├─ settle_fan_ins      fan-in rule on changed parents (fan_in.rs)
//!   ├─ missing_parents /   parents that ended by their fan-in have parents
//!   │  add_late_parents    of their own: lock them, count, settle again
//!   └─ into_writes         the changed jobs, phases, logs, tree deltas
//! ```
//!
//! # Layout
//! - `plan.rs`: [`Plan`] and the per-item rules (fencing, outcomes).
//! - `spawn.rs`: which `Spawned` batches may create children, and the rows.
//! - `fan_in.rs`: counting endings into parents and the fan-in rule.
//! - `job.rs`: one job's plan ([`JobPlan`]) and the column-wise writes.

mod control;
mod fan_in;
mod job;
mod spawn;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};

use tributary_common::job::DispatchToken;
use tributary_common::limits::Limits;
use tributary_common::retry::Backoff;
use tributary_common::status::{JobEvent, JobStatus, PhaseEvent, PhaseStatus, TreeCounts};
use tributary_common::wire::{self, Outcome, ReportItem};
use uuid::Uuid;

use super::{Applied, guard};
use crate::store::{Action, LockedJob, PhaseRows};
pub(super) use job::Writes;
use job::{JobPlan, lease};
pub(super) use spawn::spawn_batches;

/// An item a rule refused: its job fails with `reason`.
pub(super) struct Refusal {
    /// The item's position in the batch.
    index: usize,
    /// A `Spawned` item already known to be genuine.
    spawn: bool,
    /// Why, for the job's error.
    reason: String,
}

/// The in-memory plan of one batch.
pub(super) struct Plan {
    jobs: HashMap<Uuid, JobPlan>,
    backoff: Backoff,
    applied: Applied,
    phases: PhaseRows,
    logs: Vec<(Uuid, String, String)>,
    tree: HashMap<Uuid, TreeCounts>,
    /// Parents whose fan-in must be re-evaluated.
    fan_in_check: Vec<Uuid>,
    /// Parents whose fan-in waits for a retry walk ([`Plan::hold_fan_ins`]).
    held: HashSet<Uuid>,
    /// Parents already looked up for a retry walk.
    hold_checked: HashSet<Uuid>,
    /// Child endings for parents not locked yet: (completed, failed, cancelled).
    parent_deltas: HashMap<(Uuid, i32), [i64; 3]>,
    /// Executions workers must stop (see [`Plan::stops`]).
    stops: Vec<DispatchToken>,
    /// Subtree walks to record: (job, action, reason).
    walks: Vec<(Uuid, Action, String)>,
    /// New children counted into their trees by phase, sorted so batches
    /// lock the rows in one order.
    phase_counts: std::collections::BTreeMap<(Uuid, String, JobStatus), i64>,
}

/// The jobs `items` name, sorted and without repeats: the rows to lock.
pub(super) fn job_ids(items: &[ReportItem]) -> Vec<Uuid> {
    let mut ids: Vec<Uuid> = items.iter().map(|i| i.token().job_id).collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

impl Plan {
    pub(super) fn new(rows: Vec<LockedJob>, backoff: Backoff) -> Self {
        let mut plan = Self {
            jobs: HashMap::with_capacity(rows.len()),
            backoff,
            applied: Applied::default(),
            phases: PhaseRows::default(),
            logs: Vec::new(),
            tree: HashMap::new(),
            fan_in_check: Vec::new(),
            held: HashSet::new(),
            hold_checked: HashSet::new(),
            parent_deltas: HashMap::new(),
            stops: Vec::new(),
            walks: Vec::new(),
            phase_counts: Default::default(),
        };
        for row in rows {
            plan.insert(row);
        }
        plan
    }

    fn insert(&mut self, row: LockedJob) {
        self.jobs.entry(row.id).or_insert_with(|| JobPlan::new(row));
    }

    /// What the batch changed so far.
    pub(super) fn applied(&self) -> Applied {
        self.applied
    }

    /// The items a rule refuses (all but `Spawned`, which
    /// [`Plan::spawns_to_accept`] checks once it knows them genuine).
    pub(super) fn refusals(&self, items: &[ReportItem], limits: &Limits) -> Vec<Refusal> {
        items
            .iter()
            .enumerate()
            .filter(|(_, item)| !matches!(item, ReportItem::Spawned { .. }))
            .filter_map(|(index, item)| {
                let reason = guard::refusal(item, limits)?;
                self.jobs
                    .contains_key(&item.token().job_id)
                    .then_some(Refusal {
                        index,
                        spawn: false,
                        reason,
                    })
            })
            .collect()
    }

    /// Runs every item in order: a refused one fails its job, any other
    /// goes through the token fence and the state machines.
    /// `new_batches` are the spawn batches recorded by this batch.
    pub(super) fn apply_items(
        &mut self,
        items: &[ReportItem],
        refused: &[Refusal],
        new_batches: &HashSet<(Uuid, i32, i32)>,
    ) {
        let mut counted = HashSet::new();
        for (i, item) in items.iter().enumerate() {
            match refused.iter().find(|r| r.index == i) {
                Some(r) => self.refuse(item.token(), r.spawn, &r.reason),
                None => self.apply(item, new_batches, &mut counted),
            }
        }
    }

    fn tree_delta(&mut self, root: Uuid, status: JobStatus, by: i64) {
        self.tree.entry(root).or_default().add(status, by);
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
        if next == JobStatus::Failed && job.open_children() {
            // Nothing will wait for them: cancel the job's descendants
            // (stop_all, or a phase that failed after spawning).
            self.walks.push((
                id,
                Action::Cancel,
                format!("cancelled: ancestor {id} failed"),
            ));
        }
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
        if self
            .jobs
            .get(&token.job_id)
            .is_some_and(|j| j.is_current(&token))
        {
            self.follow_parent(token.job_id, matches!(item, ReportItem::Started { .. }));
        }
        let Some(job) = self.jobs.get_mut(&token.job_id) else {
            tracing::warn!(%token, "report for an unknown job ignored");
            self.applied.fenced += 1;
            return;
        };
        if job.row.phase_seq == token.seq as i32
            && job.row.attempt == token.attempt as i32
            && !job.holds_nonce(&token)
        {
            tracing::debug!(%token, "report with a wrong nonce fenced");
            self.applied.forged += 1;
            self.applied.fenced += 1;
            return;
        }
        match item {
            ReportItem::Started {
                phase,
                lease_ms,
                worker,
                ..
            } => {
                if !job.is_current(&token) {
                    // The worker runs something nobody waits for (its job was
                    // cancelled or paused, or moved on): tell it to stop.
                    self.stops.push(token);
                }
                if !job.is_current(&token) || job.phase_status != PhaseStatus::NotStarted {
                    self.applied.fenced += 1;
                    return;
                }
                job.row.phase = phase.clone();
                job.started = true;
                job.lease_ms = Some(lease(*lease_ms));
                job.lease_holder = worker.as_deref().and_then(wire::worker_identity);
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
                if !job.is_current(&token) {
                    self.stops.push(token);
                }
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
}
