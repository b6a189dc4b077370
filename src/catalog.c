/*-------------------------------------------------------------------------
 *
 * catalog.c
 *	  The only code that reads or writes the tables of schema acme_migrate.
 *
 * Users may only SELECT the catalog (row-level security shows each role its
 * own jobs).  Every change goes through these functions, which first check
 * that the caller owns the job (or is an admin), then run their statement
 * as the owner of the catalog, so a user can never edit a checkpoint by
 * hand.  All statements are prepared once per backend and kept.
 *
 * Everything here runs in the caller's transaction: the checkpoint of a
 * batch commits or aborts with the batch's rows.
 *
 *-------------------------------------------------------------------------
 */
#include "acme_migrate.h"

#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/dependency.h"
#include "catalog/indexing.h"
#include "catalog/namespace.h"
#include "commands/sequence.h"
#include "common/hashfn.h"
#include "storage/lock.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/fmgroids.h"
#include "storage/itemptr.h"
#include "utils/lsyscache.h"
#include "utils/inval.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"
#include "funcapi.h"

PG_FUNCTION_INFO_V1(acme_migrate_job_states);

/*
 * The states of a job: the one list, for C (am_job_state) and SQL
 * (acme_migrate.job_states()).  acme_migrate.jobs' CHECK constraint (1.0)
 * lists the same names; test sql/job_states.sql holds the two together.
 *
 *	created -> running <-> paused; running -> done, or copied (capture)
 *	copied -> cut_over -> rolled_back; copied -> rolled_back
 *	running -> failed -> running (resume); anything but done -> cancelled
 */
static const AmJobState am_job_states[] = {
	/* name, copy complete, final, finished_at */
	{"created", false, false, AM_FINISHED_CLEAR},
	{"running", false, false, AM_FINISHED_CLEAR},
	{"paused", false, false, AM_FINISHED_CLEAR},
	{"copied", true, false, AM_FINISHED_SET},
	{"cut_over", true, false, AM_FINISHED_KEEP},
	{"done", true, true, AM_FINISHED_SET},
	{"failed", false, false, AM_FINISHED_SET},
	{"cancelled", false, true, AM_FINISHED_SET},
	{"rolled_back", false, true, AM_FINISHED_SET},
};

/* A job state by name; an unknown name is an internal error. */
const AmJobState *
am_job_state(const char *name)
{
	for (int i = 0; i < lengthof(am_job_states); i++)
		if (strcmp(am_job_states[i].name, name) == 0)
			return &am_job_states[i];
	elog(ERROR, "unknown job state \"%s\"", name);
	return NULL;				/* keep compiler quiet */
}

/*
 * acme_migrate.job_states() returns setof (state, copy_complete, final,
 * finished_at): the states of a job as the C code defines them.
 */
Datum
acme_migrate_job_states(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	InitMaterializedSRF(fcinfo, 0);
	for (int i = 0; i < lengthof(am_job_states); i++)
	{
		const AmJobState *st = &am_job_states[i];
		Datum		values[4];
		bool		nulls[4] = {false, false, false, false};

		values[0] = CStringGetTextDatum(st->name);
		values[1] = BoolGetDatum(st->copy_complete);
		values[2] = BoolGetDatum(st->final);
		values[3] = CStringGetTextDatum(st->finished == AM_FINISHED_SET ? "set" :
										st->finished == AM_FINISHED_KEEP ? "kept" :
										"cleared");
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/* the statements of this module; plans are kept across calls */
typedef enum CatStmt
{
	CAT_JOB_GET,
	CAT_JOB_GET_LOCK,
	CAT_JOB_INSERT,
	CAT_JOB_DELETE,
	CAT_JOB_CHECKPOINT,
	CAT_BATCH_INSERT,
	CAT_JOB_STATE,
	CAT_REJECT_INSERT,
	CAT_ERROR_INSERT,
	CAT_JOB_STATE_BY_NAME,
	CAT_RUN_INSERT,
	CAT_DIFF_INSERT,
	CAT_RUN_FINISH,
	CAT_JOB_GET_BY_ID,
	CAT_RANGES_COUNT,
	CAT_RANGE_INSERT,
	CAT_RANGE_CLAIM,
	CAT_RANGE_CHECKPOINT,
	CAT_JOB_WORKERS,
	CAT_JOB_ALTER,
	CAT_JOB_SHAPE,
	CAT_JOB_GET_PARENT,
	CAT_JOB_STATE_BY_ID,
	CAT_JOB_DEPENDENTS,
	CAT_WORKERS_IN_USE,
	CAT_PURGE,
	CAT_CAPTURE_TAKE,
	CAT_CAPTURE_BACKLOG,
	CAT_CAPTURE_CLEAR,
	CAT_CUTOVER_INSERT,
	CAT_JOB_PRE,
	CAT_PREIMAGE_INSERT,
	CAT_PREIMAGE_CLEAR,
	CAT_JOB_CUT_OVER_AT,
	CAT_JOB_BREACH,
	CAT_NUM_STMTS
} CatStmt;

#define JOB_COLUMNS \
	"j.job_id, j.job_name, j.owner::pg_catalog.oid, " \
	"j.source_table::pg_catalog.oid, j.target_table::pg_catalog.oid, " \
	"j.key_columns, j.target_key_columns, j.key_is_unique, " \
	"j.column_map, " \
	"j.columns_given, j.filter, j.batch_size, j.on_conflict, j.on_error, " \
	"j.max_error_rate, j.capture_changes, j.depends_on, " \
	"j.max_rows_per_second, " \
	"pg_catalog.date_part('epoch', j.batch_time_target) OPERATOR(pg_catalog.*) 1000, " \
	"pg_catalog.date_part('epoch', j.max_replication_lag) OPERATOR(pg_catalog.*) 1000, " \
	"pg_catalog.date_part('epoch', j.lock_timeout) OPERATOR(pg_catalog.*) 1000, " \
	"j.definition_version, j.state, j.last_key, j.rows_read, j.rows_copied, " \
	"j.rows_rejected, j.batches_done, j.rows_estimate, j.workers, " \
	"COALESCE(pg_catalog.date_part('epoch', pg_catalog.clock_timestamp() " \
	"OPERATOR(pg_catalog.-) j.workers_started_at), 1e9), j.search_path, j.shape, " \
	"j.depends_on_ids, j.reverse_columns, j.capture_method, j.health_check, " \
	"j.on_breach, j.ctid, j.xmin "

/* a batch's history row, after its checkpoint (two statements below) */
#define BATCH_INSERT \
	"INSERT INTO acme_migrate.batches (job_id, batch_no, first_key, " \
	"last_key, rows_read, rows_copied, rows_rejected, method, " \
	"started_at, duration, range_no) "

/* how a stored interval in milliseconds goes back into the catalog */
#define MS_TO_INTERVAL(n) \
	"($" #n " OPERATOR(pg_catalog.*) '1 millisecond'::pg_catalog.interval)"

static const struct
{
	const char *sql;
	int			nargs;
	Oid			argtypes[29];
}			cat_stmts[CAT_NUM_STMTS] =
{
	[CAT_JOB_GET] = {
		"SELECT " JOB_COLUMNS "FROM acme_migrate.jobs j "
		"WHERE j.job_name OPERATOR(pg_catalog.=) $1",
		1, {TEXTOID}
	},
	[CAT_JOB_GET_LOCK] = {
		"SELECT " JOB_COLUMNS "FROM acme_migrate.jobs j "
		"WHERE j.job_name OPERATOR(pg_catalog.=) $1 FOR UPDATE",
		1, {TEXTOID}
	},
	[CAT_JOB_INSERT] = {
		"INSERT INTO acme_migrate.jobs (job_name, owner, source_table, "
		"target_table, key_columns, target_key_columns, key_is_unique, "
		"column_map, columns_given, filter, batch_size, on_conflict, "
		"on_error, max_error_rate, capture_changes, depends_on, "
		"max_rows_per_second, batch_time_target, max_replication_lag, "
		"lock_timeout, rows_estimate, search_path, shape, depends_on_ids, "
		"reverse_columns, capture_method, health_check, on_breach) "
		"VALUES ($1, $2::pg_catalog.regrole, $3::pg_catalog.regclass, "
		"$4::pg_catalog.regclass, $5, $6, $7, "
		"pg_catalog.jsonb_object($8, $9), $10, $11, $12, $13, $14, $15, "
		"$16, $17, $18, " MS_TO_INTERVAL(19) ", " MS_TO_INTERVAL(20) ", "
		MS_TO_INTERVAL(21) ", $22, $23, $24, $25, $26, $27, $28, $29) "
		"RETURNING job_id",
		29, {TEXTOID, OIDOID, OIDOID, OIDOID, TEXTARRAYOID, TEXTARRAYOID,
			BOOLOID, TEXTARRAYOID, TEXTARRAYOID, JSONBOID, TEXTOID, INT4OID,
			TEXTOID, TEXTOID, FLOAT8OID, BOOLOID, TEXTARRAYOID, FLOAT8OID,
		FLOAT8OID, FLOAT8OID, FLOAT8OID, FLOAT8OID, TEXTOID, TEXTOID,
		INT8ARRAYOID, JSONBOID, TEXTOID, TEXTOID, TEXTOID}
	},
	[CAT_JOB_DELETE] = {
		"WITH l AS (DELETE FROM acme_migrate.capture_log "
		"WHERE job_id OPERATOR(pg_catalog.=) $1), "
		"p AS (DELETE FROM acme_migrate.preimages "
		"WHERE job_id OPERATOR(pg_catalog.=) $1) "
		"DELETE FROM acme_migrate.jobs WHERE job_id OPERATOR(pg_catalog.=) $1",
		1, {INT8OID}
	},
	[CAT_JOB_CHECKPOINT] = {
		"WITH j AS (UPDATE acme_migrate.jobs SET last_key = $2, "
		"rows_read = rows_read OPERATOR(pg_catalog.+) $3, "
		"rows_copied = rows_copied OPERATOR(pg_catalog.+) $4, "
		"rows_rejected = rows_rejected OPERATOR(pg_catalog.+) $5, "
		"batches_done = batches_done OPERATOR(pg_catalog.+) 1, "
		/* a batch in flight must not undo a pause, cancel or failure */
		"state = CASE WHEN $6 OPERATOR(pg_catalog.=) 'running' AND state "
		"OPERATOR(pg_catalog.=) ANY ('{paused,cancelled,failed,rolled_back}'::pg_catalog.text[]) "
		"THEN state ELSE $6 END, "
		"failure_reason = COALESCE($7, failure_reason), "
		"started_at = COALESCE(started_at, $8), "
		"updated_at = pg_catalog.clock_timestamp(), "
		"finished_at = CASE WHEN $13 THEN pg_catalog.clock_timestamp() "
		"ELSE finished_at END "
		"WHERE job_id OPERATOR(pg_catalog.=) $1 "
		"RETURNING job_id, batches_done) "
		BATCH_INSERT
		"SELECT j.job_id, j.batches_done, $9, $10, $3, $4, $5, $11, $8, "
		"pg_catalog.clock_timestamp() OPERATOR(pg_catalog.-) $8, $12 FROM j "
		"RETURNING batch_no",
		13, {INT8OID, TEXTARRAYOID, INT8OID, INT8OID, INT8OID, TEXTOID,
			TEXTOID, TIMESTAMPTZOID, TEXTARRAYOID, TEXTARRAYOID, TEXTOID,
		INT4OID, BOOLOID}
	},
	/* the history row of a checkpoint jobrow.c wrote ($1 .. $13 as above) */
	[CAT_BATCH_INSERT] = {
		BATCH_INSERT
		"VALUES ($1, $2, $9, $10, $3, $4, $5, $11, $8, "
		"pg_catalog.clock_timestamp() OPERATOR(pg_catalog.-) $8, $12)",
		12, {INT8OID, INT8OID, INT8OID, INT8OID, INT8OID, TEXTOID,
			TEXTOID, TIMESTAMPTZOID, TEXTARRAYOID, TEXTARRAYOID, TEXTOID,
		INT4OID}
	},
	[CAT_JOB_STATE] = {
		"UPDATE acme_migrate.jobs SET state = $2, failure_reason = $3, "
		"updated_at = pg_catalog.clock_timestamp(), "
		"finished_at = CASE WHEN $4 THEN pg_catalog.clock_timestamp() "
		"WHEN $5 THEN finished_at END "
		"WHERE job_id OPERATOR(pg_catalog.=) $1",
		5, {INT8OID, TEXTOID, TEXTOID, BOOLOID, BOOLOID}
	},
	[CAT_REJECT_INSERT] = {
		"INSERT INTO acme_migrate.rejects (job_id, key, source_row, "
		"sqlstate, message, detail) VALUES ($1, $2, $3, $4, $5, $6)",
		6, {INT8OID, JSONBOID, JSONBOID, TEXTOID, TEXTOID, TEXTOID}
	},
	[CAT_ERROR_INSERT] = {
		"WITH e AS (INSERT INTO acme_migrate.errors (job_id, sqlstate, "
		"message, detail, hint, context, transient) "
		"VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING job_id) "
		"UPDATE acme_migrate.jobs j SET last_error = $3, "
		"updated_at = pg_catalog.clock_timestamp() FROM e "
		"WHERE j.job_id OPERATOR(pg_catalog.=) e.job_id",
		7, {INT8OID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, BOOLOID}
	},
	[CAT_JOB_STATE_BY_NAME] = {
		"SELECT state FROM acme_migrate.jobs "
		"WHERE job_name OPERATOR(pg_catalog.=) $1",
		1, {TEXTOID}
	},
	[CAT_RUN_INSERT] = {
		"INSERT INTO acme_migrate.reconcile_runs (job_id, owner, source_table, "
		"target_table, key_columns, compared_columns, options, sample, "
		"max_diffs) VALUES ($1, $2::pg_catalog.regrole, "
		"$3::pg_catalog.regclass, $4::pg_catalog.regclass, $5, $6, "
		"COALESCE($7, '{}'), $8, $9) RETURNING run_id",
		9, {INT8OID, OIDOID, OIDOID, OIDOID, TEXTARRAYOID, TEXTARRAYOID,
		JSONBOID, FLOAT8OID, INT8OID}
	},
	[CAT_DIFF_INSERT] = {
		"INSERT INTO acme_migrate.diffs (run_id, diff_no, kind, side, key, "
		"source_row, target_row, changed_columns) "
		"SELECT $1, d.n, d.kind, d.side, d.key, d.s, d.t, "
		"CAST(d.changed AS pg_catalog.text[]) "
		"FROM ROWS FROM (pg_catalog.unnest($2), pg_catalog.unnest($3), "
		"pg_catalog.unnest($4), pg_catalog.unnest($5), pg_catalog.unnest($6), "
		"pg_catalog.unnest($7), pg_catalog.unnest($8)) "
		"AS d(n, kind, side, key, s, t, changed)",
		8, {INT8OID, INT8ARRAYOID, TEXTARRAYOID, TEXTARRAYOID, JSONBARRAYOID,
		JSONBARRAYOID, JSONBARRAYOID, TEXTARRAYOID}
	},
	[CAT_RUN_FINISH] = {
		"UPDATE acme_migrate.reconcile_runs SET "
		"finished_at = pg_catalog.clock_timestamp(), source_rows = $2, "
		"target_rows = $3, missing = $4, extra = $5, changed = $6, "
		"duplicates = $7, null_keys = $8, equal = $9, truncated = $10, "
		"estimated = $11, method = $12, ranges_hashed = $13, "
		"ranges_merged = $14, mapped_rows = $15, remote_mode = $16, "
		"remote_rows = $17, remote_note = $18, parallel_workers = $19, "
		"rows_merged = $20 "
		"WHERE run_id OPERATOR(pg_catalog.=) $1",
		20, {INT8OID, INT8OID, INT8OID, INT8OID, INT8OID, INT8OID, INT8OID,
		INT8OID, BOOLOID, BOOLOID, BOOLOID, TEXTOID, INT8OID, INT8OID, INT8OID,
		TEXTOID, INT8OID, TEXTOID, INT4OID, INT8OID}
	},
	[CAT_JOB_GET_BY_ID] = {
		"SELECT " JOB_COLUMNS "FROM acme_migrate.jobs j "
		"WHERE j.job_id OPERATOR(pg_catalog.=) $1",
		1, {INT8OID}
	},
	[CAT_RANGES_COUNT] = {
		"SELECT pg_catalog.count(*) FILTER (WHERE state OPERATOR(pg_catalog.=) 'pending'), "
		"pg_catalog.count(*) FROM acme_migrate.ranges "
		"WHERE job_id OPERATOR(pg_catalog.=) $1",
		1, {INT8OID}
	},
	[CAT_RANGE_INSERT] = {
		"INSERT INTO acme_migrate.ranges (job_id, range_no, lo_key, hi_key) "
		"VALUES ($1, $2, $3, $4)",
		4, {INT8OID, INT4OID, TEXTARRAYOID, TEXTARRAYOID}
	},
	[CAT_RANGE_CLAIM] = {
		"SELECT range_no, lo_key, hi_key, last_key FROM acme_migrate.ranges "
		"WHERE job_id OPERATOR(pg_catalog.=) $1 "
		"AND state OPERATOR(pg_catalog.=) 'pending' "
		"ORDER BY range_no OPERATOR(pg_catalog.=) $2 DESC, range_no "
		"LIMIT 1 FOR UPDATE SKIP LOCKED",
		2, {INT8OID, INT4OID}
	},
	[CAT_RANGE_CHECKPOINT] = {
		"UPDATE acme_migrate.ranges SET last_key = COALESCE($3, last_key), "
		"rows_read = rows_read OPERATOR(pg_catalog.+) $4, state = $5, "
		"updated_at = pg_catalog.clock_timestamp() "
		"WHERE job_id OPERATOR(pg_catalog.=) $1 "
		"AND range_no OPERATOR(pg_catalog.=) $2",
		5, {INT8OID, INT4OID, TEXTARRAYOID, INT8OID, TEXTOID}
	},
	[CAT_JOB_WORKERS] = {
		"UPDATE acme_migrate.jobs SET workers = $2, state = $3, "
		"failure_reason = NULL, finished_at = NULL, "
		"workers_started_at = CASE WHEN $2 OPERATOR(pg_catalog.>) 0 "
		"THEN pg_catalog.clock_timestamp() END, "
		"updated_at = pg_catalog.clock_timestamp() "
		"WHERE job_id OPERATOR(pg_catalog.=) $1",
		3, {INT8OID, INT4OID, TEXTOID}
	},
	[CAT_JOB_ALTER] = {
		"UPDATE acme_migrate.jobs SET "
		"batch_size = COALESCE($2, batch_size), "
		"max_rows_per_second = CASE WHEN $3 IS NULL THEN max_rows_per_second "
		"WHEN $3 OPERATOR(pg_catalog.=) 0 THEN NULL ELSE $3 END, "
		"batch_time_target = CASE WHEN $4 IS NULL THEN batch_time_target "
		"WHEN $4 OPERATOR(pg_catalog.=) 0 THEN NULL ELSE " MS_TO_INTERVAL(4) " END, "
		"max_replication_lag = CASE WHEN $5 IS NULL THEN max_replication_lag "
		"WHEN $5 OPERATOR(pg_catalog.=) 0 THEN NULL ELSE " MS_TO_INTERVAL(5) " END, "
		"lock_timeout = CASE WHEN $6 IS NULL THEN lock_timeout "
		"WHEN $6 OPERATOR(pg_catalog.=) 0 THEN NULL ELSE " MS_TO_INTERVAL(6) " END, "
		"max_error_rate = COALESCE($7, max_error_rate), "
		"health_check = CASE WHEN $8 IS NULL THEN health_check "
		"WHEN $8 OPERATOR(pg_catalog.=) '' THEN NULL ELSE $8 END, "
		"on_breach = COALESCE($9, on_breach), "
		"definition_version = definition_version OPERATOR(pg_catalog.+) 1, "
		"updated_at = pg_catalog.clock_timestamp() "
		"WHERE job_id OPERATOR(pg_catalog.=) $1",
		9, {INT8OID, INT4OID, FLOAT8OID, FLOAT8OID, FLOAT8OID, FLOAT8OID,
		FLOAT8OID, TEXTOID, TEXTOID}
	},
	[CAT_JOB_SHAPE] = {
		"UPDATE acme_migrate.jobs SET shape = $2 "
		"WHERE job_id OPERATOR(pg_catalog.=) $1",
		2, {INT8OID, TEXTOID}
	},
	/*
	 * Up to $3 entries of a job stored after tid $4 (a tid range scan: the
	 * log has no index), deleted by their tids.  No row locks: one
	 * transaction at a time takes entries of a job (capture_apply's lock).
	 * No other condition on the outer scan: a qual on job_id made the
	 * planner filter the job's whole log by the tid array.
	 */
	[CAT_CAPTURE_TAKE] = {
		"DELETE FROM acme_migrate.capture_log "
		"WHERE ctid OPERATOR(pg_catalog.=) ANY (ARRAY("
		"SELECT ctid FROM acme_migrate.capture_log "
		"WHERE ctid OPERATOR(pg_catalog.>) $4 "
		"AND job_id OPERATOR(pg_catalog.=) $1 "
		"AND direction OPERATOR(pg_catalog.=) $2 "
		"LIMIT $3)) "
		"RETURNING ctid, key",
		4, {INT8OID, CHAROID, INT8OID, TIDOID}
	},
	[CAT_CAPTURE_BACKLOG] = {
		"SELECT pg_catalog.count(*), "
		"COALESCE(pg_catalog.date_part('epoch', pg_catalog.clock_timestamp() "
		"OPERATOR(pg_catalog.-) pg_catalog.min(logged_at)), 0) "
		"FROM acme_migrate.capture_log "
		"WHERE job_id OPERATOR(pg_catalog.=) $1 "
		"AND direction OPERATOR(pg_catalog.=) $2",
		2, {INT8OID, CHAROID}
	},
	[CAT_CAPTURE_CLEAR] = {
		"DELETE FROM acme_migrate.capture_log "
		"WHERE job_id OPERATOR(pg_catalog.=) $1 "
		"AND direction OPERATOR(pg_catalog.=) $2",
		2, {INT8OID, CHAROID}
	},
	[CAT_CUTOVER_INSERT] = {
		"INSERT INTO acme_migrate.cutovers (job_id, operation, attempt, "
		"started_at, lock_wait, lock_held, changes_drained, outcome) "
		"VALUES ($1, $2, $3, $4, " MS_TO_INTERVAL(5) ", " MS_TO_INTERVAL(6) ", $7, $8)",
		8, {INT8OID, TEXTOID, INT4OID, TIMESTAMPTZOID, FLOAT8OID, FLOAT8OID,
		INT8OID, TEXTOID}
	},
	[CAT_JOB_PRE] = {
		"UPDATE acme_migrate.jobs SET pre_rows = $2, pre_hash = $3::pg_catalog.uuid "
		"WHERE job_id OPERATOR(pg_catalog.=) $1",
		3, {INT8OID, INT8OID, TEXTOID}
	},
	[CAT_PREIMAGE_INSERT] = {
		"INSERT INTO acme_migrate.preimages (job_id, row) "
		"SELECT $1, r FROM pg_catalog.unnest($2) AS r",
		2, {INT8OID, JSONBARRAYOID}
	},
	[CAT_PREIMAGE_CLEAR] = {
		"DELETE FROM acme_migrate.preimages "
		"WHERE job_id OPERATOR(pg_catalog.=) $1",
		1, {INT8OID}
	},
	[CAT_JOB_CUT_OVER_AT] = {
		"UPDATE acme_migrate.jobs SET cut_over_at = pg_catalog.clock_timestamp() "
		"WHERE job_id OPERATOR(pg_catalog.=) $1",
		1, {INT8OID}
	},
	/* a parent named in depends_on: locked so that it cannot be dropped */
	[CAT_JOB_GET_PARENT] = {
		"SELECT job_id, owner::pg_catalog.oid FROM acme_migrate.jobs "
		"WHERE job_name OPERATOR(pg_catalog.=) $1 FOR KEY SHARE",
		1, {TEXTOID}
	},
	[CAT_JOB_STATE_BY_ID] = {
		"SELECT job_name, state, owner::pg_catalog.oid FROM acme_migrate.jobs "
		"WHERE job_id OPERATOR(pg_catalog.=) $1",
		1, {INT8OID}
	},
	[CAT_JOB_DEPENDENTS] = {
		"SELECT job_name, owner::pg_catalog.oid FROM acme_migrate.jobs "
		"WHERE $1 OPERATOR(pg_catalog.=) ANY (depends_on_ids) ORDER BY job_id",
		1, {INT8OID}
	},

	/*
	 * Workers in use, other than the job's own: those the running jobs of
	 * this database were started with (alive or about to be started again
	 * by the launcher), plus the live workers of other databases, whose
	 * catalogs we cannot read.  For the job's owner, then for everyone.
	 */
	[CAT_WORKERS_IN_USE] = {
		"SELECT (SELECT COALESCE(pg_catalog.sum(j.workers), 0) "
		"FROM acme_migrate.jobs j "
		"WHERE j.state OPERATOR(pg_catalog.=) 'running' "
		"AND j.job_id OPERATOR(pg_catalog.<>) $1 "
		"AND j.owner::pg_catalog.oid OPERATOR(pg_catalog.=) $2) "
		"OPERATOR(pg_catalog.+) "
		"(SELECT pg_catalog.count(*) FROM pg_catalog.pg_stat_activity a "
		"WHERE a.backend_type OPERATOR(pg_catalog.=) 'acme_migrate worker' "
		"AND a.datid OPERATOR(pg_catalog.<>) $3 "
		"AND a.usesysid OPERATOR(pg_catalog.=) $2), "
		"(SELECT COALESCE(pg_catalog.sum(j.workers), 0) "
		"FROM acme_migrate.jobs j "
		"WHERE j.state OPERATOR(pg_catalog.=) 'running' "
		"AND j.job_id OPERATOR(pg_catalog.<>) $1) "
		"OPERATOR(pg_catalog.+) "
		"(SELECT pg_catalog.count(*) FROM pg_catalog.pg_stat_activity a "
		"WHERE a.backend_type OPERATOR(pg_catalog.=) 'acme_migrate worker' "
		"AND a.datid OPERATOR(pg_catalog.<>) $3)",
		3, {INT8OID, OIDOID, OIDOID}
	},

	/*
	 * $1 cutoff, $2 every role's rows, $3 else the rows of the roles whose
	 * privileges this role has (the rule of job_visible), $4 one job or
	 * NULL.  Runs are the caller's by their owner (RLS shows a role the
	 * runs it made), the rest by their job's owner.  Diffs are deleted here
	 * rather than by the cascade, to be counted.
	 */
	[CAT_PURGE] = {
		"WITH r AS (DELETE FROM acme_migrate.reconcile_runs r "
		"WHERE r.started_at OPERATOR(pg_catalog.<) $1 "
		"AND ($2 OR pg_catalog.pg_has_role($3, r.owner::pg_catalog.oid, 'USAGE')) "
		"AND ($4 IS NULL OR r.job_id OPERATOR(pg_catalog.=) $4) "
		"RETURNING r.run_id), "
		"d AS (DELETE FROM acme_migrate.diffs d USING r "
		"WHERE d.run_id OPERATOR(pg_catalog.=) r.run_id RETURNING 1), "
		"j AS (SELECT j.job_id FROM acme_migrate.jobs j "
		"WHERE ($2 OR pg_catalog.pg_has_role($3, j.owner::pg_catalog.oid, 'USAGE')) "
		"AND ($4 IS NULL OR j.job_id OPERATOR(pg_catalog.=) $4)), "
		"x AS (DELETE FROM acme_migrate.rejects x USING j "
		"WHERE x.job_id OPERATOR(pg_catalog.=) j.job_id "
		"AND x.rejected_at OPERATOR(pg_catalog.<) $1 RETURNING 1), "
		"e AS (DELETE FROM acme_migrate.errors e USING j "
		"WHERE e.job_id OPERATOR(pg_catalog.=) j.job_id "
		"AND e.occurred_at OPERATOR(pg_catalog.<) $1 RETURNING 1), "
		"b AS (DELETE FROM acme_migrate.batches b USING j "
		"WHERE b.job_id OPERATOR(pg_catalog.=) j.job_id "
		"AND b.started_at OPERATOR(pg_catalog.<) $1 RETURNING 1) "
		"SELECT (SELECT pg_catalog.count(*) FROM r) "
		"OPERATOR(pg_catalog.+) (SELECT pg_catalog.count(*) FROM d) "
		"OPERATOR(pg_catalog.+) (SELECT pg_catalog.count(*) FROM x) "
		"OPERATOR(pg_catalog.+) (SELECT pg_catalog.count(*) FROM e) "
		"OPERATOR(pg_catalog.+) (SELECT pg_catalog.count(*) FROM b)",
		4, {TIMESTAMPTZOID, BOOLOID, OIDOID, INT8OID}
	},

	/*
	 * A stop rule breached (stoprules.c): the job pauses with the reason,
	 * and a row of errors names the rule, unless the job has left the
	 * states in which it can stop (a batch in flight must not undo a
	 * cancel, a cut-over or the end of the job).
	 */
	[CAT_JOB_BREACH] = {
		"WITH j AS (UPDATE acme_migrate.jobs SET state = 'paused', "
		"failure_reason = $2, last_error = $2, "
		"updated_at = pg_catalog.clock_timestamp() "
		"WHERE job_id OPERATOR(pg_catalog.=) $1 "
		"AND (state OPERATOR(pg_catalog.=) "
		"ANY ('{created,running,copied}'::pg_catalog.text[]) "
		"OR ($8 AND state OPERATOR(pg_catalog.=) 'paused')) "
		"RETURNING job_id) "
		"INSERT INTO acme_migrate.errors (job_id, sqlstate, message, detail, "
		"hint, context, transient, stop_rule) "
		"SELECT j.job_id, $3, $2, $4, $5, $6, false, $7 FROM j "
		"RETURNING error_id",
		8, {INT8OID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID,
		BOOLOID}
	},
};

static SPIPlanPtr cat_plans[CAT_NUM_STMTS];

/* user identity saved while a statement runs as the catalog owner */
typedef struct CatContext
{
	Oid			save_userid;
	int			save_sec_context;
	int			nest;			/* GUC level of the pinned search_path */
} CatContext;

/*
 * The catalog owner: whoever owns acme_migrate.jobs (the role that created
 * the extension).
 */
static Oid
cat_owner(void)
{
	Oid			nspid = get_namespace_oid("acme_migrate", false);
	Oid			relid = get_relname_relid("jobs", nspid);
	HeapTuple	tup;
	Oid			owner;

	if (!OidIsValid(relid))
		elog(ERROR, "table acme_migrate.jobs is missing");
	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for relation %u", relid);
	owner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
	ReleaseSysCache(tup);
	return owner;
}

/*
 * Connect to SPI and become the catalog owner for one statement, with
 * search_path pinned (security.c): whatever the caller's search_path holds,
 * no name in our statements can resolve to a user's object.
 */
static void
cat_enter(CatContext *cxt)
{
	am_check_catalog_version();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	GetUserIdAndSecContext(&cxt->save_userid, &cxt->save_sec_context);
	SetUserIdAndSecContext(cat_owner(),
						   cxt->save_sec_context |
						   SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	cxt->nest = am_pin_search_path();
}

static void
cat_leave(CatContext *cxt)
{
	am_unpin_search_path(cxt->nest);
	SetUserIdAndSecContext(cxt->save_userid, cxt->save_sec_context);
	SPI_finish();
}

/* Run one of our statements (inside cat_enter/cat_leave). */
static int
cat_exec(CatStmt stmt, Datum *values, const char *nulls, long count)
{
	int			rc;

	if (cat_plans[stmt] == NULL)
	{
		SPIPlanPtr	plan;

		plan = SPI_prepare(cat_stmts[stmt].sql, cat_stmts[stmt].nargs,
						   (Oid *) cat_stmts[stmt].argtypes);
		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed for \"%s\": %s",
				 cat_stmts[stmt].sql, SPI_result_code_string(SPI_result));
		if (SPI_keepplan(plan) != 0)
			elog(ERROR, "SPI_keepplan failed");
		cat_plans[stmt] = plan;
	}
	rc = SPI_execute_plan(cat_plans[stmt], values, nulls, false, count);
	if (rc < 0)
		elog(ERROR, "SPI_execute_plan failed for \"%s\": %s",
			 cat_stmts[stmt].sql, SPI_result_code_string(rc));
	return rc;
}

/* One statement that returns nothing the caller reads, in a context of its own. */
static void
cat_run(CatStmt stmt, Datum *values, const char *nulls)
{
	CatContext	cxt;

	cat_enter(&cxt);
	cat_exec(stmt, values, nulls, 0);
	cat_leave(&cxt);
}

/* Column col of the first row the last statement returned (isnull may be NULL). */
static Datum
cat_value(int col, bool *isnull)
{
	bool		null;
	Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
								  col, &null);

	if (isnull != NULL)
		*isnull = null;
	return d;
}

/* One statement whose first row's first column, a bigint, is the result. */
static int64
cat_run_int64(CatStmt stmt, Datum *values, const char *nulls)
{
	CatContext	cxt;
	int64		result;

	cat_enter(&cxt);
	cat_exec(stmt, values, nulls, 1);
	result = DatumGetInt64(cat_value(1, NULL));
	cat_leave(&cxt);
	return result;
}

/* text[] <-> List of char * */
static Datum
text_list_to_array(List *list)
{
	int			n = list_length(list);
	Datum	   *elems = palloc(sizeof(Datum) * Max(n, 1));
	ListCell   *lc;
	int			i = 0;

	foreach(lc, list)
		elems[i++] = CStringGetTextDatum((char *) lfirst(lc));
	return PointerGetDatum(construct_array(elems, n, TEXTOID, -1, false,
										   TYPALIGN_INT));
}

static List *
array_to_text_list(Datum array)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	List	   *result = NIL;

	deconstruct_array(DatumGetArrayTypeP(array), TEXTOID, -1, false,
					  TYPALIGN_INT, &elems, &nulls, &n);
	for (int i = 0; i < n; i++)
		result = lappend(result,
						 nulls[i] ? NULL : TextDatumGetCString(elems[i]));
	return result;
}

/* The keys and string values of a flat jsonb object, in its key order. */
static void
jsonb_object_to_lists(Jsonb *obj, List **keys, List **values)
{
	JsonbIterator *it = JsonbIteratorInit(&obj->root);
	JsonbValue	v;
	JsonbIteratorToken tok;

	*keys = *values = NIL;
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY)
			*keys = lappend(*keys, pnstrdup(v.val.string.val, v.val.string.len));
		else if (tok == WJB_VALUE)
			*values = lappend(*values, pnstrdup(v.val.string.val, v.val.string.len));
	}
}

static AmConflict
conflict_from_text(const char *s)
{
	if (strcmp(s, "update") == 0)
		return AM_CONFLICT_UPDATE;
	if (strcmp(s, "skip") == 0)
		return AM_CONFLICT_SKIP;
	return AM_CONFLICT_ERROR;
}

/* Copy the job row SPI returned into an AmJob in the caller's context. */
static AmJob *
job_from_tuple(HeapTuple tup, TupleDesc desc, MemoryContext mcxt)
{
	MemoryContext old = MemoryContextSwitchTo(mcxt);
	AmJob	   *job = palloc0(sizeof(AmJob));
	bool		isnull;
	Datum		d;
	int			col = 0;

#define NEXT() (d = SPI_getbinval(tup, desc, ++col, &isnull))

	NEXT();
	job->job_id = DatumGetInt64(d);
	NEXT();
	job->job_name = TextDatumGetCString(d);
	NEXT();
	job->owner = DatumGetObjectId(d);
	NEXT();
	job->source_relid = DatumGetObjectId(d);
	NEXT();
	job->target_relid = DatumGetObjectId(d);
	NEXT();
	job->key_columns = array_to_text_list(d);
	NEXT();
	job->target_key_columns = array_to_text_list(d);
	NEXT();
	job->key_is_unique = DatumGetBool(d);
	NEXT();
	jsonb_object_to_lists(DatumGetJsonbP(d), &job->map_targets, &job->map_exprs);
	NEXT();
	job->columns_given = isnull ? NULL : DatumGetJsonbPCopy(d);
	NEXT();
	job->filter = isnull ? NULL : TextDatumGetCString(d);
	NEXT();
	job->batch_size = DatumGetInt32(d);
	NEXT();
	job->on_conflict = conflict_from_text(TextDatumGetCString(d));
	NEXT();
	job->reject = (strcmp(TextDatumGetCString(d), "reject") == 0);
	NEXT();
	job->max_error_rate = isnull ? -1 : DatumGetFloat8(d);
	NEXT();
	job->capture_changes = DatumGetBool(d);
	NEXT();
	job->depends_on = isnull ? NIL : array_to_text_list(d);
	NEXT();
	job->max_rows_per_second = isnull ? 0 : DatumGetFloat8(d);
	NEXT();
	job->batch_time_target_ms = isnull ? 0 : (int64) DatumGetFloat8(d);
	NEXT();
	job->max_replication_lag_ms = isnull ? 0 : (int64) DatumGetFloat8(d);
	NEXT();
	job->lock_timeout_ms = isnull ? -1 : (int64) DatumGetFloat8(d);
	NEXT();
	job->definition_version = DatumGetInt32(d);
	NEXT();
	job->state = TextDatumGetCString(d);
	NEXT();
	job->last_key = isnull ? NIL : array_to_text_list(d);
	NEXT();
	job->rows_read = DatumGetInt64(d);
	NEXT();
	job->rows_copied = DatumGetInt64(d);
	NEXT();
	job->rows_rejected = DatumGetInt64(d);
	NEXT();
	job->batches_done = DatumGetInt64(d);
	NEXT();
	job->rows_estimate = isnull ? -1 : DatumGetFloat8(d);
	NEXT();
	job->workers = DatumGetInt32(d);
	NEXT();
	job->workers_age = DatumGetFloat8(d);
	NEXT();
	job->search_path = isnull ? NULL : TextDatumGetCString(d);
	NEXT();
	job->shape = isnull ? NULL : TextDatumGetCString(d);
	NEXT();
	job->depends_on_ids = NULL;
	job->ndepends_on_ids = 0;
	if (!isnull)
	{
		Datum	   *elems;
		bool	   *nulls;
		int			n;

		deconstruct_array(DatumGetArrayTypeP(d), INT8OID, 8, FLOAT8PASSBYVAL,
						  TYPALIGN_DOUBLE, &elems, &nulls, &n);
		job->depends_on_ids = palloc0(sizeof(int64) * Max(n, 1));
		job->ndepends_on_ids = n;
		for (int i = 0; i < n; i++)
			job->depends_on_ids[i] = nulls[i] ? 0 : DatumGetInt64(elems[i]);
	}
	NEXT();
	job->reverse_columns = isnull ? NULL : DatumGetJsonbPCopy(d);
	NEXT();
	job->capture_method = isnull ? "trigger" : TextDatumGetCString(d);
	NEXT();
	job->health_check = isnull ? NULL : TextDatumGetCString(d);
	NEXT();
	job->on_breach = isnull ? "pause" : TextDatumGetCString(d);
	/* the version read: jobrow.c may lock it again, or write it */
	NEXT();
	job->row_tid = *(ItemPointer) DatumGetPointer(d);
	NEXT();
	job->row_xmin = DatumGetTransactionId(d);
#undef NEXT

	MemoryContextSwitchTo(old);
	return job;
}

/* Is the current user a superuser, or does it administer acme_migrate? */
static bool
cat_is_admin(void)
{
	Oid			admin;

	if (superuser())
		return true;
	admin = get_role_oid("acme_migrate_admin", true);
	return OidIsValid(admin) && has_privs_of_role(GetUserId(), admin);
}

/*
 * May the current user see (and so use) a job of this owner?  The job's
 * owner, a role with the owner's privileges, and superusers and members of
 * acme_migrate_admin may; nobody else.  This is the rule of the row-level
 * security predicate acme_migrate.job_visible(), word for word: a job the
 * catalog hides from a role does not exist for it here either.
 */
static bool
catalog_job_visible(Oid owner)
{
	return has_privs_of_role(GetUserId(), owner) || cat_is_admin();
}

/* The one way we say a job is not there, whether it is or is hidden. */
static void
cat_job_missing(const char *job_name)
{
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_OBJECT),
			 errmsg("job \"%s\" does not exist", job_name),
			 errhint("Jobs are listed in acme_migrate.jobs.")));
}

/*
 * ERROR unless the current user may use the job.  A job the user may not
 * see answers "does not exist", as if it were not there: telling "permission
 * denied" would give away that another role has a job of that name.
 */
static void
catalog_check_owner(AmJob *job)
{
	if (!catalog_job_visible(job->owner))
		cat_job_missing(job->job_name);
}

/*
 * Load a job by name; ERROR if it does not exist or the caller may not use
 * it.  With for_update the job row is locked until the end of the
 * transaction (drop and state changes).
 */
AmJob *
catalog_job_get(const char *job_name, bool for_update)
{
	MemoryContext mcxt = CurrentMemoryContext;
	CatContext	cxt;
	Datum		arg = CStringGetTextDatum(job_name);
	AmJob	   *job = NULL;

	cat_enter(&cxt);
	cat_exec(for_update ? CAT_JOB_GET_LOCK : CAT_JOB_GET, &arg, NULL, 1);
	if (SPI_processed == 1)
		job = job_from_tuple(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
							 mcxt);
	cat_leave(&cxt);

	if (job == NULL)
		cat_job_missing(job_name);
	catalog_check_owner(job);
	return job;
}

/*
 * Lock the job's row again, as catalog_job_get(..., true) would, when it is
 * still the version job was read from or last written to (jobrow.c): then
 * the job need not be read again, and true.  False: read it again.
 */
bool
catalog_job_relock(AmJob *job)
{
	am_check_catalog_version();
	catalog_check_owner(job);
	return jobrow_relock(job);
}

/*
 * The id of a job named in depends_on of a job being created.  The parent
 * must be one the creator may see (else it "does not exist"), and its row
 * stays locked FOR KEY SHARE until the creating transaction ends, so that
 * it cannot be dropped before the child, which names it by id, commits.
 */
int64
catalog_job_parent(const char *job_name)
{
	CatContext	cxt;
	Datum		arg = CStringGetTextDatum(job_name);
	int64		job_id = 0;
	Oid			owner = InvalidOid;

	cat_enter(&cxt);
	cat_exec(CAT_JOB_GET_PARENT, &arg, NULL, 1);
	if (SPI_processed == 1)
	{
		bool		isnull;

		job_id = DatumGetInt64(cat_value(1, &isnull));
		owner = DatumGetObjectId(cat_value(2, &isnull));
	}
	cat_leave(&cxt);
	if (job_id == 0 || !catalog_job_visible(owner))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("job \"%s\" does not exist", job_name),
				 errdetail("Jobs named in depends_on must be created first.")));
	return job_id;
}

/*
 * Is the job with this id finished (copied, cut over or done)?  Used for
 * depends_on.  *exists says whether it is still there; *job_name is its
 * name when it is and the current user may see it, else NULL.
 */
bool
catalog_job_finished_by_id(int64 job_id, bool *exists, char **job_name)
{
	MemoryContext mcxt = CurrentMemoryContext;
	CatContext	cxt;
	Datum		arg = Int64GetDatum(job_id);
	bool		finished = false;
	char	   *name = NULL;
	Oid			owner = InvalidOid;

	*exists = false;
	*job_name = NULL;
	cat_enter(&cxt);
	cat_exec(CAT_JOB_STATE_BY_ID, &arg, NULL, 1);
	if (SPI_processed == 1)
	{
		HeapTuple	tup = SPI_tuptable->vals[0];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		char	   *state = SPI_getvalue(tup, desc, 2);
		bool		isnull;

		*exists = true;
		finished = am_job_state(state)->copy_complete;
		owner = DatumGetObjectId(SPI_getbinval(tup, desc, 3, &isnull));
		name = MemoryContextStrdup(mcxt, SPI_getvalue(tup, desc, 1));
	}
	cat_leave(&cxt);

	/* as the caller again: may it see the job? */
	if (name != NULL && catalog_job_visible(owner))
		*job_name = name;
	return finished;
}

/*
 * ERROR when other jobs depend on this one: they are bound to it by id, and
 * would otherwise wait for ever.  Names the first dependent the caller may
 * see; one it may not see is only counted.
 */
void
catalog_job_check_dependents(AmJob *job)
{
	MemoryContext mcxt = CurrentMemoryContext;
	CatContext	cxt;
	Datum		arg = Int64GetDatum(job->job_id);
	char	  **names;
	Oid		   *owners;
	char	   *visible = NULL;
	uint64		n;

	cat_enter(&cxt);
	cat_exec(CAT_JOB_DEPENDENTS, &arg, NULL, 0);
	n = SPI_processed;
	names = MemoryContextAlloc(mcxt, sizeof(char *) * Max(n, 1));
	owners = MemoryContextAlloc(mcxt, sizeof(Oid) * Max(n, 1));
	for (uint64 i = 0; i < n; i++)
	{
		bool		isnull;

		names[i] = MemoryContextStrdup(mcxt,
									   SPI_getvalue(SPI_tuptable->vals[i],
													SPI_tuptable->tupdesc, 1));
		owners[i] = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[i],
												   SPI_tuptable->tupdesc,
												   2, &isnull));
	}
	cat_leave(&cxt);

	/* as the caller again: which dependents may it see? */
	for (uint64 i = 0; i < n && visible == NULL; i++)
		if (catalog_job_visible(owners[i]))
			visible = names[i];
	if (n > 0)
		ereport(ERROR,
				(errcode(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST),
				 visible ?
				 errmsg("cannot drop job \"%s\" because job \"%s\" depends on it",
						job->job_name, visible) :
				 errmsg("cannot drop job \"%s\" because other jobs depend on it",
						job->job_name),
				 n > 1 ?
				 errdetail("%llu jobs name it in depends_on.",
						   (unsigned long long) n) : 0,
				 errhint("Drop the jobs that depend on it first.")));
}

/*
 * Background workers in use other than the job's: *role_workers of the
 * job's owner, *all_workers of every role.  See CAT_WORKERS_IN_USE.
 */
void
catalog_workers_in_use(AmJob *job, int *role_workers, int *all_workers)
{
	CatContext	cxt;
	Datum		values[3];
	bool		isnull;

	values[0] = Int64GetDatum(job->job_id);
	values[1] = ObjectIdGetDatum(job->owner);
	values[2] = ObjectIdGetDatum(MyDatabaseId);
	cat_enter(&cxt);
	cat_exec(CAT_WORKERS_IN_USE, values, NULL, 1);
	*role_workers = (int) DatumGetInt64(cat_value(1, &isnull));
	*all_workers = (int) DatumGetInt64(cat_value(2, &isnull));
	cat_leave(&cxt);
}

/*
 * Insert a new job, owned by the current user; returns its id.  A duplicate
 * name is reported as such (the unique index would say it less clearly).
 */
int64
catalog_job_insert(AmJob *job)
{
	CatContext	cxt;
	Datum		values[29];
	char		nulls[29];
	Datum		name = CStringGetTextDatum(job->job_name);
	int64		job_id;

	memset(nulls, ' ', sizeof(nulls));
	values[0] = name;
	values[1] = ObjectIdGetDatum(GetUserId());
	values[2] = ObjectIdGetDatum(job->source_relid);
	values[3] = ObjectIdGetDatum(job->target_relid);
	values[4] = text_list_to_array(job->key_columns);
	values[5] = text_list_to_array(job->target_key_columns);
	values[6] = BoolGetDatum(job->key_is_unique);
	values[7] = text_list_to_array(job->map_targets);
	values[8] = text_list_to_array(job->map_exprs);
	values[9] = job->columns_given ? JsonbPGetDatum(job->columns_given) : 0;
	nulls[9] = job->columns_given ? ' ' : 'n';
	values[10] = job->filter ? CStringGetTextDatum(job->filter) : 0;
	nulls[10] = job->filter ? ' ' : 'n';
	values[11] = Int32GetDatum(job->batch_size);
	values[12] = CStringGetTextDatum(job->on_conflict == AM_CONFLICT_UPDATE ? "update" :
									 job->on_conflict == AM_CONFLICT_SKIP ? "skip" :
									 "error");
	values[13] = CStringGetTextDatum(job->reject ? "reject" : "abort");
	values[14] = Float8GetDatum(job->max_error_rate);
	nulls[14] = job->max_error_rate >= 0 ? ' ' : 'n';
	values[15] = BoolGetDatum(job->capture_changes);
	values[16] = job->depends_on ? text_list_to_array(job->depends_on) : 0;
	nulls[16] = job->depends_on ? ' ' : 'n';
	values[17] = Float8GetDatum(job->max_rows_per_second);
	nulls[17] = job->max_rows_per_second > 0 ? ' ' : 'n';
	values[18] = Float8GetDatum((double) job->batch_time_target_ms);
	nulls[18] = job->batch_time_target_ms > 0 ? ' ' : 'n';
	values[19] = Float8GetDatum((double) job->max_replication_lag_ms);
	nulls[19] = job->max_replication_lag_ms > 0 ? ' ' : 'n';
	values[20] = Float8GetDatum((double) job->lock_timeout_ms);
	nulls[20] = job->lock_timeout_ms >= 0 ? ' ' : 'n';
	values[21] = Float8GetDatum(job->rows_estimate);
	nulls[21] = job->rows_estimate >= 0 ? ' ' : 'n';
	values[22] = CStringGetTextDatum(job->search_path);
	values[23] = CStringGetTextDatum(job->shape);
	if (job->ndepends_on_ids > 0)
	{
		Datum	   *ids = palloc(sizeof(Datum) * job->ndepends_on_ids);

		for (int i = 0; i < job->ndepends_on_ids; i++)
			ids[i] = Int64GetDatum(job->depends_on_ids[i]);
		values[24] = PointerGetDatum(construct_array(ids, job->ndepends_on_ids,
													 INT8OID, 8,
													 FLOAT8PASSBYVAL,
													 TYPALIGN_DOUBLE));
	}
	else
		nulls[24] = 'n';
	values[25] = job->reverse_columns ? JsonbPGetDatum(job->reverse_columns) : 0;
	nulls[25] = job->reverse_columns ? ' ' : 'n';
	values[26] = CStringGetTextDatum(job->capture_method ? job->capture_method : "trigger");
	values[27] = job->health_check ? CStringGetTextDatum(job->health_check) : 0;
	nulls[27] = job->health_check ? ' ' : 'n';
	values[28] = CStringGetTextDatum(job->on_breach ? job->on_breach : "pause");

	/*
	 * Two sessions creating the same name: the second waits here for the
	 * first to finish, then sees its job and says so.
	 */
	{
		LOCKTAG		tag;

		SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, AM_LOCK_CLASS,
							 DatumGetUInt32(hash_any((unsigned char *) job->job_name,
													 strlen(job->job_name))), 4);
		(void) LockAcquire(&tag, ExclusiveLock, false, false);
	}
	cat_enter(&cxt);
	cat_exec(CAT_JOB_STATE_BY_NAME, &name, NULL, 1);
	if (SPI_processed > 0)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("job \"%s\" already exists", job->job_name),
				 errhint("Drop it first with acme_migrate_drop(), or choose another name.")));
	cat_exec(CAT_JOB_INSERT, values, nulls, 1);
	job_id = DatumGetInt64(cat_value(1, NULL));
	cat_leave(&cxt);
	return job_id;
}

/*
 * Forget a job; its history goes with it (ON DELETE CASCADE).  Refused
 * while other jobs depend on it; the caller has locked its row, so no new
 * dependent can commit meanwhile.
 */
void
catalog_job_delete(AmJob *job)
{
	Datum		arg = Int64GetDatum(job->job_id);

	catalog_check_owner(job);
	catalog_job_check_dependents(job);
	cat_run(CAT_JOB_DELETE, &arg, NULL);
}

/* Change a job's state, with an optional reason (failure_reason). */
void
catalog_job_set_state(AmJob *job, const char *state, const char *reason)
{
	const AmJobState *st = am_job_state(state);
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};

	values[0] = Int64GetDatum(job->job_id);
	values[1] = CStringGetTextDatum(state);
	if (reason)
		values[2] = CStringGetTextDatum(reason);
	else
		nulls[2] = 'n';
	values[3] = BoolGetDatum(st->finished == AM_FINISHED_SET);
	values[4] = BoolGetDatum(st->finished == AM_FINISHED_KEEP);
	cat_run(CAT_JOB_STATE, values, nulls);
	job->state = pstrdup(state);
}

/*
 * Record a committed batch: the job's checkpoint and counters, and a row of
 * history, in one statement.  Runs in the batch's own transaction, which is
 * the whole point.
 */
void
catalog_job_checkpoint(AmJob *job, AmRange *range, List *first_key,
					   List *last_key, int64 rows_read, int64 rows_copied,
					   int64 rows_rejected, bool direct, TimestampTz started,
					   const char *new_state, const char *reason)
{
	CatContext	cxt;
	Datum		values[13];
	char		nulls[13];
	int64		batch_no;
	bool		history;

	memset(nulls, ' ', sizeof(nulls));
	values[0] = Int64GetDatum(job->job_id);
	/* the job's own checkpoint moves only when it is not split in ranges */
	if (range == NULL && last_key != NIL)
		values[1] = text_list_to_array(last_key);
	else if (job->last_key != NIL)
		values[1] = text_list_to_array(job->last_key);
	else
		nulls[1] = 'n';
	values[2] = Int64GetDatum(rows_read);
	values[3] = Int64GetDatum(rows_copied);
	values[4] = Int64GetDatum(rows_rejected);
	values[5] = CStringGetTextDatum(new_state);
	values[6] = reason ? CStringGetTextDatum(reason) : 0;
	nulls[6] = reason ? ' ' : 'n';
	values[7] = TimestampTzGetDatum(started);
	values[8] = first_key ? text_list_to_array(first_key) : 0;
	nulls[8] = first_key ? ' ' : 'n';
	values[9] = last_key ? text_list_to_array(last_key) : 0;
	nulls[9] = last_key ? ' ' : 'n';
	values[10] = CStringGetTextDatum(direct ? "direct" : "sql");
	values[11] = Int32GetDatum(range ? range->range_no : 0);
	nulls[11] = range ? ' ' : 'n';
	/* a batch that leaves the state as it was keeps finished_at */
	values[12] = BoolGetDatum(am_job_state(new_state)->finished == AM_FINISHED_SET);

	/* the rows in C when it can (jobrow.c), the history row else by SQL */
	if (jobrow_checkpoint(job, values, nulls, &batch_no, &history))
	{
		MemoryContext old = MemoryContextSwitchTo(GetMemoryChunkContext(job));

		if (range == NULL && last_key != NIL)
			job->last_key = array_to_text_list(values[1]);
		MemoryContextSwitchTo(old);
		values[1] = Int64GetDatum(batch_no);
		nulls[1] = ' ';
		if (!history)
			cat_run(CAT_BATCH_INSERT, values, nulls);
		return;
	}
	cat_enter(&cxt);
	cat_exec(CAT_JOB_CHECKPOINT, values, nulls, 1);
	if (SPI_processed != 1)
		elog(ERROR, "job %lld vanished during its batch",
			 (long long) job->job_id);
	cat_leave(&cxt);
}

/*
 * Store a rejected source row with the error it met: its key, and the row
 * itself unless acme_migrate.store_row_data is off.
 */
void
catalog_reject_insert(AmJob *job, Jsonb *key, Jsonb *row, ErrorData *edata)
{
	Datum		values[6];
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};

	/* the policy holds here, whatever the caller passes */
	if (!acme_migrate_store_row_data)
		row = NULL;
	values[0] = Int64GetDatum(job->job_id);
	values[1] = JsonbPGetDatum(key);
	values[2] = row ? JsonbPGetDatum(row) : 0;
	nulls[2] = row ? ' ' : 'n';
	values[3] = CStringGetTextDatum(unpack_sql_state(edata->sqlerrcode));
	values[4] = CStringGetTextDatum(edata->message ? edata->message : "");
	values[5] = edata->detail ? CStringGetTextDatum(edata->detail) : 0;
	nulls[5] = edata->detail ? ' ' : 'n';
	cat_run(CAT_REJECT_INSERT, values, nulls);
}

/* Record an error that stopped a batch (the caller has a fresh transaction). */
void
catalog_error_insert(AmJob *job, ErrorData *edata, bool transient)
{
	Datum		values[7];
	char		nulls[7] = {' ', ' ', ' ', ' ', ' ', ' ', ' '};

	values[0] = Int64GetDatum(job->job_id);
	values[1] = CStringGetTextDatum(unpack_sql_state(edata->sqlerrcode));
	values[2] = CStringGetTextDatum(edata->message ? edata->message : "");
#define OPT(i, s) \
	do { if (s) values[i] = CStringGetTextDatum(s); else nulls[i] = 'n'; } while (0)
	OPT(3, edata->detail);
	OPT(4, edata->hint);
	OPT(5, edata->context);
#undef OPT
	values[6] = BoolGetDatum(transient);
	cat_run(CAT_ERROR_INSERT, values, nulls);
}

/*
 * Start a reconciliation run (job_id 0 for an ad hoc one); returns its id.
 */
int64
catalog_reconcile_begin(int64 job_id, Oid source_relid, Oid target_relid,
						List *keys, List *columns, Jsonb *options,
						double sample, int64 max_diffs)
{
	Datum		values[9];
	char		nulls[9];

	memset(nulls, ' ', sizeof(nulls));
	values[0] = Int64GetDatum(job_id);
	nulls[0] = job_id > 0 ? ' ' : 'n';
	values[1] = ObjectIdGetDatum(GetUserId());
	values[2] = ObjectIdGetDatum(source_relid);
	values[3] = ObjectIdGetDatum(target_relid);
	values[4] = text_list_to_array(keys);
	values[5] = text_list_to_array(columns);
	values[6] = options ? JsonbPGetDatum(options) : 0;
	nulls[6] = options ? ' ' : 'n';
	values[7] = Float8GetDatum(sample);
	nulls[7] = sample > 0 ? ' ' : 'n';
	values[8] = Int64GetDatum(max_diffs);
	nulls[8] = max_diffs >= 0 ? ' ' : 'n';
	return cat_run_int64(CAT_RUN_INSERT, values, nulls);
}

/*
 * The differences of a run, written in batches: up to AM_DIFF_BATCH of them
 * go in one INSERT (the constraints' expressions and the executor are set
 * up once, not per difference).  Their values live in cxt until the flush;
 * their rows are left out when acme_migrate.store_row_data is off.
 */
#define AM_DIFF_BATCH	500
#define AM_DIFF_NCOLS	7

struct AmDiffBatch
{
	int64		run_id;
	int			n;
	MemoryContext cxt;
	Datum		values[AM_DIFF_NCOLS][AM_DIFF_BATCH];
	bool		nulls[AM_DIFF_NCOLS][AM_DIFF_BATCH];
};

AmDiffBatch *
catalog_diff_batch(int64 run_id)
{
	AmDiffBatch *b = palloc0(sizeof(AmDiffBatch));

	b->run_id = run_id;
	b->cxt = AllocSetContextCreate(CurrentMemoryContext,
								   "acme_migrate diff batch",
								   ALLOCSET_DEFAULT_SIZES);
	return b;
}

/*
 * Add one difference to the batch (its values copied into the batch's
 * context), writing the batch out when it is full.
 */
void
catalog_diff_add(AmDiffBatch *b, int64 diff_no, const char *kind,
				 const char *side, Jsonb *key, Jsonb *source_row,
				 Jsonb *target_row, List *changed_columns)
{
	MemoryContext old = MemoryContextSwitchTo(b->cxt);
	Datum		values[AM_DIFF_NCOLS];
	bool		nulls[AM_DIFF_NCOLS];

	if (!acme_migrate_store_row_data)
		source_row = target_row = NULL;
	values[0] = Int64GetDatum(diff_no);
	values[1] = CStringGetTextDatum(kind);
	values[2] = side ? CStringGetTextDatum(side) : (Datum) 0;
	values[3] = key ? datumCopy(JsonbPGetDatum(key), false, -1) : (Datum) 0;
	values[4] = source_row ? datumCopy(JsonbPGetDatum(source_row), false, -1) : (Datum) 0;
	values[5] = target_row ? datumCopy(JsonbPGetDatum(target_row), false, -1) : (Datum) 0;
	/* text[] travels as its text: unnest cannot take an array of arrays */
	values[6] = changed_columns ?
		CStringGetTextDatum(OidOutputFunctionCall(F_ARRAY_OUT,
												  text_list_to_array(changed_columns))) :
		(Datum) 0;
	nulls[0] = nulls[1] = false;
	nulls[2] = side == NULL;
	nulls[3] = key == NULL;
	nulls[4] = source_row == NULL;
	nulls[5] = target_row == NULL;
	nulls[6] = changed_columns == NIL;
	for (int c = 0; c < AM_DIFF_NCOLS; c++)
	{
		b->values[c][b->n] = values[c];
		b->nulls[c][b->n] = nulls[c];
	}
	b->n++;
	MemoryContextSwitchTo(old);
	if (b->n == AM_DIFF_BATCH)
		catalog_diff_flush(b);
}

/* Write out the batch's differences, in one statement. */
void
catalog_diff_flush(AmDiffBatch *b)
{
	static const Oid types[AM_DIFF_NCOLS] = {INT8OID, TEXTOID, TEXTOID,
	JSONBOID, JSONBOID, JSONBOID, TEXTOID};
	Datum		values[AM_DIFF_NCOLS + 1];
	int			dims[1];
	int			lbs[1] = {1};
	MemoryContext old;

	if (b->n == 0)
		return;
	old = MemoryContextSwitchTo(b->cxt);
	dims[0] = b->n;
	values[0] = Int64GetDatum(b->run_id);
	for (int c = 0; c < AM_DIFF_NCOLS; c++)
	{
		int16		typlen;
		bool		typbyval;
		char		typalign;

		get_typlenbyvalalign(types[c], &typlen, &typbyval, &typalign);
		values[c + 1] = PointerGetDatum(construct_md_array(b->values[c],
														   b->nulls[c], 1,
														   dims, lbs, types[c],
														   typlen, typbyval,
														   typalign));
	}
	MemoryContextSwitchTo(old);
	cat_run(CAT_DIFF_INSERT, values, NULL);
	b->n = 0;
	MemoryContextReset(b->cxt);
}

/* Record the counts of a finished run. */
void
catalog_reconcile_end(int64 run_id, AmReconcileCounts *c, bool truncated,
					  bool estimated)
{
	Datum		values[20];
	char		nulls[21] = "                    ";

	values[0] = Int64GetDatum(run_id);
	values[1] = Int64GetDatum(c->source_rows);
	values[2] = Int64GetDatum(c->target_rows);
	values[3] = Int64GetDatum(c->missing);
	values[4] = Int64GetDatum(c->extra);
	values[5] = Int64GetDatum(c->changed);
	values[6] = Int64GetDatum(c->duplicates);
	values[7] = Int64GetDatum(c->null_keys);
	values[8] = BoolGetDatum(reconcile_counts_equal(c));
	values[9] = BoolGetDatum(truncated);
	values[10] = BoolGetDatum(estimated);
	values[11] = CStringGetTextDatum(c->method);
	values[12] = Int64GetDatum(c->ranges_hashed);
	values[13] = Int64GetDatum(c->ranges_merged);
	if (strncmp(c->method, "hash_", 5) != 0)
		nulls[12] = nulls[13] = 'n';
	values[14] = Int64GetDatum(c->mapped_rows);
	if (c->mapped_rows < 0)
		nulls[14] = 'n';
	/* remote.c: a source on another server */
	values[15] = c->remote_mode ? CStringGetTextDatum(c->remote_mode) : (Datum) 0;
	nulls[15] = c->remote_mode ? ' ' : 'n';
	values[16] = Int64GetDatum(c->remote_rows);
	nulls[16] = c->remote_mode && c->remote_rows >= 0 ? ' ' : 'n';
	values[17] = c->remote_note ? CStringGetTextDatum(c->remote_note) : (Datum) 0;
	nulls[17] = c->remote_note ? ' ' : 'n';
	values[18] = Int32GetDatum(c->parallel_workers);
	values[19] = Int64GetDatum(c->rows_merged);
	if (strncmp(c->method, "hash_", 5) != 0)
		nulls[19] = 'n';
	cat_run(CAT_RUN_FINISH, values, nulls);
}

/*
 * Delete the reconcile runs (with their diffs), rejects, errors and batch
 * history recorded before cutoff, of one job (job_id > 0) or of all, that
 * the caller sees: its own runs and the history of its own jobs, or
 * everything for a superuser or an acme_migrate admin, as row-level
 * security shows them.  The statement runs as the catalog owner, which
 * bypasses row-level security, so it filters by owner itself.  Jobs and
 * ranges, which hold the checkpoints, are left alone.  Returns the number
 * of rows deleted.
 */
int64
catalog_purge(TimestampTz cutoff, int64 job_id)
{
	Datum		values[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};

	values[0] = TimestampTzGetDatum(cutoff);
	values[1] = BoolGetDatum(cat_is_admin());
	values[2] = ObjectIdGetDatum(GetUserId());
	values[3] = Int64GetDatum(job_id);
	nulls[3] = job_id > 0 ? ' ' : 'n';
	return cat_run_int64(CAT_PURGE, values, nulls);
}

/*
 * Load a job by id, for a background worker (which has no name to go by);
 * NULL when it is gone.
 */
AmJob *
catalog_job_get_by_id(int64 job_id)
{
	MemoryContext mcxt = CurrentMemoryContext;
	CatContext	cxt;
	Datum		arg = Int64GetDatum(job_id);
	AmJob	   *job = NULL;

	cat_enter(&cxt);
	cat_exec(CAT_JOB_GET_BY_ID, &arg, NULL, 1);
	if (SPI_processed == 1)
		job = job_from_tuple(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
							 mcxt);
	cat_leave(&cxt);
	return job;
}

/* How many ranges the job has, and how many are still pending. */
int
catalog_ranges_count(AmJob *job, int *pending)
{
	CatContext	cxt;
	Datum		arg = Int64GetDatum(job->job_id);
	bool		isnull;
	int			total;

	cat_enter(&cxt);
	cat_exec(CAT_RANGES_COUNT, &arg, NULL, 1);
	*pending = (int) DatumGetInt64(cat_value(1, &isnull));
	total = (int) DatumGetInt64(cat_value(2, &isnull));
	cat_leave(&cxt);
	return total;
}

/*
 * Split the job into ranges: boundaries is a list of keys (each a List of
 * text), the ranges are (start, b1], (b1, b2], ..., (bn, end]; start is the
 * job's checkpoint when it has one.
 */
void
catalog_ranges_create(AmJob *job, List *boundaries)
{
	CatContext	cxt;
	Datum		values[4];
	char		nulls[4];
	List	   *lo = job->last_key;
	ListCell   *lc;
	int			n = 0;

	cat_enter(&cxt);
	for (lc = list_head(boundaries);; lc = lnext(boundaries, lc))
	{
		List	   *hi = lc ? lfirst(lc) : NIL;

		memset(nulls, ' ', sizeof(nulls));
		values[0] = Int64GetDatum(job->job_id);
		values[1] = Int32GetDatum(++n);
		values[2] = lo ? text_list_to_array(lo) : 0;
		nulls[2] = lo ? ' ' : 'n';
		values[3] = hi ? text_list_to_array(hi) : 0;
		nulls[3] = hi ? ' ' : 'n';
		cat_exec(CAT_RANGE_INSERT, values, nulls, 0);
		lo = hi;
		if (lc == NULL)
			break;
	}
	cat_leave(&cxt);
}

/*
 * Claim a pending range for this transaction (its row stays locked until
 * commit), preferring the one this process worked on last.  NULL when
 * every pending range is taken or none is left.
 */
AmRange *
catalog_range_claim(AmJob *job, int32 preferred)
{
	MemoryContext mcxt = CurrentMemoryContext;
	CatContext	cxt;
	Datum		values[2];
	AmRange    *range = NULL;

	values[0] = Int64GetDatum(job->job_id);
	values[1] = Int32GetDatum(preferred);
	cat_enter(&cxt);
	cat_exec(CAT_RANGE_CLAIM, values, NULL, 1);
	if (SPI_processed == 1)
	{
		HeapTuple	tup = SPI_tuptable->vals[0];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		MemoryContext old = MemoryContextSwitchTo(mcxt);
		bool		isnull;
		Datum		d;

		range = palloc0(sizeof(AmRange));
		range->range_no = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
		d = SPI_getbinval(tup, desc, 2, &isnull);
		range->lo_key = isnull ? NIL : array_to_text_list(d);
		d = SPI_getbinval(tup, desc, 3, &isnull);
		range->hi_key = isnull ? NIL : array_to_text_list(d);
		d = SPI_getbinval(tup, desc, 4, &isnull);
		range->last_key = isnull ? NIL : array_to_text_list(d);
		MemoryContextSwitchTo(old);
	}
	cat_leave(&cxt);
	return range;
}

/* The checkpoint of a range, in its batch's transaction. */
void
catalog_range_checkpoint(AmJob *job, AmRange *range, List *last_key,
						 int64 rows_read, bool done)
{
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};

	values[0] = Int64GetDatum(job->job_id);
	values[1] = Int32GetDatum(range->range_no);
	values[2] = last_key ? text_list_to_array(last_key) : 0;
	nulls[2] = last_key ? ' ' : 'n';
	values[3] = Int64GetDatum(rows_read);
	values[4] = CStringGetTextDatum(done ? "done" : "pending");
	cat_run(CAT_RANGE_CHECKPOINT, values, nulls);
}

/* Set the number of workers and the state of a job (start, resume). */
void
catalog_job_set_workers(AmJob *job, int workers, const char *state)
{
	Datum		values[3];

	values[0] = Int64GetDatum(job->job_id);
	values[1] = Int32GetDatum(workers);
	values[2] = CStringGetTextDatum(state);
	cat_run(CAT_JOB_WORKERS, values, NULL);
	job->workers = workers;
	job->state = pstrdup(state);
}

/*
 * Change a job's batch size, throttles and stop rules; values < 0 (NULL
 * strings) leave a setting as it is, 0 removes a throttle, an empty
 * health_check removes it.  Running batches pick the change up at their
 * next batch (the definition version moves).
 */
void
catalog_job_alter(AmJob *job, int32 batch_size, double max_rows_per_second,
				  int64 batch_time_target_ms, int64 max_replication_lag_ms,
				  int64 lock_timeout_ms, double max_error_rate,
				  const char *health_check, const char *on_breach)
{
	Datum		values[9];
	char		nulls[9];

	memset(nulls, ' ', sizeof(nulls));
	values[0] = Int64GetDatum(job->job_id);
	values[1] = Int32GetDatum(batch_size);
	nulls[1] = batch_size > 0 ? ' ' : 'n';
	values[2] = Float8GetDatum(max_rows_per_second);
	nulls[2] = max_rows_per_second >= 0 ? ' ' : 'n';
	values[3] = Float8GetDatum((double) batch_time_target_ms);
	nulls[3] = batch_time_target_ms >= 0 ? ' ' : 'n';
	values[4] = Float8GetDatum((double) max_replication_lag_ms);
	nulls[4] = max_replication_lag_ms >= 0 ? ' ' : 'n';
	values[5] = Float8GetDatum((double) lock_timeout_ms);
	nulls[5] = lock_timeout_ms >= 0 ? ' ' : 'n';
	values[6] = Float8GetDatum(max_error_rate);
	nulls[6] = max_error_rate >= 0 ? ' ' : 'n';
	values[7] = health_check ? CStringGetTextDatum(health_check) : 0;
	nulls[7] = health_check ? ' ' : 'n';
	values[8] = on_breach ? CStringGetTextDatum(on_breach) : 0;
	nulls[8] = on_breach ? ' ' : 'n';
	cat_run(CAT_JOB_ALTER, values, nulls);
}

/*
 * Record the shape of a job's columns (mapping_shape): for jobs created
 * before 1.1, at their first batch after the update.
 */
void
catalog_job_set_shape(AmJob *job, const char *shape)
{
	Datum		values[2];

	values[0] = Int64GetDatum(job->job_id);
	values[1] = CStringGetTextDatum(shape);
	cat_run(CAT_JOB_SHAPE, values, NULL);
	job->shape = pstrdup(shape);
}

/*
 * The capture log's OID, kept while it lives: catalog_capture_log runs for
 * every row the application writes, so its name is not looked up each time.
 * Any invalidation of the table (dropped with the extension, altered by an
 * update) makes the next call look it up again.
 */
static Oid	cat_log_relid = InvalidOid;
static bool cat_log_callback = false;

static void
cat_log_invalidate(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == cat_log_relid)
		cat_log_relid = InvalidOid;
}

/*
 * Log the key of a row written to a job's source (direction 'f') or, after
 * cut-over, to its target ('r'): called by the capture trigger, in the
 * writing transaction, whoever writes, once per written row.  This is on
 * the application's write path, so it does not go through SPI: the row is
 * built here and inserted with its index entry directly (as PostgreSQL
 * inserts catalog rows), which checks no privilege and runs no user code.
 */
void
catalog_capture_log(int64 job_id, char direction, List *key)
{
	/* the log's columns, and its sequence, looked up once per creation */
	static const char *const cols[] = {"job_id", "direction", "seq", "key",
	"logged_at"};
	static Oid	seq_relid = InvalidOid;
	static AttrNumber attnums[lengthof(cols)];
	Relation	rel;
	TupleDesc	desc;
	Datum	   *values;
	bool	   *nulls;
	HeapTuple	tup;

	am_check_catalog_version();
	if (!OidIsValid(cat_log_relid))
	{
		Oid			relid = get_relname_relid("capture_log",
											  get_namespace_oid("acme_migrate", false));

		if (!OidIsValid(relid))
			elog(ERROR, "table acme_migrate.capture_log is missing");
		for (int i = 0; i < lengthof(cols); i++)
			attnums[i] = get_attnum(relid, cols[i]);
		seq_relid = getIdentitySequence(relid, attnums[2], false);
		if (!cat_log_callback)
		{
			CacheRegisterRelcacheCallback(cat_log_invalidate, (Datum) 0);
			cat_log_callback = true;
		}
		cat_log_relid = relid;
	}
	rel = table_open(cat_log_relid, RowExclusiveLock);
	desc = RelationGetDescr(rel);
	values = palloc0(sizeof(Datum) * desc->natts);
	nulls = palloc(sizeof(bool) * desc->natts);
	memset(nulls, true, sizeof(bool) * desc->natts);
	values[attnums[0] - 1] = Int64GetDatum(job_id);
	values[attnums[1] - 1] = CharGetDatum(direction);
	values[attnums[2] - 1] = Int64GetDatum(nextval_internal(seq_relid, false));
	values[attnums[3] - 1] = text_list_to_array(key);
	values[attnums[4] - 1] = TimestampTzGetDatum(GetCurrentTimestamp());
	for (int i = 0; i < lengthof(cols); i++)
		nulls[attnums[i] - 1] = false;
	tup = heap_form_tuple(desc, values, nulls);
	CatalogTupleInsert(rel, tup);
	heap_freetuple(tup);
	table_close(rel, NoLock);
}

/*
 * Take (delete) up to limit of the log entries of a job stored after
 * position "after" (0: from the start); *last is the position of the last
 * one taken, *keys (Lists of text Lists) in the caller's memory.  Positions
 * are tids as int64 (block << 16 | offset), in storage order.  The caller
 * applies the entries in the same transaction, so they are gone exactly
 * when their changes are applied.  Returns how many.
 */
int
catalog_capture_take(int64 job_id, char direction, int limit, int64 after,
					 int64 *last, List **keys)
{
	MemoryContext mcxt = CurrentMemoryContext;
	CatContext	cxt;
	Datum		values[4];
	ItemPointerData from;
	int			n;

	ItemPointerSet(&from, (BlockNumber) (after >> 16),
				   (OffsetNumber) (after & 0xFFFF));
	values[0] = Int64GetDatum(job_id);
	values[1] = CharGetDatum(direction);
	values[2] = Int64GetDatum(limit);
	values[3] = PointerGetDatum(&from);
	cat_enter(&cxt);
	cat_exec(CAT_CAPTURE_TAKE, values, NULL, 0);
	n = (int) SPI_processed;
	*last = after;
	*keys = NIL;
	for (int i = 0; i < n; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		bool		isnull;
		ItemPointer tid;
		MemoryContext old;

		tid = (ItemPointer) DatumGetPointer(SPI_getbinval(tup, SPI_tuptable->tupdesc,
												1, &isnull));
		*last = Max(*last,
					((int64) ItemPointerGetBlockNumber(tid) << 16) |
					ItemPointerGetOffsetNumber(tid));
		old = MemoryContextSwitchTo(mcxt);
		*keys = lappend(*keys,
						array_to_text_list(SPI_getbinval(tup, SPI_tuptable->tupdesc,
														 2, &isnull)));
		MemoryContextSwitchTo(old);
	}
	cat_leave(&cxt);
	return n;
}

/* How many entries wait, and the age in seconds of the oldest. */
int64
catalog_capture_backlog(int64 job_id, char direction, double *age)
{
	CatContext	cxt;
	Datum		values[2];
	bool		isnull;
	int64		n;

	values[0] = Int64GetDatum(job_id);
	values[1] = CharGetDatum(direction);
	cat_enter(&cxt);
	cat_exec(CAT_CAPTURE_BACKLOG, values, NULL, 1);
	n = DatumGetInt64(cat_value(1, &isnull));
	if (age)
		*age = DatumGetFloat8(cat_value(2, &isnull));
	cat_leave(&cxt);
	return n;
}

/* Forget every log entry of one direction of a job. */
void
catalog_capture_clear(int64 job_id, char direction)
{
	Datum		values[2];

	values[0] = Int64GetDatum(job_id);
	values[1] = CharGetDatum(direction);
	cat_run(CAT_CAPTURE_CLEAR, values, NULL);
}

/* One attempt of a cut-over or rollback (lock_held_ms < 0: not taken). */
void
catalog_cutover_attempt(int64 job_id, const char *operation, int attempt,
						TimestampTz started, int64 lock_wait_ms,
						int64 lock_held_ms, int64 drained, const char *outcome)
{
	Datum		values[8];
	char		nulls[8] = "        ";

	values[0] = Int64GetDatum(job_id);
	values[1] = CStringGetTextDatum(operation);
	values[2] = Int32GetDatum(attempt);
	values[3] = TimestampTzGetDatum(started);
	values[4] = Float8GetDatum((double) lock_wait_ms);
	values[5] = Float8GetDatum((double) lock_held_ms);
	if (lock_held_ms < 0)
		nulls[5] = 'n';
	values[6] = Int64GetDatum(drained);
	values[7] = CStringGetTextDatum(outcome);
	cat_run(CAT_CUTOVER_INSERT, values, nulls);
}

/* The target's row count and table hash (a uuid's text) before the job. */
void
catalog_job_set_pre(AmJob *job, int64 rows, const char *hash)
{
	Datum		values[3];

	values[0] = Int64GetDatum(job->job_id);
	values[1] = Int64GetDatum(rows);
	values[2] = CStringGetTextDatum(hash);
	cat_run(CAT_JOB_PRE, values, NULL);
}

/* Rows the target held before the job (rollback puts them back). */
void
catalog_preimage_insert(int64 job_id, Datum *rows, int n)
{
	Datum		values[2];

	values[0] = Int64GetDatum(job_id);
	values[1] = PointerGetDatum(construct_array(rows, n, JSONBOID, -1, false,
												TYPALIGN_INT));
	cat_run(CAT_PREIMAGE_INSERT, values, NULL);
}

/* Forget them: the job was cut over, or they are back in the target. */
void
catalog_preimage_clear(int64 job_id)
{
	Datum		arg = Int64GetDatum(job_id);

	cat_run(CAT_PREIMAGE_CLEAR, &arg, NULL);
}

/* Note when the job was cut over. */
void
catalog_job_cut_over_at(AmJob *job)
{
	Datum		arg = Int64GetDatum(job->job_id);

	cat_run(CAT_JOB_CUT_OVER_AT, &arg, NULL);
}

/*
 * Log the keys of a whole statement (capture by statement triggers): one
 * insert, the keys passed as one text array per key column.
 */
void
catalog_capture_log_many(int64 job_id, char direction, int nkeys, List *keys)
{
	static SPIPlanPtr plans[INDEX_MAX_KEYS + 1];
	CatContext	cxt;
	Datum	   *values = palloc(sizeof(Datum) * (nkeys + 2));
	Oid		   *types = palloc(sizeof(Oid) * (nkeys + 2));
	int			n = list_length(keys);

	if (nkeys < 1 || nkeys > INDEX_MAX_KEYS)
		elog(ERROR, "invalid number of key columns: %d", nkeys);
	values[0] = Int64GetDatum(job_id);
	values[1] = CharGetDatum(direction);
	types[0] = INT8OID;
	types[1] = CHAROID;
	for (int k = 0; k < nkeys; k++)
	{
		Datum	   *col = palloc(sizeof(Datum) * n);
		ListCell   *lc;
		int			i = 0;

		foreach(lc, keys)
			col[i++] = CStringGetTextDatum((char *) list_nth(lfirst(lc), k));
		values[k + 2] = PointerGetDatum(construct_array(col, n, TEXTOID, -1,
														false, TYPALIGN_INT));
		types[k + 2] = TEXTARRAYOID;
	}
	cat_enter(&cxt);
	if (plans[nkeys] == NULL)
	{
		StringInfoData q;
		SPIPlanPtr	plan;

		initStringInfo(&q);
		appendStringInfoString(&q, "INSERT INTO acme_migrate.capture_log (job_id, direction, key) "
							   "SELECT $1, $2, ARRAY[");
		for (int k = 0; k < nkeys; k++)
			appendStringInfo(&q, "%su.k%d", k > 0 ? ", " : "", k + 1);
		/* ROWS FROM: unnest($3, $4) expands only unqualified (mapping.c) */
		appendStringInfoString(&q, "] FROM ROWS FROM (");
		for (int k = 0; k < nkeys; k++)
			appendStringInfo(&q, "%spg_catalog.unnest($%d)", k > 0 ? ", " : "",
							 k + 3);
		appendStringInfoString(&q, ") AS u(");
		for (int k = 0; k < nkeys; k++)
			appendStringInfo(&q, "%sk%d", k > 0 ? ", " : "", k + 1);
		appendStringInfoChar(&q, ')');
		plan = SPI_prepare(q.data, nkeys + 2, types);
		if (plan == NULL || SPI_keepplan(plan) != 0)
			elog(ERROR, "SPI_prepare failed for \"%s\"", q.data);
		plans[nkeys] = plan;
	}
	if (SPI_execute_plan(plans[nkeys], values, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not log captured keys");
	cat_leave(&cxt);
}

/*
 * A stop rule breached (stoprules.c): pause the job with the reason and
 * record the breach in acme_migrate.errors (stop_rule names the rule; the
 * SQLSTATE is the error's behind it, else 01000).  Returns false, having
 * done nothing, when the job is no longer created, running or copied (or
 * paused, with also_paused).
 */
bool
catalog_job_breach(AmJob *job, const char *rule, const char *reason,
				   ErrorData *edata, bool also_paused)
{
	CatContext	cxt;
	Datum		values[8];
	char		nulls[8] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
	bool		done;

	values[0] = Int64GetDatum(job->job_id);
	values[1] = CStringGetTextDatum(reason);
	values[2] = CStringGetTextDatum(edata ? unpack_sql_state(edata->sqlerrcode) :
									"01000");
#define OPT(i, s) \
	do { if (s) values[i] = CStringGetTextDatum(s); else nulls[i] = 'n'; } while (0)
	OPT(3, edata ? edata->detail : NULL);
	OPT(4, edata ? edata->hint : NULL);
	OPT(5, edata ? edata->context : NULL);
#undef OPT
	values[6] = CStringGetTextDatum(rule);
	values[7] = BoolGetDatum(also_paused);
	cat_enter(&cxt);
	cat_exec(CAT_JOB_BREACH, values, nulls, 1);
	done = SPI_processed == 1;
	cat_leave(&cxt);
	if (done)
		job->state = pstrdup("paused");
	return done;
}
