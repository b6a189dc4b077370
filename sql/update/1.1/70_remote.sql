
/*
 * A source on another server (issue 10, item 1): a reconcile whose source
 * is a postgres_fdw foreign table compares range hashes on that server
 * first (src/remote.c) and says how it read the source.
 */
ALTER TABLE acme_migrate.reconcile_runs
	ADD COLUMN remote_mode text
		CHECK (remote_mode OPERATOR(pg_catalog.=) ANY (ARRAY['remote_hashes', 'pushdown', 'full_fetch'])),
	ADD COLUMN remote_rows bigint,
	ADD COLUMN remote_note text;
COMMENT ON COLUMN acme_migrate.reconcile_runs.remote_mode IS
	'how a source that is a foreign table was read: remote_hashes (range hashes computed by acme_migrate on its server, rows fetched only for ranges that differ), pushdown (the same with md5 of the row text, built-in functions only), full_fetch (every row fetched, why in remote_note); NULL for a local source';
COMMENT ON COLUMN acme_migrate.reconcile_runs.remote_rows IS
	'rows fetched from the source''s server: range figures plus the rows of the ranges that differ (NULL when not counted: full_fetch, local source)';
COMMENT ON COLUMN acme_migrate.reconcile_runs.remote_note IS
	'why a foreign source was read in full (remote_mode full_fetch), or NULL';

/* the halves of a row hash as bigints, summed per range on both servers */
CREATE FUNCTION acme_migrate.row_hash_half(hash uuid, half integer)
RETURNS bigint
AS 'MODULE_PATHNAME', 'acme_migrate_row_hash_half'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION acme_migrate.row_hash_half(uuid, integer) IS
	'the first (half 0) or last (half 1) eight bytes of a row hash (acme_migrate_row_hash) as a bigint, big-endian; reconcile sums them per key range on a foreign source''s server and here';
