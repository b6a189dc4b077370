
/* online migration: capture, cut-over, rollback, stop rules */

ALTER TABLE acme_migrate.jobs
	ADD COLUMN reverse_columns jsonb,
	ADD COLUMN capture_method text NOT NULL DEFAULT 'trigger'
		CHECK (capture_method IN ('trigger', 'statement')),
	ADD COLUMN health_check text,
	ADD COLUMN on_breach text NOT NULL DEFAULT 'pause'
		CHECK (on_breach IN ('pause', 'rollback'));
COMMENT ON COLUMN acme_migrate.jobs.reverse_columns IS
	'target column -> SQL expression over target columns for each source column: with it, cut-over installs reverse capture on the target so that a rollback after cut-over can replay the writes made to the target into the source';
COMMENT ON COLUMN acme_migrate.jobs.capture_method IS
	'how source changes are captured with capture_changes: trigger (row triggers writing each changed key to acme_migrate.capture_log) or statement (statement triggers with transition tables writing the keys of a whole statement at once; plain tables only)';
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

/*
 * the capture log: keys of the rows written behind the copy.  No index: it
 * is written once per row the application writes, and an index entry cost
 * that write about a third of what the log cost it; catch-up walks the
 * heap in tid order instead (a tid range scan from where it stopped).
 */
CREATE TABLE acme_migrate.capture_log (
	job_id		bigint NOT NULL,
	direction	"char" NOT NULL CHECK (direction IN ('f', 'r')),
	seq			bigint GENERATED ALWAYS AS IDENTITY (CACHE 1000),
	key			text[] NOT NULL,
	logged_at	timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp()
);
COMMENT ON TABLE acme_migrate.capture_log IS
	'keys of the rows written to a job''s source (direction f) since capture started, or to its target after cut-over (direction r, with reverse_columns); written by the capture triggers in the writing transaction, deleted by catch-up in the transaction that applies them';
COMMENT ON COLUMN acme_migrate.capture_log.job_id IS 'job whose table was written (no foreign key: writers must not lock the job''s row); removed with the job';
COMMENT ON COLUMN acme_migrate.capture_log.direction IS 'f: a write to the source, to apply to the target; r: a write to the target after cut-over, to apply to the source on rollback';
COMMENT ON COLUMN acme_migrate.capture_log.seq IS 'order of the entries (each session takes 1,000 values at a time, so that concurrent writers do not queue on the sequence: entries of different sessions interleave loosely)';
COMMENT ON COLUMN acme_migrate.capture_log.key IS 'key of the written row, as text (an update that changes the key logs the old and the new key)';
COMMENT ON COLUMN acme_migrate.capture_log.logged_at IS 'when the write was logged';
ALTER TABLE acme_migrate.capture_log ENABLE ROW LEVEL SECURITY;
CREATE POLICY capture_log_owner ON acme_migrate.capture_log
	USING (EXISTS (SELECT 1 FROM acme_migrate.jobs j WHERE j.job_id OPERATOR(pg_catalog.=) capture_log.job_id));
REVOKE ALL ON acme_migrate.capture_log FROM PUBLIC;
GRANT SELECT ON acme_migrate.capture_log TO PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('acme_migrate.capture_log', '');
SELECT pg_catalog.pg_extension_config_dump(
	pg_catalog.pg_get_serial_sequence('acme_migrate.capture_log', 'seq'), '');

/* the target as it was before the job's first write, for rollback */
ALTER TABLE acme_migrate.jobs
	ADD COLUMN pre_rows bigint,
	ADD COLUMN pre_hash uuid,
	ADD COLUMN cut_over_at timestamptz;
COMMENT ON COLUMN acme_migrate.jobs.pre_rows IS 'rows of the target when the job was created (acme_migrate_table_hash), NULL for jobs created before 1.1';
COMMENT ON COLUMN acme_migrate.jobs.pre_hash IS 'table hash of the target when the job was created: acme_migrate_rollback restores the target to it and proves it';
COMMENT ON COLUMN acme_migrate.jobs.cut_over_at IS 'when the job was cut over';

CREATE TABLE acme_migrate.preimages (
	job_id		bigint NOT NULL,
	row			jsonb NOT NULL
);
CREATE INDEX ON acme_migrate.preimages (job_id);
COMMENT ON TABLE acme_migrate.preimages IS
	'rows the target held when the job was created (none for an empty target): acme_migrate_rollback before cut-over puts them back; copies of row data, like rejects and diffs';
COMMENT ON COLUMN acme_migrate.preimages.job_id IS 'job (no foreign key: a foreign key check per saved row made saving a million rows take 20 s); removed with the job';
COMMENT ON COLUMN acme_migrate.preimages.row IS 'a row of the target as jsonb';
ALTER TABLE acme_migrate.preimages ENABLE ROW LEVEL SECURITY;
CREATE POLICY preimages_owner ON acme_migrate.preimages
	USING (EXISTS (SELECT 1 FROM acme_migrate.jobs j WHERE j.job_id OPERATOR(pg_catalog.=) preimages.job_id));
REVOKE ALL ON acme_migrate.preimages FROM PUBLIC;
GRANT SELECT ON acme_migrate.preimages TO PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('acme_migrate.preimages', '');

/* every attempt of a cut-over or of a rollback after cut-over */
CREATE TABLE acme_migrate.cutovers (
	job_id			bigint NOT NULL REFERENCES acme_migrate.jobs (job_id) ON DELETE CASCADE,
	operation		text NOT NULL CHECK (operation IN ('cutover', 'rollback')),
	attempt			integer NOT NULL,
	started_at		timestamptz NOT NULL,
	lock_wait		interval NOT NULL,
	lock_held		interval,
	changes_drained	bigint NOT NULL DEFAULT 0,
	outcome			text NOT NULL CHECK (outcome IN ('lock_timeout', 'gave_back', 'done')),
	PRIMARY KEY (job_id, operation, started_at, attempt)
);
COMMENT ON TABLE acme_migrate.cutovers IS
	'one row per attempt to take the lock of a cut-over (or of a rollback after cut-over): how long it waited, how long it held the lock, what it drained, how it ended';
COMMENT ON COLUMN acme_migrate.cutovers.job_id IS 'job';
COMMENT ON COLUMN acme_migrate.cutovers.operation IS 'cutover or rollback';
COMMENT ON COLUMN acme_migrate.cutovers.attempt IS 'attempt number within the call';
COMMENT ON COLUMN acme_migrate.cutovers.started_at IS 'when the call started';
COMMENT ON COLUMN acme_migrate.cutovers.lock_wait IS 'how long the attempt waited for the lock (at most lock_timeout)';
COMMENT ON COLUMN acme_migrate.cutovers.lock_held IS 'how long the lock was held, up to the end of the call (NULL when not taken)';
COMMENT ON COLUMN acme_migrate.cutovers.changes_drained IS 'captured changes applied under the lock';
COMMENT ON COLUMN acme_migrate.cutovers.outcome IS 'lock_timeout: not taken; gave_back: taken, released because draining would pass max_lock_time; done: switched over';
ALTER TABLE acme_migrate.cutovers ENABLE ROW LEVEL SECURITY;
CREATE POLICY cutovers_owner ON acme_migrate.cutovers
	USING (EXISTS (SELECT 1 FROM acme_migrate.jobs j WHERE j.job_id OPERATOR(pg_catalog.=) cutovers.job_id));
REVOKE ALL ON acme_migrate.cutovers FROM PUBLIC;
GRANT SELECT ON acme_migrate.cutovers TO PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('acme_migrate.cutovers', '');

/* the capture trigger */
CREATE FUNCTION acme_migrate.capture_trigger()
RETURNS trigger
AS 'MODULE_PATHNAME', 'acme_migrate_capture_trigger'
LANGUAGE C;
COMMENT ON FUNCTION acme_migrate.capture_trigger() IS
	'trigger of change capture: logs the key of each written row in acme_migrate.capture_log, and refuses TRUNCATE';
REVOKE ALL ON FUNCTION acme_migrate.capture_trigger() FROM PUBLIC;

CREATE FUNCTION acme_migrate_catch_up(job text, max_time interval DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'acme_migrate_catch_up'
LANGUAGE C CALLED ON NULL INPUT VOLATILE;
COMMENT ON FUNCTION acme_migrate_catch_up(text, interval) IS
	'apply the captured changes of a job to its target, in the caller''s transaction, until none is left or max_time has passed; returns the log entries applied';

CREATE FUNCTION acme_migrate_cutover(
	job text,
	lock_timeout interval DEFAULT '200 ms',
	max_lock_time interval DEFAULT '1 s',
	then_sql text DEFAULT NULL,
	max_attempts integer DEFAULT 50,
	OUT attempts integer,
	OUT lock_held interval,
	OUT changes_drained bigint,
	OUT verified boolean)
RETURNS record
AS 'MODULE_PATHNAME', 'acme_migrate_cutover'
LANGUAGE C CALLED ON NULL INPUT VOLATILE;
COMMENT ON FUNCTION acme_migrate_cutover(text, interval, interval, text, integer) IS
	'switch a copied job over: block the source''s writers (never its readers) in short lock attempts, drain the capture log, verify the drained keys, advance sequences, run then_sql, remove capture';

CREATE FUNCTION acme_migrate_rollback(
	job text,
	then_sql text DEFAULT NULL,
	lock_timeout interval DEFAULT '200 ms',
	max_attempts integer DEFAULT 50,
	OUT rows_deleted bigint,
	OUT rows_restored bigint,
	OUT changes_returned bigint,
	OUT target_hash_equal boolean)
RETURNS record
AS 'MODULE_PATHNAME', 'acme_migrate_rollback'
LANGUAGE C CALLED ON NULL INPUT VOLATILE;
COMMENT ON FUNCTION acme_migrate_rollback(text, text, interval, integer) IS
	'undo a job: before cut-over, put the target back as it was and prove it by its table hash; after cut-over, replay the writes made to the target into the source and run then_sql';

CREATE OR REPLACE VIEW acme_migrate.progress WITH (security_invoker = true) AS
SELECT	j.job_name AS job,
		j.state,
		COALESCE(w.workers, 0)::integer AS workers,
		j.rows_read AS rows_done,
		CASE WHEN j.state OPERATOR(pg_catalog.=) ANY (ARRAY['copied', 'cut_over', 'done']) THEN j.rows_read
			 ELSE pg_catalog.round(GREATEST(j.rows_estimate, j.rows_read::double precision)::numeric)::bigint
		END AS rows_total,
		CASE WHEN j.state OPERATOR(pg_catalog.=) ANY (ARRAY['copied', 'cut_over', 'done']) THEN 100.0
			 WHEN GREATEST(j.rows_estimate, j.rows_read) OPERATOR(pg_catalog.>) 0
			 THEN pg_catalog.round((100.0 OPERATOR(pg_catalog.*) j.rows_read
					OPERATOR(pg_catalog./) GREATEST(j.rows_estimate, j.rows_read)::numeric), 1)
		END AS percent,
		r.rows_per_second,
		CASE WHEN r.rows_per_second OPERATOR(pg_catalog.>) 0
				  AND j.state OPERATOR(pg_catalog.=) ANY (ARRAY['created', 'running', 'paused'])
			 THEN pg_catalog.make_interval(secs =>
					GREATEST(j.rows_estimate OPERATOR(pg_catalog.-) j.rows_read, 0)
					OPERATOR(pg_catalog./) r.rows_per_second::double precision)
		END AS eta,
		j.rows_rejected AS rejected,
		j.last_error,
		j.started_at,
		j.updated_at,
		w.activity,
		c.backlog AS capture_backlog,
		pg_catalog.clock_timestamp() OPERATOR(pg_catalog.-) c.oldest AS capture_lag
FROM acme_migrate.jobs j
LEFT JOIN LATERAL (
	SELECT pg_catalog.round(pg_catalog.sum(b.rows_read)::numeric
			OPERATOR(pg_catalog./) GREATEST(
				pg_catalog.date_part('epoch', pg_catalog.max(b.started_at OPERATOR(pg_catalog.+) b.duration)
					OPERATOR(pg_catalog.-) pg_catalog.min(b.started_at))::numeric, 0.001), 1)
			AS rows_per_second
	FROM acme_migrate.batches b
	WHERE b.job_id OPERATOR(pg_catalog.=) j.job_id
	  AND b.started_at OPERATOR(pg_catalog.>) (pg_catalog.now() OPERATOR(pg_catalog.-) '1 minute'::interval)
) r ON true
LEFT JOIN LATERAL (
	SELECT pg_catalog.count(*) AS workers,
		   pg_catalog.string_agg(a.query, '; ' ORDER BY a.pid) AS activity
	FROM pg_catalog.pg_stat_activity a
	WHERE a.backend_type OPERATOR(pg_catalog.=) 'acme_migrate worker'
	  AND a.application_name OPERATOR(pg_catalog.=) ('acme_migrate job ' OPERATOR(pg_catalog.||) j.job_id)
	  AND a.datname OPERATOR(pg_catalog.=) pg_catalog.current_database()
) w ON true
LEFT JOIN LATERAL (
	SELECT pg_catalog.count(*) AS backlog, pg_catalog.min(l.logged_at) AS oldest
	FROM acme_migrate.capture_log l
	WHERE l.job_id OPERATOR(pg_catalog.=) j.job_id
	  AND j.capture_changes
) c ON true;
COMMENT ON VIEW acme_migrate.progress IS
	'live progress per job: state, workers and what they do, rows done of the estimated total, rate over the last minute and ETA, and the capture backlog (entries and age of the oldest)';
