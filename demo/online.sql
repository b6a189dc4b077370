/*
 * demo/online.sql: set-up of the online part of the demo (test/demo.sh).
 *
 * The application keeps writing to legacy.customers (demo/online_app.pgbench:
 * updates by key, new customers, deletes of customers it created) while the
 * job customers_live copies it into app.customers_live with capture_changes,
 * catches up and cuts over.  The cut-over's then_sql renames the legacy table
 * away and puts an updatable view of the new table under its name, so the
 * application's statements go on working, now against app.customers_live.
 *
 * What the application writes needs nothing it would have to supply
 * differently before and after the switch: new customers get their country
 * and creation date from column defaults on both tables.
 */
\set ON_ERROR_STOP 1

ALTER TABLE legacy.customers
	ALTER country SET DEFAULT 'de',
	ALTER created SET DEFAULT current_date;
CREATE SEQUENCE legacy.new_customer_id START 50000001;

CREATE TABLE app.customers_live (
	customer_id	integer PRIMARY KEY,
	full_name	text NOT NULL,
	email		text NOT NULL CHECK (email = lower(email)),
	country_code char(2) NOT NULL DEFAULT 'DE' CHECK (country_code = upper(country_code)),
	created_at	timestamptz NOT NULL DEFAULT now()
);
