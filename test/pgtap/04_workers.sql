-- Background workers: the SQL surface of acme_migrate_start / pause /
-- resume / cancel / wait and of acme_migrate.ranges, the errors a user can
-- cause (each with its SQLSTATE), the state machine of a job steered by
-- hand, and what a user's own suite asserts after a 2-worker copy.
--
-- Workers only see committed data, so unlike the other suites this file
-- does not run in one transaction: it commits its tables and jobs, and
-- removes them at the end.  It expects acme_migrate in
-- shared_preload_libraries only for the defaults of its settings.
\set ON_ERROR_STOP 1
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS acme_migrate;
DROP SCHEMA IF EXISTS pgtap_w CASCADE;
SELECT acme_migrate_drop(job_name) FROM acme_migrate.jobs
 WHERE job_name IN ('pgtap_w', 'pgtap_w_steer');
CREATE SCHEMA pgtap_w;
CREATE TABLE pgtap_w.src (
	id		bigint PRIMARY KEY,
	amount	numeric(12,2) NOT NULL,
	note	text
);
INSERT INTO pgtap_w.src
SELECT g, (g % 997) / 4.0, CASE WHEN g % 7 <> 0 THEN md5(g::text) END
  FROM generate_series(1, 20000) g;
ANALYZE pgtap_w.src;
CREATE TABLE pgtap_w.dst (LIKE pgtap_w.src INCLUDING ALL);
CREATE TABLE pgtap_w.dst2 (LIKE pgtap_w.src INCLUDING ALL);
SELECT acme_migrate_create(job => 'pgtap_w', source => 'pgtap_w.src',
	target => 'pgtap_w.dst', batch_size => 1000);
SELECT acme_migrate_create(job => 'pgtap_w_steer', source => 'pgtap_w.src',
	target => 'pgtap_w.dst2', batch_size => 1000);
-- the functions' NOTICEs (already paused, progress lines ...) are not checked

SELECT plan(75);

-- functions: signatures, results, argument names, strictness, volatility
SELECT has_function('acme_migrate_start', ARRAY['text', 'integer'],
	'acme_migrate_start(text, integer) exists');
SELECT function_returns('acme_migrate_start', ARRAY['text', 'integer'], 'integer',
	'acme_migrate_start() returns the number of workers launched');
SELECT has_function('acme_migrate_pause', ARRAY['text'], 'acme_migrate_pause(text) exists');
SELECT function_returns('acme_migrate_pause', ARRAY['text'], 'boolean',
	'acme_migrate_pause() returns boolean');
SELECT has_function('acme_migrate_resume', ARRAY['text'], 'acme_migrate_resume(text) exists');
SELECT function_returns('acme_migrate_resume', ARRAY['text'], 'integer',
	'acme_migrate_resume() returns the number of workers launched');
SELECT has_function('acme_migrate_cancel', ARRAY['text'], 'acme_migrate_cancel(text) exists');
SELECT function_returns('acme_migrate_cancel', ARRAY['text'], 'boolean',
	'acme_migrate_cancel() returns boolean');
SELECT has_function('acme_migrate_wait', ARRAY['text', 'interval'],
	'acme_migrate_wait(text, interval) exists');
SELECT function_returns('acme_migrate_wait', ARRAY['text', 'interval'], 'text',
	'acme_migrate_wait() returns the state');
SELECT is(
	(SELECT array_agg(p.proname || '(' || array_to_string(p.proargnames, ',') || ')'
					  ORDER BY p.proname)::text
	   FROM pg_proc p
	  WHERE p.proname IN ('acme_migrate_start', 'acme_migrate_pause', 'acme_migrate_resume',
						  'acme_migrate_cancel', 'acme_migrate_wait')),
	'{acme_migrate_cancel(job),acme_migrate_pause(job),acme_migrate_resume(job),"acme_migrate_start(job,workers)","acme_migrate_wait(job,timeout)"}',
	'argument names (named arguments are interface)');
SELECT is(pg_get_function_arguments('acme_migrate_start(text, integer)'::regprocedure),
	'job text, workers integer DEFAULT 1', 'workers defaults to 1');
SELECT is(pg_get_function_arguments('acme_migrate_wait(text, interval)'::regprocedure),
	'job text, timeout interval DEFAULT NULL::interval', 'timeout defaults to NULL (no limit)');
SELECT is_strict('acme_migrate_start', ARRAY['text', 'integer'], 'acme_migrate_start() is strict');
SELECT is_strict('acme_migrate_pause', ARRAY['text'], 'acme_migrate_pause() is strict');
SELECT is_strict('acme_migrate_resume', ARRAY['text'], 'acme_migrate_resume() is strict');
SELECT is_strict('acme_migrate_cancel', ARRAY['text'], 'acme_migrate_cancel() is strict');
SELECT isnt_strict('acme_migrate_wait', ARRAY['text', 'interval'],
	'acme_migrate_wait() is not strict (a NULL timeout means no limit)');
SELECT is(
	(SELECT array_agg(DISTINCT provolatile)::text FROM pg_proc
	  WHERE proname IN ('acme_migrate_start', 'acme_migrate_pause', 'acme_migrate_resume',
						'acme_migrate_cancel', 'acme_migrate_wait')),
	'{v}', 'the five functions are volatile');
SELECT is(
	(SELECT count(*)::integer FROM pg_proc
	  WHERE proname IN ('acme_migrate_start', 'acme_migrate_pause', 'acme_migrate_resume',
						'acme_migrate_cancel', 'acme_migrate_wait')
		AND obj_description(oid, 'pg_proc') IS NOT NULL),
	5, 'the five functions have comments');

-- catalog: acme_migrate.ranges and jobs.workers
SELECT has_table('acme_migrate', 'ranges', 'table acme_migrate.ranges');
SELECT columns_are('acme_migrate', 'ranges',
	ARRAY['job_id', 'range_no', 'lo_key', 'hi_key', 'last_key', 'rows_read', 'state',
		  'updated_at'],
	'acme_migrate.ranges has its columns');
SELECT col_type_is('acme_migrate', 'ranges', 'lo_key', 'text[]', 'ranges.lo_key is text[]');
SELECT col_type_is('acme_migrate', 'ranges', 'hi_key', 'text[]', 'ranges.hi_key is text[]');
SELECT col_type_is('acme_migrate', 'ranges', 'last_key', 'text[]', 'ranges.last_key is text[]');
SELECT col_is_pk('acme_migrate', 'ranges', ARRAY['job_id', 'range_no'],
	'ranges: primary key (job_id, range_no)');
SELECT fk_ok('acme_migrate', 'ranges', 'job_id', 'acme_migrate', 'jobs', 'job_id',
	'ranges.job_id references jobs');
SELECT ok((SELECT relrowsecurity FROM pg_class WHERE oid = 'acme_migrate.ranges'::regclass),
	'row-level security is enabled on ranges');
SELECT is(
	(SELECT count(*)::integer FROM pg_attribute
	  WHERE attrelid = 'acme_migrate.ranges'::regclass AND attnum > 0 AND NOT attisdropped
		AND col_description(attrelid, attnum) IS NULL),
	0, 'every column of ranges has a comment');
SELECT ok(NOT has_table_privilege('public', 'acme_migrate.ranges', 'INSERT, UPDATE, DELETE'),
	'PUBLIC cannot write ranges');
SELECT has_column('acme_migrate', 'jobs', 'workers', 'jobs.workers');
SELECT col_type_is('acme_migrate', 'jobs', 'workers', 'integer', 'jobs.workers is integer');
SELECT col_default_is('acme_migrate', 'jobs', 'workers', 0, 'jobs.workers defaults to 0');

-- settings (defined by the library, whether preloaded or loaded on use)
SELECT is(current_setting('acme_migrate.max_workers'), '8', 'acme_migrate.max_workers defaults to 8');
SELECT is(current_setting('acme_migrate.naptime'), '10s', 'acme_migrate.naptime defaults to 10 s');
SELECT is(current_setting('acme_migrate.databases'), '', 'acme_migrate.databases defaults to every database');
SELECT is((SELECT context FROM pg_settings WHERE name = 'acme_migrate.naptime'), 'sighup',
	'acme_migrate.naptime is reloadable');

-- errors a user can cause
SELECT throws_ok($$SELECT acme_migrate_start('pgtap_w', workers => 0)$$,
	'22023', 'workers must be between 1 and 8', 'workers => 0 is refused');
SELECT throws_ok($$SELECT acme_migrate_start('pgtap_w', workers => 9)$$,
	'22023', 'workers must be between 1 and 8', 'more than acme_migrate.max_workers is refused');
SELECT throws_ok($$SELECT acme_migrate_start('pgtap_no_such_job')$$,
	'42704', 'job "pgtap_no_such_job" does not exist', 'start of an unknown job');
SELECT throws_ok($$SELECT acme_migrate_pause('pgtap_no_such_job')$$,
	'42704', NULL, 'pause of an unknown job');
SELECT throws_ok($$SELECT acme_migrate_wait('pgtap_no_such_job')$$,
	'42704', NULL, 'wait for an unknown job');
SELECT throws_ok($$SELECT acme_migrate_resume('pgtap_w')$$,
	'55000', 'cannot resume job "pgtap_w", which is created', 'a created job cannot be resumed');
SELECT throws_ok($$SELECT acme_migrate_wait('pgtap_w', timeout => '-1 s')$$,
	'22023', 'timeout must not be negative', 'a negative timeout is refused');
SELECT throws_ok($$SELECT acme_migrate_wait(NULL)$$,
	'22004', 'job must not be null', 'wait for a NULL job');
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT throws_ok($$SELECT acme_migrate_wait('pgtap_w', timeout => '1 s')$$,
	'25001', NULL, 'wait refuses a repeatable read transaction (it could not see progress)');
COMMIT;
SELECT is(acme_migrate_wait('pgtap_w', timeout => '0 s'), 'created',
	'wait with a zero timeout returns the state at once');
SELECT is((SELECT workers FROM acme_migrate.jobs WHERE job_name = 'pgtap_w'), 0,
	'refused starts leave the job as it was');

-- the state machine steered by hand (no worker started)
SELECT is(acme_migrate_pause('pgtap_w_steer'), true, 'a created job can be paused');
SELECT is((SELECT state FROM acme_migrate.jobs WHERE job_name = 'pgtap_w_steer'), 'paused',
	'... and is paused');
SELECT is(acme_migrate_pause('pgtap_w_steer'), false, 'pausing a paused job returns false');
SELECT is(acme_migrate_batch('pgtap_w_steer'), 0::bigint, 'a batch of a paused job copies nothing');
SELECT is(acme_migrate_resume('pgtap_w_steer'), 0,
	'resume of a job that never had workers launches none');
SELECT is((SELECT state FROM acme_migrate.jobs WHERE job_name = 'pgtap_w_steer'), 'running',
	'... and makes it running');
SELECT is(acme_migrate_batch('pgtap_w_steer'), 1000::bigint, 'a batch by hand copies again');
SELECT is(acme_migrate_cancel('pgtap_w_steer'), true, 'a running job can be cancelled');
SELECT is(acme_migrate_cancel('pgtap_w_steer'), false, 'cancelling a cancelled job returns false');
SELECT throws_ok($$SELECT acme_migrate_start('pgtap_w_steer')$$,
	'55000', NULL, 'a cancelled job cannot be started');
SELECT throws_ok($$SELECT acme_migrate_resume('pgtap_w_steer')$$,
	'55000', NULL, 'a cancelled job cannot be resumed');
SELECT throws_ok($$SELECT acme_migrate_pause('pgtap_w_steer')$$,
	'55000', NULL, 'a cancelled job cannot be paused');
SELECT is(acme_migrate_wait('pgtap_w_steer'), 'cancelled',
	'wait returns at once for a job that is not running');

-- a 2-worker copy, as a user's suite would check it
SELECT is(acme_migrate_start('pgtap_w', workers => 2), 2, 'acme_migrate_start launches 2 workers');
SELECT is(acme_migrate_start('pgtap_w', workers => 2), 0, 'a second start launches none');
SELECT is((SELECT (state, workers)::text FROM acme_migrate.jobs WHERE job_name = 'pgtap_w'),
	'(running,2)', 'the job is running with 2 workers');
SELECT is(acme_migrate_wait('pgtap_w', timeout => '2 min'), 'done', 'wait returns done');
SELECT set_eq('SELECT * FROM pgtap_w.dst', 'SELECT * FROM pgtap_w.src',
	'the target equals the source');
SELECT bag_eq('SELECT id FROM pgtap_w.dst', 'SELECT id FROM pgtap_w.src', 'every key once');
SELECT is((SELECT (rows_read, rows_copied, rows_rejected)::text
			 FROM acme_migrate.jobs WHERE job_name = 'pgtap_w'),
	'(20000,20000,0)', 'the job counted every row');
SELECT is((SELECT (count(*), count(*) FILTER (WHERE r.state = 'done'), sum(r.rows_read))::text
			 FROM acme_migrate.ranges r JOIN acme_migrate.jobs j USING (job_id)
			WHERE j.job_name = 'pgtap_w'),
	'(8,8,20000)', 'eight ranges (2 workers * 4), all done, adding up to every row');
SELECT is((SELECT (count(*) = max(j.batches_done), sum(b.rows_copied))::text
			 FROM acme_migrate.batches b JOIN acme_migrate.jobs j USING (job_id)
			WHERE j.job_name = 'pgtap_w'),
	'(t,20000)', 'the batch history lists every batch and every row');
SELECT is((SELECT count(*)::integer
			 FROM acme_migrate.batches b JOIN acme_migrate.jobs j USING (job_id)
			WHERE j.job_name = 'pgtap_w' AND b.backend_pid = pg_backend_pid()), 0,
	'the batches were copied by the workers, not by this session');
SELECT is((SELECT (state, rows_done, rows_total, percent)::text
			 FROM acme_migrate.progress WHERE job = 'pgtap_w'),
	'(done,20000,20000,100.0)', 'progress shows the job done at 100 percent');
SELECT is((SELECT count(*)::integer FROM acme_migrate.errors e JOIN acme_migrate.jobs j USING (job_id)
			WHERE j.job_name = 'pgtap_w'), 0, 'no error was recorded');
SELECT is(acme_migrate_start('pgtap_w', workers => 2), 0, 'starting a done job launches none');
SELECT throws_ok($$SELECT acme_migrate_pause('pgtap_w')$$,
	'55000', 'cannot pause job "pgtap_w", which is done', 'a done job cannot be paused');

SELECT * FROM finish();

-- the workers of the done job exit on their own; drop it once they have
DO $$
BEGIN
	FOR i IN 1 .. 600 LOOP
		EXIT WHEN NOT EXISTS (SELECT FROM pg_stat_activity
							   WHERE backend_type = 'acme_migrate worker'
								 AND datname = current_database());
		PERFORM pg_sleep(0.05);
	END LOOP;
END $$;
SELECT acme_migrate_drop(job_name) FROM acme_migrate.jobs
 WHERE job_name IN ('pgtap_w', 'pgtap_w_steer');
DROP SCHEMA pgtap_w CASCADE;
