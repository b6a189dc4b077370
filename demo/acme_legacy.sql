/*
 * demo/acme_legacy.sql: the ACME legacy database of the demo, schema "legacy".
 *
 *   psql -v scale=1000000 -f demo/acme_legacy.sql
 *
 * scale is the number of orders (default 1,000,000); there are about
 * scale/10 customers, 1,000 products and one payment per order (none for
 * cancelled orders, two for some others).  Everything is generated with
 * generate_series and plain arithmetic, so the data is the same on every run.
 *
 * The layout has the faults the migration fixes: product categories are free
 * text with case and whitespace variants ("Garden", " garden", "GARDEN "),
 * amounts are numeric currency units, column names are dated.
 */
\set ON_ERROR_STOP 1
\if :{?scale}
\else
\set scale 1000000
\endif

SET client_min_messages = warning;
DROP SCHEMA IF EXISTS legacy CASCADE;
RESET client_min_messages;
CREATE SCHEMA legacy;

-- sizes, kept in a table so every statement below reads the same numbers
CREATE TABLE legacy.demo_scale AS
SELECT	greatest(:scale::bigint, 1) AS orders,
		greatest(:scale::bigint / 10, 1) AS customers,
		1000::bigint AS products;

CREATE TABLE legacy.customers (
	customer_id	integer NOT NULL,
	name		text NOT NULL,
	email		text NOT NULL,		-- mixed case
	country		text NOT NULL,		-- lower-case ISO code
	fax			text,				-- not migrated
	created		date NOT NULL
);

CREATE TABLE legacy.products (
	product_id	integer NOT NULL,
	sku			text NOT NULL,
	name		text NOT NULL,
	category	text NOT NULL,		-- free text: case and whitespace variants
	price		numeric(10, 2) NOT NULL
);

CREATE TABLE legacy.orders (
	order_id	bigint NOT NULL,
	customer_id	integer NOT NULL,
	product_id	integer NOT NULL,
	qty			integer NOT NULL,
	amount		numeric(12, 2) NOT NULL,
	status		text NOT NULL,		-- new, paid, shipped, cancelled
	created_at	timestamp NOT NULL	-- UTC, without time zone
);

CREATE TABLE legacy.payments (
	payment_id	bigint NOT NULL,
	order_id	bigint NOT NULL,
	amount		numeric(12, 2) NOT NULL,
	method		text NOT NULL,
	paid_at		timestamp NOT NULL
);

INSERT INTO legacy.customers
SELECT	g,
		'Customer ' || g,
		'Customer.' || g || '@Example.COM',
		(ARRAY['de', 'fr', 'us', 'gb', 'nl', 'es', 'it', 'se'])[1 + g % 8],
		CASE WHEN g % 7 = 0 THEN '+49 30 ' || g END,
		date '2010-01-01' + (g * 37 % 4000)::integer
FROM generate_series(1, (SELECT customers FROM legacy.demo_scale)) AS g;

INSERT INTO legacy.products
SELECT	g,
		'SKU-' || lpad(g::text, 6, '0'),
		'Product ' || g,
		CASE (g / 12) % 5
			WHEN 0 THEN c
			WHEN 1 THEN lower(c)
			WHEN 2 THEN upper(c) || ' '
			WHEN 3 THEN '  ' || c
			ELSE ' ' || lower(c) || '  '
		END,
		round(1 + (g * 7919 % 50000) / 100.0, 2)
FROM generate_series(1, (SELECT products FROM legacy.demo_scale)) AS g,
	LATERAL (SELECT (ARRAY['Electronics', 'Books', 'Garden', 'Toys', 'Kitchen',
						   'Sports', 'Clothing', 'Office Supplies', 'Health',
						   'Automotive', 'Music', 'Pet Care'])[1 + g % 12] AS c) AS cat;

INSERT INTO legacy.orders
SELECT	g,
		1 + (g * 7919 % s.customers)::integer,
		1 + (g * 104729 % s.products)::integer,
		1 + (g % 5)::integer,
		round(1 + (g * 15485863 % 100000) / 100.0, 2),
		(ARRAY['new', 'paid', 'shipped', 'shipped', 'shipped', 'paid', 'shipped',
			   'shipped', 'shipped', 'shipped', 'shipped', 'shipped', 'shipped',
			   'shipped', 'shipped', 'shipped', 'shipped', 'shipped', 'shipped',
			   'cancelled'])[1 + g % 20],
		timestamp '2015-01-01' + make_interval(secs => g * 271 % 283996800)
FROM legacy.demo_scale AS s, generate_series(1, s.orders) AS g;

-- one payment per order, none when cancelled (g % 20 = 19), a second one
-- (a split payment) when g % 20 = 3
INSERT INTO legacy.payments
SELECT	row_number() OVER (ORDER BY o.order_id, p.part),
		o.order_id,
		CASE WHEN o.order_id % 20 = 3 THEN round(o.amount / 2, 2)
											+ CASE WHEN p.part = 2 THEN 0.01 ELSE 0 END
			 ELSE o.amount END,
		(ARRAY['card', 'card', 'paypal', 'invoice'])[1 + (o.order_id % 4)::integer],
		o.created_at + make_interval(mins => p.part * 10)
FROM legacy.orders AS o
CROSS JOIN LATERAL generate_series(1, CASE WHEN o.order_id % 20 = 3 THEN 2 ELSE 1 END) AS p(part)
WHERE o.order_id % 20 <> 19;

ALTER TABLE legacy.customers ADD PRIMARY KEY (customer_id);
ALTER TABLE legacy.products ADD PRIMARY KEY (product_id);
ALTER TABLE legacy.products ADD UNIQUE (sku);
ALTER TABLE legacy.orders ADD PRIMARY KEY (order_id);
ALTER TABLE legacy.payments ADD PRIMARY KEY (payment_id);
ALTER TABLE legacy.orders
	ADD FOREIGN KEY (customer_id) REFERENCES legacy.customers,
	ADD FOREIGN KEY (product_id) REFERENCES legacy.products;
ALTER TABLE legacy.payments ADD FOREIGN KEY (order_id) REFERENCES legacy.orders;
CREATE INDEX ON legacy.orders (customer_id);
CREATE INDEX ON legacy.payments (order_id);

VACUUM ANALYZE legacy.customers, legacy.products, legacy.orders, legacy.payments;

SELECT	'legacy.' || t.relname AS "table",
		to_char(t.n, 'FM9,999,999,999') AS "rows",
		pg_size_pretty(pg_total_relation_size(('legacy.' || t.relname)::regclass)) AS size
FROM (VALUES ('customers', (SELECT count(*) FROM legacy.customers)),
			 ('products', (SELECT count(*) FROM legacy.products)),
			 ('orders', (SELECT count(*) FROM legacy.orders)),
			 ('payments', (SELECT count(*) FROM legacy.payments))) AS t(relname, n);

SELECT count(DISTINCT category) AS category_spellings,
	   count(DISTINCT lower(trim(category))) AS categories
FROM legacy.products;
