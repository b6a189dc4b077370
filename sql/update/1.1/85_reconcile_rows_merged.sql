
/* reconcile: rows of differing buckets set aside by digest (src/reconcile.c) */
ALTER TABLE acme_migrate.reconcile_runs
	ADD COLUMN rows_merged bigint;
COMMENT ON COLUMN acme_migrate.reconcile_runs.rows_merged IS
	'hash passes: rows of both sides read again and merged.  With both sides'' places remembered, the rows of differing buckets whose twin (same key, same compared bytes, the key once on each side) is on the other side are set aside unread; NULL for merge and sample runs';
COMMENT ON COLUMN acme_migrate.reconcile_runs.parallel_workers IS
	'parallel workers that read in the hash pass along with the session (1: a worker read the target, or with direct heap reads shared both tables with the session; 0: the session read both sides, or no hash pass)';
