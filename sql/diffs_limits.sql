--
-- What reconciliation keeps, and for how long: the list of differences is
-- capped (max_diffs, 10000 by default) while the counts stay exact (the
-- oracle is a FULL JOIN counting IS DISTINCT FROM rows); listing a
-- difference never reads the source again (a view source counts its row
-- evaluations); acme_migrate.store_row_data off keeps only keys and column
-- names in diffs and rejects; acme_migrate_purge deletes old runs and
-- history and nothing else.
--
CREATE EXTENSION acme_migrate;
CREATE SCHEMA dl;

-- run a statement, report its SQLSTATE and message instead of failing
CREATE FUNCTION dl.try(sql text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE sql;
	RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
	RETURN SQLSTATE || ': ' || SQLERRM;
END
$$;

-- the rows of the catalog, per table
CREATE FUNCTION dl.catalog_rows(OUT runs bigint, OUT diffs bigint,
	OUT rejects bigint, OUT errors bigint, OUT batches bigint,
	OUT jobs bigint, OUT ranges bigint)
LANGUAGE sql AS $$
	SELECT (SELECT count(*) FROM acme_migrate.reconcile_runs),
		   (SELECT count(*) FROM acme_migrate.diffs),
		   (SELECT count(*) FROM acme_migrate.rejects),
		   (SELECT count(*) FROM acme_migrate.errors),
		   (SELECT count(*) FROM acme_migrate.batches),
		   (SELECT count(*) FROM acme_migrate.jobs),
		   (SELECT count(*) FROM acme_migrate.ranges)
$$;

-- max_diffs defaults to 10000 in both forms
SELECT p.oid::regprocedure AS function,
	   pg_get_function_arguments(p.oid) LIKE '%max_diffs bigint DEFAULT 10000,%' AS max_diffs_10000
FROM pg_proc p WHERE p.proname = 'acme_migrate_reconcile'
ORDER BY p.oid::regprocedure::text;

--
-- 1. merge: 25,000 rows against a target missing a third of them, with
-- changed and extra rows; text keys, so the merge compares everything
--
CREATE TABLE dl.a_src (id text PRIMARY KEY, v text, n int);
INSERT INTO dl.a_src SELECT 'k' || lpad(g::text, 6, '0'), 'v' || g, g
FROM generate_series(1, 25000) g;
CREATE TABLE dl.a_tgt (LIKE dl.a_src INCLUDING ALL);
INSERT INTO dl.a_tgt SELECT * FROM dl.a_src WHERE n % 3 <> 0;
UPDATE dl.a_tgt SET v = v || '!' WHERE n % 7 = 0;
UPDATE dl.a_tgt SET n = NULL WHERE n % 11 = 0;
INSERT INTO dl.a_tgt SELECT 'x' || g, 'extra', g FROM generate_series(1, 50) g;

CREATE TEMP TABLE oracle_a AS
SELECT CASE WHEN t.id IS NULL THEN 'missing' WHEN s.id IS NULL THEN 'extra'
			ELSE 'changed' END AS kind,
	   coalesce(s.id, t.id) AS id
FROM dl.a_src s FULL JOIN dl.a_tgt t ON s.id = t.id
WHERE s.id IS NULL OR t.id IS NULL OR (s.v, s.n) IS DISTINCT FROM (t.v, t.n);
SELECT kind, count(*) FROM oracle_a GROUP BY kind ORDER BY kind;

CREATE TEMP TABLE run_a AS
SELECT * FROM acme_migrate_reconcile(source => 'dl.a_src', target => 'dl.a_tgt');
-- the counts are the oracle's, past the limit
SELECT r.missing = (SELECT count(*) FROM oracle_a WHERE kind = 'missing') AS missing_exact,
	   r.extra = (SELECT count(*) FROM oracle_a WHERE kind = 'extra') AS extra_exact,
	   r.changed = (SELECT count(*) FROM oracle_a WHERE kind = 'changed') AS changed_exact,
	   r.source_rows = (SELECT count(*) FROM dl.a_src) AS source_rows_exact,
	   r.target_rows = (SELECT count(*) FROM dl.a_tgt) AS target_rows_exact,
	   r.equal
FROM run_a r;
-- 10000 listed, the run says it was cut short
SELECT method, max_diffs, truncated,
	   (SELECT count(*) FROM acme_migrate.diffs d WHERE d.run_id = r.run_id) AS listed
FROM acme_migrate.reconcile_runs r WHERE run_id = (SELECT run_id FROM run_a);
-- every one listed is a difference of the oracle, the first 10000 in key order
SELECT count(*) AS listed_not_in_oracle
FROM acme_migrate.diffs d
WHERE d.run_id = (SELECT run_id FROM run_a)
  AND NOT EXISTS (SELECT FROM oracle_a o WHERE o.kind = d.kind AND o.id = d.key->>'id');
SELECT max(d.key->>'id') = (SELECT max(id) FROM (SELECT id FROM oracle_a
							ORDER BY id COLLATE "C" LIMIT 10000) f) AS first_in_key_order
FROM acme_migrate.diffs d WHERE d.run_id = (SELECT run_id FROM run_a);

-- max_diffs => NULL lists them all, 0 none; the counts never change
CREATE TEMP TABLE runs_m AS
SELECT m, r.* FROM (VALUES (NULL::bigint), (0), (12)) v(m),
	 LATERAL acme_migrate_reconcile(source => 'dl.a_src', target => 'dl.a_tgt', max_diffs => m) r;
SELECT m AS max_diffs, r.missing, r.extra, r.changed, rr.max_diffs AS recorded, rr.truncated,
	   (SELECT count(*) FROM acme_migrate.diffs d WHERE d.run_id = r.run_id) AS listed
FROM runs_m r JOIN acme_migrate.reconcile_runs rr USING (run_id)
ORDER BY m NULLS FIRST;
SELECT dl.try($$SELECT acme_migrate_reconcile(source => 'dl.a_src', target => 'dl.a_tgt', max_diffs => -1)$$);

--
-- 2. hash_ranges, through a job: 100,000 integer keys, 11,000 missing in a
-- block and 500 changed elsewhere, so few ranges differ
--
CREATE TABLE dl.b_src (id bigint PRIMARY KEY, v text NOT NULL);
INSERT INTO dl.b_src SELECT g, 'v' || g FROM generate_series(1, 100000) g;
CREATE TABLE dl.b_tgt (LIKE dl.b_src INCLUDING ALL);
INSERT INTO dl.b_tgt SELECT * FROM dl.b_src WHERE id NOT BETWEEN 20001 AND 31000;
UPDATE dl.b_tgt SET v = 'changed' WHERE id BETWEEN 60001 AND 60500;
SELECT acme_migrate_create('dl_b', 'dl.b_src', 'dl.b_tgt') > 0 AS created;
CREATE TEMP TABLE oracle_b AS
SELECT count(*) FILTER (WHERE t.id IS NULL) AS missing,
	   count(*) FILTER (WHERE s.id IS NULL) AS extra,
	   count(*) FILTER (WHERE s.id = t.id AND s.v IS DISTINCT FROM t.v) AS changed
FROM dl.b_src s FULL JOIN dl.b_tgt t ON s.id = t.id;
SELECT * FROM oracle_b;
CREATE TEMP TABLE run_b AS SELECT * FROM acme_migrate_reconcile('dl_b');
SELECT (r.missing, r.extra, r.changed) = (o.missing, o.extra, o.changed) AS counts_exact
FROM run_b r, oracle_b o;
SELECT method, max_diffs, truncated, ranges_merged < ranges_hashed / 4 AS few_ranges_merged,
	   (SELECT count(*) FROM acme_migrate.diffs d WHERE d.run_id = r.run_id) AS listed,
	   (SELECT count(*) FROM acme_migrate.diffs d WHERE d.run_id = r.run_id
		  AND d.kind = 'missing' AND (d.key->>'id')::bigint BETWEEN 20001 AND 30000) AS listed_in_key_order
FROM acme_migrate.reconcile_runs r WHERE run_id = (SELECT run_id FROM run_b);

--
-- 3. a view source is read once, however many differences are listed: its
-- name column calls a function that counts its evaluations
--
CREATE SEQUENCE dl.evaluations;
CREATE FUNCTION dl.counted(v text) RETURNS text LANGUAGE plpgsql VOLATILE AS $$
BEGIN
	PERFORM nextval('dl.evaluations');
	RETURN v;
END
$$;
CREATE TABLE dl.people (id text PRIMARY KEY, name text NOT NULL, email text NOT NULL);
INSERT INTO dl.people
SELECT 'p' || lpad(g::text, 5, '0'), 'name ' || g, 'user' || g || '@example.com'
FROM generate_series(1, 3000) g;
CREATE VIEW dl.people_v AS SELECT id, dl.counted(name) AS name, email FROM dl.people;
CREATE TABLE dl.people_copy (LIKE dl.people INCLUDING ALL);
INSERT INTO dl.people_copy SELECT * FROM dl.people;
-- evaluations since the last call
CREATE FUNCTION dl.evaluated() RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
	n bigint := nextval('dl.evaluations') - 1;
BEGIN
	PERFORM setval('dl.evaluations', 1, false);
	RETURN n;
END
$$;
SELECT dl.evaluated() >= 0 AS reset;
SELECT count(*) AS rows, dl.evaluated() AS evaluations FROM dl.people_v;
SELECT missing, changed, equal, dl.evaluated() AS evaluations
FROM acme_migrate_reconcile(source => 'dl.people_v', target => 'dl.people_copy', key => '{id}');
DELETE FROM dl.people_copy WHERE right(id, 1) IN ('1', '2', '3');
UPDATE dl.people_copy SET email = upper(email) WHERE right(id, 1) = '5';
SELECT missing, changed, equal, dl.evaluated() AS evaluations
FROM acme_migrate_reconcile(source => 'dl.people_v', target => 'dl.people_copy', key => '{id}');
SELECT method, truncated, (SELECT count(*) FROM acme_migrate.diffs d WHERE d.run_id = r.run_id) AS listed
FROM acme_migrate.reconcile_runs r ORDER BY run_id DESC LIMIT 1;
-- the rows listed are the ones compared: the view's values, the whole target row
SELECT kind, key, source_row, target_row, changed_columns FROM acme_migrate.diffs
WHERE run_id = (SELECT max(run_id) FROM acme_migrate.reconcile_runs) AND diff_no <= 4
ORDER BY diff_no;
-- the sampled comparison lists rows the same way
SELECT setseed(0.5);
CREATE TEMP TABLE run_s AS
SELECT * FROM acme_migrate_reconcile(source => 'dl.people_v', target => 'dl.people_copy',
									 key => '{id}', sample => 0.5);
SELECT bool_and(d.source_row = to_jsonb(p)) AS sampled_source_rows_right,
	   bool_and((d.kind = 'missing') = (d.target_row IS NULL)) AS target_row_unless_missing,
	   bool_and(d.target_row IS NULL OR d.target_row = to_jsonb(c)) AS sampled_target_rows_right,
	   count(*) > 0 AS some_listed
FROM run_s r
JOIN acme_migrate.diffs d USING (run_id)
JOIN dl.people p ON p.id = d.key->>'id'
LEFT JOIN dl.people_copy c ON c.id = d.key->>'id';

--
-- 4. acme_migrate.store_row_data
--
SHOW acme_migrate.store_row_data;
SELECT context FROM pg_settings WHERE name = 'acme_migrate.store_row_data';
-- rejects: one batch with copies, one without
CREATE TABLE dl.r_src (id int PRIMARY KEY, v int NOT NULL, secret text NOT NULL);
INSERT INTO dl.r_src SELECT g, CASE WHEN g % 10 = 0 THEN -g ELSE g END, 'secret ' || g
FROM generate_series(1, 100) g;
CREATE TABLE dl.r_tgt (id int PRIMARY KEY, v int NOT NULL CHECK (v > 0), secret text NOT NULL);
SELECT acme_migrate_create('dl_r', 'dl.r_src', 'dl.r_tgt', on_error => 'reject',
	batch_size => 50) > 0 AS created;
SELECT acme_migrate_batch('dl_r');
SET acme_migrate.store_row_data = off;
SELECT acme_migrate_batch('dl_r');
SELECT (key->>'id')::int <= 50 AS first_batch, count(*) AS rejects,
	   count(source_row) AS with_row, count(key) AS with_key,
	   bool_and(source_row IS NULL OR source_row->>'secret' LIKE 'secret %') AS rows_right
FROM acme_migrate.rejects GROUP BY 1 ORDER BY 1;
-- diffs: keys and column names only
SELECT missing, changed FROM acme_migrate_reconcile(source => 'dl.people_v',
	target => 'dl.people_copy', key => '{id}');
SELECT kind, count(*) AS listed, count(key) AS with_key, count(source_row) AS with_source_row,
	   count(target_row) AS with_target_row, count(changed_columns) AS with_changed_columns
FROM acme_migrate.diffs WHERE run_id = (SELECT max(run_id) FROM acme_migrate.reconcile_runs)
GROUP BY kind ORDER BY kind;
SELECT missing, changed FROM acme_migrate_reconcile(source => 'dl.people_v',
	target => 'dl.people_copy', key => '{id}', sample => 1);
SELECT count(*) AS listed, count(source_row) + count(target_row) AS row_copies
FROM acme_migrate.diffs WHERE run_id = (SELECT max(run_id) FROM acme_migrate.reconcile_runs);
RESET acme_migrate.store_row_data;
-- only superusers may change it
CREATE ROLE dl_user;
GRANT USAGE ON SCHEMA dl TO dl_user;
SET ROLE dl_user;
SELECT dl.try($$SET acme_migrate.store_row_data = off$$);
RESET ROLE;
REVOKE USAGE ON SCHEMA dl FROM dl_user;
DROP ROLE dl_user;

--
-- 5. acme_migrate_purge
--
-- an error, recorded by acme_migrate_run in a transaction of its own
CREATE VIEW dl.nulls AS
	SELECT * FROM (VALUES (1::bigint, 'a'), (NULL, 'b'), (3, 'c')) v(id, v);
CREATE TABLE dl.n_tgt (id bigint, v text);
SELECT acme_migrate_create('dl_n', 'dl.nulls', 'dl.n_tgt', key => '{id}',
	on_conflict => 'error') > 0 AS created;
\set VERBOSITY terse
CALL acme_migrate_run('dl_n');
\set VERBOSITY default
SELECT count(*) AS errors FROM acme_migrate.errors;

CREATE TEMP TABLE before AS SELECT * FROM dl.catalog_rows();
SELECT * FROM before;
-- bad arguments: an error, nothing deleted
SELECT dl.try($$SELECT acme_migrate_purge(NULL)$$);
SELECT dl.try($$SELECT acme_migrate_purge('-1 day')$$);
SELECT dl.try($$SELECT acme_migrate_purge('0', job => 'nope')$$);
SELECT dl.try($$SELECT acme_migrate_purge('1 day', job => NULL)$$);
SELECT (SELECT row(b.*) FROM before b) = (SELECT row(c.*) FROM dl.catalog_rows() c) AS unchanged;
-- by default only what is older than 30 days: a run made 40 days ago
UPDATE acme_migrate.reconcile_runs SET started_at = started_at - interval '40 days'
WHERE run_id = (SELECT run_id FROM run_a);
UPDATE acme_migrate.rejects SET rejected_at = rejected_at - interval '40 days'
WHERE (key->>'id')::int = 10;
SELECT acme_migrate_purge() = 1 + 10000 + 1 AS purged_the_old_run_and_reject;
SELECT (SELECT count(*) FROM acme_migrate.reconcile_runs WHERE run_id = (SELECT run_id FROM run_a)) AS old_run,
	   (SELECT count(*) FROM acme_migrate.diffs WHERE run_id = (SELECT run_id FROM run_a)) AS its_diffs,
	   (SELECT count(*) FROM acme_migrate.rejects) AS rejects_left;
-- one job: its runs, rejects and batches; nothing else
SELECT acme_migrate_purge('0', job => 'dl_r') =
	(SELECT count(*) FROM acme_migrate.rejects j) +
	(SELECT count(*) FROM acme_migrate.batches b JOIN acme_migrate.jobs j USING (job_id)
	  WHERE j.job_name = 'dl_r') AS purged_dl_r;
SELECT j.job_name, j.rows_read, j.last_key,
	   (SELECT count(*) FROM acme_migrate.batches b WHERE b.job_id = j.job_id) AS batches,
	   (SELECT count(*) FROM acme_migrate.errors e WHERE e.job_id = j.job_id) AS errors,
	   (SELECT count(*) FROM acme_migrate.reconcile_runs r WHERE r.job_id = j.job_id) AS runs
FROM acme_migrate.jobs j ORDER BY j.job_id;
-- everything older than now: the jobs and their checkpoints stay
CREATE TEMP TABLE before_all AS SELECT * FROM dl.catalog_rows();
SELECT acme_migrate_purge('0') =
	(SELECT runs + diffs + rejects + errors + batches FROM before_all) AS purged_all;
SELECT * FROM dl.catalog_rows();
-- and the job goes on from its checkpoint
SELECT acme_migrate_batch('dl_r');
SELECT state, rows_read, batches_done, (SELECT count(*) FROM dl.r_tgt) AS copied
FROM acme_migrate.jobs WHERE job_name = 'dl_r';
SELECT batch_no, first_key, last_key FROM acme_migrate.batches;
SELECT acme_migrate_purge('0');

SELECT acme_migrate_drop(job_name) FROM acme_migrate.jobs ORDER BY job_id;
DROP SCHEMA dl CASCADE;
DROP EXTENSION acme_migrate;
