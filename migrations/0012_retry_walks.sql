-- A retry of a job that ended while waiting on its fan-out (stop_all, or
-- cancelled) reopens it and walks its failed and cancelled children,
-- running each again: a 'retry' walk. While one is recorded for a job, its
-- fan-in is held (the applier looks it up by job_id, only when a fan-in
-- would fire).
alter table controls drop constraint controls_action_check;
alter table controls add constraint controls_action_check
    check (action in ('cancel', 'pause', 'resume', 'retry'));
create index controls_job on controls (job_id);
