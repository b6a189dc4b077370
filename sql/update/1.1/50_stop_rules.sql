
/*
 * Stop rules and sequences (issue 8).
 *
 * A job stops itself when its reject rate passes max_error_rate, when a
 * reconciliation of the job finds differences, or when its health_check
 * turns true (or fails): it pauses, or rolls back with on_breach =>
 * 'rollback', and the breach is recorded in jobs.failure_reason and as a
 * row of acme_migrate.errors naming the rule.  max_error_rate used to fail
 * the job; it pauses it now, and acme_migrate_resume goes on.
 *
 * When a job finishes (done, or copied with capture_changes), every
 * sequence or identity behind a target column is advanced to at least the
 * column's largest value, never backwards.  No SQL object changes for
 * that, only the descriptions below.
 */
ALTER TABLE acme_migrate.errors
	ADD COLUMN stop_rule text
		CHECK (stop_rule OPERATOR(pg_catalog.=) ANY
			   (ARRAY['max_error_rate', 'reconcile', 'health_check']));
COMMENT ON COLUMN acme_migrate.errors.stop_rule IS
	'the stop rule whose breach paused the job (max_error_rate, reconcile or health_check); NULL for an error that stopped a batch. A breach''s sqlstate is that of the error behind it (a failing health_check), else 01000';
COMMENT ON TABLE acme_migrate.errors IS
	'errors that stopped a batch of acme_migrate_run or of a worker, each recorded in its own transaction, and breaches of stop rules that paused a job (stop_rule), recorded with the pause';
COMMENT ON COLUMN acme_migrate.jobs.failure_reason IS
	'why the job is in state failed, or why a stop rule paused it (cleared by acme_migrate_resume; breaches stay in acme_migrate.errors)';
COMMENT ON COLUMN acme_migrate.jobs.max_error_rate IS
	'stop rule: the job pauses (on_breach) when rows_rejected / rows_read exceeds this fraction';
COMMENT ON COLUMN acme_migrate.jobs.health_check IS
	'stop rule: SQL boolean expression, run read-only as the job''s owner before each batch (at most once a second per process): when it is true, or fails, the job stops (on_breach) with the reason recorded; NULL counts as healthy';

DROP FUNCTION acme_migrate_alter(text, integer, double precision, interval,
	interval, interval, double precision);
CREATE FUNCTION acme_migrate_alter(
	job text,
	batch_size integer DEFAULT NULL,
	max_rows_per_second double precision DEFAULT NULL,
	batch_time_target interval DEFAULT NULL,
	max_replication_lag interval DEFAULT NULL,
	lock_timeout interval DEFAULT NULL,
	max_error_rate double precision DEFAULT NULL,
	health_check text DEFAULT NULL,
	on_breach text DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'acme_migrate_alter_1_1'
LANGUAGE C CALLED ON NULL INPUT VOLATILE;
COMMENT ON FUNCTION acme_migrate_alter(text, integer, double precision,
	interval, interval, interval, double precision, text, text) IS
	'change a job''s batch size, throttles and stop rules, also while it runs (NULL leaves a setting as it is; 0 removes a throttle, '''' the health_check)';
