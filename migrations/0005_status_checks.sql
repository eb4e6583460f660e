-- Statuses are text the state machines in common/src/status.rs write; the
-- database refuses anything else, so a bug or a hand edit cannot store a
-- status no code understands.

-- jobs.status: JobStatus
alter table jobs add constraint jobs_status_known check (
    status in ('pending', 'running', 'waiting', 'paused', 'completed', 'failed', 'cancelled'));
-- jobs.phase_status: PhaseStatus of the current phase
alter table jobs add constraint jobs_phase_status_known check (
    phase_status in ('not_started', 'running', 'paused', 'completed', 'failed', 'skipped'));
-- jobs.failure_action: FailureAction
alter table jobs add constraint jobs_failure_action_known check (
    failure_action in ('continue', 'stop_all', 'mark_warning'));
-- phases.status: PhaseStatus of a finished execution
alter table phases add constraint phases_status_known check (
    status in ('not_started', 'running', 'paused', 'completed', 'failed', 'skipped'));
