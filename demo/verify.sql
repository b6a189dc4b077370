/*
 * demo/verify.sql: an independent check of the demo migration, written by
 * hand without acme_migrate: for every job, the source rows mapped the way
 * demo/migrate.sql says, compared with the target rows by EXCEPT ALL both
 * ways.  "missing" = mapped source rows not in the target, "extra" = target
 * rows not in the mapped source.  Fails (psql exit status 3) unless every
 * job is equal.
 *
 * test/demo.sh runs it when the extension has no acme_migrate_reconcile.
 */
\set ON_ERROR_STOP 1

CREATE TEMP TABLE demo_check (
	job			text,
	source_rows	bigint,
	target_rows	bigint,
	missing		bigint,
	extra		bigint
);

-- categories: one row per lower(trim(category))
WITH s AS (SELECT DISTINCT lower(trim(category)) AS name FROM legacy.products),
	 t AS (SELECT name FROM app.categories)
INSERT INTO demo_check
SELECT 'categories', (SELECT count(*) FROM s), (SELECT count(*) FROM t),
	   (SELECT count(*) FROM (TABLE s EXCEPT ALL TABLE t) AS d),
	   (SELECT count(*) FROM (TABLE t EXCEPT ALL TABLE s) AS d);

WITH s AS (SELECT customer_id, name AS full_name, lower(email) AS email,
				  upper(country)::char(2) AS country_code,
				  created::timestamp AT TIME ZONE 'UTC' AS created_at
		   FROM legacy.customers),
	 t AS (SELECT customer_id, full_name, email, country_code, created_at
		   FROM app.customers)
INSERT INTO demo_check
SELECT 'customers', (SELECT count(*) FROM s), (SELECT count(*) FROM t),
	   (SELECT count(*) FROM (TABLE s EXCEPT ALL TABLE t) AS d),
	   (SELECT count(*) FROM (TABLE t EXCEPT ALL TABLE s) AS d);

-- products: compare the category by name, not by the generated id
WITH s AS (SELECT product_id, sku, name, lower(trim(category)) AS category,
				  (price * 100)::bigint AS price_cents
		   FROM legacy.products),
	 t AS (SELECT p.product_id, p.sku, p.name, c.name AS category, p.price_cents
		   FROM app.products p LEFT JOIN app.categories c USING (category_id))
INSERT INTO demo_check
SELECT 'products', (SELECT count(*) FROM s), (SELECT count(*) FROM t),
	   (SELECT count(*) FROM (TABLE s EXCEPT ALL TABLE t) AS d),
	   (SELECT count(*) FROM (TABLE t EXCEPT ALL TABLE s) AS d);

WITH s AS (SELECT order_id, customer_id, product_id, qty AS quantity,
				  (amount * 100)::bigint AS total_cents, upper(status) AS status,
				  created_at AT TIME ZONE 'UTC' AS ordered_at
		   FROM legacy.orders),
	 t AS (SELECT order_id, customer_id, product_id, quantity, total_cents,
				  status, ordered_at
		   FROM app.orders)
INSERT INTO demo_check
SELECT 'orders', (SELECT count(*) FROM s), (SELECT count(*) FROM t),
	   (SELECT count(*) FROM (TABLE s EXCEPT ALL TABLE t) AS d),
	   (SELECT count(*) FROM (TABLE t EXCEPT ALL TABLE s) AS d);

WITH s AS (SELECT payment_id, order_id, (amount * 100)::bigint AS amount_cents,
				  method, paid_at AT TIME ZONE 'UTC' AS paid_at
		   FROM legacy.payments),
	 t AS (SELECT payment_id, order_id, amount_cents, method, paid_at
		   FROM app.payments)
INSERT INTO demo_check
SELECT 'payments', (SELECT count(*) FROM s), (SELECT count(*) FROM t),
	   (SELECT count(*) FROM (TABLE s EXCEPT ALL TABLE t) AS d),
	   (SELECT count(*) FROM (TABLE t EXCEPT ALL TABLE s) AS d);

\echo
\echo 'Independent check (mapped source EXCEPT ALL target, both ways):'
SELECT job, source_rows, target_rows, missing, extra,
	   (missing = 0 AND extra = 0) AS equal
FROM demo_check;

DO $$
DECLARE
	bad text;
BEGIN
	SELECT string_agg(job, ', ') INTO bad
	FROM demo_check WHERE missing <> 0 OR extra <> 0;
	IF bad IS NOT NULL THEN
		RAISE EXCEPTION 'source and target differ for: %', bad;
	END IF;
END
$$;
