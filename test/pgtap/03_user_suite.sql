-- What a user's own pgTAP suite asserts about a migration: run it batch by
-- batch, then prove the job is done and the target equals the mapped
-- source; and the errors a user can cause, each with its SQLSTATE.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS acme_migrate;

SELECT plan(34);

CREATE SCHEMA pgtap_legacy;
CREATE SCHEMA pgtap_app;
CREATE TABLE pgtap_legacy.orders (
	order_id	integer PRIMARY KEY,
	customer	text NOT NULL,
	amount		numeric(10,2) NOT NULL,
	status		text NOT NULL,
	placed		timestamptz NOT NULL
);
INSERT INTO pgtap_legacy.orders
SELECT g, 'c' || (g % 17), (g % 500) / 4.0, (ARRAY['new', 'paid', 'shipped'])[g % 3 + 1],
	   '2024-01-01 00:00+00'::timestamptz + g * interval '1 hour'
  FROM generate_series(1, 2345) g;
CREATE TABLE pgtap_app.orders (
	order_id	integer PRIMARY KEY,
	customer	text NOT NULL,
	total_cents	bigint NOT NULL,
	status		text NOT NULL,
	placed		timestamptz NOT NULL,
	migrated	boolean NOT NULL DEFAULT true
);

SELECT cmp_ok(
	acme_migrate_create(
		job => 'pgtap_orders', source => 'pgtap_legacy.orders',
		target => 'pgtap_app.orders',
		columns => '{"total_cents": "(amount * 100)::bigint", "status": "upper(status)"}',
		batch_size => 1000),
	'>', 0::bigint, 'acme_migrate_create() returns a job id');
SELECT is((SELECT state FROM acme_migrate.jobs WHERE job_name = 'pgtap_orders'),
	'created', 'the job starts in state created');

SELECT is(acme_migrate_batch('pgtap_orders'), 1000::bigint, 'batch 1 copies 1000 rows');
SELECT is((SELECT (last_key, rows_read, rows_copied, batches_done)::text
			 FROM acme_migrate.jobs WHERE job_name = 'pgtap_orders'),
	'({1000},1000,1000,1)', 'batch 1''s checkpoint');
SELECT is(acme_migrate_batch('pgtap_orders'), 1000::bigint, 'batch 2 copies 1000 rows');
SELECT is(acme_migrate_batch('pgtap_orders'), 345::bigint, 'batch 3 copies the last 345 rows');
SELECT is(acme_migrate_batch('pgtap_orders'), 0::bigint, 'a batch of a copied job copies nothing');
SELECT is((SELECT state FROM acme_migrate.jobs WHERE job_name = 'pgtap_orders'),
	'done', 'the job is done');
SELECT is((SELECT (rows_read, rows_copied, rows_rejected)::text
			 FROM acme_migrate.jobs WHERE job_name = 'pgtap_orders'),
	'(2345,2345,0)', 'the job counted every row');
SELECT is((SELECT percent FROM acme_migrate.progress WHERE job = 'pgtap_orders'),
	100.0, 'progress shows 100 percent');
SELECT results_eq(
	$$SELECT b.batch_no, b.first_key, b.last_key, b.rows_read, b.rows_copied
		FROM acme_migrate.batches b JOIN acme_migrate.jobs j USING (job_id)
	   WHERE j.job_name = 'pgtap_orders' ORDER BY batch_no$$,
	$$VALUES (1::bigint, '{1}'::text[], '{1000}'::text[], 1000::bigint, 1000::bigint),
			 (2, '{1001}', '{2000}', 1000, 1000),
			 (3, '{2001}', '{2345}', 345, 345)$$,
	'the batch history lists the three batches and their key ranges');
SELECT set_eq(
	$$SELECT order_id, customer, total_cents, status, placed FROM pgtap_app.orders$$,
	$$SELECT order_id, customer, (amount * 100)::bigint, upper(status), placed
		FROM pgtap_legacy.orders$$,
	'the target equals the mapped source');
SELECT bag_eq(
	$$SELECT order_id FROM pgtap_app.orders$$,
	$$SELECT order_id FROM pgtap_legacy.orders$$,
	'every key once');
SELECT is((SELECT bool_and(migrated) FROM pgtap_app.orders), true,
	'a target column not mapped gets its default');

-- the same in one line each, as a team's suite writes it
SELECT acme_migrate_is_done('pgtap_orders');
SELECT acme_migrate_is_reconciled('pgtap_orders');
SELECT acme_migrate_is_reconciled('pgtap_orders', sample => 0.1);

-- a second job, with a filter; acme_migrate_run cannot run here (it commits,
-- and a pgTAP suite is one transaction), so batches it is
CREATE TABLE pgtap_app.orders2 (LIKE pgtap_app.orders INCLUDING ALL);
SELECT lives_ok(
	$$SELECT acme_migrate_create('pgtap_orders2', 'pgtap_legacy.orders',
		'pgtap_app.orders2', columns => '{"total_cents": "(amount * 100)::bigint"}',
		filter => 'status = ''paid''', batch_size => 500)$$,
	'a job with a filter');
SELECT throws_ok($$CALL acme_migrate_run('pgtap_orders2')$$, '25001', NULL,
	'acme_migrate_run refuses to run inside a transaction block');
SELECT is(acme_migrate_batch('pgtap_orders2'), 500::bigint, 'a filtered batch');
SELECT is(acme_migrate_batch('pgtap_orders2'), 282::bigint, 'the last filtered batch');
SELECT is(acme_migrate_batch('pgtap_orders2'), 0::bigint, 'nothing left');
SELECT set_eq(
	$$SELECT order_id, total_cents, status FROM pgtap_app.orders2$$,
	$$SELECT order_id, (amount * 100)::bigint, status FROM pgtap_legacy.orders
	   WHERE status = 'paid'$$,
	'the filtered target equals the filtered mapped source');
SELECT acme_migrate_is_done('pgtap_orders2');
SELECT acme_migrate_is_reconciled('pgtap_orders2');
SELECT is(acme_migrate_drop('pgtap_orders2'), true, 'acme_migrate_drop() forgets the job');
SELECT is((SELECT count(*)::integer FROM acme_migrate.jobs WHERE job_name = 'pgtap_orders2'),
	0, 'the dropped job is gone');
SELECT is((SELECT count(*)::integer FROM pgtap_app.orders2), 782,
	'the target keeps its rows after the drop');

-- errors a user can cause
SELECT throws_ok($$SELECT acme_migrate_batch('pgtap_no_such_job')$$, '42704', NULL,
	'acme_migrate_batch() of an unknown job');
SELECT throws_ok($$SELECT acme_migrate_drop('pgtap_no_such_job')$$, '42704', NULL,
	'acme_migrate_drop() of an unknown job');
SELECT throws_ok(
	$$SELECT acme_migrate_create('pgtap_bad', 'pgtap_legacy.orders', 'pgtap_app.orders2',
		batch_size => 0)$$,
	'22023', NULL, 'batch_size 0 is refused');
SELECT throws_ok(
	$$SELECT acme_migrate_create('pgtap_bad', 'pgtap_legacy.orders', 'pgtap_app.orders2',
		on_conflict => 'ignore')$$,
	'22023', NULL, 'an unknown on_conflict is refused');
SELECT throws_ok(
	$$SELECT acme_migrate_create('pgtap_bad', 'pgtap_legacy.orders', 'pgtap_app.orders2',
		key => '{no_such_column}')$$,
	'42703', NULL, 'a key column the source does not have is refused');
SELECT is((SELECT count(*)::integer FROM acme_migrate.jobs WHERE job_name = 'pgtap_bad'),
	0, 'refused creates leave no job behind');

SELECT * FROM finish();
ROLLBACK;
