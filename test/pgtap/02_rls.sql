-- Row-level security of the catalog: a role sees and runs only its own
-- jobs; members of acme_migrate_admin see every job.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS acme_migrate;

SELECT plan(14);

CREATE ROLE pgtap_alice NOLOGIN;
CREATE ROLE pgtap_bob NOLOGIN;
CREATE ROLE pgtap_carol NOLOGIN IN ROLE acme_migrate_admin;
CREATE SCHEMA pgtap_alice AUTHORIZATION pgtap_alice;
CREATE SCHEMA pgtap_bob AUTHORIZATION pgtap_bob;
GRANT USAGE ON SCHEMA pgtap_alice, pgtap_bob TO PUBLIC;
-- pgTAP's own bookkeeping lives in temporary tables the roles must reach
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA pg_temp TO PUBLIC;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA pg_temp TO PUBLIC;

SET LOCAL ROLE pgtap_alice;
CREATE TABLE pgtap_alice.src (id integer PRIMARY KEY, v text);
INSERT INTO pgtap_alice.src SELECT g, 'a' || g FROM generate_series(1, 20) g;
CREATE TABLE pgtap_alice.dst (id integer PRIMARY KEY, v text);
SELECT lives_ok(
	$$SELECT acme_migrate_create('pgtap_alice_job', 'pgtap_alice.src',
		'pgtap_alice.dst', batch_size => 50)$$,
	'alice creates a job on her tables');
SELECT is(acme_migrate_batch('pgtap_alice_job'), 20::bigint,
	'alice copies a batch of her job');
SELECT is((SELECT count(*)::integer FROM acme_migrate.jobs), 1,
	'alice sees her job');
SELECT is((SELECT count(*)::integer FROM acme_migrate.batches), 1,
	'alice sees her job''s batch');
SELECT is((SELECT owner FROM acme_migrate.jobs), 'pgtap_alice'::regrole,
	'the job is owned by alice');
SELECT throws_ok(
	$$UPDATE acme_migrate.jobs SET state = 'done'$$,
	'42501', NULL, 'alice cannot write the catalog directly');

SET LOCAL ROLE pgtap_bob;
SELECT is((SELECT count(*)::integer FROM acme_migrate.jobs
			WHERE job_name = 'pgtap_alice_job'), 0,
	'bob does not see alice''s job');
SELECT is((SELECT count(*)::integer FROM acme_migrate.batches), 0,
	'bob does not see alice''s batches');
SELECT is((SELECT count(*)::integer FROM acme_migrate.progress
			WHERE job = 'pgtap_alice_job'), 0,
	'bob does not see alice''s job in progress');
SELECT throws_ok($$SELECT acme_migrate_batch('pgtap_alice_job')$$,
	'42704', 'job "pgtap_alice_job" does not exist',
	'bob cannot run a batch of alice''s job, which does not exist for him');
SELECT throws_ok($$SELECT acme_migrate_drop('pgtap_alice_job')$$,
	'42704', 'job "pgtap_alice_job" does not exist',
	'bob cannot drop alice''s job, which does not exist for him');

SET LOCAL ROLE pgtap_carol;
SELECT is((SELECT count(*)::integer FROM acme_migrate.jobs
			WHERE job_name = 'pgtap_alice_job'), 1,
	'an acme_migrate_admin member sees alice''s job');
SELECT is((SELECT count(*)::integer FROM acme_migrate.batches b
			 JOIN acme_migrate.jobs j USING (job_id)
			WHERE j.job_name = 'pgtap_alice_job'), 1,
	'an acme_migrate_admin member sees alice''s batches');

RESET ROLE;
SELECT is((SELECT rows_copied FROM acme_migrate.jobs
			WHERE job_name = 'pgtap_alice_job'), 20::bigint,
	'bob''s attempts left alice''s job as it was');

SELECT * FROM finish();
ROLLBACK;
