/*-------------------------------------------------------------------------
 *
 * batch.c
 *	  One batch of a job: read the next key range of the source, write it
 *	  into the target, and record the checkpoint, all in the caller's
 *	  transaction.
 *
 * Because the checkpoint (acme_migrate.jobs.last_key and the counters) is
 * written by the same transaction as the batch's rows, a crash, kill or
 * cancel at any moment either keeps both or neither: the next batch starts
 * exactly after the last committed row.  Two sessions never run batches of
 * one job at once: a batch holds an advisory lock on the job for its
 * transaction (acme_migrate_run holds it for its whole session), and a
 * second caller gives up at once instead of queueing.
 *
 * The rows stream from the keyset query (mapping.c) into a DestReceiver that
 * hands them to the direct writer (writer.c), or, when the direct writer is
 * not allowed or the target already holds some of the keys, the batch runs
 * as one INSERT ... SELECT ... ON CONFLICT statement and the receiver only
 * follows the keys.  Under on_error = 'reject', a failing batch is retried
 * in halves inside subtransactions until the failing rows are isolated;
 * those go to acme_migrate.rejects and the rest is copied.
 *
 *-------------------------------------------------------------------------
 */
#include "acme_migrate.h"

#include "access/relation.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/ipc.h"
#include "storage/lmgr.h"
#include "storage/pmsignal.h"
#include "storage/lock.h"
#include "tcop/dest.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

/* how many batches use the SQL path after the direct one met a conflict */
#define SQL_PATH_BATCHES	16

/* a key range to copy: (lo, hi], at most limit rows */
typedef struct BatchRange
{
	Datum	   *lo;				/* NULL: from the start */
	Datum	   *hi;				/* NULL: to the end */
	int64		limit;
} BatchRange;

/* receives the rows of a batch query */
typedef struct BatchReceiver
{
	DestReceiver pub;
	AmMapping  *map;
	AmWriter   *writer;			/* direct path; NULL on the SQL path */
	bool		check_keys;		/* key not known unique: check each row */
	int64		rows;			/* source rows seen */
	int64		written;		/* SQL path: rows the INSERT wrote */
	Datum	   *first_key;
	Datum	   *last_key;
	MemoryContext keycxt;		/* holds last_key (reset per row) */
	MemoryContext cxt;			/* holds first_key */
} BatchReceiver;

/* totals of one batch */
typedef struct BatchTotals
{
	int64		rows_read;
	int64		rows_written;
	int64		rows_rejected;
	Datum	   *first_key;
	Datum	   *last_key;
	bool		direct;
	bool		pushdown;		/* Citus: a key range pushed down (locality.c) */
	bool		at_end;			/* ... which reached the end of its range */
} BatchTotals;

static void
batch_rcv_startup(DestReceiver *self, int operation, TupleDesc typeinfo)
{
}

static void
batch_rcv_noop(DestReceiver *self)
{
}

static void
batch_key_error_null(BatchReceiver *rcv, int i)
{
	ereport(ERROR,
			(errcode(ERRCODE_NOT_NULL_VIOLATION),
			 errmsg("key column \"%s\" of source \"%s\" is null in a row",
					rcv->map->key_names[i], get_rel_name(rcv->map->source_relid)),
			 errdetail("The key of a job must be unique and NOT NULL.")));
}

/* Compare two keys with the key types' btree comparison. */
int
batch_key_compare(AmMapping *map, Datum *a, Datum *b)
{
	for (int i = 0; i < map->nkeys; i++)
	{
		int32		c = DatumGetInt32(FunctionCall2Coll(&map->key_cmp[i],
														map->key_collations[i],
														a[i], b[i]));

		if (c != 0)
			return c;
	}
	return 0;
}

/* A key as text, its columns separated by commas; "..." for NIL. */
static char *
batch_text_key(List *parts)
{
	StringInfoData buf;
	ListCell   *lc;

	if (parts == NIL)
		return "...";
	initStringInfo(&buf);
	foreach(lc, parts)
		appendStringInfo(&buf, "%s%s", lc == list_head(parts) ? "" : ", ",
						 (char *) lfirst(lc));
	return buf.data;
}

static char *
batch_key_string(AmMapping *map, Datum *key)
{
	return batch_text_key(mapping_key_to_text(map, key));
}

/*
 * One row of the batch query: keys first, then the mapped target columns
 * (direct path) or the INSERT's row count (SQL path).
 */
static bool
batch_rcv_receive(TupleTableSlot *slot, DestReceiver *self)
{
	BatchReceiver *rcv = (BatchReceiver *) self;
	AmMapping  *map = rcv->map;
	int			nkeys = map->nkeys;
	MemoryContext old;

	slot_getallattrs(slot);
	for (int i = 0; i < nkeys; i++)
		if (slot->tts_isnull[i])
			batch_key_error_null(rcv, i);

	if (rcv->check_keys && rcv->rows > 0 &&
		batch_key_compare(map, rcv->last_key, slot->tts_values) >= 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNIQUE_VIOLATION),
				 errmsg("duplicate key in source \"%s\"",
						get_rel_name(map->source_relid)),
				 errdetail("Key (%s) appears more than once.",
						   batch_key_string(map, slot->tts_values)),
				 errhint("The key of a job must be unique and NOT NULL.")));

	/* remember the key: the first one for the history, the last one always */
	if (rcv->rows == 0)
	{
		old = MemoryContextSwitchTo(rcv->cxt);
		rcv->first_key = palloc(sizeof(Datum) * nkeys);
		for (int i = 0; i < nkeys; i++)
			rcv->first_key[i] = datumCopy(slot->tts_values[i],
										  map->key_byval[i], map->key_typlen[i]);
		rcv->last_key = palloc(sizeof(Datum) * nkeys);
		MemoryContextSwitchTo(old);
	}
	MemoryContextReset(rcv->keycxt);
	old = MemoryContextSwitchTo(rcv->keycxt);
	for (int i = 0; i < nkeys; i++)
		rcv->last_key[i] = map->key_byval[i] ? slot->tts_values[i] :
			datumCopy(slot->tts_values[i], false, map->key_typlen[i]);
	MemoryContextSwitchTo(old);

	/* a worker orphaned by a dead postmaster stops within a few rows */
	if (IsBackgroundWorker && (rcv->rows & 1023) == 0 && !PostmasterIsAlive())
		proc_exit(1);

	if (rcv->writer)
		writer_put(rcv->writer, &slot->tts_values[nkeys],
				   &slot->tts_isnull[nkeys]);
	else
		rcv->written = DatumGetInt64(slot->tts_values[nkeys]);
	rcv->rows++;
	return true;
}

static void
batch_rcv_init(BatchReceiver *rcv, AmMapping *map, bool check_keys)
{
	memset(rcv, 0, sizeof(BatchReceiver));
	rcv->pub.receiveSlot = batch_rcv_receive;
	rcv->pub.rStartup = batch_rcv_startup;
	rcv->pub.rShutdown = batch_rcv_noop;
	rcv->pub.rDestroy = batch_rcv_noop;
	rcv->pub.mydest = DestNone;
	rcv->map = map;
	rcv->check_keys = check_keys;
	rcv->cxt = CurrentMemoryContext;
	rcv->keycxt = AllocSetContextCreate(CurrentMemoryContext,
										"acme_migrate batch key",
										ALLOCSET_SMALL_SIZES);
}

static SPIPlanPtr
batch_prepare(const char *sql, int nargs, Oid *argtypes, int cursor_options)
{
	SPIPlanPtr	plan;

	plan = SPI_prepare_cursor(sql, nargs, argtypes, cursor_options);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed for \"%s\": %s", sql,
			 SPI_result_code_string(SPI_result));
	if (SPI_keepplan(plan) != 0)
		elog(ERROR, "SPI_keepplan failed");
	return plan;
}

/* The parameter types of a range query: $lo..., $hi..., $limit. */
static Oid *
batch_argtypes(AmMapping *map)
{
	Oid		   *argtypes = palloc(sizeof(Oid) * (2 * map->nkeys + 1));

	for (int i = 0; i < map->nkeys; i++)
		argtypes[i] = argtypes[map->nkeys + i] = map->key_types[i];
	argtypes[2 * map->nkeys] = INT8OID;
	return argtypes;
}

/*
 * Prepare the plans of the mapping that take their limit as a parameter,
 * once.  They serve the pieces of a batch that on_error = 'reject' cuts
 * around failing rows, and the keys of a batch, so they take custom plans:
 * the planner sees the real bounds each time.  A whole batch runs on the
 * plans of batch_range_plan instead.
 */
static void
batch_prepare_plans(AmMapping *map)
{
	int			n = 2 * map->nkeys + 1;
	Oid		   *argtypes;

	if (map->select_plan[0][0] != NULL)
		return;
	argtypes = batch_argtypes(map);
	for (int lo = 0; lo < 2; lo++)
	{
		for (int hi = 0; hi < 2; hi++)
		{
			map->select_plan[lo][hi] = batch_prepare(map->select_sql[lo][hi], n, argtypes,
													 CURSOR_OPT_CUSTOM_PLAN);
			map->insert_plan[lo][hi] = batch_prepare(map->insert_sql[lo][hi], n, argtypes,
													 CURSOR_OPT_CUSTOM_PLAN);
			map->keys_plan[lo][hi] = batch_prepare(map->keys_sql[lo][hi], n, argtypes,
												   CURSOR_OPT_CUSTOM_PLAN);
		}
	}
	map->row_json_plan = batch_prepare(map->row_json_sql, map->nkeys, argtypes, 0);
	map->key_count_plan = batch_prepare(map->key_count_sql, map->nkeys, argtypes, 0);
	map->null_key_plan = batch_prepare(map->null_key_sql, 0, NULL, 0);
}

/* Forget the batch plans (their batch size changed, or the mapping goes). */
static void
batch_free_batch_plans(AmMapping *map)
{
	for (int ins = 0; ins < 2; ins++)
		for (int lo = 0; lo < 2; lo++)
			for (int hi = 0; hi < 2; hi++)
			{
				if (map->batch_plan[ins][lo][hi] != NULL)
					SPI_freeplan(map->batch_plan[ins][lo][hi]);
				map->batch_plan[ins][lo][hi] = NULL;
			}
	map->batch_plan_limit = 0;
}

void
batch_free_plans(AmMapping *map)
{
	SPIPlanPtr *all[] = {&map->select_plan[0][0], &map->select_plan[0][1],
		&map->select_plan[1][0], &map->select_plan[1][1],
		&map->insert_plan[0][0], &map->insert_plan[0][1],
		&map->insert_plan[1][0], &map->insert_plan[1][1],
		&map->keys_plan[0][0], &map->keys_plan[0][1],
		&map->keys_plan[1][0], &map->keys_plan[1][1], &map->row_json_plan,
	&map->key_count_plan, &map->null_key_plan, &map->catchup_plan};

	for (int i = 0; i < lengthof(all); i++)
	{
		if (*all[i] != NULL)
			SPI_freeplan(*all[i]);
		*all[i] = NULL;
	}
	batch_free_batch_plans(map);
	fk_free_plans(map);
}

/* Parameters ($lo..., $hi..., $limit) of a range query. */
static ParamListInfo
batch_params(AmMapping *map, BatchRange *r)
{
	int			n = 2 * map->nkeys + 1;
	ParamListInfo params = makeParamList(n);

	params->numParams = n;
	for (int i = 0; i < map->nkeys; i++)
	{
		ParamExternData *plo = &params->params[i];
		ParamExternData *phi = &params->params[map->nkeys + i];

		plo->ptype = phi->ptype = map->key_types[i];
		plo->pflags = phi->pflags = PARAM_FLAG_CONST;
		plo->isnull = r->lo == NULL;
		plo->value = r->lo ? r->lo[i] : (Datum) 0;
		phi->isnull = r->hi == NULL;
		phi->value = r->hi ? r->hi[i] : (Datum) 0;
	}
	params->params[n - 1].ptype = INT8OID;
	params->params[n - 1].pflags = PARAM_FLAG_CONST;
	params->params[n - 1].isnull = false;
	params->params[n - 1].value = Int64GetDatum(r->limit);
	return params;
}

/*
 * The plan that copies a key range.  A whole batch (a limit of the batch
 * size) runs on a generic plan with its LIMIT as a constant: planned once
 * per mapping and batch size, not once per batch, and with a real row goal
 * the planner keeps to the key index.  It is made again when the batch size
 * changes (batch_time_target adapts it).  The pieces that on_error =
 * 'reject' cuts a batch into are bounded by keys, and take the custom plans
 * of batch_prepare_plans; so do the batches of a job between tables that
 * live elsewhere (Citus).
 */
static SPIPlanPtr
batch_range_plan(AmMapping *map, BatchRange *r, bool direct)
{
	int			lo = r->lo != NULL;
	int			hi = r->hi != NULL;
	int			ins = !direct;
	char	   *sql;

	if (r->limit == PG_INT64_MAX)
		return direct ? map->select_plan[lo][hi] : map->insert_plan[lo][hi];
	if (map->batch_plan_limit != r->limit)
		batch_free_batch_plans(map);
	map->batch_plan_limit = r->limit;
	if (map->batch_plan[ins][lo][hi] == NULL)
	{
		sql = mapping_batch_sql(map, lo, hi, ins,
								psprintf(INT64_FORMAT, r->limit));
		/*
		 * Citus cannot plan a distributed INSERT ... SELECT with parameters
		 * left in it: a job whose tables live elsewhere keeps custom plans.
		 */
		map->batch_plan[ins][lo][hi] =
			batch_prepare(sql, 2 * map->nkeys + 1, batch_argtypes(map),
						  locality_is_local(map->source_relid) &&
						  locality_is_local(map->target_relid) ?
						  CURSOR_OPT_GENERIC_PLAN : 0);
	}
	return map->batch_plan[ins][lo][hi];
}

/*
 * Copy one key range, by the direct writer or the SQL path; the receiver
 * ends up with the rows seen and the first and last keys.  Returns the rows
 * written.
 */
static int64
batch_copy_range(AmJob *job, AmMapping *map, BatchRange *r, bool direct,
				 BatchReceiver *rcv)
{
	SPIExecuteOptions opts;
	int			rc;

	batch_rcv_init(rcv, map, !job->key_is_unique);
	memset(&opts, 0, sizeof(opts));
	opts.params = batch_params(map, r);
	opts.read_only = false;
	opts.dest = (DestReceiver *) rcv;
	if (direct)
		rcv->writer = writer_begin(map);
	rc = SPI_execute_plan_extended(batch_range_plan(map, r, direct), &opts);
	if (rc < 0)
		elog(ERROR, "SPI_execute_plan_extended failed: %s",
			 SPI_result_code_string(rc));
	if (direct)
		rcv->written = writer_end(rcv->writer);
	return rcv->written;
}

/*
 * Errors that belong to one row (its transform or a target constraint),
 * which on_error = 'reject' isolates; anything else stops the batch.
 */
static bool
batch_is_row_error(ErrorData *edata)
{
	int			class = ERRCODE_TO_CATEGORY(edata->sqlerrcode);

	return class == ERRCODE_CARDINALITY_VIOLATION ||	/* 21 */
		class == ERRCODE_DATA_EXCEPTION ||	/* 22 */
		class == ERRCODE_INTEGRITY_CONSTRAINT_VIOLATION ||	/* 23 */
		class == ERRCODE_SQL_ROUTINE_EXCEPTION ||	/* 2F */
		class == ERRCODE_EXTERNAL_ROUTINE_EXCEPTION ||	/* 38 */
		class == ERRCODE_EXTERNAL_ROUTINE_INVOCATION_EXCEPTION ||	/* 39 */
		class == ERRCODE_WITH_CHECK_OPTION_VIOLATION ||	/* 44 */
		class == ERRCODE_PROGRAM_LIMIT_EXCEEDED ||	/* 54 */
		class == ERRCODE_RAISE_EXCEPTION;	/* P0 */
}

/*
 * Let the current batch's transaction commit without waiting for its WAL
 * to be flushed (acme_migrate.async_commit).  Safe for exactly-once: the
 * batch's rows and its checkpoint are in the same transaction, so a crash
 * keeps both or loses both.  Not when the batch wrote through Citus: the
 * workers' part commits after ours, so ours must be on disk first.
 */
void
batch_commit_async(void)
{
	if (acme_migrate_async_commit && !locality_wrote_elsewhere())
		(void) set_config_option("synchronous_commit", "off", PGC_USERSET,
								 PGC_S_SESSION, GUC_ACTION_LOCAL, true, 0,
								 false);
}

/*
 * The next batch's size under batch_time_target: scaled by how far the
 * last batch (took_ms) was from the target, at most doubled or halved at
 * once, and kept between a tenth and ten times the job's batch_size.
 * Unchanged without a target.  Shared by acme_migrate_run and workers.
 */
int32
batch_adapt_size(AmJob *job, int32 batch_size, int64 took_ms)
{
	double		f;

	if (job->batch_time_target_ms <= 0 || took_ms <= 0)
		return batch_size;
	f = Max(0.5, Min(2.0, (double) job->batch_time_target_ms / took_ms));
	return (int32) Max(Max(job->batch_size / 10, 1),
					   Min((double) job->batch_size * 10, batch_size * f));
}

/*
 * Errors worth retrying as they are: the next attempt may well succeed.
 * (A cancel is the user's word in a session; workers treat it as transient
 * themselves, since a DBA cancelling a worker's query means "not now".)
 */
bool
batch_error_is_transient(int sqlerrcode)
{
	return sqlerrcode == ERRCODE_T_R_DEADLOCK_DETECTED ||
		sqlerrcode == ERRCODE_T_R_SERIALIZATION_FAILURE ||
		sqlerrcode == ERRCODE_LOCK_NOT_AVAILABLE;
}

/* batch_try_range's arguments, through am_subxact */
typedef struct BatchTry
{
	AmJob	   *job;
	AmMapping  *map;
	BatchRange *r;
	bool		direct;
	BatchReceiver *rcv;
} BatchTry;

static void
batch_try_range_fn(void *arg)
{
	BatchTry   *bt = arg;

	batch_copy_range(bt->job, bt->map, bt->r, bt->direct, bt->rcv);
}

/*
 * batch_copy_range inside a subtransaction; returns NULL on success, else
 * the error (the subtransaction rolled back, nothing of it remains).
 */
static ErrorData *
batch_try_range(AmJob *job, AmMapping *map, BatchRange *r, bool direct,
				BatchReceiver *rcv)
{
	BatchTry	bt = {job, map, r, direct, rcv};

	return am_subxact(batch_try_range_fn, &bt);
}

/* Store one rejected row with its error. */
static void
batch_reject(AmJob *job, AmMapping *map, Datum *key, ErrorData *edata)
{
	Datum	   *values = palloc(sizeof(Datum) * map->nkeys);
	bool		isnull;
	Jsonb	   *keyjson;
	Datum		row;
	int			rc;

	memcpy(values, key, sizeof(Datum) * map->nkeys);
	rc = SPI_execute_plan(map->row_json_plan, values, NULL, false, 1);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not fetch rejected row: %s",
			 SPI_result_code_string(rc));
	keyjson = DatumGetJsonbPCopy(SPI_getbinval(SPI_tuptable->vals[0],
											   SPI_tuptable->tupdesc, 1,
											   &isnull));
	row = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2,
						&isnull);
	catalog_reject_insert(job, keyjson,
						  isnull ? NULL : DatumGetJsonbPCopy(row), edata);
}

/*
 * Copy keys[i..j) (the range after keys[i-1], or after lo for i = 0),
 * splitting it in halves around rows that fail until each failing row is
 * alone, and reject those.
 */
static void
batch_bisect(AmJob *job, AmMapping *map, Datum **keys, int i, int j,
			 Datum *lo, bool direct, BatchTotals *t)
{
	BatchRange	r;
	BatchReceiver rcv;
	ErrorData  *edata;

	CHECK_FOR_INTERRUPTS();
	r.lo = i > 0 ? keys[i - 1] : lo;
	r.hi = keys[j - 1];
	r.limit = PG_INT64_MAX;
	edata = batch_try_range(job, map, &r, direct, &rcv);
	if (edata == NULL)
	{
		t->rows_written += rcv.written;
		return;
	}
	if (!batch_is_row_error(edata))
		ReThrowError(edata);
	if (j - i == 1)
	{
		batch_reject(job, map, keys[i], edata);
		t->rows_rejected++;
		FreeErrorData(edata);
		return;
	}
	FreeErrorData(edata);
	batch_bisect(job, map, keys, i, (i + j) / 2, lo, direct, t);
	batch_bisect(job, map, keys, (i + j) / 2, j, lo, direct, t);
}

/*
 * Under on_error = 'reject', after the batch as a whole failed on a row:
 * list the batch's keys, then copy it piecewise.
 */
static void
batch_copy_with_rejects(AmJob *job, AmMapping *map, BatchRange *r,
						bool direct, BatchTotals *t)
{
	int			rc;
	uint64		n;
	Datum	  **keys;

	rc = SPI_execute_plan_with_paramlist(map->keys_plan[r->lo != NULL][r->hi != NULL],
										 batch_params(map, r), false, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not list the keys of a batch: %s",
			 SPI_result_code_string(rc));
	n = SPI_processed;
	keys = palloc(sizeof(Datum *) * Max(n, 1));
	for (uint64 i = 0; i < n; i++)
	{
		keys[i] = palloc(sizeof(Datum) * map->nkeys);
		for (int k = 0; k < map->nkeys; k++)
		{
			bool		isnull;
			Datum		d = SPI_getbinval(SPI_tuptable->vals[i],
										  SPI_tuptable->tupdesc, k + 1, &isnull);

			if (isnull)
				ereport(ERROR,
						(errcode(ERRCODE_NOT_NULL_VIOLATION),
						 errmsg("key column \"%s\" of source \"%s\" is null in a row",
								map->key_names[k], get_rel_name(map->source_relid))));
			keys[i][k] = datumCopy(d, map->key_byval[k], map->key_typlen[k]);
		}
	}
	SPI_freetuptable(SPI_tuptable);

	t->rows_read = n;
	t->rows_written = 0;
	t->rows_rejected = 0;
	if (n == 0)
		return;
	t->first_key = keys[0];
	t->last_key = keys[n - 1];
	batch_bisect(job, map, keys, 0, n, r->lo, direct, t);
}

/*
 * Read and write one batch after the checkpoint.  Fills t; the caller
 * writes the checkpoint.
 */
static void
batch_copy(AmJob *job, AmMapping *map, List *lo, List *hi, int32 batch_size,
		   BatchTotals *t)
{
	BatchRange	r;
	BatchReceiver rcv;
	ErrorData  *edata;
	bool		direct;

	locality_note_write(map->target_relid);
	t->pushdown = locality_copy_range(job, map, lo, hi, batch_size,
									  &t->rows_written, &t->last_key,
									  &t->at_end);
	if (t->pushdown)
	{
		t->rows_read = t->rows_written;
		t->first_key = t->last_key;
		return;
	}
	r.lo = lo ? mapping_key_from_text(map, lo) : NULL;
	r.hi = hi ? mapping_key_from_text(map, hi) : NULL;
	r.limit = batch_size;

	direct = map->direct_ok && map->sql_batches_left == 0;
	if (map->sql_batches_left > 0)
		map->sql_batches_left--;
	if (!map->direct_ok && map->direct_why_not)
		elog(DEBUG1, "job \"%s\" writes with INSERT statements: %s",
			 job->job_name, map->direct_why_not);

	if (!job->reject && (!direct || job->on_conflict == AM_CONFLICT_ERROR))
	{
		/* nothing to recover from: no subtransaction needed */
		batch_copy_range(job, map, &r, direct, &rcv);
		edata = NULL;
	}
	else
	{
		edata = batch_try_range(job, map, &r, direct, &rcv);
		if (edata && direct && edata->sqlerrcode == ERRCODE_UNIQUE_VIOLATION &&
			job->on_conflict != AM_CONFLICT_ERROR)
		{
			/* the target holds some of these keys: ON CONFLICT handles them */
			elog(DEBUG1, "job \"%s\" met existing keys; using INSERT ... ON CONFLICT",
				 job->job_name);
			FreeErrorData(edata);
			edata = NULL;
			map->sql_batches_left = SQL_PATH_BATCHES;
			direct = false;
			if (job->reject)
				edata = batch_try_range(job, map, &r, direct, &rcv);
			else
				batch_copy_range(job, map, &r, direct, &rcv);
		}
	}

	t->direct = direct;
	if (edata == NULL)
	{
		t->rows_read = rcv.rows;
		t->rows_written = rcv.written;
		t->rows_rejected = 0;
		t->first_key = rcv.first_key;
		t->last_key = rcv.last_key;
		return;
	}
	if (!job->reject || !batch_is_row_error(edata))
		ReThrowError(edata);
	FreeErrorData(edata);
	/* conflicts must go through ON CONFLICT while rows are isolated */
	if (job->on_conflict != AM_CONFLICT_ERROR)
		direct = false;
	t->direct = direct;
	batch_copy_with_rejects(job, map, &r, direct, t);
}

/*
 * Without a unique index behind the key, make sure the walk did not skip a
 * duplicate: within a batch the receiver compares neighbours, and across
 * batches a duplicate can only hide at a batch's last key.
 */
static void
batch_check_key(AmJob *job, AmMapping *map, BatchTotals *t, bool finished)
{
	int			rc;

	if (t->rows_read > 0)
	{
		int64		n;
		bool		isnull;

		rc = SPI_execute_plan(map->key_count_plan, t->last_key, NULL, false, 1);
		if (rc != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "could not count source rows by key: %s",
				 SPI_result_code_string(rc));
		n = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
										SPI_tuptable->tupdesc, 1, &isnull));
		if (n > 1)
			ereport(ERROR,
					(errcode(ERRCODE_UNIQUE_VIOLATION),
					 errmsg("duplicate key in source \"%s\"",
							get_rel_name(map->source_relid)),
					 errdetail("Key (%s) appears %lld times.",
							   batch_key_string(map, t->last_key), (long long) n),
					 errhint("The key of a job must be unique and NOT NULL.")));
	}
	if (finished)
	{
		rc = SPI_execute_plan(map->null_key_plan, NULL, NULL, false, 1);
		if (rc != SPI_OK_SELECT)
			elog(ERROR, "could not look for NULL keys: %s",
				 SPI_result_code_string(rc));
		if (SPI_processed > 0)
			ereport(ERROR,
					(errcode(ERRCODE_NOT_NULL_VIOLATION),
					 errmsg("source \"%s\" has rows with a NULL key",
							get_rel_name(map->source_relid)),
					 errdetail("Keyset batches cannot reach rows whose key is NULL."),
					 errhint("The key of a job must be unique and NOT NULL.")));
	}
}

/*
 * Try to take the job's advisory lock without waiting: ExclusiveLock for
 * acme_migrate_batch and acme_migrate_run, ShareLock for workers; for the
 * transaction or for the session.
 */
bool
batch_lock_job(int64 job_id, LOCKMODE mode, bool session)
{
	LOCKTAG		tag;

	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, AM_LOCK_CLASS, (uint32) job_id, 2);
	return LockAcquire(&tag, mode, session, true) != LOCKACQUIRE_NOT_AVAIL;
}

void
batch_unlock_job(int64 job_id, LOCKMODE mode, bool session)
{
	LOCKTAG		tag;

	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, AM_LOCK_CLASS, (uint32) job_id, 2);
	LockRelease(&tag, mode, session);
}

/*
 * Is the job in a state to copy?  NOTICEs and returns false for states
 * where there is simply nothing to do; ERRORs for those that need a person.
 */
static bool
batch_job_ready(AmJob *job)
{
	const AmJobState *st = am_job_state(job->state);

	if (st->copy_complete)
	{
		ereport(NOTICE,
				(errmsg("job \"%s\" is already %s", job->job_name,
						strcmp(job->state, "cut_over") == 0 ? "cut over" : job->state)));
		return false;
	}
	if (strcmp(job->state, "paused") == 0)
	{
		ereport(NOTICE,
				(errmsg("job \"%s\" is paused", job->job_name)));
		return false;
	}
	/* failed, or ended without its copy (catalog.c's list) */
	if (strcmp(job->state, "failed") == 0 || st->final)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 strcmp(job->state, "failed") == 0 ?
				 errmsg("job \"%s\" has failed", job->job_name) :
				 errmsg("job \"%s\" was %s", job->job_name,
						strcmp(job->state, "rolled_back") == 0 ? "rolled back" : job->state),
				 errhint("See acme_migrate.jobs, acme_migrate.errors and acme_migrate.rejects; drop and create the job again to start over.")));

	{
		char	   *parent;

		if (batch_waiting_for(job, &parent))
		{
			if (parent)
				ereport(NOTICE,
						(errmsg("job \"%s\" waits for job \"%s\"", job->job_name,
								parent)));
			else
				ereport(NOTICE,
						(errmsg("job \"%s\" waits for a job it depends on",
								job->job_name)));
			return false;
		}
	}
	return true;
}

/*
 * Do the job's columns still have the shape they had when it was created
 * (mapping_check.c)?  The tables are locked first, for the rest of the
 * transaction, so nothing can change them between this check and the
 * batch.  If they changed, the checkpoint or the mapping would now mean
 * something else: the job fails, with the reason recorded, and this
 * returns false.
 */
static bool
batch_shape_unchanged(AmJob *job, AmMapping *map)
{
	Relation	rel;
	char	   *shape;

	/* a dropped table is reported as such, not as a missing OID */
	rel = mapping_open_table(job, job->source_relid, "source");
	relation_close(rel, NoLock);
	rel = mapping_open_table(job, job->target_relid, "target");
	relation_close(rel, NoLock);
	LockRelationOid(job->target_relid, RowExclusiveLock);

	shape = mapping_shape(job, map);
	if (job->shape == NULL)
	{
		/* a job created before 1.1: its shape is taken now */
		catalog_job_set_shape(job, shape);
		return true;
	}
	if (strcmp(shape, job->shape) == 0)
		return true;
	catalog_job_set_state(job, "failed",
						  psprintf("the columns of the source or target changed since the job was created: was %s; now %s",
								   job->shape, shape));
	ereport(WARNING,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("job \"%s\" failed: its tables changed", job->job_name),
			 errdetail("Was: %s.  Now: %s.", job->shape, shape),
			 errhint("A job's checkpoint and mapping only hold for the columns it was created with; drop the job and create it again.")));
	return false;
}

/*
 * Is the job waiting for one of the jobs it depends on?  They are the jobs
 * its depends_on named when it was created, bound by id: a job created
 * later under a dropped parent's name is not its parent.  *parent is the
 * name of the first unfinished one, or NULL when the current user may not
 * see that job (it is then not named at all).  A parent gone since (only a
 * job from before 1.1 can have one: drop refuses while dependents exist)
 * is an ERROR, the job cannot ever copy.
 */
bool
batch_waiting_for(AmJob *job, char **parent)
{
	*parent = NULL;
	for (int i = 0; i < job->ndepends_on_ids; i++)
	{
		bool		exists = false;
		char	   *name = NULL;

		if (job->depends_on_ids[i] != 0 &&
			catalog_job_finished_by_id(job->depends_on_ids[i], &exists, &name))
			continue;
		if (!exists)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("job \"%s\" depends on a job that no longer exists",
							job->job_name),
					 i < list_length(job->depends_on) ?
					 errdetail("It was created with depends_on naming job \"%s\", which has been dropped since.",
							   (char *) list_nth(job->depends_on, i)) : 0,
					 errhint("Drop the job and create it again.")));
		*parent = name;
		return true;
	}
	return false;
}

/*
 * One batch of the job, checkpoint included, in the current transaction.
 * The caller holds the job's lock and has loaded the job.  A job split into
 * ranges (for parallel workers) copies from a range it claims by locking
 * its row; otherwise from the job's own checkpoint.  Returns the rows
 * written; *more says whether a next batch may find rows.
 */
int64
batch_step(AmJob *job, AmMapping *map, int32 batch_size, bool *more)
{
	BatchTotals t;
	TimestampTz started = GetCurrentTimestamp();
	const char *state = "running";
	char	   *reason = NULL;
	bool		finished;
	int			nest;
	int			pending;
	AmRange    *range = NULL;
	List	   *last_key;
	AmOwnerContext owner_cxt;

	*more = false;
	if (!batch_job_ready(job))
		return 0;
	if (!batch_shape_unchanged(job, map))
		return 0;
	/* a job restored from a dump lost its capture triggers (capture.c) */
	if (!capture_is_installed(job))
	{
		catalog_job_set_state(job, "failed",
							  "its capture triggers are missing (pg_dump does not dump them): writes to the source were not captured");
		capture_missing_error(job, WARNING);
		return 0;
	}
	/* stop rules: a true or failing health_check pauses the job */
	if (!am_health_check_ok(job))
		return 0;

	/* the job's SQL runs as its owner, whoever calls (security.c) */
	am_begin_writing_as_owner(job, job->target_relid, &owner_cxt);

	/* a batch never queues long behind a lock if the job says so */
	nest = am_job_lock_timeout(job);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	batch_prepare_plans(map);

	/*
	 * Is the job split in ranges?  Ranges are only made by acme_migrate_start,
	 * which cannot run while we hold the job: a job found without ranges
	 * is not asked again for the life of the mapping.
	 */
	if (map->has_ranges != 0)
		map->has_ranges = catalog_ranges_count(job, &pending) > 0;
	if (map->has_ranges)
	{
		range = catalog_range_claim(job, map->last_range);
		if (range == NULL)
		{
			/* every range is done, or taken by another worker */
			if (pending == 0 && strcmp(job->state, "running") == 0)
			{
				am_advance_sequences(job, false);
				catalog_job_set_state(job, job->capture_changes ? "copied" : "done",
									  NULL);
			}
			SPI_finish();
			AtEOXact_GUC(true, nest);
			am_end_as_owner(&owner_cxt);
			return 0;
		}
		map->last_range = range->range_no;
		if (IsBackgroundWorker)
			pgstat_report_activity(STATE_RUNNING,
								   psprintf("acme_migrate job %s: range %d, keys (%s .. %s]",
											job->job_name, range->range_no,
											batch_text_key(range->last_key ? range->last_key : range->lo_key),
											batch_text_key(range->hi_key)));
	}

	memset(&t, 0, sizeof(t));
	if (range)
		batch_copy(job, map, range->last_key ? range->last_key : range->lo_key,
				   range->hi_key, batch_size, &t);
	else
		batch_copy(job, map, job->last_key, NIL, batch_size, &t);
	last_key = (t.rows_read > 0 || t.pushdown) && t.last_key ?
		mapping_key_to_text(map, t.last_key) : NIL;
	finished = t.pushdown ? t.at_end : t.rows_read < batch_size;
	if (range)
	{
		catalog_range_checkpoint(job, range, last_key, t.rows_read, finished);
		if (finished)
			(void) catalog_ranges_count(job, &pending);
		/* the job ends with its last range */
		finished = finished && pending == 0;
	}
	if (!job->key_is_unique)
		batch_check_key(job, map, &t,
						t.rows_read < batch_size && (range == NULL || range->hi_key == NIL));

	/* stop rules: past max_error_rate the job pauses, even if finished */
	reason = am_error_rate_breached(job, t.rows_read, t.rows_rejected);
	if (finished && reason == NULL)
	{
		state = job->capture_changes ? "copied" : "done";
		/* sequences follow the data (sequences.c) */
		am_advance_sequences(job, false);
	}
	catalog_job_checkpoint(job, range,
						   t.rows_read > 0 && t.first_key ? mapping_key_to_text(map, t.first_key) : NIL,
						   last_key,
						   t.rows_read, t.rows_written, t.rows_rejected,
						   t.direct, started, state, NULL);
	if (reason)
		am_breach(job, "max_error_rate", reason, NULL);
	SPI_finish();
	AtEOXact_GUC(true, nest);
	am_end_as_owner(&owner_cxt);

	*more = strcmp(state, "running") == 0 && reason == NULL;
	return t.rows_written;
}

/*
 * Split what is left of the job's key space into about n ranges of similar
 * size, from a sample of the source's keys (any key type: the boundaries
 * are sampled keys, not arithmetic), so that workers can share the work.
 * Does nothing if the job already has ranges.
 */
void
batch_split_ranges(AmJob *job, AmMapping *map, int n)
{
	int			pending;
	StringInfoData q;
	double		rows = job->rows_estimate > 0 ? job->rows_estimate : 1e6;
	double		fraction = Min(1.0, 20.0 * n * 100 / Max(rows, 1.0));
	uint64		nkeys;
	List	   *bounds = NIL;
	Datum	   *lo = NULL;
	int			nparams = 2 * map->nkeys + 2;
	char	   *sample_sql;
	Oid		   *argtypes;
	Datum	   *values;
	char	   *nulls;
	int			rc;
	AmOwnerContext owner_cxt;

	if (catalog_ranges_count(job, &pending) > 0 || n <= 1)
		return;
	/* the sample reads the source through the job's filter: as its owner */
	am_begin_as_owner(job, &owner_cxt);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	/* the keys query after the checkpoint, thinned to a random sample */
	initStringInfo(&q);
	appendStringInfo(&q, "SELECT * FROM (%s) x WHERE pg_catalog.random() OPERATOR(pg_catalog.<) $%d",
					 map->keys_sql[job->last_key != NIL][0], nparams);
	/* on Citus, a sample the shards take themselves (locality.c) */
	sample_sql = locality_sample_sql(job, map, job->last_key != NIL,
									 &fraction);
	argtypes = palloc(sizeof(Oid) * nparams);
	values = palloc0(sizeof(Datum) * nparams);
	nulls = palloc(nparams);
	memset(nulls, ' ', nparams);
	for (int i = 0; i < map->nkeys; i++)
	{
		argtypes[i] = argtypes[map->nkeys + i] = map->key_types[i];
		nulls[map->nkeys + i] = 'n';
	}
	if (job->last_key != NIL)
	{
		lo = mapping_key_from_text(map, job->last_key);
		memcpy(values, lo, sizeof(Datum) * map->nkeys);
	}
	else
		memset(nulls, 'n', map->nkeys);
	argtypes[nparams - 2] = INT8OID;
	values[nparams - 2] = Int64GetDatum(PG_INT64_MAX);
	argtypes[nparams - 1] = FLOAT8OID;
	values[nparams - 1] = Float8GetDatum(fraction);
	rc = SPI_execute_with_args(sample_sql ? sample_sql : q.data, nparams,
							   argtypes, values, nulls, true, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not sample the keys of job \"%s\": %s",
			 job->job_name, SPI_result_code_string(rc));
	nkeys = SPI_processed;

	/* every (nkeys / n)-th sampled key becomes a boundary */
	for (int b = 1; b < n && nkeys >= (uint64) n; b++)
	{
		uint64		i = nkeys * b / n;
		Datum	   *key = palloc(sizeof(Datum) * map->nkeys);
		bool		isnull = false;

		for (int k = 0; k < map->nkeys; k++)
		{
			key[k] = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc,
								   k + 1, &isnull);
			if (isnull)
				break;
		}
		if (!isnull)
			bounds = lappend(bounds, mapping_key_to_text(map, key));
	}
	/* the boundaries live in SPI's memory: use them before SPI_finish */
	catalog_ranges_create(job, bounds);
	SPI_finish();
	am_end_as_owner(&owner_cxt);
}
