--
-- acme_migrate_row_hash: rules of the row hash
--
CREATE EXTENSION IF NOT EXISTS acme_migrate;
SET client_min_messages = warning;
CREATE SCHEMA hash_test;
SET search_path = hash_test, public;

-- pinned values: hashes are stable across machines and versions of the code
SELECT acme_migrate_row_hash(ROW(1::int4, 'a'::text)) AS int_text,
       acme_migrate_row_hash(ROW(NULL::int4)) AS one_null,
       acme_migrate_row_hash(ROW(1.5::float8, true, '2024-01-02'::date)) AS mixed;

-- equal values give equal hashes; a NULL record has no hash
-- (the same values reached another way: read from a table, computed)
CREATE TABLE hash_test.one (a int, b text);
INSERT INTO hash_test.one VALUES (1, 'x');
SELECT acme_migrate_row_hash(ROW(1, 'x')) =
	(SELECT acme_migrate_row_hash(ROW(o.a, o.b)) FROM hash_test.one o) AS equal,
       acme_migrate_row_hash(ROW(1, 'x')) =
	acme_migrate_row_hash(ROW(length('a'), lower('X'))) AS equal_computed,
       acme_migrate_row_hash(ROW(1, 'x')) <> acme_migrate_row_hash(ROW(2, 'x')) AS differ,
       acme_migrate_row_hash(NULL::record) IS NULL AS null_record;

-- NULL, '' and 'NULL' all differ
SELECT count(DISTINCT acme_migrate_row_hash(ROW(v))) AS distinct_hashes
FROM (VALUES (NULL::text), (''), ('NULL'), ('null')) AS t(v);

-- column boundaries are unambiguous
SELECT acme_migrate_row_hash(ROW('a|b', 'c')) <> acme_migrate_row_hash(ROW('a', 'b|c')) AS pipe,
       acme_migrate_row_hash(ROW('ab', '')) <> acme_migrate_row_hash(ROW('a', 'b')) AS empty,
       acme_migrate_row_hash(ROW('a', NULL::text)) <> acme_migrate_row_hash(ROW('a', '')) AS null_empty,
       acme_migrate_row_hash(ROW(NULL::text, 'a')) <> acme_migrate_row_hash(ROW('a', NULL::text)) AS null_position,
       acme_migrate_row_hash(ROW(ARRAY['a', 'b'])) <> acme_migrate_row_hash(ROW(ARRAY['a,b'])) AS array_elements,
       acme_migrate_row_hash(ROW(ARRAY[ARRAY[1, 2], ARRAY[3, 4]])) <> acme_migrate_row_hash(ROW(ARRAY[1, 2, 3, 4])) AS array_dims;

-- same value in the same representation: numeric scale and float sign count;
-- a value read from a table (short varlena header) hashes as one computed
CREATE TABLE hash_test.stored (n numeric);
INSERT INTO hash_test.stored VALUES (12345.678);
SELECT acme_migrate_row_hash(ROW(1.0::numeric)) <> acme_migrate_row_hash(ROW(1.00::numeric)) AS numeric_scale,
       acme_migrate_row_hash(ROW(1.0::numeric)) = acme_migrate_row_hash(ROW(0.4::numeric + 0.6)) AS numeric_same,
       acme_migrate_row_hash(ROW(12345.678::numeric)) =
	(SELECT acme_migrate_row_hash(ROW(s.n)) FROM hash_test.stored s) AS numeric_stored_same,
       acme_migrate_row_hash(ROW('-0'::float8)) <> acme_migrate_row_hash(ROW('0'::float8)) AS float8_zero,
       acme_migrate_row_hash(ROW('-0'::float4)) <> acme_migrate_row_hash(ROW('0'::float4)) AS float4_zero,
       acme_migrate_row_hash(ROW('NaN'::float8)) = acme_migrate_row_hash(ROW('-NaN'::float8)) AS float8_nan,
       acme_migrate_row_hash(ROW('NaN'::float8)) = acme_migrate_row_hash(ROW('Infinity'::float8 - 'Infinity'::float8)) AS float8_computed_nan,
       acme_migrate_row_hash(ROW('NaN'::float4)) = acme_migrate_row_hash(ROW(('Infinity'::float8 - 'Infinity'::float8)::float4)) AS float4_nan,
       acme_migrate_row_hash(ROW('NaN'::numeric)) = acme_migrate_row_hash(ROW('nan'::numeric)) AS numeric_nan,
       acme_migrate_row_hash(ROW('1 day'::interval)) <> acme_migrate_row_hash(ROW('24 hours'::interval)) AS interval_units,
       acme_migrate_row_hash(ROW('{"a": 1.0}'::jsonb)) <> acme_migrate_row_hash(ROW('{"a": 1.00}'::jsonb)) AS jsonb_scale,
       acme_migrate_row_hash(ROW('{"b": 1, "a": 2}'::jsonb)) = acme_migrate_row_hash(ROW('{"a":2,"b":1}'::jsonb)) AS jsonb_canonical,
       acme_migrate_row_hash(ROW('{"b": 1, "a": 2}'::json)) <> acme_migrate_row_hash(ROW('{"a":2,"b":1}'::json)) AS json_as_text,
       acme_migrate_row_hash(ROW(1::int4)) <> acme_migrate_row_hash(ROW(1::int8)) AS int_width;

-- the fast paths give the same bytes as the send functions: a composite
-- hashed through record's own column path equals the same row spelled out
SELECT acme_migrate_row_hash(ROW(ROW(1, 'x')::record)) =
	(SELECT acme_migrate_row_hash(ROW(ROW(o.a, o.b))) FROM hash_test.one o) AS nested;

-- the fast paths produce exactly the send function's bytes: a value hashes
-- like the bytea its send function returns (both are length + bytes)
CREATE TEMP TABLE sendeq (t text, same boolean);
INSERT INTO sendeq
SELECT 'numeric', acme_migrate_row_hash(ROW(v)) = acme_migrate_row_hash(ROW(numeric_send(v)))
FROM unnest(ARRAY[0, 1, -1, 1.0, 1.00, -0.5, 12345.67, 0.0001, -9999.99990, 1e100, -1e-100, 1e300,
                  123456789012345678901234567890.123456789, 'NaN', 'Infinity', '-Infinity',
                  round(1, 80), 1e-130, 10000, 9999, 1e4000]::numeric[]) v;
INSERT INTO sendeq SELECT 'int2', acme_migrate_row_hash(ROW(v)) = acme_migrate_row_hash(ROW(int2send(v)))
FROM unnest(ARRAY[0, 1, -1, 32767, -32768]::int2[]) v;
INSERT INTO sendeq SELECT 'int4', acme_migrate_row_hash(ROW(v)) = acme_migrate_row_hash(ROW(int4send(v)))
FROM unnest(ARRAY[0, 1, -1, 2147483647, -2147483648]::int4[]) v;
INSERT INTO sendeq SELECT 'int8', acme_migrate_row_hash(ROW(v)) = acme_migrate_row_hash(ROW(int8send(v)))
FROM unnest(ARRAY[0, 1, -1, 9223372036854775807, -9223372036854775808]::int8[]) v;
INSERT INTO sendeq SELECT 'float4', acme_migrate_row_hash(ROW(v)) = acme_migrate_row_hash(ROW(float4send(v)))
FROM unnest(ARRAY[0, '-0', 1.5, -1e-40, 'Infinity', '-Infinity', 3.4e38]::float4[]) v;
INSERT INTO sendeq SELECT 'float8', acme_migrate_row_hash(ROW(v)) = acme_migrate_row_hash(ROW(float8send(v)))
FROM unnest(ARRAY[0, '-0', 1.5, -1e-310, 'Infinity', '-Infinity', 1.7976931348623157e308, 'NaN']::float8[]) v;
INSERT INTO sendeq SELECT 'bool', acme_migrate_row_hash(ROW(v)) = acme_migrate_row_hash(ROW(boolsend(v)))
FROM unnest(ARRAY[true, false]) v;
INSERT INTO sendeq SELECT 'char', acme_migrate_row_hash(ROW(v)) = acme_migrate_row_hash(ROW(charsend(v)))
FROM unnest(ARRAY['a', 'Z', '']::"char"[]) v;
INSERT INTO sendeq SELECT 'oid', acme_migrate_row_hash(ROW(v)) = acme_migrate_row_hash(ROW(oidsend(v)))
FROM unnest(ARRAY[0, 4294967295]::oid[]) v;
INSERT INTO sendeq SELECT 'date', acme_migrate_row_hash(ROW(v)) = acme_migrate_row_hash(ROW(date_send(v)))
FROM unnest(ARRAY['2000-01-01', '1999-12-31', 'infinity', '-infinity', '4713-01-01 BC']::date[]) v;
INSERT INTO sendeq SELECT 'time', acme_migrate_row_hash(ROW(v)) = acme_migrate_row_hash(ROW(time_send(v)))
FROM unnest(ARRAY['00:00', '23:59:59.999999', '24:00']::time[]) v;
INSERT INTO sendeq SELECT 'timestamp', acme_migrate_row_hash(ROW(v)) = acme_migrate_row_hash(ROW(timestamp_send(v)))
FROM unnest(ARRAY['2000-01-01', '1900-01-01 00:00:00.000001', 'infinity', '-infinity']::timestamp[]) v;
INSERT INTO sendeq SELECT 'timestamptz', acme_migrate_row_hash(ROW(v)) = acme_migrate_row_hash(ROW(timestamptz_send(v)))
FROM unnest(ARRAY['2000-01-01 00:00+00', '1960-06-30 12:00-07', 'infinity']::timestamptz[]) v;
INSERT INTO sendeq SELECT 'money', acme_migrate_row_hash(ROW(v)) = acme_migrate_row_hash(ROW(cash_send(v)))
FROM unnest(ARRAY[0, -1.5, 92233720368547758.07]::money[]) v;
INSERT INTO sendeq SELECT 'pg_lsn', acme_migrate_row_hash(ROW(v)) = acme_migrate_row_hash(ROW(pg_lsn_send(v)))
FROM unnest(ARRAY['0/0', 'FFFFFFFF/FFFFFFFF']::pg_lsn[]) v;
INSERT INTO sendeq SELECT 'uuid', acme_migrate_row_hash(ROW(v)) = acme_migrate_row_hash(ROW(uuid_send(v)))
FROM unnest(ARRAY['00000000-0000-0000-0000-000000000000', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11']::uuid[]) v;
INSERT INTO sendeq SELECT 'text', acme_migrate_row_hash(ROW(v)) = acme_migrate_row_hash(ROW(textsend(v)))
FROM unnest(ARRAY['', 'abc', 'é✓', repeat('long', 5000)]) v;
INSERT INTO sendeq SELECT 'bytea', acme_migrate_row_hash(ROW(v)) = acme_migrate_row_hash(ROW(byteasend(v)))
FROM unnest(ARRAY['\x', '\x00ff']::bytea[]) v;
INSERT INTO sendeq SELECT 'name', acme_migrate_row_hash(ROW(v)) = acme_migrate_row_hash(ROW(namesend(v)))
FROM unnest(ARRAY['', 'pg_class']::name[]) v;
INSERT INTO sendeq SELECT 'interval (send)', acme_migrate_row_hash(ROW(v)) = acme_migrate_row_hash(ROW(interval_send(v)))
FROM unnest(ARRAY['1 day', '-1 mon 2 us']::interval[]) v;
SELECT t, count(*) AS values, bool_and(same) AS same_as_send FROM sendeq GROUP BY t ORDER BY t;
-- known answers for values of every length from 0 to 70 bytes (short values
-- are copied by pieces, am_copy_short): the hashes computed at 2a528e7,
-- before that copy, by memcpy; in memory (row_hash) and stored (table_hash)
SELECT md5(string_agg(acme_migrate_row_hash(ROW(n, repeat('é', n / 2) || repeat('x', n % 2),
	repeat('z', n)::bytea, repeat('q', n)::varchar))::text, ',' ORDER BY n))
	= 'b5bd93da08bbf04fce6732221fe9a0f3' AS known_row_hashes
FROM generate_series(0, 70) n;
CREATE TABLE kat AS SELECT n, repeat('é', n / 2) || repeat('x', n % 2) AS t,
	repeat('z', n)::bytea AS b, repeat('q', n)::varchar AS v FROM generate_series(0, 70) n;
SELECT hash, row_count FROM acme_migrate_table_hash('kat');
DROP TABLE kat;

--
-- independence from session settings
--
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TYPE pair AS (a text, b numeric[]);
CREATE TABLE settings_src AS
SELECT 1 AS id, '2024-03-10 12:34:56.789+01'::timestamptz AS ts, '2024-03-10'::date AS d,
       '1 year 2 mons 3 days 04:05:06.7'::interval AS iv, 1.0000001::float8 AS f8,
       0.1::float4 AS f4, 12345.678::numeric AS n, '12.34'::money AS m,
       'héllo wörld ✓'::text AS t, '{"k": "ü", "n": 1.50}'::jsonb AS jb,
       '<a>é</a>'::xml AS x, 'pg_class'::regclass AS rc, 'happy'::mood AS e,
       ROW('ä', ARRAY[1.5, NULL])::pair AS p, '[2024-01-01,2024-02-01)'::daterange AS dr,
       'postgres=r/postgres'::aclitem AS acl, '12:00+05'::timetz AS tt,
       '\xdeadbeef'::bytea AS b, 'a fat cat'::tsvector AS tv;
CREATE TABLE settings_hash AS
SELECT acme_migrate_row_hash(s) AS h FROM settings_src s;
CREATE FUNCTION same_hash() RETURNS boolean LANGUAGE sql AS
$$ SELECT public.acme_migrate_row_hash(s) = (SELECT h FROM hash_test.settings_hash)
   FROM hash_test.settings_src s $$;
SET TimeZone = 'Pacific/Chatham';
SELECT same_hash() AS timezone;
RESET TimeZone;
SET DateStyle = 'SQL, DMY';
SELECT same_hash() AS datestyle;
RESET DateStyle;
SET IntervalStyle = 'iso_8601';
SELECT same_hash() AS intervalstyle;
RESET IntervalStyle;
SET extra_float_digits = -15;
SELECT same_hash() AS extra_float_digits;
RESET extra_float_digits;
SET lc_monetary = 'C.UTF-8';
SELECT same_hash() AS lc_monetary;
RESET lc_monetary;
SET search_path = pg_catalog;
SELECT hash_test.same_hash() AS search_path;
SET search_path = hash_test, public;
SET bytea_output = 'escape';
SELECT same_hash() AS bytea_output;
RESET bytea_output;
SET client_encoding = 'LATIN1';
SELECT same_hash() AS client_encoding;
-- a parallel plan hashes in workers, whose client_encoding is the server's
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
SET max_parallel_workers_per_gather = 2;
SET force_parallel_mode = on;
EXPLAIN (COSTS OFF)
SELECT bool_and(acme_migrate_row_hash(s) = (SELECT h FROM settings_hash)) AS parallel_client_encoding
FROM settings_src s;
SELECT bool_and(acme_migrate_row_hash(s) = (SELECT h FROM settings_hash)) AS parallel_client_encoding
FROM settings_src s;
RESET force_parallel_mode;
RESET parallel_setup_cost;
RESET parallel_tuple_cost;
RESET min_parallel_table_scan_size;
RESET max_parallel_workers_per_gather;
RESET client_encoding;
-- hashing restores the settings it pins for text output
SET TimeZone = 'America/New_York';
SET DateStyle = 'German';
SELECT same_hash() AS all_changed;
SHOW TimeZone;
SHOW DateStyle;
RESET TimeZone;
RESET DateStyle;

DROP SCHEMA hash_test CASCADE;
