
/*
 * Workers and drop (issue 9, finding 8): workers are capped per role and in
 * all (acme_migrate.max_workers_per_role, acme_migrate.max_workers_total),
 * notice a pause, cancel or alter within a second even while they sleep,
 * and acme_migrate_drop stops them before it drops the job.  The functions
 * keep their signatures; their descriptions change.
 */
COMMENT ON FUNCTION acme_migrate_start(text, integer) IS
	'run the job in background workers (the key space split into ranges they share); returns the number of workers launched, which acme_migrate.max_workers, acme_migrate.max_workers_per_role and acme_migrate.max_workers_total may make fewer than asked for';
COMMENT ON FUNCTION acme_migrate_pause(text) IS
	'pause the job: its workers stop after their current batch, or within a second when they are sleeping';
COMMENT ON FUNCTION acme_migrate_resume(text) IS
	'resume a paused or failed job with the workers it had (or fewer, under the worker limits); returns the number of workers launched';
COMMENT ON FUNCTION acme_migrate_cancel(text) IS
	'cancel the job for good: its workers stop after their current batch, or within a second when they are sleeping; what was copied stays';
COMMENT ON FUNCTION acme_migrate_drop(text) IS
	'forget a job and its history (the target keeps its rows); its workers are stopped first; refused while a session runs it or other jobs depend on it';
