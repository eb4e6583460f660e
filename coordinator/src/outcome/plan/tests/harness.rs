//! A fake database for plan tests: rows built by hand, one batch run
//! through the plan exactly as `Applier::try_apply` runs it, and its writes
//! committed back so a second batch sees them.

use std::collections::{HashMap, HashSet};

use serde_bytes::ByteBuf;
use tributary_common::job::DispatchToken;
use tributary_common::limits::Limits;
use tributary_common::retry::Backoff;
use tributary_common::status::JobStatus;
use tributary_common::wire::{ChildSpec, Outcome, ReportItem};
use uuid::Uuid;

use super::super::{Plan, job_ids, spawn_batches};
use crate::outcome::Applied;
use crate::store::{Action, JobWrites, LockedJob, NewChildren};

/// The nonce of every row's latest publish, unless a test says otherwise.
pub const NONCE: u64 = 7;
/// The nonce of an earlier execution.
pub const OLD_NONCE: u64 = 5;

/// A job row as the applier locks it: running its first phase, attempt 1
/// of 3, published with [`NONCE`].
pub fn row() -> LockedJob {
    let id = Uuid::now_v7();
    LockedJob {
        id,
        root_id: id,
        parent_id: None,
        parent_seq: None,
        status: "running".into(),
        phase: "work".into(),
        phase_seq: 1,
        attempt: 1,
        phase_status: "running".into(),
        max_attempts: 3,
        dispatch_pending: false,
        fanout_seq: None,
        resume_phase: None,
        children_expected: None,
        children_total: 0,
        children_completed: 0,
        children_failed: 0,
        children_cancelled: 0,
        max_child_failures: None,
        failure_action: "continue".into(),
        nonce: NONCE as i64,
    }
}

/// Builder methods on a hand-made row.
pub trait RowExt: Sized {
    /// Job and phase status.
    fn status(self, job: &str, phase: &str) -> Self;
    /// Phase number and attempt.
    fn at(self, seq: i32, attempt: i32) -> Self;
    /// Spawned by `parent`'s phase `seq`, in its tree.
    fn child_of(self, parent: &LockedJob, seq: i32) -> Self;
    /// Waiting on the fan-out of its phase: `expected` children sealed,
    /// `total` counted, `completed` and `failed` of them ended.
    fn waiting(self, expected: i64, total: i64, completed: i64, failed: i64) -> Self;
    /// Tolerated child failures and what happens past them.
    fn failures(self, max: i32, action: &str) -> Self;
}

impl RowExt for LockedJob {
    fn status(mut self, job: &str, phase: &str) -> Self {
        self.status = job.into();
        self.phase_status = phase.into();
        self
    }
    fn at(mut self, seq: i32, attempt: i32) -> Self {
        self.phase_seq = seq;
        self.attempt = attempt;
        self
    }
    fn child_of(mut self, parent: &LockedJob, seq: i32) -> Self {
        self.root_id = parent.root_id;
        self.parent_id = Some(parent.id);
        self.parent_seq = Some(seq);
        self
    }
    fn waiting(mut self, expected: i64, total: i64, completed: i64, failed: i64) -> Self {
        self.status = "waiting".into();
        self.phase_status = "completed".into();
        self.fanout_seq = Some(self.phase_seq);
        self.resume_phase = Some("merge".into());
        self.children_expected = Some(expected);
        self.children_total = total;
        self.children_completed = completed;
        self.children_failed = failed;
        self
    }
    fn failures(mut self, max: i32, action: &str) -> Self {
        self.max_child_failures = Some(max);
        self.failure_action = action.into();
        self
    }
}

/// The token of the row's current execution.
pub fn token(row: &LockedJob) -> DispatchToken {
    DispatchToken {
        job_id: row.id,
        seq: row.phase_seq as u32,
        attempt: row.attempt as u32,
        nonce: row.nonce as u64,
    }
}

pub fn spawned(token: DispatchToken, batch: u32, first_index: u64, n: usize) -> ReportItem {
    let child = ChildSpec {
        kind: "leaf".into(),
        input: ByteBuf::from(vec![0x90]),
        options: None,
    };
    ReportItem::Spawned {
        token,
        batch,
        first_index,
        children: vec![child; n],
    }
}

pub fn finished(token: DispatchToken, outcome: Outcome) -> ReportItem {
    ReportItem::Finished { token, outcome }
}

pub fn complete(token: DispatchToken) -> ReportItem {
    finished(
        token,
        Outcome::Complete {
            output: ByteBuf::from(vec![0xc0]),
        },
    )
}

pub fn fail(token: DispatchToken, retryable: bool) -> ReportItem {
    finished(
        token,
        Outcome::Fail {
            error: "boom".into(),
            retryable,
        },
    )
}

pub fn wait(token: DispatchToken, children: u64) -> ReportItem {
    finished(
        token,
        Outcome::Wait {
            then: "merge".into(),
            children,
        },
    )
}

/// One job's row in a batch's writes, gathered from the columns.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    pub status: String,
    pub phase: String,
    pub phase_seq: i32,
    pub attempt: i32,
    pub phase_status: String,
    pub dispatch_pending: bool,
    pub delay_ms: Option<i64>,
    pub error: Option<String>,
    pub warning: Option<String>,
    pub fanout_seq: Option<i32>,
    pub children_expected: Option<i64>,
    /// total, completed, failed, cancelled.
    pub counts: [i64; 4],
    pub set_output: bool,
    pub set_state: bool,
    pub set_progress: bool,
    pub lease_ms: Option<i64>,
    pub lease_holder: Option<String>,
    pub finished: bool,
}

fn written(w: &JobWrites, i: usize) -> Written {
    Written {
        status: w.status[i].clone(),
        phase: w.phase[i].clone(),
        phase_seq: w.phase_seq[i],
        attempt: w.attempt[i],
        phase_status: w.phase_status[i].clone(),
        dispatch_pending: w.dispatch_pending[i],
        delay_ms: w.delay_ms[i],
        error: w.error[i].clone(),
        warning: w.warning[i].clone(),
        fanout_seq: w.fanout_seq[i],
        children_expected: w.children_expected[i],
        counts: [
            w.children_total[i],
            w.children_completed[i],
            w.children_failed[i],
            w.children_cancelled[i],
        ],
        set_output: w.set_output[i],
        set_state: w.set_state[i],
        set_progress: w.set_progress[i],
        lease_ms: w.lease_ms[i],
        lease_holder: w.lease_holder[i].clone(),
        finished: w.finished[i],
    }
}

/// What one batch did.
pub struct Run {
    pub applied: Applied,
    /// Changed jobs.
    pub jobs: HashMap<Uuid, Written>,
    /// Phase history rows: (job, seq, attempt, status, error).
    pub phases: Vec<(Uuid, i32, i32, String, Option<String>)>,
    /// Log lines: (job, level, message).
    pub logs: Vec<(Uuid, String, String)>,
    pub children: NewChildren,
    /// Spawn batches recorded: (job, seq, batch).
    pub batches: HashSet<(Uuid, i32, i32)>,
    /// Executions workers are told to stop.
    pub stops: Vec<DispatchToken>,
    /// Subtree walks recorded: (job, action, reason).
    pub walks: Vec<(Uuid, Action, String)>,
    /// Why a rerun was refused.
    pub refusal: Option<String>,
    /// The tree's counts by phase moved: (root, phase, status, delta).
    pub phase_counts: Vec<(Uuid, String, JobStatus, i64)>,
}

impl Run {
    /// The row written for `id`; panics if the batch left it alone.
    pub fn job(&self, id: Uuid) -> &Written {
        self.jobs
            .get(&id)
            .unwrap_or_else(|| panic!("job {id} not written"))
    }
}

/// The rows, spawn batches, phase history and tree sizes a batch reads.
#[derive(Default)]
pub struct Db {
    pub rows: HashMap<Uuid, LockedJob>,
    pub batches: HashSet<(Uuid, i32, i32)>,
    /// Recorded nonces of finished executions: (job, seq, attempt, nonce).
    pub phase_nonces: HashSet<(Uuid, i32, i32, i64)>,
    pub tree_sizes: HashMap<Uuid, i64>,
    pub limits: Limits,
    /// Jobs with a retry walk recorded: their fan-in is held.
    pub retry_walks: HashSet<Uuid>,
}

impl Db {
    pub fn with(rows: &[&LockedJob]) -> Self {
        let mut db = Self::default();
        for r in rows {
            db.rows.insert(r.id, (*r).clone());
        }
        db
    }

    fn lock(&self, ids: &[Uuid]) -> Vec<LockedJob> {
        ids.iter()
            .filter_map(|id| self.rows.get(id).cloned())
            .collect()
    }

    /// The plan of a batch naming `ids`: the rows and their parents.
    fn plan(&self, ids: &[Uuid]) -> Plan {
        let mut locked: Vec<Uuid> = ids.to_vec();
        locked.extend(self.lock(ids).iter().filter_map(|r| r.parent_id));
        locked.sort_unstable();
        locked.dedup();
        Plan::new(self.lock(&locked), Backoff::default())
    }

    /// Fails the job of a poisoned spawn batch, as `Applier::apply_isolating`
    /// does.
    pub fn run_poisoned_spawn(&self, token: &DispatchToken, error: &str) -> Run {
        let mut plan = self.plan(&[token.job_id]);
        plan.fail_spawner(token, error);
        self.settle(plan, NewChildren::default(), HashSet::new())
    }

    /// Applies an operator's `action` to `ids`, recording walks of their
    /// descendants where they are needed, as the API does.
    pub fn run_control(&self, ids: &[Uuid], action: Action) -> Run {
        let mut plan = self.plan(ids);
        for &id in ids {
            let needs_walk = plan.needs_walk(id, action);
            plan.control(id, action, "cancelled by an operator");
            if needs_walk {
                plan.walk(id, action, "cancelled by an operator");
            }
        }
        self.settle(plan, NewChildren::default(), HashSet::new())
    }

    /// An operator's `action` on one job, refused as the API refuses it.
    pub fn run_steer(&self, id: Uuid, action: Action) -> Run {
        let mut plan = self.plan(&[id]);
        let refusal = plan.steer_refusal(id, action);
        if refusal.is_none() {
            plan.control(id, action, "cancelled by an operator");
        }
        let mut run = self.settle(plan, NewChildren::default(), HashSet::new());
        run.refusal = refusal;
        run
    }

    /// A retry walk's step on `ids`, as the sweeper runs it.
    pub fn run_retry_walk(&self, ids: &[Uuid]) -> Run {
        let mut plan = self.plan(ids);
        for &id in ids {
            plan.control(id, Action::Retry, "");
        }
        self.settle(plan, NewChildren::default(), HashSet::new())
    }

    /// The end of `id`'s retry walk, as the sweeper runs it.
    pub fn run_retry_walked(&mut self, id: Uuid) -> Run {
        self.retry_walks.remove(&id);
        let mut plan = self.plan(&[id]);
        plan.recheck_fan_in(id);
        self.settle(plan, NewChildren::default(), HashSet::new())
    }

    /// Runs the ended job `id` again, as the retry route does.
    pub fn run_rerun(&self, id: Uuid, phase: Option<&str>) -> Run {
        let mut plan = self.plan(&[id]);
        let refusal = plan.rerun(id, phase).err();
        let mut run = self.settle(plan, NewChildren::default(), HashSet::new());
        run.refusal = refusal;
        run
    }

    /// Runs `items` through a plan the way `Applier::try_apply` does.
    pub fn run(&self, items: &[ReportItem]) -> Run {
        let mut plan = self.plan(&job_ids(items));
        let mut refused = plan.refusals(items, &self.limits);
        let earlier: HashSet<_> = plan.earlier_spawn_tokens(items).into_iter().collect();
        let nonces = self
            .phase_nonces
            .iter()
            .filter(|(j, s, a, _)| earlier.contains(&(*j, *s, *a)))
            .copied()
            .collect();
        let accepted = plan.spawns_to_accept(items, &nonces, &self.limits, &mut refused);
        let sizes = plan
            .spawn_roots(items, &accepted)
            .into_iter()
            .filter_map(|r| self.tree_sizes.get(&r).map(|s| (r, *s)))
            .collect();
        let spawns = plan.cap_trees(items, accepted, sizes, &self.limits, &mut refused);
        let new_batches: HashSet<_> = spawn_batches(items, &spawns)
            .into_iter()
            .map(|(j, s, b, _)| (j, s, b))
            .filter(|k| !self.batches.contains(k))
            .collect();
        let children = plan.new_children(items, &spawns, &new_batches);
        plan.apply_items(items, &refused, &new_batches);
        self.settle(plan, children, new_batches)
    }

    /// Settles fan-ins, locking late parents, and gathers the writes.
    fn settle(
        &self,
        mut plan: Plan,
        children: NewChildren,
        new_batches: HashSet<(Uuid, i32, i32)>,
    ) -> Run {
        loop {
            let due = plan.fan_ins_due();
            if !due.is_empty() {
                let held = due
                    .iter()
                    .filter(|id| self.retry_walks.contains(id))
                    .copied()
                    .collect();
                plan.hold_fan_ins(&due, held);
            }
            plan.settle_fan_ins();
            let missing = plan.missing_parents();
            if missing.is_empty() {
                break;
            }
            plan.add_late_parents(self.lock(&missing));
        }
        let applied = plan.applied();
        let stops = plan.stops();
        let w = plan.into_writes();
        let jobs = (0..w.jobs.id.len())
            .map(|i| (w.jobs.id[i], written(&w.jobs, i)))
            .collect();
        let p = &w.phases;
        let phases = (0..p.job_id.len())
            .map(|i| {
                let status = p.status[i].clone();
                (
                    p.job_id[i],
                    p.seq[i],
                    p.attempt[i],
                    status,
                    p.error[i].clone(),
                )
            })
            .collect();
        Run {
            applied,
            jobs,
            phases,
            logs: w.logs,
            children,
            batches: new_batches,
            stops,
            walks: w.walks,
            refusal: None,
            phase_counts: w.phase_counts,
        }
    }

    /// Commits what `run` wrote: the next batch reads it.
    pub fn commit(&mut self, run: &Run) {
        for (id, w) in &run.jobs {
            let Some(r) = self.rows.get_mut(id) else {
                continue;
            };
            r.status = w.status.clone();
            r.phase = w.phase.clone();
            r.phase_seq = w.phase_seq;
            r.attempt = w.attempt;
            r.phase_status = w.phase_status.clone();
            r.dispatch_pending = w.dispatch_pending;
            r.fanout_seq = w.fanout_seq;
            r.children_expected = w.children_expected;
            [
                r.children_total,
                r.children_completed,
                r.children_failed,
                r.children_cancelled,
            ] = w.counts;
        }
        self.batches.extend(run.batches.iter().copied());
        self.retry_walks.extend(
            run.walks
                .iter()
                .filter(|w| w.1 == Action::Retry)
                .map(|w| w.0),
        );
    }
}
