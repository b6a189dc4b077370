/* defining, running and dropping jobs */

CREATE FUNCTION acme_migrate_create(
	job text,
	source regclass,
	target regclass,
	key text[] DEFAULT NULL,
	columns jsonb DEFAULT NULL,
	filter text DEFAULT NULL,
	batch_size integer DEFAULT 10000,
	on_conflict text DEFAULT 'update',
	on_error text DEFAULT 'abort',
	max_error_rate double precision DEFAULT NULL,
	capture_changes boolean DEFAULT false,
	depends_on text[] DEFAULT NULL,
	max_rows_per_second double precision DEFAULT NULL,
	batch_time_target interval DEFAULT NULL,
	max_replication_lag interval DEFAULT NULL,
	lock_timeout interval DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'acme_migrate_create'
LANGUAGE C CALLED ON NULL INPUT VOLATILE;
COMMENT ON FUNCTION acme_migrate_create(text, regclass, regclass, text[], jsonb, text, integer, text, text, double precision, boolean, text[], double precision, interval, interval, interval) IS
	'define a migration job copying source into target in key-ordered batches; returns the job id';

CREATE FUNCTION acme_migrate_batch(job text)
RETURNS bigint
AS 'MODULE_PATHNAME', 'acme_migrate_batch'
LANGUAGE C STRICT VOLATILE;
COMMENT ON FUNCTION acme_migrate_batch(text) IS
	'copy exactly one batch of the job in the caller''s transaction, checkpoint included; returns the rows copied';

CREATE PROCEDURE acme_migrate_run(
	job text,
	max_batches bigint DEFAULT NULL,
	max_time interval DEFAULT NULL)
AS 'MODULE_PATHNAME', 'acme_migrate_run'
LANGUAGE C;
COMMENT ON PROCEDURE acme_migrate_run(text, bigint, interval) IS
	'copy batches of the job, committing after each, until it is copied or a limit is reached';

CREATE FUNCTION acme_migrate_drop(job text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'acme_migrate_drop'
LANGUAGE C STRICT VOLATILE;
COMMENT ON FUNCTION acme_migrate_drop(text) IS
	'forget a job and its history (the target keeps its rows); refused while the job runs';
