-- Operator control of a subtree (cancel, pause, resume). The API applies
-- the action to the job it names at once, in the same transaction that
-- records it here; a sweeper then walks the job's descendants level by
-- level, in bounded batches, and deletes the row when the walk is done. A
-- coordinator that dies mid-walk leaves the row claimed until
-- claimed_until passes, and another (or the restarted one) walks again:
-- every step is idempotent. stop_all (and a parent failing with children
-- still open) records a 'cancel' of the descendants only (with_self false).
create table controls (
    id            bigserial primary key,
    job_id        uuid not null,
    action        text not null check (action in ('cancel', 'pause', 'resume')),
    with_self     boolean not null default true,
    reason        text not null default '',
    created_at    timestamptz not null default now(),
    claimed_until timestamptz
);
