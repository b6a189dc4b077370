--
-- hash_parallel: acme_migrate_table_hash scans in parallel when the
-- planner would, with the result of the serial scan
--
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS acme_migrate;
CREATE SCHEMA hp;
CREATE TABLE hp.t (id bigint, n numeric, s text, f float8, a int[], d date, j jsonb);
INSERT INTO hp.t SELECT g, g / 3.0, repeat('x', g % 50) || g, g * 1.5,
	ARRAY[g, g + 1], date '2020-01-01' + (g % 1000), jsonb_build_object('g', g)
FROM generate_series(1, 30000) g;
INSERT INTO hp.t VALUES (NULL, NULL, NULL, NULL, NULL, NULL, NULL);
INSERT INTO hp.t SELECT * FROM hp.t WHERE id <= 10;	-- duplicate rows
ANALYZE hp.t;
SET min_parallel_table_scan_size = 0;
SET parallel_setup_cost = 0;
SET max_parallel_workers_per_gather = 0;
CREATE TEMP TABLE serial AS SELECT * FROM acme_migrate_table_hash('hp.t');
SET max_parallel_workers_per_gather = 2;
-- the planner would scan it in parallel
EXPLAIN (COSTS OFF) SELECT count(s) FROM hp.t;
SET client_min_messages = debug1;
CREATE TEMP TABLE par AS SELECT * FROM acme_migrate_table_hash('hp.t');
SET client_min_messages = warning;
-- the same hash as the serial scan, and the count of rows (oracle: count(*))
SELECT p.row_count = (SELECT count(*) FROM hp.t) AS count_ok,
	   p.hash = s.hash AS same_hash_as_serial
FROM par p, serial s;
-- within a transaction that changed the table: the workers see its changes
BEGIN;
DELETE FROM hp.t WHERE id = 7;
SET LOCAL client_min_messages = debug1;
CREATE TEMP TABLE par2 AS SELECT * FROM acme_migrate_table_hash('hp.t');
SET LOCAL client_min_messages = warning;
SET LOCAL max_parallel_workers_per_gather = 0;
CREATE TEMP TABLE serial2 AS SELECT * FROM acme_migrate_table_hash('hp.t');
SELECT p.row_count = (SELECT count(*) FROM hp.t) AS count_ok,
	   p.hash = s.hash AS same_hash_as_serial, p.hash <> (SELECT hash FROM serial) AS changed
FROM par2 p, serial2 s;
ROLLBACK;
-- range hashes: the boundaries go to the workers (text and composite
-- keys), the ranges' sums are those of the serial scan
CREATE TABLE hp.r (k text, n int, v text, PRIMARY KEY (k, n));
INSERT INTO hp.r SELECT 'key' || (g % 5000), g, md5(g::text) FROM generate_series(1, 30000) g;
ANALYZE hp.r;
SET max_parallel_workers_per_gather = 0;
CREATE TEMP TABLE rs AS SELECT * FROM acme_migrate_range_hashes('hp.r', 16);
CREATE TEMP TABLE rsb AS SELECT * FROM acme_migrate_range_hashes('hp.r',
	bounds => '[{"k": "key2", "n": 2}, {"k": "key3", "n": 0}, {"k": "key9", "n": 99999}]');
SET max_parallel_workers_per_gather = 2;
CREATE TEMP TABLE rp (LIKE rs);
CREATE TEMP TABLE rpb (LIKE rs);
SET client_min_messages = debug1;
INSERT INTO rp SELECT * FROM acme_migrate_range_hashes('hp.r', 16);
INSERT INTO rpb SELECT * FROM acme_migrate_range_hashes('hp.r',
	bounds => '[{"k": "key2", "n": 2}, {"k": "key3", "n": 0}, {"k": "key9", "n": 99999}]');
SET client_min_messages = warning;
SELECT (SELECT count(*) FROM rp) AS ranges, (SELECT sum(rows) FROM rp) = 30000 AS rows_ok,
	NOT EXISTS (SELECT * FROM rs EXCEPT ALL SELECT * FROM rp) AND
	NOT EXISTS (SELECT * FROM rp EXCEPT ALL SELECT * FROM rs) AS same_as_serial,
	NOT EXISTS (SELECT * FROM rsb EXCEPT ALL SELECT * FROM rpb) AND
	NOT EXISTS (SELECT * FROM rpb EXCEPT ALL SELECT * FROM rsb) AS same_with_bounds;
-- the oracle of the rows per range: count(*) with the boundaries
SELECT lo, hi, rows = (SELECT count(*) FROM hp.r
	WHERE (lo IS NULL OR (k, n) >= (lo->>'k', (lo->>'n')::int))
	  AND (hi IS NULL OR (k, n) < (hi->>'k', (hi->>'n')::int))) AS rows_ok
FROM rpb ORDER BY lo NULLS FIRST;
-- a temporary table is hashed serially, with the same result
CREATE TEMP TABLE tt AS SELECT * FROM hp.t;
SET client_min_messages = debug1;
SELECT (SELECT hash FROM acme_migrate_table_hash('tt')) = (SELECT hash FROM serial) AS same_hash;
RESET client_min_messages;
DROP SCHEMA hp CASCADE;
DROP EXTENSION acme_migrate;
