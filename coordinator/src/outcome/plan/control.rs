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
        let (phase_event, recorded) = match job.phase_status {
            PhaseStatus::NotStarted | PhaseStatus::Paused => {
                (Some(PhaseEvent::Skip), Some(PhaseStatus::Skipped))
            }
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
        let phase = phase.map_or_else(|| job.row.phase.clone(), str::to_owned);
        if !self.step(id, JobEvent::Rerun, None) {
            return Err(format!("job {id} cannot be retried now"));
        }
        if let Some(job) = self.jobs.get_mut(&id) {
            job.queue_phase(phase, 0);
            job.close_fanout();
            job.rerun = true;
            job.error = None;
            job.warning = None;
            self.applied.queued += 1;
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

    /// The executions workers must stop: cancelled or held phases that were
    /// published, and executions whose report was fenced because they are
    /// no longer current.
    pub(in crate::outcome) fn stops(&self) -> &[DispatchToken] {
        &self.stops
    }
}
