
/*
 * Diffs and rejects: a bounded list of differences by default, a purge of
 * old runs and history by their owners, and comments saying where copies of
 * rows live (see acme_migrate.store_row_data).
 */

/* max_diffs: 10000 by default (it was unlimited); NULL still lifts the cap */
CREATE OR REPLACE FUNCTION acme_migrate_reconcile(
	job text,
	sample double precision DEFAULT NULL,
	max_diffs bigint DEFAULT 10000,
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
	'compare the job''s mapped source with its target in one snapshot; the first max_diffs differences (default 10000, NULL for all) go to acme_migrate.diffs, the counts are always exact';

CREATE OR REPLACE FUNCTION acme_migrate_reconcile(
	source regclass,
	target regclass,
	key text[] DEFAULT NULL,
	sample double precision DEFAULT NULL,
	max_diffs bigint DEFAULT 10000,
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
	'compare two tables on their same-named columns in one snapshot; the first max_diffs differences (default 10000, NULL for all) go to acme_migrate.diffs, the counts are always exact';

COMMENT ON COLUMN acme_migrate.reconcile_runs.max_diffs IS
	'at most this many differences are listed in acme_migrate.diffs (NULL: no limit); the counts stay exact';
COMMENT ON COLUMN acme_migrate.reconcile_runs.truncated IS
	'true when more differences existed than max_diffs allowed to list; the counts still include them all';
COMMENT ON COLUMN acme_migrate.diffs.source_row IS
	'copy of the mapped source row as jsonb (target column names); NULL when acme_migrate.store_row_data is off';
COMMENT ON COLUMN acme_migrate.diffs.target_row IS
	'copy of the whole target row as jsonb; NULL when acme_migrate.store_row_data is off';
COMMENT ON COLUMN acme_migrate.rejects.source_row IS
	'copy of the whole source row as jsonb; NULL when acme_migrate.store_row_data is off';

CREATE FUNCTION acme_migrate_purge(
	older_than interval DEFAULT '30 days',
	job text DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'acme_migrate_purge'
LANGUAGE C CALLED ON NULL INPUT VOLATILE;
COMMENT ON FUNCTION acme_migrate_purge(interval, text) IS
	'delete the caller''s reconcile runs (with their diffs) and the rejects, errors and batch history of the caller''s jobs recorded more than older_than ago (an admin''s: everyone''s), of every job or of the one named; jobs and their checkpoints stay; returns the number of rows deleted';
