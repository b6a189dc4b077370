--
-- Online migration with the keys users have: text (quotes, spaces, empty,
-- unicode, a non-default collation), uuid, composite (int, text),
-- timestamptz (whose text depends on DateStyle and TimeZone, changed
-- between the write and the catch-up) and numeric (1.0 and 1.00 are one
-- key).  Each job copies part of its source, the source is written behind
-- it (updates, key updates, deletes, a delete and re-insert of one key,
-- inserts), the copy finishes, catch-up applies the log, and the cut-over
-- verifies it; the target is compared with the source by EXCEPT ALL both
-- ways after catch-up and after the cut-over.  One job is rolled back
-- instead, and its target compared with what it held before.
--
DROP EXTENSION IF EXISTS acme_migrate CASCADE;
CREATE EXTENSION acme_migrate;
SET client_min_messages = warning;
CREATE SCHEMA ok;
SET search_path = ok, public;

-- rows of a that b lacks plus rows of b that a lacks (0: equal as multisets)
CREATE FUNCTION ok.differ(a regclass, b regclass) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE d bigint;
BEGIN
	EXECUTE format('SELECT (SELECT count(*) FROM (TABLE %s EXCEPT ALL TABLE %s) x)
		+ (SELECT count(*) FROM (TABLE %s EXCEPT ALL TABLE %s) y)', a, b, b, a) INTO d;
	RETURN d;
END $$;

-- 1. text key, with a collation other than the database's
CREATE TABLE ok.t_src (k text COLLATE "C" PRIMARY KEY, v int NOT NULL);
INSERT INTO ok.t_src SELECT 'key ' || g, g FROM generate_series(1, 300) g;
INSERT INTO ok.t_src VALUES ('', 0), ('O''Brien', -1), ('naïve ✓', -2), (' lead', -3),
	('trail ', -4), ('a,b', -5), ('"q"', -6), ('back\slash', -7), ('NULL', -8);
CREATE TABLE ok.t_dst (k text COLLATE "C" PRIMARY KEY, v int NOT NULL);
SELECT acme_migrate_create('keys_text', 'ok.t_src', 'ok.t_dst', batch_size => 100,
	capture_changes => true) > 0 AS created;
SELECT acme_migrate_batch('keys_text');
UPDATE ok.t_src SET v = v + 1000 WHERE k IN ('', 'O''Brien', 'naïve ✓', 'key 250');
UPDATE ok.t_src SET k = k || ' moved' WHERE k IN (' lead', 'key 1', 'key 299');
UPDATE ok.t_src SET k = 'Z' WHERE k = 'trail ';
DELETE FROM ok.t_src WHERE k IN ('a,b', 'key 2', 'key 298');
DELETE FROM ok.t_src WHERE k = '"q"';
INSERT INTO ok.t_src VALUES ('"q"', 42), ('new ✓', 43), ('back\slash ', 44);
INSERT INTO ok.t_src VALUES ('upsert', 1) ON CONFLICT (k) DO UPDATE SET v = 0;
INSERT INTO ok.t_src VALUES ('upsert', 1) ON CONFLICT (k) DO UPDATE SET v = ok.t_src.v + 10;
CALL acme_migrate_run('keys_text');
SELECT acme_migrate_catch_up('keys_text') >= 0 AS caught_up, ok.differ('ok.t_src', 'ok.t_dst');
SELECT equal FROM acme_migrate_reconcile('keys_text');
UPDATE ok.t_src SET v = -v WHERE k LIKE 'key 1%';
SELECT verified FROM acme_migrate_cutover('keys_text');
SELECT ok.differ('ok.t_src', 'ok.t_dst') AS after_cutover;

-- 2. uuid key
CREATE TABLE ok.u_src (id uuid PRIMARY KEY, v text NOT NULL);
INSERT INTO ok.u_src SELECT md5(g::text)::uuid, 'u' || g FROM generate_series(1, 300) g;
CREATE TABLE ok.u_dst (LIKE ok.u_src INCLUDING ALL);
SELECT acme_migrate_create('keys_uuid', 'ok.u_src', 'ok.u_dst', batch_size => 100,
	capture_changes => true) > 0 AS created;
SELECT acme_migrate_batch('keys_uuid');
UPDATE ok.u_src SET v = v || '+' WHERE v IN ('u1', 'u2', 'u3', 'u150');
UPDATE ok.u_src SET id = md5('moved' || v)::uuid WHERE v IN ('u4', 'u5');
DELETE FROM ok.u_src WHERE v IN ('u6', 'u7');
INSERT INTO ok.u_src VALUES ('00000000-0000-0000-0000-000000000000', 'zero'),
	('ffffffff-ffff-ffff-ffff-ffffffffffff', 'max');
CALL acme_migrate_run('keys_uuid');
SELECT acme_migrate_catch_up('keys_uuid') >= 0 AS caught_up, ok.differ('ok.u_src', 'ok.u_dst');
DELETE FROM ok.u_src WHERE v = 'zero';
SELECT verified FROM acme_migrate_cutover('keys_uuid');
SELECT ok.differ('ok.u_src', 'ok.u_dst') AS after_cutover;

-- 3. composite key (int, text); one job rolled back before its cut-over
CREATE TABLE ok.c_src (a int, b text, v numeric NOT NULL, PRIMARY KEY (a, b));
INSERT INTO ok.c_src SELECT g % 10, 'b' || g, g FROM generate_series(1, 300) g;
INSERT INTO ok.c_src VALUES (1, 'x,y', 1), (1, 'x', 2), (2, '', 3);
CREATE TABLE ok.c_dst (LIKE ok.c_src INCLUDING ALL);
INSERT INTO ok.c_dst VALUES (99, 'there before', 0);
CREATE TABLE ok.c_before AS TABLE ok.c_dst;
SELECT acme_migrate_create('keys_comp', 'ok.c_src', 'ok.c_dst', batch_size => 100,
	capture_changes => true) > 0 AS created;
SELECT acme_migrate_batch('keys_comp');
UPDATE ok.c_src SET v = v * 2 WHERE b IN ('b1', 'b11', 'b250', 'x,y');
UPDATE ok.c_src SET a = a + 100 WHERE b IN ('b3', 'b299');
UPDATE ok.c_src SET b = b || ' moved' WHERE (a, b) = (1, 'x');
DELETE FROM ok.c_src WHERE b IN ('b5', 'b6');
INSERT INTO ok.c_src VALUES (1, 'x', 5);
CALL acme_migrate_run('keys_comp');
SELECT acme_migrate_catch_up('keys_comp') >= 0 AS caught_up;
SELECT (SELECT count(*) FROM (SELECT * FROM ok.c_src EXCEPT ALL SELECT * FROM ok.c_dst WHERE a <> 99) x)
	 + (SELECT count(*) FROM (SELECT * FROM ok.c_dst WHERE a <> 99 EXCEPT ALL SELECT * FROM ok.c_src) y) AS differ;
SELECT rows_deleted, rows_restored, target_hash_equal FROM acme_migrate_rollback('keys_comp');
SELECT ok.differ('ok.c_dst', 'ok.c_before') AS after_rollback;

-- the same key captured by statement triggers (one insert of a
-- statement's keys, one array per key column)
CREATE TABLE ok.c_dst2 (LIKE ok.c_src INCLUDING ALL);
SELECT acme_migrate_create('keys_comp_stmt', 'ok.c_src', 'ok.c_dst2', batch_size => 100,
	capture_changes => true, capture_method => 'statement') > 0 AS created;
SELECT acme_migrate_batch('keys_comp_stmt');
UPDATE ok.c_src SET v = v + 1 WHERE a IN (1, 2);
UPDATE ok.c_src SET b = b || '!' WHERE a = 3;
DELETE FROM ok.c_src WHERE a = 4;
SELECT count(*) AS logged FROM acme_migrate.capture_log;
CALL acme_migrate_run('keys_comp_stmt');
SELECT acme_migrate_catch_up('keys_comp_stmt') >= 0 AS caught_up;
SELECT ok.differ('ok.c_src', 'ok.c_dst2') AS differ;
SELECT verified FROM acme_migrate_cutover('keys_comp_stmt');
SELECT ok.differ('ok.c_src', 'ok.c_dst2') AS after_cutover;

-- 4. timestamptz key: the capture logs keys as text; DateStyle and TimeZone
-- differ between the writers and the catch-up
CREATE TABLE ok.ts_src (at timestamptz PRIMARY KEY, v int NOT NULL);
INSERT INTO ok.ts_src SELECT timestamptz '2024-03-30 22:00:00+00' + g * interval '37 minutes 0.123456 s', g
	FROM generate_series(1, 300) g;
CREATE TABLE ok.ts_dst (LIKE ok.ts_src INCLUDING ALL);
SELECT acme_migrate_create('keys_ts', 'ok.ts_src', 'ok.ts_dst', batch_size => 100,
	capture_changes => true) > 0 AS created;
SELECT acme_migrate_batch('keys_ts');
SET DateStyle = 'SQL, DMY';
SET TimeZone = 'Pacific/Chatham';
UPDATE ok.ts_src SET v = -v WHERE v % 50 = 0;
UPDATE ok.ts_src SET at = at + interval '1 microsecond' WHERE v IN (3, 250);
DELETE FROM ok.ts_src WHERE v IN (7, 251);
INSERT INTO ok.ts_src VALUES ('infinity', 1000), ('-infinity', 1001);
SET DateStyle = 'German';
SET TimeZone = 'America/St_Johns';
CALL acme_migrate_run('keys_ts');
SELECT acme_migrate_catch_up('keys_ts') >= 0 AS caught_up, ok.differ('ok.ts_src', 'ok.ts_dst');
RESET DateStyle;
RESET TimeZone;
SELECT verified FROM acme_migrate_cutover('keys_ts');
SELECT ok.differ('ok.ts_src', 'ok.ts_dst') AS after_cutover;

-- 5. numeric key: 1.0 and 1.00 are one key with two spellings
CREATE TABLE ok.n_src (n numeric PRIMARY KEY, v text NOT NULL);
INSERT INTO ok.n_src SELECT g / 4.0, 'n' || g FROM generate_series(1, 300) g;
CREATE TABLE ok.n_dst (LIKE ok.n_src INCLUDING ALL);
SELECT acme_migrate_create('keys_num', 'ok.n_src', 'ok.n_dst', batch_size => 100,
	capture_changes => true) > 0 AS created;
SELECT acme_migrate_batch('keys_num');
UPDATE ok.n_src SET n = 1.00 WHERE n = 1.0;
UPDATE ok.n_src SET n = 70.000 WHERE n = 70;
UPDATE ok.n_src SET v = v || '+' WHERE n IN (2, 60.5);
DELETE FROM ok.n_src WHERE n = 3.0;
INSERT INTO ok.n_src VALUES (3.000, 'back'), ('NaN', 'nan');
SELECT count(*) AS logged, count(DISTINCT key) AS spellings FROM acme_migrate.capture_log;
CALL acme_migrate_run('keys_num');
SELECT acme_migrate_catch_up('keys_num') >= 0 AS caught_up;
SELECT (SELECT count(*) FROM (SELECT n::text, v FROM ok.n_src EXCEPT ALL SELECT n::text, v FROM ok.n_dst) x)
	+ (SELECT count(*) FROM (SELECT n::text, v FROM ok.n_dst EXCEPT ALL SELECT n::text, v FROM ok.n_src) y) AS differ_as_text;
SELECT verified FROM acme_migrate_cutover('keys_num');
SELECT ok.differ('ok.n_src', 'ok.n_dst') AS after_cutover;

-- 6. names that need quoting: schema, tables and columns with spaces,
-- capitals, quotes and reserved words, a composite key of them
CREATE SCHEMA "Odd ""Schema""";
CREATE TABLE "Odd ""Schema"""."Order Items" ("Key" int, "select" text, "user name" text,
	"a""b" numeric, PRIMARY KEY ("Key", "select"));
INSERT INTO "Odd ""Schema"""."Order Items"
SELECT g % 50, 'sel ' || g, 'User ' || g, g FROM generate_series(1, 300) g;
CREATE TABLE "Odd ""Schema"""."New Items" (LIKE "Odd ""Schema"""."Order Items" INCLUDING ALL);
SELECT acme_migrate_create('keys_names', '"Odd ""Schema"""."Order Items"',
	'"Odd ""Schema"""."New Items"', batch_size => 100, capture_changes => true,
	columns => '{"user name": "upper(\"user name\")"}') > 0 AS created;
SELECT acme_migrate_batch('keys_names');
UPDATE "Odd ""Schema"""."Order Items" SET "a""b" = -"a""b" WHERE "Key" < 5;
UPDATE "Odd ""Schema"""."Order Items" SET "select" = "select" || '''' WHERE "Key" = 7;
DELETE FROM "Odd ""Schema"""."Order Items" WHERE "Key" = 9;
CALL acme_migrate_run('keys_names');
SELECT acme_migrate_catch_up('keys_names') >= 0 AS caught_up;
SELECT verified FROM acme_migrate_cutover('keys_names');
SELECT (SELECT count(*) FROM (SELECT "Key", "select", upper("user name"), "a""b"
		FROM "Odd ""Schema"""."Order Items" EXCEPT ALL TABLE "Odd ""Schema"""."New Items") a)
	 + (SELECT count(*) FROM (TABLE "Odd ""Schema"""."New Items" EXCEPT ALL
		SELECT "Key", "select", upper("user name"), "a""b" FROM "Odd ""Schema"""."Order Items") b)
	AS after_cutover;
DROP SCHEMA "Odd ""Schema""" CASCADE;

SELECT (SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'acme\_migrate\_%') AS triggers_left,
	(SELECT count(*) FROM acme_migrate.capture_log) AS log_rows_left;
SELECT count(*) FROM acme_migrate.jobs WHERE acme_migrate_drop(job_name);
RESET search_path;
DROP SCHEMA ok CASCADE;
DROP EXTENSION acme_migrate;
