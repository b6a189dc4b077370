
/* reconcile: the target's hash pass read by a parallel worker (src/reconcile.c) */
ALTER TABLE acme_migrate.reconcile_runs
	ADD COLUMN parallel_workers integer NOT NULL DEFAULT 0;
COMMENT ON COLUMN acme_migrate.reconcile_runs.parallel_workers IS
	'parallel workers that read a side of the hash pass while the session read the other (1: the target was read by a worker; 0: the session read both sides, or no hash pass)';
