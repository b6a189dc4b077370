/*-------------------------------------------------------------------------
 *
 * security.c
 *	  Who runs what: the identity and search_path under which each kind of
 *	  SQL of acme_migrate is executed.
 *
 * Two kinds of statements run as a role other than the caller:
 *
 *	- catalog statements (catalog.c) run as the owner of the catalog, so
 *	  that users cannot edit checkpoints by hand.  They are our own fixed
 *	  SQL, but PostgreSQL still resolves their type, function and operator
 *	  names through search_path, and a temporary schema comes first unless
 *	  placed otherwise: a user's pg_temp.text domain with a CHECK calling a
 *	  function of theirs would run as the catalog owner.  So search_path is
 *	  pinned to "pg_catalog, pg_temp" for them, and they qualify every name
 *	  anyway.
 *
 *	- a job's user-written SQL (mapping, filter, key sampling, reconcile,
 *	  catch-up) runs as the job's owner, whoever calls it, with
 *	  SECURITY_RESTRICTED_OPERATION, as REFRESH MATERIALIZED VIEW and
 *	  autovacuum's index expressions do: the caller needs the right to
 *	  manage the job and gains nothing more, and the owner's code cannot
 *	  leave anything behind (no temporary objects, no SET ROLE, no
 *	  session-level settings).  The job's SQL is resolved with the
 *	  search_path its creator had, saved with the job, so that it means
 *	  the same thing whoever runs it.
 *
 * Both are undone by transaction and subtransaction abort (which restore
 * the user id and the GUC nest level), so an error in between leaks
 * nothing.
 *
 *-------------------------------------------------------------------------
 */
#include "acme_migrate.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/indexing.h"
#include "catalog/pg_extension.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/syscache.h"

/* what catalog statements and our own fixed SQL resolve names with */
#define AM_SAFE_SEARCH_PATH "pg_catalog, pg_temp"

/* the search_path of a job created before 1.1 saved its creator's */
#define AM_DEFAULT_SEARCH_PATH "\"$user\", public"

/*
 * Pin search_path for our own SQL; returns the GUC nest level to give to
 * am_unpin_search_path().
 */
int
am_pin_search_path(void)
{
	int			nest = NewGUCNestLevel();

	(void) set_config_option("search_path", AM_SAFE_SEARCH_PATH,
							 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
							 true, 0, false);
	return nest;
}

void
am_unpin_search_path(int nest)
{
	AtEOXact_GUC(true, nest);
}

/*
 * The job's owner must still exist: a role dropped after it created a job
 * has no privileges left to run it with, and its OID may one day name
 * another role.  (DROP ROLE cannot see the jobs a role owns.)
 */
void
am_check_owner_exists(AmJob *job)
{
	if (!SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(job->owner)))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("the owner of job \"%s\" no longer exists", job->job_name),
				 errdetail("The role with OID %u that created the job was dropped; a job runs only as its owner.",
						   job->owner),
				 errhint("Drop the job with acme_migrate_drop() and create it again as another role.")));
}

/*
 * Become the job's owner, restricted, with the job's search_path, until
 * am_end_as_owner().  The caller has checked that it may manage the job.
 */
void
am_begin_as_owner(AmJob *job, AmOwnerContext *cxt)
{
	const char *path;

	am_check_owner_exists(job);
	GetUserIdAndSecContext(&cxt->save_userid, &cxt->save_sec_context);
	SetUserIdAndSecContext(job->owner,
						   cxt->save_sec_context |
						   SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	cxt->nest = NewGUCNestLevel();

	/*
	 * The caller's temporary schema comes last, not first as it would
	 * unless named: a name in the job's SQL never resolves to a temporary
	 * object of whoever happens to run the job.
	 */
	path = job->search_path ? job->search_path : AM_DEFAULT_SEARCH_PATH;
	if (strstr(path, "pg_temp") == NULL)
		path = psprintf("%s%spg_temp", path, path[0] ? ", " : "");
	(void) set_config_option("search_path", path,
							 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
							 true, 0, false);
}

/*
 * am_begin_as_owner() to write into relid: first its deferrable foreign
 * keys are made IMMEDIATE (fk.c), since a deferred trigger cannot be
 * queued inside the security-restricted operation that follows.  Every
 * writer of a job's rows (batch, catch-up, cut-over, rollback) starts so.
 */
void
am_begin_writing_as_owner(AmJob *job, Oid relid, AmOwnerContext *cxt)
{
	fk_set_immediate(relid);
	am_begin_as_owner(job, cxt);
}

void
am_end_as_owner(AmOwnerContext *cxt)
{
	AtEOXact_GUC(true, cxt->nest);
	SetUserIdAndSecContext(cxt->save_userid, cxt->save_sec_context);
}

/*
 * acme_migrate's row of pg_extension in this database: its version (NULL
 * when not installed, or unknown) and its schema (InvalidOid), each when
 * asked for.
 */
static void
am_extension_row(char **version, Oid *nsp)
{
	Relation	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;

	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber,
				F_NAMEEQ, CStringGetDatum("acme_migrate"));
	scan = systable_beginscan(rel, ExtensionNameIndexId, true, NULL, 1, &key);
	tup = systable_getnext(scan);
	if (HeapTupleIsValid(tup) && version != NULL)
	{
		bool		isnull;
		Datum		d = heap_getattr(tup, Anum_pg_extension_extversion,
									 RelationGetDescr(rel), &isnull);

		if (!isnull)
			*version = TextDatumGetCString(d);
	}
	if (HeapTupleIsValid(tup) && nsp != NULL)
		*nsp = ((Form_pg_extension) GETSTRUCT(tup))->extnamespace;
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
}

/*
 * The library is 1.1; a database whose extension is still at 1.0 (the new
 * library installed, ALTER EXTENSION ... UPDATE not run yet) has a catalog
 * it cannot write.  Say so clearly instead of failing on a missing column.
 * Only a good answer is remembered: the update may come later.
 */
void
am_check_catalog_version(void)
{
	static bool checked = false;
	char	   *version = NULL;

	if (checked)
		return;
	am_extension_row(&version, NULL);
	if (version != NULL && strcmp(version, "1.0") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension \"acme_migrate\" must be updated to version 1.1 in this database"),
				 errdetail("The installed library is version 1.1; the catalog of this database is still at version 1.0."),
				 errhint("Run ALTER EXTENSION acme_migrate UPDATE; jobs keep their state across the update.")));
	checked = version != NULL;
}

/*
 * The schema acme_migrate was created in, quoted: our own SQL functions
 * called from generated SQL are qualified with it.  (get_extension_schema
 * is static before PostgreSQL 16.)
 */
const char *
am_extension_schema(void)
{
	static char *schema = NULL;
	Oid			nsp = InvalidOid;

	if (schema != NULL)
		return schema;
	am_extension_row(NULL, &nsp);
	if (!OidIsValid(nsp))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("extension \"acme_migrate\" is not installed in this database")));
	schema = MemoryContextStrdup(TopMemoryContext,
								 quote_identifier(get_namespace_name(nsp)));
	return schema;
}
