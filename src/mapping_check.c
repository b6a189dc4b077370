/*-------------------------------------------------------------------------
 *
 * mapping_check.c
 *	  What a job's SQL may be, checked when the job is created, and what
 *	  its tables must still look like, checked before every batch.
 *
 * A mapping that "works" can still lose rows silently: a set-returning
 * function multiplies or drops rows, an aggregate or window function reads
 * across rows the keyset walk cuts apart, a volatile filter selects other
 * rows on every batch, and an unquoted ID reads column id when the key is
 * "ID".  Those are refused at create time, each with an error that names
 * the mapping at fault.
 *
 * Between batches a DBA may alter the tables.  A checkpoint is only
 * meaningful while the key keeps its type and collation, and a mapping
 * only means what it meant while the columns it reads and fills keep
 * theirs.  The job records the "shape" of those columns when it is created
 * (names in column order, types with typmods, collations: text that
 * survives pg_dump), and every batch compares it with the tables as they
 * are, under the locks the batch then keeps to its end.  Added columns and
 * changes to columns the job does not use are allowed.
 *
 *-------------------------------------------------------------------------
 */
#include "acme_migrate.h"

#include "access/relation.h"
#include "catalog/namespace.h"
#include "catalog/pg_collation.h"
#include "executor/executor.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/optimizer.h"
#include "parser/parser.h"
#include "parser/scanner.h"
/* after scanner.h, which defines what it uses */
#include "parser/gram.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/plancache.h"
#include "utils/rel.h"
#include "utils/ruleutils.h"
#include "utils/syscache.h"

/* The one expression of "SELECT <expr>", raw-parsed. */
static Node *
mc_raw_expr(const char *expr)
{
	List	   *stmts = raw_parser(psprintf("SELECT %s", expr), RAW_PARSE_DEFAULT);
	SelectStmt *sel = (SelectStmt *) ((RawStmt *) linitial(stmts))->stmt;

	return ((ResTarget *) linitial(sel->targetList))->val;
}

/*
 * Is this mapping expression exactly the source column "col", as SQL reads
 * it (an unquoted ID is the column id)?  That is how the key columns are
 * recognised in the target.
 */
bool
mapping_expr_is_column(const char *expr, const char *col)
{
	Node	   *node = mc_raw_expr(expr);
	ColumnRef  *ref;
	Node	   *last;

	if (!IsA(node, ColumnRef))
		return false;
	ref = (ColumnRef *) node;
	last = llast(ref->fields);
	if (!IsA(last, String) || strcmp(strVal(last), col) != 0)
		return false;
	return list_length(ref->fields) == 1 ||
		(list_length(ref->fields) == 2 &&
		 strcmp(strVal(linitial(ref->fields)), "s") == 0);
}

/*
 * Refuse an unquoted identifier that SQL folds to lower case when the
 * source also has a column spelt exactly as written: with columns "ID"
 * and id, the mapping ID reads id, which is rarely what was meant.
 */
void
mapping_check_case(Relation src, const char *sql, const char *what)
{
	core_yy_extra_type yyextra;
	core_yyscan_t scanner;
	core_YYSTYPE yylval;
	YYLTYPE		loc;
	int			tok;

	scanner = scanner_init(sql, &yyextra, &ScanKeywords, ScanKeywordTokens);
	while ((tok = core_yylex(&yylval, &loc, scanner)) != 0)
	{
		const char *written = sql + loc;
		char	   *as_written;

		/* quoted identifiers ("ID", U&"ID") are never folded */
		if (tok != IDENT || written[0] == '"' ||
			((written[0] == 'U' || written[0] == 'u') && written[1] == '&'))
			continue;
		as_written = pnstrdup(written, strlen(yylval.str));
		if (strcmp(as_written, yylval.str) != 0 &&
			pg_strcasecmp(as_written, yylval.str) == 0 &&
			mapping_find_column(src, as_written) != NULL)
			ereport(ERROR,
					(errcode(ERRCODE_AMBIGUOUS_COLUMN),
					 errmsg("%s reads column \"%s\", not column \"%s\"",
							what, yylval.str, as_written),
					 errdetail("SQL folds the unquoted name %s to lower case, and the source has both columns.",
							   as_written),
					 errhint("Write \"%s\" in double quotes for the column \"%s\", or %s in lower case for the other.",
							 as_written, as_written, yylval.str)));
	}
	scanner_finish(scanner);
}

/* The analyzed query of a statement prepared through SPI. */
static Query *
mc_query(SPIPlanPtr plan)
{
	CachedPlanSource *ps = linitial(SPI_plan_get_plan_sources(plan));

	return linitial_node(Query, ps->query_list);
}

static bool
mc_volatile_sublink_walker(Node *node, void *context)
{
	if (node == NULL)
		return false;
	if (IsA(node, SubLink) && contain_volatile_functions(node))
		return true;
	return expression_tree_walker(node, mc_volatile_sublink_walker, context);
}

/*
 * Refuse a mapping expression that does not give exactly one value per
 * source row, computed from that row: set-returning, aggregate and window
 * functions, and volatile subqueries.  Each is prepared alone over the
 * source, so the error names the column at fault.
 */
static void
mc_check_expr(const char *srcname, const char *col, const char *expr)
{
	SPIPlanPtr	plan;
	Query	   *q;
	Node	   *e;
	const char *why = NULL;

	plan = SPI_prepare(psprintf("SELECT (%s) FROM %s AS s", expr, srcname),
					   0, NULL);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	q = mc_query(plan);
	e = (Node *) linitial_node(TargetEntry, q->targetList)->expr;
	if (q->hasTargetSRFs || expression_returns_set(e))
		why = "a set-returning function, which would copy each source row zero or several times";
	else if (q->hasAggs)
		why = "an aggregate function, which reads across the rows of a batch";
	else if (q->hasWindowFuncs)
		why = "a window function, which reads across the rows of a batch";
	else if (mc_volatile_sublink_walker(e, NULL))
		why = "a subquery with volatile functions, which may give another answer on every read";
	if (why)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("mapping of column \"%s\" uses %s", col, why),
				 errdetail("A mapping must give exactly one value per source row, from that row."),
				 errhint("The expression was: %s", expr)));
	SPI_freeplan(plan);
}

/*
 * A filter must select the same rows on every batch, in the job and in
 * its reconciliation: no volatile functions.
 */
static void
mc_check_filter(const char *srcname, const char *filter)
{
	SPIPlanPtr	plan;
	Query	   *q;

	plan = SPI_prepare(psprintf("SELECT FROM %s AS s WHERE (%s)", srcname,
								filter), 0, NULL);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	q = mc_query(plan);
	if (contain_volatile_functions(q->jointree->quals))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("filter uses volatile functions"),
				 errdetail("A filter must select the same rows on every batch and in every reconciliation."),
				 errhint("The filter was: %s", filter)));
	SPI_freeplan(plan);
}

/* ExecCheckRTPerms on a query and on every query nested in it */
static bool
mc_privileges_walker(Node *node, void *context)
{
	if (node == NULL)
		return false;
	if (IsA(node, Query))
	{
		(void) ExecCheckRTPerms(((Query *) node)->rtable, true);
		return query_tree_walker((Query *) node, mc_privileges_walker,
								 context, 0);
	}
	return expression_tree_walker(node, mc_privileges_walker, context);
}

/*
 * The owner must hold, now, every privilege the batch queries need: SELECT
 * on each column they read (mapping subqueries and views included),
 * INSERT on each target column they fill, UPDATE for on_conflict =>
 * 'update'.  The range tables of the rewritten queries say exactly which,
 * as the executor would check them; nothing is run.
 */
void
mapping_check_privileges(SPIPlanPtr plan)
{
	CachedPlanSource *ps = linitial(SPI_plan_get_plan_sources(plan));

	(void) mc_privileges_walker((Node *) ps->query_list, NULL);
}

/*
 * The create-time checks of a job's SQL (inside SPI, as the owner): each
 * mapping expression and the filter alone, before the batch queries are
 * prepared, so that the error names the mapping at fault.  (Names are
 * checked earlier, by mapping_resolve_new_job, with mapping_check_case.)
 */
void
mapping_check_job_sql(AmJob *job, const char *srcname)
{
	ListCell   *lt;
	ListCell   *le;

	forboth(lt, job->map_targets, le, job->map_exprs)
		mc_check_expr(srcname, lfirst(lt), lfirst(le));
	if (job->filter)
		mc_check_filter(srcname, job->filter);
}

/* ---- the shape of the job's columns ---- */

/*
 * Which columns make up a job's shape, by name: worked out once per
 * mapping (it parses the job's SQL), used by every batch.
 */
typedef struct McShapeCols
{
	Relation	src;			/* only while the names are collected */
	bool		whole_row;		/* a mapping reads the whole source row */
	List	   *src_names;		/* char * */
	List	   *tgt_names;		/* char * */
	char	   *text;			/* the shape last worked out, or NULL ... */
	uint64		generation;		/* ... at this mc_generation */
} McShapeCols;

/*
 * Bumped by every invalidation of a relation's cache entry, a type, a
 * collation or a schema (what the text of a shape is made of): a shape
 * worked out at the same generation is still the tables' shape.
 */
static uint64 mc_generation = 1;
static bool mc_callbacks = false;

static void
mc_relcache_callback(Datum arg, Oid relid)
{
	mc_generation++;
}

static void
mc_syscache_callback(Datum arg, int cacheid, uint32 hashvalue)
{
	mc_generation++;
}

static void
mc_note_source_column(McShapeCols *sc, const char *name)
{
	if (mapping_find_column(sc->src, name) != NULL &&
		!list_member(sc->src_names, makeString((char *) name)))
		sc->src_names = lappend(sc->src_names, makeString(pstrdup(name)));
}

/* Note the source columns a raw expression may read. */
static bool
mc_refs_walker(Node *node, McShapeCols *sc)
{
	if (node == NULL)
		return false;
	if (IsA(node, ColumnRef))
	{
		ColumnRef  *ref = (ColumnRef *) node;
		Node	   *last = llast(ref->fields);
		const char *relname = RelationGetRelationName(sc->src);

		if (IsA(last, A_Star))
			sc->whole_row = true;
		else if (list_length(ref->fields) == 1 &&
				 (strcmp(strVal(last), "s") == 0 ||
				  strcmp(strVal(last), relname) == 0) &&
				 mapping_find_column(sc->src, strVal(last)) == NULL)
			sc->whole_row = true;	/* the row as a value: s, to_jsonb(s) */
		else
			mc_note_source_column(sc, strVal(last));
		return false;
	}
	return raw_expression_tree_walker(node, mc_refs_walker, sc);
}

/*
 * The columns of the shape: the source's key columns and every column its
 * mapping and filter may read (names that are not source columns belong to
 * subqueries and are left out), the target's key and mapped columns.
 */
static McShapeCols *
mc_shape_columns(AmJob *job)
{
	McShapeCols *sc = palloc0(sizeof(McShapeCols));
	ListCell   *lc;

	sc->src = relation_open(job->source_relid, NoLock);
	foreach(lc, job->key_columns)
		sc->src_names = lappend(sc->src_names, makeString(pstrdup(lfirst(lc))));
	foreach(lc, job->map_exprs)
		(void) mc_refs_walker(mc_raw_expr(lfirst(lc)), sc);
	if (job->filter)
	{
		List	   *stmts = raw_parser(psprintf("SELECT WHERE %s", job->filter),
									   RAW_PARSE_DEFAULT);
		SelectStmt *sel = (SelectStmt *) ((RawStmt *) linitial(stmts))->stmt;

		(void) mc_refs_walker(sel->whereClause, sc);
	}
	relation_close(sc->src, NoLock);
	sc->src = NULL;
	foreach(lc, job->map_targets)
		sc->tgt_names = lappend(sc->tgt_names, makeString(pstrdup(lfirst(lc))));
	return sc;
}

/*
 * "name type COLLATE c, ..." of the named columns (all when names is NIL),
 * in column order; a named column that is gone is simply not there.
 */
static void
mc_append_columns(StringInfo buf, Relation rel, List *names)
{
	TupleDesc	desc = RelationGetDescr(rel);
	bool		first = true;

	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (att->attisdropped ||
			(names && !list_member(names, makeString(NameStr(att->attname)))))
			continue;
		appendStringInfo(buf, "%s%s %s", first ? "" : ", ",
						 quote_identifier(NameStr(att->attname)),
						 format_type_extended(att->atttypid, att->atttypmod,
											  FORMAT_TYPE_TYPEMOD_GIVEN));
		if (OidIsValid(att->attcollation))
			appendStringInfo(buf, " COLLATE %s",
							 generate_collation_name(att->attcollation));
		first = false;
	}
}

/*
 * The shape of the columns the job uses, as text: "source (...), target
 * (...)" with each column as "name type COLLATE collation" in column
 * order.  A rename, a change of type, typmod or collation, a drop or a
 * reorder of any of them changes the text; columns added, and columns the
 * job does not use, do not.  The caller holds locks on both tables.  With
 * a mapping, the list of columns is worked out once and kept in it, and so
 * is the text until an invalidation of a relation, type, collation or
 * schema (mc_generation): all it is made of.
 */
char *
mapping_shape(AmJob *job, AmMapping *map)
{
	StringInfoData buf;
	McShapeCols *sc = map ? (McShapeCols *) map->shape_cache : NULL;
	Relation	src;
	Relation	tgt;
	int			nest;

	uint64		generation = mc_generation;

	if (!mc_callbacks)
	{
		CacheRegisterRelcacheCallback(mc_relcache_callback, (Datum) 0);
		CacheRegisterSyscacheCallback(TYPEOID, mc_syscache_callback, (Datum) 0);
		CacheRegisterSyscacheCallback(COLLOID, mc_syscache_callback, (Datum) 0);
		CacheRegisterSyscacheCallback(NAMESPACEOID, mc_syscache_callback,
									  (Datum) 0);
		mc_callbacks = true;
	}
	if (sc == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(map ? GetMemoryChunkContext(map) :
												  CurrentMemoryContext);

		sc = mc_shape_columns(job);
		MemoryContextSwitchTo(old);
		if (map)
			map->shape_cache = sc;
	}
	/* nothing it is made of changed since it was worked out */
	if (sc->text != NULL && sc->generation == generation)
		return pstrdup(sc->text);
	/* type and collation names as seen from a fixed search_path */
	nest = am_pin_search_path();
	src = relation_open(job->source_relid, NoLock);
	tgt = relation_open(job->target_relid, NoLock);
	initStringInfo(&buf);
	appendStringInfoString(&buf, "source (");
	mc_append_columns(&buf, src, sc->whole_row ? NIL : sc->src_names);
	appendStringInfoString(&buf, "), target (");
	mc_append_columns(&buf, tgt, sc->tgt_names);
	appendStringInfoChar(&buf, ')');
	relation_close(tgt, NoLock);
	relation_close(src, NoLock);
	am_unpin_search_path(nest);
	/* an invalidation meanwhile leaves it to be worked out again */
	if (map)
	{
		sc->text = MemoryContextStrdup(GetMemoryChunkContext(sc), buf.data);
		sc->generation = generation;
	}
	return buf.data;
}
