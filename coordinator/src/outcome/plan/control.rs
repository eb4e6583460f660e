//! An operator's moves on locked jobs: cancel, pause, resume, and running
//! an ended job again. Each is a state-machine step like any outcome, so
//! the fan-in counters and the tree's counts move with it: a cancelled
//! child counts as ended into its parent's fan-in, and a rerun child takes
//! its ending back out.

use tributary_common::job::DispatchToken;
use tributary_common::status::{JobEvent, JobStatus, PhaseEvent, PhaseStatus};
use uuid::Uuid;

use super::Plan;
use crate::store::Action;

impl Plan {
    /// Applies `action` to the locked job `id`; a job it does not apply to
    /// (already ended, already paused, not paused) is left alone, so every
    /// action is idempotent.
    pub(in crate::outcome) fn control(&mut self, id: Uuid, action: Action, reason: &str) {
        match action {
            Action::Cancel => self.cancel(id, reason),
            Action::Pause => self.pause(id),
            Action::Resume => self.resume(id),
            Action::Retry => self.retry_child(id),
        }
    }

    /// Why an operator may not apply `action` to `id` itself: a resume of
    /// a job whose parent is paused would run it while its tree is held.
    pub(in crate::outcome) fn steer_refusal(&self, id: Uuid, action: Action) -> Option<String> {
        let job = self.jobs.get(&id)?;
        let parent_id = job.row.parent_id?;
        let parent = self.jobs.get(&parent_id)?;
        (action == Action::Resume
            && job.status == JobStatus::Paused
            && parent.status == JobStatus::Paused)
            .then(|| {
                format!("its parent {parent_id} is paused: resume the parent (or the root) instead")
            })
    }

    /// Whether an operator's `action` on `id` needs a walk of its
    /// descendants: not when the job already stands where the action
    /// leads (its own walk was recorded when it got there), so repeating
    /// an action costs nothing. A cancel of a job that ended otherwise
    /// still walks: children it did not wait for may be open.
    pub(in crate::outcome) fn needs_walk(&self, id: Uuid, action: Action) -> bool {
        let Some(job) = self.jobs.get(&id) else {
            return false;
        };
        match action {
            Action::Cancel => job.status != JobStatus::Cancelled,
            Action::Pause => !job.status.is_terminal() && job.status != JobStatus::Paused,
            Action::Resume => job.status == JobStatus::Paused,
            Action::Retry => false,
        }
    }

    /// A retry walk's step: runs a failed or cancelled child of a reopened
    /// job again, if it belongs to the fan-out the job waits on (a child of
    /// an earlier fan-out would count nowhere) and the job still waits.
    fn retry_child(&mut self, id: Uuid) {
        let Some(job) = self.jobs.get(&id) else {
            return;
        };
        let Some(parent) = job.row.parent_id.and_then(|p| self.jobs.get(&p)) else {
            return;
        };
        let counted =
            parent.row.fanout_seq.is_some() && parent.row.fanout_seq == job.row.parent_seq;
        if counted && matches!(parent.status, JobStatus::Waiting | JobStatus::Paused) {
            // A refusal (the job ended otherwise meanwhile) leaves it be.
            let _ = self.rerun(id, None);
        }
    }

    /// A current report from a job whose parent was cancelled (or failed
    /// with children open) or paused before the subtree walk reached the
    /// job: the walk's move is made here, under the same row locks, so
    /// nothing below a cancelled job completes after the cancel, and
    /// nothing below a paused one starts. The report is then fenced (or,
    /// for a pause, only a `Started` is held: running phases run on).
    pub(in crate::outcome) fn follow_parent(&mut self, id: Uuid, starting: bool) {
        let Some(parent_id) = self.jobs.get(&id).and_then(|j| j.row.parent_id) else {
            return;
        };
        let Some(parent) = self.jobs.get(&parent_id).map(|p| p.status) else {
            return;
        };
        match parent {
            JobStatus::Cancelled | JobStatus::Failed => {
                let reason = format!("cancelled: ancestor {parent_id} {}", parent.as_str());
                self.cancel(id, &reason);
            }
            JobStatus::Paused if starting => self.pause(id),
            _ => {}
        }
    }

    /// Ends an open job as `cancelled`. A queued phase is skipped; a running
    /// one is abandoned (its worker is told to stop, and whatever it still
    /// reports is fenced). The job counts into its parent as cancelled.
    fn cancel(&mut self, id: Uuid, reason: &str) {
        let Some(job) = self.jobs.get(&id) else {
            return;
        };
        if job.status.is_terminal() {
            return;
        }
        // A phase that never ran stays on the job row as `skipped` (like
        // a completed last phase, it needs no history row: a cancel walk
        // writes one row per job, not two); an abandoned execution did run
        // and goes into the history with the reason.
        let (phase_event, recorded) = match job.phase_status {
            PhaseStatus::NotStarted | PhaseStatus::Paused => (Some(PhaseEvent::Skip), None),
            PhaseStatus::Running => (Some(PhaseEvent::Abandon), Some(PhaseStatus::Failed)),
            _ => (None, None),
        };
        let published = job.published();
        if !self.step(id, JobEvent::Cancel, phase_event) {
            return;
        }
        if let Some(token) = published {
            self.stops.push(token);
        }
        if let Some(status) = recorded {
            self.record_phase(id, status, Some(reason.to_owned()));
        }
        if let Some(job) = self.jobs.get_mut(&id) {
            job.error = Some(reason.to_owned());
        }
        self.child_ended(id, JobStatus::Cancelled);
    }

    /// Holds a job's dispatch: a queued phase is held (and its task, if
    /// already published, is dropped by the worker that gets it); a running
    /// phase runs on and its outcome is kept.
    fn pause(&mut self, id: Uuid) {
        let Some(job) = self.jobs.get(&id) else {
            return;
        };
        if job.status.is_terminal() || job.status == JobStatus::Paused {
            return;
        }
        let held = job.phase_status == PhaseStatus::NotStarted;
        let published = job.published();
        if !self.step(id, JobEvent::Pause, held.then_some(PhaseEvent::Pause)) {
            return;
        }
        if held {
            if let Some(token) = published {
                self.stops.push(token);
            }
            if let Some(job) = self.jobs.get_mut(&id) {
                job.row.dispatch_pending = false;
            }
        }
    }

    /// Releases a paused job: a held phase is queued again (with a fresh
    /// publish), a running one runs on, a sealed fan-out is waited on again
    /// and fires at once if its children ended meanwhile.
    fn resume(&mut self, id: Uuid) {
        let Some(job) = self.jobs.get(&id) else {
            return;
        };
        if job.status != JobStatus::Paused {
            return;
        }
        let first = job.row.phase_seq == 1 && job.row.attempt == 1;
        let to = job.phase_status.resumed_job_status(first);
        let held = job.phase_status == PhaseStatus::Paused;
        if !self.step(id, JobEvent::Resume(to), held.then_some(PhaseEvent::Resume)) {
            return;
        }
        if held && let Some(job) = self.jobs.get_mut(&id) {
            job.row.dispatch_pending = true;
            self.applied.queued += 1;
        }
        if to == JobStatus::Waiting {
            self.fan_in_check.push(id);
        }
    }

    /// Runs a failed or cancelled job again from `phase` (default: the phase
    /// it ended in) as a new phase with a fresh attempt budget; every report
    /// of its earlier executions is fenced. Its parent's fan-in takes the
    /// ending back out, so the job counts again when it ends. Refuses (with
    /// the reason) a job that has not ended in failure or cancellation, or
    /// whose parent has ended (nothing would count it).
    pub(in crate::outcome) fn rerun(
        &mut self,
        id: Uuid,
        phase: Option<&str>,
    ) -> Result<(), String> {
        let Some(job) = self.jobs.get(&id) else {
            return Err(format!("job {id} does not exist"));
        };
        let old = job.status;
        if !matches!(old, JobStatus::Failed | JobStatus::Cancelled) {
            return Err(format!(
                "job {id} is {}: only a failed or cancelled job can be retried",
                old.as_str()
            ));
        }
        let parent = job.row.parent_id.zip(job.row.parent_seq);
        if let Some((parent_id, _)) = parent
            && let Some(p) = self.jobs.get(&parent_id)
            && p.status.is_terminal()
        {
            return Err(format!(
                "its parent {parent_id} is {}, so nothing would count this job: retry the parent (or the root) instead",
                p.status.as_str()
            ));
        }
        // A job that ended while waiting on its fan-out (stop_all, or a
        // cancel) waits again, and its failed and cancelled children run
        // again; the rest of its children's work is kept.
        let reopen = phase.is_none()
            && job.phase_status == PhaseStatus::Completed
            && job.row.fanout_seq.is_some()
            && job.row.children_expected.is_some();
        if reopen {
            if !self.step(id, JobEvent::Reopen, None) {
                return Err(format!("job {id} cannot be retried now"));
            }
            self.walks.push((id, Action::Retry, String::new()));
        } else {
            let phase = phase.map_or_else(|| job.row.phase.clone(), str::to_owned);
            // A phase cancelled before it ran was left on the row only;
            // the new phase takes the row, so the skipped one goes into
            // the history first.
            if job.phase_status == PhaseStatus::Skipped {
                self.record_phase(
                    id,
                    PhaseStatus::Skipped,
                    Some("cancelled before it ran".to_owned()),
                );
            }
            if !self.step(id, JobEvent::Rerun, None) {
                return Err(format!("job {id} cannot be retried now"));
            }
            if let Some(job) = self.jobs.get_mut(&id) {
                job.queue_phase(phase, 0);
                job.close_fanout();
                self.applied.queued += 1;
            }
        }
        if let Some(job) = self.jobs.get_mut(&id) {
            job.rerun = true;
            job.error = None;
            job.warning = None;
        }
        let mut held = false;
        if let Some((parent_id, seq)) = parent
            && let Some(p) = self.jobs.get_mut(&parent_id)
        {
            held = p.status == JobStatus::Paused;
            if p.row.fanout_seq == Some(seq) {
                match old {
                    JobStatus::Failed => p.row.children_failed -= 1,
                    _ => p.row.children_cancelled -= 1,
                }
                p.dirty = true;
            }
        }
        // Under a paused parent the tree is held: the job waits for the
        // resume like its siblings (its new phase is held at the end).
        if held {
            self.step(id, JobEvent::Pause, None);
        }
        Ok(())
    }

    /// Records a walk of `id`'s descendants for the sweeper, in this
    /// batch's transaction.
    pub(in crate::outcome) fn walk(&mut self, id: Uuid, action: Action, reason: &str) {
        if self.jobs.contains_key(&id) {
            self.walks.push((id, action, reason.to_owned()));
        }
    }

    /// A paused job's newly queued phase (a next phase, a retry) is held
    /// instead: it is not published until resume.
    pub(in crate::outcome) fn hold_paused(&mut self) {
        for job in self.jobs.values_mut() {
            if job.dirty
                && job.status == JobStatus::Paused
                && job.phase_status == PhaseStatus::NotStarted
                && let Ok(held) = job.phase_status.apply(PhaseEvent::Pause)
            {
                job.phase_status = held;
                job.row.dispatch_pending = false;
            }
        }
    }

    /// The executions workers must stop, each once: cancelled or held
    /// phases that were published, and executions whose report was fenced
    /// because they are no longer current.
    pub(in crate::outcome) fn stops(&self) -> Vec<DispatchToken> {
        let mut stops = self.stops.clone();
        stops.sort_unstable_by_key(|t| (t.job_id, t.seq, t.attempt, t.nonce));
        stops.dedup();
        stops
    }
}
