/*-------------------------------------------------------------------------
 *
 * fk.c
 *	  Foreign keys of the target checked once per batch, with one set-based
 *	  query per foreign key, instead of once per row by PostgreSQL's RI
 *	  triggers.
 *
 * An INSERT queues one RI_FKey_check_ins event per row and foreign key; each
 * runs "SELECT 1 FROM ONLY parent x WHERE pk = $1 FOR KEY SHARE OF x" through
 * SPI at the end of the statement.  The direct writer (writer.c) inserts its
 * heap tuples itself, so for the foreign keys it can check itself it leaves
 * those events out of its own copy of the target's trigger list (every other
 * trigger still fires) and, after the batch's rows and their other AFTER
 * triggers, runs for each such foreign key:
 *
 *	 WITH k AS MATERIALIZED (SELECT * FROM ROWS FROM (unnest($1), ...)
 *							 WITH ORDINALITY AS k(f1, ..., i)),
 *		  p AS MATERIALIZED (SELECT x.pk1 AS p1, ... FROM [ONLY] parent x
 *							 WHERE EXISTS (SELECT 1 FROM k WHERE x.pk1 = k.f1
 *							 AND ...) FOR KEY SHARE OF x)
 *	 SELECT (SELECT count(*) FROM p),
 *			(SELECT k.i FROM k WHERE NOT EXISTS (SELECT 1 FROM p WHERE
 *			 p.p1 = k.f1 AND ...) ORDER BY k.i LIMIT 1)
 *
 * over arrays of the batch's referencing values.  It is the RI trigger's
 * query made set-based, run the way ri_PerformCheck runs it: as the owner
 * of the referenced table (restricted, row-level security not forced), with
 * the same operators (the constraint's PK = FK operators, casts added as the
 * RI queries add them), ONLY unless the referenced table is partitioned, a
 * fresh snapshot in READ COMMITTED and the RI triggers' snapshots otherwise,
 * and the same FOR KEY SHARE lock on every referenced row: a concurrent
 * DELETE of a parent waits for the batch, or, if it committed first, the
 * batch finds the parent gone, exactly as with the triggers.  The count
 * reads all of p, so every referenced row is locked whatever the plan.
 * A one-column foreign key first takes a faster path (fk_fast_sql) that
 * locks the same rows and needs the query above only when a parent may be
 * missing.
 *
 * A violation raises the RI trigger's own error (SQLSTATE 23503, the same
 * message, detail and constraint), for the row the triggers would have
 * reported first: the first row of the batch, and for one row the foreign
 * key whose trigger sorts first.  Under on_error = 'reject' batch.c then
 * isolates the row like any other failing row.  NULLs follow the match
 * type: MATCH SIMPLE checks nothing for a row with a NULL in the key, MATCH
 * FULL nothing for an all-NULL key and raises the triggers' error for a
 * partly NULL one.  Rows of the same batch count as parents (a
 * self-referencing table), since the query sees the batch's rows.
 *
 * A foreign key left to the per-row triggers: a DEFERRABLE one, MATCH PARTIAL, a key
 * column type without an array type, and a trigger that would not fire now
 * (disabled, or session_replication_role), which is left exactly as
 * PostgreSQL would leave it.  The constraints themselves are never touched.
 *
 * One difference of order remains: the check runs after the batch's other
 * AFTER ROW triggers, where the RI triggers run among them in name order.
 *
 * Deferred foreign keys.  A batch writes as the job's owner in a
 * security-restricted operation (security.c), and PostgreSQL refuses to
 * queue a deferred trigger from one ("cannot fire deferred trigger within
 * security-restricted operation", 42501): no batch could write into a
 * target with a deferred foreign key.  So before any writer of a job's rows
 * becomes restricted (am_begin_writing_as_owner: batches, catch-up, cut-over,
 * rollback) fk_set_immediate() makes the target's deferrable foreign keys IMMEDIATE
 * for the rest of the transaction, as SET CONSTRAINTS ... IMMEDIATE does
 * (which first checks what earlier statements of the transaction left
 * pending for them): their per-row triggers check the batch's rows at the
 * end of its statement instead of at commit.  Where a batch is its own
 * transaction (acme_migrate_run, workers) that is the same; a caller of
 * acme_migrate_batch inside a transaction of its own sees those checks
 * happen at the batch.  (SET CONSTRAINTS names constraints by schema and
 * name, so a deferrable constraint of another table in the target's schema
 * with the same name becomes IMMEDIATE too.)
 *
 *-------------------------------------------------------------------------
 */
#include "acme_migrate.h"

#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/pg_am.h"
#include "catalog/pg_class.h"
#include "catalog/pg_constraint.h"
#include "catalog/pg_inherits.h"
#include "catalog/pg_operator.h"
#include "catalog/pg_trigger.h"
#include "commands/defrem.h"
#include "commands/trigger.h"
#include "executor/tuptable.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/rls.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

/* a foreign key checked by the batch */
typedef struct FkCheck
{
	Oid			conoid;
	Oid			pk_relid;
	bool		pk_partitioned;
	bool		match_full;
	int			nkeys;
	AttrNumber	fk_attnums[INDEX_MAX_KEYS];
	Oid			fk_types[INDEX_MAX_KEYS];
	SPIPlanPtr	plan;			/* the exact check (file header) */
	SPIPlanPtr	fast_plan;		/* one key column: the fast path, or NULL */
	/* the batch's rows to check: key values, and their row numbers */
	ArrayBuildState *acc[INDEX_MAX_KEYS];
	int64	   *rownos;
	int			nrows;
	int			maxrows;
	int64		first_mixed;	/* MATCH FULL: first partly NULL row, or -1 */
} FkCheck;

struct AmFkBatch
{
	MemoryContext cxt;
	Relation	rel;
	List	   *checks;			/* FkCheck *, in trigger order */
	int64		rowno;
};

/* a prepared check query, kept for the life of the mapping */
typedef struct FkPlan
{
	char	   *sql;
	SPIPlanPtr	plan;
} FkPlan;

/* The owner of a relation: RI queries run as the referenced table's. */
static Oid
fk_rel_owner(Oid relid)
{
	HeapTuple	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	Oid			owner;

	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for relation %u", relid);
	owner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
	ReleaseSysCache(tup);
	return owner;
}

/* Would this trigger fire now (pg_trigger.tgenabled, session role)? */
static bool
fk_trigger_fires(Trigger *trig)
{
	if (trig->tgenabled == TRIGGER_DISABLED)
		return false;
	if (SessionReplicationRole == SESSION_REPLICATION_ROLE_REPLICA)
		return trig->tgenabled == TRIGGER_FIRES_ON_REPLICA ||
			trig->tgenabled == TRIGGER_FIRES_ALWAYS;
	return trig->tgenabled == TRIGGER_FIRES_ON_ORIGIN ||
		trig->tgenabled == TRIGGER_FIRES_ALWAYS;
}

/*
 * The check query of a foreign key (see the file header); pk_attnums and
 * pf_eq_oprs as in pg_constraint.
 */
static char *
fk_check_sql(FkCheck *fc, AttrNumber *pk_attnums, Oid *pf_eq_oprs)
{
	StringInfoData q;
	StringInfoData lockq;
	StringInfoData missq;
	char	   *pkname;

	pkname = quote_qualified_identifier(get_namespace_name(get_rel_namespace(fc->pk_relid)),
										get_rel_name(fc->pk_relid));
	initStringInfo(&q);
	initStringInfo(&lockq);
	initStringInfo(&missq);
	appendStringInfoString(&q, "WITH k AS MATERIALIZED (SELECT * FROM ROWS FROM (");
	for (int i = 0; i < fc->nkeys; i++)
		appendStringInfo(&q, "%spg_catalog.unnest($%d)", i > 0 ? ", " : "", i + 1);
	appendStringInfoString(&q, ") WITH ORDINALITY AS k(");
	for (int i = 0; i < fc->nkeys; i++)
		appendStringInfo(&q, "f%d, ", i + 1);
	appendStringInfoString(&q, "i)), p AS MATERIALIZED (SELECT ");
	for (int i = 0; i < fc->nkeys; i++)
	{
		Oid			pk_type = get_atttype(fc->pk_relid, pk_attnums[i]);
		char	   *pkcol = psprintf("x.%s",
									 quote_identifier(get_attname(fc->pk_relid,
																  pk_attnums[i],
																  false)));
		char	   *fkval = psprintf("k.f%d", i + 1);

		appendStringInfo(&q, "%s%s AS p%d", i > 0 ? ", " : "", pkcol, i + 1);
		appendStringInfoString(&lockq, i > 0 ? " AND " : "");
		generate_operator_clause(&lockq, pkcol, pk_type, pf_eq_oprs[i],
								 fkval, fc->fk_types[i]);
		appendStringInfoString(&missq, i > 0 ? " AND " : "");
		generate_operator_clause(&missq, psprintf("p.p%d", i + 1), pk_type,
								 pf_eq_oprs[i], fkval, fc->fk_types[i]);
	}
	appendStringInfo(&q, " FROM %s%s x WHERE EXISTS (SELECT 1 FROM k WHERE %s) "
					 "FOR KEY SHARE OF x) "
					 "SELECT (SELECT pg_catalog.count(*) FROM p), "
					 "(SELECT k.i FROM k WHERE NOT EXISTS (SELECT 1 FROM p WHERE %s) "
					 "ORDER BY k.i LIMIT 1)",
					 fc->pk_partitioned ? "" : "ONLY ", pkname, lockq.data,
					 missq.data);
	return q.data;
}

/*
 * The fast path of a one-column foreign key, when the PK = FK operator
 * takes the FK type as it is and the FK type is ordered:
 *
 *	 SELECT (SELECT count(*) FROM (SELECT FROM [ONLY] parent x
 *			 WHERE x.pk = ANY ($1) FOR KEY SHARE OF x) p),
 *			(SELECT count(DISTINCT f) FROM unnest($1) f)
 *
 * locks the referenced rows with one index scan over the sorted keys (about
 * twice as fast as the exact query's join), and counts them against the
 * distinct keys.  Each key matches at most one parent (the referenced key
 * is unique) and each locked parent at least one key, so equal counts mean
 * every key has its parent.  Otherwise (a parent is missing, or the two
 * equalities differ, as with a nondeterministic collation) the exact query
 * runs too and decides; it locks what it finds again, which costs nothing
 * for rows already locked.  NULL when there is no fast path.
 */
static char *
fk_fast_sql(FkCheck *fc, AttrNumber *pk_attnums, Oid *pf_eq_oprs)
{
	HeapTuple	tup;
	Form_pg_operator op;
	StringInfoData q;

	if (fc->nkeys != 1 ||
		!OidIsValid(GetDefaultOpClass(fc->fk_types[0], BTREE_AM_OID)))
		return NULL;
	tup = SearchSysCache1(OPEROID, ObjectIdGetDatum(pf_eq_oprs[0]));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for operator %u", pf_eq_oprs[0]);
	op = (Form_pg_operator) GETSTRUCT(tup);
	initStringInfo(&q);
	if (op->oprright == fc->fk_types[0] &&
		op->oprleft == get_atttype(fc->pk_relid, pk_attnums[0]))
		appendStringInfo(&q, "SELECT (SELECT pg_catalog.count(*) FROM (SELECT FROM %s%s x "
						 "WHERE x.%s OPERATOR(%s.%s) ANY ($1) FOR KEY SHARE OF x) p), "
						 "(SELECT pg_catalog.count(DISTINCT f) FROM pg_catalog.unnest($1) f)",
						 fc->pk_partitioned ? "" : "ONLY ",
						 quote_qualified_identifier(get_namespace_name(get_rel_namespace(fc->pk_relid)),
													get_rel_name(fc->pk_relid)),
						 quote_identifier(get_attname(fc->pk_relid, pk_attnums[0], false)),
						 quote_identifier(get_namespace_name(op->oprnamespace)),
						 NameStr(op->oprname));
	ReleaseSysCache(tup);
	return q.len > 0 ? q.data : NULL;
}

/*
 * The prepared plan of a check query: made once per mapping and query text
 * (a renamed column or table gives a new text), as the referenced table's
 * owner, as ri_PlanCheck prepares the RI queries.
 */
static SPIPlanPtr
fk_plan(AmMapping *map, FkCheck *fc, const char *sql, int cursor_options)
{
	List	   *cache = (List *) map->fk_cache;
	ListCell   *lc;
	FkPlan	   *fp;
	Oid		   *argtypes = palloc(sizeof(Oid) * fc->nkeys);
	Oid			save_userid;
	int			save_sec;
	int			nest;
	SPIPlanPtr	plan;
	MemoryContext old = CurrentMemoryContext;

	foreach(lc, cache)
	{
		fp = lfirst(lc);
		if (strcmp(fp->sql, sql) == 0)
			return fp->plan;
	}
	for (int i = 0; i < fc->nkeys; i++)
		argtypes[i] = get_array_type(fc->fk_types[i]);
	GetUserIdAndSecContext(&save_userid, &save_sec);
	SetUserIdAndSecContext(fk_rel_owner(fc->pk_relid),
						   save_sec | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_NOFORCE_RLS);
	nest = am_pin_search_path();
	plan = SPI_prepare_cursor(sql, fc->nkeys, argtypes, cursor_options);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed for \"%s\": %s", sql,
			 SPI_result_code_string(SPI_result));
	if (SPI_keepplan(plan) != 0)
		elog(ERROR, "SPI_keepplan failed");
	am_unpin_search_path(nest);
	SetUserIdAndSecContext(save_userid, save_sec);

	/* (SPI_prepare leaves us in SPI's memory) */
	MemoryContextSwitchTo(GetMemoryChunkContext(map));
	fp = palloc(sizeof(FkPlan));
	fp->sql = pstrdup(sql);
	fp->plan = plan;
	map->fk_cache = lappend(cache, fp);
	MemoryContextSwitchTo(old);
	return fp->plan;
}

/* Forget the mapping's check plans. */
void
fk_free_plans(AmMapping *map)
{
	ListCell   *lc;

	foreach(lc, (List *) map->fk_cache)
		SPI_freeplan(((FkPlan *) lfirst(lc))->plan);
	list_free_deep((List *) map->fk_cache);
	map->fk_cache = NULL;
}

/*
 * The check of the foreign key behind an RI_FKey_check_ins trigger, or NULL
 * (with *why_not) when it is left to the per-row triggers.
 */
static FkCheck *
fk_check_make(AmMapping *map, Relation rel, Trigger *trig, const char **why_not)
{
	HeapTuple	tup = SearchSysCache1(CONSTROID,
									  ObjectIdGetDatum(trig->tgconstraint));
	Form_pg_constraint con;
	FkCheck    *fc;
	AttrNumber	pk_attnums[INDEX_MAX_KEYS];
	Oid			pf_eq_oprs[INDEX_MAX_KEYS];
	char		pk_kind;
	char	   *fast;

	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for constraint %u", trig->tgconstraint);
	con = (Form_pg_constraint) GETSTRUCT(tup);
	fc = palloc0(sizeof(FkCheck));
	fc->conoid = con->oid;
	fc->pk_relid = con->confrelid;
	fc->match_full = con->confmatchtype == FKCONSTR_MATCH_FULL;
	pk_kind = get_rel_relkind(con->confrelid);
	fc->pk_partitioned = pk_kind == RELKIND_PARTITIONED_TABLE;
	*why_not = NULL;
	if (con->contype != CONSTRAINT_FOREIGN)
		*why_not = "not a foreign key";
	else if (con->condeferrable)
		*why_not = "it is deferrable";
	else if (con->confmatchtype != FKCONSTR_MATCH_FULL &&
			 con->confmatchtype != FKCONSTR_MATCH_SIMPLE)
		*why_not = "its match type is neither FULL nor SIMPLE";
	else if (pk_kind != RELKIND_RELATION && !fc->pk_partitioned)
		*why_not = "the referenced relation is not a table";
	if (*why_not == NULL)
		DeconstructFkConstraintRow(tup, &fc->nkeys, fc->fk_attnums, pk_attnums,
								   pf_eq_oprs, NULL, NULL, NULL, NULL);
	ReleaseSysCache(tup);
	for (int i = 0; i < fc->nkeys && *why_not == NULL; i++)
	{
		fc->fk_types[i] = TupleDescAttr(RelationGetDescr(rel),
										fc->fk_attnums[i] - 1)->atttypid;
		if (!OidIsValid(get_array_type(fc->fk_types[i])))
			*why_not = "a key column's type has no array type";
	}
	if (*why_not != NULL)
		return NULL;
	fc->plan = fk_plan(map, fc, fk_check_sql(fc, pk_attnums, pf_eq_oprs), 0);
	/* a generic plan: the index scan, whatever the number of keys */
	fast = fk_fast_sql(fc, pk_attnums, pf_eq_oprs);
	fc->fast_plan = fast ? fk_plan(map, fc, fast, CURSOR_OPT_GENERIC_PLAN) : NULL;
	fc->first_mixed = -1;
	return fc;
}

/*
 * Take over the foreign keys of the target that a batch can check itself:
 * their RI_FKey_check_ins triggers are taken out of rri's trigger list (the
 * executor's own copy for this batch; the catalogs are not touched), every
 * other trigger stays.  Returns NULL when there is none.  Must run before
 * any row is written.
 */
AmFkBatch *
fk_batch_begin(AmMapping *map, Relation rel, ResultRelInfo *rri)
{
	TriggerDesc *td = rri->ri_TrigDesc;
	AmFkBatch  *fb;
	int			kept = 0;

	if (td == NULL || !td->trig_insert_after_row)
		return NULL;
	fb = palloc0(sizeof(AmFkBatch));
	fb->rel = rel;
	fb->cxt = AllocSetContextCreate(CurrentMemoryContext,
									"acme_migrate foreign key check",
									ALLOCSET_DEFAULT_SIZES);
	td->trig_insert_after_row = false;
	for (int i = 0; i < td->numtriggers; i++)
	{
		Trigger    *trig = &td->triggers[i];
		FkCheck    *fc = NULL;
		const char *why_not = "its trigger does not fire now";

		if (trig->tgfoid == F_RI_FKEY_CHECK_INS)
		{
			if (fk_trigger_fires(trig))
				fc = fk_check_make(map, rel, trig, &why_not);
			elog(DEBUG1, "foreign key \"%s\" of \"%s\": %s%s",
				 get_constraint_name(trig->tgconstraint),
				 RelationGetRelationName(rel),
				 fc ? "checked per batch" : "checked by its per-row trigger: ",
				 fc ? "" : why_not);
		}
		if (fc != NULL)
		{
			fb->checks = lappend(fb->checks, fc);
			continue;
		}
		td->triggers[kept++] = *trig;
		if (TRIGGER_TYPE_MATCHES(trig->tgtype, TRIGGER_TYPE_ROW,
								 TRIGGER_TYPE_AFTER, TRIGGER_TYPE_INSERT))
			td->trig_insert_after_row = true;
	}
	td->numtriggers = kept;
	if (fb->checks == NIL)
	{
		MemoryContextDelete(fb->cxt);
		return NULL;
	}
	return fb;
}

/*
 * Note one row of the batch (its final values, defaults and generated
 * columns included): what each foreign key must look up for it.
 */
void
fk_batch_add(AmFkBatch *fb, TupleTableSlot *slot)
{
	ListCell   *lc;

	foreach(lc, fb->checks)
	{
		FkCheck    *fc = lfirst(lc);
		Datum		values[INDEX_MAX_KEYS];
		int			nnull = 0;
		bool		isnull;

		for (int i = 0; i < fc->nkeys; i++)
		{
			values[i] = slot_getattr(slot, fc->fk_attnums[i], &isnull);
			nnull += isnull;
		}
		/* NULLs: nothing to look up, or (MATCH FULL, partly) a violation */
		if (nnull > 0)
		{
			if (fc->match_full && nnull < fc->nkeys && fc->first_mixed < 0)
				fc->first_mixed = fb->rowno;
			continue;
		}
		if (fc->nrows == fc->maxrows)
		{
			fc->maxrows = Max(1024, 2 * fc->maxrows);
			fc->rownos = fc->rownos == NULL ?
				MemoryContextAlloc(fb->cxt, sizeof(int64) * fc->maxrows) :
				repalloc(fc->rownos, sizeof(int64) * fc->maxrows);
		}
		fc->rownos[fc->nrows++] = fb->rowno;
		for (int i = 0; i < fc->nkeys; i++)
		{
			if (fc->acc[i] == NULL)
				fc->acc[i] = initArrayResult(fc->fk_types[i], fb->cxt, false);
			accumArrayResult(fc->acc[i], values[i], false, fc->fk_types[i],
							 fb->cxt);
		}
	}
	fb->rowno++;
}

/*
 * Run a check query of a foreign key over the batch's arrays, the way
 * ri_PerformCheck runs the RI query: as the referenced table's owner, with
 * the RI triggers' snapshots.  Its one row's two columns go to result.
 */
static void
fk_execute(FkCheck *fc, SPIPlanPtr plan, Datum *values, Datum *result,
		   bool *isnull)
{
	Snapshot	test_snapshot = InvalidSnapshot;
	Snapshot	crosscheck_snapshot = InvalidSnapshot;
	Oid			save_userid;
	int			save_sec;
	int			nest;
	int			rc;

	/* a partitioned parent is read with a fresh snapshot, as RI does */
	if (IsolationUsesXactSnapshot() && fc->pk_partitioned)
	{
		CommandCounterIncrement();
		test_snapshot = GetLatestSnapshot();
		crosscheck_snapshot = GetTransactionSnapshot();
	}
	GetUserIdAndSecContext(&save_userid, &save_sec);
	SetUserIdAndSecContext(fk_rel_owner(fc->pk_relid),
						   save_sec | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_NOFORCE_RLS);
	nest = am_pin_search_path();
	rc = SPI_execute_snapshot(plan, values, NULL, test_snapshot,
							  crosscheck_snapshot, false, false, 1);
	am_unpin_search_path(nest);
	SetUserIdAndSecContext(save_userid, save_sec);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not check foreign key %u: %s", fc->conoid,
			 SPI_result_code_string(rc));
	for (int i = 0; i < 2; i++)
		result[i] = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
								  i + 1, &isnull[i]);
	SPI_freetuptable(SPI_tuptable);
}

/*
 * Check one foreign key over the batch's rows: the fast path where there is
 * one, the exact query where it cannot decide.  Returns the index (in the
 * arrays) of the first row without a parent, or -1.
 */
static int
fk_run_check(FkCheck *fc, MemoryContext cxt)
{
	Datum		values[INDEX_MAX_KEYS];
	Datum		result[2];
	bool		isnull[2];

	for (int i = 0; i < fc->nkeys; i++)
		values[i] = makeArrayResult(fc->acc[i], cxt);
	if (fc->fast_plan != NULL)
	{
		fk_execute(fc, fc->fast_plan, values, result, isnull);
		if (DatumGetInt64(result[0]) == DatumGetInt64(result[1]))
			return -1;
	}
	fk_execute(fc, fc->plan, values, result, isnull);
	return isnull[1] ? -1 : (int) (DatumGetInt64(result[1]) - 1);
}

/*
 * The RI trigger's error for a row: partly NULL under MATCH FULL (idx < 0),
 * or without a parent (its values at idx of the arrays).  The key's values
 * are shown when the user may see them, as ri_ReportViolation decides.
 */
static void
fk_report(AmFkBatch *fb, FkCheck *fc, int idx)
{
	Relation	rel = fb->rel;
	char	   *conname = get_constraint_name(fc->conoid);
	StringInfoData names;
	StringInfoData vals;
	bool		has_perm = true;

	if (idx < 0)
		ereport(ERROR,
				(errcode(ERRCODE_FOREIGN_KEY_VIOLATION),
				 errmsg("insert or update on table \"%s\" violates foreign key constraint \"%s\"",
						RelationGetRelationName(rel), conname),
				 errdetail("MATCH FULL does not allow mixing of null and nonnull key values."),
				 errtableconstraint(rel, conname)));

	if (check_enable_rls(RelationGetRelid(rel), InvalidOid, true) == RLS_ENABLED)
		has_perm = false;
	else if (pg_class_aclcheck(RelationGetRelid(rel), GetUserId(),
							   ACL_SELECT) != ACLCHECK_OK)
	{
		for (int i = 0; i < fc->nkeys && has_perm; i++)
			has_perm = pg_attribute_aclcheck(RelationGetRelid(rel),
											 fc->fk_attnums[i], GetUserId(),
											 ACL_SELECT) == ACLCHECK_OK;
	}
	initStringInfo(&names);
	initStringInfo(&vals);
	for (int i = 0; i < fc->nkeys && has_perm; i++)
	{
		Oid			outfunc;
		bool		varlena;

		getTypeOutputInfo(fc->fk_types[i], &outfunc, &varlena);
		appendStringInfo(&names, "%s%s", i > 0 ? ", " : "",
						 NameStr(TupleDescAttr(RelationGetDescr(rel),
											   fc->fk_attnums[i] - 1)->attname));
		appendStringInfo(&vals, "%s%s", i > 0 ? ", " : "",
						 OidOutputFunctionCall(outfunc,
											   fc->acc[i]->dvalues[idx]));
	}
	ereport(ERROR,
			(errcode(ERRCODE_FOREIGN_KEY_VIOLATION),
			 errmsg("insert or update on table \"%s\" violates foreign key constraint \"%s\"",
					RelationGetRelationName(rel), conname),
			 has_perm ?
			 errdetail("Key (%s)=(%s) is not present in table \"%s\".",
					   names.data, vals.data, get_rel_name(fc->pk_relid)) :
			 errdetail("Key is not present in table \"%s\".",
					   get_rel_name(fc->pk_relid)),
			 errtableconstraint(rel, conname)));
}

/*
 * Check the batch's rows against every foreign key taken over, after the
 * rows and their other AFTER triggers; raise the error the RI triggers
 * would have raised first, if any.  Needs an SPI connection.
 */
void
fk_batch_check(AmFkBatch *fb)
{
	ListCell   *lc;
	FkCheck    *worst = NULL;
	int64		worst_row = PG_INT64_MAX;
	int			worst_idx = -1;

	foreach(lc, fb->checks)
	{
		FkCheck    *fc = lfirst(lc);
		int			idx = fc->nrows > 0 ? fk_run_check(fc, fb->cxt) : -1;

		/* the triggers fire row by row, a row's in trigger (name) order */
		if (idx >= 0 && fc->rownos[idx] < worst_row)
		{
			worst = fc;
			worst_row = fc->rownos[idx];
			worst_idx = idx;
		}
		if (fc->first_mixed >= 0 && fc->first_mixed < worst_row)
		{
			worst = fc;
			worst_row = fc->first_mixed;
			worst_idx = -1;
		}
	}
	if (worst != NULL)
		fk_report(fb, worst, worst_idx);
	MemoryContextDelete(fb->cxt);
}

/* the deferrable foreign keys of one relation, appended as RangeVars */
static List *
fk_deferrable_names(Oid relid, List *names)
{
	Relation	rel = table_open(relid, AccessShareLock);
	ListCell   *lc;

	foreach(lc, RelationGetFKeyList(rel))
	{
		ForeignKeyCacheInfo *fk = lfirst_node(ForeignKeyCacheInfo, lc);
		HeapTuple	tup = SearchSysCache1(CONSTROID,
										  ObjectIdGetDatum(fk->conoid));
		Form_pg_constraint con;
		bool		seen = false;
		ListCell   *ln;

		if (!HeapTupleIsValid(tup))
			elog(ERROR, "cache lookup failed for constraint %u", fk->conoid);
		con = (Form_pg_constraint) GETSTRUCT(tup);
		foreach(ln, names)
		{
			RangeVar   *rv = lfirst_node(RangeVar, ln);

			seen |= strcmp(rv->relname, NameStr(con->conname)) == 0 &&
				strcmp(rv->schemaname,
					   get_namespace_name(con->connamespace)) == 0;
		}
		if (con->condeferrable && !seen)
			names = lappend(names,
							makeRangeVar(get_namespace_name(con->connamespace),
										 pstrdup(NameStr(con->conname)), -1));
		ReleaseSysCache(tup);
	}
	table_close(rel, AccessShareLock);
	return names;
}

/*
 * SET CONSTRAINTS ... IMMEDIATE for the deferrable foreign keys of relid
 * and of its partitions (file header: deferred foreign keys).  Must run
 * before the batch becomes restricted.
 */
void
fk_set_immediate(Oid relid)
{
	List	   *rels = list_make1_oid(relid);
	List	   *names = NIL;
	ListCell   *lc;

	if (get_rel_relkind(relid) == RELKIND_PARTITIONED_TABLE)
		rels = find_all_inheritors(relid, AccessShareLock, NULL);
	foreach(lc, rels)
		names = fk_deferrable_names(lfirst_oid(lc), names);
	if (names != NIL)
	{
		ConstraintsSetStmt *stmt = makeNode(ConstraintsSetStmt);

		stmt->constraints = names;
		stmt->deferred = false;
		AfterTriggerSetState(stmt);
	}
}
