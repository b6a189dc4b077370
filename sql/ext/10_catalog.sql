/*
 * The catalog.  Only the C functions write these tables (they switch to the
 * extension owner for that, after checking the caller owns the job); users
 * read them, and row-level security shows each role its own jobs unless it
 * is a superuser or a member of acme_migrate_admin.
 */

CREATE TABLE acme_migrate.jobs (
	job_id			bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	job_name		text NOT NULL UNIQUE
					CHECK (job_name OPERATOR(pg_catalog.<>) ''
						   AND pg_catalog.length(job_name) OPERATOR(pg_catalog.<=) 63),
	owner			regrole NOT NULL,
	source_table	regclass NOT NULL,
	target_table	regclass NOT NULL,
	key_columns		text[] NOT NULL
					CHECK (pg_catalog.cardinality(key_columns) OPERATOR(pg_catalog.>) 0),
	target_key_columns text[] NOT NULL,
	key_is_unique	boolean NOT NULL,
	column_map		jsonb NOT NULL,
	columns_given	jsonb,
	filter			text,
	batch_size		integer NOT NULL CHECK (batch_size OPERATOR(pg_catalog.>) 0),
	on_conflict		text NOT NULL
					CHECK (on_conflict OPERATOR(pg_catalog.=) ANY (ARRAY['update', 'skip', 'error'])),
	on_error		text NOT NULL
					CHECK (on_error OPERATOR(pg_catalog.=) ANY (ARRAY['abort', 'reject'])),
	max_error_rate	double precision
					CHECK (max_error_rate OPERATOR(pg_catalog.>=) 0
						   AND max_error_rate OPERATOR(pg_catalog.<=) 1),
	capture_changes	boolean NOT NULL DEFAULT false,
	depends_on		text[],
	max_rows_per_second double precision
					CHECK (max_rows_per_second OPERATOR(pg_catalog.>) 0),
	batch_time_target interval
					CHECK (batch_time_target OPERATOR(pg_catalog.>) '0'::interval),
	max_replication_lag interval
					CHECK (max_replication_lag OPERATOR(pg_catalog.>) '0'::interval),
	lock_timeout	interval
					CHECK (lock_timeout OPERATOR(pg_catalog.>=) '0'::interval),
	definition_version integer NOT NULL DEFAULT 1,
	state			text NOT NULL DEFAULT 'created'
					CHECK (state OPERATOR(pg_catalog.=) ANY (ARRAY['created', 'running', 'paused',
									  'copied', 'cut_over', 'done', 'failed',
									  'cancelled', 'rolled_back'])),
	last_key		text[],
	rows_read		bigint NOT NULL DEFAULT 0,
	rows_copied		bigint NOT NULL DEFAULT 0,
	rows_rejected	bigint NOT NULL DEFAULT 0,
	batches_done	bigint NOT NULL DEFAULT 0,
	rows_estimate	double precision,
	failure_reason	text,
	last_error		text,
	created_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	started_at		timestamptz,
	updated_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	finished_at		timestamptz
);

COMMENT ON TABLE acme_migrate.jobs IS
	'one row per migration job: its definition, state and checkpoint';
COMMENT ON COLUMN acme_migrate.jobs.job_id IS 'surrogate id of the job';
COMMENT ON COLUMN acme_migrate.jobs.job_name IS 'name the job is called by in every acme_migrate_* function';
COMMENT ON COLUMN acme_migrate.jobs.owner IS 'role that created the job; batches and workers run as this role';
COMMENT ON COLUMN acme_migrate.jobs.source_table IS 'table, partitioned table, view or foreign table read';
COMMENT ON COLUMN acme_migrate.jobs.target_table IS 'table or partitioned table written';
COMMENT ON COLUMN acme_migrate.jobs.key_columns IS 'source columns the copy walks in order (keyset)';
COMMENT ON COLUMN acme_migrate.jobs.target_key_columns IS 'target columns holding the key values';
COMMENT ON COLUMN acme_migrate.jobs.key_is_unique IS 'true when a unique index on NOT NULL columns guarantees the key; otherwise every batch checks for NULL and duplicate keys';
COMMENT ON COLUMN acme_migrate.jobs.column_map IS 'effective mapping: target column -> SQL expression over source columns';
COMMENT ON COLUMN acme_migrate.jobs.columns_given IS 'the columns argument as given to acme_migrate_create';
COMMENT ON COLUMN acme_migrate.jobs.filter IS 'SQL condition on source rows; NULL copies every row';
COMMENT ON COLUMN acme_migrate.jobs.batch_size IS 'rows per batch (per transaction)';
COMMENT ON COLUMN acme_migrate.jobs.on_conflict IS 'what to do with a key already in the target: update, skip or error';
COMMENT ON COLUMN acme_migrate.jobs.on_error IS 'abort: a failing row fails its batch; reject: it goes to acme_migrate.rejects and the rest is copied';
COMMENT ON COLUMN acme_migrate.jobs.max_error_rate IS 'the job fails when rows_rejected / rows_read exceeds this fraction';
COMMENT ON COLUMN acme_migrate.jobs.capture_changes IS 'record source changes for catch-up and cut-over';
COMMENT ON COLUMN acme_migrate.jobs.depends_on IS 'jobs that must be done before this one copies anything';
COMMENT ON COLUMN acme_migrate.jobs.max_rows_per_second IS 'throttle of acme_migrate_run and workers; NULL for none';
COMMENT ON COLUMN acme_migrate.jobs.batch_time_target IS 'acme_migrate_run adapts the batch size so a batch takes about this long';
COMMENT ON COLUMN acme_migrate.jobs.max_replication_lag IS 'acme_migrate_run pauses while a standby replays further behind than this';
COMMENT ON COLUMN acme_migrate.jobs.lock_timeout IS 'lock_timeout of each batch, so a batch never queues long behind an exclusive lock';
COMMENT ON COLUMN acme_migrate.jobs.definition_version IS 'incremented each time the definition changes, so running batches re-plan';
COMMENT ON COLUMN acme_migrate.jobs.state IS 'created, running, paused, copied, cut_over, done, failed, cancelled or rolled_back';
COMMENT ON COLUMN acme_migrate.jobs.last_key IS 'checkpoint: key of the last source row handled (text, ISO styles), committed with its batch';
COMMENT ON COLUMN acme_migrate.jobs.rows_read IS 'source rows handled so far (copied + rejected)';
COMMENT ON COLUMN acme_migrate.jobs.rows_copied IS 'rows written to the target so far';
COMMENT ON COLUMN acme_migrate.jobs.rows_rejected IS 'rows sent to acme_migrate.rejects so far';
COMMENT ON COLUMN acme_migrate.jobs.batches_done IS 'batches committed so far';
COMMENT ON COLUMN acme_migrate.jobs.rows_estimate IS 'planner estimate of the rows to copy, taken when the job was created';
COMMENT ON COLUMN acme_migrate.jobs.failure_reason IS 'why the job is in state failed';
COMMENT ON COLUMN acme_migrate.jobs.last_error IS 'message of the last error met by acme_migrate_run or a worker';
COMMENT ON COLUMN acme_migrate.jobs.created_at IS 'when the job was created';
COMMENT ON COLUMN acme_migrate.jobs.started_at IS 'when its first batch committed';
COMMENT ON COLUMN acme_migrate.jobs.updated_at IS 'when its state or checkpoint last changed';
COMMENT ON COLUMN acme_migrate.jobs.finished_at IS 'when it reached copied, done, failed or cancelled';

CREATE TABLE acme_migrate.batches (
	job_id			bigint NOT NULL REFERENCES acme_migrate.jobs ON DELETE CASCADE,
	batch_no		bigint NOT NULL,
	first_key		text[],
	last_key		text[],
	rows_read		bigint NOT NULL CHECK (rows_read OPERATOR(pg_catalog.>=) 0),
	rows_copied		bigint NOT NULL CHECK (rows_copied OPERATOR(pg_catalog.>=) 0),
	rows_rejected	bigint NOT NULL CHECK (rows_rejected OPERATOR(pg_catalog.>=) 0),
	method			text NOT NULL
					CHECK (method OPERATOR(pg_catalog.=) ANY (ARRAY['direct', 'sql'])),
	started_at		timestamptz NOT NULL,
	duration		interval NOT NULL,
	backend_pid		integer NOT NULL DEFAULT pg_catalog.pg_backend_pid(),
	range_no		integer,
	PRIMARY KEY (job_id, batch_no)
);
COMMENT ON TABLE acme_migrate.batches IS
	'history of committed batches; each row commits in the same transaction as the rows it describes';
COMMENT ON COLUMN acme_migrate.batches.job_id IS 'job the batch belongs to';
COMMENT ON COLUMN acme_migrate.batches.batch_no IS 'sequence number of the batch within its job, from 1';
COMMENT ON COLUMN acme_migrate.batches.first_key IS 'key of the first source row of the batch';
COMMENT ON COLUMN acme_migrate.batches.last_key IS 'key of the last source row of the batch (the checkpoint it committed)';
COMMENT ON COLUMN acme_migrate.batches.rows_read IS 'source rows the batch handled';
COMMENT ON COLUMN acme_migrate.batches.rows_copied IS 'rows the batch wrote to the target';
COMMENT ON COLUMN acme_migrate.batches.rows_rejected IS 'rows the batch sent to acme_migrate.rejects';
COMMENT ON COLUMN acme_migrate.batches.method IS 'direct: table access method multi-insert; sql: INSERT ... ON CONFLICT';
COMMENT ON COLUMN acme_migrate.batches.started_at IS 'when the batch started';
COMMENT ON COLUMN acme_migrate.batches.duration IS 'how long the batch took until its checkpoint was written';
COMMENT ON COLUMN acme_migrate.batches.backend_pid IS 'process that ran the batch';
COMMENT ON COLUMN acme_migrate.batches.range_no IS 'range of acme_migrate.ranges the batch copied, NULL for a job not split in ranges';

CREATE TABLE acme_migrate.rejects (
	reject_id		bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	job_id			bigint NOT NULL REFERENCES acme_migrate.jobs ON DELETE CASCADE,
	key				jsonb NOT NULL,
	source_row		jsonb,
	sqlstate		text NOT NULL CHECK (pg_catalog.length(sqlstate) OPERATOR(pg_catalog.=) 5),
	message			text NOT NULL,
	detail			text,
	rejected_at		timestamptz NOT NULL DEFAULT pg_catalog.now()
);
CREATE INDEX ON acme_migrate.rejects (job_id);
COMMENT ON TABLE acme_migrate.rejects IS
	'source rows that failed their transform or a target constraint under on_error = reject';
COMMENT ON COLUMN acme_migrate.rejects.reject_id IS 'surrogate id';
COMMENT ON COLUMN acme_migrate.rejects.job_id IS 'job that rejected the row';
COMMENT ON COLUMN acme_migrate.rejects.key IS 'key of the source row, as a jsonb object';
COMMENT ON COLUMN acme_migrate.rejects.source_row IS 'the whole source row as jsonb';
COMMENT ON COLUMN acme_migrate.rejects.sqlstate IS 'SQLSTATE of the error';
COMMENT ON COLUMN acme_migrate.rejects.message IS 'primary error message';
COMMENT ON COLUMN acme_migrate.rejects.detail IS 'error detail, if any';
COMMENT ON COLUMN acme_migrate.rejects.rejected_at IS 'when the row was rejected (commit time of its batch)';

CREATE TABLE acme_migrate.errors (
	error_id		bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	job_id			bigint NOT NULL REFERENCES acme_migrate.jobs ON DELETE CASCADE,
	occurred_at		timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
	sqlstate		text NOT NULL CHECK (pg_catalog.length(sqlstate) OPERATOR(pg_catalog.=) 5),
	message			text NOT NULL,
	detail			text,
	hint			text,
	context			text,
	backend_pid		integer NOT NULL DEFAULT pg_catalog.pg_backend_pid(),
	transient		boolean NOT NULL
);
CREATE INDEX ON acme_migrate.errors (job_id);
COMMENT ON TABLE acme_migrate.errors IS
	'errors that stopped a batch of acme_migrate_run or of a worker, each recorded in its own transaction';
COMMENT ON COLUMN acme_migrate.errors.error_id IS 'surrogate id';
COMMENT ON COLUMN acme_migrate.errors.job_id IS 'job whose batch failed';
COMMENT ON COLUMN acme_migrate.errors.occurred_at IS 'when the error was recorded';
COMMENT ON COLUMN acme_migrate.errors.sqlstate IS 'SQLSTATE of the error';
COMMENT ON COLUMN acme_migrate.errors.message IS 'primary error message';
COMMENT ON COLUMN acme_migrate.errors.detail IS 'error detail, if any';
COMMENT ON COLUMN acme_migrate.errors.hint IS 'error hint, if any';
COMMENT ON COLUMN acme_migrate.errors.context IS 'error context, if any';
COMMENT ON COLUMN acme_migrate.errors.backend_pid IS 'process that met the error';
COMMENT ON COLUMN acme_migrate.errors.transient IS 'true for errors worth retrying (deadlock, serialization failure, lock timeout)';

/* row-level security: a role sees its own jobs, admins see all */
CREATE FUNCTION acme_migrate.job_visible(job_owner regrole)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog
AS $$
	SELECT job_owner::oid OPERATOR(pg_catalog.=) (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = current_user)
		OR pg_catalog.pg_has_role(current_user, 'acme_migrate_admin', 'MEMBER')
$$;
COMMENT ON FUNCTION acme_migrate.job_visible(regrole) IS
	'row-level security predicate: true when the current role owns the job or is an acme_migrate admin';

ALTER TABLE acme_migrate.jobs ENABLE ROW LEVEL SECURITY;
CREATE POLICY jobs_owner ON acme_migrate.jobs
	USING (acme_migrate.job_visible(owner));
ALTER TABLE acme_migrate.batches ENABLE ROW LEVEL SECURITY;
CREATE POLICY batches_owner ON acme_migrate.batches
	USING (EXISTS (SELECT 1 FROM acme_migrate.jobs j WHERE j.job_id OPERATOR(pg_catalog.=) batches.job_id));
ALTER TABLE acme_migrate.rejects ENABLE ROW LEVEL SECURITY;
CREATE POLICY rejects_owner ON acme_migrate.rejects
	USING (EXISTS (SELECT 1 FROM acme_migrate.jobs j WHERE j.job_id OPERATOR(pg_catalog.=) rejects.job_id));
ALTER TABLE acme_migrate.errors ENABLE ROW LEVEL SECURITY;
CREATE POLICY errors_owner ON acme_migrate.errors
	USING (EXISTS (SELECT 1 FROM acme_migrate.jobs j WHERE j.job_id OPERATOR(pg_catalog.=) errors.job_id));

REVOKE ALL ON acme_migrate.jobs, acme_migrate.batches, acme_migrate.rejects,
	acme_migrate.errors FROM PUBLIC;
GRANT SELECT ON acme_migrate.jobs, acme_migrate.batches, acme_migrate.rejects,
	acme_migrate.errors TO PUBLIC;

SELECT pg_catalog.pg_extension_config_dump('acme_migrate.jobs', '');
SELECT pg_catalog.pg_extension_config_dump('acme_migrate.batches', '');
SELECT pg_catalog.pg_extension_config_dump('acme_migrate.rejects', '');
SELECT pg_catalog.pg_extension_config_dump('acme_migrate.errors', '');

