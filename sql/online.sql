--
-- Online migration: capture of the writes made behind the copy, catch-up,
-- cut-over and rollback, each checked against an independent oracle (the
-- source mapped by hand, EXCEPT ALL the target, both ways), and nothing
-- left behind (pg_trigger, capture_log).
--
DROP EXTENSION IF EXISTS acme_migrate CASCADE;
CREATE EXTENSION acme_migrate;
CREATE SCHEMA legacy;
CREATE SCHEMA app;
SET search_path = legacy, public;

CREATE TABLE legacy.orders (
	id		bigserial PRIMARY KEY,
	amount	numeric(12,2) NOT NULL,
	status	text NOT NULL,
	note	text
);
INSERT INTO legacy.orders (amount, status, note)
SELECT g * 1.25, 'new', 'n' || g FROM generate_series(1, 1000) g;
CREATE TABLE app.orders (
	id			bigint PRIMARY KEY,
	total_cents	bigint NOT NULL,
	status		text NOT NULL,
	note		text
);

-- the oracle: the source mapped by hand against the target
CREATE FUNCTION public.oracle(OUT missing bigint, OUT extra bigint) LANGUAGE sql AS $$
	SELECT (SELECT count(*) FROM (
				SELECT id, (amount * 100)::bigint, upper(status), note FROM legacy.orders
				EXCEPT ALL
				SELECT id, total_cents, status, note FROM app.orders) x),
		   (SELECT count(*) FROM (
				SELECT id, total_cents, status, note FROM app.orders
				EXCEPT ALL
				SELECT id, (amount * 100)::bigint, upper(status), note FROM legacy.orders) y)
$$;
CREATE FUNCTION public.leftovers(OUT triggers bigint, OUT log_rows bigint, OUT preimages bigint)
LANGUAGE sql AS $$
	SELECT (SELECT count(*) FROM pg_catalog.pg_trigger WHERE tgname LIKE 'acme\_migrate\_%'),
		   (SELECT count(*) FROM acme_migrate.capture_log),
		   (SELECT count(*) FROM acme_migrate.preimages)
$$;

SELECT acme_migrate_create('orders_v2', 'legacy.orders', 'app.orders', batch_size => 300,
	columns => '{"total_cents": "(amount * 100)::bigint", "status": "upper(status)"}',
	capture_changes => true,
	reverse_columns => '{"amount": "total_cents / 100.0", "status": "lower(status)"}');
-- capture is on from the creating transaction: internal triggers, not
-- dumped, not reached by DISABLE TRIGGER USER
SELECT count(*) AS triggers, bool_and(tgisinternal) AS internal
FROM pg_trigger WHERE tgrelid = 'legacy.orders'::regclass;
ALTER TABLE legacy.orders DISABLE TRIGGER USER;

-- writes of every kind while the copy runs
SELECT acme_migrate_batch('orders_v2');
UPDATE legacy.orders SET status = 'paid' WHERE id IN (1, 2, 999);   -- copied and not yet copied rows
DELETE FROM legacy.orders WHERE id IN (3, 998);
UPDATE legacy.orders SET id = 5000 WHERE id = 4;                    -- the key moves
INSERT INTO legacy.orders (id, amount, status) VALUES (4, 1, 'reborn');   -- and comes back
INSERT INTO legacy.orders (id, amount, status) VALUES (10, 2, 'x'), (6000, 3, 'y')
	ON CONFLICT (id) DO UPDATE SET status = 'upserted';
UPDATE legacy.orders SET note = repeat('toast me ', 20000) WHERE id = 5;  -- a TOASTed value
BEGIN;
UPDATE legacy.orders SET status = 'rolled back' WHERE id = 6;
ROLLBACK;
SELECT count(*) AS log_entries, count(DISTINCT key) AS distinct_keys FROM acme_migrate.capture_log;
-- TRUNCATE would lose every row: refused, for the table and for a partition alike
\set VERBOSITY terse
TRUNCATE legacy.orders;
\set VERBOSITY default
CALL acme_migrate_run('orders_v2');
SELECT state, rows_copied > 0 AS copied FROM acme_migrate.jobs WHERE job_name = 'orders_v2';
SELECT capture_backlog FROM acme_migrate.progress WHERE job = 'orders_v2';
-- catch-up applies the backlog; a copied job's acme_migrate_run catches up too
SELECT acme_migrate_catch_up('orders_v2') AS applied;
SELECT * FROM oracle();
UPDATE legacy.orders SET amount = amount + 1 WHERE id BETWEEN 100 AND 110;
CALL acme_migrate_run('orders_v2');
SELECT * FROM oracle();
SELECT length(note) AS toasted_note FROM app.orders WHERE id = 5;

-- cut-over needs the copy done, a capturing job, READ COMMITTED
SELECT acme_migrate_create('plain', 'legacy.orders', 'app.orders');
\set VERBOSITY terse
SELECT * FROM acme_migrate_cutover('plain');
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT * FROM acme_migrate_cutover('orders_v2');
ROLLBACK;
\set VERBOSITY default
SELECT acme_migrate_drop('plain');

-- the switch: a last write, then cut-over with a then_sql that swaps names
INSERT INTO legacy.orders (amount, status) VALUES (7, 'late');
SELECT setval('legacy.orders_id_seq', 7000);
SELECT attempts, lock_held < '1 s' AS lock_short, changes_drained, verified
FROM acme_migrate_cutover('orders_v2', then_sql => $$
	ALTER TABLE legacy.orders RENAME TO orders_old;
	ALTER TABLE app.orders RENAME TO orders_new$$);
SELECT state, cut_over_at IS NOT NULL AS cut_over_at FROM acme_migrate.jobs WHERE job_name = 'orders_v2';
SELECT attempt, outcome, lock_held IS NOT NULL AS held FROM acme_migrate.cutovers
WHERE job_id = (SELECT job_id FROM acme_migrate.jobs WHERE job_name = 'orders_v2')
ORDER BY started_at, attempt;
-- the target holds every write made to the source up to the switch
SELECT (SELECT count(*) FROM (
			SELECT id, (amount * 100)::bigint, upper(status), note FROM legacy.orders_old
			EXCEPT ALL SELECT id, total_cents, status, note FROM app.orders_new) x) AS missing,
	   (SELECT count(*) FROM (
			SELECT id, total_cents, status, note FROM app.orders_new
			EXCEPT ALL SELECT id, (amount * 100)::bigint, upper(status), note FROM legacy.orders_old) y) AS extra;
-- forward capture is gone; reverse capture is on the new table
SELECT tgrelid::regclass, count(*) FROM pg_trigger WHERE tgname LIKE 'acme\_migrate\_%'
GROUP BY 1 ORDER BY 1;
SELECT direction, count(*) FROM acme_migrate.capture_log GROUP BY 1;

-- the application writes to the new table; rollback takes it all back
INSERT INTO app.orders_new (id, total_cents, status) VALUES (8000, 12345, 'NEW');
UPDATE app.orders_new SET status = 'SHIPPED' WHERE id = 1;
DELETE FROM app.orders_new WHERE id = 2;
UPDATE app.orders_new SET id = 9000 WHERE id = 7;
SELECT rows_deleted, rows_restored, changes_returned, target_hash_equal AS verified
FROM acme_migrate_rollback('orders_v2', then_sql => $$
	ALTER TABLE app.orders_new RENAME TO orders;
	ALTER TABLE legacy.orders_old RENAME TO orders$$);
SELECT state FROM acme_migrate.jobs WHERE job_name = 'orders_v2';
-- the old table holds every write made to the new one (reverse mapping by hand)
SELECT (SELECT count(*) FROM (
			SELECT id, total_cents / 100.0, lower(status) FROM app.orders
			EXCEPT ALL SELECT id, amount, status FROM legacy.orders) x) AS missing,
	   (SELECT count(*) FROM (
			SELECT id, amount, status FROM legacy.orders
			EXCEPT ALL SELECT id, total_cents / 100.0, lower(status) FROM app.orders) y) AS extra;
SELECT * FROM leftovers();

--
-- Rollback before cut-over: the target is put back exactly as it was, and
-- its table hash proves it.  The target starts with rows of its own.
--
TRUNCATE app.orders;
INSERT INTO app.orders VALUES (1, 1, 'MINE', 'kept'), (2, 2, 'MINE', 'overwritten'),
	(777777, 3, 'MINE', 'not in the source');
SELECT row_count, hash AS pre_hash FROM acme_migrate_table_hash('app.orders') \gset
SELECT acme_migrate_create('undo', 'legacy.orders', 'app.orders', batch_size => 400,
	columns => '{"total_cents": "(amount * 100)::bigint", "status": "upper(status)"}',
	capture_changes => true);
SELECT count(*) AS preimages FROM acme_migrate.preimages;
SELECT acme_migrate_batch('undo');
UPDATE legacy.orders SET status = 'changed' WHERE id < 50;
SELECT acme_migrate_catch_up('undo') > 0 AS caught_up;
SELECT count(*) > 3 AS target_written FROM app.orders;
SELECT rows_deleted > 0 AS deleted, rows_restored, target_hash_equal
FROM acme_migrate_rollback('undo');
SELECT (hash = :'pre_hash' AND row_count = :row_count) AS same_as_before
FROM acme_migrate_table_hash('app.orders');
SELECT * FROM app.orders ORDER BY id;
SELECT * FROM leftovers();
SELECT state FROM acme_migrate.jobs WHERE job_name = 'undo';
\set VERBOSITY terse
SELECT * FROM acme_migrate_rollback('undo');
\set VERBOSITY default

--
-- A partitioned source: writes to the parent and to a partition directly,
-- a row moving between partitions, TRUNCATE of one partition refused.
--
CREATE TABLE legacy.events (id int PRIMARY KEY, v text) PARTITION BY RANGE (id);
CREATE TABLE legacy.events_1 PARTITION OF legacy.events FOR VALUES FROM (0) TO (1000);
CREATE TABLE legacy.events_2 PARTITION OF legacy.events FOR VALUES FROM (1000) TO (3000);
INSERT INTO legacy.events SELECT g, 'e' || g FROM generate_series(1, 1500) g;
CREATE TABLE app.events (id int PRIMARY KEY, v text);
SELECT acme_migrate_create('events', 'legacy.events', 'app.events', batch_size => 500,
	capture_changes => true);
SELECT acme_migrate_batch('events');
UPDATE legacy.events SET v = 'moved', id = id + 1900 WHERE id BETWEEN 10 AND 19;
INSERT INTO legacy.events_2 VALUES (1999, 'direct');
DELETE FROM legacy.events_1 WHERE id = 20;
\set VERBOSITY terse
TRUNCATE legacy.events_2;
\set VERBOSITY default
CALL acme_migrate_run('events');
CALL acme_migrate_run('events');
SELECT (SELECT count(*) FROM (SELECT * FROM legacy.events EXCEPT ALL SELECT * FROM app.events) x) AS missing,
	   (SELECT count(*) FROM (SELECT * FROM app.events EXCEPT ALL SELECT * FROM legacy.events) y) AS extra;
SELECT equal FROM acme_migrate_reconcile('events');
SELECT attempts, verified FROM acme_migrate_cutover('events');
SELECT * FROM leftovers();

-- capture by statement triggers with transition tables: one insert per
-- statement, an update that keeps its key logged once
CREATE TABLE legacy.flat (id int PRIMARY KEY, v text);
INSERT INTO legacy.flat SELECT g, 'f' || g FROM generate_series(1, 300) g;
CREATE TABLE app.flat (id int PRIMARY KEY, v text);
SELECT acme_migrate_create('flat', 'legacy.flat', 'app.flat', batch_size => 100,
	capture_changes => true, capture_method => 'statement');
SELECT count(*) AS statement_triggers FROM pg_trigger
WHERE tgrelid = 'legacy.flat'::regclass AND tgtype & 1 = 0;
SELECT acme_migrate_batch('flat');
UPDATE legacy.flat SET v = 'bulk' WHERE id <= 250;
UPDATE legacy.flat SET id = id + 1000 WHERE id IN (1, 200);
DELETE FROM legacy.flat WHERE id BETWEEN 290 AND 299;
INSERT INTO legacy.flat VALUES (1, 'back'), (5000, 'new');
SELECT count(*) AS log_entries, count(DISTINCT key) AS distinct_keys FROM acme_migrate.capture_log;
CALL acme_migrate_run('flat');
CALL acme_migrate_run('flat');
SELECT (SELECT count(*) FROM (SELECT * FROM legacy.flat EXCEPT ALL SELECT * FROM app.flat) x) AS missing,
	   (SELECT count(*) FROM (SELECT * FROM app.flat EXCEPT ALL SELECT * FROM legacy.flat) y) AS extra;
\set VERBOSITY terse
SELECT acme_migrate_create('flat_parted', 'legacy.events', 'app.events',
	capture_changes => true, capture_method => 'statement');
\set VERBOSITY default
SELECT attempts, verified FROM acme_migrate_cutover('flat');
SELECT * FROM leftovers();

-- drop and cancel leave nothing either
SELECT acme_migrate_create('dropped', 'legacy.events', 'app.events', capture_changes => true);
UPDATE legacy.events SET v = 'after' WHERE id = 1;
SELECT * FROM leftovers();
SELECT acme_migrate_drop('dropped');
SELECT * FROM leftovers();
SELECT acme_migrate_create('cancelled', 'legacy.events', 'app.events', capture_changes => true);
UPDATE legacy.events SET v = 'after' WHERE id = 1;
SELECT acme_migrate_cancel('cancelled');
SELECT * FROM leftovers();
SELECT acme_migrate_drop('cancelled');

RESET search_path;
DROP SCHEMA legacy, app CASCADE;
DROP FUNCTION public.oracle(), public.leftovers();
DROP EXTENSION acme_migrate;
