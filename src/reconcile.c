/*-------------------------------------------------------------------------
 *
 * reconcile.c
 *	  Compare a job's mapped source with its target (or any two tables on
 *	  their same-named columns) and list every difference.
 *
 * Both sides are read in key order, in one snapshot, and merged: a key only
 * in the source is "missing", only in the target "extra", on both sides
 * with different values "changed".  A key seen twice on one side is a
 * "duplicate" and a NULL key a "null_key": neither is ever merged away.
 *
 * By default two values are equal when they have the same representation,
 * which is what comparing their text output under fixed settings
 * (TimeZone UTC, DateStyle ISO, IntervalStyle postgres,
 * extra_float_digits 3) says.  Comparing the binary values first gives the
 * same answer for nearly every row at a fraction of the cost, so text is
 * only produced for values whose bytes differ.  Per-column policies relax
 * the rule: "value" (the type's equality, so numeric 1.0 = 1.00),
 * {"tolerance": x} for numbers, {"truncate": unit} for timestamps.
 *
 * When the target key is unique, hash sums per bucket of rows are compared
 * first (key ranges for a single integer key, key hashes for any other
 * hashable key) and only the rows of buckets that differ are merged
 * (rc_hash_first, with the argument for its exactness).
 *
 * With sample => f only a random fraction f of the keys of each side is
 * looked up on the other side, and the counts are scaled up (estimated).
 *
 * A difference is listed from the rows in hand: its key and rows are
 * turned into jsonb from the values the merge (or the sample's probe) has
 * just compared, never fetched again, so a source that is a costly view is
 * read once whatever the number of differences.  At most max_diffs are
 * listed; the counts go on to the end.  With acme_migrate.store_row_data
 * off, only keys and column names are listed.
 *
 *-------------------------------------------------------------------------
 */
#include "acme_migrate.h"

#include <math.h>
#include <sys/mman.h>
#include <xxhash.h>

#include "access/htup_details.h"
#include "access/parallel.h"
#include "access/relation.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/pg_class.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_inherits.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "common/int.h"
#include "executor/executor.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "optimizer/clauses.h"
#include "optimizer/cost.h"
#include "optimizer/optimizer.h"
#include "optimizer/paths.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/rel.h"
#include "utils/rls.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "port/atomics.h"
#include "postmaster/bgworker.h"
#include "storage/bufmgr.h"
#include "storage/condition_variable.h"
#include "storage/shm_toc.h"
#include "utils/plancache.h"
#include "utils/snapmgr.h"
#include "utils/sortsupport.h"
#include "utils/tuplesort.h"
#include "utils/typcache.h"
#include "utils/wait_event.h"

PG_FUNCTION_INFO_V1(acme_migrate_reconcile_job);
PG_FUNCTION_INFO_V1(acme_migrate_reconcile_tables);
PG_FUNCTION_INFO_V1(acme_migrate_key_bucket);

typedef enum RcPolicy
{
	RC_TEXT,					/* same representation (default) */
	RC_VALUE,					/* the type's equality */
	RC_TOLERANCE,				/* |a - b| <= tolerance */
	RC_TRUNCATE					/* equal after date_trunc(unit, ...) */
} RcPolicy;

/* one compared column */
typedef struct RcColumn
{
	char	   *name;
	int			idx;			/* position among the mapped columns */
	Oid			type;
	Oid			collation;
	bool		byval;
	int16		len;
	RcPolicy	policy;
	double		tolerance;
	text	   *unit;
	FmgrInfo	out;
	FmgrInfo	eq;
} RcColumn;

/* what a comparison needs, for both its forms */
typedef struct RcState
{
	AmJob	   *job;
	AmMapping  *map;
	int			ncols;
	RcColumn   *cols;
	int			ntkeys;
	int		   *tkey_idx;		/* target key columns among the mapped ones */
	char	  **tkey_names;
	SortSupport tkey_sort;		/* their ordering, as ORDER BY sorts them */
	Oid		   *tkey_types;
	bool	   *tkey_byval;
	int16	   *tkey_len;
	char	   *target_sql[2][2];	/* target rows, mapped columns, key order,
									 * [above a key][up to a key] */
	char	   *source_all_sql;	/* mapped source rows, in any order */
	char	   *target_all_sql;	/* target rows, mapped columns, any order */
	char	   *target_rows_sql;	/* whole target rows, in any order */
	char	   *place_sql[2][2];	/* [target][by place]: with a trailing
									 * ctid, or the rows at ctids $1 (NULL:
									 * not a table, rows are read again) */
	SPIPlanPtr	source_plan[2][2];	/* plans of the merge's queries */
	SPIPlanPtr	target_plan[2][2];
	int			nhash;			/* columns hashed by the first pass */
	int		   *hash_idx;		/* ... among the mapped ones */
	bool	   *hash_byval;
	int16	   *hash_len;
	char	   *dbuf;			/* bytes of the row being hashed */
	uint32		dlen;
	uint32		dcap;
	char	   *target_probe_sql;	/* target key -> its rows (sampling) */
	char	   *source_probe_sql;	/* target key -> source rows with it */
	int			nextra;			/* target columns not mapped, read by the
								 * merge and the probes after the mapped
								 * ones, for the report's target_row */
	bool		store_rows;		/* list source_row and target_row? */
	TupleDesc	key_desc;		/* the report's key, source and target */
	TupleDesc	source_desc;	/* rows as records, for to_jsonb */
	TupleDesc	target_desc;
	FmgrInfo	to_jsonb;
	int64		run_id;
	int64		max_diffs;
	int64		ndiffs;
	bool		truncated;
	AmReconcileCounts counts;
	MemoryContext cxt;			/* the call's: outlives its SPI connection */
	MemoryContext rowcxt;
	MemoryContext diffcxt;		/* one listed difference */
	AmDiffBatch *diffs;			/* listed, not yet written */
} RcState;

/*
 * One side of the merge.  Its query is run by an executor of its own, a row
 * at a time, or its rows come from a sort (the hash pass's kept rows):
 * values and nulls point into the current row's slot, which stays valid
 * until the side moves on, so no row is ever copied.
 */
typedef struct RcSide
{
	const char *name;
	CachedPlan *cplan;
	QueryDesc  *qd;
	Tuplesortstate *sort;		/* rows from here when set, into slot */
	TupleTableSlot *slot;
	int			off;			/* mapped column i is at values[off + i] */
	Datum	   *values;
	bool	   *nulls;
	bool		is_source;
	Datum	   *prevkey;
	bool		have_prev;
	MemoryContext keycxt;
} RcSide;

static const char *
rc_relname(Oid relid)
{
	return quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)),
									  get_rel_name(relid));
}

/* SPI_prepare_cursor with the given cursor options, or an error */
static SPIPlanPtr
rc_prepare_opts(const char *sql, int nargs, Oid *types, int options)
{
	SPIPlanPtr	plan = SPI_prepare_cursor(sql, nargs, types, options);

	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed for \"%s\": %s", sql,
			 SPI_result_code_string(SPI_result));
	return plan;
}

static SPIPlanPtr
rc_prepare(const char *sql, int nargs, Oid *types)
{
	return rc_prepare_opts(sql, nargs, types, 0);
}

/* a plan that stays generic: the same for every value of its parameters */
static SPIPlanPtr
rc_prepare_generic(const char *sql, int nargs, Oid *types)
{
	return rc_prepare_opts(sql, nargs, types, CURSOR_OPT_GENERIC_PLAN);
}

static int
rc_find_mapped(AmMapping *map, const char *name)
{
	for (int i = 0; i < map->nmapped; i++)
		if (strcmp(map->mapped_names[i], name) == 0)
			return i;
	return -1;
}

/*
 * What listing a difference needs: record descriptors of the key, of the
 * mapped source row and of the whole target row (the mapped columns, then
 * the others, which the merge and the probes read only for this), and
 * to_jsonb called on a record.  Appends the target's select list to tcols.
 */
static void
rc_setup_report(RcState *st, StringInfo tcols)
{
	AmMapping  *map = st->map;
	Relation	rel;
	TupleDesc	rdesc;
	List	   *extra = NIL;
	ListCell   *lc;
	int			i;

	st->store_rows = acme_migrate_store_row_data;

	st->key_desc = CreateTemplateTupleDesc(st->ntkeys);
	i = 0;
	foreach(lc, st->job->target_key_columns)
	{
		TupleDescInitEntry(st->key_desc, i + 1, lfirst(lc),
						   st->tkey_types[i], -1, 0);
		i++;
	}

	/* the target's columns that are not mapped, when rows are listed */
	rel = relation_open(map->target_relid, AccessShareLock);
	rdesc = RelationGetDescr(rel);
	for (int a = 0; st->store_rows && a < rdesc->natts; a++)
	{
		Form_pg_attribute att = TupleDescAttr(rdesc, a);
		bool		mapped = false;

		if (att->attisdropped)
			continue;
		for (i = 0; i < map->nmapped; i++)
			if (map->mapped_attnums[i] == att->attnum)
				mapped = true;
		if (!mapped)
			extra = lappend_int(extra, a);
	}
	st->nextra = list_length(extra);

	st->source_desc = CreateTemplateTupleDesc(map->nmapped);
	st->target_desc = CreateTemplateTupleDesc(map->nmapped + st->nextra);
	for (i = 0; i < map->nmapped; i++)
	{
		Form_pg_attribute att = TupleDescAttr(rdesc, map->mapped_attnums[i] - 1);

		TupleDescInitEntry(st->source_desc, i + 1, map->mapped_names[i],
						   att->atttypid, att->atttypmod, 0);
		TupleDescInitEntry(st->target_desc, i + 1, map->mapped_names[i],
						   att->atttypid, att->atttypmod, 0);
		appendStringInfo(tcols, "%st.%s", i > 0 ? ", " : "",
						 quote_identifier(map->mapped_names[i]));
	}
	foreach(lc, extra)
	{
		Form_pg_attribute att = TupleDescAttr(rdesc, lfirst_int(lc));

		TupleDescInitEntry(st->target_desc, ++i, NameStr(att->attname),
						   att->atttypid, att->atttypmod, 0);
		appendStringInfo(tcols, ", t.%s",
						 quote_identifier(NameStr(att->attname)));
	}
	relation_close(rel, NoLock);
	st->key_desc = BlessTupleDesc(st->key_desc);
	st->source_desc = BlessTupleDesc(st->source_desc);
	st->target_desc = BlessTupleDesc(st->target_desc);

	/* to_jsonb(record): it takes the record's type from its call */
	fmgr_info(F_TO_JSONB, &st->to_jsonb);
	fmgr_info_set_expr((Node *) makeFuncExpr(F_TO_JSONB, JSONBOID,
											 list_make1(makeNullConst(RECORDOID, -1, InvalidOid)),
											 InvalidOid, InvalidOid,
											 COERCE_EXPLICIT_CALL),
					   &st->to_jsonb);
}

/*
 * Columns named in the options must be mapped target columns, and compare
 * must be an object whose keys are such columns.
 */
static void
rc_check_options(RcState *st, List *only, List *ignore, Jsonb *compare)
{
	ListCell   *lc;

	foreach(lc, list_concat(list_copy(only), ignore))
		if (rc_find_mapped(st->map, lfirst(lc)) < 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_COLUMN),
					 errmsg("column \"%s\" is not compared", (char *) lfirst(lc)),
					 errdetail("Only target columns filled from the source can be compared.")));
	if (compare == NULL)
		return;
	if (!JB_ROOT_IS_OBJECT(compare) || JB_ROOT_IS_SCALAR(compare))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("compare must be a jsonb object mapping columns to policies")));
	{
		JsonbIterator *it = JsonbIteratorInit(&compare->root);
		JsonbValue	v;
		JsonbIteratorToken tok;

		while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
		{
			char	   *col;

			if (tok != WJB_KEY)
				continue;
			col = pnstrdup(v.val.string.val, v.val.string.len);
			if (rc_find_mapped(st->map, col) < 0)
				ereport(ERROR,
						(errcode(ERRCODE_UNDEFINED_COLUMN),
						 errmsg("column \"%s\" is not compared", col),
						 errdetail("The keys of compare must be target columns filled from the source.")));
		}
	}
}

/* a member of a jsonb policy object, or NULL */
static JsonbValue *
rc_policy_member(JsonbValue *v, const char *name)
{
	JsonbValue	k;

	k.type = jbvString;
	k.val.string.val = (char *) name;
	k.val.string.len = strlen(name);
	return findJsonbValueFromContainer(v->val.binary.data, JB_FOBJECT, &k);
}

/* {"tolerance": x} or {"truncate": unit}: set the column's policy */
static void
rc_policy_object(RcColumn *c, JsonbValue *v)
{
	JsonbValue *t;

	t = rc_policy_member(v, "tolerance");
	if (t && t->type == jbvNumeric)
	{
		c->policy = RC_TOLERANCE;
		c->tolerance = DatumGetFloat8(DirectFunctionCall1(numeric_float8,
														  NumericGetDatum(t->val.numeric)));
		if (c->type != FLOAT4OID && c->type != FLOAT8OID &&
			c->type != NUMERICOID && c->type != INT2OID &&
			c->type != INT4OID && c->type != INT8OID)
			ereport(ERROR,
					(errcode(ERRCODE_DATATYPE_MISMATCH),
					 errmsg("column \"%s\" has type %s, which cannot be compared with a tolerance",
							c->name, format_type_be(c->type))));
	}
	t = rc_policy_member(v, "truncate");
	if (t && t->type == jbvString)
	{
		c->policy = RC_TRUNCATE;
		c->unit = cstring_to_text_with_len(t->val.string.val, t->val.string.len);
		if (c->type != TIMESTAMPTZOID && c->type != TIMESTAMPOID)
			ereport(ERROR,
					(errcode(ERRCODE_DATATYPE_MISMATCH),
					 errmsg("column \"%s\" has type %s, which cannot be truncated",
							c->name, format_type_be(c->type))));
		/* validate the unit now rather than on the first row */
		(void) DirectFunctionCall2(timestamp_trunc, PointerGetDatum(c->unit),
								   TimestampGetDatum(0));
	}
}

/* The policy of a column from its entry v in compare (NULL: none). */
static void
rc_column_policy(RcColumn *c, JsonbValue *v)
{
	bool		is_string = v != NULL && v->type == jbvString;

	c->policy = RC_TEXT;
	if (v == NULL)
		return;
	if (is_string && v->val.string.len == 5 &&
		strncmp(v->val.string.val, "value", 5) == 0)
		c->policy = RC_VALUE;
	else if (is_string && v->val.string.len == 4 &&
			 strncmp(v->val.string.val, "text", 4) == 0)
		return;
	else if (v->type == jbvBinary && JsonContainerIsObject(v->val.binary.data))
		rc_policy_object(c, v);
	if (c->policy == RC_TEXT)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid comparison policy for column \"%s\"", c->name),
				 errhint("Use \"text\", \"value\", {\"tolerance\": number} or {\"truncate\": \"unit\"}.")));
	if (c->policy == RC_VALUE)
	{
		TypeCacheEntry *tc = lookup_type_cache(c->type, TYPECACHE_EQ_OPR_FINFO);

		if (!OidIsValid(tc->eq_opr_finfo.fn_oid))
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_FUNCTION),
					 errmsg("column \"%s\" has type %s, which has no equality operator",
							c->name, format_type_be(c->type)),
					 errhint("Compare it by representation (\"text\") instead.")));
		fmgr_info_copy(&c->eq, &tc->eq_opr_finfo, CurrentMemoryContext);
	}
}

/* Is a mapped column compared, given the columns and ignore_columns? */
static bool
rc_is_compared(const char *name, List *only, List *ignore)
{
	ListCell   *lc;
	bool		compared = (only == NIL);

	foreach(lc, only)
		if (strcmp(lfirst(lc), name) == 0)
			compared = true;
	foreach(lc, ignore)
		if (strcmp(lfirst(lc), name) == 0)
			compared = false;
	return compared;
}

/* The compared columns, with their types and policies. */
static void
rc_setup_columns(RcState *st, List *only, List *ignore, Jsonb *compare)
{
	AmMapping  *map = st->map;

	st->cols = palloc0(sizeof(RcColumn) * map->nmapped);
	for (int i = 0; i < map->nmapped; i++)
	{
		char	   *name = map->mapped_names[i];
		RcColumn   *c;
		Oid			outfn;
		bool		varlena;
		int32		typmod;
		JsonbValue	k;
		JsonbValue *v = NULL;

		if (!rc_is_compared(name, only, ignore))
			continue;
		c = &st->cols[st->ncols++];
		c->name = name;
		c->idx = i;
		get_atttypetypmodcoll(map->target_relid, map->mapped_attnums[i],
							  &c->type, &typmod, &c->collation);
		get_typlenbyval(c->type, &c->len, &c->byval);
		getTypeOutputInfo(c->type, &outfn, &varlena);
		fmgr_info(outfn, &c->out);
		if (compare != NULL)
		{
			k.type = jbvString;
			k.val.string.val = name;
			k.val.string.len = strlen(name);
			v = findJsonbValueFromContainer(&compare->root, JB_FOBJECT, &k);
		}
		rc_column_policy(c, v);
	}
}

/*
 * The target key columns, among the mapped ones: types, collations and
 * the ordering the merge sorts them by (the target's).
 */
static void
rc_setup_keys(RcState *st)
{
	AmMapping  *map = st->map;
	ListCell   *lc;
	int			i = 0;

	st->ntkeys = list_length(st->job->target_key_columns);
	st->tkey_idx = palloc(sizeof(int) * st->ntkeys);
	st->tkey_names = palloc(sizeof(char *) * st->ntkeys);
	st->tkey_sort = palloc0(sizeof(SortSupportData) * st->ntkeys);
	st->tkey_types = palloc(sizeof(Oid) * st->ntkeys);
	st->tkey_byval = palloc(sizeof(bool) * st->ntkeys);
	st->tkey_len = palloc(sizeof(int16) * st->ntkeys);
	foreach(lc, st->job->target_key_columns)
	{
		int			m = rc_find_mapped(map, lfirst(lc));
		SortSupport ssup = &st->tkey_sort[i];
		TypeCacheEntry *tc;
		int32		typmod;

		st->tkey_idx[i] = m;
		st->tkey_names[i] = lfirst(lc);
		get_atttypetypmodcoll(map->target_relid, map->mapped_attnums[m],
							  &st->tkey_types[i], &typmod,
							  &ssup->ssup_collation);
		get_typlenbyval(st->tkey_types[i], &st->tkey_len[i], &st->tkey_byval[i]);
		tc = lookup_type_cache(st->tkey_types[i], TYPECACHE_LT_OPR);
		if (!OidIsValid(tc->lt_opr))
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_FUNCTION),
					 errmsg("target key column \"%s\" has no btree ordering",
							(char *) lfirst(lc))));
		ssup->ssup_cxt = CurrentMemoryContext;
		PrepareSortSupportFromOrderingOp(tc->lt_opr, ssup);
		i++;
	}
}

/*
 * Can rows of the relation be read again by ctid: a table or materialized
 * view stored here (a Citus table's ctids are its shards', and a ctid
 * parameter cannot go through Citus's planner)?  Inheritance children's
 * rows are read again by the ctids of their own tables, with a parent's
 * rows at the same ctids, which their buckets then set apart.
 */
static bool
rc_has_places(Oid relid)
{
	char		kind = get_rel_relkind(relid);

	return (kind == RELKIND_RELATION || kind == RELKIND_MATVIEW) &&
		locality_is_local(relid);
}

/*
 * The target side's SQL: its mapped columns in any order (the hash pass);
 * the whole row in any order (kept rows of the hash pass), and in key
 * order, in a key range, for the merge, the other target columns after
 * the mapped ones when rows are listed, so that a listed target row is the
 * whole row.  Key ranges are (lo, hi], compared as mapping.c compares the
 * copy's.
 */
static void
rc_setup_target_sql(RcState *st, const char *tcols)
{
	AmMapping  *map = st->map;
	const char *tgt = rc_relname(map->target_relid);
	StringInfoData q;

	initStringInfo(&q);
	appendStringInfoString(&q, "SELECT ");
	for (int i = 0; i < map->nmapped; i++)
		appendStringInfo(&q, "%st.%s", i > 0 ? ", " : "",
						 quote_identifier(map->mapped_names[i]));
	appendStringInfo(&q, " FROM %s AS t", tgt);
	st->target_all_sql = q.data;
	st->target_rows_sql = psprintf("SELECT %s FROM %s AS t", tcols, tgt);
	if (rc_has_places(map->target_relid))
	{
		st->place_sql[1][0] = psprintf("%s, t.ctid FROM %s AS t",
									   pnstrdup(q.data, strstr(q.data, " FROM ") - q.data),
									   tgt);
		st->place_sql[1][1] = psprintf("%s WHERE t.ctid OPERATOR(pg_catalog.=) ANY ($1)",
									   st->target_rows_sql);
	}

	for (int lo = 0; lo < 2; lo++)
	{
		for (int hi = 0; hi < 2; hi++)
		{
			initStringInfo(&q);
			appendStringInfo(&q, "SELECT %s FROM %s AS t WHERE true",
							 tcols, tgt);
			if (lo)
			{
				appendStringInfoString(&q, " AND ");
				mapping_append_key_compare(&q, "t", st->tkey_names,
										   st->tkey_types, st->ntkeys,
										   BTGreaterStrategyNumber, 1);
			}
			if (hi)
			{
				appendStringInfoString(&q, " AND ");
				mapping_append_key_compare(&q, "t", st->tkey_names,
										   st->tkey_types, st->ntkeys,
										   BTLessEqualStrategyNumber,
										   st->ntkeys + 1);
			}
			appendStringInfoString(&q, " ORDER BY ");
			for (int i = 0; i < st->ntkeys; i++)
				appendStringInfo(&q, "%st.%s", i > 0 ? ", " : "",
								 quote_identifier(st->tkey_names[i]));
			st->target_sql[lo][hi] = q.data;
		}
	}

	/* target rows with a key (sampling), as the merge reads them */
	initStringInfo(&q);
	appendStringInfo(&q, "SELECT %s FROM %s AS t WHERE ", tcols, tgt);
	mapping_append_key_compare(&q, "t", st->tkey_names, st->tkey_types,
							   st->ntkeys, BTEqualStrategyNumber, 1);
	st->target_probe_sql = q.data;
}

/*
 * The source side's SQL: the mapped source rows, the job's expressions
 * cast to the target's types, in any order; and the source rows with a
 * target key (sampling): two at most, enough to tell a duplicate, and the
 * first is listed as it is.
 */
static void
rc_setup_source_sql(RcState *st)
{
	AmMapping  *map = st->map;
	StringInfoData cols;
	StringInfoData q;
	ListCell   *le;
	ListCell   *lt;

	initStringInfo(&cols);
	forboth(lt, st->job->map_targets, le, st->job->map_exprs)
	{
		int			m = rc_find_mapped(map, lfirst(lt));
		Oid			type;
		int32		typmod;
		Oid			coll;

		get_atttypetypmodcoll(map->target_relid, map->mapped_attnums[m],
							  &type, &typmod, &coll);
		appendStringInfo(&cols, "%sCAST((%s) AS %s) AS %s",
						 cols.len > 0 ? ", " : "", (char *) lfirst(le),
						 format_type_extended(type, typmod,
											  FORMAT_TYPE_TYPEMOD_GIVEN | FORMAT_TYPE_FORCE_QUALIFY),
						 quote_identifier(lfirst(lt)));
	}
	st->source_all_sql = psprintf("SELECT %s FROM %s AS s WHERE %s",
								  cols.data, rc_relname(map->source_relid),
								  st->job->filter ? st->job->filter : "true");
	if (rc_has_places(map->source_relid))
	{
		st->place_sql[0][0] = psprintf("SELECT %s, s.ctid FROM %s AS s WHERE %s",
									   cols.data, rc_relname(map->source_relid),
									   st->job->filter ? st->job->filter : "true");
		st->place_sql[0][1] = psprintf("SELECT %s FROM %s AS s WHERE (%s) AND s.ctid OPERATOR(pg_catalog.=) ANY ($1)",
									   cols.data, rc_relname(map->source_relid),
									   st->job->filter ? st->job->filter : "true");
	}

	initStringInfo(&q);
	appendStringInfo(&q, "SELECT * FROM (%s) x WHERE ", st->source_all_sql);
	mapping_append_key_compare(&q, "x", st->tkey_names, st->tkey_types,
							   st->ntkeys, BTEqualStrategyNumber, 1);
	appendStringInfoString(&q, " LIMIT 2");
	st->source_probe_sql = q.data;
}

/*
 * Decide the compared columns and their policies, and build the SQL of
 * both sides.
 */
static void
rc_setup(RcState *st, List *only, List *ignore, Jsonb *compare)
{
	StringInfoData tcols;

	rc_check_options(st, only, ignore, compare);
	rc_setup_columns(st, only, ignore, compare);
	rc_setup_keys(st);
	initStringInfo(&tcols);
	rc_setup_report(st, &tcols);
	rc_setup_target_sql(st, tcols.data);
	rc_setup_source_sql(st);
}

/* Are the two bytes-wise values identical? */
static bool
rc_same_bytes(Datum a, Datum b, bool byval, int16 len)
{
	if (byval)
		return a == b;
	if (len > 0)
		return memcmp(DatumGetPointer(a), DatumGetPointer(b), len) == 0;
	if (len == -1)
	{
		struct varlena *va = PG_DETOAST_DATUM_PACKED(a);
		struct varlena *vb = PG_DETOAST_DATUM_PACKED(b);

		return VARSIZE_ANY_EXHDR(va) == VARSIZE_ANY_EXHDR(vb) &&
			memcmp(VARDATA_ANY(va), VARDATA_ANY(vb), VARSIZE_ANY_EXHDR(va)) == 0;
	}
	return strcmp(DatumGetCString(a), DatumGetCString(b)) == 0;
}

static double
rc_as_float8(Oid type, Datum d)
{
	switch (type)
	{
		case FLOAT4OID:
			return DatumGetFloat4(d);
		case FLOAT8OID:
			return DatumGetFloat8(d);
		case INT2OID:
			return DatumGetInt16(d);
		case INT4OID:
			return DatumGetInt32(d);
		case INT8OID:
			return (double) DatumGetInt64(d);
		default:
			return DatumGetFloat8(DirectFunctionCall1(numeric_float8, d));
	}
}

/* Do two non-null values of a column count as equal under its policy? */
static bool
rc_equal(RcColumn *c, Datum a, Datum b)
{
	switch (c->policy)
	{
		case RC_VALUE:
			return DatumGetBool(FunctionCall2Coll(&c->eq, c->collation, a, b));
		case RC_TOLERANCE:
			{
				double		x = rc_as_float8(c->type, a);
				double		y = rc_as_float8(c->type, b);

				if (isnan(x) || isnan(y))
					return isnan(x) && isnan(y);
				return fabs(x - y) <= c->tolerance;
			}
		case RC_TRUNCATE:
			{
				PGFunction	f = c->type == TIMESTAMPTZOID ? timestamptz_trunc : timestamp_trunc;

				a = DirectFunctionCall2(f, PointerGetDatum(c->unit), a);
				b = DirectFunctionCall2(f, PointerGetDatum(c->unit), b);
				return a == b;
			}
		case RC_TEXT:
			break;
	}
	if (rc_same_bytes(a, b, c->byval, c->len))
		return true;
	/* different bytes may still print the same: the text decides */
	return strcmp(OutputFunctionCall(&c->out, a), OutputFunctionCall(&c->out, b)) == 0;
}

/*
 * Start a side's query: plan it for the parameters and start its executor
 * in the active snapshot.  The plan comes from SPI_prepare, which never
 * makes parallel plans, so the executor can be driven node by node
 * (rc_next, with dest None_Receiver) as well as run to the end into dest.
 */
static void
rc_side_open(RcSide *side, SPIPlanPtr plan, ParamListInfo params,
			 DestReceiver *dest)
{
	List	   *sources = SPI_plan_get_plan_sources(plan);
	CachedPlanSource *source;

	if (list_length(sources) != 1)
		elog(ERROR, "reconcile query must be a single statement");
	source = linitial(sources);
	side->cplan = GetCachedPlan(source, params, NULL, NULL);
	if (list_length(side->cplan->stmt_list) != 1)
		elog(ERROR, "reconcile query must be a single statement");
	side->qd = CreateQueryDesc(linitial_node(PlannedStmt, side->cplan->stmt_list),
							   source->query_string, GetActiveSnapshot(),
							   InvalidSnapshot, dest, params, NULL, 0);
	ExecutorStart(side->qd, 0);
}

static void
rc_side_close(RcSide *side)
{
	ExecutorFinish(side->qd);
	ExecutorEnd(side->qd);
	FreeQueryDesc(side->qd);
	ReleaseCachedPlan(side->cplan, NULL);
	side->qd = NULL;
}

/* Move a side to its query's next row; false at the end. */
static bool
rc_next(RcSide *side)
{
	TupleTableSlot *slot;

	if (side->sort != NULL)
	{
		slot = side->slot;
		if (!tuplesort_gettupleslot(side->sort, true, false, slot, NULL))
			return false;
	}
	else
		slot = ExecProcNode(side->qd->planstate);
	if (TupIsNull(slot))
		return false;
	slot_getallattrs(slot);
	side->values = slot->tts_values;
	side->nulls = slot->tts_isnull;
	return true;
}

/* parameters of these types, all NULL until set */
static ParamListInfo
rc_params(int nparams, Oid *types)
{
	ParamListInfo params = makeParamList(nparams);

	for (int i = 0; i < nparams; i++)
	{
		params->params[i].ptype = types[i];
		params->params[i].pflags = PARAM_FLAG_CONST;
		params->params[i].isnull = true;
		params->params[i].value = (Datum) 0;
	}
	return params;
}

static void
rc_param_set(ParamListInfo params, int i, Datum value)
{
	params->params[i].isnull = false;
	params->params[i].value = value;
}

static Datum *
rc_key_values(RcState *st, RcSide *side, Datum *buf, bool *anynull)
{
	*anynull = false;
	for (int i = 0; i < st->ntkeys; i++)
	{
		int			col = side->off + st->tkey_idx[i];

		if (side->nulls[col])
			*anynull = true;
		buf[i] = side->values[col];
	}
	return buf;
}

static int
rc_key_cmp(RcState *st, Datum *a, Datum *b)
{
	for (int i = 0; i < st->ntkeys; i++)
	{
		int			c = ApplySortComparator(a[i], false, b[i], false,
											&st->tkey_sort[i]);

		if (c != 0)
			return c;
	}
	return 0;
}

/* A row in hand as jsonb: the values of desc's columns, under its names. */
static Jsonb *
rc_row_json(RcState *st, TupleDesc desc, Datum *values, bool *nulls)
{
	HeapTuple	tup = heap_form_tuple(desc, values, nulls);

	return DatumGetJsonbP(FunctionCall1(&st->to_jsonb, HeapTupleGetDatum(tup)));
}

/*
 * List one difference, unless max_diffs are listed already: its key (NULL
 * for a NULL key) and the current rows of the sides given (s: source, t:
 * target, either NULL), from the values in hand.
 */
static void
rc_report(RcState *st, const char *kind, const char *side, Datum *key,
		  RcSide *s, RcSide *t, List *changed)
{
	MemoryContext old;
	Jsonb	   *keyjson = NULL;
	Jsonb	   *srow = NULL;
	Jsonb	   *trow = NULL;

	if (st->max_diffs >= 0 && st->ndiffs >= st->max_diffs)
	{
		st->truncated = true;
		return;
	}
	old = MemoryContextSwitchTo(st->diffcxt);
	if (key != NULL)
		keyjson = rc_row_json(st, st->key_desc, key,
							  palloc0(sizeof(bool) * st->ntkeys));
	if (st->store_rows && s != NULL)
		srow = rc_row_json(st, st->source_desc, &s->values[s->off],
						   &s->nulls[s->off]);
	if (st->store_rows && t != NULL)
		trow = rc_row_json(st, st->target_desc, &t->values[t->off],
						   &t->nulls[t->off]);
	MemoryContextSwitchTo(old);
	st->ndiffs++;
	catalog_diff_add(st->diffs, st->ndiffs, kind, side, keyjson, srow, trow,
					 changed);
	MemoryContextReset(st->diffcxt);
}

/*
 * A row of one side: check its key is not NULL and comes after the last
 * one; report it otherwise.  Returns true when the row takes part in the
 * merge.
 */
static bool
rc_admit(RcState *st, RcSide *side, Datum *key)
{
	bool		anynull;
	MemoryContext old;

	rc_key_values(st, side, key, &anynull);
	if (anynull)
	{
		st->counts.null_keys++;
		rc_report(st, "null_key", side->name, NULL, NULL, NULL, NIL);
		return false;
	}
	if (side->have_prev)
	{
		int			c = rc_key_cmp(st, side->prevkey, key);

		if (c == 0)
		{
			st->counts.duplicates++;
			rc_report(st, "duplicate", side->name, key,
					  side->is_source ? side : NULL,
					  side->is_source ? NULL : side, NIL);
			return false;
		}
		if (c > 0)
			ereport(ERROR,
					(errcode(ERRCODE_COLLATION_MISMATCH),
					 errmsg("rows of the %s do not come in key order", side->name),
					 errdetail("The source and target keys sort differently (different types or collations)."),
					 errhint("Give the key columns the same types and collations on both sides.")));
	}
	MemoryContextReset(side->keycxt);
	old = MemoryContextSwitchTo(side->keycxt);
	for (int i = 0; i < st->ntkeys; i++)
		side->prevkey[i] = datumCopy(key[i], st->tkey_byval[i], st->tkey_len[i]);
	MemoryContextSwitchTo(old);
	side->have_prev = true;
	return true;
}

/*
 * natts > 0 gives the side arrays of its own for rows that do not come from
 * its query (the sampled comparison's probes).
 */
static void
rc_side_init(RcSide *side, const char *name, int natts, int off, int ntkeys)
{
	memset(side, 0, sizeof(RcSide));
	side->name = name;
	side->is_source = strcmp(name, "source") == 0;
	side->off = off;
	if (natts > 0)
	{
		side->values = palloc(sizeof(Datum) * natts);
		side->nulls = palloc(sizeof(bool) * natts);
	}
	side->prevkey = palloc(sizeof(Datum) * ntkeys);
	side->keycxt = AllocSetContextCreate(CurrentMemoryContext, "acme_migrate reconcile key",
										 ALLOCSET_SMALL_SIZES);
}

/* Compare two matched rows; returns the differing columns (NIL if none). */
static List *
rc_compare_rows(RcState *st, RcSide *s, RcSide *t)
{
	List	   *changed = NIL;

	for (int i = 0; i < st->ncols; i++)
	{
		RcColumn   *c = &st->cols[i];
		int			si = s->off + c->idx;
		int			ti = t->off + c->idx;
		bool		same;

		if (s->nulls[si] || t->nulls[ti])
			same = s->nulls[si] && t->nulls[ti];
		else
			same = rc_equal(c, s->values[si], t->values[ti]);
		if (!same)
			changed = lappend(changed, c->name);
	}
	return changed;
}

/*
 * Move a side to its next row that takes part in the merge (NULL and
 * duplicate keys are reported and skipped); false at the end.
 */
static bool
rc_advance(RcState *st, RcSide *side, Datum *key)
{
	while (rc_next(side))
	{
		bool		ok;
		MemoryContext old = MemoryContextSwitchTo(st->rowcxt);

		ok = rc_admit(st, side, key);
		MemoryContextSwitchTo(old);
		if (ok)
			return true;
		if (side->is_source)
			st->counts.source_rows++;
		else
			st->counts.target_rows++;
	}
	return false;
}

/*
 * Merge two sides in key order, listing every difference: a key only in the
 * source is missing, only in the target extra, on both with different
 * values changed.
 */
static void
rc_merge_loop(RcState *st, RcSide *s, RcSide *t)
{
	Datum	   *skey = palloc(sizeof(Datum) * st->ntkeys);
	Datum	   *tkey = palloc(sizeof(Datum) * st->ntkeys);
	bool		shave;
	bool		thave;

	shave = rc_advance(st, s, skey);
	thave = rc_advance(st, t, tkey);
	while (shave || thave)
	{
		int			c;

		CHECK_FOR_INTERRUPTS();
		MemoryContextReset(st->rowcxt);
		if (shave && thave)
			c = rc_key_cmp(st, skey, tkey);
		else
			c = shave ? -1 : 1;

		if (c < 0)
		{
			st->counts.source_rows++;
			st->counts.missing++;
			rc_report(st, "missing", NULL, skey, s, NULL, NIL);
			shave = rc_advance(st, s, skey);
		}
		else if (c > 0)
		{
			st->counts.target_rows++;
			st->counts.extra++;
			rc_report(st, "extra", NULL, tkey, NULL, t, NIL);
			thave = rc_advance(st, t, tkey);
		}
		else
		{
			MemoryContext old = MemoryContextSwitchTo(st->rowcxt);
			List	   *changed = rc_compare_rows(st, s, t);

			MemoryContextSwitchTo(old);
			st->counts.source_rows++;
			st->counts.target_rows++;
			if (changed != NIL)
			{
				st->counts.changed++;
				rc_report(st, "changed", NULL, skey, s, t, changed);
			}
			shave = rc_advance(st, s, skey);
			thave = rc_advance(st, t, tkey);
		}
	}
}

/*
 * A merge of both sides in key order over the target key range (lo, hi]
 * (either NULL: unbounded), listing every difference.  Bounds are given
 * only when the source and target keys have the same types, so that they
 * apply to both.
 */
static void
rc_merge_sides(RcState *st, Datum *lo, Datum *hi)
{
	AmMapping  *map = st->map;
	int			nkeys = map->nkeys;
	int			l = lo != NULL;
	int			h = hi != NULL;
	ParamListInfo sparams;
	ParamListInfo tparams;
	RcSide		s;
	RcSide		t;

	/* the source: the copy's query, with the bounds and no limit */
	{
		Oid		   *argtypes = palloc(sizeof(Oid) * (2 * nkeys + 1));

		for (int i = 0; i < nkeys; i++)
			argtypes[i] = argtypes[nkeys + i] = map->key_types[i];
		argtypes[2 * nkeys] = INT8OID;
		if (st->source_plan[l][h] == NULL)
			st->source_plan[l][h] = rc_prepare(map->select_sql[l][h],
											   2 * nkeys + 1, argtypes);
		sparams = rc_params(2 * nkeys + 1, argtypes);
		rc_param_set(sparams, 2 * nkeys, Int64GetDatum(PG_INT64_MAX));
	}
	{
		Oid		   *argtypes = palloc(sizeof(Oid) * 2 * st->ntkeys);

		for (int i = 0; i < st->ntkeys; i++)
			argtypes[i] = argtypes[st->ntkeys + i] = st->tkey_types[i];
		if (st->target_plan[l][h] == NULL)
			st->target_plan[l][h] = rc_prepare(st->target_sql[l][h],
											   2 * st->ntkeys, argtypes);
		tparams = rc_params(2 * st->ntkeys, argtypes);
	}
	for (int i = 0; i < nkeys; i++)
	{
		if (lo)
		{
			rc_param_set(sparams, i, lo[i]);
			rc_param_set(tparams, i, lo[i]);
		}
		if (hi)
		{
			rc_param_set(sparams, nkeys + i, hi[i]);
			rc_param_set(tparams, nkeys + i, hi[i]);
		}
	}

	rc_side_init(&s, "source", 0, nkeys, st->ntkeys);
	rc_side_open(&s, st->source_plan[l][h], sparams, None_Receiver);
	rc_side_init(&t, "target", 0, 0, st->ntkeys);
	rc_side_open(&t, st->target_plan[l][h], tparams, None_Receiver);

	rc_merge_loop(st, &s, &t);
	rc_side_close(&s);
	rc_side_close(&t);
}

/* The same, with what it allocates released at the end (ranges add up). */
static void
rc_merge(RcState *st, Datum *lo, Datum *hi)
{
	MemoryContext cxt = AllocSetContextCreate(CurrentMemoryContext,
											  "acme_migrate reconcile merge",
											  ALLOCSET_DEFAULT_SIZES);
	MemoryContext old = MemoryContextSwitchTo(cxt);

	rc_merge_sides(st, lo, hi);
	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);
}

/*
 * The sampled comparison: a random fraction of each side's rows is looked
 * up on the other side by key; the counts are scaled by 1 / fraction.
 */

/* a target row found for a sampled source row: changed, or a duplicate */
static void
rc_sample_match(RcState *st, RcSide *s, RcSide *probe, Datum *key,
				AmReconcileCounts *seen)
{
	MemoryContext old;
	List	   *changed;
	SPITupleTable *tab = SPI_tuptable;

	heap_deform_tuple(tab->vals[0], tab->tupdesc, probe->values, probe->nulls);
	if (SPI_processed > 1)
	{
		seen->duplicates++;
		rc_report(st, "duplicate", "target", key, NULL, probe, NIL);
	}
	old = MemoryContextSwitchTo(st->rowcxt);
	changed = rc_compare_rows(st, s, probe);
	MemoryContextSwitchTo(old);
	if (changed != NIL)
	{
		seen->changed++;
		rc_report(st, "changed", NULL, key, s, probe, changed);
	}
	SPI_freetuptable(tab);
}

/* source sample: each row looked up in the target */
static void
rc_sample_source(RcState *st, double fraction, AmReconcileCounts *seen)
{
	AmMapping  *map = st->map;
	int			nparams = 2 * map->nkeys + 2;
	Oid		   *argtypes = palloc(sizeof(Oid) * nparams);
	ParamListInfo params;
	StringInfoData q;
	SPIPlanPtr	tprobe;
	RcSide		s;
	RcSide		probe;
	Datum	   *key = palloc(sizeof(Datum) * st->ntkeys);

	for (int i = 0; i < map->nkeys; i++)
		argtypes[i] = argtypes[map->nkeys + i] = map->key_types[i];
	argtypes[nparams - 2] = INT8OID;
	argtypes[nparams - 1] = FLOAT8OID;
	params = rc_params(nparams, argtypes);
	rc_param_set(params, nparams - 2, Int64GetDatum(PG_INT64_MAX));
	rc_param_set(params, nparams - 1, Float8GetDatum(fraction));
	tprobe = rc_prepare(st->target_probe_sql, st->ntkeys, st->tkey_types);

	initStringInfo(&q);
	appendStringInfo(&q, "SELECT * FROM (%s) x WHERE pg_catalog.random() OPERATOR(pg_catalog.<) $%d",
					 map->select_sql[0][0], nparams);
	rc_side_init(&s, "source", 0, map->nkeys, st->ntkeys);
	rc_side_open(&s, rc_prepare(q.data, nparams, argtypes), params,
				 None_Receiver);
	rc_side_init(&probe, "target", map->nmapped + st->nextra, 0, st->ntkeys);
	while (rc_next(&s))
	{
		bool		anynull;

		CHECK_FOR_INTERRUPTS();
		MemoryContextReset(st->rowcxt);
		seen->source_rows++;
		rc_key_values(st, &s, key, &anynull);
		if (anynull)
		{
			seen->null_keys++;
			rc_report(st, "null_key", "source", NULL, NULL, NULL, NIL);
			continue;
		}
		if (SPI_execute_plan(tprobe, key, NULL, true, 2) != SPI_OK_SELECT)
			elog(ERROR, "could not look up a key in the target");
		if (SPI_processed == 0)
		{
			seen->missing++;
			rc_report(st, "missing", NULL, key, &s, NULL, NIL);
		}
		else
			rc_sample_match(st, &s, &probe, key, seen);
	}
	rc_side_close(&s);
}

/* target sample: each row looked up in the source, for extras */
static void
rc_sample_target(RcState *st, double fraction, AmReconcileCounts *seen)
{
	Oid			argtype = FLOAT8OID;
	ParamListInfo params;
	StringInfoData q;
	SPIPlanPtr	sprobe;
	RcSide		t;
	RcSide		sprobe_row;
	Datum	   *key = palloc(sizeof(Datum) * st->ntkeys);

	sprobe = rc_prepare(st->source_probe_sql, st->ntkeys, st->tkey_types);
	initStringInfo(&q);
	appendStringInfo(&q, "SELECT * FROM (%s) x WHERE pg_catalog.random() OPERATOR(pg_catalog.<) $1",
					 st->target_sql[0][0]);
	rc_side_init(&t, "target", 0, 0, st->ntkeys);
	rc_side_init(&sprobe_row, "source", st->map->nmapped, 0, st->ntkeys);
	params = rc_params(1, &argtype);
	rc_param_set(params, 0, Float8GetDatum(fraction));
	rc_side_open(&t, rc_prepare(q.data, 1, &argtype), params, None_Receiver);
	while (rc_next(&t))
	{
		bool		anynull;
		uint64		n;
		SPITupleTable *tab;

		CHECK_FOR_INTERRUPTS();
		seen->target_rows++;
		rc_key_values(st, &t, key, &anynull);
		if (anynull)
		{
			seen->null_keys++;
			rc_report(st, "null_key", "target", NULL, NULL, NULL, NIL);
			continue;
		}
		if (SPI_execute_plan(sprobe, key, NULL, true, 2) != SPI_OK_SELECT)
			elog(ERROR, "could not look up a key in the source");
		n = SPI_processed;
		tab = SPI_tuptable;
		if (n == 0)
		{
			seen->extra++;
			rc_report(st, "extra", NULL, key, NULL, &t, NIL);
		}
		else if (n > 1)
		{
			heap_deform_tuple(tab->vals[0], tab->tupdesc, sprobe_row.values,
							  sprobe_row.nulls);
			seen->duplicates++;
			rc_report(st, "duplicate", "source", key, &sprobe_row, NULL, NIL);
		}
		SPI_freetuptable(tab);
	}
	rc_side_close(&t);
}

static void
rc_sample(RcState *st, double fraction)
{
	AmReconcileCounts seen;
	double		scale = 1.0 / fraction;

	memset(&seen, 0, sizeof(seen));
	rc_sample_source(st, fraction, &seen);
	rc_sample_target(st, fraction, &seen);
	st->counts.source_rows = (int64) rint(seen.source_rows * scale);
	st->counts.target_rows = (int64) rint(seen.target_rows * scale);
	st->counts.missing = (int64) rint(seen.missing * scale);
	st->counts.extra = (int64) rint(seen.extra * scale);
	st->counts.changed = (int64) rint(seen.changed * scale);
	st->counts.duplicates = (int64) rint(seen.duplicates * scale);
	st->counts.null_keys = (int64) rint(seen.null_keys * scale);
}

/*
 * The hash-first comparisons.  They apply when the target key is NOT NULL
 * and unique in the target, and every column is compared by
 * representation.  Both sides are first read in any order (sequential
 * scans: no index walk, no sort) and summed into buckets: per bucket the
 * number of rows and the sum modulo 2^128 of their hashes (XXH3-128 of the
 * bytes of the key and the compared columns: equal bytes have equal text,
 * so a row whose text differs hashes differently).  Only the rows of
 * buckets that differ are then compared, which is where every difference
 * is.  A row goes to a bucket by its key alone, the same way on both
 * sides:
 *
 *	- "hash_ranges": a single integer key of the same type on both sides;
 *	  buckets are ranges of consecutive key values.  When both sides are
 *	  tables, the rows of differing buckets are read again by place, as
 *	  below; otherwise the key ranges of differing buckets are merged with
 *	  index range scans on both sides;
 *	- "hash_buckets": any other key whose types have hash opclasses;
 *	  buckets are the key's hash, computed with the target's hash functions
 *	  and collations on the values cast to the target's types, so keys the
 *	  target holds equal fall in one bucket.  Both sides are read a second
 *	  time, the rows of differing buckets kept and sorted by the target's
 *	  key ordering, and the two sorted sets merged: the report comes in key
 *	  order, as from a merge of everything.
 *
 * Exactness: two equal buckets hold the same multiset of (key, compared
 * columns) byte strings, up to a collision of 128-bit sums.  The merge
 * would find nothing to report in them: each source row has a target row
 * with the same bytes, hence the same text; the target holds at most one
 * row per key (unique index, and in a deterministic collation keys equal
 * to the merge are equal bytes), so the source does too: not even a
 * duplicate key is skipped.  Every row of a key the merge would match
 * falls in the bucket of that key on both sides, so the rows compared in
 * the second step pair up exactly as in a merge of everything.
 *
 * Fallbacks to a merge of everything: a NULL key (the merge reports it), a
 * key type without a hash opclass, a nondeterministic collation on a key
 * column (the unique index may use another), a source that is a view or a
 * foreign table (read once by a merge, twice here), or differing buckets
 * holding more than a quarter of the rows, where one merge costs less.
 */
#define RC_BUCKET_KEYS	16		/* key values per range bucket, at least */
#define RC_MAX_BUCKETS	(1 << 19)
#define RC_BUCKET_ROWS	32		/* rows per hash bucket, about */
#define RC_MAX_HASH_BUCKETS	65536

typedef struct RcBucket
{
	int64		rows;
	uint64		lo;				/* sum of row hashes, low and high halves */
	uint64		hi;
} RcBucket;

/*
 * Where the rows of one side are (hash buckets, when a side is a table):
 * each row's bucket, ctid, key tag and digest, remembered by the first
 * read.  The rows of differing buckets that match a row of the other side
 * by key tag and digest need not be read again (rc_prematch); the second
 * read fetches the others by ctid, in the same snapshot.  Past
 * RC_MAX_PLACES_MEM bytes (or work_mem if more) the side is read again in
 * full instead.
 */
#define RC_MAX_PLACES_MEM	((Size) 160 * 1024 * 1024)

typedef struct RcPlace
{
	uint32		bucket;
	uint32		tag;			/* a hash of the key alone */
	ItemPointerData tid;
	uint64		lo;				/* the row's digest (rc_row_digest) */
	uint64		hi;
} RcPlace;

typedef struct RcPlaces
{
	RcPlace    *rows;			/* NULL: not remembered */
	int64		n;
	int64		cap;
	bool		fixed;			/* in shared memory: cannot grow */
} RcPlaces;

typedef struct RcBuckets
{
	DestReceiver pub;			/* receives the rows of one side */
	RcState    *st;
	bool		by_hash;		/* buckets by key hash, else by key range */
	bool		remember;		/* remember where the rows of tables are */
	bool		citus;			/* ranges summed by SQL, on Citus's shards */
	Oid			type;			/* ranges: of the key, int2, int4 or int8 */
	int64		min;			/* ranges: the target's key span */
	uint64		span;			/* ... from min, up to min + span */
	uint64		width;			/* ranges: key values per bucket */
	FmgrInfo   *key_hash;		/* hashes: per key column */
	Oid		   *key_coll;		/* ... and the collation it hashes in */
	int			n;
	RcBucket   *side;			/* the buckets being filled */
	bool	   *keep;			/* second read: keep rows of these buckets */
	bool		keep_all;		/* ... or every row read (filtered by SQL) */
	Tuplesortstate *sort;		/* ... sorted by key here */
	TupleDesc	desc;			/* ... rows of this layout */
	MemoryContext cxt;			/* where the sort lives (not the executor's) */
	int64		kept;
	bool		null_key;		/* a NULL key was seen */
	RcPlaces   *places;			/* first read: remember rows here (or NULL) */
	int			place_att;		/* ... the ctid's column */
	RcPlaces	side_places[2]; /* [target] */
	bool		direct;			/* first read: scan the heaps (rc_direct_scan) */
	Oid			direct_relid[2];
	AttrNumber *direct_att[2];	/* the attribute of each first-read column */
	AttrNumber	direct_maxatt[2];
	int			direct_nvals;	/* columns of a first-read query */
	RcBucket   *pending;		/* first read: the last row's bucket ... */
	XXH128_hash_t pending_hash; /* ... and hash, not added yet */
} RcBuckets;

static bool
rc_hash_first_applies(RcState *st)
{
	for (int i = 0; i < st->ncols; i++)
		if (st->cols[i].policy != RC_TEXT)
			return false;
	return mapping_key_is_unique(st->map->target_relid,
								 st->job->target_key_columns);
}

/* ranges of integer keys, same type on both sides? */
static bool
rc_by_ranges(RcState *st)
{
	Oid			type = st->tkey_types[0];

	return st->ntkeys == 1 && st->map->nkeys == 1 &&
		st->map->key_types[0] == type &&
		(type == INT2OID || type == INT4OID || type == INT8OID);
}

/*
 * The collation a key column of this type and collation is hashed in, for
 * its bucket: none for a type that is not collatable; "C" for a
 * deterministic collation (or none given), where equal values are equal
 * bytes and the text-like types' hash functions hash the bytes whatever the
 * collation, so that a key lands in the same bucket on every node,
 * whatever its locales; false for a nondeterministic collation, whose
 * equal values may differ in bytes (hashed by a sort key that depends on
 * the ICU library of the node).
 */
static bool
rc_hash_collation(Oid type, Oid coll, Oid *result)
{
	*result = InvalidOid;
	if (!type_is_collatable(type))
		return true;
	if (OidIsValid(coll) && !get_collation_isdeterministic(coll))
		return false;
	*result = C_COLLATION_OID;
	return true;
}

/*
 * The bucket, of nbuckets (a power of two), of a key of non-NULL values:
 * the hashes of the values by their types' hash functions, in the
 * collations rc_hash_collation gives, combined in order (rc_key_hash_add
 * per value, from 0), then rc_key_hash_bucket.  Both the hash pass in
 * memory (rc_bucket_of) and acme_migrate.key_bucket, which computes it by
 * SQL on a Citus shard, do so.
 */
static inline uint32
rc_key_hash_add(uint32 h, FmgrInfo *hash, Oid coll, Datum value)
{
	return hash_combine(h, DatumGetUInt32(FunctionCall1Coll(hash, coll, value)));
}

static inline int
rc_key_hash_bucket(uint32 h, int nbuckets)
{
	return (int) (murmurhash32(h) & (uint32) (nbuckets - 1));
}

/* the hash functions of the target key columns, if each has one */
static bool
rc_key_hash_funcs(RcState *st, RcBuckets *bk)
{
	bk->key_hash = palloc0(sizeof(FmgrInfo) * st->ntkeys);
	bk->key_coll = palloc0(sizeof(Oid) * st->ntkeys);
	for (int i = 0; i < st->ntkeys; i++)
	{
		TypeCacheEntry *tc = lookup_type_cache(st->tkey_types[i],
											   TYPECACHE_HASH_PROC_FINFO);

		if (!OidIsValid(tc->hash_proc_finfo.fn_oid))
			return false;
		if (!rc_hash_collation(st->tkey_types[i],
							   st->tkey_sort[i].ssup_collation,
							   &bk->key_coll[i]))
			return false;
		fmgr_info_copy(&bk->key_hash[i], &tc->hash_proc_finfo,
					   CurrentMemoryContext);
	}
	return true;
}

/*
 * Hash functions of the target key columns, or false when a column has no
 * hash opclass or a nondeterministic collation, or when the source is a
 * view or foreign table: it would be read twice when buckets differ (the
 * merge reads it once).
 */
static bool
rc_key_hash_setup(RcState *st, RcBuckets *bk)
{
	char		kind = get_rel_relkind(st->map->source_relid);

	if (kind != RELKIND_RELATION && kind != RELKIND_PARTITIONED_TABLE &&
		kind != RELKIND_MATVIEW)
		return false;
	return rc_key_hash_funcs(st, bk);
}

static int64
rc_int_key(Oid type, Datum d)
{
	if (type == INT2OID)
		return DatumGetInt16(d);
	if (type == INT4OID)
		return DatumGetInt32(d);
	return DatumGetInt64(d);
}

static Datum
rc_int_datum(Oid type, int64 v)
{
	if (type == INT2OID)
		return Int16GetDatum((int16) v);
	if (type == INT4OID)
		return Int32GetDatum((int32) v);
	return Int64GetDatum(v);
}

/* the key value that ends range bucket b (b < n - 1) */
static Datum
rc_bucket_end(RcBuckets *bk, int b)
{
	return rc_int_datum(bk->type,
						(int64) ((uint64) bk->min + (uint64) (b + 1) * bk->width - 1));
}

/*
 * The bucket of a row (in st->rowcxt), or -1 for a NULL key, and its key's
 * tag: a hash of the key alone, the same for keys the merge finds equal.
 * values and isnull are the row's columns as a side's first-read query
 * returns them.
 */
static int
rc_bucket_of(RcBuckets *bk, Datum *values, bool *isnull, uint32 *tag)
{
	RcState    *st = bk->st;
	uint32		h = 0;

	for (int i = 0; i < st->ntkeys; i++)
		if (isnull[st->tkey_idx[i]])
			return -1;
	if (!bk->by_hash)
	{
		int64		key = rc_int_key(bk->type, values[st->tkey_idx[0]]);
		uint64		b;

		*tag = (uint32) hash_bytes_uint32_extended((uint32) key,
												   (uint64) key >> 32);
		b = key <= bk->min ? 0 : ((uint64) key - (uint64) bk->min) / bk->width;
		return (int) Min(b, (uint64) bk->n - 1);
	}
	for (int i = 0; i < st->ntkeys; i++)
		h = rc_key_hash_add(h, &bk->key_hash[i], bk->key_coll[i],
							values[st->tkey_idx[i]]);
	*tag = h;
	return rc_key_hash_bucket(h, bk->n);
}

/* Make room for n more bytes in the row's digest; returns where they go. */
static inline char *
rc_digest_reserve(RcState *st, uint32 n)
{
	char	   *p;

	if (st->dlen + n > st->dcap)
	{
		st->dcap = Max(2 * st->dcap, st->dlen + n);
		st->dbuf = repalloc_huge(st->dbuf, st->dcap);
	}
	p = st->dbuf + st->dlen;
	st->dlen += n;
	return p;
}

/*
 * Append a value's bytes, as rc_same_bytes compares them, to the row's
 * digest: equal digests mean equal bytes, hence equal text.  (Different
 * bytes with the same text only send their bucket to the merge.)
 */
static inline void
rc_digest_value(RcState *st, Datum d, bool isnull, bool byval, int16 len)
{
	uint32		n;
	char	   *p;
	const char *data;

	if (isnull)
	{
		*rc_digest_reserve(st, 1) = 'n';
		return;
	}
	if (byval)
	{
		p = rc_digest_reserve(st, 1 + sizeof(Datum));
		*p = 'v';
		memcpy(p + 1, &d, sizeof(Datum));
		return;
	}
	if (len > 0)
	{
		p = rc_digest_reserve(st, 1 + len);
		*p = 'v';
		am_copy_short(p + 1, DatumGetPointer(d), len);
		return;
	}
	if (len == -1)
	{
		struct varlena *v = PG_DETOAST_DATUM_PACKED(d);

		n = VARSIZE_ANY_EXHDR(v);
		data = VARDATA_ANY(v);
	}
	else
	{
		data = DatumGetCString(d);
		n = strlen(data);
	}
	p = rc_digest_reserve(st, 1 + sizeof(n) + n);
	*p = 'v';
	memcpy(p + 1, &n, sizeof(n));
	am_copy_short(p + 1 + sizeof(n), data, n);
}

/* The row's hash: of its key's and compared columns' bytes. */
static XXH128_hash_t
rc_row_digest(RcState *st, Datum *values, bool *isnull)
{
	st->dlen = 0;
	for (int i = 0; i < st->nhash; i++)
	{
		int			c = st->hash_idx[i];

		rc_digest_value(st, values[c], isnull[c],
						st->hash_byval[i], st->hash_len[i]);
	}
	return XXH3_128bits(st->dbuf, st->dlen);
}

/*
 * Add the previous row's hash to its bucket (fetched into the cache while
 * this row was hashed: buckets of hashed keys are met in random order),
 * and make this row's the pending one.  NULL bucket: only flush.
 */
static void
rc_bucket_add(RcBuckets *bk, RcBucket *bucket, XXH128_hash_t h)
{
	RcBucket   *p = bk->pending;

	if (p != NULL)
	{
		p->rows++;
		p->lo += bk->pending_hash.low64;
		p->hi += bk->pending_hash.high64 + (p->lo < bk->pending_hash.low64);
	}
	bk->pending = bucket;
	bk->pending_hash = h;
}

/* remember a row's place; forget them all past the limit */
static void
rc_place_add(RcBuckets *bk, int b, uint32 tag, ItemPointer tid,
			 XXH128_hash_t h)
{
	RcPlaces   *pl = bk->places;

	if (pl->rows == NULL)
		return;
	if (pl->n == pl->cap)
	{
		if (pl->fixed || (Size) pl->cap * 2 * sizeof(RcPlace) >
			Max(RC_MAX_PLACES_MEM, (Size) work_mem * 1024))
		{
			if (!pl->fixed)
				pfree(pl->rows);
			pl->rows = NULL;
			return;
		}
		pl->cap *= 2;
		pl->rows = repalloc_huge(pl->rows, sizeof(RcPlace) * pl->cap);
	}
	pl->rows[pl->n].bucket = (uint32) b;
	pl->rows[pl->n].tag = tag;
	ItemPointerCopy(tid, &pl->rows[pl->n].tid);
	pl->rows[pl->n].lo = h.low64;
	pl->rows[pl->n].hi = h.high64;
	pl->n++;
}

/*
 * A large array of the first read (buckets, places), in transparent huge
 * pages where the kernel gives them on request (Linux's THP "madvise"
 * mode): each of its 4 kB pages would otherwise be mapped by a page fault
 * of its own, which on a virtual machine is a trap to the hypervisor
 * (measured: page faults were 14% of the leader's time for 1M text keys).
 */
#define RC_HUGE_PAGE	((uintptr_t) 2 * 1024 * 1024)

/* ask for huge pages for the whole huge pages inside [p, p + size) */
static void
rc_advise_huge(char *p, Size size)
{
#ifdef MADV_HUGEPAGE
	uintptr_t	lo = TYPEALIGN(RC_HUGE_PAGE, (uintptr_t) p);
	uintptr_t	hi = TYPEALIGN_DOWN(RC_HUGE_PAGE, (uintptr_t) p + size);

	if (hi > lo)
		(void) madvise((void *) lo, hi - lo, MADV_HUGEPAGE);
#endif
}

static void *
rc_alloc_big(MemoryContext cxt, Size size, bool zero)
{
	char	   *p = MemoryContextAllocHuge(cxt, size);

	rc_advise_huge(p, size);
	if (zero)
		memset(p, 0, size);
	return p;
}

/*
 * A side's buckets, zeroed.  Past a quarter of a huge page, in memory of
 * their own that starts on a huge page boundary, so that the whole array
 * gets transparent huge pages where the kernel gives them (rc_alloc_big
 * only advises the huge pages inside an allocation, none for one this
 * size): zeroing 768 kB of 4 kB pages was 11 ms of page faults of the
 * leader's for 1M uuid keys.  Freed with their memory context.
 */
static RcBucket *
rc_alloc_buckets(MemoryContext cxt, int n)
{
	Size		size = sizeof(RcBucket) * n;
	char	   *p;

	if (size < RC_HUGE_PAGE / 4)
		return rc_alloc_big(cxt, size, true);
	p = MemoryContextAllocHuge(cxt, TYPEALIGN(RC_HUGE_PAGE, size) + RC_HUGE_PAGE);
	p = (char *) TYPEALIGN(RC_HUGE_PAGE, (uintptr_t) p);
	rc_advise_huge(p, TYPEALIGN(RC_HUGE_PAGE, size));
	memset(p, 0, size);
	return (RcBucket *) p;
}

/*
 * The rows a relation is thought to have: its pages times the rows per page
 * last counted (as the planner estimates), or as many as a page can hold
 * when never counted; a non-table's, nrows.
 */
static double
rc_rows_estimate(Oid relid, double nrows)
{
	Relation	rel = relation_open(relid, AccessShareLock);

	if (RELKIND_HAS_STORAGE(rel->rd_rel->relkind))
		nrows = (double) RelationGetNumberOfBlocks(rel) *
			(rel->rd_rel->reltuples >= 0 && rel->rd_rel->relpages > 0 ?
			 rel->rd_rel->reltuples / rel->rd_rel->relpages :
			 MaxHeapTuplesPerPage);
	relation_close(rel, AccessShareLock);
	return nrows;
}

/*
 * Room for the places of the rows a table is thought to have, and more, up
 * to the limit: allocated once, not grown by copying.
 */
static int64
rc_places_cap(Oid relid)
{
	return (int64) Min(rc_rows_estimate(relid, 0) * 1.25 + 1024,
					   (double) Max(RC_MAX_PLACES_MEM, (Size) work_mem * 1024) / sizeof(RcPlace));
}

/*
 * The first read of a row (in st->rowcxt): summed into its bucket, its
 * place remembered (tid: where it is, when places are).  Returns its
 * bucket, -1 for a NULL key.
 */
static inline int
rc_bucket_row(RcBuckets *bk, Datum *values, bool *isnull, ItemPointer tid)
{
	uint32		tag;
	int			b = rc_bucket_of(bk, values, isnull, &tag);
	XXH128_hash_t h;

	if (b < 0)
	{
		bk->null_key = true;
		return b;
	}
#if defined(__GNUC__) || defined(__clang__)
	__builtin_prefetch(&bk->side[b], 1);
#endif
	h = rc_row_digest(bk->st, values, isnull);
	rc_bucket_add(bk, &bk->side[b], h);
	if (bk->places != NULL)
		rc_place_add(bk, b, tag, tid, h);
	return b;
}

/*
 * A row of one side: summed into its bucket (first read), or kept when
 * its bucket differs (second read).  A NULL key stops the read.
 */
static bool
rc_bucket_receive(TupleTableSlot *slot, DestReceiver *self)
{
	RcBuckets  *bk = (RcBuckets *) self;
	MemoryContext old = MemoryContextSwitchTo(bk->st->rowcxt);
	int			b;
	uint32		tag;

	slot_getallattrs(slot);
	if (bk->keep == NULL)
		(void) rc_bucket_row(bk, slot->tts_values, slot->tts_isnull,
							 bk->places == NULL ? NULL :
							 (ItemPointer) DatumGetPointer(slot->tts_values[bk->place_att]));
	else if ((b = bk->keep_all ? 0 :
			  rc_bucket_of(bk, slot->tts_values, slot->tts_isnull, &tag)) < 0)
		bk->null_key = true;
	else if (bk->keep_all || bk->keep[b])
	{
		tuplesort_puttupleslot(bk->sort, slot);
		bk->kept++;
	}
	MemoryContextSwitchTo(old);
	MemoryContextReset(bk->st->rowcxt);
	return !bk->null_key;
}

/* second read: sort the kept rows by the target key */
static void
rc_bucket_startup(DestReceiver *self, int operation, TupleDesc typeinfo)
{
	RcBuckets  *bk = (RcBuckets *) self;
	RcState    *st = bk->st;
	AttrNumber *attnums;
	Oid		   *ops;
	Oid		   *colls;
	bool	   *nulls_first;
	MemoryContext old;

	if (bk->keep == NULL)
		return;
	old = MemoryContextSwitchTo(bk->cxt);
	attnums = palloc(sizeof(AttrNumber) * st->ntkeys);
	ops = palloc(sizeof(Oid) * st->ntkeys);
	colls = palloc(sizeof(Oid) * st->ntkeys);
	nulls_first = palloc0(sizeof(bool) * st->ntkeys);
	for (int i = 0; i < st->ntkeys; i++)
	{
		attnums[i] = st->tkey_idx[i] + 1;
		ops[i] = lookup_type_cache(st->tkey_types[i], TYPECACHE_LT_OPR)->lt_opr;
		colls[i] = st->tkey_sort[i].ssup_collation;
	}
	bk->desc = CreateTupleDescCopy(typeinfo);
	bk->sort = tuplesort_begin_heap(bk->desc, st->ntkeys, attnums, ops, colls,
									nulls_first, work_mem, NULL,
									TUPLESORT_NONE);
	MemoryContextSwitchTo(old);
}

static void
rc_bucket_shutdown(DestReceiver *self)
{
}

/*
 * Read all of one side's query into buckets, or keep its differing rows.
 * The query's parameter $1, when arg is given, is an array of type: ctids
 * (a generic plan, a TID scan, not one planned per array) or bucket
 * numbers (Citus: planned for the array, sent to the shards).
 */
static void
rc_bucket_side(RcBuckets *bk, const char *sql, Oid type, ArrayType *arg)
{
	RcSide		side;
	ParamListInfo params = NULL;

	if (arg != NULL)
	{
		params = rc_params(1, &type);
		rc_param_set(params, 0, PointerGetDatum(arg));
	}
	memset(&side, 0, sizeof(side));
	rc_side_open(&side, arg && type == TIDARRAYOID ?
				 rc_prepare_generic(sql, 1, &type) :
				 rc_prepare(sql, arg ? 1 : 0, &type), params, &bk->pub);
	ExecutorRun(side.qd, ForwardScanDirection, 0, true);
	rc_side_close(&side);
	rc_bucket_add(bk, NULL, bk->pending_hash);	/* the last row */
}

/* The columns hashed: the target key, then the other compared columns. */
static void
rc_digest_setup(RcState *st)
{
	int			n = st->ncols + st->ntkeys;

	st->hash_idx = palloc(sizeof(int) * n);
	st->hash_byval = palloc(sizeof(bool) * n);
	st->hash_len = palloc(sizeof(int16) * n);
	for (int k = 0; k < st->ntkeys; k++)
	{
		st->hash_idx[st->nhash] = st->tkey_idx[k];
		st->hash_byval[st->nhash] = st->tkey_byval[k];
		st->hash_len[st->nhash++] = st->tkey_len[k];
	}
	for (int i = 0; i < st->ncols; i++)
	{
		bool		is_key = false;

		for (int k = 0; k < st->ntkeys; k++)
			is_key |= (st->cols[i].idx == st->tkey_idx[k]);
		if (is_key)
			continue;
		st->hash_idx[st->nhash] = st->cols[i].idx;
		st->hash_byval[st->nhash] = st->cols[i].byval;
		st->hash_len[st->nhash++] = st->cols[i].len;
	}
	st->dcap = 1024;
	st->dbuf = palloc(st->dcap);
}

/*
 * Range buckets: cut the target's key span into equal parts; false when
 * the target is empty (every source row is missing: merge).
 */
static bool
rc_ranges_setup(RcState *st, RcBuckets *bk, int max_buckets)
{
	const char *k = quote_identifier(st->tkey_names[0]);
	bool		isnull;
	Datum		d;
	uint64		span;

	bk->type = st->tkey_types[0];
	if (SPI_execute(psprintf("SELECT pg_catalog.min(%s), pg_catalog.max(%s) FROM %s",
							 k, k, rc_relname(st->map->target_relid)),
					true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read the target's key span");
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (isnull)
		return false;
	bk->min = rc_int_key(bk->type, d);
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	span = (uint64) rc_int_key(bk->type, d) - (uint64) bk->min;
	bk->span = span;
	bk->n = (int) Min(span / RC_BUCKET_KEYS + 1, max_buckets);
	bk->width = span / bk->n + 1;
	return true;
}

/*
 * Hash buckets: a power of two, about one per RC_BUCKET_ROWS rows of the
 * target, at least 1024, at most RC_MAX_HASH_BUCKETS: they are met in
 * random order, so they must stay in the processor's cache (1.5 MB at
 * most; their memory is also fetched ahead, rc_bucket_add).  Measured on 1M
 * uuid keys: with buckets of 4 rows (6 MB of them) the bucket updates took
 * most of the read's time in rc_bucket_receive, more than the smaller
 * second read (the rows of differing buckets) saved.  Range buckets are
 * met in key order and can be small: 16 keys at least.
 */
static void
rc_hashes_setup(RcState *st, RcBuckets *bk)
{
	double		rows = rc_rows_estimate(st->map->target_relid,
										RC_MAX_HASH_BUCKETS * (double) RC_BUCKET_ROWS);

	bk->n = 1024;
	while (bk->n < RC_MAX_HASH_BUCKETS && bk->n * (double) RC_BUCKET_ROWS < rows)
		bk->n *= 2;
}

/* merge each run of differing range buckets as one key range */
static void
rc_merge_ranges(RcState *st, RcBuckets *bk, bool *differs)
{
	for (int b = 0; b < bk->n; b++)
	{
		int			e = b;
		Datum		lo;
		Datum		hi;

		if (!differs[b])
			continue;
		while (e + 1 < bk->n && differs[e + 1])
			e++;
		if (b > 0)
			lo = rc_bucket_end(bk, b - 1);
		if (e < bk->n - 1)
			hi = rc_bucket_end(bk, e);
		rc_merge(st, b > 0 ? &lo : NULL, e < bk->n - 1 ? &hi : NULL);
		st->counts.ranges_merged++;
		b = e;
	}
}

/* places by bucket, then key tag: the rows of a key are together */
static inline int
rc_place_key_cmp(const RcPlace *a, const RcPlace *b)
{
	if (a->bucket != b->bucket)
		return a->bucket < b->bucket ? -1 : 1;
	if (a->tag != b->tag)
		return a->tag < b->tag ? -1 : 1;
	return 0;
}

/* places in the order rc_prematch walks them: bucket, key tag, digest */
static inline int
rc_place_cmp(const RcPlace *a, const RcPlace *b)
{
	int			c = rc_place_key_cmp(a, b);

	if (c != 0)
		return c;
	if (a->hi != b->hi)
		return a->hi < b->hi ? -1 : 1;
	if (a->lo != b->lo)
		return a->lo < b->lo ? -1 : 1;
	return 0;
}

#define ST_SORT rc_place_sort
#define ST_ELEMENT_TYPE RcPlace
#define ST_COMPARE(a, b) rc_place_cmp(a, b)
#define ST_SCOPE static
#define ST_DECLARE
#define ST_DEFINE
#include "lib/sort_template.h"

/*
 * Keep a side's places in differing buckets only (all the second read
 * fetches), sorted for rc_prematch.
 */
static void
rc_places_differing(RcPlaces *pl, bool *differs)
{
	int64		n = 0;

	if (pl->rows == NULL)
		return;
	for (int64 i = 0; i < pl->n; i++)
		if (differs[pl->rows[i].bucket])
			pl->rows[n++] = pl->rows[i];
	pl->n = n;
	rc_place_sort(pl->rows, n);
}

/* the end of the group of places with the key tag of place i */
static int64
rc_tag_group_end(RcPlaces *pl, int64 i)
{
	int64		e = i + 1;

	while (e < pl->n && rc_place_key_cmp(&pl->rows[e], &pl->rows[i]) == 0)
		e++;
	return e;
}

/*
 * Before the second read: set aside the rows of differing buckets that
 * cannot make a difference, so that only the others are fetched again.
 * Both sides' places are those of differing buckets, sorted
 * (rc_places_differing).  Returns the pairs of rows set aside.
 *
 * A source row and a target row are set aside together when each is the
 * only row of its side with its key tag in its bucket and their digests are
 * equal.  Equal digests mean equal bytes of the key and of every compared
 * column (rc_row_digest: the argument that equal bucket sums mean equal
 * buckets, applied to two rows), so the merge would match them and find no
 * column changed.  Rows with equal keys have equal tags (the tag is a hash
 * of the key by the key type's hash function, or of the integer key), so
 * each row's key is on its side once: neither is a duplicate, and nothing
 * else of either side meets that key.  Every other row (a tag shared on a
 * side, a digest without its twin) is read again and merged, as before.
 */
static int64
rc_prematch(RcBuckets *bk)
{
	RcPlaces   *s = &bk->side_places[0];
	RcPlaces   *t = &bk->side_places[1];
	int64		i = 0;
	int64		j = 0;
	int64		ns = 0;
	int64		nt = 0;
	int64		pairs = 0;

	if (s->rows == NULL || t->rows == NULL)
		return 0;
	while (i < s->n || j < t->n)
	{
		int			c;
		int64		ie;
		int64		je;

		if (i < s->n && j < t->n)
			c = rc_place_key_cmp(&s->rows[i], &t->rows[j]);
		else
			c = i < s->n ? -1 : 1;
		ie = c <= 0 ? rc_tag_group_end(s, i) : i;
		je = c >= 0 ? rc_tag_group_end(t, j) : j;
		if (c == 0 && ie == i + 1 && je == j + 1 &&
			rc_place_cmp(&s->rows[i], &t->rows[j]) == 0)
			pairs++;
		else
		{
			while (i < ie)
				s->rows[ns++] = s->rows[i++];
			while (j < je)
				t->rows[nt++] = t->rows[j++];
		}
		i = ie;
		j = je;
	}
	s->n = ns;
	t->n = nt;
	return pairs;
}

/* the ctids of a side's places (rc_places_differing's), as a tid[] */
static ArrayType *
rc_place_tids(RcPlaces *pl)
{
	Datum	   *tids = palloc(sizeof(Datum) * Max(pl->n, 1));

	for (int64 i = 0; i < pl->n; i++)
		tids[i] = PointerGetDatum(&pl->rows[i].tid);
	return construct_array(tids, (int) pl->n, TIDOID, sizeof(ItemPointerData),
						   false, TYPALIGN_SHORT);
}

static void rc_citus_keep(RcBuckets *bk, bool *differs, int target);

/*
 * Read a side again, keeping the rows of differing buckets, sorted: by
 * ctid when the first read remembered them, by SQL that selects them when
 * the buckets were summed by SQL (Citus), else all of it.
 */
static Tuplesortstate *
rc_keep_side(RcBuckets *bk, bool *differs, int target, TupleDesc *desc)
{
	RcState    *st = bk->st;
	RcPlaces   *pl = &bk->side_places[target];

	bk->keep = differs;
	bk->sort = NULL;
	if (bk->citus)
		rc_citus_keep(bk, differs, target);
	else if (pl->rows != NULL)
		rc_bucket_side(bk, st->place_sql[target][1], TIDARRAYOID,
					   rc_place_tids(pl));
	else
		rc_bucket_side(bk, target ? st->target_rows_sql : st->source_all_sql,
					   InvalidOid, NULL);
	tuplesort_performsort(bk->sort);
	*desc = bk->desc;
	return bk->sort;
}

/* compare the rows of differing hash buckets: both sides sorted, merged */
static void
rc_merge_kept(RcState *st, RcBuckets *bk, bool *differs)
{
	RcSide		s;
	RcSide		t;
	TupleDesc	sdesc;
	TupleDesc	tdesc;

	rc_side_init(&s, "source", 0, 0, st->ntkeys);
	rc_side_init(&t, "target", 0, 0, st->ntkeys);
	s.sort = rc_keep_side(bk, differs, 0, &sdesc);
	t.sort = rc_keep_side(bk, differs, 1, &tdesc);
	s.slot = MakeSingleTupleTableSlot(sdesc, &TTSOpsMinimalTuple);
	t.slot = MakeSingleTupleTableSlot(tdesc, &TTSOpsMinimalTuple);
	rc_merge_loop(st, &s, &t);
	tuplesort_end(s.sort);
	tuplesort_end(t.sort);
	ExecDropSingleTupleTableSlot(s.slot);
	ExecDropSingleTupleTableSlot(t.slot);
}

/* The receiver of one side's rows, for st. */
static void
rc_buckets_init(RcBuckets *bk, RcState *st)
{
	memset(bk, 0, sizeof(*bk));
	bk->pub.receiveSlot = rc_bucket_receive;
	bk->pub.rStartup = rc_bucket_startup;
	bk->pub.rShutdown = rc_bucket_shutdown;
	bk->pub.rDestroy = rc_bucket_shutdown;
	bk->pub.mydest = DestNone;
	bk->st = st;
	bk->cxt = CurrentMemoryContext;
}

/*
 * Citus.  When a side is a hash-distributed table whose nodes have
 * acme_migrate, the buckets of both sides are summed by SQL instead of
 * reading their rows here: per bucket the row count and the sum of the
 * first half of each row's acme_migrate_row_hash (of the target key and the
 * compared columns, the source's cast to the target's types), grouped by
 * the bucket of the key: its range as rc_bucket_of computes it (a single
 * integer key), or acme_migrate.key_bucket of the key's values (any other
 * hashable key), which is rc_bucket_of's hash bucket.  Citus runs that
 * aggregate on every shard, on the worker that holds it, and adds up the
 * shards' partial sums here: per shard a row per bucket travels, not its
 * rows.  A side stored here runs the same SQL, so that both sides hash
 * alike.  Equal buckets hold the same multiset of row encodings, which
 * acme_migrate_row_hash makes from the values' stored representations (up
 * to a collision of the 64-bit sums), so the argument of rc_hash_first
 * holds.  Then only the rows of differing buckets are read, through
 * Citus: key ranges merged (ranges), or the rows whose key_bucket is one of
 * the differing buckets (hashes), selected by SQL on each node, sorted here
 * and merged.  Those rows are not filtered again here, so that each row is
 * kept by the function that bucketed it: were a node to bucket a key
 * differently (a type whose hash depends on the node's locale, such as
 * citext's), its rows would make two buckets differ, whose rows are then
 * all read and merged: slower, never wrong.
 * Fewer range buckets than otherwise (256): their partial sums are what
 * travels, and the grouping costs a shard of 62,500 rows 13 ms with 256 of
 * them, 29-59 ms with 4096 (hashing alone: 14 ms).  Hash buckets are not
 * met in key order: their number bounds how many rows a difference costs
 * in the second read (a bucket's rows on both sides), so more of them.
 */
#define RC_CITUS_MAX_BUCKETS	256
#define RC_CITUS_HASH_BUCKETS	4096

static bool
rc_citus_applies(RcState *st)
{
	return acme_migrate_remote_hashes &&
		(locality_citus_has_us(st->map->target_relid) ||
		 locality_citus_has_us(st->map->source_relid));
}

/* the SQL of acme_migrate.key_bucket of a row x's key */
static char *
rc_citus_key_bucket(RcBuckets *bk)
{
	RcState    *st = bk->st;
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfo(&buf, "acme_migrate.key_bucket(%d::pg_catalog.int4", bk->n);
	for (int i = 0; i < st->ntkeys; i++)
		appendStringInfo(&buf, ", x.%s", quote_identifier(st->tkey_names[i]));
	appendStringInfoChar(&buf, ')');
	return buf.data;
}

/*
 * The SQL of a row x's bucket.  Ranges: rc_bucket_of's, so that the merge
 * of a differing bucket's key range (rc_bucket_end) holds its rows: the key
 * clamped between min and the last bucket's start, minus min, divided by
 * width, in bigint (numeric where that could overflow).  Hashes: its
 * key_bucket.
 */
static char *
rc_citus_bucket(RcBuckets *bk)
{
	const char *k = quote_identifier(bk->st->tkey_names[0]);
	char	   *bucket;
	uint64		last;
	int64		top;

	if (bk->by_hash)
		return rc_citus_key_bucket(bk);
	/* keys from the last bucket's start on are clamped to it */
	last = (uint64) (bk->n - 1) * bk->width;
	if ((uint64) (bk->n - 1) <= (uint64) PG_INT64_MAX / bk->width &&
		!pg_add_s64_overflow(bk->min, (int64) last, &top))
		bucket = psprintf("(LEAST(GREATEST(x.%s::pg_catalog.int8, " INT64_FORMAT "::pg_catalog.int8), " INT64_FORMAT "::pg_catalog.int8) "
						  "OPERATOR(pg_catalog.-) " INT64_FORMAT "::pg_catalog.int8) OPERATOR(pg_catalog./) " UINT64_FORMAT "::pg_catalog.int8",
						  k, bk->min, top, bk->min, bk->width);
	else
		bucket = psprintf("pg_catalog.div(GREATEST(x.%s::pg_catalog.numeric OPERATOR(pg_catalog.-) " INT64_FORMAT "::pg_catalog.numeric, 0::pg_catalog.numeric), "
						  UINT64_FORMAT "::pg_catalog.numeric)",
						  k, bk->min, bk->width);
	return psprintf("pg_catalog.int4(LEAST(%s, %d))", bucket, bk->n - 1);
}

/*
 * The SQL summing a side's query (sql) into buckets: its rows' count and
 * the sum modulo 2^64 of the first half of their row hashes (one half: the
 * hash is computed once per row, and a 64-bit sum guards against accidents
 * as well), per bucket (rc_citus_bucket; NULL for a NULL key).  The bucket
 * comes out of a function in FROM, a column without statistics: the
 * planner then expects few groups and aggregates by hashing, where it
 * would sort every row by an expression of the key (it takes the key's
 * ndistinct), to disk past work_mem (seen on shards of 62,500 rows).
 */
static char *
rc_citus_sql(RcBuckets *bk, const char *sql)
{
	RcState    *st = bk->st;
	StringInfoData row;
	const char *two64 = "18446744073709551616::pg_catalog.numeric";

	initStringInfo(&row);
	for (int i = 0; i < st->nhash; i++)
		appendStringInfo(&row, "%sx.%s", i > 0 ? ", " : "",
						 quote_identifier(st->map->mapped_names[st->hash_idx[i]]));
	return psprintf("SELECT y.b, pg_catalog.count(*), "
					"(((pg_catalog.sum(y.h) OPERATOR(pg_catalog.%%) %s) OPERATOR(pg_catalog.+) %s) OPERATOR(pg_catalog.%%) %s)::pg_catalog.text "
					"FROM (SELECT l.b, "
					"acme_migrate.row_hash_half(%s.acme_migrate_row_hash(ROW(%s)), 0) AS h FROM (%s) AS x "
					"CROSS JOIN LATERAL %s AS l(b)) AS y GROUP BY y.b",
					two64, two64, two64,
					quote_identifier(am_extension_schema()), row.data, sql,
					rc_citus_bucket(bk));
}

/* Sum one side into the buckets by SQL (Citus: on the shards). */
static void
rc_citus_side(RcBuckets *bk, const char *sql)
{
	if (SPI_execute(rc_citus_sql(bk, sql), true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not sum the rows of a side into buckets");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		Datum		b = SPI_getbinval(tup, desc, 1, &isnull);
		RcBucket   *bucket;

		if (isnull)
		{
			bk->null_key = true;
			continue;
		}
		if (DatumGetInt32(b) < 0 || DatumGetInt32(b) >= bk->n)
			elog(ERROR, "bucket %d out of range", DatumGetInt32(b));
		bucket = &bk->side[DatumGetInt32(b)];
		bucket->rows = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));
		bucket->hi = strtou64(SPI_getvalue(tup, desc, 3), NULL, 10);
		bucket->lo = 0;
	}
	SPI_freetuptable(SPI_tuptable);
}

/*
 * Keep a side's rows of the differing hash buckets: those whose key_bucket,
 * computed where the rows are (on the shards for a distributed side), is
 * one of them ($1), as the first read bucketed them.
 */
static void
rc_citus_keep(RcBuckets *bk, bool *differs, int target)
{
	RcState    *st = bk->st;
	Datum	   *nums = palloc(sizeof(Datum) * bk->n);
	int			n = 0;
	char	   *sql;

	for (int b = 0; b < bk->n; b++)
		if (differs[b])
			nums[n++] = Int32GetDatum(b);
	sql = psprintf("SELECT x.* FROM (%s) AS x WHERE %s OPERATOR(pg_catalog.=) ANY ($1)",
				   target ? st->target_rows_sql : st->source_all_sql,
				   rc_citus_key_bucket(bk));
	bk->keep_all = true;
	rc_bucket_side(bk, sql, INT4ARRAYOID,
				   construct_array(nums, n, INT4OID, sizeof(int32), true,
								   TYPALIGN_INT));
	bk->keep_all = false;
}

/*
 * What acme_migrate.key_bucket keeps between the calls of one call site:
 * per key value (or, for VARIADIC array, for every element) its type's
 * hash function and the collation it hashes in.
 */
typedef struct RcKeyBucketFn
{
	int			nkeys;			/* -1: the values come as one array */
	FmgrInfo   *hash;
	Oid		   *colls;
	int16		elmlen;			/* the array's elements */
	bool		elmbyval;
	char		elmalign;
} RcKeyBucketFn;

static void
rc_key_bucket_fn_arg(RcKeyBucketFn *f, int i, Oid type, Oid coll,
					 MemoryContext cxt)
{
	TypeCacheEntry *tc = lookup_type_cache(type, TYPECACHE_HASH_PROC);

	if (!OidIsValid(tc->hash_proc))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("could not identify a hash function for type %s",
						format_type_be(type))));
	if (!rc_hash_collation(type, coll, &f->colls[i]))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot bucket keys in the nondeterministic collation \"%s\"",
						get_collation_name(coll)),
				 errdetail("Equal values of a nondeterministic collation may differ in bytes.")));
	fmgr_info_cxt(tc->hash_proc, &f->hash[i], cxt);
}

static RcKeyBucketFn *
rc_key_bucket_fn(FunctionCallInfo fcinfo)
{
	FmgrInfo   *flinfo = fcinfo->flinfo;
	RcKeyBucketFn *f = flinfo->fn_extra;
	bool		variadic = get_fn_expr_variadic(flinfo);
	int			n = variadic ? 1 : PG_NARGS() - 1;

	if (f != NULL)
		return f;
	f = MemoryContextAllocZero(flinfo->fn_mcxt, sizeof(RcKeyBucketFn));
	f->nkeys = variadic ? -1 : n;
	f->hash = MemoryContextAllocZero(flinfo->fn_mcxt, sizeof(FmgrInfo) * Max(n, 1));
	f->colls = MemoryContextAllocZero(flinfo->fn_mcxt, sizeof(Oid) * Max(n, 1));
	if (n == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a key needs at least one value")));
	for (int i = 0; i < n; i++)
	{
		Oid			type = get_fn_expr_argtype(flinfo, i + 1);

		if (variadic)
		{
			type = OidIsValid(type) ? get_element_type(type) : InvalidOid;
			if (!OidIsValid(type))
				elog(ERROR, "could not determine the type of the VARIADIC key values");
			get_typlenbyvalalign(type, &f->elmlen, &f->elmbyval, &f->elmalign);
		}
		else if (!OidIsValid(type))
			elog(ERROR, "could not determine the type of key value %d", i + 1);
		rc_key_bucket_fn_arg(f, i, type, PG_GET_COLLATION(), flinfo->fn_mcxt);
	}
	flinfo->fn_extra = f;
	return f;
}

/*
 * acme_migrate.key_bucket(nbuckets, VARIADIC key "any"): the bucket of a
 * key given as its values, as reconcile's hash pass puts it (rc_key_bucket):
 * the same on every node for the same values, since the types' hash
 * functions (of the bytes for text in deterministic collations) do not
 * depend on the node.  STRICT: NULL for a NULL key value; so is a NULL
 * element of a VARIADIC array.
 */
Datum
acme_migrate_key_bucket(PG_FUNCTION_ARGS)
{
	int32		nbuckets = PG_GETARG_INT32(0);
	RcKeyBucketFn *f;
	ArrayType  *arr;
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	uint32		h = 0;

	if (nbuckets < 1 || (nbuckets & (nbuckets - 1)) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("nbuckets must be a power of two, not %d", nbuckets)));
	f = rc_key_bucket_fn(fcinfo);
	if (f->nkeys >= 0)
	{
		for (int i = 0; i < f->nkeys; i++)
			h = rc_key_hash_add(h, &f->hash[i], f->colls[i], PG_GETARG_DATUM(i + 1));
		PG_RETURN_INT32(rc_key_hash_bucket(h, nbuckets));
	}
	arr = PG_GETARG_ARRAYTYPE_P(1);
	deconstruct_array(arr, ARR_ELEMTYPE(arr), f->elmlen, f->elmbyval,
					  f->elmalign, &elems, &nulls, &n);
	if (n == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a key needs at least one value")));
	for (int i = 0; i < n; i++)
	{
		if (nulls[i])
			PG_RETURN_NULL();
		h = rc_key_hash_add(h, &f->hash[0], f->colls[0], elems[i]);
	}
	PG_RETURN_INT32(rc_key_hash_bucket(h, nbuckets));
}

/* the source column a mapping expression is, of the target column's type */
static AttrNumber
rc_direct_column(TupleDesc sdesc, const char *expr, Form_pg_attribute tatt)
{
	for (int a = 0; a < sdesc->natts; a++)
	{
		Form_pg_attribute satt = TupleDescAttr(sdesc, a);

		if (!satt->attisdropped &&
			mapping_expr_is_column(expr, NameStr(satt->attname)))
			return satt->atttypid == tatt->atttypid &&
				(tatt->atttypmod == -1 || satt->atttypmod == tatt->atttypmod) ?
				satt->attnum : InvalidAttrNumber;
	}
	return InvalidAttrNumber;
}

/*
 * Direct first reads.  When both sides are heap tables stored here that
 * the reader (the job's owner, or the caller) may SELECT as a whole,
 * without row-level security and without inheritance children, and every
 * column the first read hashes is a column of the table just as the side's
 * query would return it (the source's: a plain column of the target
 * column's type, and typmod unless the target's is unconstrained, and the
 * job has no filter), the first read scans the heap itself instead of
 * running the side's query: the same values of the same rows in the same
 * snapshot, hence the same buckets and hashes, without an executor and a
 * projection per row.  Its places are the scanned tuples' ctids, which
 * the second read's query fetches as before.  Anything else reads the
 * side's query.  Can a side be read so (att: its attributes)?
 */
static bool
rc_direct_side(RcState *st, int target, AttrNumber *att, AttrNumber *maxatt)
{
	AmMapping  *map = st->map;
	Oid			relid = target ? map->target_relid : map->source_relid;
	Relation	src;
	Relation	tgt;
	bool		ok = true;

	if (get_rel_relkind(relid) != RELKIND_RELATION ||
		!locality_is_local(relid) || has_subclass(relid) ||
		check_enable_rls(relid, InvalidOid, true) == RLS_ENABLED ||
		pg_class_aclcheck(relid, GetUserId(), ACL_SELECT) != ACLCHECK_OK ||
		(!target && st->job->filter != NULL))
		return false;
	/* the target's columns are its mapped ones; the source's are looked up */
	src = target ? NULL : table_open(relid, AccessShareLock);
	tgt = target ? NULL : table_open(map->target_relid, AccessShareLock);
	*maxatt = 0;
	for (int i = 0; ok && i < st->nhash; i++)
	{
		int			p = st->hash_idx[i];

		att[p] = target ? map->mapped_attnums[p] :
			rc_direct_column(RelationGetDescr(src), list_nth(st->job->map_exprs, p),
							 TupleDescAttr(RelationGetDescr(tgt),
										   map->mapped_attnums[p] - 1));
		ok = att[p] > 0;
		*maxatt = Max(*maxatt, att[p]);
	}
	if (!target)
	{
		table_close(tgt, AccessShareLock);
		table_close(src, AccessShareLock);
	}
	return ok;
}

/* Read both sides directly, if both can be. */
static bool
rc_direct_setup(RcState *st, RcBuckets *bk)
{
	for (int target = 0; target < 2; target++)
	{
		bk->direct_att[target] = palloc0(sizeof(AttrNumber) * st->map->nmapped);
		if (!rc_direct_side(st, target, bk->direct_att[target],
							&bk->direct_maxatt[target]))
			return false;
	}
	bk->direct_relid[0] = st->map->source_relid;
	bk->direct_relid[1] = st->map->target_relid;
	bk->direct_nvals = st->map->nmapped;
	return true;
}

/*
 * Scan a side's heap (or, pscan given, the blocks of it that a parallel
 * scan hands this process) into bk->side, as rc_bucket_receive would its
 * query's rows.  A NULL key stops the scan.
 */
static void
rc_direct_scan(RcBuckets *bk, int target, ParallelTableScanDesc pscan)
{
	RcState    *st = bk->st;
	AttrNumber *att = bk->direct_att[target];
	Relation	rel = table_open(bk->direct_relid[target], AccessShareLock);
	TupleTableSlot *slot = table_slot_create(rel, NULL);
	TableScanDesc scan;
	Datum	   *values = palloc0(sizeof(Datum) * bk->direct_nvals);
	bool	   *isnull = palloc0(sizeof(bool) * bk->direct_nvals);

	scan = pscan != NULL ? table_beginscan_parallel(rel, pscan) :
		table_beginscan(rel, GetActiveSnapshot(), 0, NULL);
	while (!bk->null_key &&
		   table_scan_getnextslot(scan, ForwardScanDirection, slot))
	{
		MemoryContext old;

		CHECK_FOR_INTERRUPTS();
		slot_getsomeattrs(slot, bk->direct_maxatt[target]);
		for (int i = 0; i < st->nhash; i++)
		{
			int			p = st->hash_idx[i];

			values[p] = slot->tts_values[att[p] - 1];
			isnull[p] = slot->tts_isnull[att[p] - 1];
		}
		old = MemoryContextSwitchTo(st->rowcxt);
		(void) rc_bucket_row(bk, values, isnull, &slot->tts_tid);
		MemoryContextSwitchTo(old);
		MemoryContextReset(st->rowcxt);
	}
	table_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	table_close(rel, AccessShareLock);
	rc_bucket_add(bk, NULL, bk->pending_hash);	/* the last row */
}

/*
 * Read one side into buckets, remembering where its rows are if it can
 * (direct reads: the blocks pscan hands out, when given).
 */
static void
rc_first_read(RcBuckets *bk, int target, ParallelTableScanDesc pscan)
{
	RcState    *st = bk->st;
	RcPlaces   *pl = &bk->side_places[target];

	bk->places = NULL;
	if (bk->citus)
		rc_citus_side(bk, target ? st->target_all_sql : st->source_all_sql);
	else if (bk->remember && st->place_sql[target][0] != NULL)
	{
		pl->cap = rc_places_cap(target ? st->map->target_relid :
								st->map->source_relid);
		pl->rows = rc_alloc_big(bk->cxt, sizeof(RcPlace) * pl->cap, false);
		bk->places = pl;
		bk->place_att = st->map->nmapped;
		if (bk->direct)
			rc_direct_scan(bk, target, pscan);
		else
			rc_bucket_side(bk, st->place_sql[target][0], InvalidOid, NULL);
	}
	else
		rc_bucket_side(bk, target ? st->target_all_sql : st->source_all_sql,
					   InvalidOid, NULL);
	bk->places = NULL;
}

/*
 * Both sides at once, with a parallel worker (a ParallelContext: the
 * leader's transaction, snapshot, user, security context and settings, so
 * it reads the rows the leader would).
 *
 * With direct reads, both heaps are scanned by parallel scans, which hand
 * their blocks to whichever process asks first: the leader takes the
 * source's then the target's, the worker the target's then the source's,
 * so that neither waits for the other while blocks are left (the worker
 * starts tens of milliseconds after the leader).  Each process sums its
 * rows into buckets of its own (the worker's in shared memory) and
 * remembers their places.  Bucket sums add up (row counts, and 128-bit
 * sums modulo 2^128, in any order), so the leader's plus the worker's are
 * exactly what one process reading every block would have summed.
 * Otherwise the worker reads the target's query while the leader reads
 * the source's.  Either way each row goes through rc_bucket_row, as in
 * rc_first_read, so the exactness argument above holds unchanged.
 *
 * Only when the target is a table the planner would scan in parallel (at
 * least min_parallel_table_scan_size, not temporary, no row-level
 * security, max_parallel_workers_per_gather > 0), the key hash functions
 * are parallel safe and, without direct reads, the target's query is
 * parallel safe and the source's not parallel unsafe (the leader reads it
 * in parallel mode, where nothing may be written); else, or when no worker
 * could be started, the leader reads both sides, one after the other.
 */
#define RC_PARALLEL_KEY_SHARED	UINT64CONST(0xACE0000000000011)

typedef struct RcParallelShared
{
	/* from the leader */
	bool		by_hash;
	Oid			type;
	int64		min;
	uint64		width;
	int			n;
	int			ntkeys;
	int			tkey_idx[INDEX_MAX_KEYS];
	Oid			tkey_types[INDEX_MAX_KEYS];
	Oid			tkey_colls[INDEX_MAX_KEYS];
	int			nhash;
	bool		direct;			/* both heaps, by parallel scans */
	Oid			relid[2];		/* direct: the tables, [target] */
	AttrNumber	maxatt[2];
	int			nvals;
	int			place_att;		/* query: the ctid's column, or -1 */
	int64		places_cap[2];	/* rows whose places the worker remembers
								 * (0: none), [target] */
	int64		kept_cap[2];	/* ... of which it may hand back */
	Size		hash_off;		/* nhash ints, int16s, bools */
	Size		sql_off;		/* query: the target's */
	Size		buckets_off;	/* the worker's: the target's, then (direct)
								 * the source's */
	Size		differs_off;	/* n bools, from the leader */
	Size		places_off[2];	/* kept_cap places, from the worker */
	Size		att_off;		/* direct: nvals attributes per side */
	Size		scan_off[2];	/* direct: the parallel scans */
	ConditionVariable cv;		/* signals a change of phase */
	pg_atomic_uint32 phase;		/* RC_PHASE_* */
	/* from the worker */
	bool		null_key;
	int64		nplaces[2];		/* places handed back; -1: not all known */
} RcParallelShared;

/*
 * The worker keeps the places of its rows in its own memory and hands back
 * only those of differing buckets: it sums its buckets (RC_PHASE_BUCKETS),
 * waits for the leader to say which differ (RC_PHASE_DIFFERS), and copies
 * their places into shared memory.  (Handing back every place made the
 * worker and the leader each map 15 MB of shared memory page by page for
 * 1M rows: on a virtual machine, a worker cost more than the half of the
 * read it saved.)
 */
#define RC_PHASE_READING	0
#define RC_PHASE_BUCKETS	1
#define RC_PHASE_DIFFERS	2

PGDLLEXPORT void rc_parallel_main(dsm_segment *seg, shm_toc *toc);

/* can the worker read, and the leader read in parallel mode? */
static bool
rc_parallel_ok(RcState *st, RcBuckets *bk, const char *tsql)
{
	Oid			relid = st->map->target_relid;
	List	   *q;

	Relation	rel;
	BlockNumber pages;

	/* summed by SQL (Citus), both sides alike: not by a worker's hashing */
	if (bk->citus || max_parallel_workers_per_gather <= 0 || IsInParallelMode() ||
		!IsUnderPostmaster || !ActiveSnapshotSet() ||
		get_rel_persistence(relid) == RELPERSISTENCE_TEMP ||
		(bk->direct &&
		 get_rel_persistence(st->map->source_relid) == RELPERSISTENCE_TEMP) ||
		check_enable_rls(relid, InvalidOid, true) == RLS_ENABLED)
		return false;
	/* as the planner: a worker for a table of min_parallel_table_scan_size */
	rel = relation_open(relid, AccessShareLock);
	pages = RELKIND_HAS_STORAGE(rel->rd_rel->relkind) ?
		RelationGetNumberOfBlocks(rel) : 0;
	relation_close(rel, AccessShareLock);
	if (pages < (BlockNumber) Max(min_parallel_table_scan_size, 1))
		return false;
	for (int i = 0; bk->by_hash && i < st->ntkeys; i++)
		if (func_parallel(bk->key_hash[i].fn_oid) != PROPARALLEL_SAFE)
			return false;
	if (bk->direct)
		return true;
	q = ((CachedPlanSource *) linitial(SPI_plan_get_plan_sources(rc_prepare(tsql, 0, NULL))))->query_list;
	if (list_length(q) != 1 || max_parallel_hazard(linitial_node(Query, q)) != PROPARALLEL_SAFE)
		return false;
	q = ((CachedPlanSource *) linitial(SPI_plan_get_plan_sources(rc_prepare(st->source_all_sql, 0, NULL))))->query_list;
	return list_length(q) == 1 &&
		max_parallel_hazard(linitial_node(Query, q)) != PROPARALLEL_UNSAFE;
}

/*
 * The direct reads' part of the shared state (sh NULL: its layout, from
 * *off on): the tables, their attributes and parallel scans.
 */
static void
rc_parallel_layout_direct(RcBuckets *bk, RcParallelShared *l, Size *off,
						  RcParallelShared *sh)
{
	l->nvals = bk->direct_nvals;
	l->att_off = MAXALIGN(*off);
	*off = l->att_off + sizeof(AttrNumber) * 2 * l->nvals;
	for (int s = 0; s < 2; s++)
	{
		Relation	rel = relation_open(bk->direct_relid[s], AccessShareLock);

		l->relid[s] = bk->direct_relid[s];
		l->maxatt[s] = bk->direct_maxatt[s];
		l->scan_off[s] = BUFFERALIGN(*off);
		*off = l->scan_off[s] + table_parallelscan_estimate(rel, GetActiveSnapshot());
		if (sh != NULL)
		{
			memcpy((char *) sh + l->att_off + sizeof(AttrNumber) * s * l->nvals,
				   bk->direct_att[s], sizeof(AttrNumber) * l->nvals);
			table_parallelscan_initialize(rel, (ParallelTableScanDesc) ((char *) sh + l->scan_off[s]),
										  GetActiveSnapshot());
		}
		relation_close(rel, AccessShareLock);
	}
}

/* the shared state's layout: what the leader fills in */
static RcParallelShared *
rc_parallel_layout(RcState *st, RcBuckets *bk, const char *tsql, bool places,
				   RcParallelShared *sh, Size *size)
{
	RcParallelShared l;
	int			nsides = bk->direct ? 2 : 1;
	Size		off;

	memset(&l, 0, sizeof(l));
	l.by_hash = bk->by_hash;
	l.type = bk->type;
	l.min = bk->min;
	l.width = bk->width;
	l.n = bk->n;
	l.ntkeys = st->ntkeys;
	for (int i = 0; i < st->ntkeys; i++)
	{
		l.tkey_idx[i] = st->tkey_idx[i];
		l.tkey_types[i] = st->tkey_types[i];
		l.tkey_colls[i] = st->tkey_sort[i].ssup_collation;
	}
	l.nhash = st->nhash;
	l.direct = bk->direct;
	l.place_att = places && !bk->direct ? st->map->nmapped : -1;
	for (int s = 2 - nsides; s < 2 && places; s++)
	{
		/* past an eighth of the rows, the leader reads the side again */
		l.places_cap[s] = rc_places_cap(s ? st->map->target_relid :
										st->map->source_relid);
		l.kept_cap[s] = l.places_cap[s] / 8 + 1024;
	}
	l.hash_off = MAXALIGN(sizeof(RcParallelShared));
	l.sql_off = MAXALIGN(l.hash_off + st->nhash * (sizeof(int) + sizeof(int16) + sizeof(bool)));
	l.buckets_off = MAXALIGN(l.sql_off + strlen(tsql) + 1);
	l.differs_off = MAXALIGN(l.buckets_off + sizeof(RcBucket) * bk->n * nsides);
	off = l.differs_off + sizeof(bool) * bk->n;
	for (int s = 0; s < 2; s++)
	{
		l.places_off[s] = MAXALIGN(off);
		off = l.places_off[s] + sizeof(RcPlace) * l.kept_cap[s];
	}
	if (bk->direct)
		rc_parallel_layout_direct(bk, &l, &off, sh);
	*size = off;
	if (sh == NULL)
		return NULL;
	memcpy(sh, &l, offsetof(RcParallelShared, cv));
	ConditionVariableInit(&sh->cv);
	pg_atomic_init_u32(&sh->phase, RC_PHASE_READING);
	memcpy((char *) sh + sh->hash_off, st->hash_idx, sizeof(int) * st->nhash);
	memcpy((char *) sh + sh->hash_off + sizeof(int) * st->nhash, st->hash_len,
		   sizeof(int16) * st->nhash);
	memcpy((char *) sh + sh->hash_off + (sizeof(int) + sizeof(int16)) * st->nhash,
		   st->hash_byval, sizeof(bool) * st->nhash);
	strcpy((char *) sh + sh->sql_off, tsql);
	return sh;
}

/*
 * Start a worker reading the target (direct reads: both sides) into
 * buckets; NULL when the leader is to read both itself.
 */
static ParallelContext *
rc_parallel_begin(RcState *st, RcBuckets *bk)
{
	bool		places = bk->direct ||
		(bk->remember && st->place_sql[1][0] != NULL);
	const char *tsql = bk->direct ? "" :
		places ? st->place_sql[1][0] : st->target_all_sql;
	ParallelContext *pcxt;
	Size		size;

	if (!rc_parallel_ok(st, bk, tsql))
		return NULL;
	EnterParallelMode();
	pcxt = CreateParallelContext("acme_migrate", "rc_parallel_main", 1);
	rc_parallel_layout(st, bk, tsql, places, NULL, &size);
	shm_toc_estimate_chunk(&pcxt->estimator, size);
	shm_toc_estimate_keys(&pcxt->estimator, 1);
	InitializeParallelDSM(pcxt);
	if (pcxt->seg != NULL)
	{
		shm_toc_insert(pcxt->toc, RC_PARALLEL_KEY_SHARED,
					   rc_parallel_layout(st, bk, tsql, places,
										  shm_toc_allocate(pcxt->toc, size),
										  &size));
		LaunchParallelWorkers(pcxt);
	}
	if (pcxt->seg == NULL || pcxt->nworkers_launched == 0)
	{
		DestroyParallelContext(pcxt);
		ExitParallelMode();
		return NULL;
	}
	st->counts.parallel_workers = pcxt->nworkers_launched;
	return pcxt;
}

/* a direct read's parallel scan of a side, or NULL: the leader's alone */
static ParallelTableScanDesc
rc_parallel_scan(ParallelContext *pcxt, int target)
{
	RcParallelShared *sh;

	if (pcxt == NULL)
		return NULL;
	sh = shm_toc_lookup(pcxt->toc, RC_PARALLEL_KEY_SHARED, false);
	return sh->direct ? (ParallelTableScanDesc) ((char *) sh + sh->scan_off[target]) : NULL;
}

/*
 * Wait for the worker's buckets; returns them, in shared memory.  A worker
 * that fails has its error raised here; one that ends without them (it
 * could not start) is an error too.
 */
static RcBucket *
rc_parallel_wait(ParallelContext *pcxt, RcBuckets *bk)
{
	RcParallelShared *sh = shm_toc_lookup(pcxt->toc, RC_PARALLEL_KEY_SHARED, false);
	pid_t		pid;

	ConditionVariablePrepareToSleep(&sh->cv);
	while (pg_atomic_read_u32(&sh->phase) < RC_PHASE_BUCKETS)
	{
		if (GetBackgroundWorkerPid(pcxt->worker[0].bgwhandle, &pid) == BGWH_STOPPED)
		{
			ConditionVariableCancelSleep();
			WaitForParallelWorkersToFinish(pcxt);
			elog(ERROR, "the reconcile worker ended without reading its rows");
		}
		(void) ConditionVariableTimedSleep(&sh->cv, 100L,
										   WAIT_EVENT_PARALLEL_FINISH);
	}
	ConditionVariableCancelSleep();
	pg_read_barrier();
	bk->null_key |= sh->null_key;
	return (RcBucket *) ((char *) sh + sh->buckets_off);
}

/* add buckets summed by another process: exactly, modulo 2^128 */
static void
rc_buckets_add(RcBucket *into, const RcBucket *from, int n)
{
	for (int b = 0; b < n; b++)
	{
		uint64		lo = into[b].lo + from[b].lo;

		into[b].hi += from[b].hi + (lo < from[b].lo);
		into[b].lo = lo;
		into[b].rows += from[b].rows;
	}
}

/*
 * The places of a side's rows: the worker's (those of differing buckets it
 * handed back), after the leader's own with direct reads; none (the side
 * is read again in full) when either process did not keep them all.
 */
static void
rc_parallel_take_places(RcBuckets *bk, RcParallelShared *sh, int s)
{
	RcPlaces   *pl = &bk->side_places[s];
	int64		theirs = sh->nplaces[s];
	int64		n;

	if (theirs < 0 || (sh->direct && pl->rows == NULL))
	{
		pl->rows = NULL;
		return;
	}
	if (!sh->direct)
		pl->rows = NULL;
	n = pl->rows != NULL ? pl->n : 0;
	if (pl->rows == NULL || n + theirs > pl->cap)
	{
		pl->cap = n + Max(theirs, 1);
		pl->rows = pl->rows == NULL ?
			MemoryContextAllocHuge(bk->cxt, sizeof(RcPlace) * pl->cap) :
			repalloc_huge(pl->rows, sizeof(RcPlace) * pl->cap);
	}
	memcpy(pl->rows + n, (char *) sh + sh->places_off[s], sizeof(RcPlace) * theirs);
	pl->n = n + theirs;
}

/*
 * Tell the worker which buckets differ, take the places of its rows in
 * them that it hands back (all the second read needs of them), and end the
 * parallel mode.
 */
static void
rc_parallel_end(ParallelContext *pcxt, RcBuckets *bk, bool *differs)
{
	RcParallelShared *sh = shm_toc_lookup(pcxt->toc, RC_PARALLEL_KEY_SHARED, false);

	memcpy((char *) sh + sh->differs_off, differs, sizeof(bool) * bk->n);
	pg_write_barrier();
	pg_atomic_write_u32(&sh->phase, RC_PHASE_DIFFERS);
	ConditionVariableBroadcast(&sh->cv);
	WaitForParallelWorkersToFinish(pcxt);

	for (int s = sh->direct ? 0 : 1; s < 2; s++)
	{
		if (sh->places_cap[s] > 0)
			rc_parallel_take_places(bk, sh, s);
		else
			bk->side_places[s].rows = NULL;
	}
	DestroyParallelContext(pcxt);
	ExitParallelMode();
}

/*
 * The worker's side of it: say the buckets are summed, wait to be told
 * which differ, and hand back the places of its rows in them (-1: too
 * many, or not all of them were remembered).
 */
static void
rc_parallel_hand_back(RcParallelShared *sh, RcBuckets *bk)
{
	bool	   *differs = (bool *) ((char *) sh + sh->differs_off);

	pg_write_barrier();
	pg_atomic_write_u32(&sh->phase, RC_PHASE_BUCKETS);
	ConditionVariableBroadcast(&sh->cv);
	ConditionVariablePrepareToSleep(&sh->cv);
	while (pg_atomic_read_u32(&sh->phase) < RC_PHASE_DIFFERS)
		ConditionVariableSleep(&sh->cv, WAIT_EVENT_PARALLEL_FINISH);
	ConditionVariableCancelSleep();
	pg_read_barrier();

	for (int s = sh->direct ? 0 : 1; s < 2; s++)
	{
		RcPlaces   *pl = &bk->side_places[s];
		RcPlace    *out = (RcPlace *) ((char *) sh + sh->places_off[s]);
		int64		n = 0;

		for (int64 i = 0; pl->rows != NULL && i < pl->n && n >= 0; i++)
		{
			if (!differs[pl->rows[i].bucket])
				continue;
			if (n == sh->kept_cap[s])
				n = -1;
			else
				out[n++] = pl->rows[i];
		}
		sh->nplaces[s] = pl->rows != NULL ? n : -1;
	}
}

/* the worker's state: what rc_bucket_row reads of the leader's */
static void
rc_parallel_state(RcParallelShared *sh, RcState *st, RcBuckets *bk)
{
	memset(st, 0, sizeof(*st));
	st->ntkeys = sh->ntkeys;
	st->tkey_idx = sh->tkey_idx;
	st->tkey_types = sh->tkey_types;
	st->tkey_sort = palloc0(sizeof(SortSupportData) * Max(sh->ntkeys, 1));
	for (int i = 0; i < sh->ntkeys; i++)
		st->tkey_sort[i].ssup_collation = sh->tkey_colls[i];
	st->nhash = sh->nhash;
	st->hash_idx = (int *) ((char *) sh + sh->hash_off);
	st->hash_len = (int16 *) ((char *) sh + sh->hash_off + sizeof(int) * sh->nhash);
	st->hash_byval = (bool *) ((char *) sh + sh->hash_off +
							   (sizeof(int) + sizeof(int16)) * sh->nhash);
	st->dcap = 1024;
	st->dbuf = palloc(st->dcap);
	st->rowcxt = AllocSetContextCreate(CurrentMemoryContext,
									   "acme_migrate reconcile row",
									   ALLOCSET_DEFAULT_SIZES);

	rc_buckets_init(bk, st);
	bk->by_hash = sh->by_hash;
	bk->type = sh->type;
	bk->min = sh->min;
	bk->width = sh->width;
	bk->n = sh->n;
	if (bk->by_hash && !rc_key_hash_funcs(st, bk))
		elog(ERROR, "reconcile worker: no hash function for the key");
	bk->direct = sh->direct;
	bk->direct_nvals = sh->nvals;
	for (int s = 0; sh->direct && s < 2; s++)
	{
		bk->direct_relid[s] = sh->relid[s];
		bk->direct_maxatt[s] = sh->maxatt[s];
		bk->direct_att[s] = (AttrNumber *) ((char *) sh + sh->att_off +
											sizeof(AttrNumber) * s * sh->nvals);
	}
}

/*
 * A parallel worker's entry point: the first read of the target, and with
 * direct reads then of what is left of the source.
 */
void
rc_parallel_main(dsm_segment *seg, shm_toc *toc)
{
	RcParallelShared *sh = shm_toc_lookup(toc, RC_PARALLEL_KEY_SHARED, false);
	RcState		st;
	RcBuckets	bk;

	rc_parallel_state(sh, &st, &bk);
	/* zeroed here, not by the leader: its pages are mapped by their user */
	memset((char *) sh + sh->buckets_off, 0,
		   sizeof(RcBucket) * bk.n * (sh->direct ? 2 : 1));
	for (int s = 1; s >= (sh->direct ? 0 : 1); s--)
	{
		RcPlaces   *pl = &bk.side_places[s];

		bk.side = (RcBucket *) ((char *) sh + sh->buckets_off) + (1 - s) * bk.n;
		bk.places = NULL;
		if (sh->places_cap[s] > 0)
		{
			pl->cap = sh->places_cap[s];
			pl->rows = rc_alloc_big(CurrentMemoryContext,
									sizeof(RcPlace) * pl->cap, false);
			pl->fixed = true;
			bk.places = pl;
			bk.place_att = sh->place_att;
		}
		if (sh->direct)
			rc_direct_scan(&bk, s, (ParallelTableScanDesc) ((char *) sh + sh->scan_off[s]));
		else
		{
			if (SPI_connect() != SPI_OK_CONNECT)
				elog(ERROR, "SPI_connect failed");
			rc_bucket_side(&bk, (char *) sh + sh->sql_off, InvalidOid, NULL);
			SPI_finish();
		}
	}
	bk.places = NULL;
	sh->null_key = bk.null_key;
	rc_parallel_hand_back(sh, &bk);
}

/* Sum both sides into buckets; returns the buckets that differ. */
static bool *
rc_compare_buckets(RcState *st, RcBuckets *bk, int *ndiffer, int64 *kept)
{
	RcBucket   *sb;
	RcBucket   *tb = NULL;
	bool	   *differs = palloc(sizeof(bool) * bk->n);
	ParallelContext *pcxt;

	rc_digest_setup(st);
	bk->direct = bk->remember && rc_direct_setup(st, bk);
	sb = rc_alloc_buckets(CurrentMemoryContext, bk->n);
	pcxt = rc_parallel_begin(st, bk);
	if (pcxt == NULL || bk->direct)
		tb = rc_alloc_buckets(CurrentMemoryContext, bk->n);
	if (pcxt != NULL && bk->direct && !parallel_leader_participation)
	{
		/* the worker reads every block, as a Gather without its leader */
		for (int s = 0; s < 2; s++)
		{
			bk->side_places[s].rows = palloc(sizeof(RcPlace));
			bk->side_places[s].cap = 1;
		}
	}
	else
	{
		bk->side = sb;
		rc_first_read(bk, 0, rc_parallel_scan(pcxt, 0));
		bk->side = tb;
		if (tb != NULL && !bk->null_key)
			rc_first_read(bk, 1, rc_parallel_scan(pcxt, 1));
	}
	if (pcxt != NULL)
	{
		RcBucket   *theirs = rc_parallel_wait(pcxt, bk);

		if (!bk->direct)
			tb = theirs;
		else
		{
			rc_buckets_add(tb, theirs, bk->n);
			rc_buckets_add(sb, theirs + bk->n, bk->n);
		}
	}
	*ndiffer = 0;
	*kept = 0;
	for (int b = 0; b < bk->n; b++)
	{
		st->counts.source_rows += sb[b].rows;
		st->counts.target_rows += tb[b].rows;
		differs[b] = sb[b].rows != tb[b].rows || sb[b].lo != tb[b].lo ||
			sb[b].hi != tb[b].hi;
		if (differs[b])
		{
			(*ndiffer)++;
			*kept += sb[b].rows + tb[b].rows;
		}
	}
	if (pcxt != NULL)
		rc_parallel_end(pcxt, bk, differs);
	return differs;
}

/*
 * Returns false, having compared nothing, when a merge of everything is the
 * better way (or the only exact one).
 */
static bool
rc_hash_first(RcState *st)
{
	RcBuckets	bk;
	bool	   *differs;
	int			ndiffer;
	int64		kept;
	int64		source_rows;
	int64		target_rows;
	int64		pairs = 0;

	rc_buckets_init(&bk, st);
	bk.by_hash = !rc_by_ranges(st);
	if (bk.by_hash && !rc_key_hash_setup(st, &bk))
		return false;
	bk.citus = rc_citus_applies(st);
	if (bk.by_hash)
	{
		rc_hashes_setup(st, &bk);
		if (bk.citus)
			bk.n = RC_CITUS_HASH_BUCKETS;
	}
	else if (!rc_ranges_setup(st, &bk, bk.citus ? RC_CITUS_MAX_BUCKETS :
							  RC_MAX_BUCKETS))
		return false;
	/* ranges: only when both sides' rows can be fetched again by place */
	bk.remember = !bk.citus &&
		(bk.by_hash ||
		 (st->place_sql[0][0] != NULL && st->place_sql[1][0] != NULL));

	differs = rc_compare_buckets(st, &bk, &ndiffer, &kept);
	source_rows = st->counts.source_rows;
	target_rows = st->counts.target_rows;

	/*
	 * NULL keys are reported by the merge.  When the differing buckets hold
	 * more than a quarter of the rows (ranges: a quarter of the buckets
	 * differ), one merge of everything costs less than comparing them apart
	 * (measured: the hash pass costs about two thirds of a merge).
	 */
	if (bk.null_key ||
		(bk.by_hash ? kept > (source_rows + target_rows) / 4 :
		 ndiffer > bk.n / 4))
	{
		st->counts.source_rows = st->counts.target_rows = 0;
		return false;
	}
	st->counts.method = bk.by_hash ? "hash_buckets" : "hash_ranges";
	if (bk.citus)
		st->counts.remote_mode = "citus_shards";
	st->counts.ranges_hashed = bk.n;
	/* the merges count the rows they read: those are rows_merged */
	st->counts.source_rows = st->counts.target_rows = 0;
	if (!bk.by_hash && (bk.side_places[0].rows == NULL ||
						bk.side_places[1].rows == NULL))
		rc_merge_ranges(st, &bk, differs);
	else
	{
		st->counts.ranges_merged = ndiffer;
		if (ndiffer > 0)
		{
			rc_places_differing(&bk.side_places[0], differs);
			rc_places_differing(&bk.side_places[1], differs);
			pairs = rc_prematch(&bk);
			rc_merge_kept(st, &bk, differs);
		}
	}
	st->counts.rows_merged = st->counts.source_rows + st->counts.target_rows;
	elog(DEBUG1, "reconcile: %d of %d buckets differ, %lld rows merged, %lld pairs set aside by digest",
		 ndiffer, bk.n, (long long) st->counts.rows_merged, (long long) pairs);
	st->counts.source_rows = source_rows;
	st->counts.target_rows = target_rows;
	return true;
}

/* remote.c's way to list the differences of a key range */
static void
rc_remote_merge(void *arg, Datum *lo, Datum *hi)
{
	rc_merge((RcState *) arg, lo, hi);
}

/*
 * A source that is a foreign table: remote.c compares range hashes on its
 * server first and merges only the ranges that differ.  False when it did
 * not (a local source, or no remote mode applies).
 */
static bool
rc_remote(RcState *st, List *colnames)
{
	AmRemote	r;

	memset(&r, 0, sizeof(r));
	r.job = st->job;
	r.map = st->map;
	r.columns = colnames;
	r.merge = rc_remote_merge;
	r.merge_arg = st;
	st->counts.remote_rows = -1;
	if (!remote_reconcile(&r))
	{
		st->counts.remote_mode = r.mode;
		/* r.why is in SPI's memory, gone with SPI_finish before it is saved */
		st->counts.remote_note = r.why ? MemoryContextStrdup(st->cxt, r.why) : NULL;
		return false;
	}
	st->counts.remote_mode = r.mode;
	st->counts.remote_rows = r.remote_rows;
	st->counts.method = "hash_ranges";
	st->counts.ranges_hashed = r.ranges_hashed;
	st->counts.ranges_merged = r.ranges_merged;
	st->counts.source_rows += r.equal_rows;
	st->counts.target_rows += r.equal_rows;
	return true;
}

/*
 * Count the job's source rows (through its filter) without its mapping,
 * in the snapshot of the comparison: a mapping that gave more or fewer
 * rows than the source has is caught even when its output matches the
 * target exactly, since that output is what the copy wrote.  source_rows
 * becomes this count; the rows the mapping gave are kept as mapped_rows.
 */
static void
rc_count_source(RcState *st)
{
	AmJob	   *job = st->job;
	char	   *sql;
	bool		isnull;

	sql = psprintf("SELECT pg_catalog.count(*) FROM %s AS s WHERE %s",
				   rc_relname(job->source_relid),
				   job->filter ? psprintf("(%s)", job->filter) : "true");
	if (SPI_execute(sql, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not count the source rows of job \"%s\"",
			 job->job_name);
	st->counts.mapped_rows = st->counts.source_rows;
	st->counts.source_rows = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
														 SPI_tuptable->tupdesc,
														 1, &isnull));
}

/* Did the run find source and target equal? */
bool
reconcile_counts_equal(AmReconcileCounts *c)
{
	return c->missing + c->extra + c->changed + c->duplicates +
		c->null_keys == 0 &&
		(c->mapped_rows < 0 || c->mapped_rows == c->source_rows);
}

/*
 * Run a comparison of the job (stored or ad hoc) and return the summary
 * row.
 */
static Datum
rc_run(FunctionCallInfo fcinfo, AmJob *job, double sample, int64 max_diffs,
	   List *only, List *ignore, Jsonb *compare)
{
	RcState		st;
	TupleDesc	tupdesc;
	Datum		values[7];
	bool		nulls[7] = {false};
	int			nest;
	List	   *colnames = NIL;
	AmOwnerContext owner_cxt;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	if (sample != -1 && !(sample > 0 && sample <= 1))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("sample must be greater than 0 and at most 1")));

	memset(&st, 0, sizeof(st));
	st.job = job;
	st.max_diffs = max_diffs;
	st.cxt = CurrentMemoryContext;
	st.rowcxt = AllocSetContextCreate(CurrentMemoryContext,
									  "acme_migrate reconcile row",
									  ALLOCSET_DEFAULT_SIZES);
	st.diffcxt = AllocSetContextCreate(CurrentMemoryContext,
									   "acme_migrate reconcile diff",
									   ALLOCSET_DEFAULT_SIZES);
	nest = mapping_fixed_settings(true);
	/* a job's mapping and filter run as its owner (security.c) */
	if (job->job_id > 0)
		am_begin_as_owner(job, &owner_cxt);
	st.map = mapping_build(job, false);
	rc_setup(&st, only, ignore, compare);
	for (int i = 0; i < st.ncols; i++)
		colnames = lappend(colnames, st.cols[i].name);

	st.run_id = catalog_reconcile_begin(job->job_id, job->source_relid,
										job->target_relid,
										job->target_key_columns, colnames,
										compare, sample, max_diffs);
	st.diffs = catalog_diff_batch(st.run_id);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	/* both sides, and every row of the report, in one snapshot */
	PushActiveSnapshot(GetTransactionSnapshot());
	if (sample > 0)
	{
		st.counts.method = "sample";
		st.counts.remote_rows = -1;
		if (remote_is_foreign(job->source_relid))
			st.counts.remote_mode = "full_fetch";
		rc_sample(&st, sample);
	}
	else if (!rc_remote(&st, colnames) &&
			 (!rc_hash_first_applies(&st) || !rc_hash_first(&st)))
	{
		st.counts.method = "merge";
		rc_merge(&st, NULL, NULL);
	}
	st.counts.mapped_rows = -1;
	if (job->job_id > 0 && sample <= 0)
		rc_count_source(&st);
	PopActiveSnapshot();
	SPI_finish();
	if (job->job_id > 0)
		am_end_as_owner(&owner_cxt);

	catalog_diff_flush(st.diffs);
	catalog_reconcile_end(st.run_id, &st.counts, st.truncated, sample > 0);
	/* stop rules: differences pause a job that is not finished */
	if (job->job_id > 0)
		am_reconcile_breach(job, st.run_id, &st.counts);
	AtEOXact_GUC(true, nest);

	values[0] = Int64GetDatum(st.run_id);
	values[1] = Int64GetDatum(st.counts.source_rows);
	values[2] = Int64GetDatum(st.counts.target_rows);
	values[3] = Int64GetDatum(st.counts.missing);
	values[4] = Int64GetDatum(st.counts.extra);
	values[5] = Int64GetDatum(st.counts.changed);
	values[6] = BoolGetDatum(reconcile_counts_equal(&st.counts));
	return HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls));
}

/* max_diffs: NULL for no limit */
static int64
rc_max_diffs_arg(FunctionCallInfo fcinfo, int n)
{
	if (PG_ARGISNULL(n))
		return -1;
	if (PG_GETARG_INT64(n) < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_diffs must not be negative")));
	return PG_GETARG_INT64(n);
}

static List *
rc_names_arg(FunctionCallInfo fcinfo, int n)
{
	Datum	   *elems;
	bool	   *enulls;
	int			count;
	List	   *result = NIL;

	if (PG_ARGISNULL(n))
		return NIL;
	deconstruct_array(PG_GETARG_ARRAYTYPE_P(n), TEXTOID, -1, false,
					  TYPALIGN_INT, &elems, &enulls, &count);
	for (int i = 0; i < count; i++)
	{
		if (enulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("column names must not be null")));
		result = lappend(result, TextDatumGetCString(elems[i]));
	}
	return result;
}

/*
 * acme_migrate_reconcile(job, sample, max_diffs, columns, ignore_columns,
 *						  compare)
 */
Datum
acme_migrate_reconcile_job(PG_FUNCTION_ARGS)
{
	AmJob	   *job;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("job must not be null")));
	job = catalog_job_get(text_to_cstring(PG_GETARG_TEXT_PP(0)), false);
	return rc_run(fcinfo, job,
				  PG_ARGISNULL(1) ? -1 : PG_GETARG_FLOAT8(1),
				  rc_max_diffs_arg(fcinfo, 2),
				  rc_names_arg(fcinfo, 3), rc_names_arg(fcinfo, 4),
				  PG_ARGISNULL(5) ? NULL : PG_GETARG_JSONB_P(5));
}

/*
 * acme_migrate_reconcile(source, target, key, sample, max_diffs, columns,
 *						  ignore_columns, compare)
 *
 * Two tables compared on their same-named columns, matched on key (by
 * default the source's primary key).
 */
Datum
acme_migrate_reconcile_tables(PG_FUNCTION_ARGS)
{
	AmJob	   *job = palloc0(sizeof(AmJob));

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", PG_ARGISNULL(0) ? "source" : "target")));
	job->job_name = "(ad hoc)";
	job->source_relid = PG_GETARG_OID(0);
	job->target_relid = PG_GETARG_OID(1);
	job->key_columns = rc_names_arg(fcinfo, 2);
	job->on_conflict = AM_CONFLICT_ERROR;
	job->max_error_rate = -1;
	job->lock_timeout_ms = -1;
	mapping_resolve_new_job(job, NULL, true);
	return rc_run(fcinfo, job,
				  PG_ARGISNULL(3) ? -1 : PG_GETARG_FLOAT8(3),
				  rc_max_diffs_arg(fcinfo, 4),
				  rc_names_arg(fcinfo, 5), rc_names_arg(fcinfo, 6),
				  PG_ARGISNULL(7) ? NULL : PG_GETARG_JSONB_P(7));
}
