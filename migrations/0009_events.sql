-- The durable event log behind GET /v1/jobs/{id}/events (Server-Sent
-- Events). The applier writes it in the transaction that made the change,
-- after locking the tree's tree_summary row: events of one tree are
-- therefore numbered in commit order, and `id` is a gap-tolerant keyset
-- that a client resumes from with Last-Event-ID. Kinds:
--   counts    the tree's counts by status after a batch (one per tree per batch)
--   status    a root's, a parent's or a failed job's status or phase moved
--   progress  a phase reported progress
--   log       a log line
-- Rows older than the retention (TRIBUTARY_EVENTS_RETENTION_SECS) are
-- pruned in batches.
create table events (
    id      bigserial primary key,
    root_id uuid not null,
    job_id  uuid,
    kind    text not null check (kind in ('counts', 'status', 'progress', 'log')),
    payload jsonb not null,
    at      timestamptz not null default now()
);
create index events_by_root on events (root_id, id);
create index events_by_age on events (at);
