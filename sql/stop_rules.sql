--
-- Stop rules: a job pauses itself when its reject rate passes
-- max_error_rate, when its health_check is true or fails, or when a
-- reconciliation of the job finds differences; the reason is recorded
-- (jobs.failure_reason, and a row of errors naming the rule) and
-- acme_migrate_resume goes on.  The oracle for "nothing more copied" is
-- the target's row count.
--
CREATE EXTENSION acme_migrate;

CREATE FUNCTION try(sql text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE sql;
	RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
	RETURN SQLSTATE || ': ' || SQLERRM;
END
$$;

CREATE SCHEMA sr;
CREATE TABLE sr.src (id int PRIMARY KEY, v int NOT NULL);
INSERT INTO sr.src SELECT g, g FROM generate_series(1, 1000) g;
CREATE TABLE sr.flag (stop boolean);
INSERT INTO sr.flag VALUES (false);

CREATE VIEW sr.breaches AS
SELECT j.job_name, e.stop_rule, e.sqlstate, e.message
FROM acme_migrate.errors e JOIN acme_migrate.jobs j USING (job_id)
WHERE e.stop_rule IS NOT NULL;

-- max_error_rate: the job pauses (it used to fail), with the reason
CREATE TABLE sr.t_rate (id int PRIMARY KEY, v int CHECK (v % 10 <> 0));
SELECT acme_migrate_create('rate', 'sr.src', 'sr.t_rate', batch_size => 100,
	on_error => 'reject', max_error_rate => 0.05) > 0 AS created;
SELECT acme_migrate_batch('rate');
SELECT state, failure_reason, last_error, rows_read, rows_rejected
FROM acme_migrate.jobs WHERE job_name = 'rate';
SELECT * FROM sr.breaches WHERE job_name = 'rate';
-- paused: batches copy nothing, run returns at once
SELECT acme_migrate_batch('rate');
CALL acme_migrate_run('rate');
SELECT count(*) FROM sr.t_rate;
-- a higher limit, and resume: the job goes on to the end
SELECT acme_migrate_alter('rate', max_error_rate => 0.2);
SELECT acme_migrate_resume('rate');
SELECT state, failure_reason FROM acme_migrate.jobs WHERE job_name = 'rate';
CALL acme_migrate_run('rate');
SELECT state, rows_read, rows_rejected, failure_reason
FROM acme_migrate.jobs WHERE job_name = 'rate';
SELECT count(*) FROM sr.t_rate;

-- health_check: false and NULL are healthy
CREATE TABLE sr.t_health (id int PRIMARY KEY, v int);
SELECT acme_migrate_create('health', 'sr.src', 'sr.t_health', batch_size => 100,
	health_check => '(SELECT stop FROM sr.flag)') > 0 AS created;
SELECT acme_migrate_batch('health');
UPDATE sr.flag SET stop = NULL;
SELECT pg_sleep(1.1);			-- a process looks at most once a second
SELECT acme_migrate_batch('health');
SELECT state, rows_copied FROM acme_migrate.jobs WHERE job_name = 'health';
-- true: the job pauses before copying anything more
UPDATE sr.flag SET stop = true;
SELECT pg_sleep(1.1);
SELECT count(*) AS rows_before FROM sr.t_health;
SELECT acme_migrate_batch('health');
SELECT count(*) AS rows_after FROM sr.t_health;
SELECT state, failure_reason FROM acme_migrate.jobs WHERE job_name = 'health';
SELECT * FROM sr.breaches WHERE job_name = 'health';
-- resumed while still true: paused again at once, nothing copied
SELECT acme_migrate_resume('health');
CALL acme_migrate_run('health');
SELECT state, rows_copied FROM acme_migrate.jobs WHERE job_name = 'health';
SELECT count(*) FROM sr.t_health;
-- healthy again: resume goes on to the end
UPDATE sr.flag SET stop = false;
SELECT acme_migrate_resume('health');
CALL acme_migrate_run('health');
SELECT state, rows_copied, failure_reason FROM acme_migrate.jobs WHERE job_name = 'health';
SELECT count(*) FROM sr.t_health;

-- alter sets a health_check (evaluated at once: the definition changed),
-- and '' removes it
CREATE TABLE sr.t_alter (id int PRIMARY KEY, v int);
SELECT acme_migrate_create('alter', 'sr.src', 'sr.t_alter', batch_size => 100) > 0 AS created;
SELECT acme_migrate_batch('alter');
SELECT acme_migrate_alter('alter', health_check => '1 > 0');
SELECT health_check, on_breach FROM acme_migrate.jobs WHERE job_name = 'alter';
SELECT acme_migrate_batch('alter');
SELECT state, rows_copied, failure_reason FROM acme_migrate.jobs WHERE job_name = 'alter';
SELECT acme_migrate_alter('alter', health_check => '');
SELECT health_check FROM acme_migrate.jobs WHERE job_name = 'alter';
SELECT acme_migrate_resume('alter');
SELECT acme_migrate_batch('alter');
SELECT state, rows_copied FROM acme_migrate.jobs WHERE job_name = 'alter';
-- alter's errors leave the job as it was
SELECT try($$SELECT acme_migrate_alter('alter', health_check => 'true; SELECT 1')$$);
SELECT try($$SELECT acme_migrate_alter('alter', health_check => '1) OR (1')$$);
SELECT try($$SELECT acme_migrate_alter('alter', on_breach => 'explode')$$);
SELECT health_check, on_breach, definition_version FROM acme_migrate.jobs
WHERE job_name = 'alter';
SELECT acme_migrate_alter('alter', on_breach => 'rollback');
SELECT on_breach FROM acme_migrate.jobs WHERE job_name = 'alter';
SELECT acme_migrate_alter('alter', on_breach => 'pause');

-- a health_check that fails is a breach, with its error
CREATE TABLE sr.t_fail (id int PRIMARY KEY, v int);
SELECT acme_migrate_create('fail', 'sr.src', 'sr.t_fail', batch_size => 100,
	health_check => '(SELECT 1 / count(*) FROM sr.flag WHERE stop IS NULL) > 0') > 0 AS created;
SELECT acme_migrate_batch('fail');
SELECT state, rows_copied, failure_reason FROM acme_migrate.jobs WHERE job_name = 'fail';
SELECT * FROM sr.breaches WHERE job_name = 'fail';
-- a table that is not there: the same
SELECT acme_migrate_alter('fail', health_check => 'EXISTS (SELECT FROM sr.no_such_table)');
SELECT acme_migrate_resume('fail');
SELECT acme_migrate_batch('fail');
SELECT state, failure_reason FROM acme_migrate.jobs WHERE job_name = 'fail';
-- read-only: a health_check that writes fails, and leaves nothing behind
CREATE TABLE sr.log (at timestamptz);
CREATE FUNCTION sr.log_and_say_no() RETURNS boolean LANGUAGE sql
	AS $$ INSERT INTO sr.log VALUES (now()); SELECT false $$;
SELECT acme_migrate_alter('fail', health_check => 'sr.log_and_say_no()');
SELECT acme_migrate_resume('fail');
SELECT acme_migrate_batch('fail');
SELECT state, failure_reason FROM acme_migrate.jobs WHERE job_name = 'fail';
SELECT count(*) AS logged FROM sr.log;
-- NULL is healthy
SELECT acme_migrate_alter('fail', health_check => 'NULL');
SELECT acme_migrate_resume('fail');
SELECT acme_migrate_batch('fail') > 0 AS copied;
SELECT state FROM acme_migrate.jobs WHERE job_name = 'fail';

-- it runs as the job's owner, whoever runs the batch, with the job's
-- search_path (its creator's, not the caller's)
CREATE ROLE regress_sr_owner;
CREATE SCHEMA sr_hc;
CREATE FUNCTION sr_hc.unhealthy() RETURNS boolean LANGUAGE sql
	AS $$ SELECT current_user::text <> 'regress_sr_owner' $$;
GRANT USAGE ON SCHEMA sr, sr_hc TO regress_sr_owner;
GRANT SELECT ON sr.src TO regress_sr_owner;
CREATE TABLE sr.t_own (id int PRIMARY KEY, v int);
GRANT SELECT, INSERT, UPDATE ON sr.t_own TO regress_sr_owner;
SET ROLE regress_sr_owner;
SET search_path = sr_hc, public;
SELECT acme_migrate_create('own', 'sr.src', 'sr.t_own', batch_size => 100,
	health_check => 'unhealthy()') > 0 AS created;
RESET search_path;
RESET ROLE;
SELECT acme_migrate_batch('own');
SELECT state, rows_copied FROM acme_migrate.jobs WHERE job_name = 'own';

-- a reconciliation of the job that finds differences pauses it
CREATE TABLE sr.t_rec (id int PRIMARY KEY, v int);
SELECT acme_migrate_create('rec', 'sr.src', 'sr.t_rec', batch_size => 400,
	capture_changes => true) > 0 AS created;
CALL acme_migrate_run('rec', max_batches => 2);
-- while the job copies, differences are expected (rows not copied yet):
-- no breach
SELECT missing > 0 AS rows_to_copy, equal FROM acme_migrate_reconcile('rec');
SELECT state FROM acme_migrate.jobs WHERE job_name = 'rec';
CALL acme_migrate_run('rec');
SELECT state FROM acme_migrate.jobs WHERE job_name = 'rec';
-- nor while writes wait to be caught up
UPDATE sr.src SET v = v + 1 WHERE id = 3;
SELECT changed, equal FROM acme_migrate_reconcile('rec');
SELECT state FROM acme_migrate.jobs WHERE job_name = 'rec';
SELECT acme_migrate_catch_up('rec');
-- copied and caught up, a difference is real: the job pauses itself
UPDATE sr.t_rec SET v = -v WHERE id = 7;
SELECT missing, extra, changed, equal FROM acme_migrate_reconcile('rec');
SELECT state, failure_reason ~ '^reconciliation run \d+ found 1 differences$' AS reason
FROM acme_migrate.jobs WHERE job_name = 'rec';
SELECT stop_rule, sqlstate FROM sr.breaches WHERE job_name = 'rec';
-- an ad hoc reconcile of the same tables is not the job's
UPDATE sr.t_rec SET v = -v WHERE id = 7;
SELECT acme_migrate_resume('rec');
SELECT equal FROM acme_migrate_reconcile(source => 'sr.src', target => 'sr.t_rec');
SELECT state FROM acme_migrate.jobs WHERE job_name = 'rec';
-- resumed, it is copied again, and a reconcile then finds it equal
CALL acme_migrate_run('rec');
SELECT state FROM acme_migrate.jobs WHERE job_name = 'rec';
SELECT missing, extra, changed, equal FROM acme_migrate_reconcile('rec');
-- a job that is cut over is not paused by differences
SELECT verified FROM acme_migrate_cutover('rec');
UPDATE sr.t_rec SET v = 0 WHERE id = 1;
SELECT equal FROM acme_migrate_reconcile('rec');
SELECT state FROM acme_migrate.jobs WHERE job_name = 'rec';

-- on_breach => 'rollback': the job puts its target back as it was and
-- proves it by the table hash recorded when it was created
CREATE TABLE sr.t_rb (id int PRIMARY KEY, v int);
SELECT acme_migrate_create('rb', 'sr.src', 'sr.t_rb', batch_size => 100,
	health_check => 'true', on_breach => 'rollback') > 0 AS created;
SELECT acme_migrate_batch('rb');
SELECT state, failure_reason, on_breach FROM acme_migrate.jobs WHERE job_name = 'rb';
SELECT count(*) FROM sr.t_rb;
-- after rows were copied, over a target that had rows of its own
CREATE TABLE sr.t_rb2 (id int PRIMARY KEY, v int);
INSERT INTO sr.t_rb2 VALUES (1, 111), (99999, 9);
CREATE TABLE sr.rb_flag (on_ boolean);
SELECT acme_migrate_create('rb2', 'sr.src', 'sr.t_rb2', batch_size => 100,
	health_check => '(SELECT count(*) FROM sr.rb_flag) > 0', on_breach => 'rollback') > 0 AS created;
CALL acme_migrate_run('rb2', max_batches => 3);
SELECT count(*) AS copied_rows FROM sr.t_rb2;
INSERT INTO sr.rb_flag VALUES (true);
-- (an alter makes the next batch look at the health check at once)
SELECT acme_migrate_alter('rb2', batch_size => 100);
SELECT acme_migrate_batch('rb2');
SELECT state FROM acme_migrate.jobs WHERE job_name = 'rb2';
SELECT * FROM sr.t_rb2 ORDER BY id;
SELECT h.hash = j.pre_hash AS same_as_before
FROM acme_migrate_table_hash('sr.t_rb2') h, acme_migrate.jobs j WHERE j.job_name = 'rb2';

-- background workers: a true health_check pauses the job before any batch
CREATE TABLE sr.t_bg (id int PRIMARY KEY, v int);
SELECT acme_migrate_create('bg', 'sr.src', 'sr.t_bg', batch_size => 100,
	health_check => '(SELECT count(*) FROM sr.flag) = 1') > 0 AS created;
SELECT acme_migrate_start('bg', workers => 2);
SET client_min_messages = warning;
SELECT acme_migrate_wait('bg', timeout => '1 min');
RESET client_min_messages;
SELECT state, rows_copied, failure_reason FROM acme_migrate.jobs WHERE job_name = 'bg';
SELECT count(*) FROM sr.t_bg;
SELECT DISTINCT stop_rule, message FROM sr.breaches WHERE job_name = 'bg';
-- healthy again, resumed with its workers: it finishes
SELECT acme_migrate_alter('bg', health_check => '');
SELECT acme_migrate_resume('bg') > 0 AS resumed;
SET client_min_messages = warning;
SELECT acme_migrate_wait('bg', timeout => '1 min');
RESET client_min_messages;
SELECT count(*) FROM sr.t_bg;

-- the 1.0 definition of acme_migrate_alter (7 arguments, its own C
-- symbol) still works
CREATE FUNCTION sr.alter_1_0(job text, batch_size integer DEFAULT NULL,
	max_rows_per_second double precision DEFAULT NULL,
	batch_time_target interval DEFAULT NULL,
	max_replication_lag interval DEFAULT NULL,
	lock_timeout interval DEFAULT NULL,
	max_error_rate double precision DEFAULT NULL) RETURNS void
AS '$libdir/acme_migrate', 'acme_migrate_alter' LANGUAGE C CALLED ON NULL INPUT;
SELECT sr.alter_1_0('alter', batch_size => 123);
SELECT batch_size, health_check, on_breach FROM acme_migrate.jobs WHERE job_name = 'alter';

-- leave the database as we found it
SELECT acme_migrate_drop('own');
DROP OWNED BY regress_sr_owner;
DROP ROLE regress_sr_owner;
SET client_min_messages = warning;
DROP SCHEMA sr, sr_hc CASCADE;
RESET client_min_messages;
DROP FUNCTION try(text);
DROP EXTENSION acme_migrate;
