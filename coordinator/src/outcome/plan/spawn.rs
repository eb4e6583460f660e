//! Which `Spawned` batches may create children, and the children's rows.
//!
//! A batch is taken when a genuine execution of the job's current phase
//! sent it (that attempt's nonce, or the recorded nonce of an earlier
//! attempt of the phase), inside a sealed total, and within every cap. The
//! applier asks the database for the two facts a plan cannot know: the
//! recorded nonces of earlier attempts and the size of each tree.

use std::collections::{HashMap, HashSet};

use tributary_common::fanin::FailureAction;
use tributary_common::job::{DEFAULT_MAX_ATTEMPTS, DispatchToken, ENTRY_PHASE};
use tributary_common::limits::Limits;
use tributary_common::status::JobStatus;
use tributary_common::wire::ReportItem;
use uuid::Uuid;

use super::{Plan, Refusal};
use crate::outcome::guard;
use crate::store::NewChildren;

pub(super) fn action_name(action: FailureAction) -> &'static str {
    match action {
        FailureAction::Continue => "continue",
        FailureAction::StopAll => "stop_all",
        FailureAction::MarkWarning => "mark_warning",
    }
}

/// The spawn batches to record, `(job, seq, batch, children)`, for the
/// `Spawned` items at `spawns`.
pub(in crate::outcome) fn spawn_batches(
    items: &[ReportItem],
    spawns: &[usize],
) -> Vec<(Uuid, i32, i32, i32)> {
    spawns
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
            _ => unreachable!("spawns_to_accept returns Spawned items only"),
        })
        .collect()
}

impl Plan {
    /// The `(job, seq, attempt)` of spawn batches sent by an earlier attempt
    /// of the job's current phase: their nonces are in the phase history.
    pub(in crate::outcome) fn earlier_spawn_tokens(
        &self,
        items: &[ReportItem],
    ) -> Vec<(Uuid, i32, i32)> {
        items
            .iter()
            .filter_map(|item| match item {
                ReportItem::Spawned { token, .. } => self
                    .jobs
                    .get(&token.job_id)
                    .filter(|j| {
                        j.row.phase_seq == token.seq as i32 && j.row.attempt > token.attempt as i32
                    })
                    .map(|_| (token.job_id, token.seq as i32, token.attempt as i32)),
                _ => None,
            })
            .collect()
    }

    /// The indices of the `Spawned` items that may create children, before
    /// the tree-wide cap ([`Plan::cap_trees`]). A genuine batch that breaks
    /// a rule is added to `refused` (its job fails); a stale or forged one
    /// is fenced later, when the plan applies it.
    pub(in crate::outcome) fn spawns_to_accept(
        &self,
        items: &[ReportItem],
        earlier_nonces: &HashSet<(Uuid, i32, i32, i64)>,
        limits: &Limits,
        refused: &mut Vec<Refusal>,
    ) -> Vec<usize> {
        let mut accepted = Vec::new();
        for (i, item) in items.iter().enumerate() {
            if let ReportItem::Spawned {
                token,
                first_index,
                children,
                ..
            } = item
                && self.accepts_spawn(token, *first_index, children.len(), earlier_nonces)
            {
                match guard::refusal(item, limits) {
                    Some(reason) => refused.push(Refusal {
                        index: i,
                        spawn: true,
                        reason,
                    }),
                    None => accepted.push(i),
                }
            }
        }
        accepted
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
                j.holds_nonce(token)
            } else {
                earlier_nonces.contains(&(token.job_id, seq, attempt, nonce))
            };
            genuine
                && j.row.phase_seq == seq
                && match j.unpaused_status() {
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

    /// Fails the job of a genuine spawn batch the database refused: its
    /// children were never created, so a fan-in counting them could never
    /// fire. A job that has ended or moved to another phase is left alone.
    /// This takes no current token: the batch may have been applied after
    /// its job's `Wait`, when the job is `waiting`.
    pub(in crate::outcome) fn fail_spawner(&mut self, token: &DispatchToken, error: &str) {
        let Some(job) = self.jobs.get(&token.job_id) else {
            return;
        };
        if job.row.phase_seq == token.seq as i32 {
            self.fail_job(token.job_id, error.to_owned());
        }
    }

    /// The trees the `accepted` spawns grow, sorted: their sizes decide
    /// the tree-wide cap.
    pub(in crate::outcome) fn spawn_roots(
        &self,
        items: &[ReportItem],
        accepted: &[usize],
    ) -> Vec<Uuid> {
        let mut roots: Vec<Uuid> = accepted
            .iter()
            .filter_map(|&i| self.jobs.get(&items[i].token().job_id))
            .map(|j| j.row.root_id)
            .collect();
        roots.sort_unstable();
        roots.dedup();
        roots
    }

    /// The tree-wide cap: counts each tree's jobs (`sizes`, from the
    /// database) as batches are taken, in order; a batch that would pass
    /// the cap is refused.
    pub(in crate::outcome) fn cap_trees(
        &self,
        items: &[ReportItem],
        mut accepted: Vec<usize>,
        mut sizes: HashMap<Uuid, i64>,
        limits: &Limits,
        refused: &mut Vec<Refusal>,
    ) -> Vec<usize> {
        let max = limits.max_jobs_per_tree as i64;
        accepted.retain(|&i| {
            let item = &items[i];
            let (ReportItem::Spawned { children, .. }, Some(job)) =
                (item, self.jobs.get(&item.token().job_id))
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
        accepted
    }

    /// The children of the accepted spawn batches that are new, one
    /// vector per column, counted into their trees as pending (or paused,
    /// under a paused parent).
    pub(in crate::outcome) fn new_children(
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
            let Some((root_id, paused)) = self
                .jobs
                .get(&token.job_id)
                .map(|p| (p.row.root_id, p.status == JobStatus::Paused))
            else {
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
                let phase = options.phase.unwrap_or_else(|| ENTRY_PHASE.to_owned());
                let status = if paused {
                    JobStatus::Paused
                } else {
                    JobStatus::Pending
                };
                *self
                    .phase_counts
                    .entry((root_id, phase.clone(), status))
                    .or_default() += 1;
                children.phase.push(phase);
                children
                    .max_attempts
                    .push(options.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS) as i32);
                children
                    .max_child_failures
                    .push(options.max_child_failures.map(|m| m as i32));
                children
                    .failure_action
                    .push(action_name(options.failure_action.unwrap_or_default()).to_owned());
                children.paused.push(paused);
            }
            // Children of a paused job are born paused: the whole subtree
            // is held until resume.
            let status = if paused {
                JobStatus::Paused
            } else {
                JobStatus::Pending
            };
            self.tree_delta(root_id, status, specs.len() as i64);
        }
        self.applied.children = children.id.len() as u64;
        children
    }
}
