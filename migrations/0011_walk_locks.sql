-- A subtree walk is now claimed with a session-level advisory lock held by
-- the sweeper's own connection: Postgres releases it the moment that
-- session ends, so a coordinator killed mid-walk frees its walk at once
-- instead of after a claim timeout. The timeout column goes.
alter table controls drop column claimed_until;
