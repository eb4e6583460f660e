-- Where a tree's jobs are, by phase and status: GET /v1/jobs/{id}/tree
-- reads one small set of rows (a few per phase), never the jobs. The
-- applier adds each batch's moves in its transaction, after the tree's
-- summary row is locked.
create table tree_phases (
    root_id uuid not null,
    phase   text not null,
    status  text not null check (
        status in ('pending', 'running', 'waiting', 'paused', 'completed', 'failed', 'cancelled')),
    n       bigint not null default 0,
    primary key (root_id, phase, status)
);
