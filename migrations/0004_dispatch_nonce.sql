-- A random nonce per dispatch, so an outcome can only come from the worker
-- that received the task: the dispatch token is (id, phase_seq, attempt,
-- nonce), and anyone who can publish on the vhost but never saw the task
-- cannot guess it.
--
-- jobs.nonce: the nonce of the current phase's latest publish (0 until the
-- relay publishes it; a report carrying 0 never matches a published task).
alter table jobs add column nonce bigint not null default 0;
-- phases.nonce: the nonce a finished execution ran under, so a spawn batch
-- that an earlier attempt of the current phase sent, applied late, can still
-- be recognised as genuine.
alter table phases add column nonce bigint;
