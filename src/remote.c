/*-------------------------------------------------------------------------
 *
 * remote.c
 *	  Reconcile a job whose source is a postgres_fdw foreign table without
 *	  dragging every row across the network.
 *
 * The target's key span is cut into ranges by its own keys.  Both sides
 * compute, per range, the number of rows and the sums of their row hashes:
 * the target here through SPI, the source on its own server over libpq.
 * Ranges whose figures agree are equal; only the ranges that differ are
 * cut again (a few rounds), and the smallest ranges that still differ are
 * handed back to reconcile.c's merge, which reads them through the
 * foreign table (postgres_fdw sends the key bounds to the remote server)
 * and lists every difference exactly as for a local source.
 *
 * Two modes, recorded in reconcile_runs.remote_mode:
 *
 *	remote_hashes	the foreign server names acme_migrate in its
 *					"extensions" option and has it installed at our
 *					version: a row hashes to acme_migrate_row_hash(ROW(key,
 *					columns...)) on both servers, the stored representation
 *					of each value, independent of session settings;
 *	pushdown		otherwise (an old server, PostgreSQL 12 say): a row
 *					hashes to hashtextextended(ROW(key, columns...)::text)
 *					with seeds 0 and 1 (two 64-bit hashes; built-in since
 *					PostgreSQL 11), with the settings that shape text
 *					output fixed to the same values on both servers;
 *	full_fetch		neither applies (why: a NOTICE and reconcile_runs.
 *					remote_note): the merge reads every row.
 *
 * Why an equal range is really equal.  A range's figures are its row count
 * and the sums, as exact numerics, of the two 64-bit halves of its rows'
 * 128-bit hashes; a row's hash covers the key and every compared column.
 * (Not a cryptographic hash: like hash_ranges in reconcile.c, this guards
 * against accidents, not against rows crafted to collide.)
 * We require (or else fall back to full_fetch): a single key column, the
 * target key unique and NOT NULL, every compared column and the key filled
 * from a foreign table column of the very same type and typmod, which is
 * also the remote column's type (by schema and name); no filter; the same
 * server encoding on both servers; and a key whose order is the same on
 * both servers (a type without collation, or the C collation both sides),
 * so that both servers put a key into the same range; a server of
 * PostgreSQL 11 or later.  remote_hashes also needs no column of an
 * object identifier type (regclass, ...): its row hash is the number,
 * which names different objects on two servers.  Then equal figures
 * mean the same multiset of hashed rows, up to a collision of the 128-bit
 * sums; since the target has at most one row per key, so has the source
 * in that range, and each source row has a target row of identical
 * representation (remote_hashes) or identical text output of every column
 * (pushdown: record output quotes and separates values unambiguously and
 * tells NULL from an empty string).  The foreign table reads a remote
 * value as its text output in postgres_fdw's fixed settings, put through
 * our input function: for the same built-in type that gives back a value
 * with that same text, so the merge would have found the rows equal.  A
 * range whose figures differ proves nothing and is merged.  So the
 * differences listed, and their order (ranges are visited in key order),
 * are those of a merge of everything.  The compare policies other than
 * "text" (value, tolerance, truncate) find equal whatever has the same
 * representation, so an equal range has nothing to list under any.  Where
 * the cuts fall (every n-th target key, or of a sample of the target)
 * changes the work, never the result.
 *
 * Connection.  We run SQL on the remote server with libpq directly, as
 * contrib/dblink does, from the foreign server's options and the user
 * mapping of the current user (the job's owner: reconcile.c runs us as
 * him), with postgres_fdw's rules: a non-superuser must give a password in
 * the mapping and the server must have asked for it.  postgres_fdw itself
 * offers no way to run an arbitrary query (its connection cache is not an
 * API), and a second foreign table per query would be DDL at run time.
 * The remote figures are read in one REPEATABLE READ transaction; the rows
 * of differing ranges come through postgres_fdw's own connection, in
 * another: a write to the source between the two is seen by one and not by
 * the other, as for any comparison of a source being written.
 *
 *-------------------------------------------------------------------------
 */
#include "acme_migrate.h"

#include <libpq-fe.h>

#include "access/relation.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_foreign_table.h"
#include "catalog/pg_type.h"
#include "catalog/namespace.h"
#include "commands/defrem.h"
#include "foreign/foreign.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "storage/latch.h"
#include "utils/uuid.h"
#include "utils/wait_event.h"
#include "nodes/makefuncs.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/pg_locale.h"
#include "utils/syscache.h"
#include "utils/varlena.h"

/* rows per range of the first round, and ranges per range after it */
#define RM_FIRST_RANGE_ROWS	1000
#define RM_MAX_FIRST_RANGES	4096
#define RM_FANOUT			32
/* a differing range of at most this many rows is merged, not cut again */
#define RM_LEAF_ROWS		64
/*
 * A first round over more target rows than this cuts at sampled keys
 * (TABLESAMPLE BERNOULLI, about this many sampled keys per range): exact
 * cuts number every key in order, which cost a third of the whole
 * comparison over 1M rows; any cuts do, the same on both servers.
 */
#define RM_SAMPLE_ABOVE		100000
#define RM_SAMPLE_PER_RANGE	16

/* settings that shape text output, the same on both servers */
static const char *const rm_settings[][2] = {
	{"datestyle", "ISO, YMD"},
	{"intervalstyle", "postgres"},
	{"extra_float_digits", "3"},
	{"timezone", "UTC"},
	{"bytea_output", "hex"},
	{"lc_monetary", "C"},
};

/* one comparison */
typedef struct RmState
{
	AmRemote   *r;
	PGconn	   *conn;
	bool		remote_ext;		/* remote_hashes rather than pushdown */
	char	   *remote_schema;	/* of the remote acme_migrate */
	char	   *remote_table;	/* qualified, quoted, on the remote */
	List	   *remote_cols;	/* remote column names: key, then compared */
	List	   *local_cols;		/* target column names, the same order */
	char	   *key_type;		/* the key's type, qualified, for casts */
	Oid			key_typid;
	FmgrInfo	key_in;
	Oid			key_ioparam;
	char	   *local_sql;		/* figures per range, on the target */
	char	   *remote_sql;		/* the same, on the remote */
	char	   *bounds_sql;		/* every n-th target key of a range */
	char	   *sample_sql;		/* every n-th key of a sample of the target */
} RmState;

/* a range's figures on one side */
typedef struct RmFigures
{
	int64		rows;
	char	   *sums;			/* "sum1/sum2", NULL for an empty range */
} RmFigures;

PG_FUNCTION_INFO_V1(acme_migrate_row_hash_half);

/*
 * acme_migrate.row_hash_half(uuid, half): the first (0) or second (1)
 * eight bytes of a row hash as a bigint, big-endian, for sums in SQL.
 */
Datum
acme_migrate_row_hash_half(PG_FUNCTION_ARGS)
{
	pg_uuid_t  *u = PG_GETARG_UUID_P(0);
	int32		half = PG_GETARG_INT32(1);
	uint64		v = 0;

	if (half != 0 && half != 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("half must be 0 or 1")));
	for (int i = 0; i < 8; i++)
		v = (v << 8) | u->data[half * 8 + i];
	PG_RETURN_INT64((int64) v);
}

/* Is this relation a foreign table? */
bool
remote_is_foreign(Oid relid)
{
	return get_rel_relkind(relid) == RELKIND_FOREIGN_TABLE;
}

static char *
rm_option(List *options, const char *name)
{
	ListCell   *lc;

	foreach(lc, options)
	{
		DefElem    *d = lfirst(lc);

		if (strcmp(d->defname, name) == 0)
			return defGetString(d);
	}
	return NULL;
}

/* Does the foreign server's "extensions" option name acme_migrate? */
static bool
rm_server_lists_us(ForeignServer *server)
{
	char	   *exts = rm_option(server->options, "extensions");
	List	   *names;
	ListCell   *lc;

	if (exts == NULL || !SplitIdentifierString(pstrdup(exts), ',', &names))
		return false;
	foreach(lc, names)
		if (strcmp(lfirst(lc), "acme_migrate") == 0)
			return true;
	return false;
}

/* Is this option one libpq knows (as postgres_fdw's is_libpq_option)? */
static bool
rm_is_libpq_option(PQconninfoOption *defs, const char *name)
{
	for (PQconninfoOption *o = defs; o->keyword != NULL; o++)
		if (strcmp(o->keyword, name) == 0 && strchr(o->dispchar, 'D') == NULL)
			return true;
	return false;
}

/*
 * Connect as postgres_fdw would for the current user: the server's and
 * the user mapping's libpq options.  A non-superuser must give a password
 * and the server must use it (postgres_fdw's check_conn_params and
 * connect_pg_server), unless a superuser set password_required 'false'
 * on the mapping; so no one reaches the remote server as the local
 * server's operating system user.
 */
static PGconn *
rm_connect(ForeignServer *server, UserMapping *um)
{
	PQconninfoOption *defs = PQconndefaults();
	List	   *opts = list_concat(list_copy(server->options), um->options);
	const char **keys = palloc0(sizeof(char *) * (list_length(opts) + 3));
	const char **vals = palloc0(sizeof(char *) * (list_length(opts) + 3));
	char	   *pwreq = rm_option(um->options, "password_required");
	bool		need_password = !superuser_arg(um->userid) &&
		!(pwreq != NULL && !defGetBoolean(makeDefElem("password_required", (Node *) makeString(pwreq), -1)));
	int			n = 0;
	ListCell   *lc;
	PGconn	   *conn;

	if (defs == NULL)
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	foreach(lc, opts)
	{
		DefElem    *d = lfirst(lc);

		if (rm_is_libpq_option(defs, d->defname))
		{
			keys[n] = d->defname;
			vals[n++] = defGetString(d);
		}
	}
	PQconninfoFree(defs);
	keys[n] = "fallback_application_name";
	vals[n++] = "acme_migrate";
	keys[n] = "client_encoding";
	vals[n++] = GetDatabaseEncodingName();

	if (need_password && rm_option(um->options, "password") == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_S_R_E_PROHIBITED_SQL_STATEMENT_ATTEMPTED),
				 errmsg("password is required"),
				 errdetail("Non-superuser must provide a password in the user mapping.")));
	conn = PQconnectdbParams(keys, vals, false);
	if (conn == NULL || PQstatus(conn) != CONNECTION_OK)
	{
		char	   *msg = conn ? pchomp(PQerrorMessage(conn)) : "out of memory";

		PQfinish(conn);
		ereport(ERROR,
				(errcode(ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION),
				 errmsg("could not connect to server \"%s\"", server->servername),
				 errdetail_internal("%s", msg)));
	}
	if (need_password && !PQconnectionUsedPassword(conn))
	{
		PQfinish(conn);
		ereport(ERROR,
				(errcode(ERRCODE_S_R_E_PROHIBITED_SQL_STATEMENT_ATTEMPTED),
				 errmsg("password is required"),
				 errdetail("Non-superuser cannot connect if the server does not request a password."),
				 errhint("Target server's authentication method must be changed or set password_required=false in the user mapping attributes.")));
	}
	return conn;
}

/*
 * Send a statement to the remote server with text parameters; its result
 * is read by rm_result, so that we can work meanwhile.
 */
static void
rm_send(RmState *rs, const char *sql, int nparams, const char **params)
{
	if (!PQsendQueryParams(rs->conn, sql, nparams, NULL, params, NULL, NULL, 0))
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("could not send a query to the source's server: %s",
						pchomp(PQerrorMessage(rs->conn)))));
}

/*
 * The result of the statement sent last, waited for on our latch, so that
 * a cancel or a terminate is served at once (as contrib/dblink and
 * postgres_fdw wait); counted in what we fetched.  Errors carry the
 * remote message.
 */
static PGresult *
rm_result(RmState *rs, const char *sql)
{
	PGresult   *res = NULL;
	PGresult   *last;
	ExecStatusType status;

	for (;;)
	{
		while (PQisBusy(rs->conn))
		{
			(void) WaitLatchOrSocket(MyLatch, WL_LATCH_SET | WL_SOCKET_READABLE |
									 WL_EXIT_ON_PM_DEATH, PQsocket(rs->conn), -1L,
									 PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
			if (!PQconsumeInput(rs->conn))
				break;
		}
		last = PQgetResult(rs->conn);
		if (last == NULL)
			break;
		PQclear(res);
		res = last;
	}
	status = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
	if (status != PGRES_TUPLES_OK && status != PGRES_COMMAND_OK)
	{
		char	   *msg = pchomp(res ? PQresultErrorMessage(res) : PQerrorMessage(rs->conn));

		PQclear(res);
		ereport(ERROR,
				(errcode(ERRCODE_FDW_ERROR),
				 errmsg("could not run a query on the source's server: %s", msg),
				 errdetail_internal("Query: %s", sql)));
	}
	rs->r->remote_rows += PQntuples(res);
	return res;
}

static PGresult *
rm_exec(RmState *rs, const char *sql, int nparams, const char **params)
{
	rm_send(rs, sql, nparams, params);
	return rm_result(rs, sql);
}

/* the first value of a one-row result, palloc'd; NULL for NULL or no row */
static char *
rm_exec_value(RmState *rs, const char *sql, int nparams, const char **params)
{
	PGresult   *res = rm_exec(rs, sql, nparams, params);
	char	   *v = NULL;

	if (PQntuples(res) > 0 && !PQgetisnull(res, 0, 0))
		v = pstrdup(PQgetvalue(res, 0, 0));
	PQclear(res);
	return v;
}

/* the version of acme_migrate installed here */
static char *
rm_local_version(void)
{
	bool		isnull;

	if (SPI_execute("SELECT e.extversion FROM pg_catalog.pg_extension e "
					"WHERE e.extname OPERATOR(pg_catalog.=) 'acme_migrate'",
					true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not read the version of acme_migrate");
	return TextDatumGetCString(SPI_getbinval(SPI_tuptable->vals[0],
											 SPI_tuptable->tupdesc, 1, &isnull));
}

/* Record why no remote mode applies; false for the caller to return. */
static bool
rm_not_applicable(AmRemote *r, const char *why)
{
	r->mode = "full_fetch";
	r->why = pstrdup(why);
	ereport(NOTICE,
			(errmsg("reconcile reads every row of the foreign table \"%s\"",
					get_rel_name(r->map->source_relid)),
			 errdetail("%s", why)));
	return false;
}

/* a target column's type, typmod and collation */
static void
rm_target_type(Oid relid, const char *col, Oid *type, int32 *typmod, Oid *coll)
{
	get_atttypetypmodcoll(relid, get_attnum(relid, col), type, typmod, coll);
}

/* the attribute of the foreign table that a mapping expression names */
static Form_pg_attribute
rm_source_column(Relation src, const char *expr)
{
	TupleDesc	desc = RelationGetDescr(src);

	for (int a = 0; a < desc->natts; a++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, a);

		if (!att->attisdropped && mapping_expr_is_column(expr, NameStr(att->attname)))
			return att;
	}
	return NULL;
}

/* the remote name of a foreign table column (its column_name option) */
static char *
rm_remote_column(Oid relid, Form_pg_attribute att)
{
	char	   *name = rm_option(GetForeignColumnOptions(relid, att->attnum),
								 "column_name");

	return name ? name : pstrdup(NameStr(att->attname));
}

/*
 * Check one target column (the key first) is filled from a foreign table
 * column of its very type, and note the remote column's name.  NULL when
 * it is, else why not.
 */
static const char *
rm_add_column(RmState *rs, Relation src, const char *target_col)
{
	AmJob	   *job = rs->r->job;
	Oid			tgt = rs->r->map->target_relid;
	ListCell   *lt;
	ListCell   *le;
	Form_pg_attribute att = NULL;
	Oid			type;
	int32		typmod;
	Oid			coll;

	rm_target_type(tgt, target_col, &type, &typmod, &coll);
	forboth(lt, job->map_targets, le, job->map_exprs)
		if (strcmp(lfirst(lt), target_col) == 0)
			att = rm_source_column(src, lfirst(le));
	if (att == NULL)
		return psprintf("Target column \"%s\" is not a source column as it is.", target_col);
	if (att->atttypid != type || att->atttypmod != typmod)
		return psprintf("Target column \"%s\" has another type than source column \"%s\".",
						target_col, NameStr(att->attname));
	rs->remote_cols = lappend(rs->remote_cols,
							  rm_remote_column(RelationGetRelid(src), att));
	rs->local_cols = lappend(rs->local_cols, pstrdup(target_col));
	return NULL;
}

/*
 * What must hold on this side for a remote mode; NULL when it does, else
 * why not.  Fills the column lists and the remote table's name.
 */
static const char *
rm_check_local(RmState *rs)
{
	AmRemote   *r = rs->r;
	AmMapping  *map = r->map;
	Relation	src;
	ListCell   *lc;
	const char *why = NULL;
	char	   *key = linitial(r->job->target_key_columns);
	Oid			coll;
	int32		typmod;
	char	   *nsp;
	char	   *rel;
	List	   *ftopts;

	if (map->nkeys != 1 || list_length(r->job->target_key_columns) != 1)
		return "The key has more than one column.";
	if (r->job->filter != NULL)
		return "The job has a filter.";
	if (!mapping_key_is_unique(map->target_relid, r->job->target_key_columns))
		return "The target key is not unique and NOT NULL.";
	rm_target_type(map->target_relid, key, &rs->key_typid, &typmod, &coll);
	if (OidIsValid(coll) && !lc_collate_is_c(coll))
		return "The key is ordered by a collation other than \"C\".";

	src = relation_open(map->source_relid, AccessShareLock);
	why = rm_add_column(rs, src, key);
	foreach(lc, r->columns)
		if (why == NULL && strcmp(lfirst(lc), key) != 0)
			why = rm_add_column(rs, src, lfirst(lc));
	relation_close(src, AccessShareLock);
	if (why != NULL)
		return why;

	ftopts = GetForeignTable(map->source_relid)->options;
	nsp = rm_option(ftopts, "schema_name");
	rel = rm_option(ftopts, "table_name");
	rs->remote_table = quote_qualified_identifier(nsp ? nsp : get_namespace_name(get_rel_namespace(map->source_relid)),
												  rel ? rel : get_rel_name(map->source_relid));
	rs->key_type = format_type_extended(rs->key_typid, -1, FORMAT_TYPE_FORCE_QUALIFY);
	return NULL;
}

/*
 * Has a compared column a type whose values are OIDs naming objects
 * (regclass, regtype, ...)?  acme_migrate_row_hash hashes their numbers,
 * which name different objects on two servers; their text (pushdown) is
 * their names.
 */
static bool
rm_has_oid_names(RmState *rs)
{
	ListCell   *lc;

	foreach(lc, rs->local_cols)
	{
		Oid			type;
		int32		typmod;
		Oid			coll;

		rm_target_type(rs->r->map->target_relid, lfirst(lc), &type, &typmod, &coll);
		switch (getBaseType(type))
		{
			case REGPROCOID:
			case REGPROCEDUREOID:
			case REGOPEROID:
			case REGOPERATOROID:
			case REGCLASSOID:
			case REGCOLLATIONOID:
			case REGTYPEOID:
			case REGROLEOID:
			case REGNAMESPACEOID:
			case REGCONFIGOID:
			case REGDICTIONARYOID:
				return true;
			default:
				break;
		}
	}
	return false;
}

/*
 * Set the remote session up: the settings that shape text output, one
 * read-only snapshot.  NULL when the server can take part, else why not.
 */
static const char *
rm_remote_session(RmState *rs)
{
	const char *p[2];
	char	   *v;

	(void) rm_exec_value(rs, "SET search_path = pg_catalog, pg_temp", 0, NULL);
	for (int s = 0; s < lengthof(rm_settings); s++)
	{
		p[0] = rm_settings[s][0];
		p[1] = rm_settings[s][1];
		(void) rm_exec_value(rs, "SELECT pg_catalog.set_config($1, $2, false)", 2, p);
	}
	(void) rm_exec_value(rs, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", 0, NULL);
	v = rm_exec_value(rs, "SELECT pg_catalog.current_setting('server_encoding')", 0, NULL);
	if (v == NULL || strcmp(v, GetDatabaseEncodingName()) != 0)
		return "The source's server has another encoding.";
	/* hashtextextended came with PostgreSQL 11 */
	v = rm_exec_value(rs, "SELECT pg_catalog.current_setting('server_version_num')", 0, NULL);
	if (v == NULL || atoi(v) < 110000)
		return "The source's server is older than PostgreSQL 11.";
	return NULL;
}

/*
 * Is each remote column of its target column's type (schema, name,
 * typmod), and does the key sort in the C collation there?  NULL when so,
 * else why not.
 */
static const char *
rm_check_remote_columns(RmState *rs)
{
	const char *sql =
		"SELECT n.nspname, t.typname, a.atttypmod, "
		"CASE WHEN a.attcollation OPERATOR(pg_catalog.=) 0 THEN 'C' "
		"WHEN c.collname OPERATOR(pg_catalog.=) 'default' THEN "
		"(SELECT d.datcollate FROM pg_catalog.pg_database d "
		" WHERE d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database()) "
		"ELSE c.collcollate END "
		"FROM pg_catalog.pg_attribute a "
		"JOIN pg_catalog.pg_type t ON t.oid OPERATOR(pg_catalog.=) a.atttypid "
		"JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) t.typnamespace "
		"LEFT JOIN pg_catalog.pg_collation c ON c.oid OPERATOR(pg_catalog.=) a.attcollation "
		"WHERE a.attrelid OPERATOR(pg_catalog.=) $1::pg_catalog.regclass "
		"AND a.attname OPERATOR(pg_catalog.=) $2 AND NOT a.attisdropped";
	ListCell   *lc;
	ListCell   *ll;
	int			i = 0;

	forboth(lc, rs->remote_cols, ll, rs->local_cols)
	{
		const char *p[2] = {rs->remote_table, lfirst(lc)};
		Oid			type;
		int32		typmod;
		Oid			coll;
		HeapTuple	tup;
		Form_pg_type typ;
		PGresult   *res;
		bool		same;

		rm_target_type(rs->r->map->target_relid, lfirst(ll), &type, &typmod, &coll);
		tup = SearchSysCache1(TYPEOID, ObjectIdGetDatum(type));
		if (!HeapTupleIsValid(tup))
			elog(ERROR, "cache lookup failed for type %u", type);
		typ = (Form_pg_type) GETSTRUCT(tup);
		res = rm_exec(rs, sql, 2, p);
		same = PQntuples(res) == 1 &&
			strcmp(PQgetvalue(res, 0, 0), get_namespace_name(typ->typnamespace)) == 0 &&
			strcmp(PQgetvalue(res, 0, 1), NameStr(typ->typname)) == 0 &&
			atoi(PQgetvalue(res, 0, 2)) == typmod;
		ReleaseSysCache(tup);
		/* the key's order must not depend on the remote locale */
		if (same && i == 0)
			same = strcmp(PQgetvalue(res, 0, 3), "C") == 0 ||
				strcmp(PQgetvalue(res, 0, 3), "POSIX") == 0;
		PQclear(res);
		if (!same)
			return psprintf("Remote column \"%s\" has another type%s than target column \"%s\".",
							(char *) lfirst(lc), i == 0 ? " or collation" : "",
							(char *) lfirst(ll));
		i++;
	}
	return NULL;
}

/*
 * remote_hashes, rather than pushdown, when the server lists acme_migrate
 * in its extensions option and has it at our version, and no compared
 * column names objects by number; a NOTICE says why not otherwise.
 */
static void
rm_check_remote_ext(RmState *rs)
{
	PGresult   *res;

	if (rm_has_oid_names(rs))
	{
		ereport(NOTICE,
				(errmsg("hashing with built-in functions on the source's server"),
				 errdetail("A compared column has an object identifier type (regclass, ...), whose row hash is its number, which names different objects on two servers.")));
		return;
	}
	res = rm_exec(rs, "SELECT n.nspname, e.extversion, "
				  "pg_catalog.to_regprocedure('acme_migrate.row_hash_half(uuid, integer)') IS NOT NULL "
				  "FROM pg_catalog.pg_extension e "
				  "JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) e.extnamespace "
				  "WHERE e.extname OPERATOR(pg_catalog.=) 'acme_migrate'", 0, NULL);
	if (PQntuples(res) == 1 &&
		strcmp(PQgetvalue(res, 0, 1), rm_local_version()) == 0 &&
		strcmp(PQgetvalue(res, 0, 2), "t") == 0)
	{
		rs->remote_ext = true;
		rs->remote_schema = pstrdup(PQgetvalue(res, 0, 0));
	}
	PQclear(res);
	if (!rs->remote_ext)
		ereport(NOTICE,
				(errmsg("acme_migrate is not installed on the source's server at version %s; hashing with built-in functions there",
						rm_local_version())));
}

/*
 * What must hold on the remote server; NULL when it does, else why not.
 * Sets its session up and decides between remote_hashes and pushdown.
 */
static const char *
rm_check_remote(RmState *rs, bool listed)
{
	const char *why = rm_remote_session(rs);

	if (why == NULL)
		why = rm_check_remote_columns(rs);
	if (why == NULL && listed)
		rm_check_remote_ext(rs);
	return why;
}

/*
 * The figures of the ranges of (lo, hi] ($2, $3: key text, NULL for no
 * bound) cut at the keys of $1 (an array's text): range b holds the keys
 * above the b-th and up to the (b+1)-th of them.  width_bucket counts the
 * cut keys <= k, so a key equal to a cut key moves down one.  The array's
 * cast sits in an uncorrelated subquery, evaluated once; the bounds' casts
 * are folded or evaluated once as index scan keys.  The row's hash and
 * width_bucket are computed once each (OFFSET 0 keeps their subqueries),
 * and the hash is summed as two signed 64-bit halves into exact numerics;
 * no ORDER BY, so that the groups are hashed, not sorted.  The same text runs on both servers:
 * only the table, the columns and the hash expressions differ (hash: of
 * ROW(columns), %s; h1 and h2: of am_h).
 */
static char *
rm_figures_sql(RmState *rs, const char *table, List *cols, const char *hash,
			   const char *h1, const char *h2)
{
	StringInfoData q;
	StringInfoData row;
	const char *k = quote_identifier(linitial(cols));
	char	   *cuts = psprintf("(SELECT $1::pg_catalog.text::%s[])", rs->key_type);
	ListCell   *lc;

	initStringInfo(&row);
	foreach(lc, cols)
		appendStringInfo(&row, "%st.%s", row.len > 0 ? ", " : "",
						 quote_identifier(lfirst(lc)));
	initStringInfo(&q);
	appendStringInfo(&q,
					 "SELECT am_b, pg_catalog.count(*), "
					 "pg_catalog.sum(am_h1)::pg_catalog.text OPERATOR(pg_catalog.||) '/' "
					 "OPERATOR(pg_catalog.||) pg_catalog.sum(am_h2)::pg_catalog.text "
					 "FROM (SELECT CASE WHEN am_w OPERATOR(pg_catalog.>) 0 "
					 "AND %s[am_w] OPERATOR(pg_catalog.=) am_k "
					 "THEN am_w OPERATOR(pg_catalog.-) 1 ELSE am_w END AS am_b, "
					 "%s AS am_h1, %s AS am_h2 "
					 "FROM (SELECT pg_catalog.width_bucket(am_k, %s) AS am_w, am_k, am_h "
					 "FROM (SELECT t.%s AS am_k, ",
					 cuts, h1, h2, cuts, k);
	appendStringInfo(&q, hash, row.data);
	appendStringInfo(&q,
					 " AS am_h FROM %s AS t WHERE "
					 "($2::pg_catalog.text IS NULL OR t.%s OPERATOR(pg_catalog.>) "
					 "$2::pg_catalog.text::%s) AND "
					 "($3::pg_catalog.text IS NULL OR t.%s OPERATOR(pg_catalog.<=) "
					 "$3::pg_catalog.text::%s) OFFSET 0) x OFFSET 0) y) z "
					 "GROUP BY am_b",
					 table, k, rs->key_type, k, rs->key_type);
	return q.data;
}

/* Build the SQL of both sides, and of the cuts taken from the target. */
static void
rm_build_sql(RmState *rs)
{
	const char *tgt = quote_qualified_identifier(get_namespace_name(get_rel_namespace(rs->r->map->target_relid)),
												 get_rel_name(rs->r->map->target_relid));
	const char *k = quote_identifier(linitial(rs->local_cols));

	if (rs->remote_ext)
	{
		/* acme_migrate_row_hash, its halves by acme_migrate.row_hash_half */
		const char *h1 = "acme_migrate.row_hash_half(am_h, 0)";
		const char *h2 = "acme_migrate.row_hash_half(am_h, 1)";

		rs->local_sql = rm_figures_sql(rs, tgt, rs->local_cols,
									   psprintf("%s.acme_migrate_row_hash(ROW(%%s))",
												quote_identifier(am_extension_schema())),
									   h1, h2);
		rs->remote_sql = rm_figures_sql(rs, rs->remote_table, rs->remote_cols,
										psprintf("%s.acme_migrate_row_hash(ROW(%%s))",
												 quote_identifier(rs->remote_schema)),
										h1, h2);
	}
	else
	{
		/*
		 * PostgreSQL 11 and later: the row's text, hashed to 64 bits with
		 * two seeds by hashtextextended (hash_bytes_extended of its bytes:
		 * the default collation is deterministic)
		 */
		const char *text = "ROW(%s)::pg_catalog.text";
		const char *h1 = "pg_catalog.hashtextextended(am_h, 0)";
		const char *h2 = "pg_catalog.hashtextextended(am_h, 1)";

		rs->local_sql = rm_figures_sql(rs, tgt, rs->local_cols, text, h1, h2);
		rs->remote_sql = rm_figures_sql(rs, rs->remote_table, rs->remote_cols,
										text, h1, h2);
	}
	rs->bounds_sql = psprintf("SELECT pg_catalog.array_agg(am_k ORDER BY am_k)::pg_catalog.text, "
							  "pg_catalog.array_agg(am_k::pg_catalog.text ORDER BY am_k) "
							  "FROM (SELECT t.%s AS am_k, pg_catalog.row_number() OVER (ORDER BY t.%s) AS am_rn "
							  "FROM %s AS t WHERE "
							  "($1::pg_catalog.text IS NULL OR t.%s OPERATOR(pg_catalog.>) $1::pg_catalog.text::%s) AND "
							  "($2::pg_catalog.text IS NULL OR t.%s OPERATOR(pg_catalog.<=) $2::pg_catalog.text::%s)) x "
							  "WHERE am_rn OPERATOR(pg_catalog.%%) $3 OPERATOR(pg_catalog.=) 0",
							  k, k, tgt, k, rs->key_type, k, rs->key_type);
	rs->sample_sql = psprintf("SELECT pg_catalog.array_agg(am_k ORDER BY am_k)::pg_catalog.text, "
							  "pg_catalog.array_agg(am_k::pg_catalog.text ORDER BY am_k) "
							  "FROM (SELECT t.%s AS am_k, pg_catalog.row_number() OVER (ORDER BY t.%s) AS am_rn "
							  "FROM %s AS t TABLESAMPLE BERNOULLI ($1::pg_catalog.text::pg_catalog.float8) "
							  "REPEATABLE (0)) x "
							  "WHERE am_rn OPERATOR(pg_catalog.%%) $2 OPERATOR(pg_catalog.=) 0",
							  k, k, tgt);
}

/* SPI with text parameters, NULL for a NULL one */
static void
rm_spi(const char *sql, int n, const char **params, Oid *types)
{
	Datum		values[3];
	char		nulls[3];

	for (int i = 0; i < n; i++)
	{
		nulls[i] = params[i] ? ' ' : 'n';
		values[i] = params[i] ? (types[i] == TEXTOID ? CStringGetTextDatum(params[i]) :
								 Int64GetDatum(*(int64 *) params[i])) : (Datum) 0;
	}
	if (SPI_execute_with_args(sql, n, types, values, nulls, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not run \"%s\"", sql);
}

/*
 * Cut the target's keys in (lo, hi] every step keys, or with sample > 0
 * (the whole table only) every step keys of a sample of that percentage:
 * returns the text of an array of the cut keys, and each cut key's text in
 * *keys.
 */
static char *
rm_cuts(RmState *rs, const char *lo, const char *hi, int64 step,
		double sample, char ***keys, int *ncuts)
{
	Oid			types[3] = {TEXTOID, TEXTOID, INT8OID};
	const char *params[3] = {lo, hi, (const char *) &step};
	char	   *cuts;
	bool		isnull;
	Datum		arr;
	Datum	   *elems;

	if (sample > 0)
	{
		params[0] = psprintf("%.6f", sample);
		params[1] = (const char *) &step;
		types[1] = INT8OID;
		rm_spi(rs->sample_sql, 2, params, types);
	}
	else
		rm_spi(rs->bounds_sql, 3, params, types);
	cuts = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	arr = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	*ncuts = 0;
	if (cuts == NULL)
		return pstrdup("{}");
	deconstruct_array(DatumGetArrayTypeP(arr), TEXTOID, -1, false,
					  TYPALIGN_INT, &elems, NULL, ncuts);
	*keys = palloc(sizeof(char *) * (*ncuts));
	for (int i = 0; i < *ncuts; i++)
		(*keys)[i] = TextDatumGetCString(elems[i]);
	return cuts;
}

/* The figures of each range, from a result's rows (b, rows, sums). */
static void
rm_local_figures(RmState *rs, const char *cuts, const char *lo,
				 const char *hi, RmFigures *f, bool *null_key)
{
	Oid			types[3] = {TEXTOID, TEXTOID, TEXTOID};
	const char *params[3] = {cuts, lo, hi};

	rm_spi(rs->local_sql, 3, params, types);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		Datum		b = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull);

		if (isnull)
		{
			*null_key = true;
			continue;
		}
		f[DatumGetInt32(b)].rows = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i],
															   SPI_tuptable->tupdesc, 2, &isnull));
		f[DatumGetInt32(b)].sums = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 3);
	}
}

/* The same on the remote server: sends the query when f is NULL. */
static void
rm_remote_figures(RmState *rs, const char *cuts, const char *lo,
				  const char *hi, RmFigures *f, bool *null_key)
{
	const char *params[3] = {cuts, lo, hi};
	PGresult   *res;

	if (f == NULL)
	{
		rm_send(rs, rs->remote_sql, 3, params);
		return;
	}
	res = rm_result(rs, rs->remote_sql);

	for (int i = 0; i < PQntuples(res); i++)
	{
		int			b;

		if (PQgetisnull(res, i, 0))
		{
			*null_key = true;
			continue;
		}
		b = atoi(PQgetvalue(res, i, 0));
		f[b].rows = strtoi64(PQgetvalue(res, i, 1), NULL, 10);
		f[b].sums = pstrdup(PQgetvalue(res, i, 2));
	}
	PQclear(res);
}

/* the key text as a value of the key's type; NULL stays NULL */
static Datum *
rm_key_datum(RmState *rs, const char *text)
{
	Datum	   *d;

	if (text == NULL)
		return NULL;
	d = palloc(sizeof(Datum));
	*d = InputFunctionCall(&rs->key_in, (char *) text, rs->key_ioparam, -1);
	return d;
}

/* Merge (lo, hi] through reconcile.c: every difference there is listed. */
static void
rm_merge(RmState *rs, const char *lo, const char *hi, int64 remote_rows)
{
	rs->r->merge(rs->r->merge_arg, rm_key_datum(rs, lo), rm_key_datum(rs, hi));
	rs->r->ranges_merged++;
	rs->r->remote_rows += remote_rows;
}

/*
 * Compare the ranges of (lo, hi] (key text, NULL: unbounded), which holds
 * rows target rows, cut into about fanout ranges by the target's keys.
 * Equal ranges are done; a differing range with few target rows is merged
 * (runs of them as one range), a larger one is cut again.  Each round
 * divides a range's target rows by about fanout, so this ends.  At the top
 * (lo and hi NULL) a NULL key on either side gives up before anything is
 * merged: returns false.
 */
static bool
rm_compare(RmState *rs, const char *lo, const char *hi, int64 rows,
		   int fanout)
{
	bool		sampled = lo == NULL && hi == NULL && rows > RM_SAMPLE_ABOVE;
	int64		step = sampled ? RM_SAMPLE_PER_RANGE :
		Max(1, (rows + fanout - 1) / fanout);
	double		sample = sampled ?
		Min(100.0, 100.0 * fanout * RM_SAMPLE_PER_RANGE / rows) : 0;
	char	  **keys = NULL;
	int			n;
	char	   *cuts = rm_cuts(rs, lo, hi, step, sample, &keys, &n);
	RmFigures  *mine = palloc0(sizeof(RmFigures) * (n + 1));
	RmFigures  *theirs = palloc0(sizeof(RmFigures) * (n + 1));
	bool		null_key = false;
	int			run = -1;		/* first range of a run to merge */
	int64		run_rows = 0;

	/* both servers at once: the remote one works while we do */
	rm_remote_figures(rs, cuts, lo, hi, NULL, NULL);
	rm_local_figures(rs, cuts, lo, hi, mine, &null_key);
	rm_remote_figures(rs, cuts, lo, hi, theirs, &null_key);
	if (null_key)
		return false;
	rs->r->ranges_hashed += n + 1;

	for (int b = 0; b <= n + 1; b++)
	{
		const char *blo = b == 0 ? lo : keys[b - 1];
		bool		same = b <= n && mine[b].rows == theirs[b].rows &&
			(mine[b].rows == 0 ||
			 (mine[b].sums && theirs[b].sums && strcmp(mine[b].sums, theirs[b].sums) == 0));
		bool		leaf = b <= n && !same && mine[b].rows <= RM_LEAF_ROWS;

		CHECK_FOR_INTERRUPTS();
		if (run >= 0 && !leaf)
		{
			/* the run ends: merge (cut run - 1, cut b - 1] */
			rm_merge(rs, run == 0 ? lo : keys[run - 1], b > n ? hi : keys[b - 1],
					 run_rows);
			run = -1;
			run_rows = 0;
		}
		if (b > n)
			break;
		if (same)
			rs->r->equal_rows += mine[b].rows;
		else if (leaf)
		{
			if (run < 0)
				run = b;
			run_rows += theirs[b].rows;
		}
		else
			(void) rm_compare(rs, blo, b == n ? hi : keys[b], mine[b].rows,
							  RM_FANOUT);
	}
	return true;
}

/* Count the target's rows, and compare them all. */
static bool
rm_run(RmState *rs)
{
	char	   *sql = psprintf("SELECT pg_catalog.count(*) FROM %s",
							   quote_qualified_identifier(get_namespace_name(get_rel_namespace(rs->r->map->target_relid)),
														  get_rel_name(rs->r->map->target_relid)));
	bool		isnull;
	int64		rows;
	Oid			infn;

	getTypeInputInfo(rs->key_typid, &infn, &rs->key_ioparam);
	fmgr_info(infn, &rs->key_in);
	if (SPI_execute(sql, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not count the target's rows");
	rows = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
									   SPI_tuptable->tupdesc, 1, &isnull));
	return rm_compare(rs, NULL, NULL, rows,
					  (int) Min(Max(rows / RM_FIRST_RANGE_ROWS, 1), RM_MAX_FIRST_RANGES));
}

/*
 * Compare a foreign source with the target in a remote mode.  Returns
 * true when it did (r->mode says which); false when the source is local
 * (r->mode NULL) or no remote mode applies (r->mode "full_fetch", r->why
 * says why), and the caller compares as usual.  Runs as the job's owner,
 * with the caller's SPI connection and snapshot.
 */
bool
remote_reconcile(AmRemote *r)
{
	RmState		rs;
	Oid			src = r->map->source_relid;
	volatile bool done = false;
	const char *volatile why;
	ForeignServer *server;
	ForeignDataWrapper *fdw;
	UserMapping *um;
	AclResult	aclresult;
	int			nest;

	if (!remote_is_foreign(src))
		return false;
	if (!acme_migrate_remote_hashes)
		return rm_not_applicable(r, "acme_migrate.remote_hashes is off.");
	memset(&rs, 0, sizeof(rs));
	rs.r = r;
	server = GetForeignServer(GetForeignTable(src)->serverid);
	fdw = GetForeignDataWrapper(server->fdwid);
	if (!OidIsValid(fdw->fdwhandler) ||
		strcmp(get_func_name(fdw->fdwhandler), "postgres_fdw_handler") != 0)
		return rm_not_applicable(r, "The foreign table is not a postgres_fdw table.");
	why = rm_check_local(&rs);
	if (why != NULL)
		return rm_not_applicable(r, why);

	/* we read the remote table past the foreign table: check its privilege */
	aclresult = pg_class_aclcheck(src, GetUserId(), ACL_SELECT);
	if (aclresult != ACLCHECK_OK)
		aclcheck_error(aclresult, OBJECT_FOREIGN_TABLE, get_rel_name(src));
	um = GetUserMapping(GetUserId(), server->serverid);

	nest = NewGUCNestLevel();
	for (int s = 0; s < lengthof(rm_settings); s++)
		(void) set_config_option(rm_settings[s][0], rm_settings[s][1],
								 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
								 true, 0, false);
	rs.conn = rm_connect(server, um);
	PG_TRY();
	{
		why = rm_check_remote(&rs, rm_server_lists_us(server));
		if (why == NULL)
		{
			rm_build_sql(&rs);
			done = rm_run(&rs);
			if (!done)
				why = "The source or the target has rows with a NULL key.";
		}
	}
	PG_FINALLY();
	{
		/* a statement still running there (we were cancelled) stops too */
		if (PQtransactionStatus(rs.conn) == PQTRANS_ACTIVE)
		{
			char		errbuf[256];
			PGcancel   *cancel = PQgetCancel(rs.conn);

			if (cancel != NULL)
			{
				(void) PQcancel(cancel, errbuf, sizeof(errbuf));
				PQfreeCancel(cancel);
			}
		}
		PQfinish(rs.conn);
	}
	PG_END_TRY();
	AtEOXact_GUC(true, nest);
	if (!done)
		return rm_not_applicable(r, why);
	r->mode = rs.remote_ext ? "remote_hashes" : "pushdown";
	return true;
}
