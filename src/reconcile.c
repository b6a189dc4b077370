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
 * With sample => f only a random fraction f of the keys of each side is
 * looked up on the other side, and the counts are scaled up (estimated).
 *
 *-------------------------------------------------------------------------
 */
#include "acme_migrate.h"

#include <math.h>

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/typcache.h"

PG_FUNCTION_INFO_V1(acme_migrate_reconcile_job);
PG_FUNCTION_INFO_V1(acme_migrate_reconcile_tables);

#define RC_FETCH	10000

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
	FmgrInfo   *tkey_cmp;
	Oid		   *tkey_types;
	Oid		   *tkey_colls;
	bool	   *tkey_byval;
	int16	   *tkey_len;
	char	   *target_sql;		/* target rows, mapped columns, key order */
	char	   *key_json_sql;	/* target key values -> jsonb */
	char	   *source_json_sql;	/* source key -> mapped row as jsonb */
	char	   *target_json_sql;	/* target key -> target row as jsonb */
	char	   *target_probe_sql;	/* target key -> mapped columns */
	char	   *source_probe_sql;	/* target key -> source rows with it */
	SPIPlanPtr	key_json_plan;
	SPIPlanPtr	source_json_plan;
	SPIPlanPtr	target_json_plan;
	int64		run_id;
	int64		max_diffs;
	int64		ndiffs;
	bool		truncated;
	AmReconcileCounts counts;
	MemoryContext rowcxt;
} RcState;

/* one side of the merge */
typedef struct RcSide
{
	const char *name;
	Portal		portal;
	SPITupleTable *tab;
	uint64		ntab;
	uint64		pos;
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

static SPIPlanPtr
rc_prepare(const char *sql, int nargs, Oid *types)
{
	SPIPlanPtr	plan = SPI_prepare(sql, nargs, types);

	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed for \"%s\": %s", sql,
			 SPI_result_code_string(SPI_result));
	return plan;
}

static int
rc_find_mapped(AmMapping *map, const char *name)
{
	for (int i = 0; i < map->nmapped; i++)
		if (strcmp(map->mapped_names[i], name) == 0)
			return i;
	return -1;
}

/* "ROW(alias.k1, ...) = ROW($1, ...)" over the target key columns */
static void
rc_append_key_match(StringInfo q, RcState *st, const char *alias)
{
	appendStringInfoString(q, "ROW(");
	for (int i = 0; i < st->ntkeys; i++)
		appendStringInfo(q, "%s%s.%s", i > 0 ? ", " : "", alias,
						 quote_identifier(st->map->mapped_names[st->tkey_idx[i]]));
	appendStringInfoString(q, ") OPERATOR(pg_catalog.=) ROW(");
	for (int i = 0; i < st->ntkeys; i++)
		appendStringInfo(q, "%s$%d", i > 0 ? ", " : "", i + 1);
	appendStringInfoChar(q, ')');
}

/*
 * Decide the compared columns and their policies, and build the SQL of
 * both sides.
 */
static void
rc_setup(RcState *st, List *only, List *ignore, Jsonb *compare)
{
	AmMapping  *map = st->map;
	StringInfoData q;
	ListCell   *lc;
	const char *tgt = rc_relname(map->target_relid);
	const char *src = rc_relname(map->source_relid);
	int			i;

	/* columns named in the options must be mapped target columns */
	foreach(lc, list_concat(list_copy(only), ignore))
		if (rc_find_mapped(map, lfirst(lc)) < 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_COLUMN),
					 errmsg("column \"%s\" is not compared", (char *) lfirst(lc)),
					 errdetail("Only target columns filled from the source can be compared.")));
	if (compare != NULL && (!JB_ROOT_IS_OBJECT(compare) || JB_ROOT_IS_SCALAR(compare)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("compare must be a jsonb object mapping columns to policies")));
	if (compare != NULL)
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
			if (rc_find_mapped(map, col) < 0)
				ereport(ERROR,
						(errcode(ERRCODE_UNDEFINED_COLUMN),
						 errmsg("column \"%s\" is not compared", col),
						 errdetail("The keys of compare must be target columns filled from the source.")));
		}
	}

	st->cols = palloc0(sizeof(RcColumn) * map->nmapped);
	for (i = 0; i < map->nmapped; i++)
	{
		char	   *name = map->mapped_names[i];
		RcColumn   *c;
		Oid			outfn;
		bool		varlena;
		bool		skip = false;
		int32		typmod;
		JsonbValue	k;
		JsonbValue *v = NULL;

		if (only != NIL)
		{
			skip = true;
			foreach(lc, only)
				if (strcmp(lfirst(lc), name) == 0)
					skip = false;
		}
		foreach(lc, ignore)
			if (strcmp(lfirst(lc), name) == 0)
				skip = true;
		if (skip)
			continue;

		c = &st->cols[st->ncols++];
		c->name = name;
		c->idx = i;
		get_atttypetypmodcoll(map->target_relid, map->mapped_attnums[i],
							  &c->type, &typmod, &c->collation);
		get_typlenbyval(c->type, &c->len, &c->byval);
		getTypeOutputInfo(c->type, &outfn, &varlena);
		fmgr_info(outfn, &c->out);
		c->policy = RC_TEXT;

		if (compare != NULL)
		{
			k.type = jbvString;
			k.val.string.val = name;
			k.val.string.len = strlen(name);
			v = findJsonbValueFromContainer(&compare->root, JB_FOBJECT, &k);
		}
		if (v == NULL)
			continue;
		if (v->type == jbvString &&
			strncmp(v->val.string.val, "value", v->val.string.len) == 0 &&
			v->val.string.len == 5)
			c->policy = RC_VALUE;
		else if (v->type == jbvString &&
				 strncmp(v->val.string.val, "text", v->val.string.len) == 0 &&
				 v->val.string.len == 4)
			c->policy = RC_TEXT;
		else if (v->type == jbvBinary && JsonContainerIsObject(v->val.binary.data))
		{
			JsonbValue *t;

			k.val.string.val = "tolerance";
			k.val.string.len = strlen("tolerance");
			t = findJsonbValueFromContainer(v->val.binary.data, JB_FOBJECT, &k);
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
									name, format_type_be(c->type))));
			}
			k.val.string.val = "truncate";
			k.val.string.len = strlen("truncate");
			t = findJsonbValueFromContainer(v->val.binary.data, JB_FOBJECT, &k);
			if (t && t->type == jbvString)
			{
				c->policy = RC_TRUNCATE;
				c->unit = cstring_to_text_with_len(t->val.string.val, t->val.string.len);
				if (c->type != TIMESTAMPTZOID && c->type != TIMESTAMPOID)
					ereport(ERROR,
							(errcode(ERRCODE_DATATYPE_MISMATCH),
							 errmsg("column \"%s\" has type %s, which cannot be truncated",
									name, format_type_be(c->type))));
				/* validate the unit now rather than on the first row */
				(void) DirectFunctionCall2(timestamp_trunc, PointerGetDatum(c->unit),
										   TimestampGetDatum(0));
			}
		}
		if (c->policy == RC_TEXT &&
			!(v->type == jbvString && v->val.string.len == 4))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid comparison policy for column \"%s\"", name),
					 errhint("Use \"text\", \"value\", {\"tolerance\": number} or {\"truncate\": \"unit\"}.")));
		if (c->policy == RC_VALUE)
		{
			TypeCacheEntry *tc = lookup_type_cache(c->type, TYPECACHE_EQ_OPR_FINFO);

			if (!OidIsValid(tc->eq_opr_finfo.fn_oid))
				ereport(ERROR,
						(errcode(ERRCODE_UNDEFINED_FUNCTION),
						 errmsg("column \"%s\" has type %s, which has no equality operator",
								name, format_type_be(c->type)),
						 errhint("Compare it by representation (\"text\") instead.")));
			fmgr_info_copy(&c->eq, &tc->eq_opr_finfo, CurrentMemoryContext);
		}
	}

	/* target key columns, among the mapped ones */
	st->ntkeys = list_length(st->job->target_key_columns);
	st->tkey_idx = palloc(sizeof(int) * st->ntkeys);
	st->tkey_cmp = palloc0(sizeof(FmgrInfo) * st->ntkeys);
	st->tkey_types = palloc(sizeof(Oid) * st->ntkeys);
	st->tkey_colls = palloc(sizeof(Oid) * st->ntkeys);
	st->tkey_byval = palloc(sizeof(bool) * st->ntkeys);
	st->tkey_len = palloc(sizeof(int16) * st->ntkeys);
	i = 0;
	foreach(lc, st->job->target_key_columns)
	{
		int			m = rc_find_mapped(map, lfirst(lc));
		TypeCacheEntry *tc;
		int32		typmod;

		st->tkey_idx[i] = m;
		get_atttypetypmodcoll(map->target_relid, map->mapped_attnums[m],
							  &st->tkey_types[i], &typmod, &st->tkey_colls[i]);
		get_typlenbyval(st->tkey_types[i], &st->tkey_len[i], &st->tkey_byval[i]);
		tc = lookup_type_cache(st->tkey_types[i], TYPECACHE_CMP_PROC_FINFO);
		if (!OidIsValid(tc->cmp_proc_finfo.fn_oid))
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_FUNCTION),
					 errmsg("target key column \"%s\" has no btree ordering",
							(char *) lfirst(lc))));
		fmgr_info_copy(&st->tkey_cmp[i], &tc->cmp_proc_finfo, CurrentMemoryContext);
		i++;
	}

	/* the target side: mapped columns in key order */
	initStringInfo(&q);
	appendStringInfoString(&q, "SELECT ");
	for (i = 0; i < map->nmapped; i++)
		appendStringInfo(&q, "%st.%s", i > 0 ? ", " : "",
						 quote_identifier(map->mapped_names[i]));
	appendStringInfo(&q, " FROM %s AS t ORDER BY ", tgt);
	foreach(lc, st->job->target_key_columns)
		appendStringInfo(&q, "%st.%s", lc == list_head(st->job->target_key_columns) ? "" : ", ",
						 quote_identifier(lfirst(lc)));
	st->target_sql = q.data;

	/* key -> jsonb, and the rows of each side by key, for the report */
	initStringInfo(&q);
	appendStringInfoString(&q, "SELECT pg_catalog.to_jsonb(x) FROM (SELECT ");
	i = 0;
	foreach(lc, st->job->target_key_columns)
	{
		appendStringInfo(&q, "%s$%d AS %s", i > 0 ? ", " : "", i + 1,
						 quote_identifier(lfirst(lc)));
		i++;
	}
	appendStringInfoString(&q, ") x");
	st->key_json_sql = q.data;

	{
		StringInfoData cols;
		ListCell   *le;
		ListCell   *lt;
		char	   *srcrows;

		/* the mapped source row: the job's expressions, by target key */
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
		/* the mapped source rows, as a subquery "x" */
		srcrows = psprintf("(SELECT %s FROM %s AS s WHERE %s) x", cols.data,
						   src, st->job->filter ? st->job->filter : "true");
		initStringInfo(&q);
		appendStringInfo(&q, "SELECT pg_catalog.to_jsonb(x) FROM %s WHERE ", srcrows);
		rc_append_key_match(&q, st, "x");
		appendStringInfoString(&q, " LIMIT 1");
		st->source_json_sql = q.data;

		/* source rows with a key (sampling): the same, counted */
		initStringInfo(&q);
		appendStringInfo(&q, "SELECT pg_catalog.count(*) FROM %s WHERE ", srcrows);
		rc_append_key_match(&q, st, "x");
		st->source_probe_sql = q.data;
	}

	initStringInfo(&q);
	appendStringInfo(&q, "SELECT pg_catalog.to_jsonb(t) FROM %s AS t WHERE ", tgt);
	rc_append_key_match(&q, st, "t");
	appendStringInfoString(&q, " LIMIT 1");
	st->target_json_sql = q.data;

	/* target rows with a key (sampling) */
	initStringInfo(&q);
	appendStringInfoString(&q, "SELECT ");
	for (i = 0; i < map->nmapped; i++)
		appendStringInfo(&q, "%st.%s", i > 0 ? ", " : "",
						 quote_identifier(map->mapped_names[i]));
	appendStringInfo(&q, " FROM %s AS t WHERE ", tgt);
	rc_append_key_match(&q, st, "t");
	st->target_probe_sql = q.data;
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

/* Fetch the next row of a side into its values; false at the end. */
static bool
rc_next(RcSide *side)
{
	if (side->tab == NULL || side->pos >= side->ntab)
	{
		if (side->tab)
			SPI_freetuptable(side->tab);
		side->tab = NULL;
		SPI_cursor_fetch(side->portal, true, RC_FETCH);
		side->tab = SPI_tuptable;
		side->ntab = SPI_processed;
		side->pos = 0;
		if (side->ntab == 0)
			return false;
	}
	heap_deform_tuple(side->tab->vals[side->pos], side->tab->tupdesc,
					  side->values, side->nulls);
	side->pos++;
	return true;
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
		int32		c = DatumGetInt32(FunctionCall2Coll(&st->tkey_cmp[i],
														st->tkey_colls[i],
														a[i], b[i]));

		if (c != 0)
			return c;
	}
	return 0;
}

static Jsonb *
rc_json(SPIPlanPtr plan, Datum *key)
{
	bool		isnull;
	Datum		d;
	Jsonb	   *result;

	if (SPI_execute_plan(plan, key, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not fetch a row for the reconciliation report");
	if (SPI_processed == 0)
	{
		SPI_freetuptable(SPI_tuptable);
		return NULL;
	}
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	result = isnull ? NULL : DatumGetJsonbPCopy(d);
	SPI_freetuptable(SPI_tuptable);
	return result;
}

/* List one difference (unless max_diffs is reached). */
static void
rc_report(RcState *st, const char *kind, const char *side, Datum *key,
		  bool key_ok, bool want_source, bool want_target, List *changed)
{
	Jsonb	   *keyjson = NULL;
	Jsonb	   *srow = NULL;
	Jsonb	   *trow = NULL;

	if (st->max_diffs >= 0 && st->ndiffs >= st->max_diffs)
	{
		st->truncated = true;
		return;
	}
	if (key_ok)
	{
		keyjson = rc_json(st->key_json_plan, key);
		if (want_source)
			srow = rc_json(st->source_json_plan, key);
		if (want_target)
			trow = rc_json(st->target_json_plan, key);
	}
	st->ndiffs++;
	catalog_diff_insert(st->run_id, st->ndiffs, kind, side, keyjson, srow,
						trow, changed);
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
		rc_report(st, "null_key", side->name, key, false, false, false, NIL);
		return false;
	}
	if (side->have_prev)
	{
		int			c = rc_key_cmp(st, side->prevkey, key);

		if (c == 0)
		{
			st->counts.duplicates++;
			rc_report(st, "duplicate", side->name, key, true,
					  side->is_source, !side->is_source, NIL);
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

static void
rc_side_init(RcSide *side, const char *name, Portal portal, int natts, int off,
			 int ntkeys)
{
	memset(side, 0, sizeof(RcSide));
	side->name = name;
	side->is_source = strcmp(name, "source") == 0;
	side->portal = portal;
	side->off = off;
	side->values = palloc(sizeof(Datum) * natts);
	side->nulls = palloc(sizeof(bool) * natts);
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

/* The full comparison: a merge of both sides in key order. */
static void
rc_merge(RcState *st)
{
	AmMapping  *map = st->map;
	int			nparams = 2 * map->nkeys + 1;
	Oid		   *argtypes = palloc(sizeof(Oid) * nparams);
	Datum	   *params = palloc0(sizeof(Datum) * nparams);
	char	   *nulls = palloc(nparams + 1);
	SPIPlanPtr	splan;
	SPIPlanPtr	tplan;
	RcSide		s;
	RcSide		t;
	Datum	   *skey = palloc(sizeof(Datum) * st->ntkeys);
	Datum	   *tkey = palloc(sizeof(Datum) * st->ntkeys);
	bool		shave;
	bool		thave;

	for (int i = 0; i < map->nkeys; i++)
		argtypes[i] = argtypes[map->nkeys + i] = map->key_types[i];
	argtypes[nparams - 1] = INT8OID;
	memset(nulls, 'n', nparams - 1);
	nulls[nparams - 1] = ' ';
	nulls[nparams] = '\0';
	params[nparams - 1] = Int64GetDatum(PG_INT64_MAX);

	splan = rc_prepare(map->select_sql[0][0], nparams, argtypes);
	tplan = rc_prepare(st->target_sql, 0, NULL);
	rc_side_init(&s, "source",
				 SPI_cursor_open(NULL, splan, params, nulls, true),
				 map->nkeys + map->nmapped, map->nkeys, st->ntkeys);
	rc_side_init(&t, "target", SPI_cursor_open(NULL, tplan, NULL, NULL, true),
				 map->nmapped, 0, st->ntkeys);

	shave = rc_advance(st, &s, skey);
	thave = rc_advance(st, &t, tkey);
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
			rc_report(st, "missing", NULL, skey, true, true, false, NIL);
			shave = rc_advance(st, &s, skey);
		}
		else if (c > 0)
		{
			st->counts.target_rows++;
			st->counts.extra++;
			rc_report(st, "extra", NULL, tkey, true, false, true, NIL);
			thave = rc_advance(st, &t, tkey);
		}
		else
		{
			MemoryContext old = MemoryContextSwitchTo(st->rowcxt);
			List	   *changed = rc_compare_rows(st, &s, &t);

			MemoryContextSwitchTo(old);
			st->counts.source_rows++;
			st->counts.target_rows++;
			if (changed != NIL)
			{
				st->counts.changed++;
				rc_report(st, "changed", NULL, skey, true, true, true, changed);
			}
			shave = rc_advance(st, &s, skey);
			thave = rc_advance(st, &t, tkey);
		}
	}
	SPI_cursor_close(s.portal);
	SPI_cursor_close(t.portal);
}

/*
 * The sampled comparison: a random fraction of each side's rows is looked
 * up on the other side by key; the counts are scaled by 1 / fraction.
 */
static void
rc_sample(RcState *st, double fraction)
{
	AmMapping  *map = st->map;
	int			nparams = 2 * map->nkeys + 2;
	Oid		   *argtypes = palloc(sizeof(Oid) * nparams);
	Datum	   *params = palloc0(sizeof(Datum) * nparams);
	char	   *nulls = palloc(nparams + 1);
	StringInfoData q;
	SPIPlanPtr	tprobe;
	SPIPlanPtr	sprobe;
	RcSide		s;
	RcSide		t;
	RcSide		probe;
	Datum	   *key = palloc(sizeof(Datum) * st->ntkeys);
	AmReconcileCounts seen;
	double		scale = 1.0 / fraction;

	memset(&seen, 0, sizeof(seen));
	for (int i = 0; i < map->nkeys; i++)
		argtypes[i] = argtypes[map->nkeys + i] = map->key_types[i];
	argtypes[nparams - 2] = INT8OID;
	argtypes[nparams - 1] = FLOAT8OID;
	memset(nulls, 'n', nparams - 2);
	nulls[nparams - 2] = nulls[nparams - 1] = ' ';
	nulls[nparams] = '\0';
	params[nparams - 2] = Int64GetDatum(PG_INT64_MAX);
	params[nparams - 1] = Float8GetDatum(fraction);

	tprobe = rc_prepare(st->target_probe_sql, st->ntkeys, st->tkey_types);
	sprobe = rc_prepare(st->source_probe_sql, st->ntkeys, st->tkey_types);

	/* source sample: each row looked up in the target */
	initStringInfo(&q);
	appendStringInfo(&q, "SELECT * FROM (%s) x WHERE pg_catalog.random() OPERATOR(pg_catalog.<) $%d",
					 map->select_sql[0][0], nparams);
	rc_side_init(&s, "source",
				 SPI_cursor_open(NULL, rc_prepare(q.data, nparams, argtypes),
								 params, nulls, true),
				 map->nkeys + map->nmapped, map->nkeys, st->ntkeys);
	rc_side_init(&probe, "target", NULL, map->nmapped, 0, st->ntkeys);
	while (rc_next(&s))
	{
		bool		anynull;

		CHECK_FOR_INTERRUPTS();
		MemoryContextReset(st->rowcxt);
		seen.source_rows++;
		rc_key_values(st, &s, key, &anynull);
		if (anynull)
		{
			seen.null_keys++;
			rc_report(st, "null_key", "source", key, false, false, false, NIL);
			continue;
		}
		if (SPI_execute_plan(tprobe, key, NULL, true, 2) != SPI_OK_SELECT)
			elog(ERROR, "could not look up a key in the target");
		if (SPI_processed == 0)
		{
			seen.missing++;
			rc_report(st, "missing", NULL, key, true, true, false, NIL);
		}
		else
		{
			MemoryContext old;
			List	   *changed;
			SPITupleTable *tab = SPI_tuptable;

			if (SPI_processed > 1)
			{
				seen.duplicates++;
				rc_report(st, "duplicate", "target", key, true, false, true, NIL);
			}
			heap_deform_tuple(tab->vals[0], tab->tupdesc, probe.values, probe.nulls);
			old = MemoryContextSwitchTo(st->rowcxt);
			changed = rc_compare_rows(st, &s, &probe);
			MemoryContextSwitchTo(old);
			if (changed != NIL)
			{
				seen.changed++;
				rc_report(st, "changed", NULL, key, true, true, true, changed);
			}
			SPI_freetuptable(tab);
		}
	}
	SPI_cursor_close(s.portal);

	/* target sample: each row looked up in the source, for extras */
	initStringInfo(&q);
	appendStringInfo(&q, "SELECT * FROM (%s) x WHERE pg_catalog.random() OPERATOR(pg_catalog.<) $1",
					 st->target_sql);
	rc_side_init(&t, "target",
				 SPI_cursor_open(NULL, rc_prepare(q.data, 1, (Oid[]) {FLOAT8OID}),
								 &params[nparams - 1], NULL, true),
				 map->nmapped, 0, st->ntkeys);
	while (rc_next(&t))
	{
		bool		anynull;
		bool		isnull;
		int64		n;

		CHECK_FOR_INTERRUPTS();
		seen.target_rows++;
		rc_key_values(st, &t, key, &anynull);
		if (anynull)
		{
			seen.null_keys++;
			rc_report(st, "null_key", "target", key, false, false, false, NIL);
			continue;
		}
		if (SPI_execute_plan(sprobe, key, NULL, true, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not look up a key in the source");
		n = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
										SPI_tuptable->tupdesc, 1, &isnull));
		SPI_freetuptable(SPI_tuptable);
		if (n == 0)
		{
			seen.extra++;
			rc_report(st, "extra", NULL, key, true, false, true, NIL);
		}
		else if (n > 1)
		{
			seen.duplicates++;
			rc_report(st, "duplicate", "source", key, true, true, false, NIL);
		}
	}
	SPI_cursor_close(t.portal);

	st->counts.source_rows = (int64) rint(seen.source_rows * scale);
	st->counts.target_rows = (int64) rint(seen.target_rows * scale);
	st->counts.missing = (int64) rint(seen.missing * scale);
	st->counts.extra = (int64) rint(seen.extra * scale);
	st->counts.changed = (int64) rint(seen.changed * scale);
	st->counts.duplicates = (int64) rint(seen.duplicates * scale);
	st->counts.null_keys = (int64) rint(seen.null_keys * scale);
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
	Oid		   *ktypes;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	if (sample != -1 && !(sample > 0 && sample <= 1))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("sample must be greater than 0 and at most 1")));

	memset(&st, 0, sizeof(st));
	st.job = job;
	st.max_diffs = max_diffs;
	st.rowcxt = AllocSetContextCreate(CurrentMemoryContext,
									  "acme_migrate reconcile row",
									  ALLOCSET_DEFAULT_SIZES);
	nest = mapping_fixed_settings(true);
	st.map = mapping_build(job, false);
	rc_setup(&st, only, ignore, compare);
	for (int i = 0; i < st.ncols; i++)
		colnames = lappend(colnames, st.cols[i].name);

	st.run_id = catalog_reconcile_begin(job->job_id, job->source_relid,
										job->target_relid,
										job->target_key_columns, colnames,
										compare, sample, max_diffs);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	ktypes = st.tkey_types;
	st.key_json_plan = rc_prepare(st.key_json_sql, st.ntkeys, ktypes);
	st.source_json_plan = rc_prepare(st.source_json_sql, st.ntkeys, ktypes);
	st.target_json_plan = rc_prepare(st.target_json_sql, st.ntkeys, ktypes);

	/* both sides, and every row of the report, in one snapshot */
	PushActiveSnapshot(GetTransactionSnapshot());
	if (sample > 0)
		rc_sample(&st, sample);
	else
		rc_merge(&st);
	PopActiveSnapshot();
	SPI_finish();

	catalog_reconcile_end(st.run_id, &st.counts, st.truncated, sample > 0);
	AtEOXact_GUC(true, nest);

	values[0] = Int64GetDatum(st.run_id);
	values[1] = Int64GetDatum(st.counts.source_rows);
	values[2] = Int64GetDatum(st.counts.target_rows);
	values[3] = Int64GetDatum(st.counts.missing);
	values[4] = Int64GetDatum(st.counts.extra);
	values[5] = Int64GetDatum(st.counts.changed);
	values[6] = BoolGetDatum(st.counts.missing + st.counts.extra +
							 st.counts.changed + st.counts.duplicates +
							 st.counts.null_keys == 0);
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
