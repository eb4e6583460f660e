-- Listing jobs (GET /v1/jobs) by index, and idempotent submission.
--
-- Job ids are UUID v7 (time first), so `order by id desc` is newest first
-- and a page's last id is its keyset cursor. The root indexes are partial
-- on `parent_id is null`: children (most rows: a tree can hold millions)
-- have no entry in them, so listing roots, filtered or not, never reads a
-- child. Each ends in `id` so the filter is an equality prefix and the
-- page is a range scan in id order, stopped at the limit.

-- roots, newest first
create index jobs_roots on jobs (id) where parent_id is null;
-- roots by status (`status=failed`), newest first
create index jobs_roots_status on jobs (status, id) where parent_id is null;
-- roots by kind, newest first
create index jobs_roots_kind on jobs (kind, id) where parent_id is null;
-- roots by kind and status, newest first
create index jobs_roots_kind_status on jobs (kind, status, id) where parent_id is null;

-- the jobs of one tree, newest first (`root=`); it serves every lookup by
-- root_id that the old single-column index did, at the same write cost
create index jobs_root_id on jobs (root_id, id);
drop index jobs_root;

-- `parent=` pages a parent's children with the existing jobs_children
-- index (parent_id, parent_seq, child_index), in spawn order.

-- Idempotency keys of POST /v1/jobs: a key names one submission for 24 h.
-- The row and the job it names are inserted in one transaction, so
-- concurrent submissions with one key make one job.
create table idempotency_keys (
    -- the client's Idempotency-Key header (1-255 printable ASCII bytes)
    key          text primary key,
    -- the job the first submission made
    job_id       uuid not null,
    -- sha256 of the normalised submission (kind, input, resolved options):
    -- the same key with another request is refused, not replayed
    request_hash bytea not null,
    -- when the key was first used; it expires 24 h later and is pruned
    created_at   timestamptz not null default now()
);
-- the pruning scan: oldest keys first
create index idempotency_keys_created on idempotency_keys (created_at);
