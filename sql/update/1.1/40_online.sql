
/* online migration: capture, cut-over, rollback, stop rules */

ALTER TABLE acme_migrate.jobs
	ADD COLUMN reverse_columns jsonb,
	ADD COLUMN capture_method text NOT NULL DEFAULT 'trigger'
		CHECK (capture_method IN ('trigger')),
	ADD COLUMN health_check text,
	ADD COLUMN on_breach text NOT NULL DEFAULT 'pause'
		CHECK (on_breach IN ('pause', 'rollback'));
COMMENT ON COLUMN acme_migrate.jobs.reverse_columns IS
	'target column -> SQL expression over target columns for each source column: with it, cut-over installs reverse capture on the target so that a rollback after cut-over can replay the writes made to the target into the source';
COMMENT ON COLUMN acme_migrate.jobs.capture_method IS
	'how source changes are captured with capture_changes: trigger (row triggers writing the changed keys to acme_migrate.capture_log)';
COMMENT ON COLUMN acme_migrate.jobs.health_check IS
	'SQL boolean expression, run as the job''s owner before each batch and catch-up: when it is true the job stops (on_breach) with the reason recorded';
COMMENT ON COLUMN acme_migrate.jobs.on_breach IS
	'what the job does when a stop rule is breached (max_error_rate, a reconciliation with differences, health_check): pause, or rollback';

DROP FUNCTION acme_migrate_create(text, regclass, regclass, text[], jsonb, text,
	integer, text, text, double precision, boolean, text[], double precision,
	interval, interval, interval);
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
	lock_timeout interval DEFAULT NULL,
	reverse_columns jsonb DEFAULT NULL,
	capture_method text DEFAULT 'trigger',
	health_check text DEFAULT NULL,
	on_breach text DEFAULT 'pause')
RETURNS bigint
AS 'MODULE_PATHNAME', 'acme_migrate_create_1_1'
LANGUAGE C CALLED ON NULL INPUT VOLATILE;
COMMENT ON FUNCTION acme_migrate_create(text, regclass, regclass, text[], jsonb,
	text, integer, text, text, double precision, boolean, text[],
	double precision, interval, interval, interval, jsonb, text, text, text) IS
	'define a migration job copying source into target in key-ordered batches (with capture_changes, also the writes made to the source meanwhile); returns the job id';
