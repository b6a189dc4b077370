-- acme_migrate SQL surface: functions with their exact signatures, the
-- catalog's tables, columns and view, and the constraints that keep the
-- catalog in valid states.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS acme_migrate;

SELECT plan(80);

-- functions and the procedure, found unqualified on the default search_path
SELECT has_function('acme_migrate_create',
	ARRAY['text', 'regclass', 'regclass', 'text[]', 'jsonb', 'text', 'integer',
		  'text', 'text', 'double precision', 'boolean', 'text[]',
		  'double precision', 'interval', 'interval', 'interval',
		  'jsonb', 'text', 'text', 'text'],
	'acme_migrate_create() has its 20 arguments (1.1)');
SELECT function_returns('acme_migrate_create',
	ARRAY['text', 'regclass', 'regclass', 'text[]', 'jsonb', 'text', 'integer',
		  'text', 'text', 'double precision', 'boolean', 'text[]',
		  'double precision', 'interval', 'interval', 'interval',
		  'jsonb', 'text', 'text', 'text'],
	'bigint', 'acme_migrate_create() returns the job id');
SELECT has_function('acme_migrate_batch', ARRAY['text'],
	'acme_migrate_batch(text) exists');
SELECT function_returns('acme_migrate_batch', ARRAY['text'], 'bigint',
	'acme_migrate_batch() returns the rows copied');
SELECT is_strict('acme_migrate_batch', ARRAY['text'],
	'acme_migrate_batch() is strict');
SELECT volatility_is('acme_migrate_batch', ARRAY['text'], 'volatile',
	'acme_migrate_batch() is volatile');
SELECT has_function('acme_migrate_run', ARRAY['text', 'bigint', 'interval'],
	'acme_migrate_run(text, bigint, interval) exists');
SELECT is_procedure('acme_migrate_run', ARRAY['text', 'bigint', 'interval'],
	'acme_migrate_run() is a procedure (it commits)');
SELECT has_function('acme_migrate_drop', ARRAY['text'],
	'acme_migrate_drop(text) exists');
SELECT function_returns('acme_migrate_drop', ARRAY['text'], 'boolean',
	'acme_migrate_drop() returns boolean');
SELECT is(
	(SELECT string_agg(array_to_string(p.proargnames, ','), ' ' ORDER BY p.proname)
	   FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid AND d.deptype = 'e'
	   JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'acme_migrate'
	  WHERE p.proname IN ('acme_migrate_create', 'acme_migrate_run')),
	'job,source,target,key,columns,filter,batch_size,on_conflict,on_error,max_error_rate,capture_changes,depends_on,max_rows_per_second,batch_time_target,max_replication_lag,lock_timeout,reverse_columns,capture_method,health_check,on_breach job,max_batches,max_time',
	'argument names of create and run (named arguments are interface)');
SELECT is(
	(SELECT count(*)::integer FROM pg_proc p
	   JOIN pg_depend d ON d.objid = p.oid AND d.deptype = 'e'
	   JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'acme_migrate'
	  WHERE obj_description(p.oid, 'pg_proc') IS NULL),
	0, 'every function of the extension has a comment');

-- catalog
SELECT has_schema('acme_migrate');
SELECT has_role('acme_migrate_admin');
SELECT has_table('acme_migrate', 'jobs', 'table acme_migrate.jobs');
SELECT has_table('acme_migrate', 'batches', 'table acme_migrate.batches');
SELECT has_table('acme_migrate', 'rejects', 'table acme_migrate.rejects');
SELECT has_table('acme_migrate', 'errors', 'table acme_migrate.errors');
SELECT has_view('acme_migrate', 'progress', 'view acme_migrate.progress');

SELECT has_pk('acme_migrate', 'jobs', 'jobs has a primary key');
SELECT col_is_pk('acme_migrate', 'jobs', 'job_id', 'jobs.job_id is the key');
SELECT col_is_unique('acme_migrate', 'jobs', ARRAY['job_name'],
	'job names are unique');
SELECT col_is_pk('acme_migrate', 'batches', ARRAY['job_id', 'batch_no'],
	'batches is keyed by job and batch number');
SELECT col_is_fk('acme_migrate', 'batches', 'job_id', 'batches.job_id references jobs');

SELECT col_type_is('acme_migrate', 'jobs', 'job_id', 'bigint', 'jobs.job_id is bigint');
SELECT col_type_is('acme_migrate', 'jobs', 'job_name', 'text', 'jobs.job_name is text');
SELECT col_type_is('acme_migrate', 'jobs', 'owner', 'regrole', 'jobs.owner is regrole');
SELECT col_type_is('acme_migrate', 'jobs', 'source_table', 'regclass', 'jobs.source_table is regclass');
SELECT col_type_is('acme_migrate', 'jobs', 'target_table', 'regclass', 'jobs.target_table is regclass');
SELECT col_type_is('acme_migrate', 'jobs', 'key_columns', 'text[]', 'jobs.key_columns is text[]');
SELECT col_type_is('acme_migrate', 'jobs', 'column_map', 'jsonb', 'jobs.column_map is jsonb');
SELECT col_type_is('acme_migrate', 'jobs', 'batch_size', 'integer', 'jobs.batch_size is integer');
SELECT col_type_is('acme_migrate', 'jobs', 'state', 'text', 'jobs.state is text');
SELECT col_type_is('acme_migrate', 'jobs', 'last_key', 'text[]', 'jobs.last_key is text[]');
SELECT col_type_is('acme_migrate', 'jobs', 'rows_read', 'bigint', 'jobs.rows_read is bigint');
SELECT col_type_is('acme_migrate', 'jobs', 'rows_copied', 'bigint', 'jobs.rows_copied is bigint');
SELECT col_type_is('acme_migrate', 'jobs', 'batches_done', 'bigint', 'jobs.batches_done is bigint');
SELECT col_not_null('acme_migrate', 'jobs', 'state', 'jobs.state is NOT NULL');
SELECT col_default_is('acme_migrate', 'jobs', 'state', 'created',
	'a new job is in state created');

SELECT ok(
	ARRAY['job_id', 'batch_no', 'first_key', 'last_key', 'rows_read',
		  'rows_copied', 'rows_rejected', 'method', 'started_at', 'duration',
		  'backend_pid']::name[]
	<@ (SELECT array_agg(attname) FROM pg_attribute
		 WHERE attrelid = 'acme_migrate.batches'::regclass AND attnum > 0
		   AND NOT attisdropped),
	'batches has the documented columns');
SELECT col_type_is('acme_migrate', 'batches', 'first_key', 'text[]', 'batches.first_key is text[]');
SELECT col_type_is('acme_migrate', 'batches', 'last_key', 'text[]', 'batches.last_key is text[]');
SELECT col_type_is('acme_migrate', 'batches', 'duration', 'interval', 'batches.duration is interval');

SELECT has_column('acme_migrate', 'rejects', 'key', 'rejects has key');
SELECT col_type_is('acme_migrate', 'rejects', 'key', 'jsonb', 'rejects.key is jsonb');
SELECT has_column('acme_migrate', 'rejects', 'source_row', 'rejects has source_row');
SELECT has_column('acme_migrate', 'rejects', 'sqlstate', 'rejects has sqlstate');
SELECT has_column('acme_migrate', 'rejects', 'message', 'rejects has message');
SELECT has_column('acme_migrate', 'errors', 'sqlstate', 'errors has sqlstate');
SELECT has_column('acme_migrate', 'errors', 'message', 'errors has message');
SELECT has_column('acme_migrate', 'errors', 'transient', 'errors has transient');

SELECT ok(
	ARRAY['job', 'state', 'workers', 'rows_done', 'rows_total', 'percent',
		  'rows_per_second', 'eta', 'rejected', 'last_error', 'started_at',
		  'updated_at']::name[]
	<@ (SELECT array_agg(attname) FROM pg_attribute
		 WHERE attrelid = 'acme_migrate.progress'::regclass AND attnum > 0),
	'progress has the documented columns');
SELECT col_type_is('acme_migrate', 'progress', 'eta', 'interval', 'progress.eta is interval');
SELECT col_type_is('acme_migrate', 'progress', 'rows_done', 'bigint', 'progress.rows_done is bigint');

SELECT is(
	(SELECT count(*)::integer FROM pg_class c
	  WHERE c.relnamespace = 'acme_migrate'::regnamespace AND c.relkind IN ('r', 'v')
	    AND obj_description(c.oid, 'pg_class') IS NULL),
	0, 'every catalog table and view has a comment');
SELECT is(
	(SELECT count(*)::integer FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
	  WHERE c.relnamespace = 'acme_migrate'::regnamespace AND c.relkind = 'r'
	    AND a.attnum > 0 AND NOT a.attisdropped
	    AND col_description(c.oid, a.attnum) IS NULL),
	0, 'every catalog column has a comment');

-- row-level security on the catalog tables
SELECT ok((SELECT relrowsecurity FROM pg_class WHERE oid = 'acme_migrate.jobs'::regclass),
	'row-level security is enabled on jobs');
SELECT ok((SELECT relrowsecurity FROM pg_class WHERE oid = 'acme_migrate.batches'::regclass),
	'row-level security is enabled on batches');
SELECT ok((SELECT relrowsecurity FROM pg_class WHERE oid = 'acme_migrate.rejects'::regclass),
	'row-level security is enabled on rejects');
SELECT ok((SELECT relrowsecurity FROM pg_class WHERE oid = 'acme_migrate.errors'::regclass),
	'row-level security is enabled on errors');
SELECT ok(NOT has_table_privilege('public', 'acme_migrate.jobs', 'INSERT, UPDATE, DELETE'),
	'PUBLIC cannot write acme_migrate.jobs');
SELECT ok(has_table_privilege('public', 'acme_migrate.jobs', 'SELECT'),
	'PUBLIC can read acme_migrate.jobs (its own rows)');

-- the catalog's CHECK constraints refuse invalid states (as superuser,
-- writing the catalog directly, which only the C code is meant to do)
CREATE TABLE pgtap_src (id integer PRIMARY KEY, v text);
CREATE TABLE pgtap_dst (id integer PRIMARY KEY, v text);
SELECT lives_ok(
	$$SELECT acme_migrate_create('pgtap_surface', 'pgtap_src', 'pgtap_dst')$$,
	'a job with the default options is created');
SELECT is((SELECT state FROM acme_migrate.jobs WHERE job_name = 'pgtap_surface'),
	'created', 'the new job is in state created');
SELECT is((SELECT owner FROM acme_migrate.jobs WHERE job_name = 'pgtap_surface'),
	current_user::regrole, 'the new job is owned by its creator');
SELECT is((SELECT key_columns FROM acme_migrate.jobs WHERE job_name = 'pgtap_surface'),
	ARRAY['id'], 'the default key is the source''s primary key');
SELECT is((SELECT (batch_size, on_conflict, on_error, capture_changes)::text
			 FROM acme_migrate.jobs WHERE job_name = 'pgtap_surface'),
	'(10000,update,abort,f)', 'documented defaults of batch_size, on_conflict, on_error, capture_changes');

SELECT throws_ok(
	$$UPDATE acme_migrate.jobs SET state = 'sleeping' WHERE job_name = 'pgtap_surface'$$,
	'23514', NULL, 'jobs.state outside the documented states is refused');
SELECT throws_ok(
	$$UPDATE acme_migrate.jobs SET batch_size = 0 WHERE job_name = 'pgtap_surface'$$,
	'23514', NULL, 'jobs.batch_size 0 is refused');
SELECT throws_ok(
	$$UPDATE acme_migrate.jobs SET on_conflict = 'ignore' WHERE job_name = 'pgtap_surface'$$,
	'23514', NULL, 'jobs.on_conflict outside update/skip/error is refused');
SELECT throws_ok(
	$$UPDATE acme_migrate.jobs SET on_error = 'skip' WHERE job_name = 'pgtap_surface'$$,
	'23514', NULL, 'jobs.on_error outside abort/reject is refused');
SELECT throws_ok(
	$$UPDATE acme_migrate.jobs SET max_error_rate = 1.5 WHERE job_name = 'pgtap_surface'$$,
	'23514', NULL, 'jobs.max_error_rate above 1 is refused');
SELECT throws_ok(
	$$UPDATE acme_migrate.jobs SET key_columns = '{}' WHERE job_name = 'pgtap_surface'$$,
	'23514', NULL, 'an empty key is refused');
SELECT throws_ok(
	$$UPDATE acme_migrate.jobs SET job_name = '' WHERE job_name = 'pgtap_surface'$$,
	'23514', NULL, 'an empty job name is refused');
SELECT throws_ok(
	$$UPDATE acme_migrate.jobs SET job_name = repeat('j', 64) WHERE job_name = 'pgtap_surface'$$,
	'23514', NULL, 'a job name longer than 63 characters is refused');
SELECT throws_ok(
	$$INSERT INTO acme_migrate.batches (job_id, batch_no, rows_read, rows_copied,
			rows_rejected, method, started_at, duration)
	  SELECT job_id, 1, 1, 1, 0, 'copy', now(), '1 s' FROM acme_migrate.jobs
	   WHERE job_name = 'pgtap_surface'$$,
	'23514', NULL, 'batches.method outside direct/sql is refused');
SELECT throws_ok(
	$$INSERT INTO acme_migrate.batches (job_id, batch_no, rows_read, rows_copied,
			rows_rejected, method, started_at, duration)
	  SELECT job_id, 1, -1, 0, 0, 'sql', now(), '1 s' FROM acme_migrate.jobs
	   WHERE job_name = 'pgtap_surface'$$,
	'23514', NULL, 'negative batches.rows_read is refused');
SELECT throws_ok(
	$$INSERT INTO acme_migrate.batches (job_id, batch_no, rows_read, rows_copied,
			rows_rejected, method, started_at, duration)
	  VALUES (-1, 1, 1, 1, 0, 'sql', now(), '1 s')$$,
	'23503', NULL, 'a batch of no job is refused');
SELECT throws_ok(
	$$INSERT INTO acme_migrate.rejects (job_id, key, sqlstate, message)
	  SELECT job_id, '{}', '2200', 'x' FROM acme_migrate.jobs
	   WHERE job_name = 'pgtap_surface'$$,
	'23514', NULL, 'a SQLSTATE that is not 5 characters is refused');
SELECT throws_ok(
	$$SELECT acme_migrate_create('pgtap_surface', 'pgtap_src', 'pgtap_dst')$$,
	'42710', 'job "pgtap_surface" already exists',
	'a second job with the same name is refused');

SELECT * FROM finish();
ROLLBACK;
