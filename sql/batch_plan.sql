--
-- A batch runs on a plan prepared once per batch size, with its LIMIT as a
-- constant (batch.c); when batch_time_target adapts the batch size within
-- one acme_migrate_run, the plan is prepared again for the new size.  The
-- oracle: the rows each batch read (acme_migrate.batches) against the size
-- the adaptation rule gives (a batch far slower than its 1 ms target halves
-- the next one), and EXCEPT ALL between source and target.
--
CREATE EXTENSION IF NOT EXISTS acme_migrate;
CREATE TABLE bp_src (id int PRIMARY KEY, v text);
INSERT INTO bp_src SELECT g, repeat('x', 200) || g FROM generate_series(1, 30000) g;
CREATE TABLE bp_dst (id int PRIMARY KEY, v text);
SELECT acme_migrate_create(job => 'bp_job', source => 'bp_src', target => 'bp_dst',
	batch_size => 8000, batch_time_target => '1 ms') > 0 AS created;
-- one batch first, so that the run's batches all start after a checkpoint
-- and share one query (with a lower bound); then 8000 rows take more than
-- 2 ms, so the run's second batch is half as large: it reads 4000 rows,
-- not the 8000 of the plan of the run's first batch
SELECT acme_migrate_batch('bp_job');
CALL acme_migrate_run('bp_job', max_batches => 2);
SELECT b.batch_no, b.rows_read FROM acme_migrate.batches b
  JOIN acme_migrate.jobs j USING (job_id) WHERE j.job_name = 'bp_job' ORDER BY b.batch_no;
CALL acme_migrate_run('bp_job');
SELECT state FROM acme_migrate.jobs WHERE job_name = 'bp_job';
SELECT (SELECT count(*) FROM (TABLE bp_src EXCEPT ALL TABLE bp_dst) a)
	+ (SELECT count(*) FROM (TABLE bp_dst EXCEPT ALL TABLE bp_src) b) AS differences;
SELECT acme_migrate_drop('bp_job');
DROP TABLE bp_src, bp_dst;
