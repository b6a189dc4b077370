/* background workers: key ranges, start / pause / resume / cancel / wait */

ALTER TABLE acme_migrate.jobs
	ADD COLUMN workers integer NOT NULL DEFAULT 0
		CHECK (workers OPERATOR(pg_catalog.>=) 0);
COMMENT ON COLUMN acme_migrate.jobs.workers IS
	'background workers the job runs with (0: run by acme_migrate_batch / acme_migrate_run only)';
ALTER TABLE acme_migrate.jobs ADD COLUMN workers_started_at timestamptz;
COMMENT ON COLUMN acme_migrate.jobs.workers_started_at IS
	'when acme_migrate_start or acme_migrate_resume last launched workers';

CREATE TABLE acme_migrate.ranges (
	job_id			bigint NOT NULL REFERENCES acme_migrate.jobs ON DELETE CASCADE,
	range_no		integer NOT NULL CHECK (range_no OPERATOR(pg_catalog.>) 0),
	lo_key			text[],
	hi_key			text[],
	last_key		text[],
	rows_read		bigint NOT NULL DEFAULT 0,
	state			text NOT NULL DEFAULT 'pending'
					CHECK (state OPERATOR(pg_catalog.=) ANY (ARRAY['pending', 'done'])),
	updated_at		timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
	PRIMARY KEY (job_id, range_no)
);
COMMENT ON TABLE acme_migrate.ranges IS
	'key ranges of a job copied in parallel; a batch claims its range by locking the row, so a crash releases the claim';
COMMENT ON COLUMN acme_migrate.ranges.job_id IS 'job the range belongs to';
COMMENT ON COLUMN acme_migrate.ranges.range_no IS 'number of the range, in key order';
COMMENT ON COLUMN acme_migrate.ranges.lo_key IS 'the range starts after this key (NULL: at the start)';
COMMENT ON COLUMN acme_migrate.ranges.hi_key IS 'the range ends with this key (NULL: at the end)';
COMMENT ON COLUMN acme_migrate.ranges.last_key IS 'checkpoint within the range, committed with its batch';
COMMENT ON COLUMN acme_migrate.ranges.rows_read IS 'source rows of the range handled so far';
COMMENT ON COLUMN acme_migrate.ranges.state IS 'pending or done';
COMMENT ON COLUMN acme_migrate.ranges.updated_at IS 'when the range last moved';
ALTER TABLE acme_migrate.ranges ENABLE ROW LEVEL SECURITY;
CREATE POLICY ranges_owner ON acme_migrate.ranges
	USING (EXISTS (SELECT 1 FROM acme_migrate.jobs j WHERE j.job_id OPERATOR(pg_catalog.=) ranges.job_id));
REVOKE ALL ON acme_migrate.ranges FROM PUBLIC;
GRANT SELECT ON acme_migrate.ranges TO PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('acme_migrate.ranges', '');

CREATE FUNCTION acme_migrate_start(job text, workers integer DEFAULT 1)
RETURNS integer
AS 'MODULE_PATHNAME', 'acme_migrate_start'
LANGUAGE C STRICT VOLATILE;
COMMENT ON FUNCTION acme_migrate_start(text, integer) IS
	'run the job in background workers (the key space split into ranges they share); returns the number of workers launched';

CREATE FUNCTION acme_migrate_pause(job text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'acme_migrate_pause'
LANGUAGE C STRICT VOLATILE;
COMMENT ON FUNCTION acme_migrate_pause(text) IS
	'pause the job: its workers stop after their current batch';

CREATE FUNCTION acme_migrate_resume(job text)
RETURNS integer
AS 'MODULE_PATHNAME', 'acme_migrate_resume'
LANGUAGE C STRICT VOLATILE;
COMMENT ON FUNCTION acme_migrate_resume(text) IS
	'resume a paused or failed job with the workers it had; returns the number of workers launched';

CREATE FUNCTION acme_migrate_cancel(job text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'acme_migrate_cancel'
LANGUAGE C STRICT VOLATILE;
COMMENT ON FUNCTION acme_migrate_cancel(text) IS
	'cancel the job for good: its workers stop after their current batch; what was copied stays';

CREATE FUNCTION acme_migrate_wait(job text, timeout interval DEFAULT NULL)
RETURNS text
AS 'MODULE_PATHNAME', 'acme_migrate_wait'
LANGUAGE C CALLED ON NULL INPUT VOLATILE;
COMMENT ON FUNCTION acme_migrate_wait(text, interval) IS
	'wait until the job stops running (or the timeout passes), with NOTICE progress lines; returns its state';

/* the progress view: catalog counters, batch history and live workers */
CREATE VIEW acme_migrate.progress WITH (security_invoker = true) AS
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
		w.activity
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
) w ON true;
COMMENT ON VIEW acme_migrate.progress IS
	'live progress per job: state, workers and what they do, rows done of the estimated total, rate over the last minute and ETA';
GRANT SELECT ON acme_migrate.progress TO PUBLIC;

CREATE FUNCTION acme_migrate_alter(
	job text,
	batch_size integer DEFAULT NULL,
	max_rows_per_second double precision DEFAULT NULL,
	batch_time_target interval DEFAULT NULL,
	max_replication_lag interval DEFAULT NULL,
	lock_timeout interval DEFAULT NULL,
	max_error_rate double precision DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'acme_migrate_alter'
LANGUAGE C CALLED ON NULL INPUT VOLATILE;
COMMENT ON FUNCTION acme_migrate_alter(text, integer, double precision, interval, interval, interval, double precision) IS
	'change a job''s batch size and throttles, also while it runs (NULL leaves a setting as it is; 0 removes a throttle)';
