
/*
 * Citus (issue 13, item 2): reconcile sums the buckets of keys of any type
 * on a distributed table's shards, and reads only the rows of differing
 * buckets through Citus (src/reconcile.c).  key_bucket is the bucket of a
 * key as the session's own hash pass computes it, so that it can be
 * computed by SQL on every node.
 */
CREATE FUNCTION acme_migrate.key_bucket(nbuckets integer, VARIADIC key "any")
RETURNS integer
AS 'MODULE_PATHNAME', 'acme_migrate_key_bucket'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION acme_migrate.key_bucket(integer, "any") IS
	'the bucket (0 to nbuckets - 1, nbuckets a power of two) of a key given as its column values: their types'' hash functions, combined in order, as reconcile''s hash pass buckets keys; text-like values hash by their bytes (deterministic collations; a nondeterministic one is an error); NULL for a NULL key value';
COMMENT ON COLUMN acme_migrate.reconcile_runs.remote_mode IS
	'how a side stored elsewhere was read: for a source that is a foreign table, remote_hashes (range hashes computed by acme_migrate on its server, rows fetched only for ranges that differ), pushdown (the same with md5 of the row text, built-in functions only), full_fetch (every row fetched, why in remote_note); citus_shards (a side is a Citus distributed table: the hash sums of both sides'' key ranges or key buckets computed on the shards, rows read only for ranges or buckets that differ); NULL otherwise';
