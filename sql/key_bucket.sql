--
-- acme_migrate.key_bucket: the bucket of a key, as reconcile's hash pass
-- puts it, computed by SQL (on the Citus shards: test/t/060_citus.pl).
-- Checked against the same arithmetic written out in SQL from PostgreSQL's
-- own type hash functions (hashint4, hashint8, hashtext, uuid_hash):
-- hash_combine over the key's values, then murmurhash32's finalizer, then
-- the low bits.
--
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS acme_migrate;
CREATE SCHEMA kb;

-- uint32 arithmetic in bigint (products in numeric)
CREATE FUNCTION kb.u32(h integer) RETURNS bigint IMMUTABLE LANGUAGE sql
	AS $$ SELECT (h::bigint + 4294967296) % 4294967296 $$;
CREATE FUNCTION kb.combine(a bigint, b bigint) RETURNS bigint IMMUTABLE LANGUAGE sql
	AS $$ SELECT a # ((b + 2654435769 + ((a << 6) & 4294967295) + (a >> 2)) % 4294967296) $$;
CREATE FUNCTION kb.mul(a bigint, m bigint) RETURNS bigint IMMUTABLE LANGUAGE sql
	AS $$ SELECT ((a::numeric * m) % 4294967296)::bigint $$;
CREATE FUNCTION kb.mix(h bigint) RETURNS bigint IMMUTABLE LANGUAGE sql
	AS $$ SELECT x3 # (x3 >> 16)
	        FROM (SELECT h # (h >> 16) AS x1) a,
	             LATERAL (SELECT kb.mul(x1, 2246822507) AS x1m) b,
	             LATERAL (SELECT kb.mul(x1m # (x1m >> 13), 3266489909) AS x3) c $$;
CREATE FUNCTION kb.bucket(n integer, VARIADIC hashes integer[]) RETURNS integer
	IMMUTABLE LANGUAGE sql AS $$
	WITH RECURSIVE c(i, h) AS (
		SELECT 0, 0::bigint
		UNION ALL
		SELECT i + 1, kb.combine(h, kb.u32(hashes[i + 1])) FROM c
		 WHERE i < pg_catalog.cardinality(hashes))
	SELECT (kb.mix(h) & (n - 1))::integer FROM c ORDER BY i DESC LIMIT 1 $$;

-- single keys of several types, and a composite (integer, text) key:
-- mismatches against the oracle, and how many buckets the keys fell in
SELECT count(*) FILTER (WHERE acme_migrate.key_bucket(1024, g) <> kb.bucket(1024, hashint4(g))) AS int4_bad,
       count(*) FILTER (WHERE acme_migrate.key_bucket(4096, g::bigint * 1000003) <>
                              kb.bucket(4096, hashint8(g::bigint * 1000003))) AS int8_bad,
       count(*) FILTER (WHERE acme_migrate.key_bucket(4096, 'key-' || g) <>
                              kb.bucket(4096, hashtext('key-' || g))) AS text_bad,
       count(*) FILTER (WHERE acme_migrate.key_bucket(256, md5(g::text)::uuid) <>
                              kb.bucket(256, uuid_hash(md5(g::text)::uuid))) AS uuid_bad,
       count(*) FILTER (WHERE acme_migrate.key_bucket(4096, g / 3, 'n' || g % 3) <>
                              kb.bucket(4096, hashint4(g / 3), hashtext('n' || g % 3))) AS composite_bad,
       count(DISTINCT acme_migrate.key_bucket(4096, 'key-' || g)) > 3000 AS text_spread,
       count(DISTINCT acme_migrate.key_bucket(1, g)) AS one_bucket
  FROM generate_series(-5000, 5000) g;

-- the order of a composite key's values matters, as in the hash pass
SELECT acme_migrate.key_bucket(65536, 1, 'a'::text) <> acme_migrate.key_bucket(65536, 'a'::text, 1) AS ordered;

-- VARIADIC array: the same as the values one by one
SELECT acme_migrate.key_bucket(4096, VARIADIC ARRAY['a', 'b', 'c']) =
       acme_migrate.key_bucket(4096, 'a'::text, 'b'::text, 'c'::text) AS variadic_same;

-- text: its bytes, whatever the (deterministic) collation; equal keys under
-- one collation land together
SELECT count(*) FILTER (WHERE acme_migrate.key_bucket(4096, t COLLATE "C") <>
                              acme_migrate.key_bucket(4096, t COLLATE "en-x-icu")) AS collation_bad,
       count(*) FILTER (WHERE acme_migrate.key_bucket(4096, t COLLATE "C") <>
                              acme_migrate.key_bucket(4096, t COLLATE "POSIX")) AS posix_bad
  FROM (SELECT 'Key ' || g || ' é' AS t FROM generate_series(1, 2000) g) x;
-- varchar and bpchar hash as their types do (bpchar without trailing blanks)
SELECT acme_migrate.key_bucket(4096, 'ab  '::char(4)) = acme_migrate.key_bucket(4096, 'ab'::char(2)) AS bpchar_same,
       acme_migrate.key_bucket(4096, 'ab'::varchar) = kb.bucket(4096, hashtext('ab')) AS varchar_same;

-- NULL key values (and NULL elements of a VARIADIC array): NULL, which
-- reconcile reports as a null_key
SELECT acme_migrate.key_bucket(1024, NULL::text) IS NULL AS null_key,
       acme_migrate.key_bucket(1024, 1, NULL::text) IS NULL AS null_part,
       acme_migrate.key_bucket(1024, VARIADIC ARRAY[1, NULL]) IS NULL AS null_element,
       acme_migrate.key_bucket(NULL, 1) IS NULL AS null_nbuckets;

-- errors: nbuckets not a power of two, no key, a type without a hash
-- function, a nondeterministic collation
SELECT acme_migrate.key_bucket(1000, 1);
SELECT acme_migrate.key_bucket(0, 1);
SELECT acme_migrate.key_bucket(1024, VARIADIC '{}'::integer[]);
SELECT acme_migrate.key_bucket(1024, '(1,1)'::point);
CREATE COLLATION kb.ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
SELECT acme_migrate.key_bucket(1024, 'a'::text COLLATE kb.ci);
-- an untyped literal has no hash function
SELECT acme_migrate.key_bucket(1024, 'a');

-- what it is declared as
SELECT p.provolatile, p.proparallel, p.proisstrict, pg_get_function_identity_arguments(p.oid)
  FROM pg_proc p WHERE p.oid = 'acme_migrate.key_bucket'::regproc;

DROP SCHEMA kb CASCADE;
