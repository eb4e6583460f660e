-- The completion rate of a tree over a sliding window, kept in its
-- tree_summary row so GET /v1/jobs/{id}/tree stays one indexed read: two
-- rotating buckets, each a point (when, terminal jobs at that moment). The
-- applier rotates them in the same statement that adds a batch's deltas
-- (store/batch.rs add_tree_deltas); the API reads the rate as the terminal
-- jobs added since the older point, over the time since it
-- (coordinator/src/rate.rs, which says how long the window is).

-- rate_at: when the current bucket began (the row's creation until the
-- first rotation).
alter table tree_summary add column rate_at timestamptz not null default now();
-- rate_done: the tree's terminal jobs (completed + failed + cancelled) at
-- rate_at.
alter table tree_summary add column rate_done bigint not null default 0;
-- rate_prev_at: the start of the bucket before (null until the first
-- rotation).
alter table tree_summary add column rate_prev_at timestamptz;
-- rate_prev_done: the tree's terminal jobs at rate_prev_at.
alter table tree_summary add column rate_prev_done bigint not null default 0;

-- lease_holder: the worker that reported the start of the job's latest
-- execution ("id@host", as the worker sent it in Started.worker, cleaned and
-- at most 128 bytes); null when it did not say. GET /v1/jobs/{id}/waiting
-- names it for running children.
alter table jobs add column lease_holder text;
