--
-- A partitioned source whose members change while the job captures it:
-- PostgreSQL does not clone the job's internal triggers to a partition
-- created or attached later, so catch-up and cut-over take each new member
-- in (triggers, and the keys of the rows it already holds), and let a
-- detached one go (its rows leave the target too).  Oracle: EXCEPT ALL
-- both ways between the source and the target.
--
CREATE EXTENSION acme_migrate;
SET client_min_messages = notice;
CREATE TABLE ps (id int PRIMARY KEY, v text) PARTITION BY RANGE (id);
CREATE TABLE ps1 PARTITION OF ps FOR VALUES FROM (0) TO (1000);
CREATE TABLE ps4 PARTITION OF ps FOR VALUES FROM (3000) TO (4000);
INSERT INTO ps SELECT g, 'a' FROM generate_series(1, 999) g;
INSERT INTO ps SELECT g, 'a' FROM generate_series(3000, 3010) g;
CREATE TABLE pt (id int PRIMARY KEY, v text);
CREATE FUNCTION differences() RETURNS TABLE (side text, id int, v text) LANGUAGE sql AS $$
	SELECT 'missing', * FROM (SELECT * FROM ps EXCEPT ALL SELECT * FROM pt) x
	UNION ALL
	SELECT 'extra', * FROM (SELECT * FROM pt EXCEPT ALL SELECT * FROM ps) y
	ORDER BY 1, 2
$$;
SELECT acme_migrate_create('pj', 'ps', 'pt', capture_changes => true) > 0 AS created;
CALL acme_migrate_run('pj');

-- a partition created, one attached with a row in it, one detached, writes
-- to each (through the parent and directly)
CREATE TABLE ps2 PARTITION OF ps FOR VALUES FROM (1000) TO (2000);
CREATE TABLE ps3 (id int PRIMARY KEY, v text);
INSERT INTO ps3 VALUES (2001, 'there before the attach');
ALTER TABLE ps ATTACH PARTITION ps3 FOR VALUES FROM (2000) TO (3000);
INSERT INTO ps VALUES (1500, 'new'), (2500, 'new too');
UPDATE ps SET id = 1001 WHERE id = 5;        -- moves into the new partition
ALTER TABLE ps DETACH PARTITION ps4;
SELECT acme_migrate_catch_up('pj') AS applied;
SELECT * FROM differences();
SELECT c.relname, count(*) AS triggers
FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
WHERE t.tgname LIKE 'acme\_migrate\_%' GROUP BY c.relname ORDER BY 1;

-- after this catch-up: a write to the detached table is not the job's; a
-- partition created just before the cut-over is taken in under its lock
INSERT INTO ps4 VALUES (3500, 'detached');
INSERT INTO ps2 VALUES (1600, 'direct');
CREATE TABLE ps5 PARTITION OF ps FOR VALUES FROM (5000) TO (6000);
INSERT INTO ps5 VALUES (5001, 'last minute');
SELECT attempts, verified FROM acme_migrate_cutover('pj');
SELECT * FROM differences();
SELECT (SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'acme\_migrate\_%') AS triggers_left,
	(SELECT count(*) FROM acme_migrate.capture_log) AS log_rows_left;

SELECT acme_migrate_drop('pj');
DROP TABLE ps, pt, ps4;
DROP FUNCTION differences();
DROP EXTENSION acme_migrate;
