/*-------------------------------------------------------------------------
 *
 * cutover.c
 *	  Online migration: cut-over and rollback (capture.c captures and
 *	  catches up).
 *
 * Cut-over.  The source is locked in EXCLUSIVE mode (writers wait, readers
 * never do), in attempts that each wait at most lock_timeout (a waiting
 * lock request also holds up every writer queued behind it), with backoff
 * and catch-up between attempts.  Under the lock the rest of the log is
 * drained; if that would take longer than max_lock_time the lock is given
 * back and the job catches up before trying again.  The drained keys are
 * verified by row hash on both sides, sequences are advanced, then_sql
 * runs, capture is removed (and, with reverse_columns, installed on the
 * target the other way), all in the transaction that commits the new state.
 *
 * Rollback.  Before cut-over the target is put back as it was when the job
 * was created (acme_migrate.preimages) and its table hash compared with the
 * one recorded then.  After cut-over the writes captured on the target are
 * replayed into the source through reverse_columns, under the same short
 * lock rules, and then_sql swaps back.
 *
 * Everything here runs the job's SQL as its owner (security.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "acme_migrate.h"

#include "access/relation.h"
#include "access/xact.h"
#include "catalog/pg_inherits.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/uuid.h"

PG_FUNCTION_INFO_V1(acme_migrate_cutover);
PG_FUNCTION_INFO_V1(acme_migrate_rollback);

/*
 * Verify the keys a cut-over drained: their mapped source rows and target
 * rows have the same row hashes.  Returns the rows that differ.
 */
static int64
cut_verify(AmMapping *map, List *keys)
{
	SPIPlanPtr	plan;
	Oid		   *argtypes = palloc(sizeof(Oid) * map->nkeys);
	Datum	   *arrays;
	int			nunique;
	bool		isnull;

	if (keys == NIL)
		return 0;
	for (int i = 0; i < map->nkeys; i++)
		argtypes[i] = get_array_type(map->key_types[i]);
	plan = SPI_prepare(map->verify_sql, map->nkeys, argtypes);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed for \"%s\": %s", map->verify_sql,
			 SPI_result_code_string(SPI_result));
	arrays = capture_key_arrays(map, keys, &nunique);
	/*
	 * Not read-only: a read-only execution would use the calling
	 * statement's snapshot, taken before the drain and before the writes
	 * it applied, and compare stale rows on both sides.
	 */
	if (SPI_execute_plan(plan, arrays, NULL, false, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "could not verify the drained keys");
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
									   SPI_tuptable->tupdesc, 1, &isnull));
}

/* ---- the short lock of cut-over and rollback ---- */

typedef struct LockRound
{
	const char *operation;		/* "cutover" or "rollback" */
	AmJob	   *job;
	AmMapping  *map;
	char		direction;		/* log drained under the lock */
	Oid			relid;			/* table whose writers are blocked */
	int64		lock_timeout_ms;
	int64		max_lock_ms;
	int			max_attempts;
	TimestampTz started;
	/* results */
	int			attempts;
	int64		lock_wait_ms;	/* of the attempt that took the lock */
	int64		applied;		/* entries applied, outside the lock too */
	TimestampTz locked_at;
	int64		drained;
	List	   *drained_keys;
} LockRound;

/*
 * Under the lock: the keys drained (cut-over) or replayed (rollback) are
 * verified, or the whole call fails and nothing is switched.
 */
static void
cut_verify_drained(LockRound *lr)
{
	int64		differ = cut_verify(lr->map, lr->drained_keys);
	bool		forward = lr->direction == 'f';

	if (differ > 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 forward ?
				 errmsg("cut-over of job \"%s\" found %lld drained rows that differ",
						lr->job->job_name, (long long) differ) :
				 errmsg("rollback of job \"%s\" found %lld replayed rows that differ",
						lr->job->job_name, (long long) differ),
				 forward ?
				 errdetail("The drained keys' mapped source rows and target rows do not have the same row hashes.") : 0,
				 forward ?
				 errhint("Nothing was switched over; reconcile the job to see the rows.") :
				 errhint("Nothing was switched back.")));
}

/* Catch up outside the lock for at most ms milliseconds. */
static void
cut_catch_up_for(LockRound *lr, int64 ms)
{
	TimestampTz start = GetCurrentTimestamp();

	int64		n;
	int64		after = 0;

	(void) capture_sync_members(lr->job, lr->direction);
	while ((n = capture_apply(lr->job, lr->map, lr->direction, AM_CAPTURE_CHUNK,
							  &after, NULL)) > 0)
	{
		lr->applied += n;
		if (TimestampDifferenceMilliseconds(start, GetCurrentTimestamp()) >= ms)
			break;
		CHECK_FOR_INTERRUPTS();
	}
}

/*
 * One attempt, in a subtransaction: take the lock (waiting at most
 * lock_timeout), then drain the log.  Returns "done" with the lock held
 * and the drain kept, or the outcome of a failed attempt with both given
 * back.
 */
static const char *
cut_lock_attempt(LockRound *lr, int64 *wait_ms, int64 *held_ms)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	TimestampTz t0 = GetCurrentTimestamp();
	volatile const char *outcome = "done";

	*held_ms = -1;
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		int			nest = NewGUCNestLevel();
		int64		n;
		List	   *keys = NIL;
		int64		drained = 0;
		int64		after = 0;

		(void) set_config_option("lock_timeout",
								 psprintf("%lld", (long long) lr->lock_timeout_ms),
								 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
								 true, 0, false);
		/*
		 * The table itself (find_all_inheritors locks only its children),
		 * then every member: writers may write a partition directly.
		 */
		LockRelationOid(lr->relid, ExclusiveLock);
		(void) find_all_inheritors(lr->relid, ExclusiveLock, NULL);
		AtEOXact_GUC(true, nest);
		lr->locked_at = GetCurrentTimestamp();
		*wait_ms = TimestampDifferenceMilliseconds(t0, lr->locked_at);
		/* members that came or went since the last catch-up */
		(void) capture_sync_members(lr->job, lr->direction);
		do
		{
			CHECK_FOR_INTERRUPTS();
			n = capture_apply(lr->job, lr->map, lr->direction, AM_CAPTURE_CHUNK,
							  &after, &keys);
			drained += n;
			if (n > 0 &&
				TimestampDifferenceMilliseconds(lr->locked_at, GetCurrentTimestamp()) > lr->max_lock_ms)
			{
				outcome = "gave_back";
				break;
			}
		} while (n > 0);
		*held_ms = TimestampDifferenceMilliseconds(lr->locked_at, GetCurrentTimestamp());
		if (strcmp((const char *) outcome, "done") == 0)
		{
			ReleaseCurrentSubTransaction();
			lr->drained = drained;
			lr->drained_keys = keys;
		}
		else
			RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		if (edata->sqlerrcode != ERRCODE_LOCK_NOT_AVAILABLE)
			PG_RE_THROW();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		*wait_ms = TimestampDifferenceMilliseconds(t0, GetCurrentTimestamp());
		outcome = "lock_timeout";
	}
	PG_END_TRY();
	return (const char *) outcome;
}

/*
 * Take the lock in attempts with backoff (catching up in between), drain
 * the log under it.  Returns true with the lock held; false after
 * max_attempts.  Every attempt is recorded.
 */
static bool
cut_lock_round(LockRound *lr)
{
	for (lr->attempts = 1; lr->attempts <= lr->max_attempts; lr->attempts++)
	{
		int64		wait_ms = 0;
		int64		held_ms;
		const char *outcome;

		/* little left to drain under the lock: catch up first */
		cut_catch_up_for(lr, 10000);
		outcome = cut_lock_attempt(lr, &wait_ms, &held_ms);
		if (strcmp(outcome, "done") == 0)
		{
			lr->lock_wait_ms = wait_ms;
			lr->applied += lr->drained;
			return true;
		}
		catalog_cutover_attempt(lr->job->job_id, lr->operation, lr->attempts,
								lr->started, wait_ms, held_ms, 0, outcome);
		ereport(NOTICE,
				(errmsg("%s of job \"%s\": attempt %d %s", lr->operation,
						lr->job->job_name, lr->attempts,
						strcmp(outcome, "lock_timeout") == 0 ?
						"could not take the lock in time" :
						"gave the lock back: draining took too long")));
		/* back off: 50 ms, 100 ms ... at most 2 s, plus some jitter */
		am_sleep(Min(2000, 50L << Min(lr->attempts - 1, 6)) +
				 (int64) (random() % 50));
	}
	lr->attempts = lr->max_attempts;
	return false;
}

static int64
cut_held_ms(LockRound *lr)
{
	return TimestampDifferenceMilliseconds(lr->locked_at, GetCurrentTimestamp());
}

/*
 * Start a round on relid as the job's owner, with SPI connected, reading
 * through the mapping of "mapped" (the job, or the job the other way
 * round): returns whether the lock is held (see cut_lock_round).
 */
static bool
cut_begin_round(LockRound *lr, AmJob *job, AmJob *mapped, Oid relid,
				AmOwnerContext *owner_cxt)
{
	lr->job = job;
	lr->map = mapping_build(mapped, false);
	lr->relid = relid;
	/* the drain writes into the mapping's target (the source, going back) */
	am_begin_writing_as_owner(job, lr->map->target_relid, owner_cxt);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	return cut_lock_round(lr);
}

/* The job's new state and the attempt that did it, then back to the caller. */
static void
cut_end_round(LockRound *lr, const char *state, AmOwnerContext *owner_cxt)
{
	catalog_job_set_state(lr->job, state, NULL);
	catalog_cutover_attempt(lr->job->job_id, lr->operation, lr->attempts,
							lr->started, lr->lock_wait_ms, cut_held_ms(lr),
							lr->drained, "done");
	SPI_finish();
	am_end_as_owner(owner_cxt);
}

/*
 * Cut-over and rollback must be the only ones applying the log: they stop
 * the job's workers and take its lock, and they must see every entry
 * committed before they got their table lock, which only READ COMMITTED
 * gives.
 */
static void
cut_own_job(AmJob *job, const char *what)
{
	if (IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("cannot %s job \"%s\" in a transaction with isolation level %s",
						what, job->job_name,
						IsolationIsSerializable() ? "SERIALIZABLE" : "REPEATABLE READ"),
				 errdetail("Under the lock it must see every write committed before it."),
				 errhint("Run it at READ COMMITTED, the default.")));
	(void) worker_stop_job(job);
	if (!batch_lock_job(job->job_id, ExclusiveLock, false))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_IN_USE),
				 errmsg("job \"%s\" is running in another session", job->job_name),
				 errhint("Wait for the session that runs the job by hand to finish.")));
}

/* Run the DBA's then_sql as the job's owner. */
static void
cut_then_sql(AmJob *job, const char *then_sql)
{
	int			rc;

	if (then_sql == NULL || then_sql[0] == '\0')
		return;
	rc = SPI_execute(then_sql, false, 0);
	if (rc < 0)
		elog(ERROR, "then_sql failed: %s", SPI_result_code_string(rc));
	CommandCounterIncrement();
}

static int64
cut_interval_arg(FunctionCallInfo fcinfo, int n, const char *name,
					 int64 dflt)
{
	return PG_ARGISNULL(n) ? dflt :
		am_interval_ms(PG_GETARG_INTERVAL_P(n), name, false);
}

/*
 * A call of acme_migrate_cutover or acme_migrate_rollback: its arguments,
 * its lock round and its result row (four columns for both).
 */
typedef struct CutCall
{
	char	   *name;			/* the job's, argument 0 */
	char	   *then_sql;		/* NULL: none */
	LockRound	lr;
	AmOwnerContext owner_cxt;
	TupleDesc	tupdesc;
	Datum		values[4];
	bool		nulls[4];
} CutCall;

/*
 * What acme_migrate_cutover and acme_migrate_rollback share: the result
 * type checked, the job's name (argument 0), then_sql, lock_timeout and
 * max_attempts (at the positions given), the lock round's defaults.
 */
static void
cut_args(FunctionCallInfo fcinfo, CutCall *c, const char *operation,
		 int then_sql_arg, int lock_timeout_arg, int max_attempts_arg)
{
	memset(c, 0, sizeof(*c));
	if (get_call_result_type(fcinfo, NULL, &c->tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("job must not be null")));
	c->lr.operation = operation;
	c->lr.lock_timeout_ms = Min(cut_interval_arg(fcinfo, lock_timeout_arg,
												 "lock_timeout", 200), INT_MAX);
	c->lr.max_lock_ms = 1000;
	c->lr.max_attempts = PG_ARGISNULL(max_attempts_arg) ? 50 :
		PG_GETARG_INT32(max_attempts_arg);
	if (c->lr.max_attempts < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_attempts must be greater than zero")));
	c->then_sql = PG_ARGISNULL(then_sql_arg) ? NULL :
		text_to_cstring(PG_GETARG_TEXT_PP(then_sql_arg));
	c->name = text_to_cstring(PG_GETARG_TEXT_PP(0));
}

/* The call's result row. */
static Datum
cut_result(CutCall *c)
{
	return HeapTupleGetDatum(heap_form_tuple(c->tupdesc, c->values, c->nulls));
}

/*
 * acme_migrate_cutover(job, lock_timeout, max_lock_time, then_sql,
 *						max_attempts)
 *		returns (attempts, lock_held, changes_drained, verified)
 */
Datum
acme_migrate_cutover(PG_FUNCTION_ARGS)
{
	CutCall		c;
	LockRound  *lr = &c.lr;
	AmJob	   *job;

	cut_args(fcinfo, &c, "cutover", 3, 1, 4);
	lr->direction = 'f';
	lr->max_lock_ms = cut_interval_arg(fcinfo, 2, "max_lock_time", 1000);
	lr->started = GetCurrentTimestamp();

	job = catalog_job_get(c.name, true);
	capture_check_state(job, "cut over");
	if (strcmp(job->state, "copied") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot cut over job \"%s\" before its copy is done", job->job_name),
				 errdetail("The job is %s.", job->state),
				 errhint("Finish the copy with acme_migrate_run or acme_migrate_start; the job is then \"copied\".")));
	cut_own_job(job, "cut over");
	if (!cut_begin_round(lr, job, job, job->source_relid, &c.owner_cxt))
	{
		SPI_finish();
		am_end_as_owner(&c.owner_cxt);
		ereport(WARNING,
				(errmsg("job \"%s\" was not cut over: the lock was not had in %d attempts",
						job->job_name, lr->attempts),
				 errhint("Try again later, or with a longer lock_timeout or max_lock_time; the attempts are in acme_migrate.cutovers.")));
		c.values[0] = Int32GetDatum(lr->attempts);
		c.nulls[1] = true;
		c.values[2] = Int64GetDatum(0);
		c.values[3] = BoolGetDatum(false);
		PG_RETURN_DATUM(cut_result(&c));
	}

	/* under the lock: verify, sequences, then_sql, capture off */
	cut_verify_drained(lr);
	am_advance_sequences(job, true);
	cut_then_sql(job, c.then_sql);
	(void) capture_remove(job, 'f', true);
	catalog_capture_clear(job->job_id, 'f');
	catalog_preimage_clear(job->job_id);
	if (job->reverse_columns)
		capture_install(job, 'r');
	catalog_job_cut_over_at(job);
	cut_end_round(lr, "cut_over", &c.owner_cxt);

	c.values[0] = Int32GetDatum(lr->attempts);
	c.values[1] = PointerGetDatum(am_ms_interval(cut_held_ms(lr)));
	c.values[2] = Int64GetDatum(lr->drained);
	c.values[3] = BoolGetDatum(true);	/* else cut_verify_drained failed */
	PG_RETURN_DATUM(cut_result(&c));
}

/* ---- rollback ---- */

/*
 * Record the target as it is before the job's first write: its row count
 * and table hash, and (when it is not empty) its rows, which a rollback
 * before cut-over puts back.  Called by acme_migrate_create, as the owner,
 * who must be able to read the target.
 */
void
capture_record_pre(AmJob *job)
{
	int64		rows;
	uint8		hash[16];
	pg_uuid_t  *uuid = palloc(sizeof(pg_uuid_t));

	if (pg_class_aclcheck(job->target_relid, job->owner, ACL_SELECT) != ACLCHECK_OK)
	{
		/* without SELECT there is no proving a rollback: nothing recorded */
		return;
	}
	hash_relation(job->target_relid, &rows, hash);
	memcpy(uuid->data, hash, UUID_LEN);
	catalog_job_set_pre(job, rows,
						DatumGetCString(DirectFunctionCall1(uuid_out,
															UUIDPGetDatum(uuid))));
	if (rows > 0)
	{
		Portal		portal;
		SPIPlanPtr	plan;
		Datum	   *rows = palloc(sizeof(Datum) * 1000);

		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		plan = SPI_prepare(psprintf("SELECT pg_catalog.to_jsonb(t) FROM %s AS t",
									mapping_relname(job->target_relid)), 0, NULL);
		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		portal = SPI_cursor_open(NULL, plan, NULL, NULL, true);
		for (;;)
		{
			SPI_cursor_fetch(portal, true, 1000);
			if (SPI_processed == 0)
				break;
			for (uint64 i = 0; i < SPI_processed; i++)
			{
				bool		isnull;

				rows[i] = SPI_getbinval(SPI_tuptable->vals[i],
										SPI_tuptable->tupdesc, 1, &isnull);
			}
			catalog_preimage_insert(job->job_id, rows, (int) SPI_processed);
			SPI_freetuptable(SPI_tuptable);
		}
		SPI_cursor_close(portal);
		SPI_finish();
	}
}

/* "c1, c2, ...": the target's columns a row can be inserted into */
static char *
cut_insertable_columns(Oid relid, const char *prefix)
{
	Relation	rel = relation_open(relid, AccessShareLock);
	TupleDesc	desc = RelationGetDescr(rel);
	StringInfoData buf;

	initStringInfo(&buf);
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (att->attisdropped || att->attgenerated)
			continue;
		appendStringInfo(&buf, "%s%s%s", buf.len > 0 ? ", " : "", prefix,
						 quote_identifier(NameStr(att->attname)));
	}
	relation_close(rel, AccessShareLock);
	return buf.data;
}

/*
 * Before cut-over: delete the target's rows that are not as they were
 * when the job was created, put back those that are missing, and compare
 * the table hash with the one recorded then.  Inside SPI, as the owner.
 */
static void
cut_restore_target(AmJob *job, int64 *deleted, int64 *restored,
					   bool *equal)
{
	const char *tgt = mapping_relname(job->target_relid);
	char	   *cols = cut_insertable_columns(job->target_relid, "");
	char	   *rcols = cut_insertable_columns(job->target_relid, "r.");
	const char *catalog = "acme_migrate.preimages";
	Datum		arg = Int64GetDatum(job->job_id);
	Oid			argtype = INT8OID;
	int64		rows;
	uint8		hash[16];
	pg_uuid_t  *uuid = palloc(sizeof(pg_uuid_t));
	char	   *pre_hash;
	int			rc;
	bool		isnull;

	rc = SPI_execute_with_args(psprintf("DELETE FROM %s AS t WHERE NOT EXISTS "
										"(SELECT 1 FROM %s p WHERE p.job_id OPERATOR(pg_catalog.=) $1 "
										"AND p.row OPERATOR(pg_catalog.=) pg_catalog.to_jsonb(t))",
										tgt, catalog),
							   1, &argtype, &arg, NULL, false, 0);
	if (rc != SPI_OK_DELETE)
		elog(ERROR, "could not delete the job's rows: %s", SPI_result_code_string(rc));
	*deleted = (int64) SPI_processed;
	rc = SPI_execute_with_args(psprintf("INSERT INTO %s AS t (%s) OVERRIDING SYSTEM VALUE "
										"SELECT %s FROM %s p, "
										"pg_catalog.jsonb_populate_record(NULL::%s, p.row) r "
										"WHERE p.job_id OPERATOR(pg_catalog.=) $1 AND NOT EXISTS "
										"(SELECT 1 FROM %s t2 WHERE pg_catalog.to_jsonb(t2) "
										"OPERATOR(pg_catalog.=) p.row)",
										tgt, cols, rcols, catalog, tgt, tgt),
							   1, &argtype, &arg, NULL, false, 0);
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "could not restore the target's rows: %s", SPI_result_code_string(rc));
	*restored = (int64) SPI_processed;
	CommandCounterIncrement();

	/* the proof: the table hash recorded before the job's first write */
	rc = SPI_execute_with_args("SELECT pre_hash::pg_catalog.text FROM acme_migrate.jobs "
							   "WHERE job_id OPERATOR(pg_catalog.=) $1",
							   1, &argtype, &arg, NULL, true, 1);
	pre_hash = (rc == SPI_OK_SELECT && SPI_processed == 1) ?
		SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1) : NULL;
	(void) isnull;
	/* the statement's snapshot predates the rows just deleted and restored */
	PushCopiedSnapshot(GetActiveSnapshot());
	UpdateActiveSnapshotCommandId();
	hash_relation(job->target_relid, &rows, hash);
	PopActiveSnapshot();
	memcpy(uuid->data, hash, UUID_LEN);
	*equal = pre_hash != NULL &&
		strcmp(pre_hash, DatumGetCString(DirectFunctionCall1(uuid_out,
															 UUIDPGetDatum(uuid)))) == 0;
}

/*
 * Roll back a job that is not cut over: capture off, the target put back
 * as it was before the job, proven by its table hash, then then_sql; state
 * rolled_back with the reason (why, for a stop rule) or the hash
 * mismatch.  The caller holds the job exclusively.
 */
void
capture_rollback_before_cutover(AmJob *job, const char *then_sql,
								const char *why, int64 *deleted,
								int64 *restored, bool *equal)
{
	AmOwnerContext owner_cxt;

	if (job->capture_changes)
		(void) capture_remove(job, 'f', false);
	catalog_capture_clear(job->job_id, 'f');
	am_begin_writing_as_owner(job, job->target_relid, &owner_cxt);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	cut_restore_target(job, deleted, restored, equal);
	cut_then_sql(job, then_sql);
	SPI_finish();
	am_end_as_owner(&owner_cxt);
	catalog_preimage_clear(job->job_id);
	catalog_job_set_state(job, "rolled_back",
						  !*equal ? "the target's table hash differs from the one recorded before the job" :
						  why);
	if (!*equal)
		ereport(WARNING,
				(errmsg("job \"%s\" was rolled back, but its target is not as it was", job->job_name),
				 errdetail("The target's table hash differs from the one recorded when the job was created."),
				 errhint("Something else wrote to the target during the job, or the job was created before version 1.1.")));
}

/*
 * Rollback after the cut-over: the writes made to the target since,
 * captured by the reverse capture, replayed into the source under a lock
 * round on the target.
 */
static void
rollback_after_cutover(CutCall *c, AmJob *job)
{
	LockRound  *lr = &c->lr;

	if (job->reverse_columns == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot roll back job \"%s\" after its cut-over", job->job_name),
				 errdetail("It was created without reverse_columns, so the writes made to the target since were not captured."),
				 errhint("Swap the tables back by hand; the writes made to the target since the cut-over are not in the source.")));
	lr->direction = 'r';
	lr->started = GetCurrentTimestamp();
	if (!cut_begin_round(lr, job, capture_reverse_job(job), job->target_relid,
						 &c->owner_cxt))
		ereport(ERROR,
				(errcode(ERRCODE_LOCK_NOT_AVAILABLE),
				 errmsg("could not lock the target of job \"%s\" in %d attempts",
						job->job_name, lr->attempts),
				 errhint("Try again later, or with a longer lock_timeout.")));
	cut_verify_drained(lr);
	cut_then_sql(job, c->then_sql);
	(void) capture_remove(job, 'r', true);
	catalog_capture_clear(job->job_id, 'r');
	cut_end_round(lr, "rolled_back", &c->owner_cxt);
	c->values[0] = Int64GetDatum(0);
	c->values[1] = Int64GetDatum(0);
	c->values[2] = Int64GetDatum(lr->applied);
	c->values[3] = BoolGetDatum(true);
}

/*
 * acme_migrate_rollback(job, then_sql, lock_timeout, max_attempts)
 *		returns (rows_deleted, rows_restored, changes_returned,
 *				 target_hash_equal)
 */
Datum
acme_migrate_rollback(PG_FUNCTION_ARGS)
{
	CutCall		c;
	AmJob	   *job;

	cut_args(fcinfo, &c, "rollback", 1, 2, 3);
	job = catalog_job_get(c.name, false);
	if (strcmp(job->state, "rolled_back") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("job \"%s\" is already rolled back", job->job_name)));

	/* nothing may copy or catch up meanwhile */
	cut_own_job(job, "roll back");
	job = catalog_job_get(job->job_name, true);

	if (strcmp(job->state, "cut_over") != 0)
	{
		int64		deleted;
		int64		restored;
		bool		equal;

		capture_rollback_before_cutover(job, c.then_sql, NULL, &deleted,
										&restored, &equal);
		c.values[0] = Int64GetDatum(deleted);
		c.values[1] = Int64GetDatum(restored);
		c.values[2] = Int64GetDatum(0);
		c.values[3] = BoolGetDatum(equal);
	}
	else
		rollback_after_cutover(&c, job);
	PG_RETURN_DATUM(cut_result(&c));
}
