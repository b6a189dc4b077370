--
-- Ordinary mistakes that used to lose rows while the job said "done":
-- each is now refused or stops the job, and every copy that goes through
-- is compared with an independent oracle (the source mapped by hand,
-- EXCEPT ALL the target, both ways).
--
DROP EXTENSION IF EXISTS acme_migrate CASCADE;
CREATE EXTENSION acme_migrate;
CREATE SCHEMA sl;
SET search_path = sl, public;

CREATE FUNCTION try(sql text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE sql;
	RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
	RETURN SQLSTATE || ': ' || SQLERRM;
END
$$;

CREATE TABLE src (id int PRIMARY KEY, v text NOT NULL);
INSERT INTO src SELECT g, 'v' || g FROM generate_series(1, 2000) g;

--
-- 1. Target kinds: a partition written directly must keep its bounds, a
-- partitioned parent routes, a parent with inheritance children keeps
-- its own rows.
--
CREATE TABLE parted (id int PRIMARY KEY, v text) PARTITION BY RANGE (id);
CREATE TABLE parted_lo PARTITION OF parted FOR VALUES FROM (1) TO (1000);
CREATE TABLE parted_hi PARTITION OF parted FOR VALUES FROM (1000) TO (3000);

-- all 2000 rows into the partition for 1..999: the batch fails at the
-- first row out of bounds, nothing is written
SELECT acme_migrate_create('into_partition', 'src', 'parted_lo');
\set VERBOSITY terse
CALL acme_migrate_run('into_partition');
\set VERBOSITY default
SELECT count(*) AS rows_in_partition FROM parted_lo;
SELECT state, rows_copied FROM acme_migrate.jobs WHERE job_name = 'into_partition';
-- the same through the SQL path (direct writes off)
SET acme_migrate.direct_write = off;
\set VERBOSITY terse
CALL acme_migrate_run('into_partition');
\set VERBOSITY default
RESET acme_migrate.direct_write;
SELECT count(*) AS rows_in_partition FROM parted_lo;
-- with on_error => 'reject' the rows out of bounds are rejected, the rest copied
SELECT acme_migrate_create('into_partition_rej', 'src', 'parted_lo',
	on_error => 'reject', batch_size => 700);
CALL acme_migrate_run('into_partition_rej');
SELECT state, rows_copied, rows_rejected FROM acme_migrate.jobs
WHERE job_name = 'into_partition_rej';
SELECT count(*) AS rows_in_partition,
	(SELECT count(*) FROM ((SELECT id, v FROM src WHERE id < 1000)
		EXCEPT ALL (SELECT id, v FROM parted_lo)) x) AS oracle_missing,
	(SELECT count(*) FROM ((SELECT id, v FROM parted_lo)
		EXCEPT ALL (SELECT id, v FROM src WHERE id < 1000)) x) AS oracle_extra
FROM parted_lo;
SELECT sqlstate, count(*), min(key->>'id') AS first_key FROM acme_migrate.rejects r
JOIN acme_migrate.jobs j USING (job_id) WHERE j.job_name = 'into_partition_rej'
GROUP BY sqlstate;

-- the partitioned parent routes every row
SELECT acme_migrate_create('into_parted', 'src', 'parted', on_conflict => 'skip');
TRUNCATE parted;
CALL acme_migrate_run('into_parted');
SELECT (SELECT count(*) FROM parted_lo) AS lo, (SELECT count(*) FROM parted_hi) AS hi,
	(SELECT count(*) FROM ((SELECT id, v FROM src) EXCEPT ALL (SELECT id, v FROM parted)) x) AS oracle_missing,
	(SELECT count(*) FROM ((SELECT id, v FROM parted) EXCEPT ALL (SELECT id, v FROM src)) x) AS oracle_extra;

-- a parent with an inheritance child: rows go into the parent itself
CREATE TABLE inh_parent (id int PRIMARY KEY, v text);
CREATE TABLE inh_child (CHECK (id > 5000)) INHERITS (inh_parent);
INSERT INTO inh_child VALUES (5001, 'child');
SELECT acme_migrate_create('into_inh', 'src', 'inh_parent');
CALL acme_migrate_run('into_inh');
SELECT (SELECT count(*) FROM ONLY inh_parent) AS parent_rows,
	(SELECT count(*) FROM inh_child) AS child_rows,
	(SELECT count(*) FROM ((SELECT id, v FROM src) EXCEPT ALL (SELECT id, v FROM ONLY inh_parent)) x) AS oracle_missing;
-- reconcile sees the child's row as extra: it is in the target as SELECT sees it
SELECT source_rows, target_rows, missing, extra, changed, equal
FROM acme_migrate_reconcile('into_inh');

--
-- 2. Mappings that do not give one value per source row are refused when
-- the job is created; nothing is written to the catalog.
--
CREATE TABLE t_map (id int PRIMARY KEY, secret bigint);
SELECT try($$SELECT acme_migrate_create('srf', 'src', 't_map', columns => '{"secret": "generate_series(1, id % 2)"}')$$);
SELECT try($$SELECT acme_migrate_create('srf2', 'src', 't_map', columns => '{"secret": "(SELECT 1) + unnest(ARRAY[1, 2])"}')$$);
SELECT try($$SELECT acme_migrate_create('agg', 'src', 't_map', columns => '{"secret": "count(*)"}')$$);
SELECT try($$SELECT acme_migrate_create('win', 'src', 't_map', columns => '{"secret": "sum(id) OVER ()"}')$$);
SELECT try($$SELECT acme_migrate_create('volsub', 'src', 't_map', columns => '{"secret": "(SELECT id + (random() * 10)::int)"}')$$);
SELECT try($$SELECT acme_migrate_create('volfilter', 'src', 't_map', filter => 'random() < 0.5')$$);
SELECT count(*) AS jobs_named_like_these FROM acme_migrate.jobs
WHERE job_name IN ('srf', 'srf2', 'agg', 'win', 'volsub', 'volfilter');
-- a scalar subquery (a lookup) and a stable function are fine
SELECT acme_migrate_create('lookup', 'src', 't_map',
	columns => '{"secret": "(SELECT count(*) FROM src s2 WHERE s2.id <= s.id)"}');
CALL acme_migrate_run('lookup');
SELECT (SELECT count(*) FROM ((SELECT id, id::bigint FROM src) EXCEPT ALL (SELECT id, secret FROM t_map)) x) AS oracle_missing,
	(SELECT count(*) FROM ((SELECT id, secret FROM t_map) EXCEPT ALL (SELECT id, id::bigint FROM src)) x) AS oracle_extra;

-- reconciliation counts the source apart from the mapping: a job whose
-- stored mapping drops rows (as a set-returning mapping accepted by 1.0
-- did) is not "equal" even though the mapping's output matches the target
SELECT acme_migrate_create('drops_rows', 'src', 't_map', columns => '{"secret": "id"}');
UPDATE acme_migrate.jobs SET column_map = '{"id": "id", "secret": "generate_series(1, id % 2)"}'
WHERE job_name = 'drops_rows';
DELETE FROM t_map WHERE id % 2 = 0;
UPDATE t_map SET secret = 1;
SELECT source_rows, target_rows, missing, extra, changed, equal
FROM acme_migrate_reconcile('drops_rows');
SELECT source_rows, mapped_rows, target_rows, equal FROM acme_migrate.reconcile_runs
WHERE run_id = (SELECT max(run_id) FROM acme_migrate.reconcile_runs);

--
-- 3. A key (or mapped column) changed between batches stops the job; its
-- checkpoint would otherwise mean something else.
--
CREATE TABLE s_key (id int PRIMARY KEY, v text);
INSERT INTO s_key SELECT g, 'x' || g FROM generate_series(1, 300) g;
CREATE TABLE t_key (id text PRIMARY KEY, v text);
SELECT acme_migrate_create('key_type', 's_key', 't_key', batch_size => 50);
CALL acme_migrate_run('key_type', max_batches => 2);
ALTER TABLE s_key ALTER COLUMN id TYPE text;
CALL acme_migrate_run('key_type');
SELECT state, rows_copied, failure_reason FROM acme_migrate.jobs WHERE job_name = 'key_type';
SELECT try($$SELECT acme_migrate_batch('key_type')$$);
-- nothing was copied twice or after the change
SELECT count(*) AS target_rows, count(DISTINCT id) AS distinct_keys FROM t_key;

-- a collation change of a mapped text column, and a rename swap
CREATE TABLE s_coll (id int PRIMARY KEY, a text, b text);
INSERT INTO s_coll SELECT g, 'a' || g, 'b' || g FROM generate_series(1, 100) g;
CREATE TABLE t_coll (id int PRIMARY KEY, a text, b text);
SELECT acme_migrate_create('coll', 's_coll', 't_coll', batch_size => 30);
SELECT acme_migrate_batch('coll');
ALTER TABLE s_coll ALTER COLUMN a TYPE text COLLATE "C";
SELECT acme_migrate_batch('coll');
SELECT state FROM acme_migrate.jobs WHERE job_name = 'coll';
CREATE TABLE s_swap (id int PRIMARY KEY, a text, b text);
INSERT INTO s_swap SELECT g, 'a' || g, 'b' || g FROM generate_series(1, 100) g;
CREATE TABLE t_swap (id int PRIMARY KEY, a text, b text);
SELECT acme_migrate_create('swap', 's_swap', 't_swap', batch_size => 30);
SELECT acme_migrate_batch('swap');
ALTER TABLE s_swap RENAME COLUMN a TO tmp;
ALTER TABLE s_swap RENAME COLUMN b TO a;
ALTER TABLE s_swap RENAME COLUMN tmp TO b;
SELECT acme_migrate_batch('swap');
SELECT state FROM acme_migrate.jobs WHERE job_name = 'swap';
-- a target column dropped
CREATE TABLE s_drop (id int PRIMARY KEY, a text);
INSERT INTO s_drop SELECT g, 'a' || g FROM generate_series(1, 100) g;
CREATE TABLE t_drop (id int PRIMARY KEY, a text, c text);
SELECT acme_migrate_create('drop_col', 's_drop', 't_drop', batch_size => 30,
	columns => '{"c": "upper(a)"}');
SELECT acme_migrate_batch('drop_col');
ALTER TABLE t_drop DROP COLUMN c;
SELECT acme_migrate_batch('drop_col');
SELECT state FROM acme_migrate.jobs WHERE job_name = 'drop_col';
-- an added column and a change to a column the job does not read are fine
CREATE TABLE s_add (id int PRIMARY KEY, a text, unused varchar(10));
INSERT INTO s_add SELECT g, 'a' || g, 'u' FROM generate_series(1, 100) g;
CREATE TABLE t_add (id int PRIMARY KEY, a text);
SELECT acme_migrate_create('add_col', 's_add', 't_add', batch_size => 30);
SELECT acme_migrate_batch('add_col');
ALTER TABLE s_add ADD COLUMN extra int;
ALTER TABLE s_add ALTER COLUMN unused TYPE text;
ALTER TABLE t_add ADD COLUMN note text DEFAULT 'n';
CALL acme_migrate_run('add_col');
SELECT state FROM acme_migrate.jobs WHERE job_name = 'add_col';
SELECT (SELECT count(*) FROM ((SELECT id, a FROM s_add) EXCEPT ALL (SELECT id, a FROM t_add)) x) AS oracle_missing,
	(SELECT count(*) FROM ((SELECT id, a FROM t_add) EXCEPT ALL (SELECT id, a FROM s_add)) x) AS oracle_extra;

--
-- 4. Names are resolved as SQL resolves them: with columns "ID" and id,
-- an unquoted ID (which reads id) is refused; "ID" quoted is the key.
--
CREATE TABLE s_case ("ID" int PRIMARY KEY, id int);
INSERT INTO s_case VALUES (1, 10), (2, 10), (3, 30);
CREATE TABLE t_case (k int PRIMARY KEY, id int);
SELECT try($$SELECT acme_migrate_create('case1', 's_case', 't_case', key => '{ID}', columns => '{"k": "ID"}')$$);
SELECT try($$SELECT acme_migrate_create('case2', 's_case', 't_case', key => '{ID}', columns => '{"k": "s.ID + 0"}')$$);
SELECT try($$SELECT acme_migrate_create('case3', 's_case', 't_case', key => '{ID}', columns => '{"k": "1", "id": "ID"}', filter => 'ID > 0')$$);
SELECT acme_migrate_create('case_ok', 's_case', 't_case', key => '{ID}', columns => '{"k": "\"ID\""}');
CALL acme_migrate_run('case_ok');
SELECT (SELECT count(*) FROM ((SELECT "ID", id FROM s_case) EXCEPT ALL (SELECT k, id FROM t_case)) x) AS oracle_missing,
	(SELECT count(*) FROM t_case) AS target_rows;

--
-- 5. Clear errors at the right time.
--
CREATE TABLE s7 (id int PRIMARY KEY, v text);
INSERT INTO s7 VALUES (1, 'a');
CREATE TABLE t7 (id int PRIMARY KEY, v text);
SELECT try($$SELECT acme_migrate_create('long_lock', 's7', 't7', lock_timeout => '1000 years')$$);
SELECT acme_migrate_create('j7', 's7', 't7');
SELECT try($$SELECT acme_migrate_alter('j7', lock_timeout => '1000 years')$$);
SELECT lock_timeout FROM acme_migrate.jobs WHERE job_name = 'j7';
-- a name of 32 two-byte characters is fine; 64 characters are not
SELECT try(format($$SELECT acme_migrate_create(%L, 's7', 't7')$$, repeat('é', 32)));
SELECT try(format($$SELECT acme_migrate_create(%L, 's7', 't7')$$, repeat('é', 63)));
SELECT try(format($$SELECT acme_migrate_create(%L, 's7', 't7')$$, repeat('é', 64)));
-- a dropped source or target
SELECT acme_migrate_create('dropped_t', 's7', 't7');
DROP TABLE t7;
SELECT try($$SELECT acme_migrate_batch('dropped_t')$$);
SELECT try($$SELECT * FROM acme_migrate_reconcile('dropped_t')$$);
DROP TABLE s7;
SELECT try($$SELECT acme_migrate_batch('j7')$$);
SELECT acme_migrate_drop('dropped_t');

RESET search_path;
DROP SCHEMA sl CASCADE;
DROP EXTENSION acme_migrate;
