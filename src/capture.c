/*-------------------------------------------------------------------------
 *
 * capture.c
 *	  Online migration: change capture and catch-up (cut-over and rollback
 *	  are in cutover.c).
 *
 * Capture.  A job created with capture_changes puts row triggers on its
 * source (internal ones: not dumped, not disabled by DISABLE TRIGGER USER)
 * in the transaction that creates it, so no write falls between the copy's
 * first snapshot and capture.  The trigger logs the *key* of each written
 * row (old and new key when an update moves it) in acme_migrate.capture_log,
 * in the writing transaction: a log entry commits or aborts with its write.
 * TRUNCATE of the source, or of any of its partitions, is refused.
 *
 * Catch-up.  Entries are taken (deleted) in storage order, by one
 * transaction of a job at a time; each distinct key is then applied in one
 * statement per set of keys: the current source row, mapped, is written
 * into the target (rows replaced, or upserted when the target has triggers
 * or is referenced), or the target's row is deleted when the source has
 * none (or the filter leaves it out).  The entries go in the transaction
 * that applied them.  Since a key is applied as
 * the source is *now*, applying an entry twice, or after a later one, can
 * never leave the target wrong: a crash at any moment leaves each entry
 * either applied and gone or still there, and applying it again is
 * harmless.
 *
 * Everything here runs the job's SQL as its owner (security.c).
 *
 *-------------------------------------------------------------------------
 */
#include "acme_migrate.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/relation.h"
#include "access/table.h"
#include "access/tableam.h"
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

/* A capture trigger's view of its relation: job, direction, key columns. */
static CaptureRel *
capture_rel(Trigger *tg, Relation rel)
{
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

	cr = capture_rel(td->tg_trigger, td->tg_relation);
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
static List *capture_trigger_relids(AmJob *job, char direction,
									bool enabled_only);

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

/* The arguments of the job's row triggers: job, direction, key columns. */
static List *
capture_trigger_args(AmJob *job, char direction)
{
	List	   *keys = direction == 'f' ? job->key_columns : job->target_key_columns;
	List	   *args = NIL;
	ListCell   *lc;

	args = lappend(args, makeString(psprintf("%lld", (long long) job->job_id)));
	args = lappend(args, makeString(direction == 'f' ? "f" : "r"));
	foreach(lc, keys)
		args = lappend(args, makeString(pstrdup(lfirst(lc))));
	return args;
}

/*
 * The triggers of one member: a row trigger (or, statement_mode, one
 * statement trigger per event, each with its transition tables) on a
 * table, and a TRUNCATE guard on every member.  Rows live in tables, not
 * in partitioned tables, and PostgreSQL does not clone an internal
 * trigger to partitions: each table member gets its own.
 */
static void
capture_install_member(AmJob *job, char direction, Oid member,
					   bool statement_mode)
{
	List	   *args = capture_trigger_args(job, direction);
	char		kind = get_rel_relkind(member);

	locality_require_local(member, "capture the changes of");
	if (kind != RELKIND_RELATION && kind != RELKIND_PARTITIONED_TABLE)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot capture the changes of \"%s\"", get_rel_name(member)),
				 errdetail("Only tables and partitioned tables can be captured.")));
	if (kind == RELKIND_RELATION && statement_mode)
	{
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

/*
 * Capture the writes to the job's source (direction 'f') or, after
 * cut-over, to its target ('r'): triggers on every member of the table
 * (itself, its partitions, its inheritance children).  Members added
 * later are taken in by capture_sync_members.
 */
void
capture_install(AmJob *job, char direction)
{
	Oid			relid = direction == 'f' ? job->source_relid : job->target_relid;
	List	   *members;
	ListCell   *lc;
	bool		statement_mode;

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
		capture_install_member(job, direction, lfirst_oid(lc), statement_mode);
	CommandCounterIncrement();
}

/*
 * Is tgname one of the job's triggers of one direction?  PostgreSQL appends
 * its OID to the name of an internal trigger, and a partition's clone of a
 * parent trigger has the parent's name: both are matched by the name we
 * gave and an "_<digits>" suffix.
 */
static bool
capture_trigger_is(const char *tgname, AmJob *job, char direction,
				   bool truncate)
{
	const char *name = capture_trigger_name(job, direction, truncate);
	size_t		len = strlen(name);

	return strncmp(tgname, name, len) == 0 &&
		tgname[len] == '_' && tgname[len + 1] != '\0' &&
		strspn(tgname + len + 1, "0123456789") == strlen(tgname + len + 1);
}

/* The job's triggers of one direction on one relation (copies). */
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
				if (capture_trigger_is(tg->tgname, job, direction, t == 1))
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
 * Does the job's source capture in this state?  From creation to copied:
 * not once the job is cut over (the target captures then, the other way)
 * or in a final state (catalog.c's list).
 */
static bool
capture_state_captures(AmJob *job)
{
	return !am_job_state(job->state)->final &&
		strcmp(job->state, "cut_over") != 0;
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
		!capture_state_captures(job))
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
	/* its members, and tables detached from it since capture started */
	members = list_concat_unique_oid(find_all_inheritors(relid, NoLock, NULL),
									 capture_trigger_relids(job, direction, false));
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

/*
 * The relations that hold the job's triggers of one direction (enabled
 * ones only, or all), wherever they are now: pg_trigger is scanned (it has
 * no index on names), so that a partition detached from the job's table is
 * found too.
 */
static List *
capture_trigger_relids(AmJob *job, char direction, bool enabled_only)
{
	Relation	trigrel = table_open(TriggerRelationId, AccessShareLock);
	SysScanDesc scan = systable_beginscan(trigrel, InvalidOid, false, NULL,
										  0, NULL);
	HeapTuple	tup;
	List	   *relids = NIL;

	while ((tup = systable_getnext(scan)) != NULL)
	{
		Form_pg_trigger tg = (Form_pg_trigger) GETSTRUCT(tup);

		if (enabled_only && tg->tgenabled == TRIGGER_DISABLED)
			continue;
		if (capture_trigger_is(NameStr(tg->tgname), job, direction, false) ||
			capture_trigger_is(NameStr(tg->tgname), job, direction, true))
			relids = list_append_unique_oid(relids, tg->tgrelid);
	}
	systable_endscan(scan);
	table_close(trigrel, AccessShareLock);
	return relids;
}

/*
 * Log the key of every row a table holds now, through the job's row
 * trigger on it (its key columns), read under a snapshot taken after the
 * caller's lock: catch-up then applies each as it applies a captured
 * write.  Returns the rows logged.
 */
static int64
capture_log_rows(AmJob *job, char direction, Oid relid)
{
	Relation	rel = table_open(relid, NoLock);
	List	   *found = capture_find_triggers(job, direction, relid);
	Trigger    *row = NULL;
	ListCell   *lc;
	int64		n = 0;

	foreach(lc, found)
		if (capture_trigger_is(((Trigger *) lfirst(lc))->tgname, job, direction, false))
			row = lfirst(lc);
	if (row != NULL)
	{
		CaptureRel *cr = capture_rel(row, rel);
		Snapshot	snap = RegisterSnapshot(GetLatestSnapshot());
		TableScanDesc scan = table_beginscan(rel, snap, 0, NULL);
		HeapTuple	tup;

		while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
		{
			CHECK_FOR_INTERRUPTS();
			catalog_capture_log(job->job_id, direction,
								capture_key(cr, tup, RelationGetDescr(rel)));
			n++;
		}
		table_endscan(scan);
		UnregisterSnapshot(snap);
	}
	table_close(rel, NoLock);
	return n;
}

/*
 * Follow the members of the job's table (source for 'f', target after
 * cut-over for 'r') as they come and go, before each catch-up and under
 * the cut-over's lock.  PostgreSQL does not clone an internal trigger to a
 * partition created or attached later, so the writes made to it were not
 * captured: each new member gets the job's triggers, under the SHARE ROW
 * EXCLUSIVE lock that creating them takes (its writers wait for this
 * transaction), and the key of every row it holds is logged.  A table
 * detached since holds rows the job's table no longer has: their keys are
 * logged too (catch-up then removes them from the other side, or writes
 * the row the job's table has under that key now), and the job's triggers
 * leave it.  Returns the keys logged.
 */
int64
capture_sync_members(AmJob *job, char direction)
{
	Oid			relid = direction == 'f' ? job->source_relid : job->target_relid;
	List	   *members;
	List	   *holders;
	ListCell   *lc;
	int64		logged = 0;

	/* a plain table that never had members: nothing to follow */
	if (get_rel_relkind(relid) == RELKIND_RELATION && !has_subclass(relid))
		return 0;
	members = find_all_inheritors(relid, AccessShareLock, NULL);
	holders = capture_trigger_relids(job, direction, true);
	foreach(lc, members)
	{
		Oid			member = lfirst_oid(lc);

		if (list_member_oid(holders, member))
			continue;
		LockRelationOid(member, ShareRowExclusiveLock);
		capture_install_member(job, direction, member, false);
		CommandCounterIncrement();
		logged += capture_log_rows(job, direction, member);
		ereport(NOTICE,
				(errmsg("job \"%s\" now captures \"%s\", which joined \"%s\" after capture started",
						job->job_name, get_rel_name(member), get_rel_name(relid)),
				 errdetail("The keys of its rows were logged for catch-up.")));
	}
	foreach(lc, holders)
	{
		Oid			holder = lfirst_oid(lc);
		List	   *found;
		ListCell   *lt;
		bool		dropping;

		if (list_member_oid(members, holder))
			continue;
		LockRelationOid(holder, ShareRowExclusiveLock);
		logged += capture_log_rows(job, direction, holder);
		/*
		 * Dropping a trigger waits for the table's readers: when any hold
		 * it, the triggers are disabled (capture_remove drops them later).
		 */
		dropping = ConditionalLockRelationOid(holder, AccessExclusiveLock);
		found = capture_find_triggers(job, direction, holder);
		foreach(lt, found)
		{
			Trigger    *tg = lfirst(lt);
			ObjectAddress addr;

			ObjectAddressSet(addr, TriggerRelationId, tg->tgoid);
			if (dropping)
				performDeletion(&addr, DROP_RESTRICT, PERFORM_DELETION_INTERNAL);
			else
			{
				Relation	rel = table_open(holder, NoLock);

				EnableDisableTrigger(rel, tg->tgname, TRIGGER_DISABLED, false,
									 ShareRowExclusiveLock);
				table_close(rel, NoLock);
			}
		}
		ereport(NOTICE,
				(errmsg("job \"%s\" no longer captures \"%s\", which left \"%s\"",
						job->job_name, get_rel_name(holder), get_rel_name(relid)),
				 errdetail("The keys of its rows were logged for catch-up.")));
	}
	CommandCounterIncrement();
	return logged;
}

/* ---- catch-up ---- */

/* Prepare (once per mapping) a statement taking one key array per key column. */
static SPIPlanPtr
capture_plan(AmMapping *map, const char *sql, SPIPlanPtr *plan)
{
	if (*plan == NULL)
	{
		Oid		   *argtypes = palloc(sizeof(Oid) * map->nkeys);
		SPIPlanPtr	p;

		for (int i = 0; i < map->nkeys; i++)
		{
			argtypes[i] = get_array_type(map->key_types[i]);
			if (!OidIsValid(argtypes[i]))
				elog(ERROR, "type %u has no array type", map->key_types[i]);
		}
		p = SPI_prepare(sql, map->nkeys, argtypes);
		if (p == NULL)
			elog(ERROR, "SPI_prepare failed for \"%s\": %s", sql,
				 SPI_result_code_string(SPI_result));
		if (SPI_keepplan(p) != 0)
			elog(ERROR, "SPI_keepplan failed");
		*plan = p;
	}
	return *plan;
}

/*
 * May catch-up replace a target's rows of some keys (delete them, insert
 * the source's) rather than upsert them?  Only when nothing can tell the
 * difference: a plain table with no rule and no trigger but those checking
 * its own foreign keys.  A table that others reference (its rows' delete
 * would cascade or be refused), or with triggers of its own (they would see
 * deletes and inserts, not updates), is upserted.  Checked at each chunk:
 * a trigger or reference added while the job runs is honoured at once.
 */
static bool
capture_can_replace(Oid relid)
{
	Relation	rel = table_open(relid, RowExclusiveLock);
	bool		ok;

	ok = rel->rd_rel->relkind == RELKIND_RELATION && rel->rd_rules == NULL;
	for (int i = 0; ok && rel->trigdesc && i < rel->trigdesc->numtriggers; i++)
	{
		Trigger    *tg = &rel->trigdesc->triggers[i];

		if (!tg->tgisinternal || RI_FKey_trigger_type(tg->tgfoid) != RI_TRIGGER_FK)
			ok = false;
	}
	table_close(rel, NoLock);
	return ok;
}

/* Run one catch-up statement on the key arrays (inside SPI, as the owner). */
static void
capture_exec(AmJob *job, AmMapping *map, const char *sql, SPIPlanPtr *plan,
			 Datum *arrays)
{
	int			rc = SPI_execute_plan(capture_plan(map, sql, plan), arrays,
									  NULL, false, 0);

	if (rc < 0)
		elog(ERROR, "could not apply captured changes of job \"%s\": %s",
			 job->job_name, SPI_result_code_string(rc));
}

/*
 * The distinct keys of a list of text keys, as one array per key column
 * (the parameters of the catch-up and verification statements).
 */
Datum *
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
 * log is empty or another transaction is taking entries of the job (one
 * at a time: the entries are taken without row locks; a drain, which
 * passes applied, waits for it instead).  A caller that loops passes
 * *after (0 at first), where the log's scan resumes: in one transaction,
 * entries it took itself are not walked over again and again (catch-up
 * was quadratic in the backlog).  Only when nothing is left after it does
 * the scan start over, so 0 means no entry is left.
 */
int64
capture_apply(AmJob *job, AmMapping *map, char direction, int limit,
			  int64 *after, List **applied)
{
	LOCKTAG		tag;
	int64		last;
	List	   *keys;
	int			n;
	int			nunique;
	Datum	   *arrays;

	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, AM_LOCK_CLASS, (uint32) job->job_id, 6);
	if (LockAcquire(&tag, ExclusiveLock, false, applied == NULL) ==
		LOCKACQUIRE_NOT_AVAIL)
		return 0;
	n = catalog_capture_take(job->job_id, direction, limit,
							 after ? *after : 0, &last, &keys);
	if (n == 0 && after && *after > 0)
	{
		/* entries may have gone into space freed before *after */
		*after = 0;
		n = catalog_capture_take(job->job_id, direction, limit, 0, &last,
								 &keys);
	}
	if (n == 0)
		return 0;
	if (after)
		*after = last;
	arrays = capture_key_arrays(map, keys, &nunique);
	if (capture_can_replace(map->target_relid))
	{
		capture_exec(job, map, map->catchup_delete_sql,
					 &map->catchup_delete_plan, arrays);
		capture_exec(job, map, map->catchup_insert_sql,
					 &map->catchup_insert_plan, arrays);
	}
	else
		capture_exec(job, map, map->catchup_sql, &map->catchup_plan, arrays);
	if (applied)
		*applied = list_concat(*applied, keys);
	return n;
}

/*
 * The job seen the other way round, for the way back after cut-over: its
 * target is read through reverse_columns and written into its source.
 */
AmJob *
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
 * with capture): up to AM_CAPTURE_CHUNK entries, in the current transaction.
 */
int64
capture_catch_up_step(AmJob *job, AmMapping *map)
{
	AmOwnerContext owner_cxt;
	int64		n;

	if (!capture_is_installed(job))
		capture_missing_error(job, ERROR);
	(void) capture_sync_members(job, 'f');
	am_begin_writing_as_owner(job, job->target_relid, &owner_cxt);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	n = capture_apply(job, map, 'f', AM_CAPTURE_CHUNK, &map->catchup_after, NULL);
	SPI_finish();
	am_end_as_owner(&owner_cxt);
	return n;
}

/* ---- acme_migrate_catch_up: a driver (driver.c) in the caller's transaction ---- */

static AmJob *
catch_up_load(AmDriver *d)
{
	return catalog_job_get((const char *) d->arg, false);
}

/* A failed chunk fails the call, and its transaction with it. */
static bool
catch_up_failed(AmDriver *d, ErrorData *edata)
{
	ReThrowError(edata);
	return false;
}

/*
 * The caller's transaction goes on (no begin, commit); sleeps and waits are
 * the driver's own.
 */
static const AmDriverOps catch_up_ops = {
	.load = catch_up_load,
	.failed = catch_up_failed,
};

/*
 * acme_migrate_catch_up(job, max_time) returns bigint
 *
 * Apply captured changes in the caller's transaction until none is left
 * or max_time has passed; returns the log entries applied.  The turns are
 * the driver's, as for workers: one chunk of the log each, in a
 * subtransaction, under the job's lock_timeout, max_rows_per_second and
 * max_replication_lag.
 */
Datum
acme_migrate_catch_up(PG_FUNCTION_ARGS)
{
	AmJob	   *job;
	AmDriver	d;
	int64		max_ms = -1;

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
	driver_init(&d, &catch_up_ops, job->job_name, job->job_id,
				CurrentMemoryContext);
	d.max_time_ms = max_ms;
	d.catch_up_only = true;
	d.caller_xact = true;
	driver_run(&d);
	driver_end(&d);
	PG_RETURN_INT64(d.rows_total);
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
	if (!capture_state_captures(job))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot %s job \"%s\", which is %s", what, job->job_name,
						strcmp(job->state, "cut_over") == 0 ? "cut over" :
						strcmp(job->state, "rolled_back") == 0 ? "rolled back" :
						job->state)));
	if (!capture_is_installed(job))
		capture_missing_error(job, ERROR);
}

