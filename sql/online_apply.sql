--
-- How catch-up writes captured keys into the target.  A target nothing
-- reacts to has its rows of the keys replaced (deleted, then inserted from
-- the source); a target others reference, or with triggers or rules of its
-- own, is upserted, so that no delete cascades, is refused, or shows up in
-- the user's triggers.  Each case is checked against the source (EXCEPT
-- ALL both ways) and against what must not change.
--
DROP EXTENSION IF EXISTS acme_migrate CASCADE;
CREATE EXTENSION acme_migrate;
SET client_min_messages = warning;

CREATE TABLE src (id int PRIMARY KEY, v text NOT NULL, n int);
INSERT INTO src SELECT g, 'v' || g, g FROM generate_series(1, 500) g;

CREATE FUNCTION same(target regclass) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE d bigint;
BEGIN
	EXECUTE format('SELECT (SELECT count(*) FROM (SELECT id, v, n FROM src EXCEPT ALL SELECT id, v, n FROM %s) a)
		+ (SELECT count(*) FROM (SELECT id, v, n FROM %s EXCEPT ALL SELECT id, v, n FROM src) b)', target, target)
	INTO d;
	RETURN d;
END $$;

-- the writes: updates (of copied rows and not yet copied ones), a moved
-- key, deletes, a delete and re-insert, inserts
CREATE FUNCTION write_behind() RETURNS void LANGUAGE sql AS $$
	UPDATE src SET v = v || '+' WHERE id % 7 = 0;
	UPDATE src SET id = id + 10000 WHERE id IN (11, 12);
	DELETE FROM src WHERE id IN (13, 14, 499);
	DELETE FROM src WHERE id = 15;
	INSERT INTO src VALUES (15, 'reborn', NULL);
	INSERT INTO src SELECT g, 'new', g FROM generate_series(600, 620) g;
$$;

-- 1. a plain target: replaced
CREATE TABLE t_plain (id int PRIMARY KEY, v text NOT NULL, n int);
SELECT acme_migrate_create('apply_plain', 'src', 't_plain', batch_size => 200,
	capture_changes => true) > 0 AS created;
SELECT acme_migrate_batch('apply_plain');
SELECT write_behind();
CALL acme_migrate_run('apply_plain');
SELECT acme_migrate_catch_up('apply_plain') > 0 AS applied, same('t_plain');

-- 2. a target others reference, ON DELETE CASCADE: a replaced row would take
-- its children with it
CREATE TABLE t_parent (id int PRIMARY KEY, v text NOT NULL, n int);
CREATE TABLE t_child (cid serial PRIMARY KEY,
	parent int NOT NULL REFERENCES t_parent ON DELETE CASCADE);
SELECT acme_migrate_create('apply_parent', 'src', 't_parent', batch_size => 200,
	capture_changes => true) > 0 AS created;
CALL acme_migrate_run('apply_parent');
INSERT INTO t_child (parent) SELECT id FROM t_parent WHERE id % 7 = 0 OR id BETWEEN 20 AND 30;
SELECT count(*) AS children FROM t_child;
UPDATE src SET v = v || '!' WHERE id % 7 = 0 OR id BETWEEN 20 AND 30;
SELECT acme_migrate_catch_up('apply_parent') AS applied, same('t_parent');
SELECT count(*) AS children_kept FROM t_child;

-- 3. a target referenced with RESTRICT: a replaced row would be refused
CREATE TABLE t_restrict (id int PRIMARY KEY, v text NOT NULL, n int);
CREATE TABLE t_restrict_child (parent int REFERENCES t_restrict ON DELETE RESTRICT);
SELECT acme_migrate_create('apply_restrict', 'src', 't_restrict', batch_size => 200,
	capture_changes => true) > 0 AS created;
CALL acme_migrate_run('apply_restrict');
INSERT INTO t_restrict_child SELECT id FROM t_restrict WHERE id < 50;
UPDATE src SET n = -n WHERE id < 50;
SELECT acme_migrate_catch_up('apply_restrict') AS applied, same('t_restrict');

-- 4. a target with a trigger of its own: it sees updates, as the
-- application's writes would show them, not deletes and inserts
CREATE TABLE t_audited (id int PRIMARY KEY, v text NOT NULL, n int);
CREATE TABLE audit (op text);
CREATE FUNCTION audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO audit VALUES (TG_OP); RETURN NULL; END $$;
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON t_audited
	FOR EACH ROW EXECUTE FUNCTION audit();
SELECT acme_migrate_create('apply_audited', 'src', 't_audited', batch_size => 200,
	capture_changes => true) > 0 AS created;
CALL acme_migrate_run('apply_audited');
TRUNCATE audit;
UPDATE src SET v = v || '?' WHERE id BETWEEN 100 AND 109;
DELETE FROM src WHERE id = 110;
SELECT acme_migrate_catch_up('apply_audited') AS applied, same('t_audited');
SELECT op, count(*) FROM audit GROUP BY op ORDER BY op;

-- 5. a target that references another table (its foreign key is checked on
-- insert as on update): replaced, and a key whose parent is gone fails the
-- catch-up with the foreign key's own error, leaving the log as it was
CREATE TABLE ref (n int PRIMARY KEY);
INSERT INTO ref SELECT g FROM generate_series(-100, 1000) g;
CREATE TABLE t_child_of (id int PRIMARY KEY, v text NOT NULL, n int REFERENCES ref);
SELECT acme_migrate_create('apply_fk', 'src', 't_child_of', batch_size => 200,
	capture_changes => true) > 0 AS created;
CALL acme_migrate_run('apply_fk');
UPDATE src SET n = -100 WHERE id = 1;
SELECT acme_migrate_catch_up('apply_fk') AS applied, same('t_child_of');
UPDATE src SET n = -1000 WHERE id = 2;
\set VERBOSITY terse
SELECT acme_migrate_catch_up('apply_fk');
\set VERBOSITY default
SELECT capture_backlog FROM acme_migrate.progress WHERE job = 'apply_fk';

-- 6. acme_migrate_catch_up runs the driver's turns, as workers' catch-up
-- does: on a job still copying it applies the log (the 11 keys logged
-- beyond the checkpoint are read from the source too) and copies no batch,
-- and the job's max_rows_per_second holds it back (2,546 entries at
-- 1,000/s: a pause of 2 s after the first chunk of 2,000)
CREATE TABLE t_slow (id int PRIMARY KEY, v text NOT NULL, n int);
SELECT acme_migrate_create('apply_slow', 'src', 't_slow', batch_size => 200,
	capture_changes => true, max_rows_per_second => 1000) > 0 AS created;
SELECT acme_migrate_batch('apply_slow');
SELECT max(id) AS copied_up_to FROM t_slow \gset
DO $$ BEGIN FOR i IN 1..13 LOOP UPDATE src SET n = n + 1 WHERE id <= 200; END LOOP; END $$;
UPDATE src SET v = v || '>' WHERE id BETWEEN 300 AND 310;
SELECT clock_timestamp() AS t0 \gset
SELECT acme_migrate_catch_up('apply_slow') AS applied;
SELECT clock_timestamp() - :'t0' >= interval '2 s' AS throttled,
	(SELECT count(*) FROM t_slow WHERE id > :copied_up_to) AS beyond_checkpoint,
	(SELECT count(*) FROM (SELECT id, v, n FROM src WHERE id <= :copied_up_to
		EXCEPT ALL SELECT id, v, n FROM t_slow) d) AS behind;
SELECT acme_migrate_alter('apply_slow', max_rows_per_second => 0);
CALL acme_migrate_run('apply_slow');
SELECT acme_migrate_catch_up('apply_slow') AS applied, same('t_slow');

-- 7. a filter and a mapping: rows updated into the filter appear in the
-- target, rows updated out of it (or deleted) leave it, each mapped; both
-- catch-up writers (a plain target: replaced; one with a trigger: upserted)
CREATE TABLE f_src (id int PRIMARY KEY, status text NOT NULL, amount numeric NOT NULL);
INSERT INTO f_src SELECT g, CASE WHEN g % 3 = 0 THEN 'cancelled' ELSE 'open' END, g / 10.0
FROM generate_series(1, 600) g;
CREATE TABLE f_plain (id int PRIMARY KEY, status text NOT NULL, cents bigint NOT NULL);
CREATE TABLE f_trig (LIKE f_plain INCLUDING ALL);
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON f_trig
	FOR EACH ROW EXECUTE FUNCTION audit();
CREATE VIEW f_expected AS
	SELECT id, upper(status) AS status, (amount * 100)::bigint AS cents
	FROM f_src WHERE status <> 'cancelled';
SELECT count(*) AS created FROM unnest(ARRAY['f_plain', 'f_trig']) t
WHERE acme_migrate_create('filter_' || t, 'f_src', t::regclass, batch_size => 200,
	columns => '{"status": "upper(status)", "cents": "(amount * 100)::bigint"}',
	filter => $$status <> 'cancelled'$$, capture_changes => true) > 0;
SELECT acme_migrate_batch('filter_f_plain'), acme_migrate_batch('filter_f_trig');
UPDATE f_src SET status = 'open' WHERE id IN (3, 6, 300, 303);
UPDATE f_src SET status = 'cancelled' WHERE id IN (1, 2, 301, 302);
UPDATE f_src SET amount = amount + 1 WHERE id IN (4, 5, 9, 400);
UPDATE f_src SET id = id + 1000, status = 'open' WHERE id IN (12, 13);
DELETE FROM f_src WHERE id IN (7, 8, 500);
INSERT INTO f_src VALUES (2000, 'open', 1), (2001, 'cancelled', 2);
CALL acme_migrate_run('filter_f_plain');
CALL acme_migrate_run('filter_f_trig');
SELECT acme_migrate_catch_up('filter_f_plain') > 0 AS applied,
	acme_migrate_catch_up('filter_f_trig') > 0 AS applied_trig;
SELECT (SELECT count(*) FROM (TABLE f_expected EXCEPT ALL TABLE f_plain) a)
	 + (SELECT count(*) FROM (TABLE f_plain EXCEPT ALL TABLE f_expected) b) AS plain_differ,
	   (SELECT count(*) FROM (TABLE f_expected EXCEPT ALL TABLE f_trig) a)
	 + (SELECT count(*) FROM (TABLE f_trig EXCEPT ALL TABLE f_expected) b) AS trig_differ,
	   (SELECT count(*) FROM f_plain WHERE id IN (1, 2, 301, 302, 7, 8, 500, 12, 13, 2001)) AS plain_gone;
UPDATE f_src SET status = 'cancelled' WHERE id IN (4, 5);
UPDATE f_src SET status = 'open' WHERE id IN (9, 600);
SELECT verified FROM acme_migrate_cutover('filter_f_plain');
SELECT verified FROM acme_migrate_cutover('filter_f_trig');
SELECT (SELECT count(*) FROM (TABLE f_expected EXCEPT ALL TABLE f_plain) a)
	 + (SELECT count(*) FROM (TABLE f_plain EXCEPT ALL TABLE f_expected) b) AS plain_after_cutover,
	   (SELECT count(*) FROM (TABLE f_expected EXCEPT ALL TABLE f_trig) a)
	 + (SELECT count(*) FROM (TABLE f_trig EXCEPT ALL TABLE f_expected) b) AS trig_after_cutover;

-- 8. a target with a deferred foreign key: catch-up and the cut-over's
-- drain write into it like batches do (its checks made immediate first)
CREATE TABLE d_par (id int PRIMARY KEY);
INSERT INTO d_par SELECT generate_series(1, 100);
CREATE TABLE d_src (id int PRIMARY KEY, p int);
INSERT INTO d_src SELECT g, g % 100 + 1 FROM generate_series(1, 500) g;
CREATE TABLE d_dst (id int PRIMARY KEY, p int REFERENCES d_par DEFERRABLE INITIALLY DEFERRED);
SELECT acme_migrate_create('apply_deferred', 'd_src', 'd_dst', batch_size => 200,
	capture_changes => true) > 0 AS created;
CALL acme_migrate_run('apply_deferred');
UPDATE d_src SET p = 5 WHERE id < 10;
SELECT acme_migrate_catch_up('apply_deferred') AS applied;
UPDATE d_src SET p = 6 WHERE id < 10;
SELECT verified FROM acme_migrate_cutover('apply_deferred');
SELECT (SELECT count(*) FROM (TABLE d_src EXCEPT ALL TABLE d_dst) a)
	 + (SELECT count(*) FROM (TABLE d_dst EXCEPT ALL TABLE d_src) b) AS differ;
DROP TABLE d_src, d_dst, d_par;

SELECT count(*) FROM acme_migrate.jobs WHERE acme_migrate_drop(job_name);
SELECT (SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'acme\_migrate\_%') AS triggers_left,
	(SELECT count(*) FROM acme_migrate.capture_log) AS log_rows_left;

DROP VIEW f_expected;
DROP TABLE f_src, f_plain, f_trig;
DROP TABLE src, t_plain, t_slow, t_parent, t_child, t_restrict, t_restrict_child, t_audited,
	audit, t_child_of, ref;
DROP FUNCTION same(regclass), write_behind(), audit();
DROP EXTENSION acme_migrate;
