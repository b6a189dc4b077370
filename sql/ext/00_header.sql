/* acme_migrate 1.0: catalog, batch copy, hashing and reconciliation */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION acme_migrate" to load this file. \quit

DO $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles
				   WHERE rolname OPERATOR(pg_catalog.=) 'acme_migrate_admin') THEN
		CREATE ROLE acme_migrate_admin NOLOGIN;
	END IF;
END
$$;

CREATE SCHEMA acme_migrate;
COMMENT ON SCHEMA acme_migrate IS
	'catalog of acme_migrate: jobs, batch history, rejects, errors, reconciliation runs';
GRANT USAGE ON SCHEMA acme_migrate TO PUBLIC;
