/*-------------------------------------------------------------------------
 *
 * writer.c
 *	  Write a batch's rows straight into the target through the table
 *	  access method, as COPY FROM does.
 *
 * Rows are buffered in slots and written with table_multi_insert and a
 * bulk-insert state (one WAL record per page instead of per row); indexes
 * are then maintained, NOT NULL, CHECK and (for a partition written
 * directly) partition constraints checked, defaults and
 * stored generated columns computed, and AFTER ROW triggers queued, exactly
 * as for an INSERT; the foreign keys fk.c can check are checked once for
 * the batch instead of by their per-row RI triggers.  mapping.c decides when
 * this is allowed (a plain table, no BEFORE / INSTEAD / statement triggers,
 * no rules, no row-level security); otherwise, and when a key conflict needs
 * ON CONFLICT, batch.c uses an INSERT statement instead.
 *
 *-------------------------------------------------------------------------
 */
#include "acme_migrate.h"

#include "access/heapam.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "executor/nodeModifyTable.h"
#include "miscadmin.h"
#include "optimizer/optimizer.h"
#include "parser/parsetree.h"
#include "rewrite/rewriteHandler.h"
#include "storage/lmgr.h"
#include "utils/memutils.h"
#include "utils/rel.h"

/* flush thresholds, as COPY FROM uses them */
#define WRITER_MAX_TUPLES	1000
#define WRITER_MAX_BYTES	65535

/*
 * What the writer keeps for the life of a mapping, made again only if the
 * target changes shape (columns, constraints or defaults):
 *
 * - the buffer slots, over a private copy of the target's tuple descriptor
 *   (not reference-counted, so no resource owner has to track a thousand
 *   slots per batch, which used to cost a third of a small batch).  They
 *   only ever hold rows of their own, never buffer pins, so they can cross
 *   transactions;
 * - the planned default expressions of the columns the batch does not fill.
 */
typedef struct WriterCache
{
	TupleDesc	desc;
	const TupleTableSlotOps *ops;
	MemoryContext cxt;
	int			ndefaults;
	AttrNumber *def_attnums;
	ExprState **def_exprs;
	TupleTableSlot *slots[WRITER_MAX_TUPLES];
} WriterCache;

/* Build the cache of a mapping against the target as it is now. */
static WriterCache *
writer_cache_build(AmMapping *map, Relation rel)
{
	TupleDesc	desc = RelationGetDescr(rel);
	MemoryContext cxt = GetMemoryChunkContext(map);
	MemoryContext old = MemoryContextSwitchTo(cxt);
	WriterCache *wc = palloc0(sizeof(WriterCache));
	bool	   *mapped = palloc0(sizeof(bool) * desc->natts);

	wc->desc = CreateTupleDescCopyConstr(desc);
	wc->ops = table_slot_callbacks(rel);
	wc->cxt = cxt;

	/* mapped columns come from the batch, the others from their default */
	for (int i = 0; i < map->nmapped; i++)
		mapped[map->mapped_attnums[i] - 1] = true;
	wc->def_attnums = palloc(sizeof(AttrNumber) * desc->natts);
	wc->def_exprs = palloc(sizeof(ExprState *) * desc->natts);
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		Expr	   *defexpr;

		if (mapped[i] || att->attisdropped || att->attgenerated)
			continue;
		defexpr = (Expr *) build_column_default(rel, i + 1);
		if (defexpr == NULL)
			continue;
		defexpr = expression_planner(defexpr);
		wc->def_attnums[wc->ndefaults] = i + 1;
		wc->def_exprs[wc->ndefaults] = ExecInitExpr(defexpr, NULL);
		wc->ndefaults++;
	}
	MemoryContextSwitchTo(old);
	return wc;
}

struct AmWriter
{
	Relation	rel;
	EState	   *estate;
	ResultRelInfo *rri;
	BulkInsertState bistate;
	CommandId	cid;
	WriterCache *wc;
	TupleTableSlot **slots;
	int			nbuffered;
	Size		nbytes;
	int			nmapped;
	AttrNumber *mapped_attnums;
	bool		has_generated;
	bool		has_constraints;
	bool		has_after_triggers;
	bool		is_partition;	/* check the partition bounds, as COPY does */
	AmFkBatch  *fk;				/* foreign keys checked per batch (fk.c) */
	int64		rows;
};

/*
 * Set up the executor state for inserting into the target, after checking
 * the caller may insert into every column the batch fills.
 */
AmWriter *
writer_begin(AmMapping *map)
{
	AmWriter   *w = palloc0(sizeof(AmWriter));
	RangeTblEntry *rte;
	TupleDesc	desc;

	LockRelationOid(map->target_relid, RowExclusiveLock);
	locality_require_local(map->target_relid, "write directly into");
	w->rel = table_open(map->target_relid, NoLock);
	desc = RelationGetDescr(w->rel);

	rte = makeNode(RangeTblEntry);
	rte->rtekind = RTE_RELATION;
	rte->relid = map->target_relid;
	rte->relkind = w->rel->rd_rel->relkind;
	rte->rellockmode = RowExclusiveLock;
	rte->requiredPerms = ACL_INSERT;

	/* the caller must be allowed to insert into every column it fills */
	w->nmapped = map->nmapped;
	w->mapped_attnums = map->mapped_attnums;
	for (int i = 0; i < map->nmapped; i++)
		rte->insertedCols = bms_add_member(rte->insertedCols,
										   map->mapped_attnums[i] -
										   FirstLowInvalidHeapAttributeNumber);
	ExecCheckRTPerms(list_make1(rte), true);

	w->estate = CreateExecutorState();
	ExecInitRangeTable(w->estate, list_make1(rte));
	w->rri = makeNode(ResultRelInfo);
	ExecInitResultRelation(w->estate, w->rri, 1);
	CheckValidResultRel(w->rri, CMD_INSERT);
	ExecOpenIndices(w->rri, false);

	w->has_constraints = desc->constr != NULL;
	w->is_partition = w->rel->rd_rel->relispartition;
	w->has_generated = desc->constr && desc->constr->has_generated_stored;
	/* before the trigger flags are read: fk.c may take some triggers out */
	w->fk = fk_batch_begin(map, w->rel, w->rri);
	w->has_after_triggers = w->rri->ri_TrigDesc != NULL &&
		w->rri->ri_TrigDesc->trig_insert_after_row;
	if (w->has_after_triggers)
		AfterTriggerBeginQuery();

	/* the mapping's cache, made again if the target changed shape */
	w->wc = (WriterCache *) map->writer_cache;
	if (w->wc == NULL || !equalTupleDescs(w->wc->desc, desc))
		map->writer_cache = w->wc = writer_cache_build(map, w->rel);
	w->slots = w->wc->slots;
	w->bistate = GetBulkInsertState();
	w->cid = GetCurrentCommandId(true);
	return w;
}

/* Write the buffered rows, then their index entries and triggers. */
static void
writer_flush(AmWriter *w)
{
	MemoryContext old;

	if (w->nbuffered == 0)
		return;
	old = MemoryContextSwitchTo(GetPerTupleMemoryContext(w->estate));
	table_multi_insert(w->rel, w->slots, w->nbuffered, w->cid, 0, w->bistate);
	MemoryContextSwitchTo(old);

	for (int i = 0; i < w->nbuffered; i++)
	{
		List	   *recheck = NIL;

		if (w->rri->ri_NumIndices > 0)
			recheck = am_ExecInsertIndexTuples(w->rri, w->slots[i], w->estate);
		if (w->has_after_triggers)
			ExecARInsertTriggers(w->estate, w->rri, w->slots[i], recheck, NULL);
		list_free(recheck);
		ResetPerTupleExprContext(w->estate);
	}
	/* the rows are written: let go of them */
	for (int i = 0; i < w->nbuffered; i++)
		ExecClearTuple(w->slots[i]);
	w->rows += w->nbuffered;
	w->nbuffered = 0;
	w->nbytes = 0;
}

/*
 * Add one row: values[i] / isnull[i] fill the i-th mapped column.  The
 * values are copied; the caller may reuse its memory at once.
 */
void
writer_put(AmWriter *w, Datum *values, bool *isnull)
{
	TupleTableSlot *slot;
	ExprContext *econtext = GetPerTupleExprContext(w->estate);
	int			natts = RelationGetDescr(w->rel)->natts;
	MemoryContext old;

	/* slots live as long as the mapping; rows in them until the flush */
	if (w->slots[w->nbuffered] == NULL)
	{
		old = MemoryContextSwitchTo(w->wc->cxt);
		w->slots[w->nbuffered] = MakeSingleTupleTableSlot(w->wc->desc,
														  w->wc->ops);
		MemoryContextSwitchTo(old);
	}
	slot = w->slots[w->nbuffered];
	old = MemoryContextSwitchTo(GetPerTupleMemoryContext(w->estate));
	ExecClearTuple(slot);
	memset(slot->tts_isnull, true, sizeof(bool) * natts);
	for (int i = 0; i < w->nmapped; i++)
	{
		int			a = w->mapped_attnums[i] - 1;

		slot->tts_values[a] = values[i];
		slot->tts_isnull[a] = isnull[i];
	}
	for (int i = 0; i < w->wc->ndefaults; i++)
	{
		int			a = w->wc->def_attnums[i] - 1;

		slot->tts_values[a] = ExecEvalExpr(w->wc->def_exprs[i], econtext,
										   &slot->tts_isnull[a]);
	}
	ExecStoreVirtualTuple(slot);

	if (w->has_generated)
		ExecComputeStoredGenerated(w->rri, w->estate, slot, CMD_INSERT);
	if (w->has_constraints)
		ExecConstraints(w->rri, slot, w->estate);
	/* a partition written directly must not take rows outside its bounds */
	if (w->is_partition)
		(void) ExecPartitionCheck(w->rri, slot, w->estate, true);
	if (w->fk)
		fk_batch_add(w->fk, slot);

	/* own copy of the row, in the slot's memory, until the flush */
	ExecMaterializeSlot(slot);
	MemoryContextSwitchTo(old);
	ResetPerTupleExprContext(w->estate);

	w->nbuffered++;
	if ((TTS_IS_BUFFERTUPLE(slot) || TTS_IS_HEAPTUPLE(slot)) &&
		((HeapTupleTableSlot *) slot)->tuple != NULL)
		w->nbytes += ((HeapTupleTableSlot *) slot)->tuple->t_len;
	if (w->nbuffered == WRITER_MAX_TUPLES || w->nbytes >= WRITER_MAX_BYTES)
		writer_flush(w);
}

/* Flush what is left, fire queued triggers, release everything. */
int64
writer_end(AmWriter *w)
{
	int64		rows;

	writer_flush(w);
	if (w->has_after_triggers)
		AfterTriggerEndQuery(w->estate);
	/* the foreign keys fk.c took over, after the other AFTER triggers */
	if (w->fk)
		fk_batch_check(w->fk);
	rows = w->rows;
	ExecResetTupleTable(w->estate->es_tupleTable, false);
	FreeBulkInsertState(w->bistate);
	table_finish_bulk_insert(w->rel, 0);
	ExecCloseResultRelations(w->estate);
	ExecCloseRangeTableRelations(w->estate);
	FreeExecutorState(w->estate);
	table_close(w->rel, NoLock);
	return rows;
}
