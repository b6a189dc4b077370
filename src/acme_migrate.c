/*-------------------------------------------------------------------------
 *
 * acme_migrate.c
 *	  Module load, GUCs and the SQL-callable entry points of acme_migrate.
 *
 * The entry points only check their arguments and sequence the work; the
 * catalog is in catalog.c, the mapping in mapping.c, the copy in batch.c
 * and writer.c.
 *
 *-------------------------------------------------------------------------
 */
#include "acme_migrate.h"

#include <limits.h>
#include <unistd.h>

#include "access/xact.h"
#include "catalog/namespace.h"
#include "mb/pg_wchar.h"
#include "storage/lmgr.h"
#include "commands/defrem.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "optimizer/optimizer.h"
#include "pgstat.h"
#include "postmaster/postmaster.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/array.h"
#include "utils/datetime.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

PG_MODULE_MAGIC;

bool		acme_migrate_direct_write = true;
bool		acme_migrate_async_commit = true;
int			acme_migrate_max_workers = 8;
int			acme_migrate_max_workers_per_role = 4;
int			acme_migrate_max_workers_total = -1;
int			acme_migrate_naptime = 10;
char	   *acme_migrate_databases = NULL;
bool		acme_migrate_store_row_data = true;
bool		acme_migrate_remote_hashes = true;

void		_PG_init(void);

PG_FUNCTION_INFO_V1(acme_migrate_create);
PG_FUNCTION_INFO_V1(acme_migrate_create_1_1);
PG_FUNCTION_INFO_V1(acme_migrate_batch);
PG_FUNCTION_INFO_V1(acme_migrate_run);
PG_FUNCTION_INFO_V1(acme_migrate_drop);
PG_FUNCTION_INFO_V1(acme_migrate_alter);
PG_FUNCTION_INFO_V1(acme_migrate_alter_1_1);
PG_FUNCTION_INFO_V1(acme_migrate_purge);

/*
 * GUCs first; the launcher only when loaded by shared_preload_libraries
 * (without it, acme_migrate_start still works and a later start resumes).
 */
void
_PG_init(void)
{
	DefineCustomBoolVariable("acme_migrate.direct_write",
							 "Writes batches through the table access method when the target allows it.",
							 "When off, every batch is written with an INSERT ... ON CONFLICT statement, "
							 "which is slower but runs the target's triggers and rules as any INSERT does.",
							 &acme_migrate_direct_write,
							 true,
							 PGC_USERSET,
							 0,
							 NULL, NULL, NULL);
	DefineCustomBoolVariable("acme_migrate.async_commit",
							 "Commits the batches of acme_migrate_run and of workers without waiting for the WAL flush.",
							 "A batch's rows and checkpoint commit together, so a crash can only undo whole batches, "
							 "which are then copied again: exactly-once holds either way, but a batch already seen "
							 "committed may be undone by a crash.  The last batch of each acme_migrate_run call, "
							 "and the one that finishes a job, always wait for the flush.  Off: every batch waits "
							 "for its flush, as synchronous_commit says.",
							 &acme_migrate_async_commit,
							 true,
							 PGC_USERSET,
							 0,
							 NULL, NULL, NULL);
	DefineCustomIntVariable("acme_migrate.max_workers",
							"Sets the most background workers one job may run with.",
							"Each worker is a background worker process: max_worker_processes must leave room for them.",
							&acme_migrate_max_workers,
							8, 1, 64,
							PGC_SUSET,
							0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("acme_migrate.max_workers_per_role",
							"Sets the most background workers the jobs of one role may run with together.",
							"Workers run as the role that owns their job; the workers of every job it owns count, "
							"in this database those its running jobs were started with, in other databases those alive. "
							"acme_migrate_start and acme_migrate_resume start fewer workers than asked for, "
							"or none, rather than go over it.",
							&acme_migrate_max_workers_per_role,
							4, 0, MAX_BACKENDS,
							PGC_SUSET,
							0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("acme_migrate.max_workers_total",
							"Sets the most background workers all jobs together may run with.",
							"-1 means half of max_worker_processes, so that parallel query, logical replication "
							"and other extensions keep the other half.",
							&acme_migrate_max_workers_total,
							-1, -1, MAX_BACKENDS,
							PGC_SUSET,
							0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("acme_migrate.naptime",
							"Sets how long the launcher sleeps between looks for jobs to resume.",
							"The launcher also looks at once when the server starts or restarts after a crash.",
							&acme_migrate_naptime,
							10, 1, 3600,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);
	DefineCustomStringVariable("acme_migrate.databases",
							   "Lists the databases whose jobs the launcher resumes.",
							   "A comma-separated list of database names; empty means every database that allows connections.",
							   &acme_migrate_databases,
							   "",
							   PGC_SIGHUP,
							   GUC_LIST_INPUT,
							   NULL, NULL, NULL);
	DefineCustomBoolVariable("acme_migrate.remote_hashes",
							 "Compares range hashes on the server of a foreign source, or on the shards of a Citus table, before fetching rows.",
							 "When a reconcile's source is a postgres_fdw foreign table, row counts and hash sums "
							 "per key range are computed on its server and only the ranges that differ are "
							 "fetched.  When a side is a Citus distributed table, they are computed on its "
							 "shards (remote_mode citus_shards).  When off, every row is fetched (remote_mode "
							 "full_fetch for a foreign source), as for a comparison with a full fetch.",
							 &acme_migrate_remote_hashes,
							 true,
							 PGC_USERSET,
							 0,
							 NULL, NULL, NULL);
	DefineCustomBoolVariable("acme_migrate.store_row_data",
							 "Stores copies of rows in acme_migrate.rejects and acme_migrate.diffs.",
							 "When off, a rejected row is stored with its key only (source_row is NULL), and a "
							 "difference found by acme_migrate_reconcile with its key and the names of the "
							 "columns that differ (source_row and target_row are NULL), so the catalog holds "
							 "no copy of row data beyond keys.  Only superusers, and roles granted SET on it, "
							 "can change it: it is a site's data-retention policy.  Set it in postgresql.conf, "
							 "or with ALTER DATABASE or ALTER ROLE, for background workers to follow it too.",
							 &acme_migrate_store_row_data,
							 true,
							 PGC_SUSET,
							 0,
							 NULL, NULL, NULL);
	MarkGUCPrefixReserved("acme_migrate");

	if (!process_shared_preload_libraries_in_progress)
		return;
	worker_register_launcher();
}

/* An interval argument in milliseconds; ERROR unless positive (or zero). */
int64
am_interval_ms(Interval *iv, const char *argname, bool zero_ok)
{
	int64		ms;

	ms = iv->time / 1000 +
		(int64) iv->day * SECS_PER_DAY * 1000 +
		(int64) iv->month * DAYS_PER_MONTH * SECS_PER_DAY * 1000;
	if (ms < 0 || (ms == 0 && !zero_ok))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 zero_ok ? errmsg("%s must not be negative", argname) :
				 errmsg("%s must be greater than zero", argname)));
	return ms;
}

/*
 * A job's lock_timeout in milliseconds: it becomes the lock_timeout
 * setting of each batch, which cannot exceed INT_MAX milliseconds.
 */
static int64
am_lock_timeout_ms(Interval *iv)
{
	int64		ms = am_interval_ms(iv, "lock_timeout", true);

	if (ms > INT_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("lock_timeout must be at most %d milliseconds (about 24 days)",
						INT_MAX)));
	return ms;
}

/* An interval of ms milliseconds. */
Interval *
am_ms_interval(int64 ms)
{
	Interval   *iv = palloc0(sizeof(Interval));

	iv->time = ms * 1000;
	return iv;
}

/*
 * am_copy_short's longer copies: a call to the C library's memcpy, not
 * the inline "rep movsq" a memcpy of unknown length becomes at the call
 * site.
 */
void
am_copy_long(char *dst, const char *src, uint32 n)
{
	memcpy(dst, src, n);
}

/*
 * Parallel workers that one of our parallel scans may start next to its
 * leader: one per CPU besides the leader's (when it takes part), and at
 * least one, so that a parallel scan the planner would make stays
 * parallel.  Our workers do the leader's CPU-bound work; more processes
 * than CPUs only take turns, and each costs a start and an exit.  No limit
 * when the number of CPUs is not known.
 */
int
am_cpus_for_workers(void)
{
	long		cpus = sysconf(_SC_NPROCESSORS_ONLN);

	if (cpus <= 0)
		return INT_MAX;
	cpus -= parallel_leader_participation ? 1 : 0;
	return (int) Max(1, Min(cpus, (long) INT_MAX));
}

/* max_error_rate is a fraction, and only means something with rejects */
static void
am_check_error_rate(AmJob *job, double rate)
{
	if (!(rate >= 0 && rate <= 1))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_error_rate must be between 0 and 1")));
	if (!job->reject)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_error_rate requires on_error => 'reject'"),
				 errdetail("With on_error => 'abort' the first failing row stops the batch, so no row is ever rejected.")));
}

static char *
am_text_arg(FunctionCallInfo fcinfo, int n, const char *argname)
{
	if (PG_ARGISNULL(n))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", argname)));
	return text_to_cstring(PG_GETARG_TEXT_PP(n));
}

static List *
am_text_array_arg(FunctionCallInfo fcinfo, int n, const char *argname)
{
	ArrayType  *arr;
	Datum	   *elems;
	bool	   *nulls;
	int			count;
	List	   *result = NIL;

	if (PG_ARGISNULL(n))
		return NIL;
	arr = PG_GETARG_ARRAYTYPE_P(n);
	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("%s must be a one-dimensional array", argname)));
	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls,
					  &count);
	for (int i = 0; i < count; i++)
	{
		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("%s must not contain nulls", argname)));
		result = lappend(result, TextDatumGetCString(elems[i]));
	}
	return result;
}

/*
 * The arguments 1.1 added to acme_migrate_create: reverse_columns,
 * capture_method, health_check and on_breach (absent when the function is
 * called through the 1.0 SQL definition).
 */
static void
am_create_online_args(FunctionCallInfo fcinfo, AmJob *job)
{
	bool		v11 = PG_NARGS() > 16;
	char	   *s;

	job->capture_method = "trigger";
	job->on_breach = "pause";
	if (!v11)
		return;
	job->reverse_columns = PG_ARGISNULL(16) ? NULL : PG_GETARG_JSONB_P_COPY(16);
	if (job->reverse_columns && !job->capture_changes)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("reverse_columns requires capture_changes => true"),
				 errdetail("The way back after cut-over replays the writes captured on the target.")));
	s = PG_ARGISNULL(17) ? "trigger" : text_to_cstring(PG_GETARG_TEXT_PP(17));
	if (strcmp(s, "trigger") == 0 || strcmp(s, "statement") == 0)
		job->capture_method = pstrdup(s);
	else if (strcmp(s, "logical") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("capture_method \"logical\" is not available"),
				 errdetail("Changes are captured by triggers; logical decoding is not built."),
				 errhint("Use capture_method => 'trigger' (row triggers) or 'statement' (statement triggers with transition tables).")));
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value for capture_method: \"%s\"", s),
				 errhint("Valid values are \"trigger\", \"statement\" and \"logical\".")));
	if (!PG_ARGISNULL(18))
	{
		job->health_check = text_to_cstring(PG_GETARG_TEXT_PP(18));
		mapping_check_sql_fragment(job->health_check, false, "health_check");
	}
	s = PG_ARGISNULL(19) ? "pause" : text_to_cstring(PG_GETARG_TEXT_PP(19));
	if (strcmp(s, "pause") == 0 || strcmp(s, "rollback") == 0)
		job->on_breach = pstrdup(s);
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value for on_breach: \"%s\"", s),
				 errhint("Valid values are \"pause\" and \"rollback\".")));
}

/* acme_migrate_create's name, tables, key, mapping, filter, batch size */
static void
am_create_table_args(FunctionCallInfo fcinfo, AmJob *job)
{
	job->job_name = am_text_arg(fcinfo, 0, "job");
	if (job->job_name[0] == '\0' ||
		pg_mbstrlen(job->job_name) >= NAMEDATALEN)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_NAME),
				 errmsg("invalid job name \"%s\"", job->job_name),
				 errdetail("A job name must have 1 to %d characters.",
						   NAMEDATALEN - 1)));
	if (PG_ARGISNULL(1) || PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", PG_ARGISNULL(1) ? "source" : "target")));
	job->source_relid = PG_GETARG_OID(1);
	job->target_relid = PG_GETARG_OID(2);
	job->key_columns = am_text_array_arg(fcinfo, 3, "key");
	if (!PG_ARGISNULL(3) && job->key_columns == NIL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("key must name at least one column")));
	job->columns_given = PG_ARGISNULL(4) ? NULL : PG_GETARG_JSONB_P_COPY(4);
	job->filter = PG_ARGISNULL(5) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(5));

	job->batch_size = PG_ARGISNULL(6) ? 10000 : PG_GETARG_INT32(6);
	if (job->batch_size <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("batch_size must be greater than zero")));
}

/* acme_migrate_create's on_conflict, on_error and max_error_rate */
static void
am_create_error_args(FunctionCallInfo fcinfo, AmJob *job)
{
	char	   *s;

	s = PG_ARGISNULL(7) ? "update" : text_to_cstring(PG_GETARG_TEXT_PP(7));
	if (strcmp(s, "update") == 0)
		job->on_conflict = AM_CONFLICT_UPDATE;
	else if (strcmp(s, "skip") == 0)
		job->on_conflict = AM_CONFLICT_SKIP;
	else if (strcmp(s, "error") == 0)
		job->on_conflict = AM_CONFLICT_ERROR;
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value for on_conflict: \"%s\"", s),
				 errhint("Valid values are \"update\", \"skip\" and \"error\".")));

	s = PG_ARGISNULL(8) ? "abort" : text_to_cstring(PG_GETARG_TEXT_PP(8));
	if (strcmp(s, "reject") == 0)
		job->reject = true;
	else if (strcmp(s, "abort") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value for on_error: \"%s\"", s),
				 errhint("Valid values are \"abort\" and \"reject\".")));

	job->max_error_rate = -1;
	if (!PG_ARGISNULL(9))
	{
		job->max_error_rate = PG_GETARG_FLOAT8(9);
		am_check_error_rate(job, job->max_error_rate);
	}
}

/*
 * acme_migrate_create's depends_on.  Parents are bound by id now: whatever
 * later takes a parent's name is not this job's parent.  Each is locked
 * until we commit, so it cannot be dropped before its new child is there
 * to stop the drop.
 */
static void
am_create_depends_on(FunctionCallInfo fcinfo, AmJob *job)
{
	ListCell   *lc;

	job->depends_on = am_text_array_arg(fcinfo, 11, "depends_on");
	job->depends_on_ids = palloc0(sizeof(int64) * Max(list_length(job->depends_on), 1));
	foreach(lc, job->depends_on)
	{
		if (strcmp(lfirst(lc), job->job_name) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("job \"%s\" cannot depend on itself", job->job_name)));
		job->depends_on_ids[job->ndepends_on_ids++] =
			catalog_job_parent(lfirst(lc));
	}
}

/* acme_migrate_create's throttles */
static void
am_create_throttle_args(FunctionCallInfo fcinfo, AmJob *job)
{
	if (!PG_ARGISNULL(12))
	{
		job->max_rows_per_second = PG_GETARG_FLOAT8(12);
		if (!(job->max_rows_per_second > 0))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("max_rows_per_second must be greater than zero")));
	}
	if (!PG_ARGISNULL(13))
		job->batch_time_target_ms = am_interval_ms(PG_GETARG_INTERVAL_P(13),
												   "batch_time_target", false);
	if (!PG_ARGISNULL(14))
		job->max_replication_lag_ms = am_interval_ms(PG_GETARG_INTERVAL_P(14),
													 "max_replication_lag", false);
	job->lock_timeout_ms = -1;
	if (!PG_ARGISNULL(15))
		job->lock_timeout_ms = am_lock_timeout_ms(PG_GETARG_INTERVAL_P(15));
}

/*
 * Check the job as batches will run it and insert it.  The job's SQL means
 * what it meant to its creator, whoever runs it, and is checked here
 * exactly as batches will run it: as its owner, under the same
 * restrictions.  The tables stay locked until commit, so the shape
 * recorded is the shape checked.  Then, in this same transaction and
 * before any batch can take a snapshot: the target as it is now (for
 * rollback), and capture.
 */
static int64
am_create_job(AmJob *job)
{
	AmOwnerContext owner_cxt;

	job->owner = GetUserId();
	job->search_path = pstrdup(namespace_search_path);
	LockRelationOid(job->source_relid, AccessShareLock);
	LockRelationOid(job->target_relid, AccessShareLock);
	am_begin_as_owner(job, &owner_cxt);
	mapping_resolve_new_job(job, job->columns_given, false);
	job->definition_version = 1;
	(void) mapping_build(job, true);
	job->rows_estimate = mapping_estimate_rows(job);
	job->shape = mapping_shape(job, NULL);
	/* sequences behind the target advance when the job ends (sequences.c) */
	am_check_sequences(job);
	am_end_as_owner(&owner_cxt);

	job->job_id = catalog_job_insert(job);
	am_begin_as_owner(job, &owner_cxt);
	capture_record_pre(job);
	if (job->capture_changes)
		capture_check_and_install(job);
	am_end_as_owner(&owner_cxt);
	return job->job_id;
}

/*
 * acme_migrate_create(job, source, target, key, columns, filter, batch_size,
 *		on_conflict, on_error, max_error_rate, capture_changes, depends_on,
 *		max_rows_per_second, batch_time_target, max_replication_lag,
 *		lock_timeout [, reverse_columns, capture_method, health_check,
 *		on_breach]) returns bigint
 *
 * Checks everything that can be checked before the first batch (tables,
 * key, mapping, the batch queries themselves), then inserts the job.  The
 * 1.0 and 1.1 SQL definitions (16 and 20 arguments) share this code.
 */
Datum
acme_migrate_create_1_1(PG_FUNCTION_ARGS)
{
	return acme_migrate_create(fcinfo);
}

Datum
acme_migrate_create(PG_FUNCTION_ARGS)
{
	AmJob	   *job = palloc0(sizeof(AmJob));

	am_create_table_args(fcinfo, job);
	am_create_error_args(fcinfo, job);
	job->capture_changes = PG_ARGISNULL(10) ? false : PG_GETARG_BOOL(10);
	am_create_online_args(fcinfo, job);
	am_create_depends_on(fcinfo, job);
	am_create_throttle_args(fcinfo, job);
	PG_RETURN_INT64(am_create_job(job));
}

/*
 * acme_migrate_batch(job) returns bigint
 *
 * Exactly one batch in the caller's transaction.  Another session busy with
 * the job makes it return 0 at once, with a NOTICE.
 */
Datum
acme_migrate_batch(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	AmJob	   *job = catalog_job_get(name, false);
	AmMapping  *volatile map = NULL;
	volatile int64 rows = 0;
	bool		more;
	int			nest;

	if (!batch_lock_job(job->job_id, ExclusiveLock, false))
	{
		ereport(NOTICE,
				(errmsg("job \"%s\" is busy in another session", name),
				 errdetail("No batch was copied.")));
		PG_RETURN_INT64(0);
	}
	/* reload under the lock: the checkpoint may have moved meanwhile */
	job = catalog_job_get(name, true);
	/* the mapping's and the batch's locks under the job's lock_timeout */
	nest = am_job_lock_timeout(job);
	map = mapping_build(job, false);
	PG_TRY();
	{
		rows = batch_step(job, map, job->batch_size, &more);
	}
	PG_FINALLY();
	{
		batch_free_plans(map);
	}
	PG_END_TRY();
	AtEOXact_GUC(true, nest);
	PG_RETURN_INT64(rows);
}

/* Sleep ms milliseconds, waking up for interrupts and postmaster death. */
void
am_sleep(int64 ms)
{
	TimestampTz end = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), ms);
	long		left;

	/*
	 * Until the end, by the clock: a latch set meanwhile (or before) ends a
	 * wait early, and must not shorten the sleep.
	 */
	while ((left = TimestampDifferenceMilliseconds(GetCurrentTimestamp(),
												   end)) > 0)
	{
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 Min(left, 1000), PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

/* Replay lag of the slowest standby in milliseconds, 0 when unknown. */
int64
am_replication_lag_ms(void)
{
	int64		lag = 0;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute("SELECT pg_catalog.max(pg_catalog.date_part('epoch', replay_lag)) "
					"OPERATOR(pg_catalog.*) 1000 FROM pg_catalog.pg_stat_replication",
					true, 1) == SPI_OK_SELECT && SPI_processed == 1)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0],
									  SPI_tuptable->tupdesc, 1, &isnull);

		if (!isnull)
			lag = (int64) DatumGetFloat8(d);
	}
	SPI_finish();
	return lag;
}

/* ---- acme_migrate_run: a driver (driver.c) in the caller's session ---- */

typedef struct RunState
{
	const char *name;
	MemoryContext jobcxt;		/* holds job */
	AmJob	   *job;			/* as the last turn left it */
	int			reused;			/* turns since it was read */
} RunState;

/* how many turns may reuse a job before it is read again anyway */
#define RUN_JOB_REUSE	1000

/*
 * The job, its row locked.  The job the last turn left in memory serves
 * again when its row is still the version that turn wrote (or read): see
 * catalog_job_relock.  Any other change (another session's pause, cancel
 * or alter, our own state change, a rolled back batch) makes the row
 * another version, and the job is read again.  So is it every
 * RUN_JOB_REUSE turns, which bounds what its checkpoints allocate.
 */
static AmJob *
run_load(AmDriver *d)
{
	RunState   *rs = d->arg;
	MemoryContext old;

	if (rs->job != NULL && rs->reused < RUN_JOB_REUSE &&
		catalog_job_relock(rs->job))
	{
		rs->reused++;
		return rs->job;
	}
	rs->job = NULL;
	MemoryContextReset(rs->jobcxt);
	old = MemoryContextSwitchTo(rs->jobcxt);
	rs->job = catalog_job_get(rs->name, true);
	MemoryContextSwitchTo(old);
	rs->reused = 0;
	return rs->job;
}

static void
run_commit(AmDriver *d, bool last)
{
	SPI_commit();
}

/* A failed batch: record its error, commit that, and fail the CALL. */
static bool
run_failed(AmDriver *d, ErrorData *edata)
{
	catalog_error_insert(d->job, edata,
						 batch_error_is_transient(edata->sqlerrcode));
	SPI_commit();
	ReThrowError(edata);
	return false;
}

/*
 * The procedure's transaction is already there, and SPI_commit opens the
 * next (no begin); sleeps and waits are the driver's own (no nap, report).
 */
static const AmDriverOps run_ops = {
	.load = run_load,
	.commit = run_commit,
	.failed = run_failed,
};

/*
 * CALL acme_migrate_run(job, max_batches, max_time)
 *
 * Batches with a COMMIT after each, until the job is copied, max_batches
 * batches are done, or the next batch would not fit in max_time.  Holds the
 * job's lock for the whole call.  Applies the job's throttles:
 * max_rows_per_second, batch_time_target (batch size adapted between a
 * tenth and ten times batch_size), max_replication_lag.
 */
Datum
acme_migrate_run(PG_FUNCTION_ARGS)
{
	RunState	rs;
	int64		max_batches;
	int64		max_time_ms;
	int64		job_id;
	AmDriver	d;

	if (fcinfo->context == NULL || !IsA(fcinfo->context, CallContext) ||
		castNode(CallContext, fcinfo->context)->atomic)
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("acme_migrate_run cannot run inside a transaction block"),
				 errdetail("It commits after each batch."),
				 errhint("CALL it outside BEGIN ... COMMIT, or use acme_migrate_batch() for one batch in your transaction.")));
	rs.name = am_text_arg(fcinfo, 0, "job");
	max_batches = PG_ARGISNULL(1) ? -1 : PG_GETARG_INT64(1);
	if (!PG_ARGISNULL(1) && max_batches <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_batches must be greater than zero")));
	max_time_ms = PG_ARGISNULL(2) ? -1 :
		am_interval_ms(PG_GETARG_INTERVAL_P(2), "max_time", false);

	if (SPI_connect_ext(SPI_OPT_NONATOMIC) != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	job_id = catalog_job_get(rs.name, false)->job_id;
	if (!batch_lock_job(job_id, ExclusiveLock, true))
	{
		ereport(NOTICE,
				(errmsg("job \"%s\" is busy in another session", rs.name),
				 errdetail("No batch was copied.")));
		SPI_finish();
		PG_RETURN_VOID();
	}

	driver_init(&d, &run_ops, &rs, job_id, TopMemoryContext);
	rs.job = NULL;
	rs.jobcxt = AllocSetContextCreate(TopMemoryContext, "acme_migrate run job",
									  ALLOCSET_DEFAULT_SIZES);
	d.max_steps = max_batches;
	d.max_time_ms = max_time_ms;
	PG_TRY();
	{
		driver_run(&d);
	}
	PG_FINALLY();
	{
		driver_end(&d);
		MemoryContextDelete(rs.jobcxt);
		batch_unlock_job(job_id, ExclusiveLock, true);
	}
	PG_END_TRY();

	SPI_finish();
	ereport(DEBUG1,
			(errmsg("job \"%s\": %lld batches, %lld rows", rs.name,
					(long long) d.steps, (long long) d.rows_total)));
	PG_RETURN_VOID();
}

/*
 * acme_migrate_drop(job) returns boolean
 *
 * Forget a job and its history; the target keeps its rows.  Its background
 * workers are stopped first (they lose at most the batch they are in).
 * Refused while a session runs the job (acme_migrate_batch in an open
 * transaction, acme_migrate_run): that session belongs to someone who is
 * waiting for it, so we do not interrupt it.  Refused, too, while other
 * jobs depend on it.
 */
Datum
acme_migrate_drop(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	AmJob	   *job = catalog_job_get(name, false);

	/* a drop that will be refused must not stop the workers first */
	catalog_job_check_dependents(job);

	/* refuse at once, rather than queue behind a running batch */
	if (!batch_lock_job(job->job_id, ExclusiveLock, false) &&
		!worker_stop_job(job))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_IN_USE),
				 errmsg("job \"%s\" is running", name),
				 errdetail("A session runs a batch of the job, or acme_migrate_run."),
				 errhint("Wait for the running batch or acme_migrate_run to finish, then drop the job.")));
	job = catalog_job_get(name, true);
	/* nothing of the job stays behind: its triggers go with it */
	if (job->capture_changes)
	{
		(void) capture_remove(job, 'f', false);
		(void) capture_remove(job, 'r', false);
	}
	catalog_job_delete(job);
	PG_RETURN_BOOL(true);
}

/*
 * acme_migrate_alter(job, batch_size, max_rows_per_second,
 *					  batch_time_target, max_replication_lag, lock_timeout,
 *					  max_error_rate [, health_check, on_breach]) returns void
 *
 * NULL leaves a setting as it is; 0 removes a throttle, '' the
 * health_check.  Workers and acme_migrate_run pick the change up at their
 * next batch; a worker that sleeps in its max_rows_per_second throttle
 * within a second.  The 1.0 and 1.1 SQL definitions (7 and 9 arguments)
 * share this code.
 */
Datum
acme_migrate_alter_1_1(PG_FUNCTION_ARGS)
{
	return acme_migrate_alter(fcinfo);
}

Datum
acme_migrate_alter(PG_FUNCTION_ARGS)
{
	AmJob	   *job = catalog_job_get(am_text_arg(fcinfo, 0, "job"), true);
	int32		batch_size = -1;
	double		rate = -1;
	double		error_rate = -1;
	int64		target_ms = -1;
	int64		lag_ms = -1;
	int64		lock_ms = -1;
	char	   *health_check;
	char	   *on_breach;

	if (!PG_ARGISNULL(1))
	{
		batch_size = PG_GETARG_INT32(1);
		if (batch_size <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("batch_size must be greater than zero")));
	}
	if (!PG_ARGISNULL(2))
	{
		rate = PG_GETARG_FLOAT8(2);
		if (!(rate >= 0))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("max_rows_per_second must not be negative")));
	}
	if (!PG_ARGISNULL(3))
		target_ms = am_interval_ms(PG_GETARG_INTERVAL_P(3), "batch_time_target", true);
	if (!PG_ARGISNULL(4))
		lag_ms = am_interval_ms(PG_GETARG_INTERVAL_P(4), "max_replication_lag", true);
	if (!PG_ARGISNULL(5))
		lock_ms = am_lock_timeout_ms(PG_GETARG_INTERVAL_P(5));
	if (!PG_ARGISNULL(6))
	{
		error_rate = PG_GETARG_FLOAT8(6);
		am_check_error_rate(job, error_rate);
	}
	am_stop_rules_alter_args(fcinfo, 7, &health_check, &on_breach);
	catalog_job_alter(job, batch_size, rate, target_ms, lag_ms, lock_ms,
					  error_rate, health_check, on_breach);
	PG_RETURN_VOID();
}

/*
 * acme_migrate_purge(older_than, job)
 *
 * Deletes what the caller's runs and jobs left in the catalog before
 * older_than ago: reconcile runs with their diffs, rejects, errors and
 * batch history, of every job the caller sees or only of the one named.
 * Returns the number of rows deleted.  Jobs and their checkpoints (jobs,
 * ranges) are never touched: a job resumes as it would have.
 */
Datum
acme_migrate_purge(PG_FUNCTION_ARGS)
{
	Interval   *older_than;
	TimestampTz cutoff;
	int64		job_id = 0;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("older_than must not be null")));
	older_than = PG_GETARG_INTERVAL_P(0);
	(void) am_interval_ms(older_than, "older_than", true);
	cutoff = DatumGetTimestampTz(DirectFunctionCall2(timestamptz_mi_interval,
													 TimestampTzGetDatum(GetCurrentTimestamp()),
													 IntervalPGetDatum(older_than)));
	if (!PG_ARGISNULL(1))
		job_id = catalog_job_get(text_to_cstring(PG_GETARG_TEXT_PP(1)),
								 false)->job_id;
	PG_RETURN_INT64(catalog_purge(cutoff, job_id));
}
