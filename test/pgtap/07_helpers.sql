-- The pgTAP helpers acme_migrate_is_done and acme_migrate_is_reconciled:
-- their surface (SECURITY INVOKER, pinned search_path, comments) and what
-- they return, passing and failing, checked with pgTAP's check_test: the
-- result, the description and the diagnostics (state and counts of a job
-- not done; counts and the first differing keys of a job not reconciled;
-- a job that does not exist).  The TAP lines they print when pgTAP is not
-- there are checked by test/t/053_operations.pl.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS acme_migrate;

SELECT plan(37);

-- surface
SELECT has_function('acme_migrate_is_done', ARRAY['text', 'text']);
SELECT has_function('acme_migrate_is_reconciled', ARRAY['text', 'double precision', 'text']);
SELECT is(
	(SELECT string_agg(format('%s %s %s', p.proname, p.prosecdef, p.proconfig), '; '
					   ORDER BY p.proname)
	   FROM pg_proc p
	  WHERE p.proname IN ('acme_migrate_is_done', 'acme_migrate_is_reconciled',
						  'tap_schema', 'tap_result')),
	'acme_migrate_is_done f {"search_path=pg_catalog, pg_temp"}; '
	'acme_migrate_is_reconciled f {"search_path=pg_catalog, pg_temp"}; '
	'tap_result f {"search_path=pg_catalog, pg_temp"}; '
	'tap_schema f {"search_path=pg_catalog, pg_temp"}',
	'the helpers are SECURITY INVOKER with search_path pinned');
SELECT is(acme_migrate.tap_schema(), 'public'::name,
	'the helpers find this pgTAP (planned, in schema public)');

CREATE SCHEMA pgtap_h;
CREATE TABLE pgtap_h.src (id integer PRIMARY KEY, v text NOT NULL);
INSERT INTO pgtap_h.src SELECT g, 'v' || g FROM generate_series(1, 250) g;
ANALYZE pgtap_h.src;
CREATE TABLE pgtap_h.dst (id integer PRIMARY KEY, v text NOT NULL);
SELECT lives_ok(
	$$SELECT acme_migrate_create('pgtap_h', 'pgtap_h.src', 'pgtap_h.dst', batch_size => 100)$$,
	'a job of 250 rows, batches of 100');
SELECT is(acme_migrate_batch('pgtap_h'), 100::bigint, 'one batch in');

-- failing: a job not done, not reconciled, not there
SELECT * FROM check_test(
	acme_migrate_is_done('pgtap_h'), false, 'is_done of a job one batch in',
	'migration job "pgtap_h" is done',
	E'    state: running (done or cut_over expected)\n'
	'    rows read: 100 of about 250, copied: 100, rejected: 0, batches: 1\n'
	'    checkpoint: {100}');
SELECT * FROM check_test(
	acme_migrate_is_reconciled('pgtap_h'), false, 'is_reconciled of a job one batch in',
	'migration job "pgtap_h" is reconciled',
	E'^    reconcile run \\d+: source rows 250, target rows 100\n'
	'    missing: 150, extra: 0, changed: 0\n'
	'    first differences:\n'
	'        missing \\{"id": 101\\}\n'
	'        missing \\{"id": 102\\}\n'
	'        missing \\{"id": 103\\}\n'
	'        missing \\{"id": 104\\}\n'
	'        missing \\{"id": 105\\}\n'
	'    all of them: SELECT \\* FROM acme_migrate.diffs WHERE run_id = \\d+$', true);
SELECT * FROM check_test(
	acme_migrate_is_reconciled('pgtap_h', sample => 0.5), false,
	'sampled is_reconciled of a job one batch in',
	'migration job "pgtap_h" is reconciled (sample 0.5)',
	E'^    reconcile run \\d+ \\(estimated from the sample\\): source rows \\d+, target rows \\d+\n'
	'    missing: [1-9]\\d*, extra: 0, changed: 0\n', true);
SELECT * FROM check_test(
	acme_migrate_is_done('pgtap_no_such_job'), false, 'is_done of an unknown job',
	'migration job "pgtap_no_such_job" is done',
	'    job "pgtap_no_such_job" does not exist');
SELECT * FROM check_test(
	acme_migrate_is_reconciled('pgtap_no_such_job'), false, 'is_reconciled of an unknown job',
	'migration job "pgtap_no_such_job" is reconciled',
	'    reconciliation failed: job "pgtap_no_such_job" does not exist (SQLSTATE 42704)');

-- passing, once the job is done
SELECT is(acme_migrate_batch('pgtap_h') + acme_migrate_batch('pgtap_h'), 150::bigint,
	'the last two batches');
SELECT * FROM check_test(
	acme_migrate_is_done('pgtap_h'), true, 'is_done of a done job',
	'migration job "pgtap_h" is done', '');
SELECT * FROM check_test(
	acme_migrate_is_reconciled('pgtap_h'), true, 'is_reconciled of an exact copy',
	'migration job "pgtap_h" is reconciled', '');
SELECT * FROM check_test(
	acme_migrate_is_reconciled('pgtap_h', sample => 0.1), true,
	'sampled is_reconciled of an exact copy',
	'migration job "pgtap_h" is reconciled (sample 0.1)', '');
SELECT * FROM check_test(
	acme_migrate_is_done('pgtap_h', 'orders are migrated'), true,
	'is_done with a description of ours', 'orders are migrated', '');

-- a changed and an extra row in the target
UPDATE pgtap_h.dst SET v = 'changed' WHERE id = 7;
INSERT INTO pgtap_h.dst VALUES (1000, 'extra');
SELECT * FROM check_test(
	acme_migrate_is_reconciled('pgtap_h', description => 'orders equal'), false,
	'is_reconciled of a target written behind the job', 'orders equal',
	E'^    reconcile run \\d+: source rows 250, target rows 251\n'
	'    missing: 0, extra: 1, changed: 1\n'
	'    first differences:\n'
	'        changed \\{"id": 7\\}\n'
	'        extra \\{"id": 1000\\}\n', true);

SELECT * FROM finish();
ROLLBACK;
