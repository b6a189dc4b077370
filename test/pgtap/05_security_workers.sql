-- Issue 9, findings 8 and 10, as a user's suite would assert them.
--
-- Names and discovery: a job another role may not see "does not exist"
-- (42704) for it, in every function, exactly as the catalog hides it;
-- depends_on is bound by id and a parent with dependents cannot be
-- dropped (2BP01).  Workers: the per-role cap is a superuser setting and is
-- enforced (fewer workers, then 53400); workers run as the job's owner; a
-- cancel reaches workers sleeping in their throttle; a superuser drops a
-- running job and nothing of it is left.
--
-- Workers only see committed data, so this file commits its objects (no
-- enclosing transaction) and removes them at the end.
\set ON_ERROR_STOP 1
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS acme_migrate;
SELECT acme_migrate_drop(job_name) FROM acme_migrate.jobs
 WHERE job_name IN ('pgtap_sw_child', 'pgtap_sw_w1', 'pgtap_sw_w2');
SELECT acme_migrate_drop(job_name) FROM acme_migrate.jobs
 WHERE job_name = 'pgtap_sw_parent';
DROP SCHEMA IF EXISTS pgtap_sw CASCADE;
DROP ROLE IF EXISTS pgtap_sw_alice, pgtap_sw_bob, pgtap_sw_dave;
CREATE ROLE pgtap_sw_alice LOGIN;
CREATE ROLE pgtap_sw_bob LOGIN;
CREATE ROLE pgtap_sw_dave LOGIN IN ROLE pgtap_sw_alice;
CREATE SCHEMA pgtap_sw AUTHORIZATION pgtap_sw_alice;
GRANT USAGE ON SCHEMA pgtap_sw TO PUBLIC;
SET ROLE pgtap_sw_alice;
CREATE TABLE pgtap_sw.src (id bigint PRIMARY KEY, v text);
INSERT INTO pgtap_sw.src SELECT g, md5(g::text) FROM generate_series(1, 20000) g;
ANALYZE pgtap_sw.src;
CREATE TABLE pgtap_sw.dst_parent (LIKE pgtap_sw.src INCLUDING ALL);
CREATE TABLE pgtap_sw.dst_child (LIKE pgtap_sw.src INCLUDING ALL);
CREATE TABLE pgtap_sw.dst_w1 (LIKE pgtap_sw.src INCLUDING ALL);
CREATE TABLE pgtap_sw.dst_w2 (LIKE pgtap_sw.src INCLUDING ALL);
SELECT acme_migrate_create('pgtap_sw_parent', 'pgtap_sw.src', 'pgtap_sw.dst_parent');
SELECT acme_migrate_create('pgtap_sw_child', 'pgtap_sw.src', 'pgtap_sw.dst_child',
	depends_on => '{pgtap_sw_parent}');
-- 50 rows a batch at one row a second: each worker sleeps for minutes
SELECT acme_migrate_create('pgtap_sw_w1', 'pgtap_sw.src', 'pgtap_sw.dst_w1',
	batch_size => 50, max_rows_per_second => 1);
SELECT acme_migrate_create('pgtap_sw_w2', 'pgtap_sw.src', 'pgtap_sw.dst_w2',
	batch_size => 50, max_rows_per_second => 1);
RESET ROLE;

-- true once q returns true, false after secs seconds
CREATE FUNCTION pg_temp.sw_wait(q text, secs integer) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
	ok boolean;
BEGIN
	FOR i IN 1 .. secs * 20 LOOP
		PERFORM pg_stat_clear_snapshot();
		EXECUTE q INTO ok;
		IF ok THEN
			RETURN true;
		END IF;
		PERFORM pg_sleep(0.05);
	END LOOP;
	RETURN false;
END $$;

SELECT plan(25);
-- pgTAP's own bookkeeping lives in temporary tables the roles must reach
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA pg_temp TO PUBLIC;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA pg_temp TO PUBLIC;

-- names and discovery ------------------------------------------------------
SET ROLE pgtap_sw_bob;
SELECT is((SELECT count(*)::integer FROM acme_migrate.jobs
			WHERE job_name LIKE 'pgtap_sw%'), 0,
	'bob sees none of alice''s jobs in the catalog');
SELECT throws_ok($$SELECT acme_migrate_batch('pgtap_sw_parent')$$,
	'42704', 'job "pgtap_sw_parent" does not exist',
	'acme_migrate_batch: alice''s job does not exist for bob');
SELECT throws_ok($$SELECT acme_migrate_drop('pgtap_sw_parent')$$,
	'42704', 'job "pgtap_sw_parent" does not exist',
	'acme_migrate_drop: alice''s job does not exist for bob');
SELECT throws_ok($$SELECT acme_migrate_pause('pgtap_sw_w1')$$,
	'42704', 'job "pgtap_sw_w1" does not exist',
	'acme_migrate_pause: alice''s job does not exist for bob');
SELECT throws_ok($$SELECT acme_migrate_alter('pgtap_sw_w1', batch_size => 1)$$,
	'42704', 'job "pgtap_sw_w1" does not exist',
	'acme_migrate_alter: alice''s job does not exist for bob');
SELECT throws_ok($$SELECT acme_migrate_start('pgtap_sw_w1')$$,
	'42704', 'job "pgtap_sw_w1" does not exist',
	'acme_migrate_start: alice''s job does not exist for bob');
SELECT throws_ok($$SELECT acme_migrate_cancel('pgtap_sw_w1')$$,
	'42704', 'job "pgtap_sw_w1" does not exist',
	'acme_migrate_cancel: alice''s job does not exist for bob');
SELECT throws_ok(
	$$SELECT acme_migrate_create('pgtap_sw_bobs', 'pgtap_sw.src', 'pgtap_sw.dst_child',
		depends_on => '{pgtap_sw_parent}')$$,
	'42704', 'job "pgtap_sw_parent" does not exist',
	'acme_migrate_create: bob cannot depend on alice''s job');
SELECT is(acme_migrate.job_visible('pgtap_sw_alice'::regrole), false,
	'job_visible(): alice''s jobs are hidden from bob');
SET ROLE pgtap_sw_dave;
SELECT is(acme_migrate.job_visible('pgtap_sw_alice'::regrole), true,
	'job_visible(): a role with alice''s privileges sees her jobs ...');
SELECT is((SELECT count(*)::integer FROM acme_migrate.jobs
			WHERE job_name LIKE 'pgtap_sw%'), 4,
	'... in the catalog ...');
SELECT lives_ok($$SELECT acme_migrate_alter('pgtap_sw_parent', batch_size => 5000)$$,
	'... and through the functions, as C and SQL apply one rule');
SET ROLE pgtap_sw_alice;
SELECT is(
	(SELECT c.depends_on_ids FROM acme_migrate.jobs c WHERE c.job_name = 'pgtap_sw_child'),
	ARRAY[(SELECT job_id FROM acme_migrate.jobs WHERE job_name = 'pgtap_sw_parent')],
	'the child is bound to its parent''s id');
SELECT throws_ok($$SELECT acme_migrate_drop('pgtap_sw_parent')$$,
	'2BP01', 'cannot drop job "pgtap_sw_parent" because job "pgtap_sw_child" depends on it',
	'a parent cannot be dropped while a job depends on it');

-- worker limits --------------------------------------------------------------
RESET ROLE;
SELECT is((SELECT setting || ' ' || context FROM pg_settings
			WHERE name = 'acme_migrate.max_workers_per_role'), '4 superuser',
	'acme_migrate.max_workers_per_role is 4 and only a superuser changes it');
SET ROLE pgtap_sw_alice;
SELECT throws_ok($$SET acme_migrate.max_workers_per_role = 100$$, '42501', NULL,
	'a job owner cannot raise the limit for itself');
RESET ROLE;
SET acme_migrate.max_workers_per_role = 1;
SET ROLE pgtap_sw_alice;
SELECT is(acme_migrate_start('pgtap_sw_w1', workers => 2), 1,
	'with max_workers_per_role = 1, a start asking for 2 workers gets 1');
SELECT throws_ok($$SELECT acme_migrate_start('pgtap_sw_w2')$$, '53400',
	'could not start workers for job "pgtap_sw_w2"',
	'the role''s next job gets none: 53400');
SELECT is((SELECT state FROM acme_migrate.jobs WHERE job_name = 'pgtap_sw_w2'), 'created',
	'the refused start left the job as it was');
RESET ROLE;
RESET acme_migrate.max_workers_per_role;

SELECT ok(pg_temp.sw_wait($$SELECT EXISTS (SELECT FROM pg_stat_activity
		WHERE backend_type = 'acme_migrate worker'
		  AND query LIKE 'acme_migrate job pgtap_sw_w1: worker % sleeping %')$$, 60),
	'the worker copied a batch and sleeps in its throttle');
SELECT is((SELECT string_agg(DISTINCT usename, ',') FROM pg_stat_activity
			WHERE backend_type = 'acme_migrate worker'
			  AND application_name = 'acme_migrate job ' ||
				  (SELECT job_id FROM acme_migrate.jobs WHERE job_name = 'pgtap_sw_w1')),
	'pgtap_sw_alice', 'the worker runs as the job''s owner, not as a superuser');

SET ROLE pgtap_sw_alice;
SELECT acme_migrate_cancel('pgtap_sw_w1');
SELECT acme_migrate_start('pgtap_sw_w2', workers => 2);
RESET ROLE;
SELECT ok(pg_temp.sw_wait($$SELECT NOT EXISTS (SELECT FROM pg_stat_activity
		WHERE backend_type = 'acme_migrate worker'
		  AND query LIKE 'acme_migrate job pgtap_sw_w1:%')$$, 4),
	'a cancel stops the sleeping worker within 4 s');
SELECT ok(pg_temp.sw_wait($$SELECT count(*) = 2 FROM pg_stat_activity
		WHERE backend_type = 'acme_migrate worker'
		  AND query LIKE 'acme_migrate job pgtap_sw_w2: worker % sleeping %'$$, 60),
	'the next job of the role starts its 2 workers, which sleep in their throttle');
SELECT is(acme_migrate_drop('pgtap_sw_w2'), true,
	'a superuser drops the running job');
SELECT is(
	(SELECT count(*)::integer FROM pg_stat_activity
	  WHERE backend_type = 'acme_migrate worker' AND query LIKE 'acme_migrate job pgtap_sw_w2%')
	+ (SELECT count(*)::integer FROM acme_migrate.jobs WHERE job_name = 'pgtap_sw_w2'),
	0, 'no worker and no catalog row of the dropped job is left');

SELECT * FROM finish();

SET client_min_messages = warning;
SELECT acme_migrate_drop(job_name) FROM acme_migrate.jobs
 WHERE job_name IN ('pgtap_sw_child', 'pgtap_sw_w1');
SELECT acme_migrate_drop('pgtap_sw_parent');
DROP SCHEMA pgtap_sw CASCADE;
DROP ROLE pgtap_sw_alice, pgtap_sw_bob, pgtap_sw_dave;
