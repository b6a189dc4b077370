/* reconciliation: source against target, every difference listed */

CREATE TABLE acme_migrate.reconcile_runs (
	run_id			bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	job_id			bigint REFERENCES acme_migrate.jobs ON DELETE SET NULL,
	owner			regrole NOT NULL,
	source_table	regclass NOT NULL,
	target_table	regclass NOT NULL,
	key_columns		text[] NOT NULL,
	compared_columns text[] NOT NULL,
	options			jsonb NOT NULL DEFAULT '{}',
	sample			double precision
					CHECK (sample OPERATOR(pg_catalog.>) 0 AND sample OPERATOR(pg_catalog.<=) 1),
	max_diffs		bigint CHECK (max_diffs OPERATOR(pg_catalog.>=) 0),
	started_at		timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
	finished_at		timestamptz,
	source_rows		bigint,
	target_rows		bigint,
	missing			bigint,
	extra			bigint,
	changed			bigint,
	duplicates		bigint,
	null_keys		bigint,
	equal			boolean,
	truncated		boolean NOT NULL DEFAULT false,
	estimated		boolean NOT NULL DEFAULT false,
	method			text
					CHECK (method OPERATOR(pg_catalog.=) ANY (ARRAY['merge', 'hash_ranges', 'sample'])),
	ranges_hashed	bigint,
	ranges_merged	bigint
);
COMMENT ON TABLE acme_migrate.reconcile_runs IS
	'one row per acme_migrate_reconcile call, with its counts';
COMMENT ON COLUMN acme_migrate.reconcile_runs.run_id IS 'id of the run; acme_migrate.diffs.run_id refers to it';
COMMENT ON COLUMN acme_migrate.reconcile_runs.job_id IS 'job reconciled, NULL for an ad hoc comparison of two tables';
COMMENT ON COLUMN acme_migrate.reconcile_runs.owner IS 'role that ran the comparison';
COMMENT ON COLUMN acme_migrate.reconcile_runs.source_table IS 'source side (read through the job''s mapping, if any)';
COMMENT ON COLUMN acme_migrate.reconcile_runs.target_table IS 'target side';
COMMENT ON COLUMN acme_migrate.reconcile_runs.key_columns IS 'target columns rows are matched on';
COMMENT ON COLUMN acme_migrate.reconcile_runs.compared_columns IS 'target columns compared';
COMMENT ON COLUMN acme_migrate.reconcile_runs.options IS 'comparison policies per column, as given';
COMMENT ON COLUMN acme_migrate.reconcile_runs.sample IS 'fraction of rows checked; NULL for a full comparison';
COMMENT ON COLUMN acme_migrate.reconcile_runs.max_diffs IS 'at most this many differences are listed; counts stay exact';
COMMENT ON COLUMN acme_migrate.reconcile_runs.started_at IS 'when the comparison started';
COMMENT ON COLUMN acme_migrate.reconcile_runs.finished_at IS 'when it finished';
COMMENT ON COLUMN acme_migrate.reconcile_runs.source_rows IS 'rows on the source side (estimated when sampled)';
COMMENT ON COLUMN acme_migrate.reconcile_runs.target_rows IS 'rows on the target side (estimated when sampled)';
COMMENT ON COLUMN acme_migrate.reconcile_runs.missing IS 'source rows whose key is not in the target';
COMMENT ON COLUMN acme_migrate.reconcile_runs.extra IS 'target rows whose key is not in the source';
COMMENT ON COLUMN acme_migrate.reconcile_runs.changed IS 'rows present on both sides with different values';
COMMENT ON COLUMN acme_migrate.reconcile_runs.duplicates IS 'rows whose key appeared again on the same side';
COMMENT ON COLUMN acme_migrate.reconcile_runs.null_keys IS 'rows with a NULL key column';
COMMENT ON COLUMN acme_migrate.reconcile_runs.equal IS 'true when no difference of any kind was found';
COMMENT ON COLUMN acme_migrate.reconcile_runs.truncated IS 'true when more differences existed than max_diffs allowed to list';
COMMENT ON COLUMN acme_migrate.reconcile_runs.estimated IS 'true when the counts are estimates from a sample';
COMMENT ON COLUMN acme_migrate.reconcile_runs.method IS 'merge (both sides in key order), hash_ranges (hash sums per key range first, then a merge of the ranges that differ) or sample';
COMMENT ON COLUMN acme_migrate.reconcile_runs.ranges_hashed IS 'hash_ranges: key ranges the hash pass cut the key span into';
COMMENT ON COLUMN acme_migrate.reconcile_runs.ranges_merged IS 'hash_ranges: runs of consecutive key ranges whose hash sums differed, each merged in key order';

CREATE TABLE acme_migrate.diffs (
	run_id			bigint NOT NULL REFERENCES acme_migrate.reconcile_runs ON DELETE CASCADE,
	diff_no			bigint NOT NULL,
	kind			text NOT NULL
					CHECK (kind OPERATOR(pg_catalog.=) ANY (ARRAY['missing', 'extra', 'changed', 'duplicate', 'null_key'])),
	side			text CHECK (side OPERATOR(pg_catalog.=) ANY (ARRAY['source', 'target'])),
	key				jsonb,
	source_row		jsonb,
	target_row		jsonb,
	changed_columns	text[],
	PRIMARY KEY (run_id, diff_no)
);
COMMENT ON TABLE acme_migrate.diffs IS 'every difference found by a reconciliation run';
COMMENT ON COLUMN acme_migrate.diffs.run_id IS 'run that found the difference';
COMMENT ON COLUMN acme_migrate.diffs.diff_no IS 'sequence number within the run, in key order';
COMMENT ON COLUMN acme_migrate.diffs.kind IS 'missing (only in source), extra (only in target), changed, duplicate or null_key';
COMMENT ON COLUMN acme_migrate.diffs.side IS 'for duplicate and null_key: the side the row is on';
COMMENT ON COLUMN acme_migrate.diffs.key IS 'key of the row, as a jsonb object of target key columns';
COMMENT ON COLUMN acme_migrate.diffs.source_row IS 'the mapped source row as jsonb (target column names)';
COMMENT ON COLUMN acme_migrate.diffs.target_row IS 'the target row as jsonb';
COMMENT ON COLUMN acme_migrate.diffs.changed_columns IS 'for changed rows: the target columns that differ';

ALTER TABLE acme_migrate.reconcile_runs ENABLE ROW LEVEL SECURITY;
CREATE POLICY reconcile_runs_owner ON acme_migrate.reconcile_runs
	USING (acme_migrate.job_visible(owner));
ALTER TABLE acme_migrate.diffs ENABLE ROW LEVEL SECURITY;
CREATE POLICY diffs_owner ON acme_migrate.diffs
	USING (EXISTS (SELECT 1 FROM acme_migrate.reconcile_runs r
				   WHERE r.run_id OPERATOR(pg_catalog.=) diffs.run_id));
REVOKE ALL ON acme_migrate.reconcile_runs, acme_migrate.diffs FROM PUBLIC;
GRANT SELECT ON acme_migrate.reconcile_runs, acme_migrate.diffs TO PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('acme_migrate.reconcile_runs', '');
SELECT pg_catalog.pg_extension_config_dump('acme_migrate.diffs', '');

CREATE FUNCTION acme_migrate_reconcile(
	job text,
	sample double precision DEFAULT NULL,
	max_diffs bigint DEFAULT NULL,
	columns text[] DEFAULT NULL,
	ignore_columns text[] DEFAULT NULL,
	compare jsonb DEFAULT NULL,
	OUT run_id bigint,
	OUT source_rows bigint,
	OUT target_rows bigint,
	OUT missing bigint,
	OUT extra bigint,
	OUT changed bigint,
	OUT equal boolean)
RETURNS record
AS 'MODULE_PATHNAME', 'acme_migrate_reconcile_job'
LANGUAGE C CALLED ON NULL INPUT VOLATILE;
COMMENT ON FUNCTION acme_migrate_reconcile(text, double precision, bigint, text[], text[], jsonb) IS
	'compare the job''s mapped source with its target in one snapshot; every difference goes to acme_migrate.diffs';

CREATE FUNCTION acme_migrate_reconcile(
	source regclass,
	target regclass,
	key text[] DEFAULT NULL,
	sample double precision DEFAULT NULL,
	max_diffs bigint DEFAULT NULL,
	columns text[] DEFAULT NULL,
	ignore_columns text[] DEFAULT NULL,
	compare jsonb DEFAULT NULL,
	OUT run_id bigint,
	OUT source_rows bigint,
	OUT target_rows bigint,
	OUT missing bigint,
	OUT extra bigint,
	OUT changed bigint,
	OUT equal boolean)
RETURNS record
AS 'MODULE_PATHNAME', 'acme_migrate_reconcile_tables'
LANGUAGE C CALLED ON NULL INPUT VOLATILE;
COMMENT ON FUNCTION acme_migrate_reconcile(regclass, regclass, text[], double precision, bigint, text[], text[], jsonb) IS
	'compare two tables on their same-named columns in one snapshot; every difference goes to acme_migrate.diffs';
