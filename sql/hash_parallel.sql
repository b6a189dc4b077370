--
-- hash_parallel: acme_migrate_table_hash scans in parallel when the
-- planner would, with the result of the serial scan
--
CREATE EXTENSION IF NOT EXISTS acme_migrate;
SET client_min_messages = warning;
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
-- a temporary table is hashed serially, with the same result
CREATE TEMP TABLE tt AS SELECT * FROM hp.t;
SET client_min_messages = debug1;
SELECT (SELECT hash FROM acme_migrate_table_hash('tt')) = (SELECT hash FROM serial) AS same_hash;
RESET client_min_messages;
DROP SCHEMA hp CASCADE;
