/*-------------------------------------------------------------------------
 *
 * locality.c
 *	  Which relations PostgreSQL itself stores here, so that the direct
 *	  paths (the table AM writer, the direct scans of table_hash and
 *	  range_hashes, the capture triggers) never touch one whose rows live
 *	  elsewhere.
 *
 * A foreign table's rows are wherever its wrapper keeps them.  A Citus
 * distributed or reference table (or a Citus local table) is a "shell" on
 * this node: Citus's planner and executor hooks send every statement on it
 * to its shards, so a direct insert would land in a heap no query reads,
 * a direct scan would hash that empty heap, and a trigger on the shell
 * would never fire for writes routed to the shards.  Such relations are
 * read and written through SQL (where the hooks see the statement), or
 * refused where SQL cannot do the job.
 *
 * Citus is recognised by its catalog pg_catalog.pg_dist_partition, looked
 * up by name (it exists exactly when the citus extension is installed), so
 * acme_migrate neither links against Citus nor needs it.
 *
 * When Citus is present and acme_migrate is installed on its worker nodes,
 * the table hash of a hash-distributed table is the sum of its shards'
 * table hashes, each computed on the worker that holds the shard
 * (run_command_on_shards) instead of pulling every row to this node.
 *
 *-------------------------------------------------------------------------
 */
#include "acme_migrate.h"

#include <math.h>

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "miscadmin.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/uuid.h"

/*
 * Citus's partition method of a relation (pg_dist_partition.partmethod:
 * 'h' hash, 'n' reference or Citus local, 'a' append, 'r' range), or '\0'
 * when Citus is not installed or does not know the relation.
 */
char
locality_citus_method(Oid relid)
{
	Oid			catid = get_relname_relid("pg_dist_partition",
										  PG_CATALOG_NAMESPACE);
	Oid			indid;
	Relation	cat;
	TupleDesc	desc;
	SysScanDesc scan;
	ScanKeyData key;
	HeapTuple	tup;
	char		method = '\0';

	if (!OidIsValid(catid))
		return '\0';
	indid = get_relname_relid("pg_dist_partition_logical_relid_index",
							  PG_CATALOG_NAMESPACE);
	cat = table_open(catid, AccessShareLock);
	desc = RelationGetDescr(cat);

	/* a catalog we do not understand: every relation it may name is routed */
	if (desc->natts < 2 ||
		(TupleDescAttr(desc, 0)->atttypid != REGCLASSOID &&
		 TupleDescAttr(desc, 0)->atttypid != OIDOID) ||
		TupleDescAttr(desc, 1)->atttypid != CHAROID)
		elog(ERROR, "unexpected layout of pg_catalog.pg_dist_partition");

	ScanKeyInit(&key, 1, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(relid));
	scan = systable_beginscan(cat, indid, OidIsValid(indid), NULL, 1, &key);
	tup = systable_getnext(scan);
	if (HeapTupleIsValid(tup))
	{
		bool		isnull;
		Datum		d = heap_getattr(tup, 2, desc, &isnull);

		method = isnull ? '?' : DatumGetChar(d);
	}
	systable_endscan(scan);
	table_close(cat, AccessShareLock);
	return method;
}

/*
 * NULL when PostgreSQL stores the relation's rows here, in its own table
 * AM; otherwise why not, as a sentence for an errdetail or DEBUG1.
 */
const char *
locality_why_not(Oid relid)
{
	char		method;

	if (get_rel_relkind(relid) == RELKIND_FOREIGN_TABLE)
		return psprintf("\"%s\" is a foreign table: its rows are wherever its foreign-data wrapper keeps them.",
						get_rel_name(relid));
	method = locality_citus_method(relid);
	if (method == '\0')
		return NULL;
	if (method == 'n')
		return psprintf("\"%s\" is a Citus reference or local table: Citus sends every statement on it to its shards.",
						get_rel_name(relid));
	return psprintf("\"%s\" is a Citus distributed table: its rows live in shards that only Citus's planner reaches.",
					get_rel_name(relid));
}

bool
locality_is_local(Oid relid)
{
	return locality_why_not(relid) == NULL;
}

/*
 * Refuse an operation that only works on a relation stored here (action is
 * a verb phrase: "capture the changes of").
 */
void
locality_require_local(Oid relid, const char *action)
{
	const char *why = locality_why_not(relid);

	if (why != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot %s \"%s\"", action, get_rel_name(relid)),
				 errdetail_internal("%s", why),
				 errhint("Only tables stored by PostgreSQL on this node can be used for this.")));
}

/*
 * A batch that wrote into a relation stored elsewhere (a Citus table) must
 * commit synchronously: Citus commits the workers' prepared transactions
 * after the local commit, and a local commit lost in a crash
 * (synchronous_commit = off) would leave their rows without the checkpoint
 * that goes with them.  locality_note_write records, for the current
 * transaction, that it wrote such a relation; batch_commit_async asks.
 */
static LocalTransactionId loc_remote_lxid = InvalidLocalTransactionId;

void
locality_note_write(Oid relid)
{
	if (!locality_is_local(relid))
		loc_remote_lxid = MyProc->lxid;
}

bool
locality_wrote_elsewhere(void)
{
	return loc_remote_lxid != InvalidLocalTransactionId &&
		loc_remote_lxid == MyProc->lxid;
}

/*
 * Is acme_migrate installed, in the same version and schema as here, on
 * every node holding a shard of relid?  Asked of Citus itself:
 * run_command_on_shards returns one row per shard.
 */
static bool
locality_shards_have_us(Oid relid)
{
	Oid			argtypes[2] = {REGCLASSOID, TEXTOID};
	Datum		args[2];
	char	   *version;
	int			rc;
	bool		isnull;

	rc = SPI_execute("SELECT extversion FROM pg_catalog.pg_extension "
					 "WHERE extname OPERATOR(pg_catalog.=) 'acme_migrate'", true, 1);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		return false;
	version = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	args[0] = ObjectIdGetDatum(relid);
	args[1] = CStringGetTextDatum(psprintf("SELECT pg_catalog.count(*) OPERATOR(pg_catalog.>) 0 "
										   "FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n "
										   "ON n.oid OPERATOR(pg_catalog.=) e.extnamespace "
										   "WHERE e.extname OPERATOR(pg_catalog.=) 'acme_migrate' "
										   "AND e.extversion OPERATOR(pg_catalog.=) %s "
										   "AND n.nspname OPERATOR(pg_catalog.=) %s",
										   quote_literal_cstr(version),
										   quote_literal_cstr(am_extension_schema())));
	rc = SPI_execute_with_args("SELECT pg_catalog.bool_and(success AND result OPERATOR(pg_catalog.=) 't') "
							   "FROM pg_catalog.run_command_on_shards($1, $2)",
							   2, argtypes, args, NULL, true, 0);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		return false;
	return DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
									  SPI_tuptable->tupdesc, 1, &isnull)) &&
		!isnull;
}

/*
 * Is relid a Citus hash-distributed table whose shards' nodes all have
 * acme_migrate (in our version and schema), so that SQL run on the
 * distributed table can call our functions on the shards?
 */
bool
locality_citus_has_us(Oid relid)
{
	bool		yes;
	int			nest;

	if (locality_citus_method(relid) != 'h' ||
		!OidIsValid(get_extension_oid("citus", true)))
		return false;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	nest = am_pin_search_path();
	yes = locality_shards_have_us(relid);
	am_unpin_search_path(nest);
	SPI_finish();
	return yes;
}

/* add a big-endian 128-bit number (uuid bytes) to another */
static void
locality_add128(uint8 *sum, const uint8 *add)
{
	int			carry = 0;

	for (int i = UUID_LEN - 1; i >= 0; i--)
	{
		int			v = sum[i] + add[i] + carry;

		sum[i] = (uint8) (v & 0xff);
		carry = v >> 8;
	}
}

/*
 * Run cmd (a run_command_on_shards command: %L is the shard's name, any
 * other % doubled) on every shard of relid, when it is a Citus
 * hash-distributed table and acme_migrate is installed, in the same
 * version and schema, on every node holding one of its shards.  Returns
 * the shards' results (in the caller's memory), or NIL, having run
 * nothing, when that is not so.  A shard that fails is an ERROR.
 */
static List *
loc_on_shards(Oid relid, const char *cmd)
{
	MemoryContext cxt = CurrentMemoryContext;
	Datum		args[2];
	Oid			argtypes[2] = {REGCLASSOID, TEXTOID};
	List	   *results = NIL;
	int			rc;
	int			nest;

	if (!locality_citus_has_us(relid))
		return NIL;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	nest = am_pin_search_path();
	args[0] = ObjectIdGetDatum(relid);
	args[1] = CStringGetTextDatum(cmd);
	rc = SPI_execute_with_args("SELECT success, result FROM pg_catalog.run_command_on_shards($1, $2)",
							   2, argtypes, args, NULL, true, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "run_command_on_shards failed: %s",
			 SPI_result_code_string(rc));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		bool		isnull;
		bool		ok = DatumGetBool(SPI_getbinval(tup, SPI_tuptable->tupdesc,
													1, &isnull));
		char	   *res = SPI_getvalue(tup, SPI_tuptable->tupdesc, 2);

		if (!ok || res == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_EXCEPTION),
					 errmsg("could not hash a shard of \"%s\"", get_rel_name(relid)),
					 errdetail_internal("%s", res ? res : "no result")));
		results = lappend(results, MemoryContextStrdup(cxt, res));
	}
	am_unpin_search_path(nest);
	SPI_finish();
	return results;
}

/*
 * Add a shard's "rows,hash" to a row count and a hash sum; false when the
 * text is not of that form.
 */
static bool
loc_add_figures(char *text, int64 *rows, uint8 *sum)
{
	char	   *comma = strchr(text, ',');
	pg_uuid_t  *u;

	if (comma == NULL)
		return false;
	*comma = '\0';
	*rows += pg_strtoint64(text);
	u = DatumGetUUIDP(DirectFunctionCall1(uuid_in, CStringGetDatum(comma + 1)));
	locality_add128(sum, u->data);
	return true;
}

/* acme_migrate's function fn, as the workers name it: our schema */
static char *
loc_our_function(const char *fn)
{
	return quote_qualified_identifier(am_extension_schema(), fn);
}

/*
 * The table hash of a Citus hash-distributed table as the sum of its
 * shards' table hashes, computed on the workers; false (nothing done) when
 * relid is not such a table or acme_migrate is missing on a worker, and
 * the caller reads the rows through SQL.  The schema of acme_migrate on the
 * workers must be the one it has here.  Each shard is hashed in its own
 * snapshot on its own worker, as Citus reads a multi-shard SELECT.
 */
bool
locality_citus_table_hash(Oid relid, int64 *row_count, uint8 *result)
{
	/* %L is the shard's name, filled in by run_command_on_shards */
	char	   *cmd = psprintf("SELECT h.row_count OPERATOR(pg_catalog.||) ',' OPERATOR(pg_catalog.||) h.hash FROM %s(%%L::pg_catalog.regclass) AS h",
							   loc_our_function("acme_migrate_table_hash"));
	List	   *results = loc_on_shards(relid, cmd);
	ListCell   *lc;

	if (results == NIL)
		return false;
	*row_count = 0;
	memset(result, 0, UUID_LEN);
	foreach(lc, results)
		if (!loc_add_figures(lfirst(lc), row_count, result))
			elog(ERROR, "unexpected table hash of a shard of \"%s\": %s",
				 get_rel_name(relid), (char *) lfirst(lc));
	return true;
}

/* text with every % doubled, for a format() string */
static char *
loc_escape_percent(const char *text)
{
	StringInfoData buf;

	initStringInfo(&buf);
	for (const char *p = text; *p; p++)
	{
		if (*p == '%')
			appendStringInfoChar(&buf, '%');
		appendStringInfoChar(&buf, *p);
	}
	return buf.data;
}

/*
 * The range hashes of a Citus hash-distributed table, cut at the bounds
 * (bounds_json: their jsonb array, as acme_migrate_range_hashes takes it;
 * nranges = their number + 1), as the sums per range of its shards' range
 * hashes at the same bounds, computed on the workers.  rows[r] and
 * sums[16 * r] are range r's.  False, nothing done, when relid is not such
 * a table or acme_migrate is missing on a worker.  Each shard in its own
 * snapshot, as for the table hash.
 */
bool
locality_citus_range_hashes(Oid relid, const char *bounds_json, int nranges,
							int64 *rows, uint8 *sums)
{
	char	   *cmd = psprintf("SELECT pg_catalog.string_agg(h.rows OPERATOR(pg_catalog.||) ',' OPERATOR(pg_catalog.||) h.hash, ';' ORDER BY h.n) "
							   "FROM %s(%%L::pg_catalog.regclass, bounds => %s::pg_catalog.jsonb) "
							   "WITH ORDINALITY AS h(lo, hi, rows, hash, n)",
							   loc_our_function("acme_migrate_range_hashes"),
							   loc_escape_percent(quote_literal_cstr(bounds_json)));
	List	   *results = loc_on_shards(relid, cmd);
	ListCell   *lc;

	if (results == NIL)
		return false;
	memset(rows, 0, sizeof(int64) * nranges);
	memset(sums, 0, (Size) UUID_LEN * nranges);
	foreach(lc, results)
	{
		char	   *res = lfirst(lc);
		char	   *next = res;
		int			r;

		for (r = 0; r < nranges && next != NULL; r++)
		{
			char	   *part = next;

			next = strchr(part, ';');
			if (next != NULL)
				*next++ = '\0';
			if (!loc_add_figures(part, &rows[r], &sums[UUID_LEN * r]))
				break;
		}
		if (r < nranges || next != NULL)
			elog(ERROR, "unexpected range hashes of a shard of \"%s\"",
				 get_rel_name(relid));
	}
	return true;
}

/*
 * The Citus pushdown path of a batch.
 *
 * Between two co-located hash-distributed tables whose distribution columns
 * the job's mapping copies one to the other, an INSERT ... SELECT without
 * LIMIT or ORDER BY is pushed down by Citus to the worker holding each pair
 * of shards, every pair in parallel, the rows never leaving their worker.
 * A batch is then a key range holding about batch_size rows in each shard
 * (so batch_size times the shard count in all), copied by one such
 * statement.  Its checkpoint, the range's upper bound, is written by the
 * caller on this node in the same transaction, which Citus commits on the
 * workers and here with two-phase commit: exactly once.  The ranges' bounds
 * are sampled keys (a WHERE random() < f scan, itself pushed down), taken
 * once per mapping.
 */
typedef struct LocPushdown
{
	const char *why_not;		/* NULL: the path applies */
	char	   *insert_sql[2][2];	/* [lower bound][upper bound] */
	char	   *plain_sql[2][2];	/* the same without ON CONFLICT */
	int			upsert_left;	/* batches to run with ON CONFLICT */
	char	   *sample_sql[2];	/* [lower bound] */
	int			nshards;
	int			nsamples;		/* -1: not sampled yet */
	Datum	  **samples;		/* sampled keys, ascending */
	double		fraction;		/* of the source's pages they come from */
} LocPushdown;

/*
 * "sql" without its suffix " ORDER BY s.k1, ... LIMIT $n" (as mapping.c
 * ends the keyset queries), or NULL when it does not end so.
 */
static char *
loc_strip_order_limit(AmMapping *map, const char *sql)
{
	StringInfoData suffix;
	size_t		len = strlen(sql);

	initStringInfo(&suffix);
	appendStringInfoString(&suffix, " ORDER BY ");
	for (int i = 0; i < map->nkeys; i++)
		appendStringInfo(&suffix, "%ss.%s", i > 0 ? ", " : "",
						 quote_identifier(map->key_names[i]));
	appendStringInfo(&suffix, " LIMIT $%d", 2 * map->nkeys + 1);
	if (len < suffix.len || strcmp(sql + len - suffix.len, suffix.data) != 0)
		return NULL;
	return pnstrdup(sql, len - suffix.len);
}

/*
 * The pushdown INSERT of one [lo][hi] variant, made from the SQL path's
 * statement (mapping.c): "WITH b AS MATERIALIZED (<select>), w AS (INSERT
 * ... SELECT b.c1, ... FROM b ...  RETURNING 1) SELECT ..." becomes
 * "INSERT ... SELECT b.c1, ... FROM (<select without ORDER BY and LIMIT>)
 * AS b ...", conflict clause and all (*plain: without it).  NULL if the
 * text is not as expected.
 */
static char *
loc_pushdown_insert(AmMapping *map, int lo, int hi, char **plain)
{
	const char *sel = map->select_sql[lo][hi];
	const char *ins = map->insert_sql[lo][hi];
	char	   *body = loc_strip_order_limit(map, sel);
	char	   *head = psprintf("WITH b AS MATERIALIZED (%s), w AS (", sel);
	StringInfoData cols;
	StringInfoData out;
	const char *from;
	const char *end;

	initStringInfo(&cols);
	for (int i = 0; i < map->nmapped; i++)
		appendStringInfo(&cols, "%sb.c%d", i > 0 ? ", " : "", i + 1);
	appendStringInfoString(&cols, " FROM b");
	if (body == NULL || strncmp(ins, head, strlen(head)) != 0)
		return NULL;
	ins += strlen(head);
	from = strstr(ins, cols.data);
	end = strstr(ins, " RETURNING 1) SELECT ");
	if (from == NULL || end == NULL || end < from)
		return NULL;
	from += cols.len - strlen(" FROM b");

	initStringInfo(&out);
	appendBinaryStringInfo(&out, ins, from - ins);
	appendStringInfo(&out, " FROM (%s) AS b", body);
	*plain = pstrdup(out.data);
	appendBinaryStringInfo(&out, from + strlen(" FROM b"),
						   end - (from + strlen(" FROM b")));
	return out.data;
}

/* "1, 2, ..., n" */
static char *
loc_positions(int n)
{
	StringInfoData buf;

	initStringInfo(&buf);
	for (int i = 1; i <= n; i++)
		appendStringInfo(&buf, "%s%d", i > 1 ? ", " : "", i);
	return buf.data;
}

/*
 * The sample of the source's keys after $1... from the keyset query sql
 * ("SELECT <keys> FROM <source> AS s WHERE ... ORDER BY ... LIMIT $n"),
 * fraction $n+1 of the source's pages (TABLESAMPLE SYSTEM, which Citus
 * pushes down to every shard): a page read at random instead of the whole
 * source, which costs as much as a tenth of the copy.  The keys are split
 * points only, so any sample makes ranges that cover every key.  NULL when
 * sql is not of that form.
 */
static char *
loc_sample_sql(AmMapping *map, const char *sql)
{
	char	   *body = loc_strip_order_limit(map, sql);
	char	   *from = psprintf(" FROM %s AS s WHERE ",
								quote_qualified_identifier(get_namespace_name(get_rel_namespace(map->source_relid)),
														   get_rel_name(map->source_relid)));
	char	   *at = body ? strstr(body, from) : NULL;

	if (at == NULL)
		return NULL;
	at += strlen(from) - strlen("WHERE ");
	return psprintf("SELECT * FROM (%.*sTABLESAMPLE SYSTEM ((($%d) OPERATOR(pg_catalog.*) 100)::pg_catalog.float4) %s) AS x ORDER BY %s",
					(int) (at - body), body, 2 * map->nkeys + 2, at,
					loc_positions(map->nkeys));
}

/*
 * Does the Citus pushdown apply to the job?  NULL if so, else why not.
 * Needs: both tables hash-distributed and co-located, the target's
 * distribution column filled from the source's unchanged, a unique key,
 * no row-by-row rejects, and SQL of the expected form.
 */
static const char *
loc_pushdown_check(AmJob *job, AmMapping *map, LocPushdown *pd)
{
	Oid			argtypes[2] = {REGCLASSOID, REGCLASSOID};
	Datum		args[2];
	int			rc;
	bool		isnull;
	char	   *scol;
	char	   *tcol;
	ListCell   *lt;
	ListCell   *le;
	bool		mapped = false;

	/* these strings and the SQL below live as long as the mapping */
	MemoryContextSwitchTo(GetMemoryChunkContext(map));
	if (locality_citus_method(map->source_relid) != 'h' ||
		locality_citus_method(map->target_relid) != 'h')
		return "source and target are not both hash-distributed Citus tables";
	if (job->reject || !job->key_is_unique)
		return "on_error 'reject' and keys without a unique index copy row by row";

	args[0] = ObjectIdGetDatum(map->source_relid);
	args[1] = ObjectIdGetDatum(map->target_relid);
	rc = SPI_execute_with_args("SELECT pg_catalog.column_to_column_name(s.logicalrelid, s.partkey), "
							   "pg_catalog.column_to_column_name(t.logicalrelid, t.partkey), "
							   "(SELECT pg_catalog.count(*)::pg_catalog.int4 FROM pg_catalog.pg_dist_shard d "
							   "WHERE d.logicalrelid OPERATOR(pg_catalog.=) s.logicalrelid) "
							   "FROM pg_catalog.pg_dist_partition s, pg_catalog.pg_dist_partition t "
							   "WHERE s.logicalrelid OPERATOR(pg_catalog.=) $1 "
							   "AND t.logicalrelid OPERATOR(pg_catalog.=) $2 "
							   "AND s.colocationid OPERATOR(pg_catalog.=) t.colocationid",
							   2, argtypes, args, NULL, true, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not read pg_dist_partition: %s",
			 SPI_result_code_string(rc));
	/* SPI left us in its own context: what follows lives with the mapping */
	MemoryContextSwitchTo(GetMemoryChunkContext(map));
	if (SPI_processed != 1)
		return "source and target are not co-located";
	scol = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	tcol = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
	pd->nshards = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0],
											  SPI_tuptable->tupdesc, 3, &isnull));
	forboth(lt, job->map_targets, le, job->map_exprs)
		if (strcmp(lfirst(lt), tcol) == 0 &&
			mapping_expr_is_column(lfirst(le), scol))
			mapped = true;
	if (!mapped)
		return psprintf("the target's distribution column \"%s\" is not the source's \"%s\" unchanged",
						tcol, scol);

	for (int lo = 0; lo < 2; lo++)
	{
		for (int hi = 0; hi < 2; hi++)
			if ((pd->insert_sql[lo][hi] =
				 loc_pushdown_insert(map, lo, hi, &pd->plain_sql[lo][hi])) == NULL)
				return "the batch SQL is not of the expected form";
		pd->sample_sql[lo] = loc_sample_sql(map, map->keys_sql[lo][0]);
		if (pd->sample_sql[lo] == NULL)
			return "the batch SQL is not of the expected form";
	}
	return NULL;
}

/* the pushdown state of a mapping, checked on first use */
static LocPushdown *
loc_pushdown(AmJob *job, AmMapping *map)
{
	LocPushdown *pd = (LocPushdown *) map->locality_cache;
	MemoryContext old;

	if (pd != NULL)
		return pd;
	old = CurrentMemoryContext;
	pd = MemoryContextAllocZero(GetMemoryChunkContext(map), sizeof(LocPushdown));
	pd->nsamples = -1;
	pd->why_not = loc_pushdown_check(job, map, pd);
	MemoryContextSwitchTo(old);
	if (pd->why_not == NULL)
		elog(DEBUG1, "job \"%s\" copies key ranges by INSERT ... SELECT pushed down to %d shard pairs",
			 job->job_name, pd->nshards);
	else if (locality_citus_method(map->target_relid) != '\0')
		elog(DEBUG1, "job \"%s\" writes into a Citus table through Citus, batch by batch: %s",
			 job->job_name, pd->why_not);
	map->locality_cache = pd;
	return pd;
}

/*
 * The SQL sampling the job's keys after $1... ($lo..., $hi..., $limit,
 * $fraction: the hi and limit unused) in key order, for splitting a job
 * into ranges, when the Citus pushdown applies: each shard samples its own
 * rows instead of sending every key to this node.  NULL otherwise.  Then
 * *fraction, the share of the source's pages to sample, is at most what a
 * batch's range samples (LOC_SAMPLE_PER_RANGE keys per batch_size rows in
 * each shard): the caller's fraction comes from the job's row estimate,
 * which for a Citus table is Citus's placeholder of 100,000 rows (measured:
 * 16% of the pages of a 2M-row table, half a second of
 * acme_migrate_start).
 */
#define LOC_SAMPLE_PER_RANGE	1600.0

char *
locality_sample_sql(AmJob *job, AmMapping *map, bool lo, double *fraction)
{
	LocPushdown *pd = loc_pushdown(job, map);
	double		per_range = (double) job->batch_size * Max(pd->nshards, 1);

	if (pd->why_not)
		return NULL;
	*fraction = Min(*fraction, Min(1.0, LOC_SAMPLE_PER_RANGE / Max(per_range, 1.0)));
	return pd->sample_sql[lo];
}

/* parameters of the keyset SQL: $lo..., $hi..., $limit, $fraction */
static void
loc_params(AmMapping *map, Datum *lo, Datum *hi, double fraction,
		   Oid *types, Datum *values, char *nulls)
{
	int			n = map->nkeys;

	for (int i = 0; i < n; i++)
	{
		types[i] = types[n + i] = map->key_types[i];
		values[i] = lo ? lo[i] : (Datum) 0;
		nulls[i] = lo ? ' ' : 'n';
		values[n + i] = hi ? hi[i] : (Datum) 0;
		nulls[n + i] = hi ? ' ' : 'n';
	}
	types[2 * n] = INT8OID;
	values[2 * n] = Int64GetDatum(PG_INT64_MAX);
	nulls[2 * n] = ' ';
	types[2 * n + 1] = FLOAT8OID;
	values[2 * n + 1] = Float8GetDatum(fraction);
	nulls[2 * n + 1] = ' ';
}

/*
 * Sample the keys after lo, once per mapping: the split points of its
 * ranges.  The sample takes whole pages: enough of them that a range's
 * bound falls about where it should even when keys come in runs on a page
 * (a range of fewer rows than that reads every page).  Each sampled key
 * stands for 1 / fraction rows.
 */
static void
loc_sample(AmMapping *map, LocPushdown *pd, Datum *lo, int32 batch_size)
{
	int			n = 2 * map->nkeys + 2;
	double		per_range = (double) batch_size * Max(pd->nshards, 1);
	Oid		   *types = palloc(sizeof(Oid) * n);
	Datum	   *values = palloc(sizeof(Datum) * n);
	char	   *nulls = palloc(n);
	MemoryContext old;
	int			rc;

	pd->fraction = Min(1.0, LOC_SAMPLE_PER_RANGE / Max(per_range, 1.0));
	loc_params(map, lo, NULL, pd->fraction, types, values, nulls);
	rc = SPI_execute_with_args(pd->sample_sql[lo != NULL], n, types, values,
							   nulls, true, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not sample the source's keys: %s",
			 SPI_result_code_string(rc));

	old = MemoryContextSwitchTo(GetMemoryChunkContext(map));
	pd->samples = palloc(sizeof(Datum *) * Max(SPI_processed, 1));
	pd->nsamples = 0;
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		Datum	   *key = palloc(sizeof(Datum) * map->nkeys);

		for (int k = 0; k < map->nkeys; k++)
		{
			bool		isnull;
			Datum		d = SPI_getbinval(SPI_tuptable->vals[r],
										  SPI_tuptable->tupdesc, k + 1, &isnull);

			if (isnull)
				elog(ERROR, "sampled key is null");
			key[k] = datumCopy(d, map->key_byval[k], map->key_typlen[k]);
		}
		pd->samples[pd->nsamples++] = key;
	}
	MemoryContextSwitchTo(old);
	SPI_freetuptable(SPI_tuptable);
}

/* the index of the first sampled key above key (nsamples if none; 0 for NULL) */
static int
loc_sample_after(AmMapping *map, LocPushdown *pd, Datum *key)
{
	int			lo = 0;
	int			hi = pd->nsamples;

	if (key == NULL)
		return 0;
	while (lo < hi)
	{
		int			mid = lo + (hi - lo) / 2;

		if (batch_key_compare(map, pd->samples[mid], key) > 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return lo;
}

/*
 * The upper bound of the range after lo (up to hi, NULL: the end): the
 * sampled key that leaves about batch_size rows per shard in the range
 * (batch_size as the driver has it now: adapted to batch_time_target, if
 * the job has one), or hi (NULL: the end) when fewer than half as many
 * would be left after it: a range's fixed costs (a distributed two-phase
 * commit, a task per shard pair) are not paid again for a short tail.
 */
static Datum *
loc_range_upper(AmMapping *map, LocPushdown *pd, Datum *lo, Datum *hi,
				int32 batch_size)
{
	double		per_range = (double) batch_size * Max(pd->nshards, 1);
	int			step = (int) Max(1.0, rint(per_range * pd->fraction));
	int			first = loc_sample_after(map, pd, lo);
	int			end = hi ? loc_sample_after(map, pd, hi) : pd->nsamples;
	int			at = first + step - 1;

	if (at >= end || end - at - 1 < (step + 1) / 2)
		return hi;
	return pd->samples[at];
}

/* run one of the pushdown statements; returns the rows it wrote */
static int64
loc_execute(const char *sql, int n, Oid *types, Datum *values, char *nulls)
{
	int			rc = SPI_execute_with_args(sql, n, types, values, nulls,
										   false, 0);

	/* Citus may run the statement as a rewritten one: SPI_OK_REWRITTEN */
	if (rc != SPI_OK_INSERT && rc != SPI_OK_REWRITTEN)
		elog(ERROR, "pushed-down INSERT failed: %s",
			 SPI_result_code_string(rc));
	return (int64) SPI_processed;
}

/*
 * Write a range: with a plain INSERT first, as the direct writer does (ON
 * CONFLICT DO UPDATE costs about 1.7 times as much per row), inside a
 * subtransaction; if the target already holds some of the keys, the range
 * again with the job's ON CONFLICT, and so the next 16 ranges.
 */
static int64
loc_insert(AmJob *job, LocPushdown *pd, int lo, int hi, int n, Oid *types,
		   Datum *values, char *nulls)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	volatile int64 rows = -1;

	if (job->on_conflict == AM_CONFLICT_ERROR || pd->upsert_left > 0)
	{
		pd->upsert_left = Max(pd->upsert_left - 1, 0);
		return loc_execute(pd->insert_sql[lo][hi], n, types, values, nulls);
	}
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcxt);
	PG_TRY();
	{
		rows = loc_execute(pd->plain_sql[lo][hi], n, types, values, nulls);
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
		if (edata->sqlerrcode != ERRCODE_UNIQUE_VIOLATION)
			ReThrowError(edata);
		FreeErrorData(edata);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(oldcxt);
	CurrentResourceOwner = oldowner;
	if (rows >= 0)
		return rows;
	pd->upsert_left = 16;
	return loc_execute(pd->insert_sql[lo][hi], n, types, values, nulls);
}

/*
 * citus.max_cached_conns_per_worker as it was before a job raised it for
 * this session (in TopMemoryContext), or NULL when it is not raised.
 */
static char *loc_cached_saved = NULL;

/* set a Citus setting for the session (action SET) or this transaction */
static void
loc_set_citus(const char *name, const char *value, GucAction action)
{
	(void) set_config_option(name, value, PGC_USERSET, PGC_S_SESSION,
							 action, true, 0, false);
}

/*
 * The connections of a range.  Citus runs a pushed-down INSERT ... SELECT
 * over up to citus.max_adaptive_executor_pool_size connections per worker
 * node.  The background workers of a job (acme_migrate_start) share that
 * pool: each takes its part of it, so that k of them keep the worker nodes
 * as busy as one statement does, not k times busier (for this
 * transaction: Citus reads it as it runs the statement).  And at the end
 * of the transaction Citus closes all but citus.max_cached_conns_per_worker
 * (1) of them: every range would connect again, and meet cold caches in
 * the new backends on the worker nodes (measured: 15 new backends per
 * worker node and range, a job 1.3-1.5 times as long as with them kept).
 * So the cache is raised to the pool for the session, from the job's
 * first range until locality_release_connections (the driver's last
 * commit: the end of the job, or of the call or worker turn that runs
 * it): not for the transaction only, since a SET LOCAL is undone before
 * Citus looks at it at commit (tried in psql: SET LOCAL kept one
 * connection, SET all of them).  If the transaction aborts, PostgreSQL
 * undoes the raise itself; if it commits, the session keeps it until
 * released.
 */
static void
loc_connections(AmJob *job)
{
	const char *value;
	int			mine;
	char	   *cached;

	/* GetConfigOption returns an integer's text in a static buffer */
	value = GetConfigOption("citus.max_adaptive_executor_pool_size", true,
							false);
	if (value == NULL)
		return;
	mine = atoi(value);
	value = GetConfigOption("citus.max_cached_conns_per_worker", true, false);
	if (value == NULL)
		return;
	cached = pstrdup(value);
	if (IsBackgroundWorker && job->workers > 1 && mine > 1)
	{
		mine = Max(mine / job->workers, 1);
		loc_set_citus("citus.max_adaptive_executor_pool_size",
					  psprintf("%d", mine), GUC_ACTION_LOCAL);
	}
	if (atoi(cached) >= mine)
		return;
	if (loc_cached_saved == NULL)
		loc_cached_saved = MemoryContextStrdup(TopMemoryContext, cached);
	loc_set_citus("citus.max_cached_conns_per_worker", psprintf("%d", mine),
				  GUC_ACTION_SET);
}

/*
 * Give citus.max_cached_conns_per_worker back its value from before the
 * job's ranges raised it (its default again if it had its default), in the
 * transaction that ends the job's run in this session: at its commit Citus
 * closes the connections the job kept.  Called by the driver with its last
 * commit; a no-op when nothing was raised.
 */
void
locality_release_connections(void)
{
	char	   *saved = loc_cached_saved;
	const char *reset;

	if (saved == NULL)
		return;
	loc_cached_saved = NULL;
	reset = GetConfigOptionResetString("citus.max_cached_conns_per_worker");
	loc_set_citus("citus.max_cached_conns_per_worker",
				  reset && strcmp(reset, saved) == 0 ? NULL : saved,
				  GUC_ACTION_SET);
	pfree(saved);
}

/*
 * One batch of a job on the Citus pushdown path, if it applies (else false
 * and nothing done): the rows after lo up to the next sampled bound (or up
 * to hi, a range's end, whichever comes first) copied by one INSERT ...
 * SELECT that Citus pushes down to every pair of co-located shards.  In the
 * caller's SPI connection, as the job's owner.  *rows: rows written;
 * *last_key: the batch's upper bound (NULL when it ran to the end after no
 * lower bound); *at_end: the batch reached hi (or the end of the keys).
 */
bool
locality_copy_range(AmJob *job, AmMapping *map, List *lo, List *hi,
					int32 batch_size, int64 *rows, Datum **last_key,
					bool *at_end)
{
	LocPushdown *pd = loc_pushdown(job, map);
	Datum	   *lod;
	Datum	   *upper;
	int			n = 2 * map->nkeys + 2;
	Oid		   *types;
	Datum	   *values;
	char	   *nulls;
	Datum	   *next;

	if (pd->why_not != NULL)
		return false;
	lod = lo ? mapping_key_from_text(map, lo) : NULL;
	upper = hi ? mapping_key_from_text(map, hi) : NULL;
	if (pd->nsamples < 0)
		loc_sample(map, pd, lod, batch_size);
	next = loc_range_upper(map, pd, lod, upper, batch_size);
	*at_end = next == upper;
	upper = next;

	loc_connections(job);
	types = palloc(sizeof(Oid) * n);
	values = palloc(sizeof(Datum) * n);
	nulls = palloc(n);
	loc_params(map, lod, upper, 0, types, values, nulls);
	*rows = loc_insert(job, pd, lod != NULL, upper != NULL, n, types, values,
					   nulls);
	*last_key = upper ? upper : lod;
	return true;
}
