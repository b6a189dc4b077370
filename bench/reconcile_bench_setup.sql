-- reconcile_bench_setup.sql: tables for bench/reconcile_bench.sh
--
--   psql -v rows=5000000 -v ndiff=500 -f bench/reconcile_bench_setup.sql
--
-- rb_orders    the source: rows rows, ids 1..rows (bigint key, int,
--              numeric(12,2), text, timestamptz, 40-character text),
--              generated like bench/hash_bench.sh's table
-- rb_copy0     an exact copy of it (same physical order, own primary key)
-- rb_copy<n>   a copy with about ndiff differences, deterministic: of ndiff
--              evenly spread ids (one pseudo-random id per stride), every
--              third is deleted from the copy (missing), every third is
--              updated in one of five columns (changed), and for every third
--              a new row is inserted in the copy beyond the last source id
--              (extra)
--
-- rb_expected  what the differences are: (kind, id), kind being missing,
--              extra or changed as acme_migrate_reconcile names them

SET client_min_messages = warning;
SELECT format('DROP TABLE %s', oid::regclass) FROM pg_class
WHERE relkind = 'r' AND relnamespace = current_schema()::regnamespace
  AND relname ~ '^rb_(orders|copy[0-9]+|diffcopy|expected)$' \gexec

CREATE TABLE rb_orders (
	id bigint NOT NULL,
	customer_id integer NOT NULL,
	amount numeric(12,2) NOT NULL,
	status text NOT NULL,
	created_at timestamptz NOT NULL,
	note text NOT NULL
);
INSERT INTO rb_orders
SELECT i, ((i * 7919) % 100000)::integer, ((i * 104729) % 1000000) / 100.0,
	   (ARRAY['new', 'paid', 'shipped', 'delivered', 'cancelled'])[1 + i % 5],
	   timestamptz '2020-01-01 00:00:00+00' + i * interval '17 seconds',
	   substr(md5(i::text) || md5((i + 1)::text), 1, 40)
FROM generate_series(1::bigint, :rows) i;
ALTER TABLE rb_orders ADD PRIMARY KEY (id);

CREATE TABLE rb_copy0 (LIKE rb_orders);
INSERT INTO rb_copy0 SELECT * FROM rb_orders ORDER BY id;
ALTER TABLE rb_copy0 ADD PRIMARY KEY (id);

CREATE TABLE rb_diffcopy (LIKE rb_orders);
INSERT INTO rb_diffcopy SELECT * FROM rb_orders ORDER BY id;
ALTER TABLE rb_diffcopy ADD PRIMARY KEY (id);

-- the ndiff touched ids: k-th of them in the k-th stride of the id range
CREATE TABLE rb_expected (k integer, kind text, id bigint);
INSERT INTO rb_expected
SELECT k,
	   (ARRAY['missing', 'changed', 'extra'])[1 + k % 3],
	   CASE WHEN k % 3 = 2 THEN :rows + 1 + k
			ELSE 1 + k::bigint * s + (k::bigint * 7919) % s END
FROM (SELECT greatest(:rows / :ndiff, 1)::bigint AS s) p,
	 generate_series(0, least(:ndiff, :rows) - 1) k;

DELETE FROM rb_diffcopy d USING rb_expected e
WHERE e.kind = 'missing' AND d.id = e.id;

-- one column per changed row, in turn: every column but the key gets changed
UPDATE rb_diffcopy d SET
	customer_id = CASE WHEN e.k / 3 % 5 = 0 THEN d.customer_id + 1 ELSE d.customer_id END,
	amount = CASE WHEN e.k / 3 % 5 = 1 THEN d.amount + 0.01 ELSE d.amount END,
	status = CASE WHEN e.k / 3 % 5 = 2 THEN 'refunded' ELSE d.status END,
	created_at = CASE WHEN e.k / 3 % 5 = 3 THEN d.created_at + interval '1 second'
				 ELSE d.created_at END,
	note = CASE WHEN e.k / 3 % 5 = 4 THEN upper(d.note) || '!' ELSE d.note END
FROM rb_expected e
WHERE e.kind = 'changed' AND d.id = e.id;

INSERT INTO rb_diffcopy
SELECT e.id, 4242, 12.34, 'new', timestamptz '2024-06-01 12:00:00+00',
	   substr(md5(e.id::text) || md5((e.id + 1)::text), 1, 40)
FROM rb_expected e WHERE e.kind = 'extra';

SELECT format('ALTER TABLE rb_diffcopy RENAME TO rb_copy%s', count(*)),
	   format('ALTER INDEX rb_diffcopy_pkey RENAME TO rb_copy%s_pkey', count(*))
FROM rb_expected \gexec

VACUUM (FREEZE, ANALYZE) rb_orders;
VACUUM (FREEZE, ANALYZE) rb_copy0;
SELECT format('VACUUM (FREEZE, ANALYZE) rb_copy%s', count(*)) FROM rb_expected \gexec
VACUUM ANALYZE rb_expected;
