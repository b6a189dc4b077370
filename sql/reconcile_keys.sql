--
-- reconcile_keys: the hash pass for keys of every type (method
-- hash_buckets) and its fallbacks, each run compared with an independent
-- oracle: a FULL JOIN on the key with the rows' text under fixed settings
-- (what "same representation" means), and the list of a run forced to the
-- merge of everything (a non-text policy), which must be the same list in
-- the same order.
--
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS acme_migrate;
CREATE SCHEMA rk;

-- rk.check(source, target, key columns, oracle join condition, order by):
-- runs acme_migrate_reconcile and returns its method and whether its
-- counts and its listed (kind, key) set equal the oracle's, and whether
-- the list comes in the target's key order
CREATE FUNCTION rk.check(src text, tgt text, keys text[], cond text, ord text,
	OUT method text, OUT missing bigint, OUT extra bigint, OUT changed bigint,
	OUT counts_ok boolean, OUT list_ok boolean, OUT in_key_order boolean)
LANGUAGE plpgsql AS $f$
DECLARE
	run bigint;
	r record;
	keyexpr_s text := (SELECT string_agg(format('%L, s.%I', k, k), ', ') FROM unnest(keys) k);
	keyexpr_t text := (SELECT string_agg(format('%L, t.%I', k, k), ', ') FROM unnest(keys) k);
BEGIN
	PERFORM set_config('timezone', 'UTC', true);
	PERFORM set_config('datestyle', 'ISO', true);
	PERFORM set_config('extra_float_digits', '3', true);
	EXECUTE format($q$CREATE TEMP TABLE rk_oracle ON COMMIT DROP AS
		SELECT CASE WHEN t IS NULL THEN 'missing' WHEN s IS NULL THEN 'extra'
					ELSE 'changed' END AS kind,
			   CASE WHEN s IS NULL THEN jsonb_build_object(%s)
					ELSE jsonb_build_object(%s) END AS key
		FROM %s s FULL JOIN %s t ON %s
		WHERE s IS NULL OR t IS NULL OR s::text IS DISTINCT FROM t::text$q$,
		keyexpr_t, keyexpr_s, src, tgt, cond);
	SELECT * INTO r FROM acme_migrate_reconcile(source => src::regclass,
		target => tgt::regclass, key => keys);
	run := r.run_id;
	SELECT rr.method INTO method FROM acme_migrate.reconcile_runs rr WHERE rr.run_id = run;
	missing := r.missing; extra := r.extra; changed := r.changed;
	counts_ok := (r.missing, r.extra, r.changed) =
		(SELECT count(*) FILTER (WHERE kind = 'missing'), count(*) FILTER (WHERE kind = 'extra'),
				count(*) FILTER (WHERE kind = 'changed') FROM rk_oracle);
	list_ok := NOT EXISTS (SELECT kind, key FROM acme_migrate.diffs d WHERE d.run_id = run
						   EXCEPT ALL SELECT kind, key FROM rk_oracle)
		AND NOT EXISTS (SELECT kind, key FROM rk_oracle
						EXCEPT ALL SELECT kind, key FROM acme_migrate.diffs d WHERE d.run_id = run);
	EXECUTE format($q$SELECT array_agg(diff_no ORDER BY %s, diff_no) = array_agg(diff_no ORDER BY diff_no)
		FROM acme_migrate.diffs d WHERE d.run_id = $1$q$, ord) INTO in_key_order USING run;
	DROP TABLE rk_oracle;
END
$f$;

-- rk.same_as_merge(source, target, keys, column): the run's list equals,
-- row for row and in order, that of a run forced to the merge by a
-- "value" policy on a column where value and text agree
CREATE FUNCTION rk.same_as_merge(src text, tgt text, keys text[], col text)
RETURNS TABLE (method text, merged text, same_list boolean)
LANGUAGE plpgsql AS $f$
DECLARE
	a bigint;
	b bigint;
BEGIN
	SELECT run_id INTO a FROM acme_migrate_reconcile(source => src::regclass,
		target => tgt::regclass, key => keys);
	SELECT run_id INTO b FROM acme_migrate_reconcile(source => src::regclass,
		target => tgt::regclass, key => keys, compare => jsonb_build_object(col, 'value'));
	RETURN QUERY SELECT
		(SELECT r.method FROM acme_migrate.reconcile_runs r WHERE r.run_id = a),
		(SELECT r.method FROM acme_migrate.reconcile_runs r WHERE r.run_id = b),
		(SELECT array_agg(ROW(kind, side, key, source_row, target_row, changed_columns) ORDER BY diff_no)
		   FROM acme_migrate.diffs WHERE run_id = a) IS NOT DISTINCT FROM
		(SELECT array_agg(ROW(kind, side, key, source_row, target_row, changed_columns) ORDER BY diff_no)
		   FROM acme_migrate.diffs WHERE run_id = b);
END
$f$;

--
-- text key: missing, extra, changed, NULLs in compared columns both ways
--
CREATE TABLE rk.ts (k text PRIMARY KEY, a int, b text, c numeric);
INSERT INTO rk.ts SELECT 'key' || g, g, md5(g::text), g / 7.0
FROM generate_series(1, 20000) g;
UPDATE rk.ts SET b = NULL WHERE a % 997 = 5;
CREATE TABLE rk.tt (LIKE rk.ts INCLUDING ALL);
INSERT INTO rk.tt SELECT * FROM rk.ts;
DELETE FROM rk.tt WHERE a % 500 = 1;
UPDATE rk.tt SET b = b || '!' WHERE a % 500 = 2;
UPDATE rk.tt SET b = 'was null' WHERE a % 997 = 5 AND a % 2 = 0;
UPDATE rk.tt SET c = NULL WHERE a % 1999 = 3;
UPDATE rk.tt SET c = c * 1.0 WHERE a % 2999 = 4;	-- same value, other representation
INSERT INTO rk.tt VALUES ('zzz', 1, 'extra', 1), ('', 2, NULL, NULL), ('key1 ', 3, 'x', 3);
SELECT * FROM rk.check('rk.ts', 'rk.tt', '{k}', 's.k = t.k', 'key->>''k''');
SELECT * FROM rk.same_as_merge('rk.ts', 'rk.tt', '{k}', 'a');
-- sample => 1 probes every key by its equality (text and composite keys):
-- the same counts
SELECT (r.missing, r.extra, r.changed) = (40, 3, 63) AS same_counts
FROM acme_migrate_reconcile(source => 'rk.ts', target => 'rk.tt', sample => 1) r;
-- a partitioned target: its differing rows are found by reading it again
-- (not by ctid)
CREATE TABLE rk.pt (k text PRIMARY KEY, a int, b text, c numeric) PARTITION BY HASH (k);
CREATE TABLE rk.pt0 PARTITION OF rk.pt FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE rk.pt1 PARTITION OF rk.pt FOR VALUES WITH (MODULUS 2, REMAINDER 1);
INSERT INTO rk.pt SELECT * FROM rk.tt;
SELECT * FROM rk.check('rk.ts', 'rk.pt', '{k}', 's.k = t.k', 'key->>''k''');
SELECT * FROM rk.check('rk.pt', 'rk.ts', '{k}', 's.k = t.k', 'key->>''k''');
-- no difference: nothing listed, equal
CREATE TABLE rk.tt0 (LIKE rk.ts INCLUDING ALL);
INSERT INTO rk.tt0 SELECT * FROM rk.ts ORDER BY a DESC;
SELECT source_rows, target_rows, missing, extra, changed, equal
FROM acme_migrate_reconcile(source => 'rk.ts', target => 'rk.tt0');
SELECT method, ranges_merged FROM acme_migrate.reconcile_runs
WHERE run_id = (SELECT max(run_id) FROM acme_migrate.reconcile_runs);

--
-- uuid key
--
CREATE TABLE rk.us (id uuid PRIMARY KEY, v int, w text);
INSERT INTO rk.us SELECT md5('u' || g)::uuid, g, 'w' || g FROM generate_series(1, 20000) g;
CREATE TABLE rk.ut (LIKE rk.us INCLUDING ALL);
INSERT INTO rk.ut SELECT * FROM rk.us;
DELETE FROM rk.ut WHERE v % 400 = 7;
UPDATE rk.ut SET w = NULL WHERE v % 400 = 8;
INSERT INTO rk.ut SELECT md5('x' || g)::uuid, g, 'new' FROM generate_series(1, 30) g;
SELECT * FROM rk.check('rk.us', 'rk.ut', '{id}', 's.id = t.id', '(key->>''id'')::uuid');
-- the rows of differing buckets read again: only those that differ (a
-- changed row on both sides), the others set aside by their digests
SELECT method, ranges_merged > 100 AS many_buckets,
	rows_merged = missing + extra + 2 * changed AS only_differing_rows
FROM acme_migrate.reconcile_runs
WHERE run_id = (SELECT max(run_id) FROM acme_migrate.reconcile_runs);
SELECT * FROM rk.same_as_merge('rk.us', 'rk.ut', '{id}', 'v');

--
-- composite (int, text) key
--
CREATE TABLE rk.cs (a int, b text, v text, PRIMARY KEY (a, b));
INSERT INTO rk.cs SELECT g % 100, 'b' || (g / 100), md5(g::text) FROM generate_series(1, 20000) g;
CREATE TABLE rk.ct (LIKE rk.cs INCLUDING ALL);
INSERT INTO rk.ct SELECT * FROM rk.cs;
DELETE FROM rk.ct WHERE v LIKE '0a%';
UPDATE rk.ct SET v = 'changed' WHERE v LIKE '1b%';
INSERT INTO rk.ct VALUES (-1, 'b1', 'extra'), (5, 'zz', 'extra'), (5, '', NULL);
SELECT * FROM rk.check('rk.cs', 'rk.ct', '{a,b}', 's.a = t.a AND s.b = t.b',
	'(key->>''a'')::int, key->>''b''');
SELECT * FROM rk.same_as_merge('rk.cs', 'rk.ct', '{a,b}', 'v');
SELECT (r.missing, r.extra, r.changed) = (88, 3, 81) AS same_counts
FROM acme_migrate_reconcile(source => 'rk.cs', target => 'rk.ct', sample => 1) r;

--
-- collations: the source's key sorts in "C", the target's in an ICU
-- collation: equality and order are the target's.  (A merge of everything
-- cannot read the source in the target's order, so this only works hashed.)
--
CREATE TABLE rk.ks (k text COLLATE "C" PRIMARY KEY, v int);
INSERT INTO rk.ks SELECT x, g FROM generate_series(1, 3000) g,
	LATERAL (SELECT (ARRAY['a', 'B', 'c', 'É', 'e', 'Z'])[1 + g % 6] || g AS x) l;
CREATE TABLE rk.kt (k text COLLATE "en-x-icu" PRIMARY KEY, v int);
INSERT INTO rk.kt SELECT * FROM rk.ks;
DELETE FROM rk.kt WHERE v % 100 = 1;
UPDATE rk.kt SET v = -v WHERE v % 100 = 2;
INSERT INTO rk.kt VALUES ('b0', 0), ('A0', 0);
SELECT * FROM rk.check('rk.ks', 'rk.kt', '{k}', 's.k = t.k COLLATE "en-x-icu"',
	'key->>''k'' COLLATE "en-x-icu"');
-- a nondeterministic (case-insensitive) collation on both keys: the merge,
-- and keys equal in the target's collation are matched
CREATE COLLATION rk.ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
CREATE TABLE rk.ns (k text COLLATE rk.ci PRIMARY KEY, v int);
INSERT INTO rk.ns SELECT 'k' || g, g FROM generate_series(1, 500) g;
CREATE TABLE rk.nt (LIKE rk.ns INCLUDING ALL);
INSERT INTO rk.nt SELECT CASE WHEN g % 50 = 0 THEN 'K' || g ELSE 'k' || g END, g
FROM generate_series(1, 500) g WHERE g % 77 <> 0;
SELECT * FROM rk.check('rk.ns', 'rk.nt', '{k}', 's.k = t.k', 'key->>''k'' COLLATE rk.ci');
SELECT changed_columns, count(*) FROM acme_migrate.diffs
WHERE run_id = (SELECT max(run_id) FROM acme_migrate.reconcile_runs) GROUP BY 1 ORDER BY 1;

--
-- duplicates in the source (no unique key there): listed by the hashed run,
-- as by the merge
--
CREATE TABLE rk.ds (k text, v int);
INSERT INTO rk.ds SELECT 'd' || g, g FROM generate_series(1, 5000) g;
INSERT INTO rk.ds VALUES ('d17', 17), ('d4000', 4000);
UPDATE rk.ds SET v = -v WHERE k = 'd18';
CREATE TABLE rk.dt (k text PRIMARY KEY, v int);
INSERT INTO rk.dt SELECT 'd' || g, g FROM generate_series(1, 5000) g;
SELECT source_rows, target_rows, missing, extra, changed, equal
FROM acme_migrate_reconcile(source => 'rk.ds', target => 'rk.dt', key => '{k}');
-- the duplicated keys are read again, though a copy of each is in the
-- target: 3 rows of d17 and of d4000, 2 of d18
SELECT method, duplicates, null_keys, rows_merged FROM acme_migrate.reconcile_runs
WHERE run_id = (SELECT max(run_id) FROM acme_migrate.reconcile_runs);
-- the oracle: keys seen more than once in the source
SELECT d.kind, d.side, d.key->>'k' AS k FROM acme_migrate.diffs d
WHERE run_id = (SELECT max(run_id) FROM acme_migrate.reconcile_runs)
EXCEPT ALL SELECT 'duplicate', 'source', k FROM rk.ds GROUP BY k HAVING count(*) > 1;
SELECT 'duplicate', 'source', k FROM rk.ds GROUP BY k HAVING count(*) > 1
EXCEPT ALL SELECT d.kind, d.side, d.key->>'k' FROM acme_migrate.diffs d
WHERE run_id = (SELECT max(run_id) FROM acme_migrate.reconcile_runs);
SELECT * FROM rk.same_as_merge('rk.ds', 'rk.dt', '{k}', 'v');
-- many differing buckets mixing twins (set aside unread), duplicates that
-- have an equal row in the target (1, 2 or 3 copies in the source), changed,
-- missing and extra rows, for a hashed text key and an integer key: the
-- same list, row for row, as the merge of everything
SELECT setseed(0.42);
CREATE TABLE rk.qs (k text, i int, v text);
INSERT INTO rk.qs SELECT 'q' || g, g, md5(g::text) FROM generate_series(1, 60000) g;
INSERT INTO rk.qs SELECT * FROM rk.qs WHERE random() < 0.001;
INSERT INTO rk.qs SELECT * FROM rk.qs WHERE i IN (SELECT i FROM rk.qs GROUP BY i HAVING count(*) > 1)
	AND random() < 0.3;
CREATE TABLE rk.qt (k text PRIMARY KEY, i int UNIQUE NOT NULL, v text);
INSERT INTO rk.qt SELECT DISTINCT k, i, v FROM rk.qs WHERE random() >= 0.001;
UPDATE rk.qt SET v = 'changed' WHERE random() < 0.001;
INSERT INTO rk.qt SELECT 'x' || g, -g, 'extra' FROM generate_series(1, 40) g;
SELECT (SELECT count(*) FROM rk.qs) - (SELECT count(DISTINCT k) FROM rk.qs) AS duplicate_rows;
SELECT * FROM rk.same_as_merge('rk.qs', 'rk.qt', '{k}', 'v');
SELECT rows_merged < 1000 AS twins_set_aside FROM acme_migrate.reconcile_runs
WHERE run_id = (SELECT max(run_id) - 1 FROM acme_migrate.reconcile_runs);
SELECT * FROM rk.same_as_merge('rk.qs', 'rk.qt', '{i}', 'v');
SELECT rows_merged < 1000 AS twins_set_aside FROM acme_migrate.reconcile_runs
WHERE run_id = (SELECT max(run_id) - 1 FROM acme_migrate.reconcile_runs);

--
-- fallbacks to the merge of everything, each with the oracle
--
-- a NULL key in the source
INSERT INTO rk.ds VALUES (NULL, 0);
SELECT source_rows, target_rows, missing, extra, changed, equal
FROM acme_migrate_reconcile(source => 'rk.ds', target => 'rk.dt', key => '{k}');
SELECT method, duplicates, null_keys FROM acme_migrate.reconcile_runs
WHERE run_id = (SELECT max(run_id) FROM acme_migrate.reconcile_runs);
SELECT kind, side, key FROM acme_migrate.diffs
WHERE run_id = (SELECT max(run_id) FROM acme_migrate.reconcile_runs) ORDER BY diff_no;
DELETE FROM rk.ds WHERE k IS NULL;
-- differing buckets holding more than a quarter of the rows
CREATE TABLE rk.ms (LIKE rk.ts INCLUDING ALL);
INSERT INTO rk.ms SELECT * FROM rk.ts;
UPDATE rk.ms SET a = -a WHERE a % 3 = 0;
SELECT * FROM rk.check('rk.ts', 'rk.ms', '{k}', 's.k = t.k', 'key->>''k''');
-- an empty target
CREATE TABLE rk.es (LIKE rk.dt INCLUDING ALL);
SELECT * FROM rk.check('rk.dt', 'rk.es', '{k}', 's.k = t.k', 'key->>''k''');
-- a key type without a hash opclass (bit)
CREATE TABLE rk.bs (k bit(12) PRIMARY KEY, v int);
INSERT INTO rk.bs SELECT g::bit(12), g FROM generate_series(0, 4000) g;
CREATE TABLE rk.bt (LIKE rk.bs INCLUDING ALL);
INSERT INTO rk.bt SELECT * FROM rk.bs WHERE v % 100 <> 0;
SELECT * FROM rk.check('rk.bs', 'rk.bt', '{k}', 's.k = t.k', '(key->>''k'')::bit(12)');
-- a view source (read once by the merge)
CREATE VIEW rk.tv AS SELECT * FROM rk.ts;
SELECT * FROM rk.check('rk.tv', 'rk.tt', '{k}', 's.k = t.k', 'key->>''k''');
-- a target key without a unique index
CREATE TABLE rk.xt (k text, a int, b text, c numeric);
INSERT INTO rk.xt SELECT * FROM rk.tt;
SELECT * FROM rk.check('rk.ts', 'rk.xt', '{k}', 's.k = t.k', 'key->>''k''');

--
-- through a job: text key, mapped columns in another order, a filter
--
CREATE TABLE rk.js (k text PRIMARY KEY, x int, y text);
INSERT INTO rk.js SELECT 'j' || g, g, 'y' || g FROM generate_series(1, 3000) g;
CREATE TABLE rk.jt (y text, k text PRIMARY KEY, x2 bigint);
SELECT acme_migrate_create('rk_job', 'rk.js', 'rk.jt',
	columns => '{"x2": "x * 2"}', filter => 'x OPERATOR(pg_catalog.<>) 13') > 0 AS created;
CALL acme_migrate_run('rk_job');
UPDATE rk.jt SET x2 = 0 WHERE k IN ('j5', 'j2999');
DELETE FROM rk.jt WHERE k = 'j100';
INSERT INTO rk.jt VALUES ('y', 'j13', 26);
SELECT source_rows, target_rows, missing, extra, changed, equal FROM acme_migrate_reconcile('rk_job');
SELECT method FROM acme_migrate.reconcile_runs
WHERE run_id = (SELECT max(run_id) FROM acme_migrate.reconcile_runs);
SELECT kind, key->>'k' AS k, changed_columns FROM acme_migrate.diffs
WHERE run_id = (SELECT max(run_id) FROM acme_migrate.reconcile_runs) ORDER BY diff_no;
SELECT acme_migrate_drop('rk_job');

--
-- the target's first read in a parallel worker while the leader reads the
-- source (any table of min_parallel_table_scan_size here): the same checks
-- against the oracle, for each key type and for integer ranges, and
-- reconcile_runs.parallel_workers says a worker read the target; then
-- where no worker may
--
CREATE TABLE rk.bs8 (id bigint PRIMARY KEY, v text);
INSERT INTO rk.bs8 SELECT g, md5(g::text) FROM generate_series(1, 20000) g;
CREATE TABLE rk.bt8 (LIKE rk.bs8 INCLUDING ALL);
INSERT INTO rk.bt8 SELECT * FROM rk.bs8 WHERE id % 1000 <> 7;
UPDATE rk.bt8 SET v = 'x' WHERE id % 1500 = 8;
INSERT INTO rk.bt8 VALUES (0, 'extra'), (30000, 'extra');
-- a target whose row count the catalog underestimates: more rows than the
-- worker has room to remember, so they are read again
CREATE TABLE rk.lt (LIKE rk.ts INCLUDING ALL) WITH (autovacuum_enabled = false);
INSERT INTO rk.lt SELECT * FROM rk.tt ORDER BY a LIMIT 10;
ANALYZE rk.lt;
INSERT INTO rk.lt SELECT * FROM rk.tt ORDER BY a OFFSET 10;
SET min_parallel_table_scan_size = 0;
SET max_parallel_workers_per_gather = 2;
CREATE FUNCTION rk.workers() RETURNS integer LANGUAGE sql AS
$$SELECT parallel_workers FROM acme_migrate.reconcile_runs ORDER BY run_id DESC LIMIT 1$$;
SELECT *, rk.workers() FROM rk.check('rk.ts', 'rk.tt', '{k}', 's.k = t.k', 'key->>''k''');
SELECT *, rk.workers() FROM rk.check('rk.us', 'rk.ut', '{id}', 's.id = t.id', '(key->>''id'')::uuid');
SELECT *, rk.workers() FROM rk.check('rk.cs', 'rk.ct', '{a,b}', 's.a = t.a AND s.b = t.b',
	'(key->>''a'')::int, key->>''b''');
SELECT *, rk.workers() FROM rk.check('rk.bs8', 'rk.bt8', '{id}', 's.id = t.id', '(key->>''id'')::bigint');
-- integer ranges, places handed back by the worker: only the differing rows
-- are read again
SELECT method, rows_merged = missing + extra + 2 * changed AS only_differing_rows
FROM acme_migrate.reconcile_runs
WHERE run_id = (SELECT max(run_id) FROM acme_migrate.reconcile_runs);
SELECT *, rk.workers() FROM rk.check('rk.ts', 'rk.lt', '{k}', 's.k = t.k', 'key->>''k''');
SELECT * FROM rk.same_as_merge('rk.ts', 'rk.tt', '{k}', 'a');
-- no difference
SELECT source_rows, target_rows, missing, extra, changed, equal, rk.workers()
FROM acme_migrate_reconcile(source => 'rk.ts', target => 'rk.tt0');
-- through a job (its mapping and filter read by the session, as its owner)
CREATE TABLE rk.jt2 (LIKE rk.jt INCLUDING ALL);
SELECT acme_migrate_create('rk_job2', 'rk.js', 'rk.jt2',
	columns => '{"x2": "x * 2"}', filter => 'x OPERATOR(pg_catalog.<>) 13') > 0 AS created;
CALL acme_migrate_run('rk_job2');
UPDATE rk.jt2 SET x2 = 0 WHERE k IN ('j5', 'j2999');
DELETE FROM rk.jt2 WHERE k = 'j100';
SELECT source_rows, target_rows, missing, extra, changed, equal, rk.workers()
FROM acme_migrate_reconcile('rk_job2');
SELECT kind, key->>'k' AS k, changed_columns FROM acme_migrate.diffs
WHERE run_id = (SELECT max(run_id) FROM acme_migrate.reconcile_runs) ORDER BY diff_no;
SELECT acme_migrate_drop('rk_job2');
-- direct reads only where the reader may read the whole tables as they are:
-- row-level security on the target, and a column the reader may not read,
-- are obeyed as the sides' queries obey them (the oracle runs as the same
-- role, under the same policy)
CREATE ROLE rk_reader;
GRANT USAGE ON SCHEMA rk TO rk_reader;
CREATE TABLE rk.us0 (LIKE rk.us INCLUDING ALL);
INSERT INTO rk.us0 SELECT * FROM rk.us;
GRANT SELECT ON rk.ts, rk.tt, rk.us0 TO rk_reader;
GRANT SELECT (id, v) ON rk.us TO rk_reader;
ALTER TABLE rk.tt ENABLE ROW LEVEL SECURITY;
CREATE POLICY rk_some ON rk.tt TO rk_reader USING (a % 100 <> 0);
SET ROLE rk_reader;
SELECT *, rk.workers() FROM rk.check('rk.ts', 'rk.tt', '{k}', 's.k = t.k', 'key->>''k''');
SELECT * FROM acme_migrate_reconcile(source => 'rk.us', target => 'rk.us0');
RESET ROLE;
DROP POLICY rk_some ON rk.tt;
ALTER TABLE rk.tt DISABLE ROW LEVEL SECURITY;
-- with direct reads of two tables, the leader and the worker share the
-- blocks of both; without the leader's participation the worker reads
-- them all (its buckets and places of both sides are what is compared)
SET parallel_leader_participation = off;
SELECT *, rk.workers() FROM rk.check('rk.ts', 'rk.tt', '{k}', 's.k = t.k', 'key->>''k''');
SELECT *, rk.workers() FROM rk.check('rk.us', 'rk.ut', '{id}', 's.id = t.id', '(key->>''id'')::uuid');
SELECT *, rk.workers() FROM rk.check('rk.cs', 'rk.ct', '{a,b}', 's.a = t.a AND s.b = t.b',
	'(key->>''a'')::int, key->>''b''');
SELECT *, rk.workers() FROM rk.check('rk.bs8', 'rk.bt8', '{id}', 's.id = t.id', '(key->>''id'')::bigint');
SELECT *, rk.workers() FROM rk.check('rk.ts', 'rk.lt', '{k}', 's.k = t.k', 'key->>''k''');
SELECT * FROM rk.same_as_merge('rk.ts', 'rk.tt', '{k}', 'a');
SELECT source_rows, target_rows, missing, extra, changed, equal, rk.workers()
FROM acme_migrate_reconcile(source => 'rk.ts', target => 'rk.tt0');
RESET parallel_leader_participation;
-- no worker: a temporary target, or none allowed
CREATE TEMP TABLE rk_tmp AS SELECT * FROM rk.tt;
ALTER TABLE rk_tmp ADD PRIMARY KEY (k);
SELECT *, rk.workers() FROM rk.check('rk.ts', 'rk_tmp', '{k}', 's.k = t.k', 'key->>''k''');
-- a temporary source read directly: the worker could not read it
SELECT *, rk.workers() FROM rk.check('rk_tmp', 'rk.ts', '{k}', 's.k = t.k', 'key->>''k''');
-- no worker free (none launched): the session reads both sides, also when
-- it would have left every block to the worker
SET max_parallel_workers = 0;
SELECT *, rk.workers() FROM rk.check('rk.us', 'rk.ut', '{id}', 's.id = t.id', '(key->>''id'')::uuid');
SET parallel_leader_participation = off;
SELECT *, rk.workers() FROM rk.check('rk.bs8', 'rk.bt8', '{id}', 's.id = t.id', '(key->>''id'')::bigint');
RESET parallel_leader_participation;
RESET max_parallel_workers;
SET max_parallel_workers_per_gather = 0;
SELECT *, rk.workers() FROM rk.check('rk.ts', 'rk.tt', '{k}', 's.k = t.k', 'key->>''k''');
SELECT *, rk.workers() FROM rk.check('rk.bs8', 'rk.bt8', '{id}', 's.id = t.id', '(key->>''id'')::bigint');
RESET max_parallel_workers_per_gather;
RESET min_parallel_table_scan_size;
DROP TABLE rk_tmp;

RESET client_min_messages;
DROP SCHEMA rk CASCADE;
DROP OWNED BY rk_reader;
DROP ROLE rk_reader;
