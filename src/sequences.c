/*-------------------------------------------------------------------------
 *
 * sequences.c
 *	  Sequences follow the data: when a job finishes, every sequence or
 *	  identity behind a target column is advanced past the largest value
 *	  the target holds, so that the application's next INSERT does not
 *	  collide with a copied row.
 *
 * A column is fed by a sequence when its default is nextval() of it
 * (serial and bigserial, or a DEFAULT nextval('some_seq') the column does
 * not own), when it is an identity column, or when it owns the sequence
 * (what pg_get_serial_sequence() answers).  Only columns of the integer
 * types int2, int4 and int8 (or domains over them) are considered.
 *
 * A sequence is never moved backwards: it is set to the largest copied
 * value only when the last value it handed out is below that.  The first
 * look is taken without a lock that would stop the application's
 * nextval(); only a sequence that must move is locked (in a mode that
 * conflicts with nextval's), looked at again and set, so no value handed
 * out meanwhile can be handed out twice.
 *
 * With from_source (cut-over), the sequence behind the target column also
 * goes at least as far as the one behind the source column of the same
 * name: the application, once switched over, must not get values the old
 * table already handed out.
 *
 *-------------------------------------------------------------------------
 */
#include "acme_migrate.h"

#include "access/htup_details.h"
#include "access/relation.h"
#include "catalog/dependency.h"
#include "catalog/pg_class.h"
#include "catalog/pg_sequence.h"
#include "catalog/pg_type.h"
#include "commands/sequence.h"
#include "miscadmin.h"
#include "nodes/nodeFuncs.h"
#include "nodes/primnodes.h"
#include "rewrite/rewriteHandler.h"
#include "storage/bufmgr.h"
#include "storage/lmgr.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/fmgrprotos.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/syscache.h"

/* a sequence feeding a column */
typedef struct SeqFeed
{
	AttrNumber	attnum;
	Oid			seqid;
} SeqFeed;

/*
 * The sequence a column default draws from: nextval('seq') (serial, or a
 * sequence the column does not own) or an identity's NextValueExpr, under
 * any casts to the column's type.  InvalidOid for any other default.
 */
static Oid
seq_from_default(Node *expr)
{
	while (expr != NULL)
	{
		if (IsA(expr, NextValueExpr))
			return ((NextValueExpr *) expr)->seqid;
		if (IsA(expr, FuncExpr))
		{
			FuncExpr   *f = (FuncExpr *) expr;

			if (f->funcid == F_NEXTVAL && list_length(f->args) == 1)
			{
				Node	   *arg = linitial(f->args);

				if (IsA(arg, Const) && !((Const *) arg)->constisnull &&
					((Const *) arg)->consttype == REGCLASSOID)
					return DatumGetObjectId(((Const *) arg)->constvalue);
				return InvalidOid;
			}
			/* a cast to the column's type, such as int8 -> int4 */
			if (f->funcformat != COERCE_EXPLICIT_CALL &&
				list_length(f->args) == 1)
			{
				expr = linitial(f->args);
				continue;
			}
			return InvalidOid;
		}
		if (IsA(expr, RelabelType))
			expr = (Node *) ((RelabelType *) expr)->arg;
		else if (IsA(expr, CoerceToDomain))
			expr = (Node *) ((CoerceToDomain *) expr)->arg;
		else
			return InvalidOid;
	}
	return InvalidOid;
}

static bool
seq_integer_column(Form_pg_attribute att)
{
	Oid			base;

	if (att->attisdropped || att->attgenerated != '\0')
		return false;
	base = getBaseType(att->atttypid);
	return base == INT2OID || base == INT4OID || base == INT8OID;
}

static List *
seq_add(List *feeds, AttrNumber attnum, Oid seqid)
{
	ListCell   *lc;
	SeqFeed    *f;

	if (!OidIsValid(seqid) || get_rel_relkind(seqid) != RELKIND_SEQUENCE)
		return feeds;
	foreach(lc, feeds)
	{
		f = lfirst(lc);
		if (f->attnum == attnum && f->seqid == seqid)
			return feeds;
	}
	f = palloc(sizeof(SeqFeed));
	f->attnum = attnum;
	f->seqid = seqid;
	return lappend(feeds, f);
}

/*
 * The sequences feeding the integer columns of a relation (only column
 * attnum when attnum > 0), from the columns' defaults and identities and
 * from the sequences the columns own.
 */
static List *
seq_feeds(Relation rel, AttrNumber only)
{
	TupleDesc	desc = RelationGetDescr(rel);
	List	   *feeds = NIL;
	List	   *owned;
	ListCell   *lc;

	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if ((only > 0 && att->attnum != only) || !seq_integer_column(att))
			continue;
		if (att->attidentity || att->atthasdef)
			feeds = seq_add(feeds, att->attnum,
							seq_from_default(build_column_default(rel, att->attnum)));
	}

	/* owned sequences (pg_depend, auto or internal): pg_get_serial_sequence */
	owned = getOwnedSequences(RelationGetRelid(rel));
	foreach(lc, owned)
	{
		Oid			seqid = lfirst_oid(lc);
		Oid			tableid;
		int32		colid;
		Form_pg_attribute att;

		if (!sequenceIsOwned(seqid, DEPENDENCY_AUTO, &tableid, &colid) &&
			!sequenceIsOwned(seqid, DEPENDENCY_INTERNAL, &tableid, &colid))
			continue;
		if (colid <= 0 || colid > desc->natts || (only > 0 && colid != only))
			continue;
		att = TupleDescAttr(desc, colid - 1);
		if (seq_integer_column(att))
			feeds = seq_add(feeds, (AttrNumber) colid, seqid);
	}
	return feeds;
}

/* A sequence's parameters (pg_sequence). */
static void
seq_params(Oid seqid, int64 *incr, int64 *min, int64 *max)
{
	HeapTuple	tup = SearchSysCache1(SEQRELID, ObjectIdGetDatum(seqid));
	Form_pg_sequence seq;

	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for sequence %u", seqid);
	seq = (Form_pg_sequence) GETSTRUCT(tup);
	*incr = seq->seqincrement;
	*min = seq->seqmin;
	*max = seq->seqmax;
	ReleaseSysCache(tup);
}

/*
 * The largest value the sequence has handed out (last_value when it has
 * been called, else one increment below the value nextval() returns next),
 * read from its page as nextval() leaves it.  The caller holds a lock on
 * the sequence.  Read here rather than through SQL: the job's owner is
 * checked for UPDATE on the sequence (setval's privilege), which does not
 * include SELECT.
 */
static int64
seq_high(Oid seqid, int64 incr)
{
	Relation	rel = relation_open(seqid, NoLock);
	Buffer		buf;
	Page		page;
	ItemId		lp;
	HeapTupleData tup;
	Form_pg_sequence_data data;
	int64		last;
	bool		called;

	buf = ReadBuffer(rel, 0);
	LockBuffer(buf, BUFFER_LOCK_SHARE);
	page = BufferGetPage(buf);
	lp = PageGetItemId(page, FirstOffsetNumber);
	if (!ItemIdIsNormal(lp))
		elog(ERROR, "sequence \"%s\" has no tuple", RelationGetRelationName(rel));
	tup.t_data = (HeapTupleHeader) PageGetItem(page, lp);
	tup.t_len = ItemIdGetLength(lp);
	data = (Form_pg_sequence_data) GETSTRUCT(&tup);
	last = data->last_value;
	called = data->is_called;
	UnlockReleaseBuffer(buf);
	relation_close(rel, NoLock);

	if (called)
		return last;
	/* not called yet: nothing handed out below last_value */
	if (last < PG_INT64_MIN + incr)
		return PG_INT64_MIN;
	return last - incr;
}

/* Largest value of a column in the relation (children included). */
static bool
seq_column_max(Relation rel, AttrNumber attnum, int64 *result)
{
	char	   *sql;
	bool		isnull;
	Datum		d;
	int			rc;

	sql = psprintf("SELECT pg_catalog.max(%s)::pg_catalog.int8 FROM %s",
				   quote_identifier(NameStr(TupleDescAttr(RelationGetDescr(rel),
														  attnum - 1)->attname)),
				   quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
											  RelationGetRelationName(rel)));
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	rc = SPI_execute(sql, false, 1);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not read the largest value of a column: %s",
			 SPI_result_code_string(rc));
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (!isnull)
		*result = DatumGetInt64(d);
	SPI_finish();
	return !isnull;
}

/*
 * Largest value handed out by a sequence feeding the source column of
 * this name, if any; the owner must be allowed to read it.
 */
static bool
seq_source_high(AmJob *job, Relation src, const char *colname, int64 *result)
{
	AttrNumber	attnum = get_attnum(RelationGetRelid(src), colname);
	List	   *feeds;
	ListCell   *lc;
	bool		found = false;

	if (attnum <= 0)
		return false;
	feeds = seq_feeds(src, attnum);
	foreach(lc, feeds)
	{
		SeqFeed    *f = lfirst(lc);
		int64		incr;
		int64		min;
		int64		max;
		int64		high;

		if (pg_class_aclcheck(f->seqid, job->owner,
							  ACL_SELECT | ACL_USAGE | ACL_UPDATE) != ACLCHECK_OK)
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("permission denied for sequence %s",
							get_rel_name(f->seqid)),
					 errdetail("Job \"%s\" reads it to advance the sequence behind target column \"%s\".",
							   job->job_name, colname)));
		seq_params(f->seqid, &incr, &min, &max);
		if (incr <= 0)
			continue;
		LockRelationOid(f->seqid, AccessShareLock);
		high = seq_high(f->seqid, incr);
		if (!found || high > *result)
			*result = high;
		found = true;
	}
	return found;
}

/* "schema.name" of a relation, for messages */
static char *
seq_name(Oid relid)
{
	return quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)),
									  get_rel_name(relid));
}

/*
 * Advance every sequence feeding an integer column of the job's target to
 * at least the column's largest value (and, with from_source, to at least
 * the sequence behind the same-named source column), never backwards.
 * Runs in the transaction that finishes the job, as its owner (the caller
 * has called am_begin_as_owner()).
 */
void
am_advance_sequences(AmJob *job, bool from_source)
{
	Relation	tgt;
	Relation	src = NULL;
	List	   *feeds;
	ListCell   *lc;

	tgt = relation_open(job->target_relid, AccessShareLock);
	feeds = seq_feeds(tgt, 0);
	if (feeds != NIL && from_source)
		src = relation_open(job->source_relid, AccessShareLock);
	foreach(lc, feeds)
	{
		SeqFeed    *f = lfirst(lc);
		const char *colname = NameStr(TupleDescAttr(RelationGetDescr(tgt),
													f->attnum - 1)->attname);
		int64		incr;
		int64		min;
		int64		max;
		int64		need = 0;
		int64		value;
		bool		have = false;

		seq_params(f->seqid, &incr, &min, &max);
		if (incr <= 0)
		{
			ereport(NOTICE,
					(errmsg("sequence %s of column \"%s\" of \"%s\" counts down: it is left as it is",
							seq_name(f->seqid), colname,
							RelationGetRelationName(tgt))));
			continue;
		}
		if (seq_column_max(tgt, f->attnum, &value))
		{
			need = value;
			have = true;
		}
		if (src && seq_source_high(job, src, colname, &value) &&
			(!have || value > need))
		{
			need = value;
			have = true;
		}
		if (!have)
			continue;			/* empty target: nothing to follow */

		/* a first look without stopping the application's nextval() */
		LockRelationOid(f->seqid, AccessShareLock);
		if (seq_high(f->seqid, incr) >= need)
			continue;
		if (need > max)
		{
			ereport(WARNING,
					(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
					 errmsg("sequence %s cannot follow column \"%s\" of \"%s\"",
							seq_name(f->seqid), colname,
							RelationGetRelationName(tgt)),
					 errdetail("The column holds %lld, above the sequence's maximum %lld.",
							   (long long) need, (long long) max),
					 errhint("Raise the sequence's MAXVALUE, then set it with setval().")));
			continue;
		}

		/*
		 * Conflicts with nextval()'s RowExclusiveLock: once granted, nobody
		 * hands out a value until we commit, so the value read is the one
		 * we move from.
		 */
		LockRelationOid(f->seqid, ShareRowExclusiveLock);
		if (seq_high(f->seqid, incr) >= need)
			continue;
		(void) DirectFunctionCall3(setval3_oid, ObjectIdGetDatum(f->seqid),
								   Int64GetDatum(need), BoolGetDatum(true));
		ereport(DEBUG1,
				(errmsg("job \"%s\": sequence %s of column \"%s\" advanced to %lld",
						job->job_name, seq_name(f->seqid), colname,
						(long long) need)));
	}
	if (src)
		relation_close(src, AccessShareLock);
	relation_close(tgt, AccessShareLock);
}

/*
 * At create: may the job's owner advance the sequences behind the target's
 * columns when the job finishes?  setval() needs UPDATE on the sequence,
 * and reading the column's largest value needs SELECT on the column.
 * Checked now so that a job does not copy everything and then fail on its
 * last batch.  With capture_changes (cut-over follows the source's
 * sequences too), the owner must also be able to read those.
 */
void
am_check_sequences(AmJob *job)
{
	Relation	tgt = relation_open(job->target_relid, AccessShareLock);
	List	   *feeds = seq_feeds(tgt, 0);
	ListCell   *lc;
	char	   *owner = GetUserNameFromId(job->owner, false);

	foreach(lc, feeds)
	{
		SeqFeed    *f = lfirst(lc);
		const char *colname = NameStr(TupleDescAttr(RelationGetDescr(tgt),
													f->attnum - 1)->attname);

		if (pg_class_aclcheck(f->seqid, job->owner, ACL_UPDATE) != ACLCHECK_OK)
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("permission denied for sequence %s",
							seq_name(f->seqid)),
					 errdetail("When job \"%s\" finishes, it advances the sequence behind column \"%s\" of \"%s\" past the largest copied value, which needs UPDATE on the sequence; role \"%s\" does not have it.",
							   job->job_name, colname,
							   RelationGetRelationName(tgt), owner),
					 errhint("GRANT UPDATE ON SEQUENCE %s TO %s;",
							 seq_name(f->seqid), quote_identifier(owner))));
		if (pg_class_aclcheck(job->target_relid, job->owner,
							  ACL_SELECT) != ACLCHECK_OK &&
			pg_attribute_aclcheck(job->target_relid, f->attnum, job->owner,
								  ACL_SELECT) != ACLCHECK_OK)
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("permission denied for column \"%s\" of relation \"%s\"",
							colname, RelationGetRelationName(tgt)),
					 errdetail("When job \"%s\" finishes, it reads the largest value of the column to advance the sequence behind it; role \"%s\" cannot read the column.",
							   job->job_name, owner),
					 errhint("GRANT SELECT (%s) ON %s TO %s;",
							 quote_identifier(colname),
							 seq_name(job->target_relid),
							 quote_identifier(owner))));
		if (job->capture_changes)
		{
			Relation	src = relation_open(job->source_relid, AccessShareLock);
			int64		ignored;

			(void) seq_source_high(job, src, colname, &ignored);
			relation_close(src, AccessShareLock);
		}
	}
	relation_close(tgt, AccessShareLock);
}
