-- Security of acme_migrate, as an attacker would try it: two unprivileged
-- roles (alice and mallory), an acme_migrate_admin member (carol) and the
-- superuser.
--
--  * search_path attacks: mallory plants a type (a domain whose CHECK
--    calls her function), functions and operators named like the ones our
--    SQL uses, in pg_temp, in public and in her own schema, puts them first
--    in her search_path, and calls every entry point.  Her functions log
--    the role they run as; none may ever run as anyone but her.
--  * a job's SQL runs as its owner: the superuser and carol run mallory's
--    job, whose filter and mapping log the role they run as.
--  * visibility and 42501 denials; workers run as the job's owner.
--
-- Workers only see committed data, so this file commits as it goes and
-- removes what it made at the end.
\set ON_ERROR_STOP 1
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS acme_migrate;

SELECT plan(74);

CREATE ROLE sec_alice LOGIN;
CREATE ROLE sec_mallory LOGIN;
CREATE ROLE sec_carol LOGIN IN ROLE acme_migrate_admin;
GRANT CREATE ON SCHEMA public TO sec_mallory;
-- pgTAP's own bookkeeping lives in temporary tables the roles must reach
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA pg_temp TO PUBLIC;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA pg_temp TO PUBLIC;

-- who ran what: every trap writes here
CREATE TABLE public.sec_log (trap text, ran_as name DEFAULT current_user);
GRANT INSERT, SELECT ON public.sec_log TO PUBLIC;

CREATE SCHEMA sec_alice AUTHORIZATION sec_alice;
CREATE SCHEMA sec_mallory AUTHORIZATION sec_mallory;
GRANT USAGE ON SCHEMA sec_alice, sec_mallory TO PUBLIC;

SET ROLE sec_alice;
CREATE TABLE sec_alice.src (id bigint PRIMARY KEY, v text NOT NULL);
INSERT INTO sec_alice.src SELECT g, 'a' || g FROM generate_series(1, 200) g;
CREATE TABLE sec_alice.dst (id bigint PRIMARY KEY, v text NOT NULL);
CREATE TABLE sec_alice.secret (s text);
INSERT INTO sec_alice.secret VALUES ('the combination is 1234');
CREATE TABLE sec_alice.partial (id bigint PRIMARY KEY, v text);
SELECT acme_migrate_create('sec_alice_job', 'sec_alice.src', 'sec_alice.dst',
	batch_size => 50);
RESET ROLE;

-- mallory's traps: each logs the role it runs as and tries to escalate
SET ROLE sec_mallory;
CREATE FUNCTION sec_mallory.trap(what text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO public.sec_log (trap) VALUES (what);
	BEGIN
		EXECUTE 'ALTER ROLE sec_mallory SUPERUSER';
	EXCEPTION WHEN OTHERS THEN
		NULL;
	END;
	RETURN true;
END
$$;
-- declared STABLE, as an attacker may: a job's filter must not be volatile
CREATE FUNCTION sec_mallory.strap(what text) RETURNS boolean
LANGUAGE sql STABLE AS $$ SELECT sec_mallory.trap(what) $$;
CREATE TABLE sec_mallory.src (id bigint PRIMARY KEY, v text NOT NULL);
INSERT INTO sec_mallory.src SELECT g, 'm' || g FROM generate_series(1, 300) g;
CREATE TABLE sec_mallory.dst (id bigint PRIMARY KEY, v text NOT NULL, who text);
-- type traps: domains named like the types our SQL casts to
CREATE DOMAIN sec_mallory.text AS pg_catalog.text CHECK (sec_mallory.trap('domain sec_mallory.text'));
CREATE DOMAIN public.text AS pg_catalog.text CHECK (sec_mallory.trap('domain public.text'));
CREATE DOMAIN sec_mallory.int8 AS pg_catalog.int8 CHECK (sec_mallory.trap('domain sec_mallory.int8'));
CREATE DOMAIN sec_mallory.interval AS pg_catalog.interval CHECK (sec_mallory.trap('domain sec_mallory.interval'));
CREATE DOMAIN sec_mallory.jsonb AS pg_catalog.jsonb CHECK (sec_mallory.trap('domain sec_mallory.jsonb'));
-- function traps: names our SQL calls
CREATE FUNCTION sec_mallory.clock_timestamp() RETURNS timestamptz LANGUAGE plpgsql
	AS $$ BEGIN PERFORM sec_mallory.trap('function clock_timestamp'); RETURN now(); END $$;
CREATE FUNCTION public.count(anyelement) RETURNS bigint LANGUAGE plpgsql
	AS $$ BEGIN PERFORM sec_mallory.trap('function public.count'); RETURN 0; END $$;
CREATE FUNCTION sec_mallory.date_part(text, interval) RETURNS double precision LANGUAGE plpgsql
	AS $$ BEGIN PERFORM sec_mallory.trap('function date_part'); RETURN 0; END $$;
CREATE FUNCTION sec_mallory.jsonb_build_object(text, bigint) RETURNS jsonb LANGUAGE plpgsql
	AS $$ BEGIN PERFORM sec_mallory.trap('function jsonb_build_object'); RETURN '{}'; END $$;
CREATE FUNCTION sec_mallory.to_jsonb(anyelement) RETURNS jsonb LANGUAGE plpgsql
	AS $$ BEGIN PERFORM sec_mallory.trap('function to_jsonb'); RETURN '{}'; END $$;
-- operator traps: = on text and bigint, > on bigint
CREATE FUNCTION sec_mallory.eq_text(text, text) RETURNS boolean LANGUAGE plpgsql
	AS $$ BEGIN PERFORM sec_mallory.trap('operator = (text, text)'); RETURN $1 OPERATOR(pg_catalog.=) $2; END $$;
CREATE OPERATOR sec_mallory.= (LEFTARG = pg_catalog.text, RIGHTARG = pg_catalog.text, FUNCTION = sec_mallory.eq_text);
CREATE FUNCTION sec_mallory.eq_int8(bigint, bigint) RETURNS boolean LANGUAGE plpgsql
	AS $$ BEGIN PERFORM sec_mallory.trap('operator = (bigint, bigint)'); RETURN $1 OPERATOR(pg_catalog.=) $2; END $$;
CREATE OPERATOR public.= (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = sec_mallory.eq_int8);
CREATE FUNCTION sec_mallory.gt_int8(bigint, bigint) RETURNS boolean LANGUAGE plpgsql
	AS $$ BEGIN PERFORM sec_mallory.trap('operator > (bigint, bigint)'); RETURN $1 OPERATOR(pg_catalog.>) $2; END $$;
CREATE OPERATOR sec_mallory.> (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = sec_mallory.gt_int8);
-- the job whose filter and mapping log who runs them
SELECT acme_migrate_create('sec_mallory_job', 'sec_mallory.src', 'sec_mallory.dst',
	batch_size => 100, filter => 'sec_mallory.strap(''job filter'')',
	columns => '{"who": "CASE WHEN sec_mallory.strap(''job mapping'') THEN current_user END"}');
RESET ROLE;

/* ---- 1. search_path attacks on every entry point ---- */

-- pg_temp first, then her schema and public, pg_catalog last: every
-- unqualified type, function or operator of ours would resolve to a trap.
-- No pgTAP function is called while the traps are in reach (pgTAP's own
-- SQL would spring them, as mallory): each call is plain, the file stops
-- at the first error, and the results are asserted afterwards.
SET ROLE sec_mallory;
CREATE DOMAIN pg_temp.text AS pg_catalog.text CHECK (sec_mallory.trap('domain pg_temp.text'));
CREATE DOMAIN pg_temp.int8 AS pg_catalog.int8 CHECK (sec_mallory.trap('domain pg_temp.int8'));
CREATE DOMAIN pg_temp.int4 AS pg_catalog.int4 CHECK (sec_mallory.trap('domain pg_temp.int4'));
CREATE DOMAIN pg_temp.bool AS pg_catalog.bool CHECK (sec_mallory.trap('domain pg_temp.bool'));
CREATE DOMAIN pg_temp.float8 AS pg_catalog.float8 CHECK (sec_mallory.trap('domain pg_temp.float8'));
SET search_path = pg_temp, sec_mallory, public, pg_catalog;
SELECT acme_migrate_create('sec_m2', 'sec_mallory.src', 'sec_mallory.dst',
	batch_size => 100, depends_on => ARRAY['sec_mallory_job'], max_rows_per_second => 1e6,
	lock_timeout => '1 s', batch_time_target => '1 s');
SELECT acme_migrate_batch('sec_mallory_job');
SELECT acme_migrate_alter('sec_m2', batch_size => 77, max_rows_per_second => 0,
	lock_timeout => '2 s', max_error_rate => NULL);
SELECT acme_migrate_pause('sec_m2');
SELECT acme_migrate_resume('sec_m2');
SELECT acme_migrate_cancel('sec_m2');
SELECT acme_migrate_wait('sec_m2', timeout => '5 s');
SELECT pg_catalog.count(*) FROM acme_migrate.progress;
SELECT pg_catalog.count(*) FROM acme_migrate_reconcile('sec_mallory_job');
-- the ad hoc reconcile reads its target in a parallel worker (any table size)
SET min_parallel_table_scan_size = 0;
SET parallel_setup_cost = 0;
SELECT pg_catalog.count(*) FROM acme_migrate_reconcile(source => 'sec_mallory.src',
	target => 'sec_mallory.dst', max_diffs => 5);
RESET min_parallel_table_scan_size;
RESET parallel_setup_cost;
SELECT pg_catalog.count(*) FROM acme_migrate_table_hash('sec_mallory.src');
SELECT pg_catalog.count(*) FROM acme_migrate_range_hashes('sec_mallory.src', chunks => 4);
SELECT pg_catalog.count(acme_migrate_row_hash(s)) FROM sec_mallory.src s;
SELECT acme_migrate_drop('sec_m2');
SELECT acme_migrate_create('sec_m3', 'sec_mallory.src', 'sec_mallory.dst', batch_size => 100,
	on_conflict => 'update', filter => 'id OPERATOR(pg_catalog.>) 0');
CALL acme_migrate_run('sec_m3', max_batches => 2);
SELECT acme_migrate_start('sec_m3', workers => 2);
SELECT acme_migrate_wait('sec_m3', timeout => '60 s');
-- online migration under the same traps: capture, catch-up (rows replaced,
-- and upserted into a target with a trigger), cut-over, rollback
CREATE TABLE sec_mallory.osrc (id bigint PRIMARY KEY, v pg_catalog.text NOT NULL);
INSERT INTO sec_mallory.osrc SELECT g, 'o' OPERATOR(pg_catalog.||) g FROM pg_catalog.generate_series(1, 300) g;
CREATE TABLE sec_mallory.odst (id bigint PRIMARY KEY, v pg_catalog.text NOT NULL);
CREATE TABLE sec_mallory.odst2 (id bigint PRIMARY KEY, v pg_catalog.text NOT NULL);
CREATE FUNCTION sec_mallory.noop() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
CREATE TRIGGER noop AFTER UPDATE ON sec_mallory.odst2 FOR EACH ROW EXECUTE FUNCTION sec_mallory.noop();
SELECT acme_migrate_create('sec_online', 'sec_mallory.osrc', 'sec_mallory.odst', batch_size => 100,
	on_conflict => 'update', capture_changes => true);
SELECT acme_migrate_create('sec_online_rb', 'sec_mallory.osrc', 'sec_mallory.odst2', batch_size => 100,
	on_conflict => 'update', capture_changes => true);
SELECT acme_migrate_batch('sec_online');
UPDATE sec_mallory.osrc SET v = 'changed' WHERE id OPERATOR(pg_catalog.<=) 10;
DELETE FROM sec_mallory.osrc WHERE id OPERATOR(pg_catalog.=) 11;
INSERT INTO sec_mallory.osrc VALUES (1000, 'new');
CALL acme_migrate_run('sec_online');
CALL acme_migrate_run('sec_online_rb');
UPDATE sec_mallory.osrc SET v = 'again' WHERE id OPERATOR(pg_catalog.<=) 5;
SELECT acme_migrate_catch_up('sec_online');
SELECT acme_migrate_catch_up('sec_online_rb');
SELECT pg_catalog.count(*) FROM acme_migrate_cutover('sec_online');
SELECT pg_catalog.count(*) FROM acme_migrate_rollback('sec_online_rb');
RESET search_path;
DROP DOMAIN pg_temp.text, pg_temp.int8, pg_temp.int4, pg_temp.bool, pg_temp.float8;
RESET ROLE;

SELECT is((SELECT count(*)::integer FROM public.sec_log
			WHERE ran_as OPERATOR(pg_catalog.<>) 'sec_mallory'), 0,
	'no trap ever ran as another role than mallory');
SELECT is((SELECT pg_catalog.string_agg(DISTINCT trap, ', ') FROM public.sec_log
			WHERE trap NOT LIKE 'job %'), NULL,
	'no type, function or operator trap fired in create, batch, alter, pause, resume, cancel, wait, progress, reconcile, table_hash, range_hashes, row_hash, drop, run or start');
SELECT is((SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = 'sec_mallory'), false,
	'mallory is not a superuser');
SELECT is((SELECT count(*)::integer FROM acme_migrate.jobs WHERE job_name = 'sec_m2'), 0,
	'the job created, altered, paused, resumed, cancelled under the hostile search_path was dropped');
SELECT is((SELECT count(*)::integer FROM acme_migrate.reconcile_runs r
			WHERE r.owner = 'sec_mallory'::regrole), 2,
	'both reconciliations under the hostile search_path were recorded');
SELECT is((SELECT pg_catalog.max(r.parallel_workers) FROM acme_migrate.reconcile_runs r
			WHERE r.owner = 'sec_mallory'::regrole), 1,
	'the ad hoc one read its target in a parallel worker, and no trap fired there either');
SELECT is((SELECT state FROM acme_migrate.jobs WHERE job_name = 'sec_m3'), 'done',
	'the job run and started under a hostile search_path finished');
SELECT is((SELECT count(*)::integer FROM sec_mallory.dst), 300,
	'and copied every row');
SELECT is((SELECT search_path FROM acme_migrate.jobs WHERE job_name = 'sec_m3'),
	'pg_temp, sec_mallory, public, pg_catalog',
	'a job keeps the search_path it was created under, for its own SQL only');
SELECT is((SELECT rows_copied FROM acme_migrate.jobs WHERE job_name = 'sec_mallory_job'), 100::bigint,
	'the batch under the hostile search_path copied its rows');
SELECT is((SELECT pg_catalog.string_agg(job_name OPERATOR(pg_catalog.||) ' ' OPERATOR(pg_catalog.||) state, ', ' ORDER BY job_name)
			FROM acme_migrate.jobs WHERE job_name IN ('sec_online', 'sec_online_rb')),
	'sec_online cut_over, sec_online_rb rolled_back',
	'capture, catch-up, cut-over and rollback ran under the hostile search_path');
SELECT is((SELECT count(*)::integer FROM (
			SELECT * FROM sec_mallory.osrc EXCEPT ALL SELECT * FROM sec_mallory.odst) x),
	0, 'and the cut-over target holds the source with the writes made behind the copy');

-- a role's search_path set with ALTER ROLE reaches workers: the same traps
TRUNCATE public.sec_log;
ALTER ROLE sec_mallory SET search_path = sec_mallory, public, pg_catalog;
SET ROLE sec_mallory;
CREATE TABLE sec_mallory.dst4 (id bigint PRIMARY KEY, v text NOT NULL);
SELECT acme_migrate_create('sec_m4', 'sec_mallory.src', 'sec_mallory.dst4', batch_size => 50);
RESET ROLE;
SELECT acme_migrate_start('sec_m4', workers => 1);
SELECT is(acme_migrate_wait('sec_m4', timeout => '60 s'), 'done',
	'a worker of a role with a hostile search_path setting finishes');
SELECT is((SELECT count(*)::integer FROM public.sec_log), 0,
	'no type, function or operator trap fired in the worker');
ALTER ROLE sec_mallory RESET search_path;

/* ---- 2. a job's SQL runs as its owner, whoever calls ---- */

TRUNCATE public.sec_log;
TRUNCATE sec_mallory.dst;
SELECT acme_migrate_drop('sec_mallory_job');
SET ROLE sec_mallory;
SELECT acme_migrate_create('sec_mallory_job', 'sec_mallory.src', 'sec_mallory.dst',
	batch_size => 100, filter => 'sec_mallory.strap(''job filter'')',
	columns => '{"who": "CASE WHEN sec_mallory.strap(''job mapping'') THEN current_user END"}');
RESET ROLE;
-- the superuser runs it
SELECT is(acme_migrate_batch('sec_mallory_job'), 100::bigint,
	'the superuser runs a batch of mallory''s job');
SELECT is((SELECT pg_catalog.array_agg(DISTINCT ran_as)::text FROM public.sec_log), '{sec_mallory}',
	'its filter and mapping ran as mallory, not as the superuser');
SELECT is((SELECT pg_catalog.array_agg(DISTINCT who) FROM sec_mallory.dst), ARRAY['sec_mallory'],
	'current_user in its mapping is mallory');
CALL acme_migrate_run('sec_mallory_job', max_batches => 1);
SELECT is((SELECT pg_catalog.array_agg(DISTINCT ran_as)::text FROM public.sec_log), '{sec_mallory}',
	'acme_migrate_run by the superuser runs it as mallory');
SELECT ok((SELECT equal FROM acme_migrate_reconcile('sec_mallory_job')) IS NOT NULL,
	'the superuser reconciles mallory''s job');
SELECT is((SELECT pg_catalog.array_agg(DISTINCT ran_as)::text FROM public.sec_log), '{sec_mallory}',
	'reconcile of the job ran its SQL as mallory');
-- an admin member runs it
SET ROLE sec_carol;
SELECT is(acme_migrate_batch('sec_mallory_job'), 100::bigint,
	'an admin member runs a batch of mallory''s job');
RESET ROLE;
SELECT is((SELECT pg_catalog.array_agg(DISTINCT ran_as)::text FROM public.sec_log), '{sec_mallory}',
	'and its SQL ran as mallory, not as the admin');
SELECT is((SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = 'sec_mallory'), false,
	'mallory is still not a superuser');

-- a mapping that reads a table mallory may no longer read: it fails as
-- mallory, even when the superuser runs it
GRANT SELECT ON sec_alice.secret TO sec_mallory;
SET ROLE sec_mallory;
CREATE TABLE sec_mallory.loot (id bigint PRIMARY KEY, s text);
SELECT acme_migrate_create('sec_loot', 'sec_mallory.src', 'sec_mallory.loot',
	columns => '{"s": "(SELECT s FROM sec_alice.secret LIMIT 1)"}');
RESET ROLE;
REVOKE SELECT ON sec_alice.secret FROM sec_mallory;
SELECT throws_ok($$SELECT acme_migrate_batch('sec_loot')$$, '42501', NULL,
	'a superuser running the job cannot lend mallory the right to read alice''s secret');
SELECT is(current_user::text, 'postgres',
	'after the job''s error the caller is itself again');
SELECT is(current_setting('search_path'), '"$user", public',
	'and has its own search_path back');
SELECT is((SELECT count(*)::integer FROM sec_mallory.loot), 0,
	'nothing of the secret reached mallory''s table');
SET ROLE sec_mallory;
SELECT throws_ok($$SELECT acme_migrate_create('sec_loot2', 'sec_mallory.src', 'sec_mallory.loot',
	columns => '{"s": "(SELECT s FROM sec_alice.secret LIMIT 1)"}')$$, '42501', NULL,
	'creating a job whose mapping reads a table mallory may not read is refused');
RESET ROLE;

/* ---- 3. denials and visibility ---- */

SET ROLE sec_mallory;
SELECT throws_ok($$SELECT acme_migrate_create('sec_x1', 'sec_alice.src', 'sec_mallory.dst')$$,
	'42501', NULL, 'a job reading a table mallory may not read is refused');
SELECT throws_ok($$SELECT acme_migrate_create('sec_x2', 'sec_mallory.src', 'sec_alice.dst')$$,
	'42501', NULL, 'a job writing a table mallory may not write is refused');
RESET ROLE;
GRANT UPDATE ON sec_alice.dst TO sec_mallory;
SET ROLE sec_mallory;
SELECT throws_ok($$SELECT acme_migrate_create('sec_x3', 'sec_mallory.src', 'sec_alice.dst')$$,
	'42501', NULL, 'UPDATE alone on the target is not enough');
RESET ROLE;
GRANT INSERT (id), UPDATE ON sec_alice.dst TO sec_mallory;
SET ROLE sec_mallory;
SELECT throws_ok($$SELECT acme_migrate_create('sec_x4', 'sec_mallory.src', 'sec_alice.dst')$$,
	'42501', NULL, 'INSERT on some of the target''s mapped columns is not enough');
SELECT throws_ok($$SELECT * FROM acme_migrate_reconcile(source => 'sec_alice.src', target => 'sec_mallory.dst')$$,
	'42501', NULL, 'an ad hoc reconcile of a table mallory may not read is refused');
SELECT throws_ok($$SELECT * FROM acme_migrate_table_hash('sec_alice.secret')$$,
	'42501', NULL, 'table_hash of a table mallory may not read is refused');
SELECT throws_ok($$SELECT * FROM acme_migrate_range_hashes('sec_alice.src')$$,
	'42501', NULL, 'range_hashes of a table mallory may not read is refused');
SELECT throws_ok($$UPDATE acme_migrate.jobs SET state = 'done'$$, '42501', NULL,
	'mallory cannot write the catalog directly');
SELECT throws_ok($$DELETE FROM acme_migrate.batches$$, '42501', NULL,
	'mallory cannot delete batch history directly');
SELECT throws_ok($$INSERT INTO acme_migrate.ranges (job_id, range_no) VALUES (1, 1)$$, '42501', NULL,
	'mallory cannot insert ranges directly');
SELECT is((SELECT count(*)::integer FROM acme_migrate.jobs WHERE job_name = 'sec_alice_job'), 0,
	'mallory does not see alice''s job');
SELECT is((SELECT count(*)::integer FROM acme_migrate.progress WHERE job = 'sec_alice_job'), 0,
	'mallory does not see alice''s job in progress');
SELECT throws_ok($$SELECT acme_migrate_batch('sec_alice_job')$$, '42704', NULL,
	'alice''s job does not exist for mallory''s batch');
SELECT throws_ok($$SELECT acme_migrate_pause('sec_alice_job')$$, '42704', NULL,
	'alice''s job does not exist for mallory''s pause');
SELECT throws_ok($$SELECT acme_migrate_alter('sec_alice_job', batch_size => 1)$$, '42704', NULL,
	'alice''s job does not exist for mallory''s alter');
SELECT throws_ok($$SELECT acme_migrate_drop('sec_alice_job')$$, '42704', NULL,
	'alice''s job does not exist for mallory''s drop');
SELECT throws_ok($$SELECT * FROM acme_migrate_reconcile('sec_alice_job')$$, '42704', NULL,
	'alice''s job does not exist for mallory''s reconcile');
SELECT throws_ok($$SELECT acme_migrate_start('sec_alice_job')$$, '42704', NULL,
	'alice''s job does not exist for mallory''s start');
SELECT throws_ok($$SELECT acme_migrate_create('sec_dep', 'sec_mallory.src', 'sec_mallory.dst',
	depends_on => ARRAY['sec_alice_job'])$$, '42704', NULL,
	'mallory cannot make a job depend on alice''s');
SELECT throws_ok($$SELECT acme_migrate_create('sec_alice_job', 'sec_mallory.src', 'sec_mallory.dst')$$,
	'42710', NULL, 'job names are unique across roles');
RESET ROLE;

SET ROLE sec_carol;
SELECT is((SELECT count(*)::integer FROM acme_migrate.jobs
			WHERE job_name IN ('sec_alice_job', 'sec_mallory_job')), 2,
	'an admin member sees every role''s jobs');
SELECT lives_ok($$SELECT acme_migrate_alter('sec_alice_job', batch_size => 60)$$,
	'an admin member alters alice''s job');
SELECT is((SELECT batch_size FROM acme_migrate.jobs WHERE job_name = 'sec_alice_job'), 60,
	'and the change took');
SELECT throws_ok($$UPDATE acme_migrate.jobs SET state = 'done'$$, '42501', NULL,
	'an admin member cannot write the catalog directly either');
SELECT lives_ok($$SELECT acme_migrate_drop('sec_loot')$$,
	'an admin member drops mallory''s job');
SELECT is((SELECT count(*)::integer FROM acme_migrate.jobs WHERE job_name = 'sec_loot'), 0,
	'and it is gone');
RESET ROLE;

SET ROLE sec_alice;
SELECT is((SELECT count(*)::integer FROM acme_migrate.reconcile_runs
			WHERE owner = 'sec_mallory'::regrole), 0,
	'alice does not see mallory''s reconciliation runs');
SELECT is((SELECT count(*)::integer FROM acme_migrate.diffs d
			 JOIN acme_migrate.reconcile_runs r USING (run_id)
			WHERE r.owner = 'sec_mallory'::regrole), 0,
	'nor their diffs, which hold copies of mallory''s rows');
SELECT is((SELECT count(*)::integer FROM acme_migrate.batches b
			WHERE b.job_id IN (SELECT job_id FROM acme_migrate.jobs WHERE job_name LIKE 'sec\_m%')), 0,
	'nor the batch history of mallory''s jobs');
RESET ROLE;

/* ---- 4. workers run as the job's owner ---- */

SET ROLE sec_alice;
CREATE TABLE sec_alice.big (id bigint PRIMARY KEY, v text NOT NULL);
INSERT INTO sec_alice.big SELECT g, 'b' || g FROM generate_series(1, 5000) g;
CREATE TABLE sec_alice.big_dst (id bigint PRIMARY KEY, v text NOT NULL);
SELECT acme_migrate_create('sec_alice_slow', 'sec_alice.big', 'sec_alice.big_dst',
	batch_size => 10, max_rows_per_second => 50);
RESET ROLE;
SELECT is(acme_migrate_start('sec_alice_slow', workers => 1), 1,
	'the superuser starts alice''s slow job with a worker');
DO $$
BEGIN
	FOR i IN 1..100 LOOP
		EXIT WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity
						   WHERE backend_type = 'acme_migrate worker');
		PERFORM pg_catalog.pg_sleep(0.1);
	END LOOP;
END
$$;
SELECT is((SELECT pg_catalog.array_agg(DISTINCT usename::text) FROM pg_catalog.pg_stat_activity
			WHERE backend_type = 'acme_migrate worker'), ARRAY['sec_alice'],
	'its worker runs as alice (pg_stat_activity.usename), not as the superuser who started it');
SELECT ok((SELECT query FROM pg_catalog.pg_stat_activity
			WHERE backend_type = 'acme_migrate worker' LIMIT 1) LIKE '%sec_alice_slow%',
	'its query text names the job');
SELECT ok(acme_migrate_cancel('sec_alice_slow'), 'the job is cancelled');
SELECT is(acme_migrate_wait('sec_alice_slow', timeout => '30 s'), 'cancelled',
	'its worker stops');

/* ---- 5. the silent-loss findings, as a user's suite would assert them ---- */

SET ROLE sec_mallory;
CREATE TABLE sec_mallory.parted (id bigint PRIMARY KEY, v text NOT NULL) PARTITION BY RANGE (id);
CREATE TABLE sec_mallory.parted_lo PARTITION OF sec_mallory.parted FOR VALUES FROM (1) TO (100);
SELECT acme_migrate_create('sec_part', 'sec_mallory.src', 'sec_mallory.parted_lo');
SELECT throws_ok($$SELECT acme_migrate_batch('sec_part')$$, '23514', NULL,
	'a partition as target keeps its bounds (finding 3)');
SELECT throws_ok($$SELECT acme_migrate_create('sec_srf', 'sec_mallory.src', 'sec_mallory.dst4',
	columns => '{"v": "generate_series(1, 2)::text"}')$$, '0A000', NULL,
	'a set-returning mapping is refused at create (finding 4)');
CREATE TABLE sec_mallory.kt_src (id int PRIMARY KEY, v text);
INSERT INTO sec_mallory.kt_src SELECT g, 'k' FROM generate_series(1, 30) g;
CREATE TABLE sec_mallory.kt_dst (id text PRIMARY KEY, v text);
SELECT acme_migrate_create('sec_keytype', 'sec_mallory.kt_src', 'sec_mallory.kt_dst', batch_size => 10);
SELECT acme_migrate_batch('sec_keytype');
ALTER TABLE sec_mallory.kt_src ALTER COLUMN id TYPE text;
SELECT acme_migrate_batch('sec_keytype');
SELECT is((SELECT state FROM acme_migrate.jobs WHERE job_name = 'sec_keytype'), 'failed',
	'a key type changed between batches fails the job (finding 5)');
CREATE TABLE sec_mallory.case_src ("ID" int PRIMARY KEY, id int);
SELECT throws_ok($$SELECT acme_migrate_create('sec_case', 'sec_mallory.case_src', 'sec_mallory.kt_dst',
	key => '{ID}', columns => '{"id": "ID"}')$$, '42702', NULL,
	'an unquoted name hiding another column is refused (finding 6)');
SELECT throws_ok($$SELECT acme_migrate_create('sec_lock', 'sec_mallory.src', 'sec_mallory.dst4',
	lock_timeout => '1000 years')$$, '22023', NULL,
	'a lock_timeout over 24 days is refused (finding 7)');
SELECT throws_ok($$SELECT acme_migrate_batch('sec_keytype')$$, '55000', NULL,
	'a failed job stays failed');
RESET ROLE;
SELECT is(current_setting('acme_migrate.max_workers_per_role'), '4',
	'workers are capped per role (finding 8)');
SET ROLE sec_mallory;
SELECT throws_ok($$SET acme_migrate.max_workers_per_role = 100$$, '42501', NULL,
	'a user cannot raise the cap');
SELECT ok(acme_migrate_purge('0') >= 0, 'mallory purges her own runs (finding 9)');
RESET ROLE;
SELECT ok((SELECT count(*) FROM acme_migrate.reconcile_runs WHERE owner = 'sec_mallory'::regrole) = 0
		  AND (SELECT count(*) FROM acme_migrate.jobs WHERE job_name = 'sec_alice_job') = 1,
	'her purge removed her runs and nothing of alice''s');

/* ---- 6. the catalog's own functions pin search_path ---- */

SELECT is((SELECT pg_catalog.count(*)::integer FROM pg_catalog.pg_proc p
			 JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_proc'::regclass
				AND d.objid = p.oid AND d.deptype = 'e'
			 JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid AND e.extname = 'acme_migrate'
			WHERE p.prolang = (SELECT oid FROM pg_catalog.pg_language WHERE lanname = 'sql')
			  AND NOT EXISTS (SELECT 1 FROM pg_catalog.unnest(p.proconfig) c
							   WHERE c LIKE 'search_path=%')), 0,
	'every SQL function of the extension sets its own search_path');
SELECT is((SELECT pg_catalog.count(*)::integer FROM pg_catalog.pg_proc p
			 JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_proc'::regclass
				AND d.objid = p.oid AND d.deptype = 'e'
			 JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid AND e.extname = 'acme_migrate'
			WHERE p.prosecdef), 0,
	'no function of the extension is SECURITY DEFINER');

SELECT * FROM finish();

-- clean up (a cancelled worker may still be finishing its batch)
DO $$
BEGIN
	FOR i IN 1..300 LOOP
		EXIT WHEN NOT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity
							   WHERE backend_type = 'acme_migrate worker');
		PERFORM pg_catalog.pg_sleep(0.1);
	END LOOP;
END
$$;
SELECT acme_migrate_drop(job_name) FROM acme_migrate.jobs WHERE job_name LIKE 'sec\_%';
DROP SCHEMA sec_alice CASCADE;
DROP SCHEMA sec_mallory CASCADE;
DROP TABLE public.sec_log;
DROP DOMAIN IF EXISTS public.text;
DROP OPERATOR IF EXISTS public.= (bigint, bigint);
DROP FUNCTION IF EXISTS public.count(anyelement);
REVOKE CREATE ON SCHEMA public FROM sec_mallory;
DROP ROLE sec_alice;
DROP ROLE sec_mallory;
DROP ROLE sec_carol;
