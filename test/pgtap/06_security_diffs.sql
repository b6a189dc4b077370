-- Copies of rows in the catalog: reconcile lists at most max_diffs (10000
-- by default) with exact counts, acme_migrate.store_row_data off keeps
-- only keys and column names, and acme_migrate_purge deletes a role's own
-- runs and history, never another role's (admins purge everyone's).
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS acme_migrate;

SELECT plan(24);

CREATE ROLE pgtap_dl_alice NOLOGIN;
CREATE ROLE pgtap_dl_bob NOLOGIN;
CREATE ROLE pgtap_dl_carol NOLOGIN IN ROLE acme_migrate_admin;
CREATE SCHEMA pgtap_dl_alice AUTHORIZATION pgtap_dl_alice;
CREATE SCHEMA pgtap_dl_bob AUTHORIZATION pgtap_dl_bob;
GRANT USAGE ON SCHEMA pgtap_dl_alice, pgtap_dl_bob TO PUBLIC;
-- pgTAP's own bookkeeping lives in temporary tables the roles must reach
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA pg_temp TO PUBLIC;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA pg_temp TO PUBLIC;

-- what a role's purge may delete: its runs with their diffs, and the
-- rejects, errors and batches of its jobs (read as superuser)
CREATE FUNCTION pg_temp.dl_rows(r regrole) RETURNS bigint LANGUAGE sql AS $$
	SELECT (SELECT count(*) FROM acme_migrate.reconcile_runs WHERE owner = r)
		 + (SELECT count(*) FROM acme_migrate.diffs d
			  JOIN acme_migrate.reconcile_runs x USING (run_id) WHERE x.owner = r)
		 + (SELECT count(*) FROM acme_migrate.rejects t
			  JOIN acme_migrate.jobs j USING (job_id) WHERE j.owner = r)
		 + (SELECT count(*) FROM acme_migrate.errors t
			  JOIN acme_migrate.jobs j USING (job_id) WHERE j.owner = r)
		 + (SELECT count(*) FROM acme_migrate.batches t
			  JOIN acme_migrate.jobs j USING (job_id) WHERE j.owner = r)
$$;

-- alice: 12,000 rows, one batch of 100 copied with one reject
SET LOCAL ROLE pgtap_dl_alice;
CREATE TABLE pgtap_dl_alice.src (id integer PRIMARY KEY, v text NOT NULL);
INSERT INTO pgtap_dl_alice.src
SELECT g, CASE WHEN g = 7 THEN 'bad' ELSE 'v' || g END FROM generate_series(1, 12000) g;
CREATE TABLE pgtap_dl_alice.dst (id integer PRIMARY KEY, v text NOT NULL CHECK (v <> 'bad'));
DO $$
BEGIN
	PERFORM acme_migrate_create('pgtap_dl_alice_job', 'pgtap_dl_alice.src',
		'pgtap_dl_alice.dst', on_error => 'reject', batch_size => 100);
	PERFORM acme_migrate_batch('pgtap_dl_alice_job');
END
$$;
CREATE TEMP TABLE pgtap_dl_alice_run AS
SELECT * FROM acme_migrate_reconcile('pgtap_dl_alice_job');

SELECT is((SELECT missing FROM pgtap_dl_alice_run),
	(SELECT count(*) FROM pgtap_dl_alice.src s FULL JOIN pgtap_dl_alice.dst t USING (id)
	  WHERE t.id IS NULL),
	'missing counts every row past max_diffs (FULL JOIN oracle)');
SELECT is((SELECT changed + extra FROM pgtap_dl_alice_run),
	(SELECT count(*) FROM pgtap_dl_alice.src s FULL JOIN pgtap_dl_alice.dst t USING (id)
	  WHERE s.id IS NULL OR (t.id IS NOT NULL AND s.v IS DISTINCT FROM t.v)),
	'changed and extra count as the oracle does');
SELECT is((SELECT ROW(r.max_diffs, r.truncated, (SELECT count(*) FROM acme_migrate.diffs d
											  WHERE d.run_id = r.run_id))::text
		   FROM acme_migrate.reconcile_runs r
		  WHERE r.run_id = (SELECT run_id FROM pgtap_dl_alice_run)),
	'(10000,t,10000)',
	'max_diffs defaults to 10000: that many are listed and the run says it was truncated');
SELECT is((SELECT count(*)::integer FROM acme_migrate.rejects WHERE source_row IS NOT NULL), 1,
	'with store_row_data on, a reject keeps its row');
SELECT isnt(obj_description('acme_migrate_purge(interval, text)'::regprocedure, 'pg_proc'), NULL,
	'acme_migrate_purge has a comment');
-- an ad hoc run of alice's, which a purge of her job leaves alone
CREATE TABLE pgtap_dl_alice.src_copy (LIKE pgtap_dl_alice.src INCLUDING ALL);
INSERT INTO pgtap_dl_alice.src_copy SELECT * FROM pgtap_dl_alice.src;
DO $$
BEGIN
	PERFORM acme_migrate_reconcile(source => 'pgtap_dl_alice.src',
		target => 'pgtap_dl_alice.src_copy');
END
$$;

-- bob: a small job, a batch, a run with three differences
SET LOCAL ROLE pgtap_dl_bob;
CREATE TABLE pgtap_dl_bob.src (id integer PRIMARY KEY, v text NOT NULL);
INSERT INTO pgtap_dl_bob.src SELECT g, 'b' || g FROM generate_series(1, 30) g;
CREATE TABLE pgtap_dl_bob.dst (id integer PRIMARY KEY, v text NOT NULL);
DO $$
BEGIN
	PERFORM acme_migrate_create('pgtap_dl_bob_job', 'pgtap_dl_bob.src', 'pgtap_dl_bob.dst');
	PERFORM acme_migrate_batch('pgtap_dl_bob_job');
	DELETE FROM pgtap_dl_bob.dst WHERE id <= 3;
	PERFORM acme_migrate_reconcile('pgtap_dl_bob_job');
END
$$;

SELECT is((SELECT count(*)::integer FROM acme_migrate.reconcile_runs), 1,
	'bob sees only his own run');
SELECT throws_ok($$DELETE FROM acme_migrate.diffs$$, '42501', NULL,
	'bob cannot delete diffs by hand');
SELECT throws_ok($$SELECT acme_migrate_purge('0', job => 'pgtap_dl_alice_job')$$,
	'42704', 'job "pgtap_dl_alice_job" does not exist',
	'bob cannot purge alice''s job: for him it does not exist');
SELECT is(acme_migrate_purge(), 0::bigint,
	'the default purge keeps what is younger than 30 days');
SELECT throws_ok($$SET acme_migrate.store_row_data = off$$, '42501', NULL,
	'a user cannot change acme_migrate.store_row_data');

RESET ROLE;
CREATE TEMP TABLE pgtap_dl_counts AS
SELECT pg_temp.dl_rows('pgtap_dl_alice') AS alice, pg_temp.dl_rows('pgtap_dl_bob') AS bob;
GRANT SELECT ON pgtap_dl_counts TO PUBLIC;
SELECT cmp_ok((SELECT bob FROM pgtap_dl_counts), '>', 0::bigint, 'bob has runs and history to purge');

SET LOCAL ROLE pgtap_dl_carol;
SELECT is((SELECT count(*)::integer FROM acme_migrate.reconcile_runs), 3,
	'an acme_migrate_admin member sees every role''s runs');

SET LOCAL ROLE pgtap_dl_bob;
SELECT is(acme_migrate_purge('0'), (SELECT bob FROM pgtap_dl_counts),
	'bob''s purge deletes exactly his own runs, diffs and history');
SELECT is(acme_migrate_purge('0'), 0::bigint, 'a second purge finds nothing left');

RESET ROLE;
SELECT is(pg_temp.dl_rows('pgtap_dl_alice'), (SELECT alice FROM pgtap_dl_counts),
	'bob''s purge left every row of alice''s');
SELECT is(pg_temp.dl_rows('pgtap_dl_bob'), 0::bigint, 'nothing of bob''s is left');

SET LOCAL ROLE pgtap_dl_alice;
SELECT is(acme_migrate_purge('0', job => 'pgtap_dl_alice_job'),
	(SELECT alice - 1 FROM pgtap_dl_counts),
	'alice''s purge of her job deletes its run, diffs, reject and batch');
SELECT is((SELECT count(*)::integer FROM acme_migrate.reconcile_runs WHERE job_id IS NULL), 1,
	'her ad hoc run is left');
SELECT is((SELECT last_key FROM acme_migrate.jobs WHERE job_name = 'pgtap_dl_alice_job'),
	'{100}'::text[], 'the job keeps its checkpoint');
-- its reconcile above found the rows still to copy and paused it (stop
-- rule, 1.1): resumed, it goes on
DO $$
BEGIN
	PERFORM acme_migrate_resume('pgtap_dl_alice_job');
END
$$;
SELECT is(acme_migrate_batch('pgtap_dl_alice_job'), 100::bigint,
	'and copies its next batch from there');

-- store_row_data off (a superuser's setting, in force for alice too)
RESET ROLE;
SET LOCAL acme_migrate.store_row_data = off;
UPDATE pgtap_dl_alice.src SET v = 'bad' WHERE id = 250;
SET LOCAL ROLE pgtap_dl_alice;
DO $$
BEGIN
	PERFORM acme_migrate_batch('pgtap_dl_alice_job');
END
$$;
SELECT is((SELECT ROW(count(*), count(key), count(source_row))::text FROM acme_migrate.rejects),
	'(1,1,0)', 'with store_row_data off, a reject keeps its key only');
CREATE TEMP TABLE pgtap_dl_alice_run2 AS
SELECT * FROM acme_migrate_reconcile('pgtap_dl_alice_job', max_diffs => NULL);
SELECT is((SELECT ROW(count(*), count(key), count(source_row) + count(target_row))::text
		   FROM acme_migrate.diffs WHERE run_id = (SELECT run_id FROM pgtap_dl_alice_run2)),
	ROW((SELECT missing + extra + changed FROM pgtap_dl_alice_run2),
		(SELECT missing + extra + changed FROM pgtap_dl_alice_run2), 0)::text,
	'with store_row_data off, diffs keep keys and no row copies');

SET LOCAL ROLE pgtap_dl_carol;
CREATE TEMP TABLE pgtap_dl_all AS
SELECT (SELECT count(*) FROM acme_migrate.reconcile_runs)
	 + (SELECT count(*) FROM acme_migrate.diffs)
	 + (SELECT count(*) FROM acme_migrate.rejects)
	 + (SELECT count(*) FROM acme_migrate.errors)
	 + (SELECT count(*) FROM acme_migrate.batches) AS n;
SELECT is(acme_migrate_purge('0'), (SELECT n FROM pgtap_dl_all),
	'an admin''s purge deletes every role''s runs and history');
RESET ROLE;
SELECT is(pg_temp.dl_rows('pgtap_dl_alice'), 0::bigint,
	'alice''s runs and history are gone too');

SELECT * FROM finish();
ROLLBACK;
