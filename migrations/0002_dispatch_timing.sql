-- When the relay last published a job's current phase: the start of the
-- per-child latency (dispatched -> outcome applied) and the end of the
-- fan-in latency (last child applied -> next phase dispatched).
alter table jobs add column dispatched_at timestamptz;
