/*-------------------------------------------------------------------------
 *
 * driver.c
 *	  The loop that turns a job and a budget into batches, shared by
 *	  acme_migrate_run (a session) and the background workers.
 *
 * A driver runs turns.  A turn is one transaction: load the job, see
 * whether it may go on (its state, its lock, the jobs it depends on, the
 * standbys' lag), build the mapping again when the job's definition
 * changed, run one batch (or one round of catch-up for a copied job with
 * capture) in a subtransaction, and commit.  Between turns it adapts the
 * batch size to batch_time_target and sleeps as max_rows_per_second asks;
 * before any sleep it flushes the WAL, so what a batch committed
 * asynchronously is durable before the driver can be cancelled or killed
 * while it waits.
 *
 * What differs between callers, how a transaction starts and ends and what
 * an error or a wait does, is in the AmDriverOps they give (see
 * acme_migrate.h).
 *
 *-------------------------------------------------------------------------
 */
#include "acme_migrate.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "miscadmin.h"
#include "utils/backend_status.h"
#include "utils/guc.h"
#include "utils/memutils.h"

/* what a turn came to */
typedef enum DriverOutcome
{
	DRIVER_NEXT,				/* a batch done: go on (after the rate pause) */
	DRIVER_WAIT,				/* the job must wait: try again in a second */
	DRIVER_STOP,				/* nothing more to do here */
	DRIVER_FAILED				/* the batch failed: see the error */
} DriverOutcome;

static void driver_flush_wal(void);

/* how long a driver waits before it looks again at a job that waits */
#define DRIVER_WAIT_MS	1000
/* how long a catch-up driver naps when it found nothing to apply */
#define DRIVER_IDLE_MS	200

/*
 * Set up a driver for a job: ops and arg are the caller's, the rest is
 * filled in here.  Memory lives under parent until driver_end.
 */
void
driver_init(AmDriver *d, const AmDriverOps *ops, void *arg, int64 job_id,
			MemoryContext parent)
{
	memset(d, 0, sizeof(*d));
	d->ops = ops;
	d->arg = arg;
	d->job_id = job_id;
	d->max_steps = -1;
	d->max_time_ms = -1;
	d->started = GetCurrentTimestamp();
	d->stepcxt = AllocSetContextCreate(parent, "acme_migrate driver step",
									   ALLOCSET_DEFAULT_SIZES);
	d->mapcxt = AllocSetContextCreate(parent, "acme_migrate driver mapping",
									  ALLOCSET_DEFAULT_SIZES);
}

/* Release the plans and memory of a driver. */
void
driver_end(AmDriver *d)
{
	if (d->map != NULL)
		batch_free_plans(d->map);
	d->map = NULL;
	MemoryContextDelete(d->stepcxt);
	MemoryContextDelete(d->mapcxt);
}

/*
 * The job's lock_timeout, if it has one, for the rest of the transaction or
 * until AtEOXact_GUC(true, <the nest level returned>).
 */
int
am_job_lock_timeout(AmJob *job)
{
	int			nest = NewGUCNestLevel();

	if (job->lock_timeout_ms >= 0)
		(void) set_config_option("lock_timeout",
								 psprintf("%lld", (long long) job->lock_timeout_ms),
								 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
								 true, 0, false);
	return nest;
}

/*
 * The job's mapping, built again when the job's definition changed
 * (acme_migrate_alter); the batch size starts again from the job's.
 * Building it locks the tables (planning the batch's INSERT takes the
 * target's RowExclusiveLock): under the job's lock_timeout, like a batch.
 */
static AmMapping *
driver_mapping(AmDriver *d, AmJob *job)
{
	MemoryContext oldcxt;
	int			nest;

	if (d->map != NULL && d->map->definition_version == job->definition_version)
		return d->map;
	if (d->map != NULL)
		batch_free_plans(d->map);
	d->map = NULL;
	MemoryContextReset(d->mapcxt);
	oldcxt = MemoryContextSwitchTo(d->mapcxt);
	nest = am_job_lock_timeout(job);
	d->map = mapping_build(job, false);
	AtEOXact_GUC(true, nest);
	MemoryContextSwitchTo(oldcxt);
	d->batch_size = job->batch_size;
	return d->map;
}

/*
 * fn(arg) in a subtransaction.  Returns NULL when it succeeded, else its
 * error, in the caller's memory context, the subtransaction rolled back:
 * nothing it did remains.  The one subtransaction wrapper of the module
 * (batch.c isolates failing rows with it, too).
 */
ErrorData *
am_subxact(void (*fn) (void *arg), void *arg)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	ErrorData  *volatile edata = NULL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		fn(arg);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_END_TRY();
	return edata;
}

/*
 * The ops' commit; without one, the turn's transaction is the caller's.
 * With the last one, the Citus connections kept from range to range are
 * let go (locality.c).
 */
static void
driver_commit(AmDriver *d, bool last)
{
	if (last)
		locality_release_connections();
	if (d->ops->commit != NULL)
		d->ops->commit(d, last);
}

/* The ops' report; without one, a wait is told to the client. */
static void
driver_report(AmDriver *d, bool busy, const char *what)
{
	if (d->ops->report != NULL)
		d->ops->report(d, busy, what);
	else if (!busy)
		ereport(NOTICE,
				(errmsg("job \"%s\" waits for %s", d->job->job_name, what)));
}

/* The ops' nap; without one, a plain sleep.  False: stop. */
static bool
driver_nap(AmDriver *d, int64 ms, bool throttled)
{
	if (d->ops->nap != NULL)
		return d->ops->nap(d, ms, throttled);
	am_sleep(ms);
	return true;
}

/* a step's arguments and results, through am_subxact */
typedef struct DriverStep
{
	AmDriver   *d;
	AmJob	   *job;
	AmMapping  *map;
	int32		batch_size;
	bool		more;
	int64		rows;
} DriverStep;

static void
driver_step(void *arg)
{
	DriverStep *st = arg;

	/*
	 * Every lock of the step (the mapping's, the tables' shape check, the
	 * batch's) is asked under the job's lock_timeout.
	 */
	int			nest = am_job_lock_timeout(st->job);

	/* a mapping that cannot be built fails the batch, not the driver */
	st->map = driver_mapping(st->d, st->job);
	st->batch_size = st->d->batch_size;
	if (st->d->catch_up_only ||
		(st->job->capture_changes && strcmp(st->job->state, "copied") == 0))
	{
		st->rows = capture_catch_up_step(st->job, st->map);
		st->more = st->rows > 0;
	}
	else
		st->rows = batch_step(st->job, st->map, st->batch_size, &st->more);
	AtEOXact_GUC(true, nest);
}

/*
 * Milliseconds to sleep after a batch of rows that took took_ms, so that
 * the job's processes together copy at most max_rows_per_second (shared
 * evenly by its workers; a session counts as one).
 */
static int64
driver_rate_pause_ms(AmJob *job, int64 rows, int64 took_ms, bool shared)
{
	int64		want;

	if (job->max_rows_per_second <= 0 || rows <= 0)
		return 0;
	want = (int64) (1000.0 * rows * (shared ? Max(job->workers, 1) : 1) /
					job->max_rows_per_second);
	return Max(want - took_ms, 0);
}

/*
 * Why the job must wait before its next batch, or NULL.  *stop is set when
 * it must not run here at all (gone, or in a state this driver does not
 * run).
 */
static const char *
driver_hold(AmDriver *d, AmJob *job, bool *stop)
{
	char	   *parent;

	*stop = false;
	if (d->workers_rules)
	{
		/* "copied" with capture: the first worker keeps it caught up */
		if (!(strcmp(job->state, "running") == 0 ||
			  (job->capture_changes && strcmp(job->state, "copied") == 0 &&
			   d->catch_up)))
		{
			*stop = true;
			return NULL;
		}
		if (d->ops->lock != NULL && !d->ops->lock(d, job))
			return "a session that runs the job by hand";
		if (batch_waiting_for(job, &parent))
			return parent ? psprintf("job %s", parent) :
				"a job it depends on";
	}
	if (job->max_replication_lag_ms > 0)
	{
		int64		lag = am_replication_lag_ms();

		if (lag > job->max_replication_lag_ms)
			return psprintf("the standbys: replication lag %lld ms above %lld ms",
							(long long) lag,
							(long long) job->max_replication_lag_ms);
	}
	return NULL;
}

/* Has the call used up its budget (max_batches, max_time)? */
static bool
driver_budget_spent(AmDriver *d)
{
	if (d->max_steps > 0 && d->steps >= d->max_steps)
		return true;
	/* the next batch would not fit */
	return d->max_time_ms > 0 &&
		TimestampDifferenceMilliseconds(d->started, GetCurrentTimestamp()) +
		d->took_ms > d->max_time_ms;
}

/*
 * One turn in the transaction the caller began: load the job, see whether
 * it may go on, run a batch, commit.
 */
static DriverOutcome
driver_turn(AmDriver *d, ErrorData **edata)
{
	AmJob	   *job = d->ops->load(d);
	DriverStep	st;
	const char *wait;
	bool		stop = false;
	bool		more;
	bool		last;
	bool		catching_up;

	d->job = job;
	d->rows = 0;
	wait = job ? driver_hold(d, job, &stop) : NULL;
	if (job == NULL || stop || wait != NULL)
	{
		if (wait != NULL)
			driver_report(d, false, wait);
		driver_commit(d, true);
		return wait != NULL ? DRIVER_WAIT : DRIVER_STOP;
	}
	catching_up = d->catch_up_only ||
		(job->capture_changes && strcmp(job->state, "copied") == 0);
	driver_report(d, true, catching_up ? "catching up" : NULL);
	memset(&st, 0, sizeof(st));
	st.d = d;
	st.job = job;
	*edata = am_subxact(driver_step, &st);
	more = *edata == NULL && st.more;
	d->rows = *edata == NULL ? st.rows : 0;
	d->steps++;
	d->rows_total += d->rows;
	d->took_ms = Max(TimestampDifferenceMilliseconds(d->step_start,
													 GetCurrentTimestamp()), 1);
	if (*edata != NULL)
	{
		driver_commit(d, true);
		return DRIVER_FAILED;
	}

	/* with capture a worker's copy is not the end: it catches up next */
	last = (!more && !(d->workers_rules && job->capture_changes)) ||
		driver_budget_spent(d);
	d->batch_size = batch_adapt_size(job, d->batch_size, d->took_ms);
	d->pause_ms = driver_rate_pause_ms(job, d->rows, d->took_ms,
									   d->workers_rules);
	if (catching_up && d->rows == 0)
		d->pause_ms = DRIVER_IDLE_MS;
	d->version = job->definition_version;
	/*
	 * all but the last batch may skip the wait for their WAL flush; not the
	 * caller's transaction, which is not the driver's to weaken
	 */
	if (!last && !d->caller_xact)
		batch_commit_async();
	driver_commit(d, last);
	return last ? DRIVER_STOP : DRIVER_NEXT;
}

/* A turn, its transaction begun and ended by the caller's ops. */
static DriverOutcome
driver_turn_guarded(AmDriver *d, ErrorData **edata)
{
	volatile DriverOutcome out = DRIVER_STOP;

	*edata = NULL;
	if (d->ops->begin != NULL)
		d->ops->begin(d);
	/* what the turn allocates, its error included, outlives its commit */
	MemoryContextSwitchTo(d->stepcxt);
	PG_TRY();
	{
		out = driver_turn(d, edata);
	}
	PG_CATCH();
	{
		if (d->ops->abort == NULL)
		{
			/*
			 * The error goes to the caller (a session: its CALL fails).  The
			 * batches it committed before must stay, even those committed
			 * without waiting for the flush.
			 */
			HOLD_INTERRUPTS();
			driver_flush_wal();
			RESUME_INTERRUPTS();
			PG_RE_THROW();
		}
		MemoryContextSwitchTo(d->stepcxt);
		*edata = CopyErrorData();
		FlushErrorState();
		d->ops->abort(d);
		out = DRIVER_FAILED;
	}
	PG_END_TRY();
	return out;
}

/*
 * Make what this backend committed durable, even what it committed
 * without waiting for the flush (batch_commit_async), before a sleep in
 * which the driver may be cancelled or the server stopped.
 */
static void
driver_flush_wal(void)
{
	/* the end of this backend's last commit record; a no-op once flushed */
	if (!XLogRecPtrIsInvalid(XactLastCommitEnd))
		XLogFlush(XactLastCommitEnd);
}

/*
 * Run the job's batches until it is done (for this driver), the budget is
 * spent, or the caller's ops say stop.  Every allocation of a turn is made
 * in stepcxt, which is reset at the start of the next turn.
 */
void
driver_run(AmDriver *d)
{
	MemoryContext oldcxt = CurrentMemoryContext;

	for (;;)
	{
		ErrorData  *edata;
		DriverOutcome out;
		int64		nap_ms = 0;

		CHECK_FOR_INTERRUPTS();
		if (d->ops->poll != NULL)
			d->ops->poll(d);
		MemoryContextReset(d->stepcxt);
		MemoryContextSwitchTo(d->stepcxt);
		d->step_start = GetCurrentTimestamp();
		d->pause_ms = 0;
		out = driver_turn_guarded(d, &edata);
		/* a commit or an abort leaves us in TopMemoryContext */
		MemoryContextSwitchTo(d->stepcxt);

		if (out == DRIVER_FAILED)
		{
			if (!d->ops->failed(d, edata))
				break;
			continue;
		}
		if (d->ops->after != NULL && !d->ops->after(d))
			break;
		if (out == DRIVER_STOP)
			break;
		nap_ms = out == DRIVER_WAIT ? DRIVER_WAIT_MS : d->pause_ms;
		if (nap_ms > 0)
		{
			TimestampTz flush_start = GetCurrentTimestamp();

			/* the flush counts as part of the pause */
			driver_flush_wal();
			nap_ms -= TimestampDifferenceMilliseconds(flush_start,
													  GetCurrentTimestamp());
			if (nap_ms > 0 &&
				!driver_nap(d, nap_ms, out == DRIVER_NEXT && d->rows > 0))
				break;
		}
	}
	MemoryContextSwitchTo(oldcxt);
}
