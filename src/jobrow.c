/*-------------------------------------------------------------------------
 *
 * jobrow.c
 *	  A batch's checkpoint written to its job's row in C, and the job's row
 *	  locked again by its address between batches.
 *
 * Every batch updates the job's row of acme_migrate.jobs and inserts a row
 * of history into acme_migrate.batches.  Through SQL, each statement
 * builds an executor that parses again the tables' CHECK constraints (one
 * ExprState each, per execution) and runs the RI trigger of batches'
 * foreign key, and every turn of a driver reads the whole job row again
 * with SELECT ... FOR UPDATE.  All are a fixed cost per batch, whatever
 * its size.  Here:
 *
 *	- jobrow_checkpoint updates the row with heap_update and its indexes
 *	  (CatalogTupleUpdate), computing the new values as the SQL statement
 *	  does (catalog.c, CAT_JOB_CHECKPOINT), and inserts the history row
 *	  (CatalogTupleInsert) with its columns' defaults.  Both rows are
 *	  checked against their table's own NOT NULL and CHECK constraints: the
 *	  very expressions of the relcache, planned once and kept until either
 *	  table's relcache entry is invalidated (ALTER TABLE, a new constraint,
 *	  ...).  It only does so when the job row at the job's address is the
 *	  one its transaction locked FOR UPDATE and has not updated since, and
 *	  only for tables it can write exactly like the executor would: no
 *	  rule, forced row security or generated column; plain immediate
 *	  indexes; constraints and defaults calling built-in functions only;
 *	  the columns of the expected types; and no trigger but those of the
 *	  foreign keys that reference jobs (which never act: no key changes)
 *	  and of batches' foreign keys batches.job_id -> jobs.job_id (which
 *	  hold: the job row is the one just updated, locked by us).  Otherwise
 *	  the caller runs the SQL statements.
 *
 *	- jobrow_relock locks FOR UPDATE the row version a job was read from
 *	  (or last written by jobrow_checkpoint), and tells whether it is still
 *	  the row's latest version, so that nothing (another session's pause,
 *	  cancel, alter or drop, or our own later update) changed it since.
 *	  Then the job in memory is still the row and need not be read again.
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
#include "catalog/index.h"
#include "catalog/indexing.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "common/int.h"
#include "executor/executor.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/optimizer.h"
#include "rewrite/rewriteHandler.h"
#include "storage/bufmgr.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/timestamp.h"

/* the columns a checkpoint writes, and job_id */
enum
{
	JR_JOB_ID,
	JR_LAST_KEY,
	JR_ROWS_READ,
	JR_ROWS_COPIED,
	JR_ROWS_REJECTED,
	JR_BATCHES_DONE,
	JR_STATE,
	JR_FAILURE_REASON,
	JR_STARTED_AT,
	JR_UPDATED_AT,
	JR_FINISHED_AT,
	JR_NCOLS
};

/* the columns of a history row (acme_migrate.batches) we give */
enum
{
	JB_JOB_ID,
	JB_BATCH_NO,
	JB_FIRST_KEY,
	JB_LAST_KEY,
	JB_ROWS_READ,
	JB_ROWS_COPIED,
	JB_ROWS_REJECTED,
	JB_METHOD,
	JB_STARTED_AT,
	JB_DURATION,
	JB_RANGE_NO,
	JB_NCOLS
};

/* room for either table's columns */
#define JR_MAXCOLS 11
StaticAssertDecl((int) JR_NCOLS <= JR_MAXCOLS && (int) JB_NCOLS <= JR_MAXCOLS,
				 "JR_MAXCOLS too small");

typedef struct JrColumn
{
	const char *name;
	Oid			type;
	bool		notnull;		/* we rely on it: the column must be NOT NULL */
} JrColumn;

static const JrColumn jr_job_cols[JR_NCOLS] = {
	[JR_JOB_ID] = {"job_id", INT8OID, true},
	[JR_LAST_KEY] = {"last_key", TEXTARRAYOID, false},
	[JR_ROWS_READ] = {"rows_read", INT8OID, true},
	[JR_ROWS_COPIED] = {"rows_copied", INT8OID, true},
	[JR_ROWS_REJECTED] = {"rows_rejected", INT8OID, true},
	[JR_BATCHES_DONE] = {"batches_done", INT8OID, true},
	[JR_STATE] = {"state", TEXTOID, true},
	[JR_FAILURE_REASON] = {"failure_reason", TEXTOID, false},
	[JR_STARTED_AT] = {"started_at", TIMESTAMPTZOID, false},
	[JR_UPDATED_AT] = {"updated_at", TIMESTAMPTZOID, false},
	[JR_FINISHED_AT] = {"finished_at", TIMESTAMPTZOID, false},
};

static const JrColumn jr_batch_cols[JB_NCOLS] = {
	[JB_JOB_ID] = {"job_id", INT8OID, true},
	[JB_BATCH_NO] = {"batch_no", INT8OID, false},
	[JB_FIRST_KEY] = {"first_key", TEXTARRAYOID, false},
	[JB_LAST_KEY] = {"last_key", TEXTARRAYOID, false},
	[JB_ROWS_READ] = {"rows_read", INT8OID, false},
	[JB_ROWS_COPIED] = {"rows_copied", INT8OID, false},
	[JB_ROWS_REJECTED] = {"rows_rejected", INT8OID, false},
	[JB_METHOD] = {"method", TEXTOID, false},
	[JB_STARTED_AT] = {"started_at", TIMESTAMPTZOID, false},
	[JB_DURATION] = {"duration", INTERVALOID, false},
	[JB_RANGE_NO] = {"range_no", INT4OID, false},
};

/*
 * What we know of one of the two tables, valid while valid: built from its
 * relcache entry, dropped by any invalidation of it (or of jobs, which the
 * checks of batches' foreign keys name).
 */
typedef struct JrTable
{
	const char *name;
	const JrColumn *cols;
	int			ncols;
	bool		valid;
	Oid			relid;
	bool		usable;			/* may be written here at all */
	AttrNumber	att[JR_MAXCOLS];
	int			nchecks;
	ExprState **checks;			/* the CHECK constraints, planned */
	char	  **check_names;
	ExprState **defaults;		/* per column we do not give: its default */
	TupleTableSlot *slot;
	ExprContext *econtext;
	MemoryContext cxt;
} JrTable;

static JrTable jr_jobs = {"jobs", jr_job_cols, JR_NCOLS};
static JrTable jr_batches = {"batches", jr_batch_cols, JB_NCOLS};
static bool jr_callback = false;
static uint64 jr_invals = 0;	/* invalidations of either table seen */

static void
jr_relcache_callback(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == jr_jobs.relid ||
		relid == jr_batches.relid)
	{
		jr_jobs.valid = jr_batches.valid = false;
		jr_invals++;
	}
}

static Oid
jr_table_relid(const char *name)
{
	Oid			relid = get_relname_relid(name,
										  get_namespace_oid("acme_migrate", false));

	if (!OidIsValid(relid))
		elog(ERROR, "table acme_migrate.%s is missing", name);
	return relid;
}

/* true for a function that is not built in */
static bool
jr_not_builtin(Oid func_id, void *context)
{
	return func_id >= FirstGenbkiObjectId;
}

/*
 * jobs' triggers may only be the internal ones of the foreign keys that
 * reference it (acme_migrate.batches' and the others'): those act only
 * when a referenced key changes, and no column we write may be part of a
 * key that can be referenced.  batches' may only be those of its foreign
 * keys, each of which must be batches.job_id -> jobs.job_id: a history
 * row is only written for the job row this transaction has locked FOR
 * UPDATE and just updated, which is there to be referenced.
 */
static bool
jr_triggers_ok(JrTable *t, Relation rel)
{
	TriggerDesc *trigdesc = rel->trigdesc;
	Bitmapset  *keys;
	List	   *fks = NIL;
	ListCell   *lc;

	if (t == &jr_batches)
	{
		foreach(lc, RelationGetFKeyList(rel))
		{
			ForeignKeyCacheInfo *fk = lfirst(lc);

			if (fk->confrelid != jr_jobs.relid || fk->nkeys != 1 ||
				fk->conkey[0] != t->att[JB_JOB_ID] ||
				fk->confkey[0] != jr_jobs.att[JR_JOB_ID])
				return false;
			fks = lappend_oid(fks, fk->conoid);
		}
	}
	for (int i = 0; trigdesc && i < trigdesc->numtriggers; i++)
	{
		Trigger    *trig = &trigdesc->triggers[i];

		if (!trig->tgisinternal ||
			RI_FKey_trigger_type(trig->tgfoid) !=
			(t == &jr_jobs ? RI_TRIGGER_PK : RI_TRIGGER_FK) ||
			(t == &jr_batches && !list_member_oid(fks, trig->tgconstraint)))
			return false;
	}
	if (t == &jr_batches)
		return true;
	keys = RelationGetIndexAttrBitmap(rel, INDEX_ATTR_BITMAP_KEY);
	for (int c = 0; c < JR_NCOLS; c++)
		if (c != JR_JOB_ID &&
			bms_is_member(t->att[c] - FirstLowInvalidHeapAttributeNumber, keys))
			return false;
	return true;
}

/* Are the table's indexes all plain ones, as CatalogTupleUpdate needs? */
static bool
jr_indexes_plain(Relation rel)
{
	List	   *indexes = RelationGetIndexList(rel);
	ListCell   *lc;
	bool		plain = true;

	foreach(lc, indexes)
	{
		Relation	index = index_open(lfirst_oid(lc), AccessShareLock);

		if (!index->rd_index->indimmediate || index->rd_index->indisexclusion ||
			RelationGetIndexExpressions(index) != NIL ||
			RelationGetIndexPredicate(index) != NIL ||
			IndexRelationGetNumberOfKeyAttributes(index) == 0)
			plain = false;
		index_close(index, AccessShareLock);
	}
	list_free(indexes);
	return plain;
}

/* The columns we write, by name; false when one is missing or retyped. */
static bool
jr_find_columns(JrTable *t, TupleDesc desc)
{
	for (int c = 0; c < t->ncols; c++)
	{
		Form_pg_attribute att;

		t->att[c] = InvalidAttrNumber;
		for (int i = 0; i < desc->natts; i++)
		{
			att = TupleDescAttr(desc, i);
			if (!att->attisdropped && strcmp(NameStr(att->attname),
											 t->cols[c].name) == 0)
				t->att[c] = att->attnum;
		}
		if (t->att[c] == InvalidAttrNumber)
			return false;
		att = TupleDescAttr(desc, t->att[c] - 1);
		if (att->atttypid != t->cols[c].type ||
			(t->cols[c].notnull && !att->attnotnull))
			return false;
	}
	return true;
}

/* Plan an expression of the table's catalog; false: not ours to run. */
static bool
jr_plan(const char *nodestring, Node *node, ExprState **state)
{
	Expr	   *expr = nodestring ? stringToNode(nodestring) : (Expr *) node;

	if (check_functions_in_node((Node *) expr, jr_not_builtin, NULL))
		return false;
	*state = ExecInitExpr(expression_planner(expr), NULL);
	return true;
}

/*
 * Plan the table's CHECK constraints, as ExecRelCheck does, and for a
 * table we insert into, the defaults of the columns we do not give (none
 * may be an identity or generated column).
 */
static bool
jr_plan_exprs(JrTable *t, Relation rel)
{
	TupleDesc	desc = RelationGetDescr(rel);
	TupleConstr *constr = desc->constr;

	t->nchecks = constr ? constr->num_check : 0;
	t->checks = palloc0(sizeof(ExprState *) * Max(t->nchecks, 1));
	t->check_names = palloc0(sizeof(char *) * Max(t->nchecks, 1));
	for (int i = 0; i < t->nchecks; i++)
	{
		if (!jr_plan(constr->check[i].ccbin, NULL, &t->checks[i]))
			return false;
		t->check_names[i] = pstrdup(constr->check[i].ccname);
	}
	t->defaults = palloc0(sizeof(ExprState *) * desc->natts);
	if (t != &jr_batches)
		return true;
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		Node	   *def;
		bool		given = false;

		for (int c = 0; c < t->ncols; c++)
			given |= t->att[c] == att->attnum;
		if (given || att->attisdropped)
			continue;
		if (att->attidentity || att->attgenerated)
			return false;
		def = build_column_default(rel, att->attnum);
		if (def != NULL && !jr_plan(NULL, def, &t->defaults[i]))
			return false;
	}
	return true;
}

/*
 * Learn a table again from its relcache entry.  A relcache invalidation
 * arriving meanwhile (or an error) leaves it not valid: the caller then
 * uses SQL, and the next call learns it again.
 */
static void
jr_build(JrTable *t, Relation rel)
{
	TupleDesc	desc = RelationGetDescr(rel);
	MemoryContext old;
	uint64		invals;

	if (!jr_callback)
	{
		CacheRegisterRelcacheCallback(jr_relcache_callback, (Datum) 0);
		jr_callback = true;
	}
	if (t->cxt == NULL)
		t->cxt = AllocSetContextCreate(TopMemoryContext,
									   "acme_migrate job row",
									   ALLOCSET_SMALL_SIZES);
	t->valid = false;
	MemoryContextReset(t->cxt);
	t->relid = RelationGetRelid(rel);
	invals = jr_invals;
	old = MemoryContextSwitchTo(t->cxt);
	t->usable = (t == &jr_jobs || (jr_jobs.valid && jr_jobs.usable)) &&
		rel->rd_rel->relkind == RELKIND_RELATION &&
		!rel->rd_rel->relhasrules && !rel->rd_rel->relforcerowsecurity &&
		!(desc->constr && desc->constr->has_generated_stored) &&
		jr_find_columns(t, desc) && jr_triggers_ok(t, rel) &&
		jr_indexes_plain(rel) && jr_plan_exprs(t, rel);
	if (t->usable)
	{
		t->slot = MakeSingleTupleTableSlot(CreateTupleDescCopy(desc),
										   &TTSOpsHeapTuple);
		t->econtext = CreateStandaloneExprContext();
	}
	MemoryContextSwitchTo(old);
	t->valid = jr_invals == invals;
}

/* The table, opened; NULL (and closed) when we cannot write it here. */
static Relation
jr_open(JrTable *t, LOCKMODE mode)
{
	Oid			relid = jr_table_relid(t->name);
	Relation	rel = table_open(relid, mode);

	if (!t->valid || t->relid != relid)
		jr_build(t, rel);
	if (t->valid && t->usable)
		return rel;
	table_close(rel, mode);
	return NULL;
}

/*
 * The new row must pass the table's NOT NULL and CHECK constraints, with
 * the errors the executor raises (ExecConstraints).
 */
static void
jr_check_row(JrTable *t, Relation rel, HeapTuple tup)
{
	TupleDesc	desc = RelationGetDescr(rel);

	ExecStoreHeapTuple(tup, t->slot, false);
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (att->attnotnull && slot_attisnull(t->slot, i + 1))
			ereport(ERROR,
					(errcode(ERRCODE_NOT_NULL_VIOLATION),
					 errmsg("null value in column \"%s\" of relation \"%s\" violates not-null constraint",
							NameStr(att->attname), RelationGetRelationName(rel)),
					 errtablecol(rel, i + 1)));
	}
	t->econtext->ecxt_scantuple = t->slot;
	for (int i = 0; i < t->nchecks; i++)
	{
		if (!ExecCheck(t->checks[i], t->econtext))
			ereport(ERROR,
					(errcode(ERRCODE_CHECK_VIOLATION),
					 errmsg("new row for relation \"%s\" violates check constraint \"%s\"",
							RelationGetRelationName(rel), t->check_names[i]),
					 errtableconstraint(rel, t->check_names[i])));
		ResetExprContext(t->econtext);
	}
	ExecClearTuple(t->slot);
}

/*
 * Is the row version at tid the one this transaction locked FOR UPDATE
 * (and did not update since), of this job?  Under the buffer's lock.
 */
static bool
jr_locked_by_us(Relation rel, HeapTuple tup, Buffer buf, int64 job_id)
{
	HeapTupleHeader h = tup->t_data;
	bool		ours;
	bool		isnull;

	LockBuffer(buf, BUFFER_LOCK_SHARE);
	ours = !(h->t_infomask & HEAP_XMAX_IS_MULTI) &&
		HEAP_XMAX_IS_LOCKED_ONLY(h->t_infomask) &&
		HEAP_XMAX_IS_EXCL_LOCKED(h->t_infomask) &&
		TransactionIdIsCurrentTransactionId(HeapTupleHeaderGetRawXmax(h)) &&
		ItemPointerEquals(&h->t_ctid, &tup->t_self);
	LockBuffer(buf, BUFFER_LOCK_UNLOCK);
	return ours &&
		DatumGetInt64(heap_getattr(tup, jr_jobs.att[JR_JOB_ID],
								   RelationGetDescr(rel), &isnull)) == job_id &&
		!isnull;
}

/* a + b, with the error of int8pl */
static Datum
jr_add(Datum a, int64 b)
{
	int64		r;

	if (pg_add_s64_overflow(DatumGetInt64(a), b, &r))
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("bigint out of range")));
	return Int64GetDatum(r);
}

/*
 * The new values of the checkpoint's columns, from the old row and the
 * arguments of CAT_JOB_CHECKPOINT ($1 .. $13 in args[0 .. 12], nulls 'n'),
 * exactly as its UPDATE computes them.
 */
static void
jr_new_values(Datum *v, bool *n, bool *repl, const Datum *args,
			  const char *nulls)
{
	TimestampTz now = GetCurrentTimestamp();
	char	   *new_state = TextDatumGetCString(args[5]);
	static const char *const held[] = {"paused", "cancelled", "failed",
	"rolled_back"};

#define SET(c, val, isnull) \
	do { v[jr_jobs.att[c] - 1] = (val); n[jr_jobs.att[c] - 1] = (isnull); \
		 repl[jr_jobs.att[c] - 1] = true; } while (0)
#define OLD(c) v[jr_jobs.att[c] - 1]
#define OLDNULL(c) n[jr_jobs.att[c] - 1]

	SET(JR_LAST_KEY, args[1], nulls[1] == 'n');
	/* NULL plus anything stays NULL, as in SQL */
	for (int c = JR_ROWS_READ; c <= JR_ROWS_REJECTED; c++)
		if (!OLDNULL(c))
			SET(c, jr_add(OLD(c), DatumGetInt64(args[2 + c - JR_ROWS_READ])),
				false);
	if (!OLDNULL(JR_BATCHES_DONE))
		SET(JR_BATCHES_DONE, jr_add(OLD(JR_BATCHES_DONE), 1), false);
	/* a batch in flight must not undo a pause, cancel or failure */
	if (strcmp(new_state, "running") == 0 && !OLDNULL(JR_STATE))
	{
		char	   *old_state = TextDatumGetCString(OLD(JR_STATE));

		for (int i = 0; i < lengthof(held); i++)
			if (strcmp(old_state, held[i]) == 0)
				new_state = NULL;
	}
	if (new_state != NULL)
		SET(JR_STATE, args[5], false);
	if (nulls[6] != 'n')
		SET(JR_FAILURE_REASON, args[6], false);
	if (OLDNULL(JR_STARTED_AT))
		SET(JR_STARTED_AT, args[7], nulls[7] == 'n');
	SET(JR_UPDATED_AT, TimestampTzGetDatum(now), false);
	if (DatumGetBool(args[12]))
		SET(JR_FINISHED_AT, TimestampTzGetDatum(now), false);
#undef SET
#undef OLD
#undef OLDNULL
}

/*
 * The job in memory follows its row: counters and state as written, and
 * the new version's address (last_key is the caller's).
 */
static void
jr_follow(AmJob *job, HeapTuple newtup, Datum *v, bool *n)
{
	MemoryContext old = MemoryContextSwitchTo(GetMemoryChunkContext(job));

	/* NOT NULL columns (jr_find_columns), the new row checked */
	job->rows_read = DatumGetInt64(v[jr_jobs.att[JR_ROWS_READ] - 1]);
	job->rows_copied = DatumGetInt64(v[jr_jobs.att[JR_ROWS_COPIED] - 1]);
	job->rows_rejected = DatumGetInt64(v[jr_jobs.att[JR_ROWS_REJECTED] - 1]);
	job->batches_done = DatumGetInt64(v[jr_jobs.att[JR_BATCHES_DONE] - 1]);
	job->state = TextDatumGetCString(v[jr_jobs.att[JR_STATE] - 1]);
	job->row_tid = newtup->t_self;
	job->row_xmin = HeapTupleHeaderGetXmin(newtup->t_data);
	MemoryContextSwitchTo(old);
}

/*
 * The history row of the checkpoint just written (CAT_BATCH_INSERT, its
 * batch_no given), inserted here when it can be; false: by SQL.
 */
static bool
jr_history(const Datum *args, const char *nulls, int64 batch_no)
{
	JrTable    *t = &jr_batches;
	Relation	rel = jr_open(t, RowExclusiveLock);
	TupleDesc	desc;
	Datum	   *v;
	bool	   *n;
	HeapTuple	tup;

	if (rel == NULL)
		return false;
	desc = RelationGetDescr(rel);
	v = palloc0(sizeof(Datum) * desc->natts);
	n = palloc(sizeof(bool) * desc->natts);
	for (int i = 0; i < desc->natts; i++)
	{
		n[i] = true;
		if (t->defaults[i] != NULL)
			v[i] = ExecEvalExprSwitchContext(t->defaults[i], t->econtext, &n[i]);
	}
#define GIVE(c, val, isnull) \
	do { v[t->att[c] - 1] = (val); n[t->att[c] - 1] = (isnull); } while (0)
	GIVE(JB_JOB_ID, args[0], false);
	GIVE(JB_BATCH_NO, Int64GetDatum(batch_no), false);
	GIVE(JB_FIRST_KEY, args[8], nulls[8] == 'n');
	GIVE(JB_LAST_KEY, args[9], nulls[9] == 'n');
	GIVE(JB_ROWS_READ, args[2], false);
	GIVE(JB_ROWS_COPIED, args[3], false);
	GIVE(JB_ROWS_REJECTED, args[4], false);
	GIVE(JB_METHOD, args[10], false);
	GIVE(JB_STARTED_AT, args[7], nulls[7] == 'n');
	/* clock_timestamp() - $8 */
	GIVE(JB_DURATION, nulls[7] == 'n' ? (Datum) 0 :
		 DirectFunctionCall2(timestamp_mi,
							 TimestampTzGetDatum(GetCurrentTimestamp()), args[7]),
		 nulls[7] == 'n');
	GIVE(JB_RANGE_NO, args[11], nulls[11] == 'n');
#undef GIVE
	tup = heap_form_tuple(desc, v, n);
	ResetExprContext(t->econtext);
	jr_check_row(t, rel, tup);
	CatalogTupleInsert(rel, tup);
	table_close(rel, NoLock);
	CommandCounterIncrement();
	return true;
}

/*
 * Write a batch's checkpoint to the job's row (see the file's comment);
 * args and nulls are those of CAT_JOB_CHECKPOINT.  Returns false, having
 * written nothing, when it cannot: the caller then runs the statement.
 * Otherwise the job in memory follows the row (jr_follow), *batch_no is
 * the row's new batches_done, and *history tells whether its history row
 * was written too (else the caller inserts it).
 */
bool
jobrow_checkpoint(AmJob *job, const Datum *args, const char *nulls,
				  int64 *batch_no, bool *history)
{
	Relation	rel;
	HeapTupleData oldtup;
	HeapTuple	newtup;
	Buffer		buf;
	Datum	   *v;
	bool	   *n;
	bool	   *repl;
	int			natts;

	if (!ItemPointerIsValid(&job->row_tid) ||
		(rel = jr_open(&jr_jobs, RowExclusiveLock)) == NULL)
		return false;
	oldtup.t_self = job->row_tid;
	if (ItemPointerGetBlockNumber(&job->row_tid) >= RelationGetNumberOfBlocks(rel))
	{
		table_close(rel, RowExclusiveLock);
		return false;
	}
	/*
	 * Prune the page first, as the UPDATE's index scan would: the versions
	 * the job's earlier batches left there make room for a HOT update.
	 */
	buf = ReadBuffer(rel, ItemPointerGetBlockNumber(&job->row_tid));
	heap_page_prune_opt(rel, buf);
	ReleaseBuffer(buf);
	if (!heap_fetch(rel, SnapshotAny, &oldtup, &buf, true))
	{
		table_close(rel, RowExclusiveLock);
		return false;
	}
	if (!jr_locked_by_us(rel, &oldtup, buf, job->job_id))
	{
		ReleaseBuffer(buf);
		table_close(rel, RowExclusiveLock);
		return false;
	}
	CheckCmdReplicaIdentity(rel, CMD_UPDATE);
	natts = RelationGetDescr(rel)->natts;
	v = palloc(sizeof(Datum) * natts);
	n = palloc(sizeof(bool) * natts);
	repl = palloc0(sizeof(bool) * natts);
	heap_deform_tuple(&oldtup, RelationGetDescr(rel), v, n);
	jr_new_values(v, n, repl, args, nulls);
	newtup = heap_modify_tuple(&oldtup, RelationGetDescr(rel), v, n, repl);
	jr_check_row(&jr_jobs, rel, newtup);
	CatalogTupleUpdate(rel, &oldtup.t_self, newtup);
	ReleaseBuffer(buf);
	table_close(rel, NoLock);
	CommandCounterIncrement();
	/* NOT NULL (jr_find_columns), and the new row was checked */
	*batch_no = DatumGetInt64(v[jr_jobs.att[JR_BATCHES_DONE] - 1]);
	jr_follow(job, newtup, v, n);
	/* the row it references is the one just written, locked by us */
	*history = jr_history(args, nulls, *batch_no);
	return true;
}

/*
 * Lock FOR UPDATE the row version job was read from (job->row_tid and
 * row_xmin), as CAT_JOB_GET_LOCK would, waiting for a transaction that
 * holds it.  True when that version is still the row's latest: nobody
 * updated or deleted the row since, the job in memory is the row.  False
 * otherwise (and then nothing is locked): read the row again.
 */
bool
jobrow_relock(AmJob *job)
{
	Relation	rel;
	HeapTupleData tup;
	Buffer		buf;
	Buffer		lockbuf;
	TM_FailureData tmfd;
	TM_Result	res;
	bool		same;

	if (!ItemPointerIsValid(&job->row_tid))
		return false;
	rel = table_open(jr_table_relid("jobs"), RowShareLock);
	tup.t_self = job->row_tid;
	if (ItemPointerGetBlockNumber(&job->row_tid) >= RelationGetNumberOfBlocks(rel) ||
		!heap_fetch(rel, SnapshotAny, &tup, &buf, true))
	{
		table_close(rel, NoLock);
		return false;
	}
	/* the same version, not another row put at the same place since */
	LockBuffer(buf, BUFFER_LOCK_SHARE);
	same = HeapTupleHeaderGetXmin(tup.t_data) == job->row_xmin;
	LockBuffer(buf, BUFFER_LOCK_UNLOCK);
	res = TM_Invisible;
	/* our pin keeps the version where it is (no pruning) while we lock it */
	if (same)
	{
		res = heap_lock_tuple(rel, &tup, GetCurrentCommandId(true),
							  LockTupleExclusive, LockWaitBlock, false,
							  &lockbuf, &tmfd);
		ReleaseBuffer(lockbuf);
	}
	ReleaseBuffer(buf);
	table_close(rel, NoLock);
	return res == TM_Ok;
}
