--
-- Foreign keys of the target checked once per batch (fk.c).  The oracle is
-- PostgreSQL's own RI trigger: each case runs the same batch through the
-- direct writer (the batch's set-based check) and through an INSERT
-- statement (acme_migrate.direct_write = off: the per-row RI triggers), and
-- the two must raise the same error (SQLSTATE, message, detail, table and
-- constraint) or both succeed; copied rows are compared with EXCEPT ALL.
--
CREATE EXTENSION IF NOT EXISTS acme_migrate;
CREATE SCHEMA fkb;

-- one batch of a job, rolled back whatever happens; its outcome as text
CREATE FUNCTION fkb.try_batch(job text, direct boolean) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
	st text; msg text; det text; tab text; con text; n bigint;
BEGIN
	PERFORM set_config('acme_migrate.direct_write', direct::text, true);
	BEGIN
		n := acme_migrate_batch(job);
		RAISE EXCEPTION USING ERRCODE = 'AM001', MESSAGE = n || ' rows copied';
	EXCEPTION WHEN OTHERS THEN
		GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
			det = PG_EXCEPTION_DETAIL, tab = TABLE_NAME, con = CONSTRAINT_NAME;
	END;
	PERFORM set_config('acme_migrate.direct_write', 'on', true);
	IF st = 'AM001' THEN
		RETURN msg;
	END IF;
	RETURN format('%s: %s / %s [table %s, constraint %s]', st, msg, det, tab, con);
END
$$;

-- the batch check's outcome, and whether the RI triggers give the same
CREATE FUNCTION fkb.compare(job text) RETURNS TABLE (batch_check text, same_as_ri boolean)
LANGUAGE plpgsql AS $$
DECLARE
	ours text := fkb.try_batch(job, true);
BEGIN
	RETURN QUERY SELECT ours, ours = fkb.try_batch(job, false);
END
$$;

-- rows of a copied target that differ from the source's, both ways
CREATE FUNCTION fkb.diff(a text, b text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE n bigint; m bigint;
BEGIN
	EXECUTE format('SELECT count(*) FROM (TABLE %s EXCEPT ALL TABLE %s) x', a, b) INTO n;
	EXECUTE format('SELECT count(*) FROM (TABLE %s EXCEPT ALL TABLE %s) x', b, a) INTO m;
	RETURN n + m;
END
$$;

-- 1. one foreign key, a missing parent
CREATE TABLE fkb.customers (id int PRIMARY KEY, name text);
INSERT INTO fkb.customers SELECT g, 'c' || g FROM generate_series(1, 100) g;
CREATE TABLE fkb.orders_src (id int PRIMARY KEY, customer_id int, note text);
INSERT INTO fkb.orders_src SELECT g, 1 + g % 100, 'n' || g FROM generate_series(1, 500) g;
CREATE TABLE fkb.orders (id int PRIMARY KEY,
	customer_id int CONSTRAINT orders_customer_fk REFERENCES fkb.customers, note text);
SELECT acme_migrate_create(job => 'fk_orders', source => 'fkb.orders_src',
	target => 'fkb.orders', batch_size => 200) > 0 AS created;

-- all parents present: both paths copy the batch
SELECT * FROM fkb.compare('fk_orders');
-- the batch check is used on the direct path: the RI trigger is taken out
SET client_min_messages = debug1;
SELECT acme_migrate_batch('fk_orders');
RESET client_min_messages;
SELECT count(*) AS copied FROM fkb.orders;

-- the copied rows hold their parents as any row does
DELETE FROM fkb.customers WHERE id = 42;

-- NULL references are never looked up
UPDATE fkb.orders_src SET customer_id = NULL WHERE id IN (205, 399);
SELECT * FROM fkb.compare('fk_orders');
-- parents missing: the first offending row of the batch is the one
-- reported, as by the triggers
UPDATE fkb.orders_src SET customer_id = 1000 + id WHERE id IN (210, 390);
SELECT * FROM fkb.compare('fk_orders');
-- a type conversion on the way: bigint references int
CREATE TABLE fkb.orders8 (id int PRIMARY KEY,
	customer_id bigint CONSTRAINT orders8_customer_fk REFERENCES fkb.customers, note text);
SELECT acme_migrate_create(job => 'fk_orders8', source => 'fkb.orders_src',
	target => 'fkb.orders8') > 0 AS created;
SELECT * FROM fkb.compare('fk_orders8');

-- under on_error => 'reject' the offending rows are rejected with the RI
-- error, the others copied
SELECT acme_migrate_create(job => 'fk_reject', source => 'fkb.orders_src',
	target => 'fkb.orders8', on_error => 'reject') > 0 AS created;
SELECT acme_migrate_batch('fk_reject');
SELECT key, sqlstate, message, detail FROM acme_migrate.rejects r
  JOIN acme_migrate.jobs j USING (job_id) WHERE j.job_name = 'fk_reject' ORDER BY key::text;
-- copied: exactly the source rows whose parent exists or is NULL
SELECT count(*) AS differences FROM (
	(SELECT id, customer_id, note FROM fkb.orders_src s
	  WHERE customer_id IS NULL OR EXISTS (SELECT 1 FROM fkb.customers c WHERE c.id = s.customer_id)
	 EXCEPT ALL SELECT id, customer_id, note FROM fkb.orders8)
	UNION ALL
	(SELECT id, customer_id, note FROM fkb.orders8
	 EXCEPT ALL SELECT id, customer_id, note FROM fkb.orders_src)) d;
UPDATE fkb.orders_src SET customer_id = 1 WHERE id IN (210, 390);
-- the constraint is in force as before: PostgreSQL itself finds no orphan
ALTER TABLE fkb.orders8 VALIDATE CONSTRAINT orders8_customer_fk;
SELECT conname, convalidated FROM pg_constraint WHERE conrelid = 'fkb.orders8'::regclass AND contype = 'f';
SELECT tgname ~ '^RI_ConstraintTrigger' AS ri_trigger, tgenabled FROM pg_trigger
 WHERE tgrelid = 'fkb.orders8'::regclass ORDER BY tgname;

-- a case-insensitive referenced key: 'A' and 'a' find the same parent (the
-- fast path's count of distinct keys cannot decide; the exact query does)
CREATE COLLATION fkb.ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
CREATE TABLE fkb.tags (tag text COLLATE fkb.ci PRIMARY KEY);
INSERT INTO fkb.tags VALUES ('red'), ('Blue');
CREATE TABLE fkb.tagged_src (id int PRIMARY KEY, tag text);
INSERT INTO fkb.tagged_src VALUES (1, 'red'), (2, 'RED'), (3, 'blue'), (4, 'Blue');
CREATE TABLE fkb.tagged (id int PRIMARY KEY, tag text CONSTRAINT tagged_fk REFERENCES fkb.tags);
SELECT acme_migrate_create(job => 'fk_tagged', source => 'fkb.tagged_src',
	target => 'fkb.tagged') > 0 AS created;
SELECT * FROM fkb.compare('fk_tagged');
INSERT INTO fkb.tagged_src VALUES (5, 'green');
SELECT * FROM fkb.compare('fk_tagged');

-- 2. composite foreign keys, MATCH SIMPLE and MATCH FULL with NULLs
CREATE TABLE fkb.regions (country text, code int, PRIMARY KEY (country, code));
INSERT INTO fkb.regions VALUES ('fr', 1), ('fr', 2), ('de', 1);
CREATE TABLE fkb.sites_src (id int PRIMARY KEY, country text, code int);
INSERT INTO fkb.sites_src VALUES (1, 'fr', 1), (2, 'de', 1), (3, 'fr', NULL),
	(4, NULL, 7), (5, NULL, NULL), (6, 'fr', 2);
CREATE TABLE fkb.sites_simple (id int PRIMARY KEY, country text, code int,
	CONSTRAINT sites_simple_fk FOREIGN KEY (country, code) REFERENCES fkb.regions);
CREATE TABLE fkb.sites_full (id int PRIMARY KEY, country text, code int,
	CONSTRAINT sites_full_fk FOREIGN KEY (country, code) REFERENCES fkb.regions MATCH FULL);
SELECT acme_migrate_create(job => 'fk_simple', source => 'fkb.sites_src',
	target => 'fkb.sites_simple') > 0 AS created;
SELECT acme_migrate_create(job => 'fk_full', source => 'fkb.sites_src',
	target => 'fkb.sites_full') > 0 AS created;
-- MATCH SIMPLE: a key with a NULL is not checked
SELECT * FROM fkb.compare('fk_simple');
-- MATCH FULL: a partly NULL key is an error
SELECT * FROM fkb.compare('fk_full');
DELETE FROM fkb.sites_src WHERE id IN (3, 4);
SELECT * FROM fkb.compare('fk_full');
-- a composite key without parent
INSERT INTO fkb.sites_src VALUES (7, 'de', 2);
SELECT * FROM fkb.compare('fk_simple');
SELECT * FROM fkb.compare('fk_full');
DELETE FROM fkb.sites_src WHERE id = 7;
SELECT acme_migrate_batch('fk_simple'), acme_migrate_batch('fk_full');
SELECT fkb.diff('fkb.sites_src', 'fkb.sites_simple') AS simple_diff,
	fkb.diff('fkb.sites_src', 'fkb.sites_full') AS full_diff;

-- 3. two foreign keys on one row set: the first offending row wins
CREATE TABLE fkb.lines_src (id int PRIMARY KEY, customer_id int, country text, code int);
INSERT INTO fkb.lines_src VALUES (1, 1, 'fr', 1), (2, 2, 'xx', 1), (3, 999, 'fr', 1), (4, 998, 'yy', 1);
CREATE TABLE fkb.lines (id int PRIMARY KEY,
	customer_id int CONSTRAINT lines_a_fk REFERENCES fkb.customers,
	country text, code int,
	CONSTRAINT lines_b_fk FOREIGN KEY (country, code) REFERENCES fkb.regions);
SELECT acme_migrate_create(job => 'fk_lines', source => 'fkb.lines_src',
	target => 'fkb.lines') > 0 AS created;
SELECT * FROM fkb.compare('fk_lines');
DELETE FROM fkb.lines_src WHERE id = 2;
SELECT * FROM fkb.compare('fk_lines');

-- 4. a self-referencing table: parents later in the same batch count
CREATE TABLE fkb.staff_src (id int PRIMARY KEY, boss int);
INSERT INTO fkb.staff_src VALUES (1, 3), (2, 1), (3, NULL), (4, 4), (5, 9);
CREATE TABLE fkb.staff (id int PRIMARY KEY,
	boss int CONSTRAINT staff_boss_fk REFERENCES fkb.staff);
SELECT acme_migrate_create(job => 'fk_staff', source => 'fkb.staff_src',
	target => 'fkb.staff', batch_size => 3) > 0 AS created;
SELECT * FROM fkb.compare('fk_staff');
SELECT acme_migrate_batch('fk_staff');
-- the next batch: 5's boss 9 exists nowhere
SELECT * FROM fkb.compare('fk_staff');
UPDATE fkb.staff_src SET boss = 2 WHERE id = 5;
SELECT acme_migrate_batch('fk_staff');
SELECT fkb.diff('fkb.staff_src', 'fkb.staff') AS differences;

-- 5. a deferrable constraint stays with its per-row trigger.  Deferred, it
-- could not be queued from the job owner's security-restricted batch
-- (PostgreSQL refuses: 42501), so the batch makes it IMMEDIATE (fk.c): its
-- trigger checks each row at the end of the batch.  The oracle: the same
-- rows inserted with the constraint made IMMEDIATE by hand
CREATE TABLE fkb.notes_src (id int PRIMARY KEY, customer_id int);
INSERT INTO fkb.notes_src VALUES (1, 1), (2, 500);
CREATE TABLE fkb.notes (id int PRIMARY KEY, customer_id int
	CONSTRAINT notes_fk REFERENCES fkb.customers DEFERRABLE INITIALLY DEFERRED);
SELECT acme_migrate_create(job => 'fk_notes', source => 'fkb.notes_src',
	target => 'fkb.notes') > 0 AS created;
BEGIN;
SET LOCAL client_min_messages = debug1;
SELECT * FROM fkb.compare('fk_notes');
RESET client_min_messages;
SET CONSTRAINTS fkb.notes_fk IMMEDIATE;
INSERT INTO fkb.notes SELECT * FROM fkb.notes_src;
ROLLBACK;
SELECT count(*) AS notes_written FROM fkb.notes;
-- what an earlier statement of the transaction left pending is checked at
-- the batch, as SET CONSTRAINTS ... IMMEDIATE checks it
BEGIN;
INSERT INTO fkb.notes VALUES (100, 777);
SELECT fkb.try_batch('fk_notes', true);
ROLLBACK;
-- with the parent there, the batch copies; and acme_migrate_run, whose
-- batches are transactions of their own, does too
BEGIN;
INSERT INTO fkb.customers VALUES (500, 'late');
SELECT acme_migrate_batch('fk_notes');
COMMIT;
SELECT fkb.diff('fkb.notes_src', 'fkb.notes') AS differences;
CREATE TABLE fkb.notes2 (id int PRIMARY KEY, customer_id int
	CONSTRAINT notes2_fk REFERENCES fkb.customers DEFERRABLE INITIALLY DEFERRED);
SELECT acme_migrate_create(job => 'fk_notes2', source => 'fkb.notes_src',
	target => 'fkb.notes2') > 0 AS created;
CALL acme_migrate_run('fk_notes2');
SELECT state FROM acme_migrate.jobs WHERE job_name = 'fk_notes2';
SELECT fkb.diff('fkb.notes_src', 'fkb.notes2') AS differences;

-- 6. ON DELETE CASCADE parents, and a partitioned referenced table
CREATE TABLE fkb.accounts (id int, region text, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
CREATE TABLE fkb.accounts_eu PARTITION OF fkb.accounts FOR VALUES IN ('eu');
CREATE TABLE fkb.accounts_us PARTITION OF fkb.accounts FOR VALUES IN ('us');
INSERT INTO fkb.accounts SELECT g, (ARRAY['eu', 'us'])[1 + g % 2] FROM generate_series(1, 20) g;
CREATE TABLE fkb.payments_src (id int PRIMARY KEY, account int, region text);
INSERT INTO fkb.payments_src SELECT g, 1 + g % 20, (ARRAY['eu', 'us'])[1 + (1 + g % 20) % 2]
  FROM generate_series(1, 60) g;
CREATE TABLE fkb.payments (id int PRIMARY KEY, account int, region text,
	CONSTRAINT payments_fk FOREIGN KEY (account, region) REFERENCES fkb.accounts ON DELETE CASCADE);
SELECT acme_migrate_create(job => 'fk_payments', source => 'fkb.payments_src',
	target => 'fkb.payments') > 0 AS created;
UPDATE fkb.payments_src SET region = 'eu' WHERE id = 30;   -- (11, 'eu') does not exist
SELECT * FROM fkb.compare('fk_payments');
UPDATE fkb.payments_src SET region = 'us' WHERE id = 30;
SELECT acme_migrate_batch('fk_payments');
SELECT fkb.diff('fkb.payments_src', 'fkb.payments') AS differences;
-- the cascade works on the copied rows as on any other
DELETE FROM fkb.accounts WHERE id = 3;
SELECT count(*) AS payments_left, count(*) FILTER (WHERE account = 3) AS of_account_3 FROM fkb.payments;

-- 7. a disabled RI trigger is left as PostgreSQL leaves it: not checked
CREATE TABLE fkb.loose (id int PRIMARY KEY, customer_id int CONSTRAINT loose_fk REFERENCES fkb.customers);
ALTER TABLE fkb.loose DISABLE TRIGGER ALL;
CREATE TABLE fkb.loose_src (id int PRIMARY KEY, customer_id int);
INSERT INTO fkb.loose_src VALUES (1, 1), (2, 777);
SELECT acme_migrate_create(job => 'fk_loose', source => 'fkb.loose_src',
	target => 'fkb.loose') > 0 AS created;
SELECT * FROM fkb.compare('fk_loose');

SELECT acme_migrate_drop(job_name) FROM acme_migrate.jobs WHERE job_name LIKE 'fk\_%' ORDER BY job_name;
DROP SCHEMA fkb CASCADE;
