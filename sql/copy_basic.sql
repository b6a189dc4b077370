--
-- Batch copy: integer, text, uuid and composite keys, through the direct
-- writer and the SQL path; the oracle is EXCEPT in both directions between
-- the mapped source and the target.
--
CREATE EXTENSION acme_migrate;
CREATE SCHEMA src;
CREATE SCHEMA dst;

-- rows of a mapped source missing from the target, plus the reverse
CREATE FUNCTION diff_count(a text, b text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE n bigint; m bigint;
BEGIN
	EXECUTE format('SELECT count(*) FROM (%s EXCEPT ALL %s) x', a, b) INTO n;
	EXECUTE format('SELECT count(*) FROM (%s EXCEPT ALL %s) x', b, a) INTO m;
	RETURN n + m;
END
$$;

CREATE TABLE src.int_orders (id bigint PRIMARY KEY, customer int,
	amount numeric(12,2), status text, created timestamptz, note text);
INSERT INTO src.int_orders
SELECT g, g % 97, round((g * 1.37)::numeric, 2),
	(ARRAY['new', 'paid', 'shipped', NULL])[1 + g % 4],
	'2024-03-01 00:00:00+00'::timestamptz + g * interval '7 minutes',
	CASE WHEN g % 11 = 0 THEN NULL ELSE repeat(chr(65 + g % 26), g % 50) END
FROM generate_series(1, 5000) g;
CREATE TABLE src.text_orders (code text PRIMARY KEY, qty int);
INSERT INTO src.text_orders
SELECT 'K-' || md5(g::text), g FROM generate_series(1, 3000) g;
INSERT INTO src.text_orders VALUES ('', 0), (' ', -1), ('Zz', 7), ('a b', 8);
CREATE TABLE src.uuid_orders (id uuid PRIMARY KEY, payload jsonb);
INSERT INTO src.uuid_orders
SELECT md5(g::text)::uuid, jsonb_build_object('g', g) FROM generate_series(1, 3000) g;
CREATE TABLE src.comp_orders (region text, day date, seq int, amount numeric,
	PRIMARY KEY (region, day, seq));
INSERT INTO src.comp_orders
SELECT (ARRAY['eu', 'us', 'apac'])[1 + g % 3], date '2024-01-01' + (g / 50),
	g % 50, g / 3.0
FROM generate_series(1, 4000) g;

CREATE TABLE dst.int_orders (id bigint PRIMARY KEY, customer int,
	total_cents bigint, status text NOT NULL, created timestamptz, note text,
	copied_at timestamptz DEFAULT now(), version int DEFAULT 1);
CREATE TABLE dst.text_orders (code text PRIMARY KEY, qty bigint);
CREATE TABLE dst.uuid_orders (id uuid PRIMARY KEY, payload jsonb, g int);
CREATE TABLE dst.comp_orders (region text, day date, seq int, amount numeric(20,4),
	PRIMARY KEY (region, day, seq));

CREATE FUNCTION check_all() RETURNS TABLE (job text, rows_target bigint, diffs bigint)
LANGUAGE sql AS $$
	SELECT 'int', (SELECT count(*) FROM dst.int_orders), diff_count(
		$q$SELECT id, customer, (amount * 100)::bigint, upper(coalesce(status, 'none')), created, note FROM src.int_orders WHERE id % 10 <> 3$q$,
		$q$SELECT id, customer, total_cents, status, created, note FROM dst.int_orders$q$)
	UNION ALL
	SELECT 'text', (SELECT count(*) FROM dst.text_orders), diff_count(
		'SELECT code, qty::bigint FROM src.text_orders', 'SELECT code, qty FROM dst.text_orders')
	UNION ALL
	SELECT 'uuid', (SELECT count(*) FROM dst.uuid_orders), diff_count(
		$q$SELECT id, payload, (payload->>'g')::int FROM src.uuid_orders$q$,
		'SELECT id, payload, g FROM dst.uuid_orders')
	UNION ALL
	SELECT 'comp', (SELECT count(*) FROM dst.comp_orders), diff_count(
		'SELECT region, day, seq, amount::numeric(20,4) FROM src.comp_orders',
		'SELECT region, day, seq, amount FROM dst.comp_orders')
$$;

CREATE PROCEDURE make_jobs(bs int) LANGUAGE sql AS $$
	SELECT acme_migrate_create(job => 'int', source => 'src.int_orders',
		target => 'dst.int_orders', batch_size => bs,
		columns => '{"total_cents": "(amount * 100)::bigint", "status": "upper(coalesce(status, ''none''))"}',
		filter => 'id % 10 <> 3');
	SELECT acme_migrate_create(job => 'text', source => 'src.text_orders',
		target => 'dst.text_orders', batch_size => bs);
	SELECT acme_migrate_create(job => 'uuid', source => 'src.uuid_orders',
		target => 'dst.uuid_orders', batch_size => bs,
		columns => $j${"g": "payload->>'g'"}$j$);
	SELECT acme_migrate_create(job => 'comp', source => 'src.comp_orders',
		target => 'dst.comp_orders', batch_size => bs);
$$;

CREATE PROCEDURE reset_jobs() LANGUAGE sql AS $$
	SELECT acme_migrate_drop(job_name) FROM acme_migrate.jobs;
	TRUNCATE dst.int_orders, dst.text_orders, dst.uuid_orders, dst.comp_orders;
$$;

-- 1. direct writer, batches of 700 rows
CALL make_jobs(700);
SELECT job_name, key_columns, target_key_columns, key_is_unique
FROM acme_migrate.jobs ORDER BY job_id;
CALL acme_migrate_run('int');
CALL acme_migrate_run('text');
CALL acme_migrate_run('uuid');
CALL acme_migrate_run('comp');
SELECT * FROM check_all();
SELECT job_name, state, rows_read, rows_copied, rows_rejected, batches_done,
	last_key
FROM acme_migrate.jobs ORDER BY job_id;
-- history adds up, every batch took the direct path
SELECT j.job_name, sum(b.rows_read) = j.rows_read AS history_adds_up,
	count(*) = j.batches_done AS one_row_per_batch,
	bool_and(b.method = 'direct') AS all_direct
FROM acme_migrate.jobs j JOIN acme_migrate.batches b USING (job_id)
GROUP BY j.job_name, j.rows_read, j.batches_done ORDER BY 1;
-- defaults of unmapped columns were computed per row
SELECT count(*) FILTER (WHERE copied_at IS NULL) AS no_default,
	min(version), max(version) FROM dst.int_orders;
SELECT job, state, workers, rows_done, rows_total, percent, eta, rejected,
	last_error, rows_per_second > 0 AS has_rate, started_at <= updated_at AS times_ok
FROM acme_migrate.progress ORDER BY job;

-- 2. the SQL path gives the same result
CALL reset_jobs();
SET acme_migrate.direct_write = off;
CALL make_jobs(999);
CALL acme_migrate_run('int');
CALL acme_migrate_run('text');
CALL acme_migrate_run('uuid');
CALL acme_migrate_run('comp');
SELECT * FROM check_all();
SELECT DISTINCT method FROM acme_migrate.batches;
RESET acme_migrate.direct_write;

-- 3. one row per batch, driven by acme_migrate_batch; the key survives a
--    change of DateStyle and TimeZone between batches
CALL reset_jobs();
CREATE TABLE src.ts_orders (created timestamptz PRIMARY KEY, n int);
INSERT INTO src.ts_orders
SELECT '2024-12-31 23:59:59.999999+00'::timestamptz + g * interval '1.5 seconds', g
FROM generate_series(1, 9) g;
CREATE TABLE dst.ts_orders (LIKE src.ts_orders INCLUDING ALL);
SELECT acme_migrate_create('ts', 'src.ts_orders', 'dst.ts_orders', batch_size => 2);
SET datestyle = 'SQL, DMY';
SET timezone = 'Asia/Kolkata';
SELECT acme_migrate_batch('ts');
SET datestyle = 'German';
SET timezone = 'America/Los_Angeles';
SELECT acme_migrate_batch('ts');
RESET datestyle;
RESET timezone;
SELECT acme_migrate_batch('ts') AS b3, acme_migrate_batch('ts') AS b4,
	acme_migrate_batch('ts') AS b5;
SELECT acme_migrate_batch('ts') AS after_done;
SELECT state, rows_read, last_key FROM acme_migrate.jobs WHERE job_name = 'ts';
SELECT diff_count('SELECT * FROM src.ts_orders', 'SELECT * FROM dst.ts_orders');
SELECT acme_migrate_drop('ts');

-- 4. a batch belongs to its transaction: rolled back, nothing remains
SELECT acme_migrate_create('text', 'src.text_orders', 'dst.text_orders', batch_size => 100);
BEGIN;
SELECT acme_migrate_batch('text');
SELECT count(*) FROM dst.text_orders;
ROLLBACK;
SELECT count(*) AS target_rows FROM dst.text_orders;
SELECT rows_read, last_key, batches_done FROM acme_migrate.jobs WHERE job_name = 'text';
SELECT count(*) AS history_rows FROM acme_migrate.batches;

-- 5. on_conflict: the target already holds some keys, with other values
CALL reset_jobs();
INSERT INTO dst.text_orders SELECT code, -1 FROM src.text_orders WHERE qty % 5 = 0;
SELECT acme_migrate_create('text', 'src.text_orders', 'dst.text_orders',
	on_conflict => 'skip', batch_size => 500);
CALL acme_migrate_run('text');
SELECT count(*) AS kept_stale FROM dst.text_orders WHERE qty = -1;
SELECT count(*) AS total FROM dst.text_orders;
SELECT acme_migrate_drop('text');
SELECT acme_migrate_create('text', 'src.text_orders', 'dst.text_orders',
	on_conflict => 'update', batch_size => 500);
CALL acme_migrate_run('text');
SELECT count(*) AS stale_left FROM dst.text_orders WHERE qty = -1;
SELECT diff_count('SELECT code, qty::bigint FROM src.text_orders',
	'SELECT code, qty FROM dst.text_orders');
-- a conflict sends the following batches through INSERT ... ON CONFLICT
SELECT method, count(*) > 0 AS used FROM acme_migrate.batches GROUP BY method ORDER BY 1;
SELECT acme_migrate_drop('text');
-- 'error': the batch with a conflict fails whole, checkpoint unchanged
DELETE FROM dst.text_orders WHERE qty > 10;
SELECT acme_migrate_create('text', 'src.text_orders', 'dst.text_orders',
	on_conflict => 'error', batch_size => 1000);
SELECT acme_migrate_batch('text');
SELECT count(*) AS target_rows FROM dst.text_orders;
SELECT rows_read, last_key FROM acme_migrate.jobs WHERE job_name = 'text';
SELECT acme_migrate_drop('text');

-- 6. on_error => 'reject': failing transforms and target constraints are
--    isolated, the rest is copied, in both write paths
CREATE TABLE src.raw (id int PRIMARY KEY, qty text, price numeric);
INSERT INTO src.raw
SELECT g, CASE WHEN g % 97 = 0 THEN 'n/a' ELSE g::text END,
	CASE WHEN g % 101 = 0 THEN -1 ELSE g END
FROM generate_series(1, 2000) g;
CREATE TABLE dst.clean (id int PRIMARY KEY, qty int, price numeric CHECK (price >= 0),
	unit_price numeric);
CREATE PROCEDURE reject_run() LANGUAGE plpgsql AS $$
BEGIN
	PERFORM acme_migrate_create('raw', 'src.raw', 'dst.clean', batch_size => 600,
		on_error => 'reject', on_conflict => 'error',
		columns => '{"unit_price": "price / (id % 503)"}');
	CALL acme_migrate_run('raw');
END
$$;
CALL reject_run();
SELECT state, rows_read, rows_copied, rows_rejected FROM acme_migrate.jobs;
SELECT sqlstate, message, count(*) FROM acme_migrate.rejects GROUP BY 1, 2 ORDER BY 1, 2;
-- exactly the bad rows were rejected, and every good row was copied
SELECT count(*) AS wrong_rejects FROM acme_migrate.rejects r
WHERE NOT ((r.key->>'id')::int % 97 = 0 OR (r.key->>'id')::int % 101 = 0
	OR (r.key->>'id')::int % 503 = 0);
SELECT count(*) AS good_rows_missing FROM src.raw s
WHERE NOT (s.id % 97 = 0 OR s.id % 101 = 0 OR s.id % 503 = 0)
  AND NOT EXISTS (SELECT 1 FROM dst.clean d WHERE d.id = s.id AND d.qty = s.qty::int);
SELECT key, source_row->>'qty' AS qty FROM acme_migrate.rejects ORDER BY reject_id LIMIT 3;
SELECT acme_migrate_drop('raw');
TRUNCATE dst.clean;
SET acme_migrate.direct_write = off;
CALL reject_run();
SELECT state, rows_read, rows_copied, rows_rejected FROM acme_migrate.jobs;
RESET acme_migrate.direct_write;
SELECT acme_migrate_drop('raw');

-- 7. targets the direct writer leaves to INSERT: partitioned, with triggers
CREATE TABLE dst.parted (id bigint PRIMARY KEY, customer int) PARTITION BY RANGE (id);
CREATE TABLE dst.parted_1 PARTITION OF dst.parted FOR VALUES FROM (0) TO (2500);
CREATE TABLE dst.parted_2 PARTITION OF dst.parted FOR VALUES FROM (2500) TO (MAXVALUE);
SELECT acme_migrate_create('parted', 'src.int_orders', 'dst.parted', batch_size => 1500);
CALL acme_migrate_run('parted');
SELECT count(*), count(DISTINCT tableoid) FROM dst.parted;
SELECT DISTINCT method FROM acme_migrate.batches;
SELECT acme_migrate_drop('parted');

-- foreign keys in the target are checked (AFTER ROW triggers) in the direct path
CREATE TABLE dst.customers (id int PRIMARY KEY);
INSERT INTO dst.customers SELECT g FROM generate_series(0, 90) g;
CREATE TABLE dst.fk_orders (id bigint PRIMARY KEY, customer int REFERENCES dst.customers);
SELECT acme_migrate_create('fk', 'src.int_orders', 'dst.fk_orders', batch_size => 1000,
	on_error => 'reject', on_conflict => 'error');
CALL acme_migrate_run('fk');
SELECT rows_copied, rows_rejected FROM acme_migrate.jobs;
SELECT DISTINCT sqlstate FROM acme_migrate.rejects;
SELECT count(*) AS orphans FROM dst.fk_orders o
WHERE NOT EXISTS (SELECT 1 FROM dst.customers c WHERE c.id = o.customer);
SELECT DISTINCT method FROM acme_migrate.batches;
SELECT acme_migrate_drop('fk');

-- 8. a view as source, with a key that is not backed by an index
CREATE VIEW src.big_spenders AS
	SELECT customer, sum(amount) AS amount FROM src.int_orders GROUP BY customer;
CREATE TABLE dst.big_spenders (customer int PRIMARY KEY, amount numeric);
SELECT acme_migrate_create('view', 'src.big_spenders', 'dst.big_spenders',
	key => '{customer}', batch_size => 10);
CALL acme_migrate_run('view');
SELECT key_is_unique, state, rows_read, batches_done FROM acme_migrate.jobs;
SELECT diff_count('SELECT * FROM src.big_spenders', 'SELECT * FROM dst.big_spenders');
SELECT acme_migrate_drop('view');

-- 9. throttles and limits of acme_migrate_run
SELECT acme_migrate_create('lim', 'src.text_orders', 'dst.text_orders',
	batch_size => 100, lock_timeout => '1 s');
CALL acme_migrate_run('lim', max_batches => 3);
SELECT batches_done, rows_read, state FROM acme_migrate.jobs;
CALL acme_migrate_run('lim', max_time => '1 h');
SELECT state, rows_read = (SELECT count(*) FROM src.text_orders) AS all_read
FROM acme_migrate.jobs;
SELECT acme_migrate_drop('lim');

-- leave the database as we found it
DROP SCHEMA src, dst CASCADE;
DROP FUNCTION diff_count(text, text), check_all();
DROP PROCEDURE make_jobs(int), reset_jobs(), reject_run();
DROP EXTENSION acme_migrate;
