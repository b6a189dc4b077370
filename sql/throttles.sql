--
-- batch_time_target adapts the size of a session's batches, seen in the
-- batch history (acme_migrate.batches), not in times: a target far above
-- what a batch takes doubles the size at each batch up to ten times
-- batch_size; a target far below halves it down to a tenth.  Without a
-- target every batch has batch_size rows.  (max_rows_per_second,
-- lock_timeout and the workers' retries are in test/t/024_throttles.pl.)
--
CREATE EXTENSION acme_migrate;
CREATE SCHEMA th;
CREATE TABLE th.src (id bigint PRIMARY KEY, v text);
INSERT INTO th.src SELECT g, 'v' || g FROM generate_series(1, 6000) g;
CREATE TABLE th.fast (LIKE th.src INCLUDING ALL);
CREATE TABLE th.slow (LIKE th.src INCLUDING ALL);
CREATE TABLE th.plain (LIKE th.src INCLUDING ALL);
-- 2 ms a row: a batch of 10 rows takes 20 ms, twice a 1 ms target at least
CREATE FUNCTION th.slow_v(v text) RETURNS text LANGUAGE sql VOLATILE
AS $$ SELECT v FROM pg_sleep(0.002) $$;

SELECT acme_migrate_create('fast', 'th.src', 'th.fast', batch_size => 100,
	batch_time_target => '1 h');
SELECT acme_migrate_create('slow', 'th.src', 'th.slow', batch_size => 100,
	batch_time_target => '1 ms', columns => '{"v": "th.slow_v(v)"}');
SELECT acme_migrate_create('plain', 'th.src', 'th.plain', batch_size => 100);

CALL acme_migrate_run('fast', max_batches => 12);
CALL acme_migrate_run('slow', max_batches => 8);
CALL acme_migrate_run('plain', max_batches => 5);

-- the sizes, batch by batch
SELECT j.job_name, string_agg(b.rows_read::text, ',' ORDER BY b.batch_no) AS sizes
FROM acme_migrate.batches b JOIN acme_migrate.jobs j USING (job_id)
GROUP BY j.job_name ORDER BY 1;

-- the rows copied are the source's first rows, each once
SELECT (SELECT count(*) FROM (SELECT * FROM th.fast EXCEPT ALL
		SELECT * FROM th.src WHERE id <= (SELECT max(id) FROM th.fast)) x) +
	   (SELECT count(*) FROM (SELECT * FROM th.src WHERE id <= (SELECT max(id) FROM th.fast)
		EXCEPT ALL SELECT * FROM th.fast) x) AS fast_diffs,
	   (SELECT count(*) FROM (SELECT * FROM th.slow EXCEPT ALL
		SELECT * FROM th.src WHERE id <= (SELECT max(id) FROM th.slow)) x) +
	   (SELECT count(*) FROM (SELECT * FROM th.src WHERE id <= (SELECT max(id) FROM th.slow)
		EXCEPT ALL SELECT * FROM th.slow) x) AS slow_diffs;

-- acme_migrate_alter's batch_time_target applies to the next call
SELECT acme_migrate_alter('plain', batch_time_target => '1 h');
CALL acme_migrate_run('plain', max_batches => 3);
SELECT string_agg(b.rows_read::text, ',' ORDER BY b.batch_no) AS plain_sizes
FROM acme_migrate.batches b JOIN acme_migrate.jobs j USING (job_id)
WHERE j.job_name = 'plain';

DROP EXTENSION acme_migrate;
DROP SCHEMA th CASCADE;
