/*-------------------------------------------------------------------------
 *
 * mapping.c
 *	  Resolve a job's source, target, key and column mapping, and build the
 *	  SQL that reads (and, on the SQL path, writes) one batch.
 *
 * A batch is read with a keyset query:
 *
 *	  SELECT s.k1 AS k1, ..., CAST((expr) AS type) AS c1, ...
 *	  FROM source AS s
 *	  WHERE (filter) AND ROW(s.k1, ...) > ROW($1, ...) [AND ... <= ROW(...)]
 *	  ORDER BY s.k1, ... LIMIT n
 *
 * so each batch starts where the last checkpoint ended, with an index scan
 * when the key is indexed, and never re-reads from the start.  Names are
 * always quoted; user expressions (column mappings, filter) are checked to
 * be exactly one expression before they are pasted into the query, and the
 * whole query is prepared when the job is created, so a mapping that does
 * not parse or type-check fails at acme_migrate_create.
 *
 *-------------------------------------------------------------------------
 */
#include "acme_migrate.h"

#include "access/genam.h"
#include "access/nbtree.h"
#include "access/relation.h"
#include "access/table.h"
#include "catalog/index.h"
#include "catalog/namespace.h"
#include "catalog/pg_am.h"
#include "catalog/pg_class.h"
#include "catalog/pg_index.h"
#include "catalog/pg_operator.h"
#include "catalog/pg_opclass.h"
#include "catalog/pg_type.h"
#include "commands/defrem.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "parser/parser.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/rls.h"
#include "utils/syscache.h"

static char *
map_relname(Relation rel)
{
	return quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
									  RelationGetRelationName(rel));
}

/* A relation's live column of that exact name, or NULL. */
Form_pg_attribute
mapping_find_column(Relation rel, const char *name)
{
	TupleDesc	desc = RelationGetDescr(rel);

	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (!att->attisdropped && strcmp(NameStr(att->attname), name) == 0)
			return att;
	}
	return NULL;
}

/* error context while a user's SQL fragment is parsed */
static void
map_fragment_errcontext(void *arg)
{
	errcontext("%s", (const char *) arg);
}

/*
 * Check that a user's SQL fragment is exactly one expression (or, for a
 * filter, one condition), so pasting it into our query cannot change the
 * query's shape.  It is type-checked later, when the batch query is
 * prepared.
 */
void
mapping_check_sql_fragment(const char *sql, bool is_filter, const char *what)
{
	ErrorContextCallback errcb;
	char	   *buf;
	List	   *stmts;
	SelectStmt *sel = NULL;
	bool		ok;

	buf = is_filter ? psprintf("SELECT WHERE %s", sql) : psprintf("SELECT %s", sql);
	errcb.callback = map_fragment_errcontext;
	errcb.arg = (void *) what;
	errcb.previous = error_context_stack;
	error_context_stack = &errcb;
	stmts = raw_parser(buf, RAW_PARSE_DEFAULT);
	error_context_stack = errcb.previous;

	ok = list_length(stmts) == 1 &&
		IsA(((RawStmt *) linitial(stmts))->stmt, SelectStmt);
	if (ok)
	{
		sel = (SelectStmt *) ((RawStmt *) linitial(stmts))->stmt;
		ok = sel->op == SETOP_NONE && sel->fromClause == NIL &&
			sel->intoClause == NULL && sel->withClause == NULL &&
			sel->sortClause == NIL && sel->limitCount == NULL &&
			sel->limitOffset == NULL && sel->lockingClause == NIL &&
			sel->groupClause == NIL && sel->havingClause == NULL &&
			sel->windowClause == NIL && sel->distinctClause == NIL &&
			sel->valuesLists == NIL;
	}
	if (ok && is_filter)
		ok = sel->targetList == NIL && sel->whereClause != NULL;
	else if (ok)
		ok = list_length(sel->targetList) == 1 && sel->whereClause == NULL &&
			((ResTarget *) linitial(sel->targetList))->name == NULL;
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_SYNTAX_ERROR),
				 errmsg("%s is not a single SQL %s", what,
						is_filter ? "condition" : "expression"),
				 errdetail("The text given was: %s", sql)));
}

/*
 * Is there a unique, immediate, non-partial index on exactly these columns
 * (in any order)?
 */
static bool
map_has_unique_index(Relation rel, List *colnames)
{
	List	   *indexes = RelationGetIndexList(rel);
	ListCell   *lc;
	bool		found = false;

	foreach(lc, indexes)
	{
		Relation	idx = index_open(lfirst_oid(lc), AccessShareLock);
		Form_pg_index ind = idx->rd_index;

		if (ind->indisunique && ind->indimmediate && ind->indisvalid &&
			heap_attisnull(idx->rd_indextuple, Anum_pg_index_indpred, NULL) &&
			heap_attisnull(idx->rd_indextuple, Anum_pg_index_indexprs, NULL) &&
			ind->indnkeyatts == list_length(colnames))
		{
			bool		all = true;

			for (int i = 0; i < ind->indnkeyatts && all; i++)
			{
				AttrNumber	attno = ind->indkey.values[i];
				char	   *name = get_attname(RelationGetRelid(rel), attno, false);
				ListCell   *lc2;
				bool		match = false;

				foreach(lc2, colnames)
					if (strcmp((char *) lfirst(lc2), name) == 0)
						match = true;
				all = match;
			}
			found = all;
		}
		index_close(idx, AccessShareLock);
		if (found)
			break;
	}
	list_free(indexes);
	return found;
}

/*
 * Can the relation hold at most one row per value of these columns: are
 * they all NOT NULL, with a unique index on exactly them?
 */
bool
mapping_key_is_unique(Oid relid, List *colnames)
{
	Relation	rel = relation_open(relid, AccessShareLock);
	bool		result = true;
	ListCell   *lc;

	foreach(lc, colnames)
	{
		AttrNumber	attno = get_attnum(relid, lfirst(lc));

		if (attno == InvalidAttrNumber ||
			!TupleDescAttr(RelationGetDescr(rel), attno - 1)->attnotnull)
			result = false;
	}
	if (result)
		result = map_has_unique_index(rel, colnames);
	relation_close(rel, AccessShareLock);
	return result;
}

/*
 * The source and target may take part in a job (or an ad hoc
 * reconciliation), and the caller may read and write them.
 */
static void
map_check_relations(AmJob *job, Relation src, Relation tgt, bool reconcile)
{
	char		skind = src->rd_rel->relkind;
	char		tkind = tgt->rd_rel->relkind;

	if (skind != RELKIND_RELATION && skind != RELKIND_PARTITIONED_TABLE &&
		skind != RELKIND_VIEW && skind != RELKIND_MATVIEW &&
		skind != RELKIND_FOREIGN_TABLE)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("cannot copy from \"%s\"", RelationGetRelationName(src)),
				 errdetail("The source must be a table, partitioned table, view, materialized view or foreign table.")));
	if (tkind != RELKIND_RELATION && tkind != RELKIND_PARTITIONED_TABLE &&
		!(reconcile && (tkind == RELKIND_VIEW || tkind == RELKIND_MATVIEW ||
						tkind == RELKIND_FOREIGN_TABLE)))
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("cannot copy into \"%s\"", RelationGetRelationName(tgt)),
				 errdetail("The target must be a table or partitioned table.")));
	if (job->source_relid == job->target_relid)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("source and target are the same relation \"%s\"",
						RelationGetRelationName(src))));

	if (pg_class_aclcheck(job->source_relid, GetUserId(), ACL_SELECT) != ACLCHECK_OK)
		aclcheck_error(ACLCHECK_NO_PRIV, get_relkind_objtype(skind),
					   RelationGetRelationName(src));
	if (pg_class_aclcheck(job->target_relid, GetUserId(),
						  reconcile ? ACL_SELECT :
						  ACL_INSERT | (job->on_conflict == AM_CONFLICT_UPDATE ? ACL_UPDATE : 0))
		!= ACLCHECK_OK)
		aclcheck_error(ACLCHECK_NO_PRIV, get_relkind_objtype(tkind),
					   RelationGetRelationName(tgt));
}

/*
 * The key: given, or the source's primary key; each column must exist,
 * once, with a btree ordering.  Also says whether the source guarantees it
 * unique (NOT NULL columns with a unique index).
 */
static void
map_resolve_key(AmJob *job, Relation src)
{
	char		skind = src->rd_rel->relkind;
	ListCell   *lc;
	bool		all_not_null = true;

	if (job->key_columns == NIL)
	{
		Oid			pk = InvalidOid;

		if (skind == RELKIND_RELATION || skind == RELKIND_PARTITIONED_TABLE)
			pk = RelationGetPrimaryKeyIndex(src);
		if (!OidIsValid(pk))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_COLUMN_REFERENCE),
					 errmsg("source \"%s\" has no primary key",
							RelationGetRelationName(src)),
					 errhint("Name a unique, NOT NULL key with key => ARRAY['column', ...].")));
		else
		{
			Relation	idx = index_open(pk, AccessShareLock);

			for (int i = 0; i < idx->rd_index->indnkeyatts; i++)
				job->key_columns = lappend(job->key_columns,
										   get_attname(job->source_relid,
													   idx->rd_index->indkey.values[i],
													   false));
			index_close(idx, AccessShareLock);
		}
	}
	foreach(lc, job->key_columns)
	{
		char	   *name = lfirst(lc);
		Form_pg_attribute att;
		ListCell   *lc2;

		if (name == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("key column names must not be null")));
		att = mapping_find_column(src, name);
		if (att == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_COLUMN),
					 errmsg("key column \"%s\" of relation \"%s\" does not exist",
							name, RelationGetRelationName(src))));
		for_each_cell(lc2, job->key_columns, lnext(job->key_columns, lc))
			if (lfirst(lc2) && strcmp(lfirst(lc2), name) == 0)
				ereport(ERROR,
						(errcode(ERRCODE_DUPLICATE_COLUMN),
						 errmsg("key column \"%s\" is named more than once", name)));
		if (!OidIsValid(GetDefaultOpClass(att->atttypid, BTREE_AM_OID)))
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_FUNCTION),
					 errmsg("key column \"%s\" has type %s, which has no btree ordering",
							name, format_type_be(att->atttypid)),
					 errhint("Choose key columns of orderable types.")));
		if (!att->attnotnull)
			all_not_null = false;
	}
	job->key_is_unique = all_not_null &&
		(skind == RELKIND_RELATION || skind == RELKIND_PARTITIONED_TABLE) &&
		map_has_unique_index(src, job->key_columns);
}

/* The keys of columns (if given) must be target columns, each with a string. */
static void
map_check_columns_arg(Relation tgt, Jsonb *columns)
{
	if (columns != NULL)
	{
		JsonbIterator *it;
		JsonbValue	v;
		JsonbIteratorToken tok;

		if (!JB_ROOT_IS_OBJECT(columns) || JB_ROOT_IS_SCALAR(columns))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("columns must be a jsonb object mapping target columns to SQL expressions")));
		it = JsonbIteratorInit(&columns->root);
		while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
		{
			char	   *col;
			Form_pg_attribute att;

			if (tok != WJB_KEY)
				continue;
			col = pnstrdup(v.val.string.val, v.val.string.len);
			att = mapping_find_column(tgt, col);
			if (att == NULL)
				ereport(ERROR,
						(errcode(ERRCODE_UNDEFINED_COLUMN),
						 errmsg("column \"%s\" of relation \"%s\" does not exist",
								col, RelationGetRelationName(tgt)),
						 errdetail("The keys of columns must name target columns.")));
			if (att->attgenerated)
				ereport(ERROR,
						(errcode(ERRCODE_GENERATED_ALWAYS),
						 errmsg("cannot map generated column \"%s\"", col),
						 errdetail("Generated columns are computed by the target.")));
			tok = JsonbIteratorNext(&it, &v, true);
			if (tok != WJB_VALUE || v.type != jbvString)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("mapping of column \"%s\" must be a string holding an SQL expression",
								col)));
		}
	}
}

/*
 * The effective mapping, in target column order: the given expression, else
 * the same-named source column, else nothing (the column's default).
 */
static void
map_effective_mapping(AmJob *job, Relation src, Relation tgt, Jsonb *columns)
{
	TupleDesc	tdesc = RelationGetDescr(tgt);

	for (int i = 0; i < tdesc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(tdesc, i);
		char	   *col = NameStr(att->attname);
		char	   *expr = NULL;

		if (att->attisdropped || att->attgenerated)
			continue;
		if (columns != NULL)
		{
			JsonbValue	k;
			JsonbValue *v;

			k.type = jbvString;
			k.val.string.val = col;
			k.val.string.len = strlen(col);
			v = findJsonbValueFromContainer(&columns->root, JB_FOBJECT, &k);
			if (v != NULL)
			{
				char	   *what;

				expr = pnstrdup(v->val.string.val, v->val.string.len);
				what = psprintf("mapping of column \"%s\"", col);
				mapping_check_sql_fragment(expr, false, what);
				mapping_check_case(src, expr, what);
			}
		}
		if (expr == NULL && mapping_find_column(src, col) != NULL)
			expr = pstrdup(quote_identifier(col));
		if (expr == NULL)
			continue;			/* left to its default */
		job->map_targets = lappend(job->map_targets, pstrdup(col));
		job->map_exprs = lappend(job->map_exprs, expr);
	}
	if (job->map_targets == NIL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("no target column of \"%s\" is filled from \"%s\"",
						RelationGetRelationName(tgt), RelationGetRelationName(src)),
				 errhint("Give the target columns same-named source columns, or map them with columns => '{\"column\": \"expression\"}'.")));
}

/*
 * Each key column must reach the target unchanged, in a column that, unless
 * on_conflict is 'error', has a unique index on exactly the key.
 */
static void
map_resolve_target_key(AmJob *job, Relation tgt)
{
	ListCell   *lc;

	foreach(lc, job->key_columns)
	{
		char	   *key = lfirst(lc);
		ListCell   *lt;
		ListCell   *le;
		char	   *found = NULL;

		forboth(lt, job->map_targets, le, job->map_exprs)
		{
			if (mapping_expr_is_column(lfirst(le), key))
			{
				found = lfirst(lt);
				break;
			}
		}
		if (found == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_COLUMN_REFERENCE),
					 errmsg("key column \"%s\" is not copied unchanged into \"%s\"",
							key, RelationGetRelationName(tgt)),
					 errdetail("Every key column must be copied as it is into a target column, so batches can be matched and reconciled."),
					 errhint("Map a target column to \"%s\", or choose another key.", key)));
		job->target_key_columns = lappend(job->target_key_columns, found);
	}
	if (job->on_conflict != AM_CONFLICT_ERROR &&
		!map_has_unique_index(tgt, job->target_key_columns))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_COLUMN_REFERENCE),
				 errmsg("target \"%s\" has no unique index on the key columns",
						RelationGetRelationName(tgt)),
				 errdetail("on_conflict => '%s' needs a unique, non-partial index on exactly the target key columns.",
						   job->on_conflict == AM_CONFLICT_UPDATE ? "update" : "skip"),
				 errhint("Create the index, or use on_conflict => 'error'.")));
}

/*
 * Fill in the derived parts of a job being created: the key (default: the
 * source's primary key), the effective column mapping, the target key
 * columns, and whether the key is guaranteed unique.  ERRORs on anything a
 * user got wrong; nothing has been written yet.
 */
void
mapping_resolve_new_job(AmJob *job, Jsonb *columns, bool reconcile)
{
	Relation	src = relation_open(job->source_relid, AccessShareLock);
	Relation	tgt = relation_open(job->target_relid, AccessShareLock);

	map_check_relations(job, src, tgt, reconcile);
	map_resolve_key(job, src);
	map_check_columns_arg(tgt, columns);
	map_effective_mapping(job, src, tgt, columns);
	map_resolve_target_key(job, tgt);
	if (job->filter != NULL)
	{
		mapping_check_sql_fragment(job->filter, true, "filter");
		mapping_check_case(src, job->filter, "filter");
	}

	relation_close(tgt, AccessShareLock);
	relation_close(src, AccessShareLock);
}

/*
 * The btree operator of a strategy (BTGreaterStrategyNumber, ...) of each
 * of these types, from their default btree opclasses: returns the schema
 * holding them, which must be one for all, and sets *name to the
 * operator's name.  Operators in the generated SQL are qualified with it.
 */
static const char *
map_operator_of(const Oid *types, int n, int strategy, const char **name)
{
	Oid			nsp = InvalidOid;

	for (int i = 0; i < n; i++)
	{
		Oid			opclass = GetDefaultOpClass(types[i], BTREE_AM_OID);
		Oid			family = get_opclass_family(opclass);
		Oid			intype = get_opclass_input_type(opclass);
		Oid			op = get_opfamily_member(family, intype, intype, strategy);
		Form_pg_operator form;
		HeapTuple	tup;

		if (!OidIsValid(op))
			elog(ERROR, "missing btree operator %d for type %u", strategy,
				 types[i]);
		tup = SearchSysCache1(OPEROID, ObjectIdGetDatum(op));
		if (!HeapTupleIsValid(tup))
			elog(ERROR, "cache lookup failed for operator %u", op);
		form = (Form_pg_operator) GETSTRUCT(tup);
		if (OidIsValid(nsp) && nsp != form->oprnamespace)
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("key columns are ordered by operators of different schemas"),
					 errhint("Choose key columns whose types are ordered by operators of one schema.")));
		nsp = form->oprnamespace;
		*name = pstrdup(NameStr(form->oprname));
		ReleaseSysCache(tup);
	}
	return quote_identifier(get_namespace_name(nsp));
}

/* the schema of the key types' btree operators */
static const char *
map_operator_schema(AmMapping *map)
{
	const char *name;

	return map_operator_of(map->key_types, map->nkeys,
						   BTGreaterStrategyNumber, &name);
}

/* "ROW(alias.c1, alias.c2)" or, with firstparam > 0, "ROW($1, $2)" */
static void
map_append_row_of(StringInfo buf, const char *alias, char **names, int n,
				  int firstparam)
{
	appendStringInfoString(buf, "ROW(");
	for (int i = 0; i < n; i++)
	{
		if (i > 0)
			appendStringInfoString(buf, ", ");
		if (firstparam > 0)
			appendStringInfo(buf, "$%d", firstparam + i);
		else
			appendStringInfo(buf, "%s.%s", alias, quote_identifier(names[i]));
	}
	appendStringInfoChar(buf, ')');
}

/* "ROW(s.k1, s.k2)" or "ROW($1, $2)" */
static void
map_append_row(StringInfo buf, AmMapping *map, int firstparam)
{
	map_append_row_of(buf, "s", map->key_names, map->nkeys, firstparam);
}

/*
 * "ROW(alias.c1, ...) OPERATOR(schema.op) ROW($firstparam, ...)": columns
 * of these types compared with parameters by their btree operator of a
 * strategy, resolved as for the copy's own keyset queries.
 */
void
mapping_append_key_compare(StringInfo buf, const char *alias, char **names,
						   const Oid *types, int n, int strategy,
						   int firstparam)
{
	const char *opname;
	const char *nsp = map_operator_of(types, n, strategy, &opname);

	map_append_row_of(buf, alias, names, n, 0);
	appendStringInfo(buf, " OPERATOR(%s.%s) ", nsp, opname);
	map_append_row_of(buf, NULL, NULL, n, firstparam);
}

/* Is the text of this type's values independent of session settings? */
bool
mapping_type_io_is_fixed(Oid type)
{
	switch (type)
	{
		case INT2OID:
		case INT4OID:
		case INT8OID:
		case OIDOID:
		case NUMERICOID:
		case TEXTOID:
		case VARCHAROID:
		case BPCHAROID:
		case NAMEOID:
		case UUIDOID:
		case BOOLOID:
		case BYTEAOID:
			return true;
		default:
			return false;
	}
}

/* A relation's name, schema-qualified and quoted, for generated SQL. */
char *
mapping_relname(Oid relid)
{
	return quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)),
									  get_rel_name(relid));
}

/*
 * Open a table of a job (AccessShareLock).  The catalog holds it as a
 * regclass, which does not keep it from being dropped: say so clearly.
 */
Relation
mapping_open_table(AmJob *job, Oid relid, const char *which)
{
	Relation	rel = try_relation_open(relid, AccessShareLock);

	if (rel == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("%s of job \"%s\" no longer exists", which,
						job->job_name),
				 errdetail("The %s table was dropped after the job was created.",
						   which),
				 errhint("Drop the job with acme_migrate_drop().")));
	return rel;
}

/*
 * "w AS (INSERT INTO target AS t (...) SELECT b.c1, ... FROM b ON CONFLICT
 * ... RETURNING 1)": the rows of CTE b written into the target, as the SQL
 * path of a batch and catch-up do.
 */
static void
map_append_upsert(StringInfo buf, AmJob *job, AmMapping *map,
				  const char *tgtname, bool identity_always,
				  AmConflict on_conflict)
{
	ListCell   *lt;
	int			i;

	appendStringInfo(buf, "w AS (INSERT INTO %s AS t (", tgtname);
	for (i = 0; i < map->nmapped; i++)
		appendStringInfo(buf, "%s%s", i > 0 ? ", " : "",
						 quote_identifier(map->mapped_names[i]));
	appendStringInfo(buf, ")%s SELECT ",
					 identity_always ? " OVERRIDING SYSTEM VALUE" : "");
	for (i = 0; i < map->nmapped; i++)
		appendStringInfo(buf, "%sb.c%d", i > 0 ? ", " : "", i + 1);
	appendStringInfoString(buf, " FROM b");
	if (on_conflict != AM_CONFLICT_ERROR)
	{
		bool		any = false;

		appendStringInfoString(buf, " ON CONFLICT (");
		foreach(lt, job->target_key_columns)
			appendStringInfo(buf, "%s%s",
							 lt == list_head(job->target_key_columns) ? "" : ", ",
							 quote_identifier(lfirst(lt)));
		appendStringInfoString(buf, ") DO ");
		if (on_conflict == AM_CONFLICT_UPDATE)
		{
			for (i = 0; i < map->nmapped; i++)
			{
				char	   *c = map->mapped_names[i];
				bool		iskey = false;

				foreach(lt, job->target_key_columns)
					if (strcmp(lfirst(lt), c) == 0)
						iskey = true;
				if (iskey)
					continue;
				appendStringInfo(buf, "%s%s = EXCLUDED.%s",
								 any ? ", " : "UPDATE SET ",
								 quote_identifier(c), quote_identifier(c));
				any = true;
			}
		}
		if (!any)
			appendStringInfoString(buf, "NOTHING");
	}
	appendStringInfoString(buf, " RETURNING 1)");
}

/* "OPERATOR(schema.=)": the btree equality of a type, schema-qualified */
static char *
map_eq_operator(Oid type)
{
	Oid			opclass = GetDefaultOpClass(type, BTREE_AM_OID);
	Oid			intype = get_opclass_input_type(opclass);
	Oid			op = get_opfamily_member(get_opclass_family(opclass), intype,
										 intype, BTEqualStrategyNumber);
	HeapTuple	tup;
	Oid			nsp;

	if (!OidIsValid(op))
		elog(ERROR, "missing = operator for type %u", type);
	tup = SearchSysCache1(OPEROID, ObjectIdGetDatum(op));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for operator %u", op);
	nsp = ((Form_pg_operator) GETSTRUCT(tup))->oprnamespace;
	ReleaseSysCache(tup);
	return psprintf("OPERATOR(%s.=)", quote_identifier(get_namespace_name(nsp)));
}

/*
 * "WITH am_keys AS (SELECT * FROM ROWS FROM (unnest($1), ...) AS
 * am_keys(am_k1, ...)":
 * the keys to apply or verify, one array parameter per key column (the
 * caller closes the CTE).
 */
static void
map_append_key_set(StringInfo q, AmMapping *map)
{
	/*
	 * ROWS FROM, not unnest($1, $2): the parser expands the many-argument
	 * unnest only when its name is not qualified.
	 */
	appendStringInfoString(q, "WITH am_keys AS (SELECT * FROM ROWS FROM (");
	for (int i = 0; i < map->nkeys; i++)
		appendStringInfo(q, "%spg_catalog.unnest($%d)", i > 0 ? ", " : "", i + 1);
	appendStringInfoString(q, ") AS am_keys(");
	for (int i = 0; i < map->nkeys; i++)
		appendStringInfo(q, "%sam_k%d", i > 0 ? ", " : "", i + 1);
}

/*
 * " FROM source AS s WHERE (filter) AND EXISTS (SELECT 1 FROM am_keys
 * WHERE s.k1 = am_k1 ...)": the source rows of the keys in am_keys (see
 * map_append_key_set), each once.  A semi-join, not a join: the log holds
 * keys by their text, and two texts may be one key to the key's equality
 * (numeric 1.0 and 1.00, float -0 and 0, a case-insensitive collation), so
 * a join would write one row twice.
 */
static void
map_append_source_of_keys(StringInfo q, AmJob *job, AmMapping *map,
						  const char *srcname)
{
	appendStringInfo(q, " FROM %s AS s WHERE %s%s%s AND EXISTS (SELECT 1 FROM am_keys WHERE true",
					 srcname, job->filter ? "(" : "true",
					 job->filter ? job->filter : "", job->filter ? ")" : "");
	for (int i = 0; i < map->nkeys; i++)
		appendStringInfo(q, " AND s.%s %s am_keys.am_k%d",
						 quote_identifier(map->key_names[i]),
						 map_eq_operator(map->key_types[i]), i + 1);
	appendStringInfoChar(q, ')');
}

/* " AND t.tk1 = CAST(am_keys.am_k1 AS type) ...": a target row of a key */
static void
map_append_target_key_match(StringInfo q, AmJob *job, Relation tgt)
{
	ListCell   *lc;
	int			i = 0;

	foreach(lc, job->target_key_columns)
	{
		AttrNumber	attno = get_attnum(RelationGetRelid(tgt), lfirst(lc));
		Form_pg_attribute att = TupleDescAttr(RelationGetDescr(tgt), attno - 1);

		appendStringInfo(q, " AND t.%s %s CAST(am_keys.am_k%d AS %s)",
						 quote_identifier(lfirst(lc)),
						 map_eq_operator(att->atttypid), i + 1,
						 format_type_extended(att->atttypid, att->atttypmod,
											  FORMAT_TYPE_TYPEMOD_GIVEN |
											  FORMAT_TYPE_FORCE_QUALIFY));
		i++;
	}
}

/*
 * "WITH am_keys AS (...), b AS MATERIALIZED (<mapped source rows of the
 * keys>), w AS (INSERT INTO target ... SELECT ... FROM b [ON CONFLICT])":
 * the start of a catch-up statement.
 */
static void
map_append_keyed_write(StringInfo q, AmJob *job, AmMapping *map,
					   const char *srcname, const char *tgtname,
					   const char *cols, bool identity_always,
					   AmConflict on_conflict)
{
	map_append_key_set(q, map);
	appendStringInfo(q, ")), b AS MATERIALIZED (SELECT %s", cols);
	map_append_source_of_keys(q, job, map, srcname);
	appendStringInfoString(q, "), ");
	map_append_upsert(q, job, map, tgtname, identity_always, on_conflict);
}

/*
 * The catch-up statement: given arrays of keys ($1 .. $nkeys, one array per
 * key column), write into the target the current mapped source row of each
 * key, or delete the target's row when the source has none (or the filter
 * now leaves it out):
 *
 *	 WITH am_keys AS (SELECT * FROM ROWS FROM (unnest($1), ...)
 *						  AS am_keys(am_k1, ...)),
 *		  b AS MATERIALIZED (SELECT <keys, mapped columns> FROM source AS s
 *							 WHERE (filter) AND EXISTS (SELECT 1 FROM am_keys
 *							 WHERE s.k1 = am_k1 ...)),
 *		  w AS (INSERT ... SELECT ... FROM b ON CONFLICT ... DO UPDATE ...),
 *		  d AS (DELETE FROM target AS t USING am_keys WHERE t.tk1 = am_k1 ...
 *				AND NOT EXISTS (SELECT 1 FROM b WHERE b.k1 = am_k1 ...))
 *	 SELECT (SELECT count(*) FROM w), (SELECT count(*) FROM d)
 *
 * The two writes exclude each other key by key, and both see the same
 * snapshot.
 */
static char *
map_catchup_sql(AmJob *job, AmMapping *map, Relation tgt, const char *srcname,
				const char *tgtname, const char *cols, bool identity_always)
{
	StringInfoData q;
	StringInfoData match;
	int			i;

	initStringInfo(&match);
	for (i = 0; i < map->nkeys; i++)
		appendStringInfo(&match, " AND b.k%d %s am_keys.am_k%d", i + 1,
						 map_eq_operator(map->key_types[i]), i + 1);

	initStringInfo(&q);
	map_append_keyed_write(&q, job, map, srcname, tgtname, cols,
						   identity_always, AM_CONFLICT_UPDATE);
	appendStringInfo(&q, ", d AS (DELETE FROM %s AS t USING am_keys WHERE true",
					 tgtname);
	map_append_target_key_match(&q, job, tgt);
	appendStringInfo(&q, " AND NOT EXISTS (SELECT 1 FROM b WHERE true%s) RETURNING 1) "
					 "SELECT (SELECT pg_catalog.count(*) FROM w), "
					 "(SELECT pg_catalog.count(*) FROM d)", match.data);
	return q.data;
}

/*
 * The catch-up statements of a target that nothing reacts to (capture.c
 * decides when): the first deletes the target's rows of the keys, the
 * second inserts the current mapped source row of each key.  A plain
 * delete and insert cost less than half of INSERT ... ON CONFLICT DO
 * UPDATE, which checks, locks and then updates each row.
 */
static void
map_catchup_replace_sql(AmJob *job, AmMapping *map, Relation tgt,
						const char *srcname, const char *tgtname,
						const char *cols, bool identity_always)
{
	StringInfoData q;

	initStringInfo(&q);
	map_append_key_set(&q, map);
	appendStringInfo(&q, ")) DELETE FROM %s AS t USING am_keys WHERE true",
					 tgtname);
	map_append_target_key_match(&q, job, tgt);
	map->catchup_delete_sql = q.data;

	initStringInfo(&q);
	map_append_keyed_write(&q, job, map, srcname, tgtname, cols,
						   identity_always, AM_CONFLICT_ERROR);
	appendStringInfoString(&q, " SELECT pg_catalog.count(*) FROM w");
	map->catchup_insert_sql = q.data;
}

/*
 * The verification of a cut-over: for the keys in arrays $1 .. $nkeys, the
 * row hashes of the mapped source rows and of the target's rows, compared
 * as multisets both ways; returns how many rows differ (0: verified).
 */
static char *
map_verify_sql(AmJob *job, AmMapping *map, Relation tgt, const char *srcname,
			   const char *tgtname, const char *cols)
{
	StringInfoData q;
	StringInfoData brow;
	StringInfoData trow;
	const char *hashfn;
	int			i;

	hashfn = psprintf("%s.acme_migrate_row_hash", am_extension_schema());
	initStringInfo(&brow);
	initStringInfo(&trow);
	for (i = 0; i < map->nmapped; i++)
	{
		appendStringInfo(&brow, "%sx.c%d", i > 0 ? ", " : "", i + 1);
		appendStringInfo(&trow, "%st.%s", i > 0 ? ", " : "",
						 quote_identifier(map->mapped_names[i]));
	}
	initStringInfo(&q);
	map_append_key_set(&q, map);
	appendStringInfo(&q, ")), b AS (SELECT %s(ROW(%s)) AS h FROM (SELECT %s",
					 hashfn, brow.data, cols);
	map_append_source_of_keys(&q, job, map, srcname);
	/* each target row once, as each source row (a semi-join) */
	appendStringInfo(&q, ") x), t AS (SELECT %s(ROW(%s)) AS h FROM %s AS t WHERE EXISTS (SELECT 1 FROM am_keys WHERE true",
					 hashfn, trow.data, tgtname);
	map_append_target_key_match(&q, job, tgt);
	appendStringInfoString(&q, ")) SELECT (SELECT pg_catalog.count(*) FROM "
						   "(SELECT h FROM b EXCEPT ALL SELECT h FROM t) x) "
						   "OPERATOR(pg_catalog.+) (SELECT pg_catalog.count(*) FROM "
						   "(SELECT h FROM t EXCEPT ALL SELECT h FROM b) y)");
	return q.data;
}

/*
 * The key columns of the mapping: their names, types, btree comparison and
 * text I/O, looked up in the source as it is now.
 */
static void
map_key_info(AmJob *job, AmMapping *map, Relation src)
{
	ListCell   *lc;
	int			i = 0;

	map->nkeys = list_length(job->key_columns);
	map->key_types = palloc(sizeof(Oid) * map->nkeys);
	map->key_collations = palloc(sizeof(Oid) * map->nkeys);
	map->key_cmp = palloc0(sizeof(FmgrInfo) * map->nkeys);
	map->key_in = palloc0(sizeof(FmgrInfo) * map->nkeys);
	map->key_out = palloc0(sizeof(FmgrInfo) * map->nkeys);
	map->key_ioparams = palloc(sizeof(Oid) * map->nkeys);
	map->key_names = palloc(sizeof(char *) * map->nkeys);
	map->key_byval = palloc(sizeof(bool) * map->nkeys);
	map->key_typlen = palloc(sizeof(int16) * map->nkeys);
	foreach(lc, job->key_columns)
	{
		Form_pg_attribute att = mapping_find_column(src, lfirst(lc));
		Oid			opclass;
		Oid			cmpproc;
		Oid			func;
		bool		varlena;

		if (att == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_COLUMN),
					 errmsg("key column \"%s\" of relation \"%s\" does not exist",
							(char *) lfirst(lc), RelationGetRelationName(src)),
					 errdetail("The source changed since job \"%s\" was created.",
							   job->job_name)));
		map->key_names[i] = pstrdup(lfirst(lc));
		map->key_types[i] = att->atttypid;
		map->key_collations[i] = att->attcollation;
		map->key_byval[i] = att->attbyval;
		map->key_typlen[i] = att->attlen;
		if (!mapping_type_io_is_fixed(att->atttypid))
			map->key_io_styled = true;
		opclass = GetDefaultOpClass(att->atttypid, BTREE_AM_OID);
		if (!OidIsValid(opclass))
			elog(ERROR, "type %u has no btree opclass", att->atttypid);
		cmpproc = get_opfamily_proc(get_opclass_family(opclass),
									get_opclass_input_type(opclass),
									get_opclass_input_type(opclass),
									BTORDER_PROC);
		if (!OidIsValid(cmpproc))
			elog(ERROR, "missing btree comparison for type %u", att->atttypid);
		fmgr_info(cmpproc, &map->key_cmp[i]);
		getTypeInputInfo(att->atttypid, &func, &map->key_ioparams[i]);
		fmgr_info(func, &map->key_in[i]);
		getTypeOutputInfo(att->atttypid, &func, &varlena);
		fmgr_info(func, &map->key_out[i]);
		i++;
	}
}

/*
 * The select list of a batch query, "s.k1 AS k1, ..., CAST((expr) AS type)
 * AS c1, ...", and the mapped target columns; *identity_always says whether
 * one of them is GENERATED ALWAYS AS IDENTITY (the INSERT must then say
 * OVERRIDING SYSTEM VALUE).
 */
static char *
map_select_list(AmJob *job, AmMapping *map, Relation tgt,
				bool *identity_always)
{
	StringInfoData cols;
	ListCell   *lt;
	ListCell   *le;
	int			i;

	initStringInfo(&cols);
	for (i = 0; i < map->nkeys; i++)
		appendStringInfo(&cols, "%ss.%s AS k%d", i > 0 ? ", " : "",
						 quote_identifier(map->key_names[i]), i + 1);
	map->nmapped = list_length(job->map_targets);
	map->mapped_attnums = palloc(sizeof(AttrNumber) * map->nmapped);
	map->mapped_names = palloc(sizeof(char *) * map->nmapped);
	*identity_always = false;
	i = 0;
	forboth(lt, job->map_targets, le, job->map_exprs)
	{
		Form_pg_attribute att = mapping_find_column(tgt, lfirst(lt));

		if (att == NULL || att->attgenerated)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_COLUMN),
					 errmsg("column \"%s\" of relation \"%s\" does not exist",
							(char *) lfirst(lt), RelationGetRelationName(tgt)),
					 errdetail("The target changed since job \"%s\" was created.",
							   job->job_name)));
		if (att->attidentity == ATTRIBUTE_IDENTITY_ALWAYS)
			*identity_always = true;
		map->mapped_attnums[i] = att->attnum;
		map->mapped_names[i] = pstrdup(lfirst(lt));
		appendStringInfo(&cols, ", CAST((%s) AS %s) AS c%d",
						 (char *) lfirst(le),
						 format_type_extended(att->atttypid, att->atttypmod,
											  FORMAT_TYPE_TYPEMOD_GIVEN |
											  FORMAT_TYPE_FORCE_QUALIFY),
						 i + 1);
		i++;
	}
	return cols.data;
}

/*
 * A batch query with its LIMIT: "$n" (the plans that take the limit as a
 * parameter) or a number (the batch plans, one generic plan per batch
 * size, batch.c).  With insert, the query of the SQL path, which writes the
 * rows through INSERT ... ON CONFLICT and returns their keys.
 */
char *
mapping_batch_sql(AmMapping *map, int lo, int hi, bool insert,
				  const char *limit)
{
	if (!insert)
		return psprintf("%s LIMIT %s", map->read_sql[lo][hi], limit);
	return psprintf("WITH b AS MATERIALIZED (%s LIMIT %s), %s",
					map->read_sql[lo][hi], limit, map->upsert_sql);
}

/*
 * The keyset queries, [lo][hi] for with or without a lower and an upper
 * bound: the batch's rows (select_sql), the same through the SQL path's
 * upsert (insert_sql), and their keys alone (keys_sql).
 */
static void
map_keyset_sql(AmJob *job, AmMapping *map, const char *srcname,
			   const char *tgtname, const char *cols, bool identity_always)
{
	const char *opnsp = map_operator_schema(map);
	char	   *limit = psprintf("$%d", 2 * map->nkeys + 1);
	StringInfoData order;
	StringInfoData ins;
	StringInfoData keys;

	initStringInfo(&order);
	for (int i = 0; i < map->nkeys; i++)
		appendStringInfo(&order, "%ss.%s", i > 0 ? ", " : "",
						 quote_identifier(map->key_names[i]));

	/* the SQL path: the rows of CTE b through INSERT ... ON CONFLICT */
	initStringInfo(&ins);
	map_append_upsert(&ins, job, map, tgtname, identity_always,
					  job->on_conflict);
	appendStringInfoString(&ins, " SELECT ");
	for (int i = 0; i < map->nkeys; i++)
		appendStringInfo(&ins, "b.k%d, ", i + 1);
	appendStringInfoString(&ins, "(SELECT pg_catalog.count(*) FROM w) FROM b");
	map->upsert_sql = ins.data;

	for (int lo = 0; lo < 2; lo++)
	{
		for (int hi = 0; hi < 2; hi++)
		{
			StringInfoData where;

			initStringInfo(&where);
			appendStringInfoString(&where, "true");
			if (job->filter)
				appendStringInfo(&where, " AND (%s)", job->filter);
			if (lo)
			{
				appendStringInfoString(&where, " AND ");
				map_append_row(&where, map, 0);
				appendStringInfo(&where, " OPERATOR(%s.>) ", opnsp);
				map_append_row(&where, map, 1);
			}
			if (hi)
			{
				appendStringInfoString(&where, " AND ");
				map_append_row(&where, map, 0);
				appendStringInfo(&where, " OPERATOR(%s.<=) ", opnsp);
				map_append_row(&where, map, map->nkeys + 1);
			}
			map->read_sql[lo][hi] = psprintf("SELECT %s FROM %s AS s WHERE %s ORDER BY %s",
											 cols, srcname, where.data,
											 order.data);
			map->select_sql[lo][hi] = mapping_batch_sql(map, lo, hi, false,
														limit);
			map->insert_sql[lo][hi] = mapping_batch_sql(map, lo, hi, true,
														limit);

			/* the same rows, keys only */
			initStringInfo(&keys);
			appendStringInfo(&keys, "SELECT %s FROM %s AS s WHERE %s ORDER BY %s LIMIT %s",
							 order.data, srcname, where.data, order.data,
							 limit);
			map->keys_sql[lo][hi] = keys.data;
		}
	}
}

/*
 * The helper queries of a batch: a key's source row as jsonb (rejects), the
 * count of source rows with a key (duplicate check) and a NULL key (end of
 * the walk).
 */
static void
map_helper_sql(AmJob *job, AmMapping *map, const char *srcname)
{
	const char *opnsp = map_operator_schema(map);
	StringInfoData q;

	initStringInfo(&q);
	appendStringInfoString(&q, "SELECT pg_catalog.jsonb_build_object(");
	for (int i = 0; i < map->nkeys; i++)
		appendStringInfo(&q, "%s%s, $%d", i > 0 ? ", " : "",
						 quote_literal_cstr(map->key_names[i]), i + 1);
	appendStringInfo(&q, "), (SELECT pg_catalog.to_jsonb(s) FROM %s AS s WHERE ",
					 srcname);
	map_append_row(&q, map, 0);
	appendStringInfo(&q, " OPERATOR(%s.=) ", opnsp);
	map_append_row(&q, map, 1);
	appendStringInfoString(&q, " LIMIT 1)");
	map->row_json_sql = q.data;

	initStringInfo(&q);
	appendStringInfo(&q, "SELECT pg_catalog.count(*) FROM %s AS s WHERE %s%s%s AND ",
					 srcname, job->filter ? "(" : "true",
					 job->filter ? job->filter : "", job->filter ? ")" : "");
	map_append_row(&q, map, 0);
	appendStringInfo(&q, " OPERATOR(%s.=) ", opnsp);
	map_append_row(&q, map, 1);
	map->key_count_sql = q.data;

	initStringInfo(&q);
	appendStringInfo(&q, "SELECT 1 FROM %s AS s WHERE %s%s%s AND (",
					 srcname, job->filter ? "(" : "true",
					 job->filter ? job->filter : "", job->filter ? ")" : "");
	for (int i = 0; i < map->nkeys; i++)
		appendStringInfo(&q, "%ss.%s IS NULL", i > 0 ? " OR " : "",
						 quote_identifier(map->key_names[i]));
	appendStringInfoString(&q, ") LIMIT 1");
	map->null_key_sql = q.data;
}

/*
 * May the direct (table access method) writer be used?  Not where an INSERT
 * would do more than writer.c does: partitions to route to, row-level
 * security, rules, or triggers other than AFTER ROW ones.
 */
static void
map_direct_write_check(AmJob *job, AmMapping *map, Relation tgt)
{
	TriggerDesc *td = tgt->trigdesc;

	map->direct_ok = false;
	if (!acme_migrate_direct_write)
		map->direct_why_not = "acme_migrate.direct_write is off";
	else if (tgt->rd_rel->relkind != RELKIND_RELATION)
		map->direct_why_not = "the target is partitioned";
	else if (!locality_is_local(job->target_relid))
		map->direct_why_not = locality_why_not(job->target_relid);
	else if (check_enable_rls(job->target_relid, job->owner, true) == RLS_ENABLED)
		map->direct_why_not = "the target has row-level security";
	else if (tgt->rd_rules != NULL)
		map->direct_why_not = "the target has rules";
	else if (td != NULL &&
			 (td->trig_insert_before_row || td->trig_insert_instead_row ||
			  td->trig_insert_new_table || td->trig_insert_before_statement ||
			  td->trig_insert_after_statement))
		map->direct_why_not = "the target has BEFORE, INSTEAD OF, statement or transition-table INSERT triggers";
	else
		map->direct_ok = true;
}

/*
 * acme_migrate_create: prepare the batch queries once, so that errors in the
 * mapping or filter surface now, and check what they may touch.
 */
static void
map_validate(AmJob *job, AmMapping *map, const char *srcname)
{
	int			nargs = 2 * map->nkeys + 1;
	Oid		   *argtypes = palloc(sizeof(Oid) * nargs);
	SPIPlanPtr	select_plan;
	SPIPlanPtr	insert_plan;

	for (int i = 0; i < map->nkeys; i++)
		argtypes[i] = argtypes[map->nkeys + i] = map->key_types[i];
	argtypes[nargs - 1] = INT8OID;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	mapping_check_job_sql(job, srcname);
	select_plan = SPI_prepare(map->select_sql[1][1], nargs, argtypes);
	insert_plan = SPI_prepare(map->insert_sql[1][1], nargs, argtypes);
	if (select_plan == NULL || insert_plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	mapping_check_privileges(select_plan);
	mapping_check_privileges(insert_plan);
	SPI_finish();
}

/*
 * Build the mapping of a job against the current catalogs: key information,
 * the SQL of a batch and its helpers, whether the direct writer may be used.
 * With validating (acme_migrate_create), every query is prepared once so
 * that errors in the mapping or filter surface now.
 */
AmMapping *
mapping_build(AmJob *job, bool validating)
{
	AmMapping  *map = palloc0(sizeof(AmMapping));
	Relation	src;
	Relation	tgt;
	char	   *srcname;
	char	   *tgtname;
	char	   *cols;
	bool		identity_always;

	src = mapping_open_table(job, job->source_relid, "source");
	tgt = mapping_open_table(job, job->target_relid, "target");
	map->source_relid = job->source_relid;
	map->target_relid = job->target_relid;
	map->definition_version = job->definition_version;
	map->has_ranges = -1;
	srcname = map_relname(src);
	tgtname = map_relname(tgt);

	map_key_info(job, map, src);
	cols = map_select_list(job, map, tgt, &identity_always);
	map_keyset_sql(job, map, srcname, tgtname, cols, identity_always);
	if (job->capture_changes)
	{
		map->catchup_sql = map_catchup_sql(job, map, tgt, srcname, tgtname,
										   cols, identity_always);
		map_catchup_replace_sql(job, map, tgt, srcname, tgtname, cols,
								identity_always);
		map->verify_sql = map_verify_sql(job, map, tgt, srcname, tgtname,
										 cols);
	}
	map_helper_sql(job, map, srcname);
	map_direct_write_check(job, map, tgt);

	relation_close(tgt, AccessShareLock);
	relation_close(src, AccessShareLock);

	if (validating)
		map_validate(job, map, srcname);
	return map;
}

/*
 * Key values travel through the catalog as text.  Output and input happen
 * under fixed settings, so a checkpoint written under one DateStyle reads
 * back the same under another.  For a comparison (for_compare), TimeZone is
 * fixed too, since "same representation" is judged by the text, and cursors
 * are planned to read everything.  Undo with AtEOXact_GUC(true, level).
 */
int
mapping_fixed_settings(bool for_compare)
{
	int			nest = NewGUCNestLevel();

	(void) set_config_option("datestyle", "ISO, YMD", PGC_USERSET,
							 PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
	(void) set_config_option("intervalstyle", "postgres", PGC_USERSET,
							 PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
	(void) set_config_option("extra_float_digits", "3", PGC_USERSET,
							 PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
	if (for_compare)
	{
		(void) set_config_option("timezone", "UTC", PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
		(void) set_config_option("cursor_tuple_fraction", "1", PGC_USERSET,
								 PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
	}
	return nest;
}

List *
mapping_key_to_text(AmMapping *map, Datum *values)
{
	int			nest = map->key_io_styled ? mapping_fixed_settings(false) : -1;
	List	   *result = NIL;

	for (int i = 0; i < map->nkeys; i++)
		result = lappend(result, OutputFunctionCall(&map->key_out[i], values[i]));
	if (nest >= 0)
		AtEOXact_GUC(true, nest);
	return result;
}

Datum *
mapping_key_from_text(AmMapping *map, List *text_key)
{
	int			nest;
	Datum	   *values;
	ListCell   *lc;
	int			i = 0;

	if (list_length(text_key) != map->nkeys)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("checkpoint has %d key values, the key has %d columns",
						list_length(text_key), map->nkeys)));
	values = palloc(sizeof(Datum) * map->nkeys);
	nest = map->key_io_styled ? mapping_fixed_settings(false) : -1;
	foreach(lc, text_key)
	{
		values[i] = InputFunctionCall(&map->key_in[i], lfirst(lc),
									  map->key_ioparams[i], -1);
		i++;
	}
	if (nest >= 0)
		AtEOXact_GUC(true, nest);
	return values;
}

/*
 * The planner's estimate of the rows the job will copy, for the progress
 * view; -1 when there is none.
 */
double
mapping_estimate_rows(AmJob *job)
{
	StringInfoData q;
	Relation	src = relation_open(job->source_relid, AccessShareLock);
	double		rows = -1;
	Datum		arg;

	initStringInfo(&q);
	appendStringInfo(&q, "EXPLAIN (FORMAT JSON) SELECT 1 FROM %s AS s WHERE %s",
					 map_relname(src), job->filter ? job->filter : "true");
	relation_close(src, AccessShareLock);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute(q.data, false, 0) == SPI_OK_UTILITY && SPI_processed > 0)
	{
		arg = CStringGetTextDatum(SPI_getvalue(SPI_tuptable->vals[0],
											   SPI_tuptable->tupdesc, 1));
		if (SPI_execute_with_args("SELECT ((($1)::pg_catalog.jsonb) "
								  "OPERATOR(pg_catalog.->) 0 OPERATOR(pg_catalog.->) 'Plan' "
								  "OPERATOR(pg_catalog.->>) 'Plan Rows')::pg_catalog.float8",
								  1, (Oid[]) {TEXTOID}, &arg, NULL, true, 1) == SPI_OK_SELECT &&
			SPI_processed == 1)
		{
			bool		isnull;
			Datum		d = SPI_getbinval(SPI_tuptable->vals[0],
										  SPI_tuptable->tupdesc, 1, &isnull);

			if (!isnull)
				rows = DatumGetFloat8(d);
		}
	}
	SPI_finish();
	return rows;
}
