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

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "catalog/namespace.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
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
 * Is acme_migrate installed on every node holding a shard of relid?
 * Asked of Citus itself: run_command_on_shards returns one row per shard.
 */
static bool
locality_shards_have_us(Oid relid)
{
	Datum		arg = ObjectIdGetDatum(relid);
	Oid			argtype = REGCLASSOID;
	int			rc;
	bool		isnull;

	rc = SPI_execute_with_args("SELECT pg_catalog.bool_and(success AND result OPERATOR(pg_catalog.=) 't') "
							   "FROM pg_catalog.run_command_on_shards($1, "
							   "'SELECT pg_catalog.count(*) OPERATOR(pg_catalog.>) 0 FROM pg_catalog.pg_extension "
							   "WHERE extname OPERATOR(pg_catalog.=) ''acme_migrate''')",
							   1, &argtype, &arg, NULL, true, 0);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		return false;
	return DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
									  SPI_tuptable->tupdesc, 1, &isnull)) &&
		!isnull;
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
	char	   *fn;
	Datum		args[2];
	Oid			argtypes[2] = {REGCLASSOID, TEXTOID};
	int			rc;
	int			nest;

	if (locality_citus_method(relid) != 'h' ||
		!OidIsValid(get_extension_oid("citus", true)))
		return false;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	nest = am_pin_search_path();
	if (!locality_shards_have_us(relid))
	{
		am_unpin_search_path(nest);
		SPI_finish();
		return false;
	}

	/* %s is the shard's name, filled in by run_command_on_shards */
	fn = quote_qualified_identifier(am_extension_schema(), "acme_migrate_table_hash");
	args[0] = ObjectIdGetDatum(relid);
	args[1] = CStringGetTextDatum(psprintf("SELECT h.row_count OPERATOR(pg_catalog.||) ',' OPERATOR(pg_catalog.||) h.hash FROM %s(%%L::pg_catalog.regclass) AS h",
										   fn));
	rc = SPI_execute_with_args("SELECT success, result FROM pg_catalog.run_command_on_shards($1, $2)",
							   2, argtypes, args, NULL, true, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "run_command_on_shards failed: %s",
			 SPI_result_code_string(rc));

	*row_count = 0;
	memset(result, 0, UUID_LEN);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		bool		isnull;
		bool		ok = DatumGetBool(SPI_getbinval(tup, SPI_tuptable->tupdesc,
													1, &isnull));
		char	   *res = SPI_getvalue(tup, SPI_tuptable->tupdesc, 2);
		char	   *comma = res ? strchr(res, ',') : NULL;
		pg_uuid_t  *u;

		if (!ok || comma == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_EXCEPTION),
					 errmsg("could not hash a shard of \"%s\"", get_rel_name(relid)),
					 errdetail_internal("%s", res ? res : "no result")));
		*comma = '\0';
		*row_count += pg_strtoint64(res);
		u = DatumGetUUIDP(DirectFunctionCall1(uuid_in, CStringGetDatum(comma + 1)));
		locality_add128(result, u->data);
	}
	am_unpin_search_path(nest);
	SPI_finish();
	return true;
}
