--
-- Background workers: the SQL surface, its errors, and a parallel copy
-- checked against the source.
--
CREATE EXTENSION acme_migrate;
CREATE SCHEMA w;
CREATE TABLE w.customers (id int PRIMARY KEY, name text);
INSERT INTO w.customers SELECT g, 'c' || g FROM generate_series(1, 3000) g;
CREATE TABLE w.orders (id bigint PRIMARY KEY, customer int, amount numeric(12,2));
INSERT INTO w.orders SELECT g, 1 + g % 3000, g / 4.0 FROM generate_series(1, 60000) g;
ANALYZE w.customers, w.orders;
CREATE TABLE w.customers2 (id int PRIMARY KEY, name text);
CREATE TABLE w.orders2 (id bigint PRIMARY KEY, customer int REFERENCES w.customers2,
	amount numeric(12,2));

SELECT acme_migrate_create('customers', 'w.customers', 'w.customers2', batch_size => 500);
SELECT acme_migrate_create('orders', 'w.orders', 'w.orders2', batch_size => 2000,
	depends_on => '{customers}');

-- bad input
SELECT acme_migrate_start('nope');
SELECT acme_migrate_start('orders', workers => 0);
SELECT acme_migrate_start('orders', workers => 65);
SELECT acme_migrate_pause('nope');
SELECT acme_migrate_resume('orders');
SELECT acme_migrate_alter('orders', batch_size => 0);
SELECT acme_migrate_alter('orders', max_rows_per_second => -1);
SELECT acme_migrate_alter('orders', lock_timeout => '-1 s');
SELECT acme_migrate_alter('orders', max_error_rate => 0.5);
SELECT acme_migrate_wait('orders', timeout => '-1 s');
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT acme_migrate_wait('orders');
ROLLBACK;
-- nobody runs it: wait returns at once
SELECT acme_migrate_wait('orders');

-- alter changes the definition version, so running batches re-plan
SELECT acme_migrate_alter('orders', batch_size => 3000, lock_timeout => '5 s',
	max_rows_per_second => 1e9);
SELECT batch_size, lock_timeout, max_rows_per_second, definition_version
FROM acme_migrate.jobs WHERE job_name = 'orders';
SELECT acme_migrate_alter('orders', max_rows_per_second => 0);
SELECT max_rows_per_second FROM acme_migrate.jobs WHERE job_name = 'orders';

-- orders waits for customers: a batch by hand says so
SELECT acme_migrate_batch('orders');

-- children first, with two workers; they wait for their parent
SELECT acme_migrate_alter('orders', max_rows_per_second => 20000);
SELECT acme_migrate_start('orders', workers => 2);
SELECT acme_migrate_start('orders', workers => 2);
SELECT count(*) AS ranges, count(*) FILTER (WHERE lo_key IS NULL) AS first,
	count(*) FILTER (WHERE hi_key IS NULL) AS last
FROM acme_migrate.ranges r JOIN acme_migrate.jobs j USING (job_id)
WHERE j.job_name = 'orders';
SELECT acme_migrate_start('customers');
-- progress lines depend on timing: keep them out of the expected output
SET client_min_messages = warning;
SELECT acme_migrate_wait('customers', timeout => '2 min') AS customers;
SELECT acme_migrate_wait('orders', timeout => '2 min') AS orders;
RESET client_min_messages;

SELECT job_name, state, rows_read, rows_copied, workers FROM acme_migrate.jobs ORDER BY job_id;
SELECT count(*) FILTER (WHERE state = 'done') = count(*) AS all_ranges_done,
	sum(rows_read) AS rows_in_ranges
FROM acme_migrate.ranges;
-- the copy is exact, and every row of the history is accounted for
SELECT count(*) FROM (SELECT * FROM w.orders EXCEPT SELECT * FROM w.orders2) x;
SELECT count(*) FROM (SELECT * FROM w.orders2 EXCEPT SELECT * FROM w.orders) x;
SELECT (SELECT count(*) FROM w.orders2) = (SELECT rows_copied FROM acme_migrate.jobs
	WHERE job_name = 'orders') AS counts_agree;
SELECT j.job_name, sum(b.rows_read) = j.rows_read AS history_adds_up
FROM acme_migrate.jobs j JOIN acme_migrate.batches b USING (job_id)
GROUP BY j.job_name, j.rows_read ORDER BY 1;
-- both workers copied, and every range: the job took them 3 s
-- (max_rows_per_second), and a waiting worker looks again every second
SELECT count(DISTINCT backend_pid) AS worker_processes,
	count(DISTINCT range_no) AS ranges_copied FROM acme_migrate.batches b
JOIN acme_migrate.jobs j USING (job_id) WHERE j.job_name = 'orders'
  AND b.backend_pid <> pg_backend_pid() AND b.rows_read > 0;
SELECT equal FROM acme_migrate_reconcile('orders');

-- rejects in a job split in ranges: rows are isolated within their range
CREATE TABLE w.raw (id int PRIMARY KEY, qty text);
INSERT INTO w.raw SELECT g, CASE WHEN g % 501 = 0 THEN 'bad' ELSE g::text END
FROM generate_series(1, 40000) g;
ANALYZE w.raw;
CREATE TABLE w.clean (id int PRIMARY KEY, qty int);
SELECT acme_migrate_create('raw', 'w.raw', 'w.clean', batch_size => 1500,
	on_error => 'reject', on_conflict => 'error');
SELECT acme_migrate_start('raw', workers => 2);
SET client_min_messages = warning;
SELECT acme_migrate_wait('raw', timeout => '2 min');
RESET client_min_messages;
SELECT state, rows_read, rows_copied, rows_rejected FROM acme_migrate.jobs
WHERE job_name = 'raw';
SELECT r.sqlstate, count(*) FROM acme_migrate.rejects r
JOIN acme_migrate.jobs j USING (job_id) WHERE j.job_name = 'raw' GROUP BY 1;
SELECT count(*) AS wrong FROM w.raw s
WHERE (s.qty = 'bad') = EXISTS (SELECT 1 FROM w.clean c WHERE c.id = s.id);

-- states that refuse
SELECT acme_migrate_start('orders');
SELECT acme_migrate_pause('orders');
SELECT acme_migrate_cancel('orders');

-- pause and cancel before any worker ran
SELECT acme_migrate_create('c2', 'w.customers', 'w.customers2', on_conflict => 'skip');
SELECT acme_migrate_pause('c2');
SELECT acme_migrate_pause('c2');
SELECT acme_migrate_batch('c2');
SELECT acme_migrate_resume('c2');
SELECT acme_migrate_cancel('c2');
SELECT acme_migrate_cancel('c2');
SELECT acme_migrate_batch('c2');
SELECT acme_migrate_resume('c2');
SELECT job_name, state FROM acme_migrate.jobs ORDER BY job_id;

DROP SCHEMA w CASCADE;
DROP EXTENSION acme_migrate;
