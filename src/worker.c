/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  Background workers that run a job's batches, the SQL functions that
 *	  steer them, and the launcher that resumes jobs after a restart.
 *
 * A worker is a dynamic background worker connected to the job's database
 * as the job's owner.  It runs the job's batches with the driver of
 * driver.c, one transaction per batch, as acme_migrate_run does (this file
 * gives it the worker's transactions, retries and naps); with several
 * workers the job is
 * split into key ranges which each batch claims by locking the range's row,
 * so a slow range never holds up the others and a crash releases every
 * claim.  Workers hold the job's advisory lock in share mode (manual
 * batches take it exclusively, so the two never mix) and one of the job's
 * worker slots, so a job never runs with more workers than it asked for.
 *
 * Workers are a server-wide resource (max_worker_processes), so a role's
 * jobs together get at most acme_migrate.max_workers_per_role of them and
 * all jobs at most acme_migrate.max_workers_total.  Between batches a
 * worker may sleep for a long time (max_rows_per_second, a standby's lag,
 * backoff after an error); it re-reads its job about every second while it
 * does, so a pause, cancel or alter takes effect within a second, and
 * acme_migrate_drop stops the job's workers with SIGTERM before it drops.
 *
 * With shared_preload_libraries = 'acme_migrate' a launcher starts with the
 * server, and after every start, crash restart, and naptime, looks in each
 * database for jobs that should be running but have no worker, and starts
 * their workers again.  There is nothing to repair first: claims are row
 * locks and checkpoints commit with their rows.
 *
 *-------------------------------------------------------------------------
 */
#include "acme_migrate.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_database.h"
#include "commands/extension.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lmgr.h"
#include "storage/pmsignal.h"
#include "storage/lock.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/syscache.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/backend_status.h"
#include "utils/varlena.h"

#include <signal.h>

PG_FUNCTION_INFO_V1(acme_migrate_start);
PG_FUNCTION_INFO_V1(acme_migrate_pause);
PG_FUNCTION_INFO_V1(acme_migrate_resume);
PG_FUNCTION_INFO_V1(acme_migrate_cancel);
PG_FUNCTION_INFO_V1(acme_migrate_wait);

PGDLLEXPORT void acme_migrate_worker_main(Datum arg);
PGDLLEXPORT void acme_migrate_launcher_main(Datum arg);
PGDLLEXPORT void acme_migrate_resumer_main(Datum arg);

/* what a worker is told in bgw_extra */
typedef struct WorkerArgs
{
	Oid			dbid;
	Oid			roleid;
	TransactionId starter_xid;	/* wait for it before the first batch */
} WorkerArgs;

/* how often a failing batch is retried before the job fails */
#define WORKER_MAX_RETRIES	5

/* how long acme_migrate_drop waits for the workers it stopped */
#define WORKER_STOP_WAIT_MS	10000

/* One of the job's worker slots, held for the worker's life. */
static int
worker_take_slot(int64 job_id, int nslots)
{
	for (int slot = 1; slot <= nslots; slot++)
	{
		LOCKTAG		tag;

		SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, (uint32) job_id, slot, 3);
		if (LockAcquire(&tag, ExclusiveLock, true, true) != LOCKACQUIRE_NOT_AVAIL)
			return slot;
	}
	return 0;
}

/*
 * Register n workers for the job; returns how many the postmaster took.
 * They start once the calling transaction ends (and do nothing if it
 * aborted).
 */
static int
worker_launch(AmJob *job, int n)
{
	BackgroundWorker bgw;
	WorkerArgs	args;
	int			launched = 0;

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(bgw.bgw_library_name, BGW_MAXLEN, "acme_migrate");
	snprintf(bgw.bgw_function_name, BGW_MAXLEN, "acme_migrate_worker_main");
	snprintf(bgw.bgw_type, BGW_MAXLEN, "acme_migrate worker");
	bgw.bgw_main_arg = Int64GetDatum(job->job_id);
	bgw.bgw_notify_pid = 0;

	memset(&args, 0, sizeof(args));
	args.dbid = MyDatabaseId;
	args.roleid = job->owner;
	args.starter_xid = GetTopTransactionIdIfAny();
	memcpy(bgw.bgw_extra, &args, sizeof(args));

	for (int i = 0; i < n; i++)
	{
		BackgroundWorkerHandle *handle;

		snprintf(bgw.bgw_name, BGW_MAXLEN, "acme_migrate worker %d for job %s",
				 i + 1, job->job_name);
		if (!RegisterDynamicBackgroundWorker(&bgw, &handle))
			break;
		launched++;
	}
	return launched;
}

/*
 * Can the job's owner log in?  Background workers connect as that role,
 * and PostgreSQL 15 refuses a connection to a NOLOGIN role.
 */
static bool
worker_owner_can_login(AmJob *job)
{
	HeapTuple	tup = SearchSysCache1(AUTHOID, ObjectIdGetDatum(job->owner));
	bool		ok;

	if (!HeapTupleIsValid(tup))
		return false;
	ok = ((Form_pg_authid) GETSTRUCT(tup))->rolcanlogin;
	ReleaseSysCache(tup);
	return ok;
}

/* Start n workers, with a clear error when none can start. */
static int
worker_launch_checked(AmJob *job, int n)
{
	int			launched;

	if (!worker_owner_can_login(job))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
				 errmsg("role \"%s\" that owns job \"%s\" cannot log in",
						GetUserNameFromId(job->owner, false), job->job_name),
				 errdetail("Background workers run as the job's owner, and connect as that role."),
				 errhint("Grant LOGIN to the role, or run the job with CALL acme_migrate_run().")));
	launched = worker_launch(job, n);

	if (launched == 0)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("could not start a background worker for job \"%s\"",
						job->job_name),
				 errdetail("All background worker slots are in use."),
				 errhint("Raise max_worker_processes (currently %d); acme_migrate needs one per worker, plus one for its launcher.",
						 max_worker_processes)));
	if (launched < n)
	{
		/* the job runs with, and counts against the limits, what it got */
		catalog_job_set_workers(job, launched, "running");
		ereport(WARNING,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("started only %d of %d workers for job \"%s\"",
						launched, n, job->job_name),
				 errhint("Raise max_worker_processes (currently %d).",
						 max_worker_processes)));
	}
	return launched;
}

static bool
worker_state_is(AmJob *job, const char *s1, const char *s2)
{
	return strcmp(job->state, s1) == 0 || (s2 && strcmp(job->state, s2) == 0);
}

/* acme_migrate.max_workers_total, with -1 resolved */
static int
worker_max_total(void)
{
	int			total = acme_migrate_max_workers_total;

	if (total < 0)
		total = Max(max_worker_processes / 2, 1);
	return total;
}

/*
 * How many of the n workers asked for the job may start, under
 * acme_migrate.max_workers (per job), acme_migrate.max_workers_per_role
 * (the job's owner) and acme_migrate.max_workers_total.  From a SQL
 * function (elevel ERROR): an ERROR when none may, a NOTICE when fewer than
 * n.  From the launcher (elevel LOG): 0 when none may, and a LOG line.
 *
 * The count reads the catalog, so two starts must not count at once: a
 * lock on the database's worker budget, held until commit, puts them one
 * after the other, and the second sees the workers the first reserved.
 */
static int
worker_budget(AmJob *job, int n, int elevel)
{
	LOCKTAG		tag;
	int			role_used;
	int			all_used;
	int			per_role = acme_migrate_max_workers_per_role;
	int			total = worker_max_total();
	int			allowed = Min(n, acme_migrate_max_workers);
	const char *owner = GetUserNameFromId(job->owner, true);

	if (owner == NULL)
		owner = psprintf("%u", job->owner);

	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, AM_LOCK_CLASS, 0, 5);
	(void) LockAcquire(&tag, ExclusiveLock, false, false);
	catalog_workers_in_use(job, &role_used, &all_used);

	if (role_used >= per_role)
	{
		ereport(elevel,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("could not start workers for job \"%s\"", job->job_name),
				 errdetail("Role \"%s\" already runs %d background workers for its jobs, the most acme_migrate.max_workers_per_role allows.",
						   owner, role_used),
				 errhint("Wait for another job of the role to finish, or pause it; a superuser may raise the setting.")));
		return 0;
	}
	if (all_used >= total)
	{
		ereport(elevel,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("could not start workers for job \"%s\"", job->job_name),
				 errdetail("Jobs already run %d background workers, the most acme_migrate.max_workers_total allows (max_worker_processes is %d).",
						   all_used, max_worker_processes),
				 errhint("Wait for another job to finish, or pause it; a superuser may raise the setting.")));
		return 0;
	}
	allowed = Min(allowed, per_role - role_used);
	allowed = Min(allowed, total - all_used);
	if (allowed < n)
		ereport(elevel == ERROR ? NOTICE : elevel,
				(errmsg("starting %d of the %d workers asked for job \"%s\"",
						allowed, n, job->job_name),
				 errdetail("Role \"%s\" runs %d other workers (acme_migrate.max_workers_per_role is %d); all jobs run %d (acme_migrate.max_workers_total is %d); one job may run %d (acme_migrate.max_workers).",
						   owner, role_used, per_role, all_used, total,
						   acme_migrate_max_workers)));
	return allowed;
}

/*
 * acme_migrate_start(job, workers) returns integer
 */
Datum
acme_migrate_start(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	int32		workers = PG_GETARG_INT32(1);
	AmJob	   *job;

	if (workers < 1 || workers > acme_migrate_max_workers)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("workers must be between 1 and %d", acme_migrate_max_workers),
				 errhint("The limit is acme_migrate.max_workers.")));
	job = catalog_job_get(name, true);
	/* a worker connects as the owner: it must exist */
	am_check_owner_exists(job);
	if (job->capture_changes && worker_state_is(job, "copied", NULL))
	{
		/* copied: one worker keeps the target caught up */
		if (!batch_lock_job(job->job_id, ExclusiveLock, false))
		{
			ereport(NOTICE,
					(errmsg("job \"%s\" is already running", name),
					 errdetail("Its workers or another session hold it; no worker was started.")));
			PG_RETURN_INT32(0);
		}
		workers = worker_budget(job, 1, ERROR);
		catalog_job_set_workers(job, workers, "copied");
		PG_RETURN_INT32(worker_launch_checked(job, workers));
	}
	if (am_job_state(job->state)->copy_complete)
	{
		ereport(NOTICE,
				(errmsg("job \"%s\" is already %s", name, job->state)));
		PG_RETURN_INT32(0);
	}
	if (!worker_state_is(job, "created", "running") && !worker_state_is(job, "paused", NULL))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("job \"%s\" is %s", name, job->state),
				 errhint("A failed job is restarted with acme_migrate_resume().")));
	/*
	 * Busy: workers (share) or a session (exclusive) hold the job, or
	 * workers were started moments ago and are still on their way.
	 */
	if (!batch_lock_job(job->job_id, ExclusiveLock, false) ||
		(worker_state_is(job, "running", NULL) && job->workers > 0 &&
		 job->workers_age < 10))
	{
		ereport(NOTICE,
				(errmsg("job \"%s\" is already running", name),
				 errdetail("Its workers or another session hold it; no worker was started.")));
		PG_RETURN_INT32(0);
	}
	workers = worker_budget(job, workers, ERROR);
	if (workers > 1)
		batch_split_ranges(job, mapping_build(job, false), workers * 4);
	catalog_job_set_workers(job, workers, "running");
	PG_RETURN_INT32(worker_launch_checked(job, workers));
}

/*
 * acme_migrate_pause(job) returns boolean
 */
Datum
acme_migrate_pause(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	AmJob	   *job = catalog_job_get(name, true);

	if (worker_state_is(job, "paused", NULL))
	{
		ereport(NOTICE, (errmsg("job \"%s\" is already paused", name)));
		PG_RETURN_BOOL(false);
	}
	if (!worker_state_is(job, "created", "running"))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot pause job \"%s\", which is %s", name, job->state)));
	catalog_job_set_state(job, "paused", NULL);
	PG_RETURN_BOOL(true);
}

/*
 * acme_migrate_resume(job) returns integer
 */
Datum
acme_migrate_resume(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	AmJob	   *job = catalog_job_get(name, true);

	if (!worker_state_is(job, "paused", "failed"))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot resume job \"%s\", which is %s", name, job->state),
				 errdetail("Only paused and failed jobs can be resumed.")));
	if (job->workers == 0)
	{
		catalog_job_set_workers(job, 0, "running");
		PG_RETURN_INT32(0);
	}

	/*
	 * A job split in ranges may run with fewer workers than it was started
	 * with: the ranges are shared by whoever is there.
	 */
	catalog_job_set_workers(job, worker_budget(job, job->workers, ERROR),
							"running");

	/*
	 * Workers that saw the pause may still be on their way out: launch a
	 * full set anyway; the job's worker slots keep it to its number.
	 */
	PG_RETURN_INT32(worker_launch_checked(job, job->workers));
}

/*
 * acme_migrate_cancel(job) returns boolean
 */
Datum
acme_migrate_cancel(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	AmJob	   *job = catalog_job_get(name, true);

	if (worker_state_is(job, "cancelled", NULL))
		PG_RETURN_BOOL(false);
	if (!worker_state_is(job, "created", "running") &&
		!worker_state_is(job, "paused", "failed") &&
		!(job->capture_changes && worker_state_is(job, "copied", NULL)))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot cancel job \"%s\", which is %s", name, job->state)));
	catalog_job_set_state(job, "cancelled", NULL);
	/* a cancelled job captures nothing more, and keeps no trigger or log */
	if (job->capture_changes)
	{
		(void) capture_remove(job, 'f', false);
		catalog_capture_clear(job->job_id, 'f');
	}
	PG_RETURN_BOOL(true);
}

/*
 * acme_migrate_wait(job, timeout) returns text
 *
 * Polls the job (each poll sees what has committed since), printing a
 * progress NOTICE every few seconds, until it stops running, nobody is
 * running it any more, or the timeout passes.
 */
Datum
acme_migrate_wait(PG_FUNCTION_ARGS)
{
	char	   *name;
	int64		timeout_ms = -1;
	TimestampTz start = GetCurrentTimestamp();
	TimestampTz last_notice = 0;
	int64		last_rows = 0;
	MemoryContext cxt;
	MemoryContext old;
	char	   *state;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("job must not be null")));
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	if (!PG_ARGISNULL(1))
	{
		timeout_ms = am_interval_ms(PG_GETARG_INTERVAL_P(1), "timeout", true);
	}
	if (IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("acme_migrate_wait cannot see progress in a %s transaction",
						XactIsoLevel == XACT_SERIALIZABLE ? "serializable" : "repeatable read"),
				 errhint("Call it in a READ COMMITTED transaction.")));

	cxt = AllocSetContextCreate(CurrentMemoryContext, "acme_migrate wait",
								ALLOCSET_SMALL_SIZES);
	for (;;)
	{
		AmJob	   *job;
		TimestampTz now = GetCurrentTimestamp();
		bool		idle;

		CHECK_FOR_INTERRUPTS();
		MemoryContextReset(cxt);
		old = MemoryContextSwitchTo(cxt);
		job = catalog_job_get(name, false);
		MemoryContextSwitchTo(old);
		state = pstrdup(job->state);
		if (!worker_state_is(job, "created", "running"))
			break;

		/*
		 * Nobody holds the job, and no worker was started moments ago: no
		 * worker is coming, stop waiting.
		 */
		idle = batch_lock_job(job->job_id, ExclusiveLock, false);
		if (idle)
			batch_unlock_job(job->job_id, ExclusiveLock, false);
		if (idle && job->workers > 0 && job->workers_age < 10)
			idle = false;

		if (idle || last_notice == 0 ||
			TimestampDifferenceExceeds(last_notice, now, 2000))
		{
			double		total = Max(job->rows_estimate, (double) job->rows_read);
			double		secs = Max(TimestampDifferenceMilliseconds(last_notice ? last_notice : start,
																   now), 1) / 1000.0;
			double		rate = last_notice ? (job->rows_read - last_rows) / secs : 0;
			char	   *eta = rate > 0 && total > job->rows_read ?
				psprintf(", ETA %.0f s", (total - job->rows_read) / rate) : "";

			ereport(NOTICE,
					(errmsg("job \"%s\": %s, %lld rows done%s, %.0f rows/s%s",
							name, job->state, (long long) job->rows_read,
							total > 0 ? psprintf(" of about %.0f (%.1f%%)", total,
												 100.0 * job->rows_read / total) : "",
							rate, eta),
					 job->workers > 0 && !idle ?
					 errdetail("%d worker(s).", job->workers) : 0));
			last_notice = now;
			last_rows = job->rows_read;
		}
		if (idle)
		{
			ereport(NOTICE,
					(errmsg("no worker or session is running job \"%s\"", name),
					 errhint("Start it with acme_migrate_start() or acme_migrate_run().")));
			break;
		}
		if (timeout_ms >= 0 && TimestampDifferenceExceeds(start, now, timeout_ms))
			break;
		am_sleep(Min(500, timeout_ms >= 0 ? Max(timeout_ms - TimestampDifferenceMilliseconds(start, now), 1) : 500));
	}
	PG_RETURN_TEXT_P(cstring_to_text(state));
}


/* For a worker a cancelled query is worth another try, too. */
static bool
worker_transient(int sqlerrcode)
{
	return batch_error_is_transient(sqlerrcode) ||
		sqlerrcode == ERRCODE_QUERY_CANCELED;
}

/*
 * Run fn(arg) in a transaction of its own, under a snapshot.  An error is
 * reported to the log and rolled back: the worker goes on (the next batch
 * meets it again, and records it).  Leaves us in TopMemoryContext.
 */
static void
worker_xact(void (*fn) (void *arg), void *arg)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PG_TRY();
	{
		PushActiveSnapshot(GetTransactionSnapshot());
		fn(arg);
		PopActiveSnapshot();
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		EmitErrorReport();
		FlushErrorState();
		AbortCurrentTransaction();
	}
	PG_END_TRY();
}

typedef struct WorkerError
{
	int64		job_id;
	ErrorData  *edata;
	bool		fail;
} WorkerError;

static void
worker_record_error_xact(void *arg)
{
	WorkerError *we = arg;
	AmJob	   *job = catalog_job_get_by_id(we->job_id);

	if (job != NULL)
	{
		catalog_error_insert(job, we->edata,
							 worker_transient(we->edata->sqlerrcode));
		if (we->fail && worker_state_is(job, "running", "created"))
			catalog_job_set_state(job, "failed",
								  psprintf("worker error after %d attempts: %s",
										   WORKER_MAX_RETRIES, we->edata->message));
	}
}

/*
 * Record a batch's error in its own transaction; fail the job when the
 * error is not transient and kept coming back.
 */
static void
worker_record_error(int64 job_id, ErrorData *edata, bool fail)
{
	WorkerError we = {job_id, edata, fail};

	worker_xact(worker_record_error_xact, &we);
}

/* what worker_nap reads of the job between two naps */
typedef struct WorkerNap
{
	int64		job_id;
	int64		rows;
	TimestampTz bstart;
	TimestampTz until;
	int32		version;
	bool		running;
} WorkerNap;

static void
worker_nap_check(void *arg)
{
	WorkerNap  *wn = arg;
	AmJob	   *job = catalog_job_get_by_id(wn->job_id);

	/* "copied" with capture: the catch-up worker naps between rounds */
	if (job == NULL ||
		!(worker_state_is(job, "running", NULL) ||
		  (job->capture_changes && worker_state_is(job, "copied", NULL))))
		wn->running = false;
	else if (wn->rows > 0 && job->definition_version != wn->version)
	{
		int64		want = 0;

		if (job->max_rows_per_second > 0)
			want = (int64) (1000.0 * wn->rows * Max(job->workers, 1) /
							job->max_rows_per_second);
		wn->until = TimestampTzPlusMilliseconds(wn->bstart, want);
		wn->version = job->definition_version;
	}
}

/*
 * Sleep ms milliseconds between batches, re-reading the job about every
 * second: returns false as soon as the job is no longer running (paused,
 * cancelled, failed or dropped), true when the time is up.  After a batch
 * throttled by max_rows_per_second, rows is what that batch (started at
 * bstart, under definition version) copied: when acme_migrate_alter changes
 * the job meanwhile, the end of the sleep is worked out again from the new
 * rate, so that lifting the throttle ends it at once.
 */
static bool
worker_nap(int64 job_id, int64 ms, int64 rows, TimestampTz bstart,
		   int32 version_then)
{
	WorkerNap	wn;
	MemoryContext cxt = CurrentMemoryContext;

	wn.job_id = job_id;
	wn.rows = rows;
	wn.bstart = bstart;
	wn.until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), ms);
	wn.version = version_then;
	for (;;)
	{
		long		left = TimestampDifferenceMilliseconds(GetCurrentTimestamp(),
														   wn.until);

		if (left <= 0)
			return true;
		am_sleep(Min(left, 1000));
		if (TimestampDifferenceMilliseconds(GetCurrentTimestamp(), wn.until) <= 0)
			return true;
		wn.running = true;
		worker_xact(worker_nap_check, &wn);
		/* commit and abort leave us in TopMemoryContext */
		MemoryContextSwitchTo(cxt);
		if (!wn.running)
			return false;
	}
}

/*
 * Roll back a job a stop rule paused (on_breach => 'rollback'), in a
 * transaction of its own, once every other worker of the job has stopped:
 * none of their batches can land after the target is put back.
 */
static void
worker_breach_rollback(int64 job_id)
{
	AmJob	   *job;

	am_rollback_pending = 0;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	job = catalog_job_get_by_id(job_id);
	if (job != NULL && strcmp(job->state, "paused") == 0 &&
		worker_stop_job(job))
	{
		int64		deleted;
		int64		restored;
		bool		equal;

		capture_rollback_before_cutover(job, NULL,
										"rolled back on breach of a stop rule (see acme_migrate.errors)",
										&deleted, &restored, &equal);
		ereport(LOG,
				(errmsg("acme_migrate: job \"%s\" rolled back on breach: %lld rows deleted, %lld restored, target hash %s",
						job->job_name, (long long) deleted, (long long) restored,
						equal ? "equal" : "different")));
	}
	PopActiveSnapshot();
	CommitTransactionCommand();
}

/* ---- the batches of one job: a driver (driver.c) in a worker ---- */

typedef struct WorkerState
{
	int			slot;
	bool		locked;			/* holds the job's lock in share mode */
	int			failures;		/* errors in a row that are not transient */
	char		jobname[NAMEDATALEN];
} WorkerState;

static void
worker_poll(AmDriver *d)
{
	if (!PostmasterIsAlive())
		proc_exit(1);
	if (ConfigReloadPending)
	{
		ConfigReloadPending = false;
		ProcessConfigFile(PGC_SIGHUP);
	}
}

static void
worker_begin(AmDriver *d)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
}

static AmJob *
worker_load(AmDriver *d)
{
	WorkerState *ws = d->arg;
	AmJob	   *job = catalog_job_get_by_id(d->job_id);

	if (job != NULL)
		strlcpy(ws->jobname, job->job_name, sizeof(ws->jobname));
	return job;
}

/* A session runs a batch by hand (exclusive lock): wait for it. */
static bool
worker_lock(AmDriver *d, AmJob *job)
{
	WorkerState *ws = d->arg;

	if (!ws->locked)
		ws->locked = batch_lock_job(d->job_id, ShareLock, true);
	return ws->locked;
}

static void
worker_commit(AmDriver *d, bool last)
{
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(false);
}

static void
worker_abort(AmDriver *d)
{
	AbortCurrentTransaction();
	pgstat_report_stat(false);
}

static void
worker_report(AmDriver *d, bool busy, const char *what)
{
	WorkerState *ws = d->arg;

	pgstat_report_activity(busy ? STATE_RUNNING : STATE_IDLE,
						   psprintf("acme_migrate job %s: worker %d%s%s",
									ws->jobname, ws->slot,
									busy ? (what ? " " : "") : " waiting for ",
									what ? what : ""));
}

/*
 * A failed batch: record the error; retry with a backoff unless it is not
 * transient and kept coming back, then fail the job.
 */
static bool
worker_failed(AmDriver *d, ErrorData *edata)
{
	WorkerState *ws = d->arg;
	bool		transient = worker_transient(edata->sqlerrcode);
	bool		fail = !transient && ++ws->failures >= WORKER_MAX_RETRIES;

	ereport(LOG,
			(errmsg("acme_migrate worker for job %lld: %s%s",
					(long long) d->job_id, edata->message,
					fail ? "; giving up" : "; will retry")));
	worker_record_error(d->job_id, edata, fail);
	if (fail)
		return false;
	/* back off: 1 s, 2 s, 4 s ... at most 30 s */
	worker_report(d, false, "a retry after an error");
	return worker_nap(d->job_id, Min(30000, 1000 << Min(ws->failures, 5)),
					  0, 0, 0);
}

/* After a turn: on_breach => 'rollback' stops the others, then rolls back. */
static bool
worker_after(AmDriver *d)
{
	WorkerState *ws = d->arg;

	ws->failures = 0;
	if (am_rollback_pending != d->job_id)
		return true;
	if (ws->locked)
		batch_unlock_job(d->job_id, ShareLock, true);
	ws->locked = false;
	worker_breach_rollback(d->job_id);
	return false;
}

static bool
worker_nap_between(AmDriver *d, int64 ms, bool throttled)
{
	WorkerState *ws = d->arg;

	throttled = throttled && ws->locked;
	if (throttled)
		pgstat_report_activity(STATE_IDLE,
							   psprintf("acme_migrate job %s: worker %d sleeping %lld ms (max_rows_per_second)",
										ws->jobname, ws->slot, (long long) ms));
	return worker_nap(d->job_id, ms, throttled ? d->rows : 0, d->step_start,
					  d->version);
}

static const AmDriverOps worker_ops = {
	.poll = worker_poll,
	.begin = worker_begin,
	.load = worker_load,
	.lock = worker_lock,
	.commit = worker_commit,
	.abort = worker_abort,
	.failed = worker_failed,
	.after = worker_after,
	.nap = worker_nap_between,
	.report = worker_report,
};

/* The batches of one job, until it is done, paused, cancelled or failed. */
static void
worker_loop(int64 job_id, int slot)
{
	WorkerState ws;
	AmDriver	d;

	memset(&ws, 0, sizeof(ws));
	ws.slot = slot;
	snprintf(ws.jobname, sizeof(ws.jobname), "%lld", (long long) job_id);
	driver_init(&d, &worker_ops, &ws, job_id, TopMemoryContext);
	d.workers_rules = true;
	d.catch_up = slot == 1;
	driver_run(&d);
	driver_end(&d);
	pgstat_report_activity(STATE_IDLE, NULL);
}

/* SIGTERM to the live workers of the job; returns how many were sent. */
static int
worker_signal_job(int64 job_id)
{
	char		appname[NAMEDATALEN];
	int			nbackends;
	int			n = 0;

	snprintf(appname, sizeof(appname), "acme_migrate job %lld",
			 (long long) job_id);
	pgstat_clear_snapshot();	/* see who is there now */
	nbackends = pgstat_fetch_stat_numbackends();
	for (int i = 1; i <= nbackends; i++)
	{
		LocalPgBackendStatus *local = pgstat_fetch_stat_local_beentry(i);
		PgBackendStatus *be;
		const char *type;

		if (local == NULL)
			continue;
		be = &local->backendStatus;
		if (be->st_backendType != B_BG_WORKER ||
			be->st_databaseid != MyDatabaseId ||
			strcmp(be->st_appname, appname) != 0)
			continue;
		/* the name is only ever set by our workers, but check the type */
		type = GetBackgroundWorkerTypeByPid(be->st_procpid);
		if (type == NULL || strcmp(type, "acme_migrate worker") != 0)
			continue;
		/* as pg_terminate_backend: the process group, where there is one */
#ifdef HAVE_SETSID
		if (kill(-be->st_procpid, SIGTERM) == 0)
#else
		if (kill(be->st_procpid, SIGTERM) == 0)
#endif
			n++;
	}
	return n;
}

/*
 * Stop the background workers of a job about to be dropped, and take the
 * job's lock (until the end of the transaction) once they are gone.  The
 * caller may manage the job.  A worker told to stop (SIGTERM) ends its
 * batch in flight with a rollback, which loses nothing: checkpoints commit
 * with their rows.  Workers still starting are told again every second;
 * they would find the job gone anyway.  Returns false, having stopped
 * nobody, when a session holds the job (acme_migrate_batch or
 * acme_migrate_run): that is someone else's statement, which we leave to
 * finish.  ERROR when the workers do not go within WORKER_STOP_WAIT_MS.
 */
bool
worker_stop_job(AmJob *job)
{
	TimestampTz start = GetCurrentTimestamp();
	TimestampTz last_signal = 0;
	bool		told = false;

	for (;;)
	{
		TimestampTz now = GetCurrentTimestamp();

		/* workers hold the job in share mode, a session exclusively */
		if (!batch_lock_job(job->job_id, ShareLock, false))
			return false;
		batch_unlock_job(job->job_id, ShareLock, false);

		if (last_signal == 0 || TimestampDifferenceExceeds(last_signal, now, 1000))
		{
			int			n = worker_signal_job(job->job_id);

			if (n > 0 && !told)
				ereport(NOTICE,
						(errmsg("stopping %d worker(s) of job \"%s\"", n,
								job->job_name)));
			told = told || n > 0;
			last_signal = now;
		}
		if (batch_lock_job(job->job_id, ExclusiveLock, false))
			return true;
		if (TimestampDifferenceExceeds(start, now, WORKER_STOP_WAIT_MS))
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_IN_USE),
					 errmsg("could not stop the workers of job \"%s\"",
							job->job_name),
					 errdetail("They still held the job %d seconds after they were told to stop.",
							   WORKER_STOP_WAIT_MS / 1000),
					 errhint("Pause the job, wait for its workers to stop, then drop it.")));
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 100, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

/*
 * Entry point of a worker: connect as the job's owner, wait for the
 * transaction that started us, take a slot, run the batches.
 */
void
acme_migrate_worker_main(Datum arg)
{
	int64		job_id = DatumGetInt64(arg);
	WorkerArgs	args;
	int			slot;
	int			nslots;
	AmJob	   *job;

	memcpy(&args, MyBgworkerEntry->bgw_extra, sizeof(args));
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(args.dbid, args.roleid, 0);
	SetConfigOption("application_name", psprintf("acme_migrate job %lld", (long long) job_id),
					PGC_USERSET, PGC_S_SESSION);

	StartTransactionCommand();
	if (TransactionIdIsValid(args.starter_xid))
		XactLockTableWait(args.starter_xid, NULL, NULL, XLTW_None);
	PushActiveSnapshot(GetTransactionSnapshot());
	/* a start that rolled back leaves the job as it was: nothing to do */
	job = catalog_job_get_by_id(job_id);
	/* a copied job with capture gets a worker to catch it up */
	nslots = job && (worker_state_is(job, "running", NULL) ||
					 (job->capture_changes && worker_state_is(job, "copied", NULL))) ?
		job->workers : 0;
	PopActiveSnapshot();
	CommitTransactionCommand();

	/* a worker that is stopping may hold a slot a little longer */
	slot = 0;
	for (int attempt = 0; nslots > 0 && attempt < 5; attempt++)
	{
		if ((slot = worker_take_slot(job_id, nslots)) > 0)
			break;
		am_sleep(1000);
	}
	if (slot == 0)
		proc_exit(0);			/* the job is gone, or has all its workers */
	worker_loop(job_id, slot);
	proc_exit(0);
}

/*
 * Entry point of the per-database resumer started by the launcher: start
 * the workers of every job that should be running and has none.
 */
void
acme_migrate_resumer_main(Datum arg)
{
	Oid			dbid = DatumGetObjectId(arg);
	int			rc;

	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(dbid, InvalidOid, 0);

	/*
	 * It runs as the bootstrap superuser, with the database's settings,
	 * which the database's owner may set: nothing it runs may resolve a
	 * name through a search_path of theirs.
	 */
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET,
					PGC_S_OVERRIDE);

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (OidIsValid(get_extension_oid("acme_migrate", true)))
	{
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		rc = SPI_execute("SELECT job_id FROM acme_migrate.jobs "
						 "WHERE (state OPERATOR(pg_catalog.=) 'running' "
						 "OR (state OPERATOR(pg_catalog.=) 'copied' AND capture_changes)) "
						 "AND workers OPERATOR(pg_catalog.>) 0 ORDER BY job_id",
						 true, 0);
		if (rc == SPI_OK_SELECT)
		{
			uint64		n = SPI_processed;
			int64	   *ids = palloc(sizeof(int64) * Max(n, 1));
			bool		isnull;

			for (uint64 i = 0; i < n; i++)
				ids[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i],
													 SPI_tuptable->tupdesc, 1, &isnull));
			for (uint64 i = 0; i < n; i++)
			{
				AmJob	   *job;
				int			nworkers;

				if (!batch_lock_job(ids[i], ExclusiveLock, false))
					continue;	/* it has workers */
				batch_unlock_job(ids[i], ExclusiveLock, false);
				job = catalog_job_get_by_id(ids[i]);
				if (job == NULL)
					continue;
				if (!worker_owner_can_login(job))
				{
					ereport(LOG,
							(errmsg("acme_migrate: cannot resume job \"%s\": its owner cannot log in",
									job->job_name)));
					continue;
				}
				nworkers = worker_budget(job, job->workers, LOG);
				if (nworkers == 0)
					continue;
				ereport(LOG,
						(errmsg("acme_migrate: resuming job \"%s\" with %d worker(s)",
								job->job_name, nworkers)));
				(void) worker_launch(job, nworkers);
			}
		}
		SPI_finish();
	}
	PopActiveSnapshot();
	CommitTransactionCommand();
	proc_exit(0);
}

/* Oids of the databases the launcher looks in. */
static List *
worker_databases(void)
{
	List	   *result = NIL;
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;
	MemoryContext resultcxt = CurrentMemoryContext;
	List	   *wanted = NIL;

	if (acme_migrate_databases && acme_migrate_databases[0] != '\0')
	{
		char	   *copy = pstrdup(acme_migrate_databases);

		if (!SplitIdentifierString(copy, ',', &wanted))
			ereport(LOG,
					(errmsg("acme_migrate.databases is not a list of names: \"%s\"",
							acme_migrate_databases)));
	}

	StartTransactionCommand();
	(void) GetTransactionSnapshot();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while (HeapTupleIsValid(tup = heap_getnext(scan, ForwardScanDirection)))
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tup);
		ListCell   *lc;
		bool		ok = wanted == NIL;

		if (!db->datallowconn || db->datistemplate)
			continue;
		foreach(lc, wanted)
			if (strcmp(lfirst(lc), NameStr(db->datname)) == 0)
				ok = true;
		if (ok)
		{
			MemoryContext old = MemoryContextSwitchTo(resultcxt);

			result = lappend_oid(result, db->oid);
			MemoryContextSwitchTo(old);
		}
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();
	return result;
}

/*
 * Entry point of the launcher (shared_preload_libraries only): right away,
 * then every naptime, start a resumer in each database, one at a time.
 */
void
acme_migrate_launcher_main(Datum arg)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	pgstat_report_appname("acme_migrate launcher");

	for (;;)
	{
		List	   *dbs;
		ListCell   *lc;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		dbs = worker_databases();
		foreach(lc, dbs)
		{
			BackgroundWorker bgw;
			BackgroundWorkerHandle *handle;
			pid_t		pid;

			memset(&bgw, 0, sizeof(bgw));
			bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
			bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
			bgw.bgw_restart_time = BGW_NEVER_RESTART;
			snprintf(bgw.bgw_library_name, BGW_MAXLEN, "acme_migrate");
			snprintf(bgw.bgw_function_name, BGW_MAXLEN, "acme_migrate_resumer_main");
			snprintf(bgw.bgw_type, BGW_MAXLEN, "acme_migrate resumer");
			snprintf(bgw.bgw_name, BGW_MAXLEN, "acme_migrate resumer for database %u",
					 lfirst_oid(lc));
			bgw.bgw_main_arg = ObjectIdGetDatum(lfirst_oid(lc));
			bgw.bgw_notify_pid = MyProcPid;
			if (!RegisterDynamicBackgroundWorker(&bgw, &handle))
			{
				ereport(LOG,
						(errmsg("acme_migrate launcher could not start a resumer"),
						 errhint("Raise max_worker_processes (currently %d).",
								 max_worker_processes)));
				break;
			}
			if (WaitForBackgroundWorkerStartup(handle, &pid) == BGWH_STARTED)
				(void) WaitForBackgroundWorkerShutdown(handle);
		}
		list_free(dbs);
		am_sleep((int64) acme_migrate_naptime * 1000);
	}
}

/* Register the launcher; called from _PG_init while preloading. */
void
worker_register_launcher(void)
{
	BackgroundWorker bgw;

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw.bgw_restart_time = 1;
	snprintf(bgw.bgw_library_name, BGW_MAXLEN, "acme_migrate");
	snprintf(bgw.bgw_function_name, BGW_MAXLEN, "acme_migrate_launcher_main");
	snprintf(bgw.bgw_name, BGW_MAXLEN, "acme_migrate launcher");
	snprintf(bgw.bgw_type, BGW_MAXLEN, "acme_migrate launcher");
	RegisterBackgroundWorker(&bgw);
}
