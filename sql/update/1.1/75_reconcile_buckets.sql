
/* reconcile: the hash pass for keys of any type (hash buckets) */
ALTER TABLE acme_migrate.reconcile_runs
	DROP CONSTRAINT reconcile_runs_method_check,
	ADD CONSTRAINT reconcile_runs_method_check
		CHECK (method OPERATOR(pg_catalog.=) ANY (ARRAY['merge', 'hash_ranges', 'hash_buckets', 'sample']));
COMMENT ON COLUMN acme_migrate.reconcile_runs.method IS
	'merge (both sides in key order), hash_ranges (a single integer key: hash sums per key range first, then a merge of the ranges that differ), hash_buckets (any other hashable key: hash sums per bucket of key hashes first, then the rows of differing buckets sorted and merged) or sample';
COMMENT ON COLUMN acme_migrate.reconcile_runs.ranges_hashed IS
	'hash_ranges: key ranges the hash pass cut the key span into; hash_buckets: buckets of key hashes';
COMMENT ON COLUMN acme_migrate.reconcile_runs.ranges_merged IS
	'hash_ranges: runs of consecutive key ranges whose hash sums differed, each merged in key order; hash_buckets: buckets whose hash sums differed, their rows merged in key order';
