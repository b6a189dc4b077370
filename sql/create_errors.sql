--
-- Bad input: every error a user can cause, with its SQLSTATE, and the
-- catalog left as it was.
--
CREATE EXTENSION acme_migrate;

-- run a statement, report its SQLSTATE and message instead of failing
CREATE FUNCTION try(sql text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE sql;
	RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
	RETURN SQLSTATE || ': ' || SQLERRM;
END
$$;

CREATE SCHEMA legacy;
CREATE SCHEMA app;
CREATE TABLE legacy.orders (id bigint PRIMARY KEY, customer int NOT NULL,
	amount numeric(12,2), status text, doc json, pos point);
INSERT INTO legacy.orders SELECT g, g % 10, g * 1.5, 'new', '{}', point(g, g)
FROM generate_series(1, 20) g;
CREATE TABLE legacy.nokey (a int, b text);
CREATE TABLE app.orders (id bigint PRIMARY KEY, customer int, total_cents bigint,
	status text, doubled bigint GENERATED ALWAYS AS (total_cents * 2) STORED);
CREATE TABLE app.orders_nouniq (id bigint, customer int);
CREATE VIEW app.orders_view AS SELECT * FROM app.orders;
CREATE SEQUENCE legacy.seq;

SELECT acme_migrate_create('ok', 'legacy.orders', 'app.orders');

-- unknown jobs
SELECT try($$SELECT acme_migrate_batch('nope')$$);
SELECT try($$SELECT acme_migrate_drop('nope')$$);
CALL acme_migrate_run('nope');
-- duplicate name, bad names
SELECT try($$SELECT acme_migrate_create('ok', 'legacy.orders', 'app.orders')$$);
SELECT try($$SELECT acme_migrate_create('', 'legacy.orders', 'app.orders')$$);
SELECT try($$SELECT acme_migrate_create(repeat('x', 64), 'legacy.orders', 'app.orders')$$);
SELECT try($$SELECT acme_migrate_create(NULL, 'legacy.orders', 'app.orders')$$);
SELECT try($$SELECT acme_migrate_create('j', NULL, 'app.orders')$$);
-- source and target missing or of the wrong kind
SELECT try($$SELECT acme_migrate_create('j', 'legacy.missing', 'app.orders')$$);
SELECT try($$SELECT acme_migrate_create('j', 'legacy.orders', 'app.missing')$$);
SELECT try($$SELECT acme_migrate_create('j', 'legacy.seq', 'app.orders')$$);
SELECT try($$SELECT acme_migrate_create('j', 'legacy.orders', 'app.orders_view')$$);
SELECT try($$SELECT acme_migrate_create('j', 'legacy.orders_pkey', 'app.orders')$$);
SELECT try($$SELECT acme_migrate_create('j', 'app.orders', 'app.orders')$$);
-- keys
SELECT try($$SELECT acme_migrate_create('j', 'legacy.nokey', 'app.orders_nouniq', on_conflict => 'error')$$);
SELECT try($$SELECT acme_migrate_create('j', 'legacy.orders', 'app.orders', key => '{nope}')$$);
SELECT try($$SELECT acme_migrate_create('j', 'legacy.orders', 'app.orders', key => '{id,id}')$$);
SELECT try($$SELECT acme_migrate_create('j', 'legacy.orders', 'app.orders', key => '{}')$$);
SELECT try($$SELECT acme_migrate_create('j', 'legacy.orders', 'app.orders', key => ARRAY[NULL])$$);
SELECT try($$SELECT acme_migrate_create('j', 'legacy.orders', 'app.orders', key => '{doc}')$$);
SELECT try($$SELECT acme_migrate_create('j', 'legacy.orders', 'app.orders', key => '{pos}')$$);
-- the key must reach the target unchanged, and be unique there for ON CONFLICT
SELECT try($$SELECT acme_migrate_create('j', 'legacy.orders', 'app.orders', columns => '{"id": "id + 1"}')$$);
SELECT try($$SELECT acme_migrate_create('j', 'legacy.orders', 'app.orders_nouniq')$$);
SELECT try($$SELECT acme_migrate_create('j', 'legacy.orders', 'app.orders_nouniq', on_conflict => 'skip')$$);
-- column mappings
SELECT try($$SELECT acme_migrate_create('j', 'legacy.orders', 'app.orders', columns => '{"nope": "1"}')$$);
SELECT try($$SELECT acme_migrate_create('j', 'legacy.orders', 'app.orders', columns => '{"total_cents": 100}')$$);
SELECT try($$SELECT acme_migrate_create('j', 'legacy.orders', 'app.orders', columns => '["total_cents"]')$$);
SELECT try($$SELECT acme_migrate_create('j', 'legacy.orders', 'app.orders', columns => '"x"')$$);
SELECT try($$SELECT acme_migrate_create('j', 'legacy.orders', 'app.orders', columns => '{"total_cents": "1, 2"}')$$);
SELECT try($$SELECT acme_migrate_create('j', 'legacy.orders', 'app.orders', columns => '{"total_cents": "1) FROM pg_class --"}')$$);
SELECT try($$SELECT acme_migrate_create('j', 'legacy.orders', 'app.orders', columns => '{"total_cents": "(amount * 100"}')$$);
SELECT try($$SELECT acme_migrate_create('j', 'legacy.orders', 'app.orders', columns => '{"total_cents": "1 AS x"}')$$);
SELECT try($$SELECT acme_migrate_create('j', 'legacy.orders', 'app.orders', columns => '{"total_cents": "amount_typo * 100"}')$$);
SELECT try($$SELECT acme_migrate_create('j', 'legacy.orders', 'app.orders', columns => '{"total_cents": "pos"}')$$);
SELECT try($$SELECT acme_migrate_create('j', 'legacy.orders', 'app.orders', columns => '{"customer": "no_such_function(amount)"}')$$);
SELECT try($$SELECT acme_migrate_create('j', 'legacy.orders', 'app.orders', columns => '{"doubled": "1"}')$$);
-- a named key without a unique index is accepted (and checked while copying)
SELECT try($$SELECT acme_migrate_create('j', 'legacy.nokey', 'app.orders', key => '{a}', columns => '{"id": "a"}')$$);
SELECT key_columns, target_key_columns, key_is_unique FROM acme_migrate.jobs WHERE job_name = 'j';
SELECT acme_migrate_drop('j');
-- filter
SELECT try($$SELECT acme_migrate_create('j', 'legacy.orders', 'app.orders', filter => 'id >')$$);
SELECT try($$SELECT acme_migrate_create('j', 'legacy.orders', 'app.orders', filter => 'true; DROP TABLE legacy.orders')$$);
SELECT try($$SELECT acme_migrate_create('j', 'legacy.orders', 'app.orders', filter => 'true ORDER BY 1')$$);
SELECT try($$SELECT acme_migrate_create('j', 'legacy.orders', 'app.orders', filter => 'status + 1')$$);
SELECT try($$SELECT acme_migrate_create('j', 'legacy.orders', 'app.orders', filter => 'nope = 1')$$);
-- options
SELECT try($$SELECT acme_migrate_create('j', 'legacy.orders', 'app.orders', batch_size => 0)$$);
SELECT try($$SELECT acme_migrate_create('j', 'legacy.orders', 'app.orders', batch_size => -5)$$);
SELECT try($$SELECT acme_migrate_create('j', 'legacy.orders', 'app.orders', on_conflict => 'merge')$$);
SELECT try($$SELECT acme_migrate_create('j', 'legacy.orders', 'app.orders', on_error => 'ignore')$$);
SELECT try($$SELECT acme_migrate_create('j', 'legacy.orders', 'app.orders', on_error => 'reject', max_error_rate => 1.5)$$);
SELECT try($$SELECT acme_migrate_create('j', 'legacy.orders', 'app.orders', max_error_rate => 0.1)$$);
-- online migration options that cannot work
SELECT try($$SELECT acme_migrate_create('j', 'legacy.orders', 'app.orders', capture_changes => true, on_conflict => 'skip')$$);
SELECT try($$SELECT acme_migrate_create('j', 'app.orders_view', 'legacy.orders', key => '{id}', capture_changes => true)$$);
SELECT try($$SELECT acme_migrate_create('j', 'legacy.orders', 'app.orders', reverse_columns => '{"amount": "total_cents / 100.0"}')$$);
SELECT try($$SELECT acme_migrate_create('j', 'legacy.orders', 'app.orders', capture_changes => true, capture_method => 'logical')$$);
SELECT try($$SELECT acme_migrate_create('j', 'legacy.orders', 'app.orders', capture_changes => true, capture_method => 'psychic')$$);
SELECT try($$SELECT acme_migrate_create('j', 'legacy.orders', 'app.orders', on_breach => 'panic')$$);
SELECT try($$SELECT acme_migrate_create('j', 'legacy.orders', 'app.orders', capture_changes => true, reverse_columns => '{"nope": "1"}')$$);
SELECT try($$SELECT acme_migrate_create('j', 'legacy.orders', 'app.orders', health_check => '1; DROP TABLE x')$$);
SELECT count(*) AS capture_triggers_left FROM pg_trigger WHERE tgname LIKE 'acme_migrate%';
SELECT try($$SELECT acme_migrate_create('j', 'legacy.orders', 'app.orders', depends_on => '{nope}')$$);
SELECT try($$SELECT acme_migrate_create('j', 'legacy.orders', 'app.orders', depends_on => '{j}')$$);
SELECT try($$SELECT acme_migrate_create('j', 'legacy.orders', 'app.orders', depends_on => ARRAY[NULL])$$);
SELECT try($$SELECT acme_migrate_create('j', 'legacy.orders', 'app.orders', max_rows_per_second => 0)$$);
SELECT try($$SELECT acme_migrate_create('j', 'legacy.orders', 'app.orders', batch_time_target => '-1 s')$$);
SELECT try($$SELECT acme_migrate_create('j', 'legacy.orders', 'app.orders', max_replication_lag => '0 s')$$);
SELECT try($$SELECT acme_migrate_create('j', 'legacy.orders', 'app.orders', lock_timeout => '-1 s')$$);

-- nothing of the failed calls is left in the catalog
SELECT job_name, state, rows_read FROM acme_migrate.jobs ORDER BY job_id;

-- acme_migrate_run commits, so it refuses a transaction block
BEGIN;
SELECT try($$CALL acme_migrate_run('ok')$$);
ROLLBACK;
CALL acme_migrate_run('ok', max_batches => 0);
CALL acme_migrate_run('ok', max_time => '0 s');
-- ... and the job is untouched by all of that
SELECT job_name, state, rows_read, last_key FROM acme_migrate.jobs ORDER BY job_id;

-- NULL and duplicate keys found during the walk (a view has no unique index)
CREATE VIEW legacy.dups AS
	SELECT * FROM (VALUES (1, 1), (2, 2), (3, 3), (3, 4), (4, 5), (5, 6), (6, 7),
		(6, 8)) v(id, customer);
CREATE TABLE app.dups (id bigint, customer int);
SELECT acme_migrate_create('dups', 'legacy.dups', 'app.dups', key => '{id}',
	on_conflict => 'error', batch_size => 100);
SELECT try($$SELECT acme_migrate_batch('dups')$$);
SELECT acme_migrate_drop('dups');
SELECT acme_migrate_create('dups', 'legacy.dups', 'app.dups', key => '{id}',
	on_conflict => 'error', batch_size => 3);
-- the duplicate 3 ends the first batch: the next would skip its twin
SELECT try($$SELECT acme_migrate_batch('dups')$$);
SELECT count(*) AS nothing_half_written FROM app.dups;
SELECT rows_read, last_key FROM acme_migrate.jobs WHERE job_name = 'dups';
SELECT acme_migrate_drop('dups');
CREATE VIEW legacy.nulls AS
	SELECT CASE WHEN id = 15 THEN NULL ELSE id END AS id, customer FROM legacy.orders;
SELECT acme_migrate_create('nulls', 'legacy.nulls', 'app.dups', key => '{id}',
	on_conflict => 'error', batch_size => 100);
SELECT try($$SELECT acme_migrate_batch('nulls')$$);
SELECT acme_migrate_drop('nulls');
SELECT acme_migrate_create('nulls', 'legacy.nulls', 'app.dups', key => '{id}',
	on_conflict => 'error', batch_size => 5);
CALL acme_migrate_run('nulls');
SELECT state, rows_read, last_key FROM acme_migrate.jobs WHERE job_name = 'nulls';
SELECT sqlstate, message FROM acme_migrate.errors ORDER BY error_id;

-- a job past its error rate pauses itself (stop rule): no further batches
-- until it is resumed
CREATE TABLE app.strict (id bigint PRIMARY KEY, customer int CHECK (customer < 5));
SELECT acme_migrate_create('strict', 'legacy.orders', 'app.strict',
	on_error => 'reject', max_error_rate => 0.1);
SELECT acme_migrate_batch('strict');
SELECT state, failure_reason FROM acme_migrate.jobs WHERE job_name = 'strict';
SELECT try($$SELECT acme_migrate_batch('strict')$$);

-- permissions: another role can neither see nor use the jobs
CREATE ROLE am_other;
GRANT USAGE ON SCHEMA legacy, app TO am_other;
SET ROLE am_other;
SELECT count(*) AS visible_jobs FROM acme_migrate.jobs;
SELECT try($$SELECT acme_migrate_batch('ok')$$);
SELECT try($$SELECT acme_migrate_drop('ok')$$);
SELECT try($$UPDATE acme_migrate.jobs SET last_key = '{0}'$$);
SELECT try($$INSERT INTO acme_migrate.batches VALUES (1, 99, NULL, NULL, 0, 0, 0, 'sql', now(), '0 s')$$);
SELECT try($$SELECT acme_migrate_create('mine', 'legacy.orders', 'app.orders')$$);
RESET ROLE;
-- admins see everything
GRANT acme_migrate_admin TO am_other;
SET ROLE am_other;
SELECT count(*) AS visible_jobs FROM acme_migrate.jobs;
RESET ROLE;
REVOKE acme_migrate_admin FROM am_other;

SELECT acme_migrate_drop('ok');
SELECT acme_migrate_drop('strict');
SELECT count(*) AS jobs_left FROM acme_migrate.jobs;
DROP OWNED BY am_other;
DROP ROLE am_other;

-- leave the database as we found it
DROP SCHEMA legacy, app CASCADE;
DROP FUNCTION try(text);
DROP EXTENSION acme_migrate;
