/*
 * demo/reconcile.sql: reconcile every job with acme_migrate_reconcile (the
 * job's mapped source against its target) and print the reports.  Fails
 * (psql exit status 3) unless every report says equal.
 *
 * test/demo.sh runs it when the extension has acme_migrate_reconcile, and
 * demo/verify.sql (a hand-written EXCEPT check) otherwise.
 */
\set ON_ERROR_STOP 1

-- the report's columns, whatever they are, with the job's name in front
CREATE TEMP TABLE demo_reconcile AS
SELECT NULL::text AS job, r.*
FROM acme_migrate_reconcile('categories'::text) AS r
WITH NO DATA;

DO $$
DECLARE
	j text;
BEGIN
	FOR j IN SELECT job_name FROM acme_migrate.jobs ORDER BY job_id LOOP
		INSERT INTO demo_reconcile
		SELECT j, r.* FROM acme_migrate_reconcile(j) AS r;
	END LOOP;
END
$$;

\echo
\echo 'acme_migrate_reconcile(job) for every job:'
SELECT * FROM demo_reconcile;

DO $$
DECLARE
	bad text;
BEGIN
	SELECT string_agg(job, ', ') INTO bad
	FROM demo_reconcile WHERE equal IS NOT TRUE;
	IF bad IS NOT NULL THEN
		RAISE EXCEPTION 'acme_migrate_reconcile found differences for: %', bad
			USING HINT = 'SELECT * FROM acme_migrate.diffs shows them.';
	END IF;
END
$$;
