//! One locked job and what the batch does to it, and the column-wise
//! writes a finished plan turns into.

use tributary_common::job::{ChildCounts, DispatchToken};
use tributary_common::status::{JobStatus, PhaseStatus, TreeCounts};
use uuid::Uuid;

use super::Plan;
use crate::event_data::{LogLine, ProgressChange, StatusChange, to_value};

use crate::store::{Action, EventKind, JobWrites, LockedJob, NewEvents, PhaseRows};

/// A lease as asked for, within one second and one day (a wild value must
/// not poison the batch with an out-of-range timestamp).
pub(super) fn lease(ms: u64) -> i64 {
    ms.clamp(1000, 86_400_000) as i64
}

/// One locked job and what the batch does to it.
pub(super) struct JobPlan {
    pub(super) row: LockedJob,
    pub(super) status: JobStatus,
    pub(super) phase_status: PhaseStatus,
    pub(super) dirty: bool,
    pub(super) started: bool,
    pub(super) finished: bool,
    pub(super) state: Option<Option<Vec<u8>>>,
    pub(super) output: Option<Option<Vec<u8>>>,
    pub(super) error: Option<String>,
    pub(super) warning: Option<String>,
    pub(super) delay_ms: Option<i64>,
    pub(super) progress: Option<(i64, i64, String)>,
    pub(super) lease_ms: Option<i64>,
    /// An ended job runs again: its error, warning and end time are cleared.
    pub(super) rerun: bool,
    /// Status, phase status and phase number as locked: a change of any is
    /// an event.
    pub(super) locked: (JobStatus, PhaseStatus, i32),
    /// The phase name as locked, for the tree's counts by phase.
    pub(super) locked_phase: String,
    pub(super) lease_holder: Option<String>,
}

impl JobPlan {
    pub(super) fn new(row: LockedJob) -> Self {
        // Stored statuses are written only by this module; an unknown one
        // means a newer coordinator wrote it, and the job is left alone.
        let status = JobStatus::parse(&row.status).unwrap_or(JobStatus::Cancelled);
        let phase_status = PhaseStatus::parse(&row.phase_status).unwrap_or(PhaseStatus::Skipped);
        Self {
            locked: (status, phase_status, row.phase_seq),
            locked_phase: row.phase.clone(),
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
            rerun: false,
            lease_holder: None,
        }
    }

    /// Whether a watcher hears about this job's moves one by one: roots,
    /// parents, and jobs that failed. Other leaves show in the tree's
    /// counts, so a 100k-child fan-out does not write 100k events.
    pub(super) fn watched(&self) -> bool {
        self.row.parent_id.is_none()
            || self.row.fanout_seq.is_some()
            || self.status == JobStatus::Failed
    }

    /// Whether its status, phase status or phase moved in this batch.
    pub(super) fn moved(&self) -> bool {
        self.locked != (self.status, self.phase_status, self.row.phase_seq)
    }

    /// Whether `token` names the execution this job is waiting on.
    pub(super) fn is_current(&self, token: &DispatchToken) -> bool {
        self.row.phase_seq == token.seq as i32
            && self.row.attempt == token.attempt as i32
            && self.holds_nonce(token)
            && matches!(
                self.status,
                JobStatus::Pending | JobStatus::Running | JobStatus::Paused
            )
            && matches!(
                self.phase_status,
                PhaseStatus::NotStarted | PhaseStatus::Running
            )
    }

    /// Whether `token` carries the nonce of this execution's publish. Until
    /// the relay publishes it (`dispatch_pending`), the row still holds the
    /// nonce of an earlier publish (or 0 for a new job): a token carrying
    /// it was never given to anyone for this execution.
    pub(super) fn holds_nonce(&self, token: &DispatchToken) -> bool {
        self.row.nonce == token.nonce as i64 && !self.row.dispatch_pending
    }

    /// The token of the current phase's publish, if it is published and
    /// not ended: the execution a worker may hold.
    pub(super) fn published(&self) -> Option<DispatchToken> {
        let open = matches!(
            self.phase_status,
            PhaseStatus::NotStarted | PhaseStatus::Running
        );
        (open && !self.row.dispatch_pending && self.row.nonce != 0).then_some(DispatchToken {
            job_id: self.row.id,
            seq: self.row.phase_seq as u32,
            attempt: self.row.attempt as u32,
            nonce: self.row.nonce as u64,
        })
    }

    /// The status it would have without a pause: what decides which spawn
    /// batches it may still send.
    pub(super) fn unpaused_status(&self) -> JobStatus {
        if self.status == JobStatus::Paused {
            let first = self.row.phase_seq == 1 && self.row.attempt == 1;
            self.phase_status.resumed_job_status(first)
        } else {
            self.status
        }
    }

    /// Whether its current fan-out has children that have not ended.
    pub(super) fn open_children(&self) -> bool {
        let c = self.counts();
        self.row.fanout_seq.is_some() && c.total > c.terminal()
    }

    /// Forgets the fan-out: a job run again starts without one.
    pub(super) fn close_fanout(&mut self) {
        self.row.fanout_seq = None;
        self.row.resume_phase = None;
        self.row.children_expected = None;
        self.row.children_total = 0;
        self.row.children_completed = 0;
        self.row.children_failed = 0;
        self.row.children_cancelled = 0;
        self.dirty = true;
    }

    pub(super) fn counts(&self) -> ChildCounts {
        ChildCounts {
            total: self.row.children_total as u64,
            completed: self.row.children_completed as u64,
            failed: self.row.children_failed as u64,
            cancelled: self.row.children_cancelled as u64,
        }
    }

    pub(super) fn queue_phase(&mut self, phase: String, delay_ms: i64) {
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

    pub(super) fn open_fanout(&mut self, seq: i32) {
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
pub(in crate::outcome) struct Writes {
    pub(in crate::outcome) jobs: JobWrites,
    pub(in crate::outcome) phases: PhaseRows,
    pub(in crate::outcome) logs: Vec<(Uuid, String, String)>,
    pub(in crate::outcome) tree: Vec<(Uuid, TreeCounts)>,
    /// Subtree walks: (job, action, reason).
    pub(in crate::outcome) walks: Vec<(Uuid, Action, String)>,
    /// Events for watchers (besides the tree counts, which the store
    /// writes from the tree deltas).
    pub(in crate::outcome) events: NewEvents,
    /// Moves of the tree's counts by phase: (root, phase, status, delta),
    /// sorted, none zero.
    pub(in crate::outcome) phase_counts: Vec<(Uuid, String, JobStatus, i64)>,
}

impl Plan {
    /// The changed jobs, one vector per column, with the phase history,
    /// log lines, non-zero tree deltas and subtree walks to record. A paused
    /// job's newly queued phase is held first.
    pub(in crate::outcome) fn into_writes(mut self) -> Writes {
        self.hold_paused();
        let mut w = JobWrites::default();
        let mut events = NewEvents::default();
        for (job_id, level, message) in &self.logs {
            if let Some(job) = self.jobs.get(job_id) {
                events.push(
                    job.row.root_id,
                    *job_id,
                    EventKind::Log,
                    to_value(&LogLine {
                        level: level.clone(),
                        message: message.clone(),
                    }),
                );
            }
        }
        let mut by_phase = std::mem::take(&mut self.phase_counts);
        for job in self.jobs.into_values().filter(|j| j.dirty) {
            if (job.locked.0, job.locked_phase.as_str()) != (job.status, job.row.phase.as_str()) {
                let root = job.row.root_id;
                *by_phase
                    .entry((root, job.locked_phase.clone(), job.locked.0))
                    .or_default() -= 1;
                *by_phase
                    .entry((root, job.row.phase.clone(), job.status))
                    .or_default() += 1;
            }
            if job.moved() && job.watched() {
                events.push(
                    job.row.root_id,
                    job.row.id,
                    EventKind::Status,
                    to_value(&StatusChange {
                        status: job.status.as_str().to_owned(),
                        phase: job.row.phase.clone(),
                        phase_seq: job.row.phase_seq,
                        attempt: job.row.attempt,
                        phase_status: job.phase_status.as_str().to_owned(),
                        error: job.error.clone(),
                        warning: job.warning.clone(),
                    }),
                );
            }
            if let Some((done, total, message)) = &job.progress
                && (*total > 0 || !message.is_empty())
            {
                events.push(
                    job.row.root_id,
                    job.row.id,
                    EventKind::Progress,
                    to_value(&ProgressChange {
                        done: *done,
                        total: *total,
                        message: message.clone(),
                    }),
                );
            }
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
            w.rerun.push(job.rerun);
            w.lease_holder.push(job.lease_holder);
        }
        let deltas = self
            .tree
            .into_iter()
            .filter(|(_, d)| !d.is_zero())
            .collect();
        Writes {
            jobs: w,
            phases: self.phases,
            logs: self.logs,
            tree: deltas,
            walks: self.walks,
            events,
            phase_counts: by_phase
                .into_iter()
                .filter(|(_, n)| *n != 0)
                .map(|((root, phase, status), n)| (root, phase, status, n))
                .collect(),
        }
    }
}
