-- What a user's own pgTAP suite asserts about stop rules and sequences: a
-- job past max_error_rate, with a true or failing health_check, or whose
-- reconciliation finds differences, is paused with its reason recorded and
-- copies nothing more until resumed; acme_migrate_alter sets and removes
-- health_check; a finished job leaves its target's sequence past the data.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS acme_migrate;

SELECT plan(32);

-- the SQL surface
SELECT has_function('acme_migrate_alter',
	ARRAY['text', 'integer', 'double precision', 'interval', 'interval',
		  'interval', 'double precision', 'text', 'text'],
	'acme_migrate_alter() takes health_check and on_breach');
SELECT has_column('acme_migrate', 'errors', 'stop_rule',
	'errors.stop_rule names the rule a breach broke');
SELECT throws_ok($$INSERT INTO acme_migrate.errors (job_id, sqlstate, message, transient, stop_rule)
	VALUES (0, '01000', 'x', false, 'whim')$$, '23514', NULL,
	'errors.stop_rule is max_error_rate, reconcile or health_check');

CREATE SCHEMA pgtap_sr;
CREATE TABLE pgtap_sr.src (id integer PRIMARY KEY, v integer NOT NULL);
INSERT INTO pgtap_sr.src SELECT g, g FROM generate_series(1, 500) g;

-- max_error_rate
CREATE TABLE pgtap_sr.t_rate (id integer PRIMARY KEY, v integer CHECK (v % 5 <> 0));
SELECT acme_migrate_create('pgtap_sr_rate', 'pgtap_sr.src', 'pgtap_sr.t_rate',
	batch_size => 100, on_error => 'reject', max_error_rate => 0.1);
SELECT is(acme_migrate_batch('pgtap_sr_rate'), 80::bigint,
	'the batch that passes max_error_rate still commits its good rows');
SELECT is((SELECT state FROM acme_migrate.jobs WHERE job_name = 'pgtap_sr_rate'),
	'paused', 'past max_error_rate the job is paused, not failed');
SELECT matches((SELECT failure_reason FROM acme_migrate.jobs WHERE job_name = 'pgtap_sr_rate'),
	'^error rate 0\.2000 exceeds max_error_rate 0\.1: 20 of 100 rows rejected$',
	'failure_reason says which rate passed which limit');
SELECT is((SELECT count(*)::integer FROM acme_migrate.errors e
	JOIN acme_migrate.jobs j USING (job_id)
	WHERE j.job_name = 'pgtap_sr_rate' AND e.stop_rule = 'max_error_rate'), 1,
	'the breach is a row of acme_migrate.errors');
SELECT is(acme_migrate_batch('pgtap_sr_rate'), 0::bigint,
	'a paused job copies nothing');
SELECT lives_ok($$SELECT acme_migrate_alter('pgtap_sr_rate', max_error_rate => 0.5)$$,
	'max_error_rate can be raised');
SELECT lives_ok($$SELECT acme_migrate_resume('pgtap_sr_rate')$$,
	'a job paused by a stop rule is resumed like any paused job');
SELECT is((SELECT state || coalesce(failure_reason, '') FROM acme_migrate.jobs
	WHERE job_name = 'pgtap_sr_rate'), 'running', 'resumed, it runs, the reason cleared');
SELECT is(acme_migrate_batch('pgtap_sr_rate'), 80::bigint,
	'and copies the next batch');

-- health_check
CREATE TABLE pgtap_sr.t_hc (id integer PRIMARY KEY, v integer);
SELECT acme_migrate_create('pgtap_sr_hc', 'pgtap_sr.src', 'pgtap_sr.t_hc',
	batch_size => 100, health_check => 'false');
SELECT is(acme_migrate_batch('pgtap_sr_hc'), 100::bigint, 'a false health_check lets batches run');
SELECT lives_ok($$SELECT acme_migrate_alter('pgtap_sr_hc', health_check => '2 > 1')$$,
	'acme_migrate_alter sets a health_check');
SELECT is(acme_migrate_batch('pgtap_sr_hc'), 0::bigint,
	'a true health_check stops the next batch');
SELECT is((SELECT count(*)::integer FROM pgtap_sr.t_hc), 100,
	'the target holds no more rows than before');
SELECT results_eq($$SELECT state, failure_reason FROM acme_migrate.jobs WHERE job_name = 'pgtap_sr_hc'$$,
	$$VALUES ('paused'::text, 'health_check is true: 2 > 1'::text)$$,
	'paused, with the health_check as the reason');
SELECT lives_ok($$SELECT acme_migrate_alter('pgtap_sr_hc', health_check => '1 / 0 = 1')$$,
	'a health_check that fails can be set');
SELECT lives_ok($$SELECT acme_migrate_resume('pgtap_sr_hc')$$, 'resume');
SELECT is(acme_migrate_batch('pgtap_sr_hc'), 0::bigint, 'a failing health_check stops the batch too');
SELECT results_eq($$SELECT e.sqlstate, e.message FROM acme_migrate.errors e
	JOIN acme_migrate.jobs j USING (job_id)
	WHERE j.job_name = 'pgtap_sr_hc' ORDER BY e.error_id DESC LIMIT 1$$,
	$$VALUES ('22012'::text, 'health_check raised an error: division by zero'::text)$$,
	'its error is recorded with its SQLSTATE');
SELECT lives_ok($$SELECT acme_migrate_alter('pgtap_sr_hc', health_check => '')$$,
	'an empty health_check removes it');
SELECT is((SELECT health_check FROM acme_migrate.jobs WHERE job_name = 'pgtap_sr_hc'),
	NULL, 'the job has no health_check any more');
SELECT throws_ok($$SELECT acme_migrate_alter('pgtap_sr_hc', on_breach => 'ignore')$$,
	'22023', 'invalid value for on_breach: "ignore"', 'on_breach is pause or rollback');

-- reconciliation
SELECT lives_ok($$SELECT acme_migrate_resume('pgtap_sr_hc')$$, 'resume again');
UPDATE pgtap_sr.t_hc SET v = 0 WHERE id = 1;
SELECT is((SELECT equal FROM acme_migrate_reconcile('pgtap_sr_hc')), false,
	'a reconciliation of the running job finds differences');
SELECT results_eq($$SELECT state, failure_reason FROM acme_migrate.jobs WHERE job_name = 'pgtap_sr_hc'$$,
	$$VALUES ('running'::text, NULL::text)$$,
	'which does not stop a job still copying: its rows still to copy are expected');
SELECT is((SELECT equal FROM acme_migrate_reconcile(source => 'pgtap_sr.src', target => 'pgtap_sr.t_hc')),
	false, 'an ad hoc reconcile of the same tables finds them too');
SELECT is((SELECT count(*)::integer FROM acme_migrate.errors e JOIN acme_migrate.jobs j USING (job_id)
	WHERE j.job_name = 'pgtap_sr_hc' AND e.stop_rule = 'reconcile'), 0,
	'and no breach is recorded (a copied job is stopped by one: see sql/stop_rules.sql)');

-- sequences follow the data when the job finishes
CREATE TABLE pgtap_sr.t_seq (id integer GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
	v integer);
SELECT acme_migrate_create('pgtap_sr_seq', 'pgtap_sr.src', 'pgtap_sr.t_seq');
SELECT is(acme_migrate_batch('pgtap_sr_seq'), 500::bigint, 'one batch copies everything');
SELECT is((SELECT state FROM acme_migrate.jobs WHERE job_name = 'pgtap_sr_seq'), 'done',
	'the job is done');
PREPARE app_insert AS INSERT INTO pgtap_sr.t_seq (v) VALUES (0) RETURNING id;
SELECT results_eq('app_insert', $$VALUES (501)$$,
	'the application''s next INSERT gets the next key, not a duplicate');

SELECT * FROM finish();
ROLLBACK;
