/* row, table and key-range hashing (src/hash.c) */

CREATE FUNCTION acme_migrate_row_hash(record)
RETURNS uuid
AS 'MODULE_PATHNAME', 'acme_migrate_row_hash'
LANGUAGE C STRICT STABLE PARALLEL SAFE;
COMMENT ON FUNCTION acme_migrate_row_hash(record) IS
	'128-bit XXH3 hash of a row''s column values in their stored representation, as a uuid (big-endian); independent of session settings and platform; NULL for a NULL record';

CREATE FUNCTION acme_migrate_table_hash(
	rel regclass,
	OUT row_count bigint,
	OUT hash uuid)
RETURNS record
AS 'MODULE_PATHNAME', 'acme_migrate_table_hash'
LANGUAGE C STRICT STABLE PARALLEL RESTRICTED;
COMMENT ON FUNCTION acme_migrate_table_hash(regclass) IS
	'row count and order-independent hash of a relation: the sum of its row hashes modulo 2^128, as a uuid';

CREATE FUNCTION acme_migrate_range_hashes(
	rel regclass,
	chunks integer DEFAULT 64,
	bounds jsonb DEFAULT NULL,
	OUT lo jsonb,
	OUT hi jsonb,
	OUT rows bigint,
	OUT hash uuid)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'acme_migrate_range_hashes'
LANGUAGE C CALLED ON NULL INPUT STABLE PARALLEL RESTRICTED ROWS 64;
COMMENT ON FUNCTION acme_migrate_range_hashes(regclass, integer, jsonb) IS
	'row count and hash per primary key range lo <= key < hi (NULL: unbounded; bounds are jsonb objects of the key columns, in the primary key''s order); ranges come from sampled key quantiles, or from bounds, a jsonb array of key objects such as the hi values of another call';
