
/*
 * Citus (issue 13, item 2): a reconcile where a side is a Citus
 * hash-distributed table, acme_migrate installed on its workers, sums the
 * range buckets of both sides on the shards (src/reconcile.c) and says so.
 */
ALTER TABLE acme_migrate.reconcile_runs
	DROP CONSTRAINT reconcile_runs_remote_mode_check,
	ADD CONSTRAINT reconcile_runs_remote_mode_check
		CHECK (remote_mode OPERATOR(pg_catalog.=) ANY (ARRAY['remote_hashes', 'pushdown', 'full_fetch', 'citus_shards']));
COMMENT ON COLUMN acme_migrate.reconcile_runs.remote_mode IS
	'how a side stored elsewhere was read: for a source that is a foreign table, remote_hashes (range hashes computed by acme_migrate on its server, rows fetched only for ranges that differ), pushdown (the same with md5 of the row text, built-in functions only), full_fetch (every row fetched, why in remote_note); citus_shards (a side is a Citus distributed table: the hash sums of both sides'' key ranges computed on the shards, rows read only for ranges that differ); NULL otherwise';
