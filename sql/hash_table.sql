--
-- acme_migrate_table_hash and acme_migrate_range_hashes
--
CREATE EXTENSION IF NOT EXISTS acme_migrate;
SET client_min_messages = warning;
CREATE SCHEMA hash_table;
SET search_path = hash_table, public;

-- a uuid as the unsigned 128-bit number it stands for
CREATE FUNCTION uuid_num(u uuid) RETURNS numeric LANGUAGE sql IMMUTABLE AS $$
	SELECT (CASE WHEN hi < 0 THEN hi + 18446744073709551616 ELSE hi END) * 18446744073709551616
		 + (CASE WHEN lo < 0 THEN lo + 18446744073709551616 ELSE lo END)
	FROM (SELECT ('x' || substr(replace(u::text, '-', ''), 1, 16))::bit(64)::bigint::numeric AS hi,
				 ('x' || substr(replace(u::text, '-', ''), 17, 16))::bit(64)::bigint::numeric AS lo) s
$$;

CREATE TABLE t (id int PRIMARY KEY, v text, w numeric);
-- empty: no rows, zero hash
SELECT * FROM acme_migrate_table_hash('t');
INSERT INTO t VALUES (1, 'one', 1.0);
-- one row: the row's hash
SELECT row_count, hash = (SELECT acme_migrate_row_hash(t) FROM t) AS is_row_hash
FROM acme_migrate_table_hash('t');
SELECT * FROM acme_migrate_table_hash('t');
INSERT INTO t SELECT i, 'v' || i, i / 3.0 FROM generate_series(2, 1000) i;
-- the sum of row hashes modulo 2^128 (with carries)
SELECT row_count, uuid_num(hash) = (SELECT sum(uuid_num(acme_migrate_row_hash(t))) % 340282366920938463463374607431768211456 FROM t) AS is_sum
FROM acme_migrate_table_hash('t');

-- order-independent; duplicates do not cancel
CREATE TABLE t_rev (LIKE t INCLUDING ALL);
INSERT INTO t_rev SELECT * FROM t ORDER BY id DESC;
SELECT (SELECT hash FROM acme_migrate_table_hash('t')) = (SELECT hash FROM acme_migrate_table_hash('t_rev')) AS order_independent;
CREATE TABLE dup (v text);
INSERT INTO dup VALUES ('a'), ('a');
SELECT row_count, hash <> '00000000-0000-0000-0000-000000000000' AS not_cancelled,
       uuid_num(hash) = 2 * uuid_num((SELECT acme_migrate_row_hash(ROW('a'::text)))) % 340282366920938463463374607431768211456 AS twice
FROM acme_migrate_table_hash('dup');
-- one changed value changes the hash
UPDATE t_rev SET w = 1.00 WHERE id = 1;
SELECT (SELECT hash FROM acme_migrate_table_hash('t')) = (SELECT hash FROM acme_migrate_table_hash('t_rev')) AS still_equal;

-- partitions with their own column order and dropped columns, inheritance
-- children, views and materialized views hash as their rows
CREATE TABLE p (id int, v text, w numeric, PRIMARY KEY (id)) PARTITION BY RANGE (id);
CREATE TABLE p1 PARTITION OF p FOR VALUES FROM (MINVALUE) TO (500);
CREATE TABLE p2 (junk int, w numeric, v text, id int NOT NULL);
ALTER TABLE p2 DROP COLUMN junk;
ALTER TABLE p ATTACH PARTITION p2 FOR VALUES FROM (500) TO (MAXVALUE);
INSERT INTO p SELECT * FROM t;
CREATE TABLE parent (id int PRIMARY KEY, v text, w numeric);
CREATE TABLE child (extra int) INHERITS (parent);
INSERT INTO parent SELECT * FROM t WHERE id <= 300;
INSERT INTO child SELECT *, 0 FROM t WHERE id > 300;
CREATE VIEW t_view AS SELECT * FROM t;
CREATE MATERIALIZED VIEW t_mv AS SELECT * FROM t;
SELECT r, h.row_count, h.hash = (SELECT hash FROM acme_migrate_table_hash('t')) AS same_as_t
FROM unnest(ARRAY['p', 'parent', 't_view', 't_mv']::regclass[]) r,
	 LATERAL acme_migrate_table_hash(r) h;
SELECT row_count FROM acme_migrate_table_hash('p2');
SELECT row_count FROM acme_migrate_table_hash('only_name_that_does_not_exist');

-- privileges and row-level security
CREATE ROLE hash_reader;
GRANT USAGE ON SCHEMA hash_table TO hash_reader;
SET ROLE hash_reader;
SELECT * FROM acme_migrate_table_hash('t');
SELECT * FROM acme_migrate_range_hashes('t');
RESET ROLE;
GRANT SELECT (id, v, w) ON t TO hash_reader;
SET ROLE hash_reader;
SELECT row_count FROM acme_migrate_table_hash('t');
RESET ROLE;
GRANT SELECT ON t_rev TO hash_reader;
ALTER TABLE t_rev ENABLE ROW LEVEL SECURITY;
CREATE POLICY small ON t_rev TO hash_reader USING (id <= 10);
SET ROLE hash_reader;
SELECT row_count FROM acme_migrate_table_hash('t_rev');
SELECT sum(rows) FROM acme_migrate_range_hashes('t_rev', 4);
RESET ROLE;
SELECT row_count FROM acme_migrate_table_hash('t_rev');

-- what cannot be hashed
CREATE SEQUENCE s;
SELECT * FROM acme_migrate_table_hash('s');
SELECT * FROM acme_migrate_table_hash('t_pkey');
SELECT * FROM acme_migrate_range_hashes('dup');
SELECT * FROM acme_migrate_range_hashes('t', 0);
SELECT count(*) AS no_relation_no_ranges FROM acme_migrate_range_hashes(NULL);
SELECT * FROM acme_migrate_table_hash(NULL);

--
-- range hashes: every row in exactly one range, in key order
--
CREATE FUNCTION check_ranges(r regclass, n int) RETURNS TABLE (ranges bigint, rows numeric, sum_is_table_hash boolean, contiguous boolean)
LANGUAGE sql AS $$
	WITH rh AS (SELECT row_number() OVER () AS k, * FROM public.acme_migrate_range_hashes(r, n)),
		 th AS (SELECT * FROM public.acme_migrate_table_hash(r))
	SELECT count(*), sum(rh.rows),
		   sum(hash_table.uuid_num(rh.hash)) % 340282366920938463463374607431768211456 = hash_table.uuid_num((SELECT hash FROM th)),
		   bool_and(CASE WHEN k = 1 THEN lo IS NULL ELSE lo = (SELECT hi FROM rh r2 WHERE r2.k = rh.k - 1) END)
		   AND (SELECT hi IS NULL FROM rh ORDER BY k DESC LIMIT 1)
	FROM rh
$$;
SELECT * FROM check_ranges('t', 8);
SELECT * FROM check_ranges('t', 1);
SELECT * FROM check_ranges('p', 5);
SELECT lo, hi, rows FROM acme_migrate_range_hashes('t', 4);
-- a composite key of any btree-orderable types
CREATE TABLE ck (region text COLLATE "C", day date, n int, payload text, PRIMARY KEY (region, day, n));
INSERT INTO ck SELECT r, '2024-01-01'::date + d, n, md5(r || d || n)
FROM unnest(ARRAY['north', 'south', 'east', 'Ünter']) r, generate_series(0, 30) d, generate_series(1, 3) n;
SELECT * FROM check_ranges('ck', 6);
SELECT lo, hi, rows FROM acme_migrate_range_hashes('ck', 3);
-- a large table is sampled, not read in full, to find the boundaries
CREATE TABLE big (id bigint PRIMARY KEY, v text);
INSERT INTO big SELECT i, md5(i::text) FROM generate_series(1, 200000) i;
ANALYZE big;
SELECT ranges BETWEEN 12 AND 16 AS about_16, rows, sum_is_table_hash, contiguous FROM check_ranges('big', 16);

-- the same boundaries on two tables locate a difference
CREATE TABLE ck2 AS SELECT * FROM ck;
UPDATE ck2 SET payload = 'changed' WHERE region = 'south' AND day = '2024-01-20' AND n = 2;
ALTER TABLE ck2 ADD PRIMARY KEY (region, day, n);
CREATE TEMP TABLE bounds AS
SELECT jsonb_agg(hi) AS b FROM acme_migrate_range_hashes('ck', 10) WHERE hi IS NOT NULL;
SELECT s.lo, s.hi, s.rows, t.rows
FROM acme_migrate_range_hashes('ck', bounds => (SELECT b FROM bounds)) s
JOIN acme_migrate_range_hashes('ck2', bounds => (SELECT b FROM bounds)) t
  ON s.lo IS NOT DISTINCT FROM t.lo
WHERE s.hash <> t.hash;
SELECT count(*) AS ranges FROM acme_migrate_range_hashes('ck2', bounds => '[{"region": "m", "day": "2024-01-05", "n": 0}, {"region": "m", "day": "2024-01-05", "n": 0}]');
SELECT * FROM acme_migrate_range_hashes('ck2', bounds => '[{"region": "m"}]');
SELECT * FROM acme_migrate_range_hashes('ck2', bounds => '{"region": "m"}');

RESET search_path;
DROP SCHEMA hash_table CASCADE;
DROP ROLE hash_reader;
