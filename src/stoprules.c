/*-------------------------------------------------------------------------
 *
 * stoprules.c
 *	  Stop rules: a job stops itself when its reject rate passes
 *	  max_error_rate, when a reconciliation of the job finds differences,
 *	  or when its health_check (a SQL boolean expression the DBA supplies)
 *	  turns true or fails.
 *
 * A breach pauses the job (on_breach => 'pause') or rolls it back
 * (on_breach => 'rollback'), and is recorded in the same transaction: the
 * reason in acme_migrate.jobs.failure_reason (and last_error), and a row of
 * acme_migrate.errors whose stop_rule names the rule.  A paused job goes on
 * with acme_migrate_resume(), as any paused job does.
 *
 * The health check runs before each batch (at most once a second per
 * process and job, and again at once after acme_migrate_alter), as the
 * job's owner with the job's search_path, in a read-only subtransaction
 * that is always rolled back: whatever it calls cannot leave anything
 * behind.  NULL counts as healthy; an error counts as a breach.
 *
 *-------------------------------------------------------------------------
 */
#include "acme_migrate.h"

#include "access/xact.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/resowner.h"

/* how often one process evaluates one job's health_check, at most */
#define HEALTH_CHECK_INTERVAL_MS	1000

/* the last health check of this process that found the job healthy */
static int64 hc_job_id = 0;
static int32 hc_version = 0;
static TimestampTz hc_at = 0;

/* a job whose workers must roll it back once they are stopped (worker.c) */
int64		am_rollback_pending = 0;

/*
 * on_breach => 'rollback': the job is already paused with the reason
 * recorded, in the current transaction.  A session runs the job alone
 * (acme_migrate_batch or acme_migrate_run hold it exclusively): the
 * target is put back here, in the same transaction.  A worker shares the
 * job with others, whose batches could land after the rollback: it leaves
 * the rollback to its loop, which stops the other workers first
 * (am_rollback_pending).
 */
void
am_breach_rollback(AmJob *job, const char *reason)
{
	int64		deleted;
	int64		restored;
	bool		equal;

	if (strcmp(job->state, "cut_over") == 0)
	{
		ereport(WARNING,
				(errmsg("job \"%s\" paused itself instead of rolling back", job->job_name),
				 errdetail("Stop rule breached: %s.  A job that is cut over is rolled back by acme_migrate_rollback(), which replays the writes made since.",
						   reason)));
		return;
	}
	if (IsBackgroundWorker)
	{
		am_rollback_pending = job->job_id;
		return;
	}
	capture_rollback_before_cutover(job, NULL,
									psprintf("rolled back on breach: %s", reason),
									&deleted, &restored, &equal);
	ereport(WARNING,
			(errmsg("job \"%s\" rolled itself back", job->job_name),
			 errdetail("Stop rule breached: %s.  %lld rows deleted and %lld restored in the target; its table hash %s the one recorded before the job.",
					   reason, (long long) deleted, (long long) restored,
					   equal ? "equals" : "differs from")));
}

/*
 * A stop rule is breached: record it and pause the job (or roll it back),
 * in the current transaction.  rule is "max_error_rate", "reconcile" or
 * "health_check"; edata the error behind the breach, if any.  Nothing
 * happens to a job that is no longer created, running or copied; a paused
 * job records a reconciliation's breach still (and may roll back), but
 * not a batch's that raced with the pause (another worker's).
 */
void
am_breach(AmJob *job, const char *rule, const char *reason,
		  ErrorData *edata)
{
	if (!catalog_job_breach(job, rule, reason, edata,
							strcmp(rule, "reconcile") == 0))
		return;
	if (strcmp(job->on_breach, "rollback") == 0)
	{
		am_breach_rollback(job, reason);
		return;
	}
	ereport(WARNING,
			(errmsg("job \"%s\" paused itself", job->job_name),
			 errdetail("Stop rule %s breached: %s.", rule, reason),
			 strcmp(rule, "max_error_rate") == 0 ?
			 errhint("The rejected rows are in acme_migrate.rejects; resume the job with acme_migrate_resume(), after raising max_error_rate with acme_migrate_alter() if the rejects are expected.") :
			 errhint("The reason is in acme_migrate.jobs.failure_reason and acme_migrate.errors; resume the job with acme_migrate_resume() once the cause is dealt with.")));
}

/*
 * Evaluate the health check in a subtransaction that is rolled back, as
 * the job's owner, read-only.  Returns 1 (true), 0 (false) or -1 (NULL);
 * *edata is set, and -1 returned, when it raised an error.
 */
static int
am_health_eval(AmJob *job, ErrorData **edata)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	volatile int result = -1;
	char	   *sql;

	/* the expression was checked to be a single expression (create, alter) */
	sql = psprintf("SELECT (%s\n)::pg_catalog.bool", job->health_check);
	*edata = NULL;
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcxt);
	PG_TRY();
	{
		AmOwnerContext owner_cxt;
		int			rc;
		bool		isnull;
		Datum		d;

		am_begin_as_owner(job, &owner_cxt);
		(void) set_config_option("transaction_read_only", "on",
								 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
								 true, 0, false);
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		rc = SPI_execute(sql, false, 1);
		if (rc != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "health_check query failed: %s",
				 SPI_result_code_string(rc));
		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1,
						  &isnull);
		result = isnull ? -1 : DatumGetBool(d) ? 1 : 0;
		SPI_finish();
		am_end_as_owner(&owner_cxt);

		/* nothing the expression did stays */
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(oldcxt);
		*edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
		result = -1;
	}
	PG_END_TRY();
	return result;
}

/*
 * Before a batch: is the job healthy?  false when its health_check is
 * true or fails, the job then paused (or rolled back) with the reason
 * recorded.  A cancel (statement_timeout, pg_cancel_backend) is not a
 * breach: it is raised again.
 */
bool
am_health_check_ok(AmJob *job)
{
	TimestampTz now;
	ErrorData  *edata;
	int			result;

	if (job->health_check == NULL)
		return true;
	now = GetCurrentTimestamp();
	if (hc_job_id == job->job_id && hc_version == job->definition_version &&
		!TimestampDifferenceExceeds(hc_at, now, HEALTH_CHECK_INTERVAL_MS))
		return true;
	hc_job_id = 0;

	result = am_health_eval(job, &edata);
	if (edata != NULL && edata->sqlerrcode == ERRCODE_QUERY_CANCELED)
		ReThrowError(edata);
	if (edata != NULL)
	{
		am_breach(job, "health_check",
				  psprintf("health_check raised an error: %s", edata->message),
				  edata);
		FreeErrorData(edata);
		return false;
	}
	if (result == 1)
	{
		am_breach(job, "health_check",
				  psprintf("health_check is true: %s", job->health_check),
				  NULL);
		return false;
	}
	hc_job_id = job->job_id;
	hc_version = job->definition_version;
	hc_at = now;
	return true;
}

/*
 * After a batch with rejects: the reason when the job's reject rate now
 * passes max_error_rate, else NULL.
 */
char *
am_error_rate_breached(AmJob *job, int64 rows_read, int64 rows_rejected)
{
	double		rejected = (double) job->rows_rejected + rows_rejected;
	double		read = (double) job->rows_read + rows_read;

	if (job->max_error_rate < 0 || rows_rejected == 0 || read <= 0 ||
		rejected / read <= job->max_error_rate)
		return NULL;
	return psprintf("error rate %.4f exceeds max_error_rate %g: %.0f of %.0f rows rejected",
					rejected / read, job->max_error_rate, rejected, read);
}

/*
 * After a reconciliation of a job (not an ad hoc one, sampled or not):
 * differences found once the job is copied, with nothing left to catch up,
 * breach its stop rule.  Before that they are expected (rows not copied
 * yet, writes not caught up yet) and say nothing about the job.
 */
void
am_reconcile_breach(AmJob *job, int64 run_id, AmReconcileCounts *c)
{
	int64		n;
	char	   *reason;

	if (job->job_id <= 0 || reconcile_counts_equal(c))
		return;
	if (strcmp(job->state, "copied") != 0)
		return;
	if (job->capture_changes &&
		catalog_capture_backlog(job->job_id, 'f', NULL) > 0)
		return;
	n = c->missing + c->extra + c->changed + c->duplicates + c->null_keys;
	if (n > 0)
		reason = psprintf("reconciliation run %lld found %lld differences",
						  (long long) run_id, (long long) n);
	else
		reason = psprintf("reconciliation run %lld found that the mapping gave %lld rows for %lld source rows",
						  (long long) run_id, (long long) c->mapped_rows,
						  (long long) c->source_rows);
	am_breach(job, "reconcile", reason, NULL);
}

/*
 * The stop-rule arguments of acme_migrate_alter (1.1): health_check ('' to
 * remove it) and on_breach, at positions first and first + 1.  NULL leaves
 * a setting as it is.
 */
void
am_stop_rules_alter_args(FunctionCallInfo fcinfo, int first,
						 char **health_check, char **on_breach)
{
	*health_check = NULL;
	*on_breach = NULL;
	if (PG_NARGS() < first + 2)
		return;
	if (!PG_ARGISNULL(first))
	{
		*health_check = text_to_cstring(PG_GETARG_TEXT_PP(first));
		if ((*health_check)[0] != '\0')
			mapping_check_sql_fragment(*health_check, false, "health_check");
	}
	if (!PG_ARGISNULL(first + 1))
	{
		char	   *s = text_to_cstring(PG_GETARG_TEXT_PP(first + 1));

		if (strcmp(s, "pause") != 0 && strcmp(s, "rollback") != 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid value for on_breach: \"%s\"", s),
					 errhint("Valid values are \"pause\" and \"rollback\".")));
		*on_breach = s;
	}
}
