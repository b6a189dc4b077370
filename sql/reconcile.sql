--
-- Reconciliation against independent oracles.
--
-- Default rule: two rows are equal when every column has the same text
-- under TimeZone UTC, DateStyle ISO, IntervalStyle postgres and
-- extra_float_digits 3; the oracle is a FULL JOIN on the key comparing
-- s::text and t::text.  With the "value" policy the oracle is EXCEPT.
--
CREATE EXTENSION acme_migrate;
CREATE SCHEMA rc;
CREATE TYPE rc.mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN rc.code AS text CHECK (VALUE <> 'forbidden');
CREATE TYPE rc.pair AS (x int, y text);

CREATE TABLE rc.src (
	a text, b int, txt text, n numeric, f float8, r real, ts timestamptz,
	d date, iv interval, j json, jb jsonb, ia int[], ta text[], by bytea,
	u uuid, e rc.mood, dom rc.code, rng int4range, p rc.pair, tv tsvector,
	x xml, big text, ch char(5), ok boolean,
	PRIMARY KEY (a, b));

SELECT setseed(0.42);
INSERT INTO rc.src
SELECT (ARRAY['', ' ', 'a|b', 'a', 'NULL', 'Zz', 'key ', 'é'])[1 + g % 8], g,
	(ARRAY[NULL, '', 'NULL', 'x', 'x ', 'a|b', 'a,b'])[1 + g % 7],
	(ARRAY[1.0, 1.00, 0, -0.0, 1e-20, 123456789.123456789])[1 + g % 6]::numeric,
	(ARRAY['0', '-0', 'NaN', 'Infinity', '0.1', '1e300'])[1 + g % 6]::float8 + 0,
	g / 7.0,
	'2024-02-29 12:00:00+00'::timestamptz + g * interval '1 hour 1.5 sec',
	date '2000-01-01' + g,
	make_interval(days => g % 40, secs => g / 3.0),
	('{"k": ' || g || ', "s": "v"}')::json,
	jsonb_build_object('k', g, 'arr', jsonb_build_array(g, NULL, 'x')),
	ARRAY[g, NULL, -g], ARRAY['a', NULL, 'NULL', ''],
	decode(md5(g::text), 'hex'),
	md5(g::text)::uuid,
	(ARRAY['sad', 'ok', 'happy'])[1 + g % 3]::rc.mood,
	'c' || g,
	int4range(g, g + 10),
	ROW(g, 'p' || g)::rc.pair,
	to_tsvector('simple', 'row number ' || g),
	('<r n="' || g || '"/>')::xml,
	CASE WHEN g % 50 = 0 THEN repeat(md5(g::text), 3000) ELSE 'short' END,
	'ab', g % 2 = 0
FROM generate_series(1, 400) g;

CREATE TABLE rc.tgt (LIKE rc.src INCLUDING ALL);
SELECT acme_migrate_create('rc', 'rc.src', 'rc.tgt', batch_size => 64);
CALL acme_migrate_run('rc');
SELECT equal, missing, extra, changed FROM acme_migrate_reconcile('rc');

-- differences of every kind, including the subtle ones
DELETE FROM rc.tgt WHERE b % 37 = 0;
INSERT INTO rc.tgt (a, b, txt) VALUES ('new', 1, 'x'), ('', 100000, ''), ('a|b', -1, NULL);
UPDATE rc.tgt SET n = 1.00 WHERE n = 1.0 AND n::text = '1.0' AND b % 5 = 0;
UPDATE rc.tgt SET f = '-0' WHERE f::text = '0' AND b % 4 = 0;
UPDATE rc.tgt SET txt = NULL WHERE txt = '' AND b % 3 = 0;
UPDATE rc.tgt SET txt = 'NULL' WHERE txt IS NULL AND b % 11 = 0;
UPDATE rc.tgt SET txt = 'x' WHERE txt = 'x ' AND b % 2 = 0;
UPDATE rc.tgt SET big = big || '!' WHERE big <> 'short' AND b % 100 = 0;
UPDATE rc.tgt SET j = ('{"k":' || b || ', "s": "v"}')::json WHERE b % 13 = 0;
UPDATE rc.tgt SET jb = jb || '{"z": 1}' WHERE b % 17 = 0;
UPDATE rc.tgt SET ia[2] = 0 WHERE b % 19 = 0;
UPDATE rc.tgt SET ts = ts + interval '1 microsecond' WHERE b % 23 = 0;
UPDATE rc.tgt SET iv = iv + interval '1 day' - interval '24 hours' WHERE b % 29 = 0;
UPDATE rc.tgt SET p = ROW((p).x, (p).y || ' ') WHERE b % 31 = 0;
UPDATE rc.tgt SET ch = 'ab   ' WHERE b % 41 = 0;
UPDATE rc.tgt SET by = by || '\x00'::bytea WHERE b % 43 = 0;

-- the oracle: FULL JOIN on the key, text of whole rows, fixed settings
SET timezone = 'UTC';
SET datestyle = 'ISO';
SET intervalstyle = 'postgres';
SET extra_float_digits = 3;
CREATE TEMP TABLE oracle AS
SELECT CASE WHEN t.b IS NULL THEN 'missing' WHEN s.b IS NULL THEN 'extra'
			ELSE 'changed' END AS kind,
	   coalesce(s.a, t.a) AS a, coalesce(s.b, t.b) AS b
FROM rc.src s FULL JOIN rc.tgt t ON s.a = t.a AND s.b = t.b
WHERE s.b IS NULL OR t.b IS NULL OR s::text IS DISTINCT FROM t::text;
RESET ALL;
SELECT kind, count(*) FROM oracle GROUP BY 1 ORDER BY 1;

-- reconcile under hostile session settings: the result must not change
SET timezone = 'Pacific/Chatham';
SET datestyle = 'SQL, DMY';
SET intervalstyle = 'iso_8601';
SET extra_float_digits = -15;
SET search_path = rc, pg_catalog;
CREATE TEMP TABLE run AS SELECT * FROM public.acme_migrate_reconcile('rc');
RESET ALL;
SELECT source_rows, target_rows, missing, extra, changed, equal FROM run;
SELECT (SELECT source_rows FROM run) = (SELECT count(*) FROM rc.src) AS source_rows_ok,
	(SELECT target_rows FROM run) = (SELECT count(*) FROM rc.tgt) AS target_rows_ok;
-- the diffs are exactly the oracle's, kind and key
SELECT kind, key->>'a' AS a, (key->>'b')::int AS b
FROM acme_migrate.diffs WHERE run_id = (SELECT run_id FROM run)
EXCEPT SELECT kind, a, b FROM oracle;
SELECT kind, a, b FROM oracle
EXCEPT SELECT kind, key->>'a', (key->>'b')::int
FROM acme_migrate.diffs WHERE run_id = (SELECT run_id FROM run);
-- changed_columns name what differs
SELECT (key->>'b')::int AS b, changed_columns FROM acme_migrate.diffs
WHERE run_id = (SELECT run_id FROM run) AND kind = 'changed'
  AND (key->>'b')::int IN (13, 17, 19, 23, 29, 31, 41, 43, 100)
ORDER BY 1;
-- missing rows carry the source row, extra rows the target row
SELECT kind, bool_and(source_row IS NOT NULL) AS has_source,
	bool_and(target_row IS NOT NULL) AS has_target
FROM acme_migrate.diffs WHERE run_id = (SELECT run_id FROM run)
GROUP BY kind ORDER BY kind;

-- value equality for chosen columns: the oracle is EXCEPT
CREATE TEMP TABLE vrun AS SELECT * FROM acme_migrate_reconcile('rc',
	columns => '{a,b,txt,n,f,ok}', compare => '{"n": "value", "f": "value", "txt": "value"}');
CREATE TEMP TABLE voracle AS
WITH s AS (SELECT a, b, txt, n, f, ok FROM rc.src), t AS (SELECT a, b, txt, n, f, ok FROM rc.tgt),
	 only_s AS (SELECT * FROM s EXCEPT SELECT * FROM t),
	 only_t AS (SELECT * FROM t EXCEPT SELECT * FROM s)
SELECT CASE WHEN EXISTS (SELECT 1 FROM rc.tgt x WHERE x.a = o.a AND x.b = o.b)
			THEN 'changed' ELSE 'missing' END AS kind, a, b FROM only_s o
UNION
SELECT 'extra', a, b FROM only_t o
WHERE NOT EXISTS (SELECT 1 FROM rc.src x WHERE x.a = o.a AND x.b = o.b);
SELECT kind, count(*) FROM voracle GROUP BY 1 ORDER BY 1;
SELECT kind, key->>'a' AS a, (key->>'b')::int AS b
FROM acme_migrate.diffs WHERE run_id = (SELECT run_id FROM vrun)
EXCEPT SELECT kind, a, b FROM voracle;
SELECT kind, a, b FROM voracle
EXCEPT SELECT kind, key->>'a', (key->>'b')::int
FROM acme_migrate.diffs WHERE run_id = (SELECT run_id FROM vrun);

-- tolerance and truncation
CREATE TABLE rc.m1 (id int PRIMARY KEY, v float8, at timestamptz);
CREATE TABLE rc.m2 (id int PRIMARY KEY, v float8, at timestamptz);
INSERT INTO rc.m1 VALUES (1, 1.0, '2024-01-01 10:00:00.1+00'), (2, 2.0, '2024-01-01 10:00:00+00');
INSERT INTO rc.m2 VALUES (1, 1.0000001, '2024-01-01 10:00:00.9+00'), (2, 2.1, '2024-01-01 10:00:01+00');
SELECT changed FROM acme_migrate_reconcile(source => 'rc.m1', target => 'rc.m2');
SELECT changed FROM acme_migrate_reconcile(source => 'rc.m1', target => 'rc.m2',
	compare => '{"v": {"tolerance": 0.001}, "at": {"truncate": "second"}}');
SELECT d.key, d.changed_columns FROM acme_migrate.diffs d
WHERE d.run_id = (SELECT max(run_id) FROM acme_migrate.reconcile_runs);

-- max_diffs truncates the list, not the counts
SELECT missing, extra, changed FROM acme_migrate_reconcile('rc', max_diffs => 3);
SELECT truncated, (SELECT count(*) FROM acme_migrate.diffs d WHERE d.run_id = r.run_id) AS listed
FROM acme_migrate.reconcile_runs r WHERE run_id = (SELECT max(run_id) FROM acme_migrate.reconcile_runs);

-- a sample finds only true differences, and estimates the counts
SELECT setseed(0.5);
CREATE TEMP TABLE srun AS SELECT * FROM acme_migrate_reconcile('rc', sample => 0.5);
-- each row is sampled with p = 0.5, so the estimate (sampled rows / p) is
-- within 4 standard deviations, 4 * sqrt(n (1 - p) / p), of the true count
SELECT estimated,
	abs(source_rows - n) <= 4 * sqrt(n * (1 - 0.5) / 0.5) AS plausible
FROM acme_migrate.reconcile_runs, (SELECT count(*) AS n FROM rc.src) c
WHERE run_id = (SELECT run_id FROM srun);
SELECT count(*) AS false_diffs FROM acme_migrate.diffs d
WHERE d.run_id = (SELECT run_id FROM srun)
  AND NOT EXISTS (SELECT 1 FROM oracle o WHERE o.kind = d.kind
				  AND o.a = d.key->>'a' AND o.b = (d.key->>'b')::int);

-- duplicate and NULL keys are reported, never merged
CREATE TABLE rc.nokey_s (id int, v text);
CREATE TABLE rc.nokey_t (id int, v text);
INSERT INTO rc.nokey_s VALUES (1, 'a'), (2, 'b'), (2, 'b'), (NULL, 'n'), (3, 'c');
INSERT INTO rc.nokey_t VALUES (1, 'a'), (2, 'b'), (3, 'c'), (3, 'c'), (NULL, 'n');
SELECT source_rows, target_rows, missing, extra, changed, equal
FROM acme_migrate_reconcile(source => 'rc.nokey_s', target => 'rc.nokey_t', key => '{id}');
SELECT kind, side, key FROM acme_migrate.diffs
WHERE run_id = (SELECT max(run_id) FROM acme_migrate.reconcile_runs) ORDER BY diff_no;
SELECT duplicates, null_keys FROM acme_migrate.reconcile_runs
WHERE run_id = (SELECT max(run_id) FROM acme_migrate.reconcile_runs);

-- The hash-first path, for a target key that is one integer column, unique
-- and NOT NULL: hash sums per key range on both sides, then a merge of the
-- ranges that differ.  Same corpus, a sparse bigint key with negative
-- values, source keys beyond the target's on both ends; same oracle.
CREATE TABLE rc.hsrc (id bigint PRIMARY KEY, LIKE rc.src);
INSERT INTO rc.hsrc SELECT (b - 200) * 1000003, * FROM rc.src;
CREATE TABLE rc.htgt (LIKE rc.hsrc INCLUDING ALL);
INSERT INTO rc.htgt SELECT * FROM rc.hsrc;
DELETE FROM rc.htgt WHERE b % 37 = 0 OR b IN (1, 400);
INSERT INTO rc.htgt (id, a, b) VALUES (-200000000, 'x', 0), (5, 'x', 0), (200000000, 'x', 0);
UPDATE rc.htgt SET n = 1.00 WHERE n::text = '1.0' AND b % 5 = 0;
UPDATE rc.htgt SET f = '-0' WHERE f::text = '0' AND b % 4 = 0;
UPDATE rc.htgt SET txt = NULL WHERE txt = '' AND b % 3 = 0;
UPDATE rc.htgt SET txt = 'x' WHERE txt = 'x ' AND b % 2 = 0;
UPDATE rc.htgt SET big = big || '!' WHERE big <> 'short' AND b % 100 = 0;
UPDATE rc.htgt SET jb = jb || '{"z": 1}' WHERE b % 17 = 0;
UPDATE rc.htgt SET ts = ts + interval '1 microsecond' WHERE b % 23 = 0;
UPDATE rc.htgt SET ch = 'ab   ' WHERE b % 41 = 0;
UPDATE rc.htgt SET by = by || '\x00'::bytea WHERE b % 43 = 0;
SET timezone = 'UTC';
SET datestyle = 'ISO';
SET intervalstyle = 'postgres';
SET extra_float_digits = 3;
CREATE TEMP TABLE horacle AS
SELECT CASE WHEN t.id IS NULL THEN 'missing' WHEN s.id IS NULL THEN 'extra'
			ELSE 'changed' END AS kind, coalesce(s.id, t.id) AS id
FROM rc.hsrc s FULL JOIN rc.htgt t ON s.id = t.id
WHERE s.id IS NULL OR t.id IS NULL OR s::text IS DISTINCT FROM t::text;
SET timezone = 'Pacific/Chatham';
SET datestyle = 'SQL, DMY';
SET intervalstyle = 'iso_8601';
SET extra_float_digits = -15;
CREATE TEMP TABLE hrun AS
SELECT * FROM acme_migrate_reconcile(source => 'rc.hsrc', target => 'rc.htgt');
RESET ALL;
SELECT kind, count(*) FROM horacle GROUP BY 1 ORDER BY 1;
SELECT r.method, r.ranges_merged BETWEEN 1 AND r.ranges_hashed / 2 AS merged_some,
	h.source_rows = (SELECT count(*) FROM rc.hsrc) AS source_rows_ok,
	h.target_rows = (SELECT count(*) FROM rc.htgt) AS target_rows_ok,
	h.missing, h.extra, h.changed, h.equal
FROM hrun h JOIN acme_migrate.reconcile_runs r USING (run_id);
SELECT kind, (key->>'id')::bigint AS id FROM acme_migrate.diffs
WHERE run_id = (SELECT run_id FROM hrun)
EXCEPT SELECT kind, id FROM horacle;
SELECT kind, id FROM horacle
EXCEPT SELECT kind, (key->>'id')::bigint FROM acme_migrate.diffs
WHERE run_id = (SELECT run_id FROM hrun);
-- a policy other than "text" takes the merge: the same list, in the same order
CREATE TEMP TABLE mrun AS
SELECT * FROM acme_migrate_reconcile(source => 'rc.hsrc', target => 'rc.htgt',
	compare => '{"ok": "value"}');
SELECT method FROM acme_migrate.reconcile_runs WHERE run_id = (SELECT run_id FROM mrun);
SELECT (SELECT array_agg(ROW(kind, side, key, source_row, target_row, changed_columns) ORDER BY diff_no)
		FROM acme_migrate.diffs WHERE run_id = (SELECT run_id FROM hrun)) =
	   (SELECT array_agg(ROW(kind, side, key, source_row, target_row, changed_columns) ORDER BY diff_no)
		FROM acme_migrate.diffs WHERE run_id = (SELECT run_id FROM mrun)) AS same_list;

-- The target's keys 1..10000 hash as 40 ranges of 250 keys.  Differences at
-- the first and last key of ranges, in adjacent ranges (merged as one run)
-- and in lone ones: every one is found, none twice.
CREATE TABLE rc.e1 (id int PRIMARY KEY, v text);
INSERT INTO rc.e1 SELECT g, 'v' || g FROM generate_series(1, 10000) g WHERE g NOT IN (500, 2251);
CREATE TABLE rc.e2 (id int PRIMARY KEY, v text);
INSERT INTO rc.e2 SELECT g, 'v' || g FROM generate_series(1, 10000) g WHERE g NOT IN (250, 1001);
UPDATE rc.e2 SET v = v || '!' WHERE id % 2000 IN (1, 250);
SELECT missing, extra, changed, equal
FROM acme_migrate_reconcile(source => 'rc.e1', target => 'rc.e2');
SELECT method, ranges_hashed, ranges_merged FROM acme_migrate.reconcile_runs
WHERE run_id = (SELECT max(run_id) FROM acme_migrate.reconcile_runs);
SELECT kind, array_agg((key->>'id')::int ORDER BY diff_no) AS ids FROM acme_migrate.diffs
WHERE run_id = (SELECT max(run_id) FROM acme_migrate.reconcile_runs)
GROUP BY kind ORDER BY kind;
-- differences in more than a quarter of the ranges: one merge of everything
UPDATE rc.e2 SET v = v || '?' WHERE id % 10 = 0;
SELECT missing, extra, changed, equal
FROM acme_migrate_reconcile(source => 'rc.e1', target => 'rc.e2');
SELECT method, ranges_hashed, ranges_merged FROM acme_migrate.reconcile_runs
WHERE run_id = (SELECT max(run_id) FROM acme_migrate.reconcile_runs);

-- a source without a unique key: a duplicate of a row the target has is
-- reported; a NULL key sends the comparison to the merge, which reports it
CREATE TABLE rc.d1 (id int, v text);
INSERT INTO rc.d1 SELECT g, 'v' FROM generate_series(1, 2000) g;
INSERT INTO rc.d1 VALUES (700, 'v');
CREATE TABLE rc.d2 (id int PRIMARY KEY, v text);
INSERT INTO rc.d2 SELECT g, 'v' FROM generate_series(1, 2000) g;
SELECT source_rows, target_rows, missing, extra, changed, equal
FROM acme_migrate_reconcile(source => 'rc.d1', target => 'rc.d2', key => '{id}');
SELECT method, duplicates, null_keys, ranges_merged FROM acme_migrate.reconcile_runs
WHERE run_id = (SELECT max(run_id) FROM acme_migrate.reconcile_runs);
SELECT kind, side, key FROM acme_migrate.diffs
WHERE run_id = (SELECT max(run_id) FROM acme_migrate.reconcile_runs);
INSERT INTO rc.d1 VALUES (NULL, 'v');
SELECT source_rows, target_rows, missing, extra, changed, equal
FROM acme_migrate_reconcile(source => 'rc.d1', target => 'rc.d2', key => '{id}');
SELECT method, duplicates, null_keys FROM acme_migrate.reconcile_runs
WHERE run_id = (SELECT max(run_id) FROM acme_migrate.reconcile_runs);

-- bad input
SELECT * FROM acme_migrate_reconcile('nope');
SELECT * FROM acme_migrate_reconcile('rc', sample => 0);
SELECT * FROM acme_migrate_reconcile('rc', sample => 1.5);
SELECT * FROM acme_migrate_reconcile('rc', max_diffs => -1);
SELECT * FROM acme_migrate_reconcile(source => 'rc.src', target => 'rc.src');
SELECT * FROM acme_migrate_reconcile('rc', columns => '{nope}');
SELECT * FROM acme_migrate_reconcile('rc', compare => '{"j": "value"}');
SELECT * FROM acme_migrate_reconcile('rc', compare => '{"txt": {"tolerance": 1}}');
SELECT * FROM acme_migrate_reconcile('rc', compare => '{"n": {"truncate": "day"}}');
SELECT * FROM acme_migrate_reconcile('rc', compare => '{"ts": {"truncate": "fortnight"}}');
SELECT * FROM acme_migrate_reconcile('rc', compare => '{"n": "approximately"}');
SELECT * FROM acme_migrate_reconcile('rc', compare => '[1]');
SELECT * FROM acme_migrate_reconcile('rc', compare => '{"no_such_column": "value"}');
SELECT * FROM acme_migrate_reconcile(source => 'rc.nokey_s', target => 'rc.nokey_t');
SELECT * FROM acme_migrate_reconcile(source => 'rc.m1', target => NULL);
SELECT count(*) AS runs_recorded FROM acme_migrate.reconcile_runs;

-- the differences are written 500 to a statement: 1,400 of them, numbered
-- in key order without a gap, each with its rows; column names that need
-- quoting in an array come back as they are in changed_columns
CREATE TABLE rc.qs (id int PRIMARY KEY, "a,b" int, "x""y" text, "NULL" int, " sp " text);
INSERT INTO rc.qs SELECT g, g, 'x' || g, g, 's' FROM generate_series(1, 3000) g;
CREATE TABLE rc.qt (LIKE rc.qs INCLUDING ALL);
INSERT INTO rc.qt SELECT * FROM rc.qs WHERE id > 1000;
UPDATE rc.qt SET "a,b" = -"a,b", "x""y" = NULL, "NULL" = 0, " sp " = 't' WHERE id % 10 = 1;
UPDATE rc.qt SET "x""y" = 'y' WHERE id % 10 = 2;
SELECT missing, extra, changed, equal FROM acme_migrate_reconcile(source => 'rc.qs', target => 'rc.qt');
SELECT count(*) AS diffs, min(diff_no), max(diff_no),
	bool_and(diff_no = rank) AS numbered_in_key_order,
	count(*) FILTER (WHERE kind = 'missing' AND source_row->>'x"y' = 'x' || (key->>'id')
					 AND target_row IS NULL) AS missing_with_row
FROM (SELECT d.*, rank() OVER (ORDER BY (key->>'id')::int) FROM acme_migrate.diffs d
	  WHERE run_id = (SELECT max(run_id) FROM acme_migrate.reconcile_runs)) d;
SELECT changed_columns, count(*) FROM acme_migrate.diffs
WHERE run_id = (SELECT max(run_id) FROM acme_migrate.reconcile_runs) AND kind = 'changed'
GROUP BY 1 ORDER BY 1;

DROP SCHEMA rc CASCADE;
DROP EXTENSION acme_migrate;
