-- Jobs, their phase history, fan-in counters, and the dispatch queue.
--
-- The jobs table is also the dispatch queue (the transactional outbox): a
-- row with dispatch_pending = true has a committed phase that must be
-- published; the relay publishes it with a confirm and only then clears the
-- flag, so a dispatch that committed is published even if the coordinator
-- dies right after the commit.

create table jobs (
    id               uuid primary key,
    root_id          uuid not null,
    parent_id        uuid,
    -- the parent's phase number that spawned this child, and its spawn index
    parent_seq       integer,
    child_index      bigint,
    kind             text not null,
    status           text not null default 'pending',
    input            bytea not null,
    output           bytea,
    error            text,
    warning          text,
    -- the current phase: its name, number, attempt (the dispatch token is
    -- (id, phase_seq, attempt)) and status
    phase            text not null,
    phase_seq        integer not null default 1,
    attempt          integer not null default 1,
    phase_status     text not null default 'not_started',
    phase_started_at timestamptz,
    -- checkpoint state of the current phase (MessagePack)
    state            bytea,
    max_attempts     integer not null,
    -- outbox: publish this row's current phase once available_at has come
    dispatch_pending boolean not null default true,
    available_at     timestamptz not null default now(),
    -- fan-in of the current fan-out (the one spawned by phase fanout_seq)
    fanout_seq          integer,
    resume_phase        text,
    children_expected   bigint,
    children_total      bigint not null default 0,
    children_completed  bigint not null default 0,
    children_failed     bigint not null default 0,
    children_cancelled  bigint not null default 0,
    max_child_failures  integer,
    failure_action      text not null default 'continue',
    -- the latest progress report of the running phase
    progress_done    bigint,
    progress_total   bigint,
    progress_message text,
    created_at       timestamptz not null default now(),
    updated_at       timestamptz not null default now(),
    finished_at      timestamptz
);

-- children of a parent, in spawn order, for paging results after a fan-in
create index jobs_children on jobs (parent_id, parent_seq, child_index) where parent_id is not null;
-- the relay's scan: only rows that still need publishing
create index jobs_dispatch on jobs (available_at) where dispatch_pending;
create index jobs_root on jobs (root_id);

-- One row per finished phase execution, for the status API.
create table phases (
    job_id      uuid not null,
    seq         integer not null,
    attempt     integer not null,
    name        text not null,
    status      text not null,
    error       text,
    finished_at timestamptz not null default now(),
    primary key (job_id, seq, attempt)
);

-- Spawn batches already applied: a redelivered or re-executed batch is a no-op.
create table spawn_batches (
    job_id   uuid not null,
    seq      integer not null,
    batch    integer not null,
    children integer not null,
    primary key (job_id, seq, batch)
);

-- Counts by status for a whole tree: a tree's status is one indexed read.
create table tree_summary (
    root_id   uuid primary key,
    pending   bigint not null default 0,
    running   bigint not null default 0,
    waiting   bigint not null default 0,
    paused    bigint not null default 0,
    completed bigint not null default 0,
    failed    bigint not null default 0,
    cancelled bigint not null default 0,
    updated_at timestamptz not null default now()
);

create table job_logs (
    id      bigserial primary key,
    job_id  uuid not null,
    at      timestamptz not null default now(),
    level   text not null,
    message text not null
);
create index job_logs_job on job_logs (job_id, id);

-- Durable counters that survive coordinator restarts (fenced outcomes...).
create table counters (
    name  text primary key,
    value bigint not null default 0
);
