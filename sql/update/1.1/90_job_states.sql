-- The states of a job as the library defines them (catalog.c), so that SQL
-- reads the same definition as C: which states mean the copy is complete,
-- which are final, and what entering each does to jobs.finished_at.
CREATE FUNCTION acme_migrate.job_states(OUT state text,
	OUT copy_complete boolean, OUT final boolean, OUT finished_at text)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'acme_migrate_job_states'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION acme_migrate.job_states() IS
	'states of a job: copy_complete (dependents may start), final (nothing leads out), finished_at (set, kept or cleared on entering)';
GRANT EXECUTE ON FUNCTION acme_migrate.job_states() TO PUBLIC;
