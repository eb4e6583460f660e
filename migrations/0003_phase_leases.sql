-- A started phase holds a lease its worker renews with heartbeats; the
-- coordinator retries a phase whose lease ran out (worker gone or hung).
alter table jobs add column lease_until timestamptz;
create index jobs_leases on jobs (lease_until) where phase_status = 'running';
