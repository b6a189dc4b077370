/*-------------------------------------------------------------------------
 *
 * capture.c
 *	  Online migration: change capture, catch-up, cut-over and rollback.
 *
 * Capture.  A job created with capture_changes puts row triggers on its
 * source (internal ones: not dumped, not disabled by DISABLE TRIGGER USER)
 * in the transaction that creates it, so no write falls between the copy's
 * first snapshot and capture.  The trigger logs the *key* of each written
 * row (old and new key when an update moves it) in acme_migrate.capture_log,
 * in the writing transaction: a log entry commits or aborts with its write.
 * TRUNCATE of the source, or of any of its partitions, is refused.
 *
 * Catch-up.  Entries are taken oldest first, FOR UPDATE SKIP LOCKED, so any
 * number of workers and sessions can share the log; each distinct key is
 * then applied in one statement per set of keys: the current source row,
 * mapped, is upserted into the target, or the target's row is deleted when
 * the source has none (or the filter leaves it out).  The entries are
 * deleted in the transaction that applied them.  Since a key is applied as
 * the source is *now*, applying an entry twice, or after a later one, can
 * never leave the target wrong: a crash at any moment leaves each entry
 * either applied and gone or still there, and applying it again is
 * harmless.
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
#include "acme_migrate.h"

#include "access/relation.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/dependency.h"
#include "catalog/objectaddress.h"
#include "catalog/pg_inherits.h"
#include "catalog/pg_trigger.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/tuptable.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "parser/parse_func.h"
#include "parser/parse_relation.h"
#include "storage/lmgr.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/tuplestore.h"
#include "utils/uuid.h"

PG_FUNCTION_INFO_V1(acme_migrate_capture_trigger);
PG_FUNCTION_INFO_V1(acme_migrate_catch_up);
PG_FUNCTION_INFO_V1(acme_migrate_cutover);
PG_FUNCTION_INFO_V1(acme_migrate_rollback);

/* how many log entries one catch-up statement applies */
#define CAPTURE_CHUNK		2000

/* ---- the capture trigger ---- */

/* what the trigger needs to know of one relation it fires on */
typedef struct CaptureRel
{
	Oid			tgoid;			/* hash key: the trigger */
	Oid			relid;
	int64		job_id;
	char		direction;
	int			nkeys;
	AttrNumber *attnums;
	FmgrInfo   *out;
	bool		styled;			/* key text depends on DateStyle etc. */
} CaptureRel;

static HTAB *capture_rels = NULL;

/* Any relation change may move a key column: forget everything. */
static void
capture_invalidate(Datum arg, Oid relid)
{
	HASH_SEQ_STATUS seq;
	CaptureRel *cr;

	if (capture_rels == NULL)
		return;
	hash_seq_init(&seq, capture_rels);
	while ((cr = hash_seq_search(&seq)) != NULL)
		if (relid == InvalidOid || cr->relid == relid)
			(void) hash_search(capture_rels, &cr->tgoid, HASH_REMOVE, NULL);
}

/* The trigger's view of its relation: job, direction, key columns. */
static CaptureRel *
capture_rel(TriggerData *td)
{
	Trigger    *tg = td->tg_trigger;
	Relation	rel = td->tg_relation;
	CaptureRel *cr;
	bool		found;

	if (capture_rels == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(Oid);
		ctl.entrysize = sizeof(CaptureRel);
		ctl.hcxt = TopMemoryContext;
		capture_rels = hash_create("acme_migrate capture", 16, &ctl,
								   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
		CacheRegisterRelcacheCallback(capture_invalidate, (Datum) 0);
	}
	cr = hash_search(capture_rels, &tg->tgoid, HASH_ENTER, &found);
	if (found)
		return cr;

	PG_TRY();
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		if (tg->tgnargs < 2)
			elog(ERROR, "capture trigger \"%s\" has no job", tg->tgname);
		cr->relid = RelationGetRelid(rel);
		cr->job_id = pg_strtoint64(tg->tgargs[0]);
		cr->direction = tg->tgargs[1][0];
		cr->nkeys = tg->tgnargs - 2;
		cr->attnums = palloc(sizeof(AttrNumber) * Max(cr->nkeys, 1));
		cr->out = palloc0(sizeof(FmgrInfo) * Max(cr->nkeys, 1));
		cr->styled = false;
		for (int i = 0; i < cr->nkeys; i++)
		{
			AttrNumber	attno = attnameAttNum(rel, tg->tgargs[i + 2], false);
			Oid			type;
			Oid			func;
			bool		varlena;

			if (attno == InvalidAttrNumber)
				elog(ERROR, "key column \"%s\" of capture trigger \"%s\" is gone",
					 tg->tgargs[i + 2], tg->tgname);
			cr->attnums[i] = attno;
			type = TupleDescAttr(RelationGetDescr(rel), attno - 1)->atttypid;
			getTypeOutputInfo(type, &func, &varlena);
			fmgr_info_cxt(func, &cr->out[i], TopMemoryContext);
			if (!mapping_type_io_is_fixed(type))
				cr->styled = true;
		}
		MemoryContextSwitchTo(old);
	}
	PG_CATCH();
	{
		(void) hash_search(capture_rels, &tg->tgoid, HASH_REMOVE, NULL);
		PG_RE_THROW();
	}
	PG_END_TRY();
	return cr;
}

/* The key of a row as text, under fixed settings (mapping.c's rule). */
static List *
capture_key(CaptureRel *cr, HeapTuple tuple, TupleDesc desc)
{
	List	   *key = NIL;
	int			nest = cr->styled ? mapping_fixed_settings(false) : -1;

	for (int i = 0; i < cr->nkeys; i++)
	{
		bool		isnull;
		Datum		d = heap_getattr(tuple, cr->attnums[i], desc, &isnull);

		/* a NULL key is refused by the copy; logging it would lose it */
		if (isnull)
			ereport(ERROR,
					(errcode(ERRCODE_NOT_NULL_VIOLATION),
					 errmsg("key column \"%s\" of a row written to \"%s\" is null",
							NameStr(TupleDescAttr(desc, cr->attnums[i] - 1)->attname),
							RelationGetRelationName(relation_open(cr->relid, NoLock))),
					 errdetail("Job %lld captures the changes of this table by key.",
							   (long long) cr->job_id)));
		key = lappend(key, OutputFunctionCall(&cr->out[i], d));
	}
	if (nest >= 0)
		AtEOXact_GUC(true, nest);
	return key;
}

static bool
capture_same_key(List *a, List *b)
{
	ListCell   *la;
	ListCell   *lb;

	forboth(la, a, lb, b)
		if (strcmp(lfirst(la), lfirst(lb)) != 0)
			return false;
	return true;
}

/* A set of keys, by their text (long keys are never taken as seen). */
#define CAPTURE_KEY_TEXT	(NAMEDATALEN * 4)

static HTAB *
capture_key_set(void)
{
	HASHCTL		ctl;

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = CAPTURE_KEY_TEXT;
	ctl.entrysize = CAPTURE_KEY_TEXT;
	ctl.hcxt = CurrentMemoryContext;
	return hash_create("acme_migrate captured keys", 1024, &ctl,
					   HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
}

/*
 * Was the key in the set?  With add, it is put in.  A key whose text does
 * not fit is never "seen": it is logged or applied again, which is only
 * redundant.
 */
static bool
capture_key_seen(HTAB *set, List *key, bool add)
{
	StringInfoData buf;
	ListCell   *lc;
	bool		found = false;

	initStringInfo(&buf);
	foreach(lc, key)
	{
		appendStringInfoString(&buf, lfirst(lc));
		appendStringInfoChar(&buf, '\x1f');
	}
	if (buf.len < CAPTURE_KEY_TEXT)
		(void) hash_search(set, buf.data, add ? HASH_ENTER : HASH_FIND, &found);
	pfree(buf.data);
	return found;
}

/*
 * The trigger: AFTER INSERT OR UPDATE OR DELETE FOR EACH ROW logs the
 * written key; BEFORE TRUNCATE refuses.
 */
Datum
acme_migrate_capture_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	CaptureRel *cr;
	TupleDesc	desc;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("acme_migrate.capture_trigger() must be called as a trigger")));
	if (TRIGGER_FIRED_BY_TRUNCATE(td->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot truncate \"%s\" while a migration job captures its changes",
						RelationGetRelationName(td->tg_relation)),
				 errdetail("Job %s would lose every row removed this way.",
						   td->tg_trigger->tgnargs > 0 ? td->tg_trigger->tgargs[0] : "?"),
				 errhint("Delete the rows instead, or cut the job over, roll it back or drop it first.")));
	if (!TRIGGER_FIRED_AFTER(td->tg_event))
		elog(ERROR, "acme_migrate.capture_trigger() must fire AFTER the write");

	cr = capture_rel(td);
	if (!TRIGGER_FIRED_FOR_ROW(td->tg_event))
	{
		/*
		 * A statement trigger: the keys of its transition tables at once,
		 * the new rows' keys, then those of the old rows not among them
		 * (an update that keeps its key logs it once).
		 */
		List	   *keys = NIL;
		TupleTableSlot *slot;
		HTAB	   *seen = NULL;

		slot = MakeSingleTupleTableSlot(RelationGetDescr(td->tg_relation),
										&TTSOpsMinimalTuple);
		for (int t = 0; t < 2; t++)
		{
			Tuplestorestate *ts = t == 0 ? td->tg_newtable : td->tg_oldtable;

			if (ts == NULL)
				continue;
			if (t == 0 && td->tg_oldtable != NULL)
				seen = capture_key_set();
			tuplestore_rescan(ts);
			while (tuplestore_gettupleslot(ts, true, false, slot))
			{
				bool		should_free;
				HeapTuple	tup = ExecFetchSlotHeapTuple(slot, false, &should_free);
				List	   *key = capture_key(cr, tup, RelationGetDescr(td->tg_relation));

				if (seen == NULL || !capture_key_seen(seen, key, t == 0))
					keys = lappend(keys, key);
				if (should_free)
					heap_freetuple(tup);
			}
		}
		if (seen)
			hash_destroy(seen);
		ExecDropSingleTupleTableSlot(slot);
		if (keys != NIL)
			catalog_capture_log_many(cr->job_id, cr->direction, cr->nkeys, keys);
		return PointerGetDatum(NULL);
	}
	desc = RelationGetDescr(td->tg_relation);
	if (TRIGGER_FIRED_BY_UPDATE(td->tg_event))
	{
		List	   *oldkey = capture_key(cr, td->tg_trigtuple, desc);
		List	   *newkey = capture_key(cr, td->tg_newtuple, desc);

		catalog_capture_log(cr->job_id, cr->direction, newkey);
		if (!capture_same_key(oldkey, newkey))
			catalog_capture_log(cr->job_id, cr->direction, oldkey);
	}
	else
		catalog_capture_log(cr->job_id, cr->direction,
							capture_key(cr, td->tg_trigtuple, desc));
	return PointerGetDatum(NULL);
}

/* ---- installing and removing capture ---- */

static void capture_create_trigger_ext(Oid relid, const char *name,
									   bool truncate, int16 stmt_event,
									   List *args);

static const char *
capture_trigger_name(AmJob *job, char direction, bool truncate)
{
	return psprintf("acme_migrate_%s_%lld",
					direction == 'f' ? (truncate ? "truncate" : "capture") :
					(truncate ? "rtruncate" : "reverse"),
					(long long) job->job_id);
}

/*
 * One trigger: truncate (BEFORE TRUNCATE, statement), or a row trigger
 * (event 0: AFTER INSERT OR UPDATE OR DELETE FOR EACH ROW), or a statement
 * trigger with transition tables for one event (PostgreSQL allows them
 * only one event per trigger).
 */
static void
capture_create_trigger(Oid relid, const char *name, bool truncate,
					   List *args)
{
	capture_create_trigger_ext(relid, name, truncate, 0, args);
}

static void
capture_create_trigger_ext(Oid relid, const char *name, bool truncate,
						   int16 stmt_event, List *args)
{
	CreateTrigStmt *stmt = makeNode(CreateTrigStmt);
	Oid			funcoid;

	funcoid = LookupFuncName(list_make2(makeString("acme_migrate"),
										makeString("capture_trigger")),
							 0, NULL, false);
	stmt->trigname = (char *) name;
	stmt->relation = NULL;
	stmt->funcname = list_make2(makeString("acme_migrate"),
								makeString("capture_trigger"));
	stmt->args = args;
	stmt->row = !truncate && stmt_event == 0;
	stmt->timing = truncate ? TRIGGER_TYPE_BEFORE : TRIGGER_TYPE_AFTER;
	stmt->events = truncate ? TRIGGER_TYPE_TRUNCATE :
		stmt_event != 0 ? stmt_event :
		(TRIGGER_TYPE_INSERT | TRIGGER_TYPE_UPDATE | TRIGGER_TYPE_DELETE);
	stmt->isconstraint = false;
	if (stmt_event != 0)
	{
		for (int t = 0; t < 2; t++)
		{
			TriggerTransition *tt;
			bool		isnew = t == 0;

			if ((isnew && stmt_event == TRIGGER_TYPE_DELETE) ||
				(!isnew && stmt_event == TRIGGER_TYPE_INSERT))
				continue;
			tt = makeNode(TriggerTransition);
			tt->name = isnew ? "am_new_rows" : "am_old_rows";
			tt->isNew = isnew;
			tt->isTable = true;
			stmt->transitionRels = lappend(stmt->transitionRels, tt);
		}
	}

	/*
	 * Internal: no one but the job removes it, pg_dump leaves it out and
	 * ALTER TABLE ... DISABLE TRIGGER USER does not reach it.  The caller
	 * checked the job owner's TRIGGER privilege.
	 */
	(void) CreateTrigger(stmt, NULL, relid, InvalidOid, InvalidOid, InvalidOid,
						 funcoid, InvalidOid, NULL, true, false);
}

/*
 * Capture the writes to the job's source (direction 'f') or, after
 * cut-over, to its target ('r'): a row trigger on every table among its
 * members (itself, its partitions, its inheritance children) and a
 * TRUNCATE guard on every member.  A partition attached later is not
 * captured.
 */
void
capture_install(AmJob *job, char direction)
{
	Oid			relid = direction == 'f' ? job->source_relid : job->target_relid;
	List	   *keys = direction == 'f' ? job->key_columns : job->target_key_columns;
	List	   *args = NIL;
	List	   *members;
	ListCell   *lc;
	bool		statement_mode;

	args = lappend(args, makeString(psprintf("%lld", (long long) job->job_id)));
	args = lappend(args, makeString(direction == 'f' ? "f" : "r"));
	foreach(lc, keys)
		args = lappend(args, makeString(pstrdup(lfirst(lc))));

	members = find_all_inheritors(relid, ShareRowExclusiveLock, NULL);

	/*
	 * Statement triggers with transition tables log the keys of a whole
	 * statement in one insert; PostgreSQL allows them only on a table
	 * without partitions or inheritance children.
	 */
	statement_mode = strcmp(job->capture_method, "statement") == 0 &&
		list_length(members) == 1 &&
		get_rel_relkind(relid) == RELKIND_RELATION;
	if (strcmp(job->capture_method, "statement") == 0 && !statement_mode)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("capture_method \"statement\" cannot capture \"%s\"",
						get_rel_name(relid)),
				 errdetail("Statement triggers with transition tables are not allowed on partitioned tables or tables with inheritance children."),
				 errhint("Use capture_method => 'trigger'.")));
	foreach(lc, members)
	{
		Oid			member = lfirst_oid(lc);
		char		kind = get_rel_relkind(member);

		locality_require_local(member, "capture the changes of");
		if (kind != RELKIND_RELATION && kind != RELKIND_PARTITIONED_TABLE)
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("cannot capture the changes of \"%s\"", get_rel_name(member)),
					 errdetail("Only tables and partitioned tables can be captured.")));
		/*
		 * Rows live in tables, not in partitioned tables, and PostgreSQL
		 * does not clone an internal trigger to partitions: each table
		 * member gets its own.
		 */
		if (kind == RELKIND_RELATION && statement_mode)
		{
			/* one trigger per event, each with its transition tables */
			int16		events[] = {TRIGGER_TYPE_INSERT, TRIGGER_TYPE_UPDATE,
			TRIGGER_TYPE_DELETE};

			for (int e = 0; e < lengthof(events); e++)
				capture_create_trigger_ext(member,
										   capture_trigger_name(job, direction, false),
										   false, events[e], args);
		}
		else if (kind == RELKIND_RELATION)
			capture_create_trigger(member, capture_trigger_name(job, direction, false),
								   false, args);
		capture_create_trigger(member, capture_trigger_name(job, direction, true),
							   true, list_make2(linitial(args), lsecond(args)));
	}
	CommandCounterIncrement();
}

/*
 * The job's triggers of one direction on one relation (copies of their
 * Trigger structs).  PostgreSQL appends its OID to the name of an internal
 * trigger, and a partition's clone of a parent trigger has the parent's
 * name: both are matched by the name we gave and an "_<digits>" suffix.
 */
static List *
capture_find_triggers(AmJob *job, char direction, Oid relid)
{
	Relation	rel = table_open(relid, AccessShareLock);
	List	   *found = NIL;

	if (rel->trigdesc != NULL)
	{
		for (int i = 0; i < rel->trigdesc->numtriggers; i++)
		{
			Trigger    *tg = &rel->trigdesc->triggers[i];

			for (int t = 0; t < 2; t++)
			{
				const char *name = capture_trigger_name(job, direction, t == 1);
				size_t		len = strlen(name);

				if (strncmp(tg->tgname, name, len) == 0 &&
					tg->tgname[len] == '_' && tg->tgname[len + 1] != '\0' &&
					strspn(tg->tgname + len + 1, "0123456789") ==
					strlen(tg->tgname + len + 1))
				{
					Trigger    *copy = palloc(sizeof(Trigger));

					memcpy(copy, tg, sizeof(Trigger));
					copy->tgname = pstrdup(tg->tgname);
					found = lappend(found, copy);
				}
			}
		}
	}
	table_close(rel, AccessShareLock);
	return found;
}

/*
 * Does the job still capture its source?  Its triggers are internal, and
 * pg_dump leaves internal triggers out: a job restored from a dump has
 * none, and every write made to its source since went uncaptured.  Only a
 * job whose capture runs (created to copied) is checked.
 */
bool
capture_is_installed(AmJob *job)
{
	if (!job->capture_changes ||
		strcmp(job->state, "cut_over") == 0 || strcmp(job->state, "done") == 0 ||
		strcmp(job->state, "rolled_back") == 0 ||
		strcmp(job->state, "cancelled") == 0)
		return true;
	return capture_find_triggers(job, 'f', job->source_relid) != NIL;
}

/* The report of a job whose capture triggers are gone (see above). */
void
capture_missing_error(AmJob *job, int elevel)
{
	ereport(elevel,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("capture triggers of job \"%s\" are missing", job->job_name),
			 errdetail("Writes made to \"%s\" since the triggers went away were not captured; pg_dump does not dump them, so a job restored from a dump has none.",
					   get_rel_name(job->source_relid)),
			 errhint("Drop the job and create it again.")));
}

/*
 * Remove the job's triggers of one direction from every member of its
 * table.  Dropping a trigger takes an ACCESS EXCLUSIVE lock: when
 * readers hold the table right now (nowait), the triggers are disabled
 * instead (SHARE ROW EXCLUSIVE, which readers do not wait for) and the
 * next call that removes capture, or acme_migrate_drop, drops them.
 * Returns whether they were dropped.
 */
bool
capture_remove(AmJob *job, char direction, bool nowait)
{
	Oid			relid = direction == 'f' ? job->source_relid : job->target_relid;
	List	   *members;
	ListCell   *lc;
	bool		dropped = true;

	if (!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(relid)))
		return true;			/* the table is gone, and its triggers */
	members = find_all_inheritors(relid, NoLock, NULL);
	foreach(lc, members)
	{
		if (!nowait)
			LockRelationOid(lfirst_oid(lc), AccessExclusiveLock);
		else if (!ConditionalLockRelationOid(lfirst_oid(lc), AccessExclusiveLock))
		{
			dropped = false;
			break;
		}
	}
	foreach(lc, members)
	{
		Oid			member = lfirst_oid(lc);

		List	   *found = capture_find_triggers(job, direction, member);
		ListCell   *lt;

		foreach(lt, found)
		{
			Trigger    *tg = lfirst(lt);

			if (dropped)
			{
				ObjectAddress addr;

				ObjectAddressSet(addr, TriggerRelationId, tg->tgoid);
				performDeletion(&addr, DROP_RESTRICT, PERFORM_DELETION_INTERNAL);
			}
			else if (tg->tgenabled != TRIGGER_DISABLED)
			{
				Relation	rel = table_open(member, ShareRowExclusiveLock);

				EnableDisableTrigger(rel, tg->tgname, TRIGGER_DISABLED, false,
									 ShareRowExclusiveLock);
				table_close(rel, NoLock);
			}
		}
	}
	CommandCounterIncrement();
	return dropped;
}

/* ---- catch-up ---- */

/* Prepare (once per mapping) the statement that applies keys. */
static SPIPlanPtr
capture_plan(AmMapping *map)
{
	if (map->catchup_plan == NULL)
	{
		Oid		   *argtypes = palloc(sizeof(Oid) * map->nkeys);
		SPIPlanPtr	plan;

		for (int i = 0; i < map->nkeys; i++)
		{
			argtypes[i] = get_array_type(map->key_types[i]);
			if (!OidIsValid(argtypes[i]))
				elog(ERROR, "type %u has no array type", map->key_types[i]);
		}
		plan = SPI_prepare(map->catchup_sql, map->nkeys, argtypes);
		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed for \"%s\": %s", map->catchup_sql,
				 SPI_result_code_string(SPI_result));
		if (SPI_keepplan(plan) != 0)
			elog(ERROR, "SPI_keepplan failed");
		map->catchup_plan = plan;
	}
	return map->catchup_plan;
}

/*
 * The distinct keys of a list of text keys, as one array per key column
 * (the parameters of the catch-up and verification statements).
 */
static Datum *
capture_key_arrays(AmMapping *map, List *keys, int *nunique)
{
	HTAB	   *seen = capture_key_set();
	Datum	  **cols = palloc(sizeof(Datum *) * map->nkeys);
	Datum	   *arrays = palloc(sizeof(Datum) * map->nkeys);
	int			n = 0;
	ListCell   *lc;

	for (int k = 0; k < map->nkeys; k++)
		cols[k] = palloc(sizeof(Datum) * Max(list_length(keys), 1));
	foreach(lc, keys)
	{
		Datum	   *values;

		if (capture_key_seen(seen, lfirst(lc), true))
			continue;
		values = mapping_key_from_text(map, lfirst(lc));
		for (int k = 0; k < map->nkeys; k++)
			cols[k][n] = values[k];
		n++;
	}
	for (int k = 0; k < map->nkeys; k++)
	{
		int16		typlen;
		bool		typbyval;
		char		typalign;

		get_typlenbyvalalign(map->key_types[k], &typlen, &typbyval, &typalign);
		arrays[k] = PointerGetDatum(construct_array(cols[k], n, map->key_types[k],
													typlen, typbyval, typalign));
	}
	hash_destroy(seen);
	*nunique = n;
	return arrays;
}

/*
 * Apply up to limit of the oldest log entries of one direction, in the
 * current transaction (inside SPI, as the owner); their keys are added to
 * *applied when it is not NULL.  Returns the entries applied, 0 when the
 * log is empty (or every entry is taken by another transaction).  A loop
 * in one transaction passes *after (0 at first): the entries past the
 * last one applied are taken next; the others are left to a later round.
 */
int64
capture_apply(AmJob *job, AmMapping *map, char direction, int limit,
			  int64 *after, List **applied)
{
	int64	   *seqs;
	List	   *keys;
	int			n;
	int			nunique;
	Datum	   *arrays;
	int			rc;

	n = catalog_capture_fetch(job->job_id, direction, limit,
							  after ? *after : 0, &seqs, &keys);
	if (n == 0)
		return 0;
	if (after)
		*after = seqs[n - 1];
	arrays = capture_key_arrays(map, keys, &nunique);
	rc = SPI_execute_plan(capture_plan(map), arrays, NULL, false, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not apply captured changes of job \"%s\": %s",
			 job->job_name, SPI_result_code_string(rc));
	catalog_capture_delete(job->job_id, direction, seqs, n);
	if (applied)
		*applied = list_concat(*applied, keys);
	return n;
}

/*
 * Verify the keys a cut-over drained: their mapped source rows and target
 * rows have the same row hashes.  Returns the rows that differ.
 */
static int64
capture_verify(AmMapping *map, List *keys)
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

/*
 * The job seen the other way round, for the way back after cut-over: its
 * target is read through reverse_columns and written into its source.
 */
static AmJob *
capture_reverse_job(AmJob *job)
{
	AmJob	   *rev = palloc0(sizeof(AmJob));

	rev->job_id = job->job_id;
	rev->job_name = job->job_name;
	rev->owner = job->owner;
	rev->search_path = job->search_path;
	rev->source_relid = job->target_relid;
	rev->target_relid = job->source_relid;
	rev->key_columns = job->target_key_columns;
	rev->on_conflict = AM_CONFLICT_UPDATE;
	rev->max_error_rate = -1;
	rev->lock_timeout_ms = -1;
	rev->capture_changes = true;
	rev->definition_version = job->definition_version;
	mapping_resolve_new_job(rev, job->reverse_columns, false);
	return rev;
}

/*
 * Check at create time everything capture will need, and install it: the
 * source must be a table, the owner must hold TRIGGER on it (and on the
 * target for reverse capture), on_conflict must be 'update', and the
 * reverse mapping must make sense.
 */
void
capture_check_and_install(AmJob *job)
{
	char		kind = get_rel_relkind(job->source_relid);

	if (kind != RELKIND_RELATION && kind != RELKIND_PARTITIONED_TABLE)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot capture the changes of \"%s\"",
						get_rel_name(job->source_relid)),
				 errdetail("capture_changes needs a table or partitioned table as source.")));
	if (job->on_conflict != AM_CONFLICT_UPDATE)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("capture_changes requires on_conflict => 'update'"),
				 errdetail("Catch-up writes the current source row over the one the copy wrote.")));
	if (pg_class_aclcheck(job->source_relid, job->owner, ACL_TRIGGER) != ACLCHECK_OK)
		aclcheck_error(ACLCHECK_NO_PRIV, OBJECT_TABLE,
					   get_rel_name(job->source_relid));
	if (job->reverse_columns)
	{
		AmJob	   *rev;

		locality_require_local(job->target_relid, "capture the changes of");

		if (pg_class_aclcheck(job->target_relid, job->owner, ACL_TRIGGER) != ACLCHECK_OK)
			aclcheck_error(ACLCHECK_NO_PRIV, OBJECT_TABLE,
						   get_rel_name(job->target_relid));
		rev = capture_reverse_job(job);
		(void) mapping_build(rev, true);
	}
	capture_install(job, 'f');
}

/*
 * One step of catch-up for acme_migrate_run and workers (a job "copied"
 * with capture): up to CAPTURE_CHUNK entries, in the current transaction.
 */
int64
capture_catch_up_step(AmJob *job, AmMapping *map)
{
	AmOwnerContext owner_cxt;
	int64		n;

	if (!capture_is_installed(job))
		capture_missing_error(job, ERROR);
	am_begin_as_owner(job, &owner_cxt);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	n = capture_apply(job, map, 'f', CAPTURE_CHUNK, NULL, NULL);
	SPI_finish();
	am_end_as_owner(&owner_cxt);
	return n;
}

/*
 * acme_migrate_catch_up(job, max_time) returns bigint
 *
 * Apply captured changes in the caller's transaction until none is left
 * or max_time has passed; returns the log entries applied.
 */
Datum
acme_migrate_catch_up(PG_FUNCTION_ARGS)
{
	AmJob	   *job;
	AmMapping  *map;
	AmOwnerContext owner_cxt;
	int64		max_ms = -1;
	int64		total = 0;
	int64		n;
	int64		after = 0;
	TimestampTz start = GetCurrentTimestamp();

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("job must not be null")));
	if (!PG_ARGISNULL(1))
		max_ms = am_interval_ms(PG_GETARG_INTERVAL_P(1), "max_time", false);
	job = catalog_job_get(text_to_cstring(PG_GETARG_TEXT_PP(0)), false);
	capture_check_state(job, "catch up");
	if (!batch_lock_job(job->job_id, ExclusiveLock, false))
	{
		ereport(NOTICE,
				(errmsg("job \"%s\" is busy in another session", job->job_name),
				 errdetail("Its workers or another session catch it up; nothing was applied here.")));
		PG_RETURN_INT64(0);
	}
	map = mapping_build(job, false);
	am_begin_as_owner(job, &owner_cxt);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	do
	{
		CHECK_FOR_INTERRUPTS();
		n = capture_apply(job, map, 'f', CAPTURE_CHUNK, &after, NULL);
		total += n;
	} while (n > 0 &&
			 (max_ms < 0 ||
			  TimestampDifferenceMilliseconds(start, GetCurrentTimestamp()) < max_ms));
	SPI_finish();
	am_end_as_owner(&owner_cxt);
	PG_RETURN_INT64(total);
}

/*
 * May the job's captured changes be applied now?  Only between create and
 * cut-over.
 */
void
capture_check_state(AmJob *job, const char *what)
{
	if (!job->capture_changes)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("job \"%s\" does not capture changes", job->job_name),
				 errhint("Create the job with capture_changes => true to %s it.", what)));
	if (strcmp(job->state, "cut_over") == 0 || strcmp(job->state, "done") == 0 ||
		strcmp(job->state, "rolled_back") == 0 ||
		strcmp(job->state, "cancelled") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot %s job \"%s\", which is %s", what, job->job_name,
						strcmp(job->state, "cut_over") == 0 ? "cut over" :
						strcmp(job->state, "rolled_back") == 0 ? "rolled back" :
						job->state)));
	if (!capture_is_installed(job))
		capture_missing_error(job, ERROR);
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

/* Catch up outside the lock for at most ms milliseconds. */
static void
capture_catch_up_for(LockRound *lr, int64 ms)
{
	TimestampTz start = GetCurrentTimestamp();

	int64		n;
	int64		after = 0;

	while ((n = capture_apply(lr->job, lr->map, lr->direction, CAPTURE_CHUNK,
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
capture_lock_attempt(LockRound *lr, int64 *wait_ms, int64 *held_ms)
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
		do
		{
			CHECK_FOR_INTERRUPTS();
			n = capture_apply(lr->job, lr->map, lr->direction, CAPTURE_CHUNK,
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
capture_lock_round(LockRound *lr)
{
	for (lr->attempts = 1; lr->attempts <= lr->max_attempts; lr->attempts++)
	{
		int64		wait_ms = 0;
		int64		held_ms;
		const char *outcome;

		/* little left to drain under the lock: catch up first */
		capture_catch_up_for(lr, 10000);
		outcome = capture_lock_attempt(lr, &wait_ms, &held_ms);
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
capture_held_ms(LockRound *lr)
{
	return TimestampDifferenceMilliseconds(lr->locked_at, GetCurrentTimestamp());
}

/*
 * Cut-over and rollback must be the only ones applying the log: they stop
 * the job's workers and take its lock, and they must see every entry
 * committed before they got their table lock, which only READ COMMITTED
 * gives.
 */
static void
capture_own_job(AmJob *job, const char *what)
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
capture_then_sql(AmJob *job, const char *then_sql)
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
capture_interval_arg(FunctionCallInfo fcinfo, int n, const char *name,
					 int64 dflt)
{
	return PG_ARGISNULL(n) ? dflt :
		am_interval_ms(PG_GETARG_INTERVAL_P(n), name, false);
}

/*
 * acme_migrate_cutover(job, lock_timeout, max_lock_time, then_sql,
 *						max_attempts)
 *		returns (attempts, lock_held, changes_drained, verified)
 */
Datum
acme_migrate_cutover(PG_FUNCTION_ARGS)
{
	LockRound	lr;
	AmJob	   *job;
	AmOwnerContext owner_cxt;
	TupleDesc	tupdesc;
	Datum		values[4];
	bool		nulls[4] = {false};
	char	   *then_sql;
	int64		differ = 0;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("job must not be null")));
	memset(&lr, 0, sizeof(lr));
	lr.operation = "cutover";
	lr.direction = 'f';
	lr.lock_timeout_ms = Min(capture_interval_arg(fcinfo, 1, "lock_timeout", 200),
							 INT_MAX);
	lr.max_lock_ms = capture_interval_arg(fcinfo, 2, "max_lock_time", 1000);
	then_sql = PG_ARGISNULL(3) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(3));
	lr.max_attempts = PG_ARGISNULL(4) ? 50 : PG_GETARG_INT32(4);
	if (lr.max_attempts < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_attempts must be greater than zero")));
	lr.started = GetCurrentTimestamp();

	job = catalog_job_get(text_to_cstring(PG_GETARG_TEXT_PP(0)), true);
	capture_check_state(job, "cut over");
	if (strcmp(job->state, "copied") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot cut over job \"%s\" before its copy is done", job->job_name),
				 errdetail("The job is %s.", job->state),
				 errhint("Finish the copy with acme_migrate_run or acme_migrate_start; the job is then \"copied\".")));
	capture_own_job(job, "cut over");
	lr.job = job;
	lr.map = mapping_build(job, false);
	lr.relid = job->source_relid;

	am_begin_as_owner(job, &owner_cxt);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (!capture_lock_round(&lr))
	{
		SPI_finish();
		am_end_as_owner(&owner_cxt);
		ereport(WARNING,
				(errmsg("job \"%s\" was not cut over: the lock was not had in %d attempts",
						job->job_name, lr.attempts),
				 errhint("Try again later, or with a longer lock_timeout or max_lock_time; the attempts are in acme_migrate.cutovers.")));
		values[0] = Int32GetDatum(lr.attempts);
		nulls[1] = true;
		values[2] = Int64GetDatum(0);
		values[3] = BoolGetDatum(false);
		PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
	}

	/* under the lock: verify, sequences, then_sql, capture off */
	differ = capture_verify(lr.map, lr.drained_keys);
	if (differ > 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("cut-over of job \"%s\" found %lld drained rows that differ",
						job->job_name, (long long) differ),
				 errdetail("The drained keys' mapped source rows and target rows do not have the same row hashes."),
				 errhint("Nothing was switched over; reconcile the job to see the rows.")));
	am_advance_sequences(job, true);
	capture_then_sql(job, then_sql);
	(void) capture_remove(job, 'f', true);
	catalog_capture_clear(job->job_id, 'f');
	if (job->reverse_columns)
		capture_install(job, 'r');
	catalog_job_set_state(job, "cut_over", NULL);
	catalog_job_cut_over_at(job);
	catalog_cutover_attempt(job->job_id, lr.operation, lr.attempts, lr.started,
							lr.lock_wait_ms, capture_held_ms(&lr), lr.drained,
							"done");
	SPI_finish();
	am_end_as_owner(&owner_cxt);

	values[0] = Int32GetDatum(lr.attempts);
	values[1] = PointerGetDatum(am_ms_interval(capture_held_ms(&lr)));
	values[2] = Int64GetDatum(lr.drained);
	values[3] = BoolGetDatum(differ == 0);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
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
				Datum		d = SPI_getbinval(SPI_tuptable->vals[i],
											  SPI_tuptable->tupdesc, 1, &isnull);

				catalog_preimage_insert(job->job_id, DatumGetJsonbP(d));
			}
			SPI_freetuptable(SPI_tuptable);
		}
		SPI_cursor_close(portal);
		SPI_finish();
	}
}

/* "c1, c2, ...": the target's columns a row can be inserted into */
static char *
capture_insertable_columns(Oid relid, const char *prefix)
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
capture_restore_target(AmJob *job, int64 *deleted, int64 *restored,
					   bool *equal)
{
	const char *tgt = mapping_relname(job->target_relid);
	char	   *cols = capture_insertable_columns(job->target_relid, "");
	char	   *rcols = capture_insertable_columns(job->target_relid, "r.");
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
	am_begin_as_owner(job, &owner_cxt);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	capture_restore_target(job, deleted, restored, equal);
	capture_then_sql(job, then_sql);
	SPI_finish();
	am_end_as_owner(&owner_cxt);
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
 * acme_migrate_rollback(job, then_sql, lock_timeout, max_attempts)
 *		returns (rows_deleted, rows_restored, changes_returned,
 *				 target_hash_equal)
 */
Datum
acme_migrate_rollback(PG_FUNCTION_ARGS)
{
	AmJob	   *job;
	AmOwnerContext owner_cxt;
	TupleDesc	tupdesc;
	Datum		values[4];
	bool		nulls[4] = {false};
	char	   *then_sql;
	int64		lock_timeout_ms;
	int			max_attempts;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("job must not be null")));
	then_sql = PG_ARGISNULL(1) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(1));
	lock_timeout_ms = Min(capture_interval_arg(fcinfo, 2, "lock_timeout", 200), INT_MAX);
	max_attempts = PG_ARGISNULL(3) ? 50 : PG_GETARG_INT32(3);
	if (max_attempts < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_attempts must be greater than zero")));
	job = catalog_job_get(text_to_cstring(PG_GETARG_TEXT_PP(0)), false);
	if (strcmp(job->state, "rolled_back") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("job \"%s\" is already rolled back", job->job_name)));

	/* nothing may copy or catch up meanwhile */
	capture_own_job(job, "roll back");
	job = catalog_job_get(job->job_name, true);

	if (strcmp(job->state, "cut_over") != 0)
	{
		int64		deleted;
		int64		restored;
		bool		equal;

		capture_rollback_before_cutover(job, then_sql, NULL, &deleted,
										&restored, &equal);
		values[0] = Int64GetDatum(deleted);
		values[1] = Int64GetDatum(restored);
		values[2] = Int64GetDatum(0);
		values[3] = BoolGetDatum(equal);
	}
	else
	{
		LockRound	lr;
		AmJob	   *rev;
		int64		differ;

		if (job->reverse_columns == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("cannot roll back job \"%s\" after its cut-over", job->job_name),
					 errdetail("It was created without reverse_columns, so the writes made to the target since were not captured."),
					 errhint("Swap the tables back by hand; the writes made to the target since the cut-over are not in the source.")));
		memset(&lr, 0, sizeof(lr));
		lr.operation = "rollback";
		lr.direction = 'r';
		lr.lock_timeout_ms = lock_timeout_ms;
		lr.max_lock_ms = 1000;
		lr.max_attempts = max_attempts;
		lr.started = GetCurrentTimestamp();
		rev = capture_reverse_job(job);
		lr.job = job;
		lr.map = mapping_build(rev, false);
		lr.relid = job->target_relid;
		am_begin_as_owner(job, &owner_cxt);
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		if (!capture_lock_round(&lr))
			ereport(ERROR,
					(errcode(ERRCODE_LOCK_NOT_AVAILABLE),
					 errmsg("could not lock the target of job \"%s\" in %d attempts",
							job->job_name, lr.attempts),
					 errhint("Try again later, or with a longer lock_timeout.")));
		differ = capture_verify(lr.map, lr.drained_keys);
		if (differ > 0)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_EXCEPTION),
					 errmsg("rollback of job \"%s\" found %lld replayed rows that differ",
							job->job_name, (long long) differ),
					 errhint("Nothing was switched back.")));
		capture_then_sql(job, then_sql);
		(void) capture_remove(job, 'r', true);
		catalog_capture_clear(job->job_id, 'r');
		catalog_job_set_state(job, "rolled_back", NULL);
		catalog_cutover_attempt(job->job_id, lr.operation, lr.attempts, lr.started,
								lr.lock_wait_ms, capture_held_ms(&lr), lr.drained,
								"done");
		SPI_finish();
		am_end_as_owner(&owner_cxt);
		values[0] = Int64GetDatum(0);
		values[1] = Int64GetDatum(0);
		values[2] = Int64GetDatum(lr.applied);
		values[3] = BoolGetDatum(differ == 0);
	}
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
