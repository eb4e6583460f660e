//! Counting children's endings into their parents, and the fan-in rule
//! (`tributary_common::fanin`) applied under the parents' row locks.

use tributary_common::fanin::{self, FailureAction, FanIn};
use tributary_common::job::ENTRY_PHASE;
use tributary_common::status::{JobEvent, JobStatus};
use uuid::Uuid;

use super::Plan;
use crate::store::LockedJob;

pub(super) fn parse_action(s: &str) -> FailureAction {
    match s {
        "stop_all" => FailureAction::StopAll,
        "mark_warning" => FailureAction::MarkWarning,
        _ => FailureAction::Continue,
    }
}

impl Plan {
    /// Counts a job's ending into its parent.
    pub(super) fn child_ended(&mut self, id: Uuid, status: JobStatus) {
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

    /// Parents with endings to count that are not locked yet: a job that
    /// ended by its fan-in rule may have a parent outside the batch.
    pub(in crate::outcome) fn missing_parents(&self) -> Vec<Uuid> {
        let mut ids: Vec<Uuid> = self.parent_deltas.keys().map(|(p, _)| *p).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Takes the rows of [`Plan::missing_parents`], now locked, counts the
    /// endings into them and settles their fan-ins. Endings for a parent
    /// that no longer exists are dropped: it cannot count anything.
    pub(in crate::outcome) fn add_late_parents(&mut self, rows: Vec<LockedJob>) {
        for row in rows {
            self.insert(row);
        }
        let jobs = &self.jobs;
        self.parent_deltas.retain(|(p, _), _| jobs.contains_key(p));
        self.flush_parent_deltas();
    }

    /// Parents whose fan-in would fire now and that were not looked up for
    /// a retry walk yet: the applier asks the database which of them are
    /// held ([`Plan::hold_fan_ins`]) before [`Plan::settle_fan_ins`]. Most
    /// batches fire no fan-in and ask nothing.
    pub(in crate::outcome) fn fan_ins_due(&self) -> Vec<Uuid> {
        let mut due: Vec<Uuid> = self
            .fan_in_check
            .iter()
            .filter(|id| !self.hold_checked.contains(id))
            .filter(|id| {
                self.jobs
                    .get(id)
                    .is_some_and(|job| self.decide(job) != FanIn::Wait)
            })
            .copied()
            .collect();
        due.sort_unstable();
        due.dedup();
        due
    }

    /// Takes the answer for [`Plan::fan_ins_due`]: `held` have a retry
    /// walk running, and their fan-in waits for its end.
    pub(in crate::outcome) fn hold_fan_ins(&mut self, asked: &[Uuid], held: Vec<Uuid>) {
        self.hold_checked.extend(asked.iter().copied());
        self.held.extend(held);
    }

    /// Re-evaluates `id`'s fan-in: a retry walk of its children ended.
    pub(in crate::outcome) fn recheck_fan_in(&mut self, id: Uuid) {
        self.fan_in_check.push(id);
    }

    fn decide(&self, job: &super::JobPlan) -> FanIn {
        if !matches!(job.status, JobStatus::Running | JobStatus::Waiting) {
            return FanIn::Wait;
        }
        let expected = if job.status == JobStatus::Waiting {
            job.row.children_expected.map(|e| e as u64)
        } else {
            None
        };
        let max = job.row.max_child_failures.map(|m| m as u32);
        let action = parse_action(&job.row.failure_action);
        fanin::decide(expected, &job.counts(), max, action)
    }

    /// Runs the fan-in rule on every parent whose counts or seal changed.
    /// Under the row lock, `waiting` → `running` happens once: the fan-in
    /// fires exactly once.
    pub(in crate::outcome) fn settle_fan_ins(&mut self) {
        while let Some(id) = self.fan_in_check.pop() {
            let Some(job) = self.jobs.get(&id) else {
                continue;
            };
            if self.held.contains(&id) {
                continue;
            }
            let counts = job.counts();
            let max = job.row.max_child_failures.map(|m| m as u32);
            match self.decide(job) {
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
}
