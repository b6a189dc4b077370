--
-- Relations PostgreSQL does not store here go through SQL or are refused:
-- foreign tables and Citus tables (simulated below by a pg_dist_partition
-- catalog of our own, as Citus is not needed for this test) never meet the
-- direct writer, the direct scans of table_hash and range_hashes, or the
-- capture triggers.
--
CREATE EXTENSION acme_migrate;
CREATE SCHEMA loc;
CREATE TABLE loc.src (id int PRIMARY KEY, v text);
INSERT INTO loc.src SELECT g, 'v' || g FROM generate_series(1, 100) g;
CREATE TABLE loc.dst (id int PRIMARY KEY, v text);

-- A foreign-data wrapper without a handler: any SQL read of its tables
-- fails with PostgreSQL's own error, so meeting that error proves the path
-- went through SQL (a direct scan would hash an empty nothing).
CREATE FOREIGN DATA WRAPPER loc_nohandler;
CREATE SERVER loc_server FOREIGN DATA WRAPPER loc_nohandler;
CREATE FOREIGN TABLE loc.ft (id int, v text) SERVER loc_server;
SELECT * FROM acme_migrate_table_hash('loc.ft');
SELECT * FROM acme_migrate_range_hashes('loc.ft', chunks => 4);

-- a partitioned table with a foreign partition, and an inheritance parent
-- with a foreign child: read through SQL as a whole
CREATE TABLE loc.parted (id int, v text) PARTITION BY RANGE (id);
CREATE TABLE loc.parted_1 PARTITION OF loc.parted FOR VALUES FROM (0) TO (1000);
CREATE FOREIGN TABLE loc.parted_2 PARTITION OF loc.parted
	FOR VALUES FROM (1000) TO (2000) SERVER loc_server;
INSERT INTO loc.parted_1 SELECT * FROM loc.src;
SELECT * FROM acme_migrate_table_hash('loc.parted');
CREATE TABLE loc.inh (id int, v text);
INSERT INTO loc.inh SELECT * FROM loc.src;
CREATE FOREIGN TABLE loc.inh_child () INHERITS (loc.inh) SERVER loc_server;
SELECT * FROM acme_migrate_table_hash('loc.inh');

-- a foreign table is never a target, and its changes cannot be captured
SELECT acme_migrate_create(job => 'to_ft', source => 'loc.src', target => 'loc.ft');
-- a foreign table that can be read (file_fdw running a program): a job
-- and a reconciliation read it through SQL, and its table hash is that of
-- the same rows stored here
CREATE EXTENSION file_fdw;
CREATE SERVER loc_files FOREIGN DATA WRAPPER file_fdw;
CREATE FOREIGN TABLE loc.ft_src (id int, v text) SERVER loc_files
	OPTIONS (program 'seq 1 100 | sed -e "s/.*/&,v&/"', format 'csv');
SELECT acme_migrate_create(job => 'from_ft', source => 'loc.ft_src', target => 'loc.dst',
	key => '{id}', capture_changes => true);
SELECT acme_migrate_create(job => 'from_ft', source => 'loc.ft_src', target => 'loc.dst',
	key => '{id}') > 0 AS created;
CALL acme_migrate_run('from_ft');
SELECT (SELECT count(*) FROM (TABLE loc.ft_src EXCEPT ALL TABLE loc.dst) x) AS missing,
	(SELECT count(*) FROM (TABLE loc.dst EXCEPT ALL TABLE loc.ft_src) x) AS extra;
SELECT equal, source_rows, target_rows FROM acme_migrate_reconcile('from_ft');
SELECT (SELECT (row_count, hash) FROM acme_migrate_table_hash('loc.ft_src')) =
	(SELECT (row_count, hash) FROM acme_migrate_table_hash('loc.src')) AS same_hash;
SELECT acme_migrate_drop('from_ft');
TRUNCATE loc.dst;

--
-- Citus, simulated: Citus lists its tables in pg_catalog.pg_dist_partition
-- (partmethod 'h' hash-distributed, 'n' reference or Citus local); that is
-- all acme_migrate looks at.  The "distributed" table here is an ordinary
-- table, so what the SQL path writes is visible, and acme_migrate.batches
-- says which path wrote it.
--
SET allow_system_table_mods = on;
CREATE TABLE pg_catalog.pg_dist_partition (logicalrelid regclass NOT NULL,
	partmethod "char" NOT NULL);
RESET allow_system_table_mods;
CREATE TABLE loc.dist (id int PRIMARY KEY, v text);
CREATE TABLE loc.ref (id int PRIMARY KEY, v text);
CREATE TABLE loc.plain (id int PRIMARY KEY, v text);
INSERT INTO pg_catalog.pg_dist_partition VALUES ('loc.dist', 'h'), ('loc.ref', 'n');

-- into a distributed, a reference and a plain table: only the plain one
-- is written directly
SELECT acme_migrate_create(job => 'to_dist', source => 'loc.src', target => 'loc.dist') > 0 AS created;
SELECT acme_migrate_create(job => 'to_ref', source => 'loc.src', target => 'loc.ref') > 0 AS created;
SELECT acme_migrate_create(job => 'to_plain', source => 'loc.src', target => 'loc.plain') > 0 AS created;
CALL acme_migrate_run('to_dist');
CALL acme_migrate_run('to_ref');
CALL acme_migrate_run('to_plain');
SELECT j.job_name, b.method, sum(b.rows_copied) AS rows
FROM acme_migrate.batches b JOIN acme_migrate.jobs j USING (job_id)
GROUP BY 1, 2 ORDER BY 1, 2;
-- the oracle: every row arrived, nothing else
SELECT (SELECT count(*) FROM (TABLE loc.src EXCEPT ALL TABLE loc.dist) x) AS missing,
	(SELECT count(*) FROM (TABLE loc.dist EXCEPT ALL TABLE loc.src) x) AS extra;
SELECT (SELECT count(*) FROM (TABLE loc.src EXCEPT ALL TABLE loc.ref) x) AS missing,
	(SELECT count(*) FROM (TABLE loc.ref EXCEPT ALL TABLE loc.src) x) AS extra;
SELECT equal, missing, extra, changed FROM acme_migrate_reconcile('to_dist');

-- table_hash of a Citus table without Citus's functions: read through SQL,
-- the same hash as the plain copy
SELECT (SELECT hash FROM acme_migrate_table_hash('loc.dist')) =
	(SELECT hash FROM acme_migrate_table_hash('loc.plain')) AS same_hash;

-- the changes of a Citus table cannot be captured, on either side
SELECT acme_migrate_create(job => 'cap_dist', source => 'loc.dist', target => 'loc.dst',
	capture_changes => true);
SELECT acme_migrate_create(job => 'cap_ref', source => 'loc.ref', target => 'loc.dst',
	capture_changes => true);
SELECT acme_migrate_create(job => 'rev_dist', source => 'loc.src', target => 'loc.dist',
	capture_changes => true, reverse_columns => '{}');
-- nothing was left behind by the refusals
SELECT count(*) FROM acme_migrate.jobs WHERE job_name LIKE 'cap_%' OR job_name = 'rev_dist';
SELECT count(*) FROM pg_trigger WHERE tgrelid IN ('loc.dist'::regclass, 'loc.ref'::regclass, 'loc.src'::regclass);
-- the direct writer itself refuses a table that is not stored here, should
-- anything ever hand it one: a job whose target became a Citus table after
-- it was created writes through SQL
SELECT acme_migrate_create(job => 'late', source => 'loc.src', target => 'loc.dst') > 0 AS created;
INSERT INTO pg_catalog.pg_dist_partition VALUES ('loc.dst', 'h');
SELECT acme_migrate_batch('late');
SELECT b.method FROM acme_migrate.batches b JOIN acme_migrate.jobs j USING (job_id)
WHERE j.job_name = 'late';

SELECT acme_migrate_drop(j) FROM unnest(ARRAY['to_dist', 'to_ref', 'to_plain', 'late']) j;
SET allow_system_table_mods = on;
DROP TABLE pg_catalog.pg_dist_partition;
RESET allow_system_table_mods;
DROP SCHEMA loc CASCADE;
DROP SERVER loc_server;
DROP EXTENSION file_fdw CASCADE;
DROP FOREIGN DATA WRAPPER loc_nohandler;
DROP EXTENSION acme_migrate;
