/*-------------------------------------------------------------------------
 *
 * acme_migrate.h
 *	  Shared definitions of acme_migrate: the job as the C code sees it, and
 *	  the entry points each module offers the others.
 *
 * Modules (one responsibility each):
 *	  acme_migrate.c	SQL-callable entry points and GUCs
 *	  catalog.c			the only code that reads or writes acme_migrate.*
 *	  mapping.c			resolves a job's tables, key and column mapping, and
 *						builds the SQL that reads a batch
 *	  mapping_check.c	what a job's SQL may be, and the shape of its
 *						columns checked before every batch
 *	  driver.c			the loop of batches shared by acme_migrate_run and
 *						workers: throttles, mapping refresh, subtransaction
 *	  batch.c			one batch: keyset walk, rejects, checkpoint
 *	  writer.c			writes a batch's rows into the target
 *	  fk.c				checks a batch's foreign keys with one query per key
 *	  reconcile.c		compares a job's mapped source with its target
 *	  worker.c			background workers, their SQL functions, launcher
 *	  security.c		who runs what: the job owner's identity for user
 *						SQL, a pinned search_path for our own SQL
 *	  hash.c			row and table hashing
 *	  sequences.c		sequences and identities behind the target's
 *						columns follow the data when a job finishes
 *	  stoprules.c		max_error_rate, reconcile and health_check breaches
 *	  capture.c			online migration: change capture and catch-up
 *	  cutover.c			online migration: cut-over and rollback
 *	  remote.c			reconcile of a source on another server (postgres_fdw):
 *						range hashes computed there first
 *	  locality.c		which relations PostgreSQL stores here (not foreign,
 *						not Citus shells), for the direct paths; Citus's
 *						per-shard table hash
 *
 *-------------------------------------------------------------------------
 */
#ifndef ACME_MIGRATE_H
#define ACME_MIGRATE_H

#include "postgres.h"

#include "access/attnum.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "nodes/pg_list.h"
#include "storage/itemptr.h"
#include "storage/lockdefs.h"
#include "utils/elog.h"
#include "utils/jsonb.h"
#include "utils/relcache.h"
#include "catalog/pg_attribute.h"
#include "datatype/timestamp.h"
#include "utils/timestamp.h"

#include "compat.h"

/* magic number of our advisory locks ("acme" in ASCII) */
#define AM_LOCK_CLASS	0x61636d65

typedef enum AmConflict
{
	AM_CONFLICT_UPDATE,
	AM_CONFLICT_SKIP,
	AM_CONFLICT_ERROR
} AmConflict;

/*
 * A job, as stored in acme_migrate.jobs.  Loaded by catalog.c; strings are
 * palloc'd in the caller's memory context.
 */
typedef struct AmJob
{
	int64		job_id;
	char	   *job_name;
	Oid			owner;
	Oid			source_relid;
	Oid			target_relid;
	List	   *key_columns;	/* source column names (char *) */
	List	   *target_key_columns; /* target column names (char *) */
	bool		key_is_unique;
	List	   *map_targets;	/* target column names (char *) ... */
	List	   *map_exprs;		/* ... and their SQL expressions (char *) */
	Jsonb	   *columns_given;	/* may be NULL */
	char	   *filter;			/* may be NULL */
	int32		batch_size;
	AmConflict	on_conflict;
	bool		reject;			/* on_error = 'reject' */
	double		max_error_rate; /* < 0 when not set */
	bool		capture_changes;
	Jsonb	   *reverse_columns;	/* target -> source, for after cut-over */
	char	   *capture_method; /* "trigger" */
	char	   *health_check;	/* SQL boolean expression, or NULL */
	char	   *on_breach;		/* "pause" or "rollback" */
	List	   *depends_on;		/* job names (char *), as given */
	int64	   *depends_on_ids; /* the jobs they named when created; 0 for
								 * a name a 1.0 job had that was gone by 1.1 */
	int			ndepends_on_ids;
	double		max_rows_per_second;	/* 0 when not set */
	int64		batch_time_target_ms;	/* 0 when not set */
	int64		max_replication_lag_ms; /* 0 when not set */
	int64		lock_timeout_ms;	/* -1 when not set */
	int32		definition_version;
	char	   *search_path;	/* its creator's, for its SQL; NULL before 1.1 */
	char	   *shape;			/* mapping_shape() at create; NULL before 1.1 */
	char	   *state;
	List	   *last_key;		/* checkpoint: key values as text, or NIL */
	int64		rows_read;
	int64		rows_copied;
	int64		rows_rejected;
	int64		batches_done;
	double		rows_estimate;
	int32		workers;		/* background workers it runs with */
	double		workers_age;	/* seconds since workers were launched */
	/* the row version this was read from (or written to: jobrow.c) */
	ItemPointerData row_tid;
	TransactionId row_xmin;
} AmJob;



/*
 * The states of a job (acme_migrate.jobs.state), defined once in catalog.c
 * and shown to SQL by acme_migrate.job_states().
 */
typedef enum AmFinished
{
	AM_FINISHED_CLEAR,			/* entering the state clears finished_at */
	AM_FINISHED_SET,			/* ... sets it to now */
	AM_FINISHED_KEEP			/* ... keeps it (cut_over: when copied) */
} AmFinished;

typedef struct AmJobState
{
	const char *name;
	bool		copy_complete;	/* every source row copied: jobs that
								 * depend on it may start */
	bool		final;			/* nothing leads out of it */
	AmFinished	finished;		/* what it does to finished_at */
} AmJobState;

extern const AmJobState *am_job_state(const char *name);

/*
 * Key ranges.  One convention for every range the code cuts or walks:
 * (lo, hi], the lower bound exclusive (the checkpoint: the last key done),
 * the upper bound inclusive; NIL (or NULL) for an open end.  So the ranges
 * of workers (acme_migrate.ranges, AmRange), the batches of a walk (keys >
 * last_key ORDER BY key LIMIT n), reconciliation's merges and its
 * hash_ranges buckets (reconcile.c), the ranges of a remote reconciliation
 * (remote.c) and the batches pushed down to Citus (locality.c): a range's
 * rows are those with lo < key <= hi.
 * The one exception is the output of the SQL function
 * acme_migrate_range_hashes (hash.c), lo <= key < hi, as version 1.0's
 * interface documents it (quantile boundaries start a range); it is not
 * used by the code to cut ranges of its own.
 */

/* a key range of a job run in parallel (acme_migrate.ranges) */
typedef struct AmRange
{
	int32		range_no;
	List	   *lo_key;			/* exclusive; NIL: from the start */
	List	   *hi_key;			/* inclusive; NIL: to the end */
	List	   *last_key;		/* checkpoint; NIL: nothing done yet */
} AmRange;

/*
 * A job's mapping resolved against the current catalogs: what mapping.c
 * builds from an AmJob and what batch.c and writer.c execute.
 */
typedef struct AmMapping
{
	Oid			source_relid;
	Oid			target_relid;
	int			nkeys;
	Oid		   *key_types;
	Oid		   *key_collations;
	FmgrInfo   *key_cmp;		/* btree comparison procs */
	FmgrInfo   *key_in;			/* input functions */
	Oid		   *key_ioparams;
	FmgrInfo   *key_out;		/* output functions */
	char	  **key_names;		/* source key column names */
	bool	   *key_byval;
	int16	   *key_typlen;
	bool		key_io_styled;	/* key text I/O depends on DateStyle etc. */

	/* target columns the batch query returns, after the nkeys key columns */
	int			nmapped;
	AttrNumber *mapped_attnums;
	char	  **mapped_names;

	/* SQL that reads a batch: [has lower bound][has upper bound] */
	char	   *select_sql[2][2];
	/* the same without its LIMIT, and the SQL path's upsert of CTE b */
	char	   *read_sql[2][2];
	char	   *upsert_sql;
	/* SQL that reads and writes a batch with INSERT ... ON CONFLICT */
	char	   *insert_sql[2][2];
	/* SQL that reads only the keys of a batch: [lower bound][upper bound] */
	char	   *keys_sql[2][2];
	/* SQL returning a key and its source row as jsonb */
	char	   *row_json_sql;
	/* SQL counting source rows equal to a key (duplicate check) */
	char	   *key_count_sql;
	/* SQL finding a NULL key (end of walk check) */
	char	   *null_key_sql;
	/* SQL applying captured keys (capture.c); NULL without capture */
	char	   *catchup_sql;
	SPIPlanPtr	catchup_plan;
	/* the same as a delete, then an insert (a target nothing reacts to) */
	char	   *catchup_delete_sql;
	SPIPlanPtr	catchup_delete_plan;
	char	   *catchup_insert_sql;
	SPIPlanPtr	catchup_insert_plan;
	int64		catchup_after;	/* where this process's next catch-up step
								 * resumes its scan of the log */
	/* SQL comparing the row hashes of given keys on both sides (cut-over) */
	char	   *verify_sql;
	bool		direct_ok;		/* may the direct (table AM) writer be used? */
	const char *direct_why_not; /* if not, why (for DEBUG1) */

	/* plans of the SQL above, kept while the mapping lives (batch.c) */
	SPIPlanPtr	select_plan[2][2];
	SPIPlanPtr	insert_plan[2][2];
	SPIPlanPtr	keys_plan[2][2];
	/* generic plans of a batch of batch_plan_limit rows: [insert][lo][hi] */
	SPIPlanPtr	batch_plan[2][2][2];
	int64		batch_plan_limit;
	SPIPlanPtr	row_json_plan;
	SPIPlanPtr	key_count_plan;
	SPIPlanPtr	null_key_plan;
	int			sql_batches_left;	/* use the SQL path for this many more */
	int32		last_range;		/* range this process copied last */
	int			has_ranges;		/* -1 unknown, else whether the job has */
	void	   *writer_cache;	/* writer.c's slots and defaults, kept across batches */
	void	   *fk_cache;		/* fk.c's prepared check queries */
	void	   *shape_cache;	/* mapping_check.c's columns of the job's shape */
	void	   *locality_cache; /* locality.c's Citus pushdown state */
	int32		definition_version;
} AmMapping;

/* catalog.c */
extern AmJob *catalog_job_get(const char *job_name, bool for_update);
extern bool catalog_job_relock(AmJob *job);
extern int64 catalog_job_insert(AmJob *job);
extern void catalog_job_delete(AmJob *job);
extern int64 catalog_job_parent(const char *job_name);
extern bool catalog_job_finished_by_id(int64 job_id, bool *exists,
									   char **job_name);
extern void catalog_job_check_dependents(AmJob *job);
extern void catalog_workers_in_use(AmJob *job, int *role_workers,
								   int *all_workers);
extern void catalog_job_set_state(AmJob *job, const char *state,
								  const char *reason);
/* jobrow.c */
extern bool jobrow_checkpoint(AmJob *job, const Datum *args, const char *nulls,
							  int64 *batch_no, bool *history);
extern bool jobrow_relock(AmJob *job);

extern void catalog_job_checkpoint(AmJob *job, AmRange *range,
								   List *first_key, List *last_key,
								   int64 rows_read, int64 rows_copied,
								   int64 rows_rejected, bool direct,
								   TimestampTz started, const char *new_state,
								   const char *reason);
extern void catalog_reject_insert(AmJob *job, Jsonb *key, Jsonb *row,
								  ErrorData *edata);
extern void catalog_error_insert(AmJob *job, ErrorData *edata,
								 bool transient);
extern AmJob *catalog_job_get_by_id(int64 job_id);
extern int	catalog_ranges_count(AmJob *job, int *pending);
extern void catalog_ranges_create(AmJob *job, List *boundaries);
extern AmRange *catalog_range_claim(AmJob *job, int32 preferred);
extern void catalog_range_checkpoint(AmJob *job, AmRange *range,
									 List *last_key, int64 rows_read,
									 bool done);
extern void catalog_job_set_workers(AmJob *job, int workers,
									const char *state);
extern void catalog_job_set_shape(AmJob *job, const char *shape);
extern void catalog_capture_log(int64 job_id, char direction, List *key);
extern void catalog_capture_log_many(int64 job_id, char direction, int nkeys,
									 List *keys);
extern int	catalog_capture_take(int64 job_id, char direction, int limit,
								 int64 after, int64 *last, List **keys);
extern int64 catalog_capture_backlog(int64 job_id, char direction,
									 double *age);
extern void catalog_capture_clear(int64 job_id, char direction);
extern void catalog_cutover_attempt(int64 job_id, const char *operation,
									int attempt, TimestampTz started,
									int64 lock_wait_ms, int64 lock_held_ms,
									int64 drained, const char *outcome);
extern void catalog_job_set_pre(AmJob *job, int64 rows, const char *hash);
extern void catalog_preimage_insert(int64 job_id, Datum *rows, int n);
extern void catalog_preimage_clear(int64 job_id);
extern void catalog_job_cut_over_at(AmJob *job);
extern void catalog_job_alter(AmJob *job, int32 batch_size,
							  double max_rows_per_second,
							  int64 batch_time_target_ms,
							  int64 max_replication_lag_ms,
							  int64 lock_timeout_ms, double max_error_rate,
							  const char *health_check,
							  const char *on_breach);
extern bool catalog_job_breach(AmJob *job, const char *rule,
							   const char *reason, ErrorData *edata,
							   bool also_paused);

/* counts of a reconciliation run */
typedef struct AmReconcileCounts
{
	int64		source_rows;
	int64		target_rows;
	int64		missing;
	int64		extra;
	int64		changed;
	int64		duplicates;
	int64		null_keys;
	const char *method;			/* merge, hash_ranges or sample */
	int64		ranges_hashed;	/* hash_ranges only */
	int64		ranges_merged;
	int64		mapped_rows;	/* rows the job's mapping gave; -1: not counted
								 * apart (ad hoc or sampled runs) */
	const char *remote_mode;	/* remote.c's mode; NULL: a local source */
	const char *remote_note;	/* why no remote mode applied, or NULL */
	int64		remote_rows;	/* rows fetched from the source's server;
								 * -1: not counted (full_fetch) */
	int			parallel_workers;	/* that read in the hash pass */
	int64		rows_merged;	/* hash passes: rows read again and merged */
} AmReconcileCounts;

/* reconcile.c */
extern bool reconcile_counts_equal(AmReconcileCounts *c);

/* catalog.c: reconciliation runs and their differences */
extern int64 catalog_reconcile_begin(int64 job_id, Oid source_relid,
									 Oid target_relid, List *keys,
									 List *columns, Jsonb *options,
									 double sample, int64 max_diffs);

/* differences of a run waiting to be written (catalog.c) */
typedef struct AmDiffBatch AmDiffBatch;

extern AmDiffBatch *catalog_diff_batch(int64 run_id);
extern void catalog_diff_add(AmDiffBatch *b, int64 diff_no, const char *kind,
							 const char *side, Jsonb *key, Jsonb *source_row,
							 Jsonb *target_row, List *changed_columns);
extern void catalog_diff_flush(AmDiffBatch *b);
extern void catalog_reconcile_end(int64 run_id, AmReconcileCounts *c,
								  bool truncated, bool estimated);
extern int64 catalog_purge(TimestampTz cutoff, int64 job_id);

/* mapping.c */
extern AmMapping *mapping_build(AmJob *job, bool validating);
extern char *mapping_batch_sql(AmMapping *map, int lo, int hi, bool insert,
							   const char *limit);
extern void mapping_resolve_new_job(AmJob *job, Jsonb *columns,
									bool reconcile);
extern Datum *mapping_key_from_text(AmMapping *map, List *text_key);
extern List *mapping_key_to_text(AmMapping *map, Datum *values);
extern double mapping_estimate_rows(AmJob *job);
extern void mapping_append_key_compare(StringInfo buf, const char *alias,
									   char **names, const Oid *types, int n,
									   int strategy, int firstparam);
extern int	mapping_fixed_settings(bool for_compare);
extern bool mapping_key_is_unique(Oid relid, List *colnames);
extern void mapping_check_sql_fragment(const char *sql, bool is_filter,
									   const char *what);
extern Relation mapping_open_table(AmJob *job, Oid relid, const char *which);
extern Form_pg_attribute mapping_find_column(Relation rel, const char *name);
extern bool mapping_type_io_is_fixed(Oid type);
extern char *mapping_relname(Oid relid);

/* mapping_check.c */
extern bool mapping_expr_is_column(const char *expr, const char *col);
extern void mapping_check_case(Relation src, const char *sql,
							   const char *what);
extern void mapping_check_job_sql(AmJob *job, const char *srcname);
extern void mapping_check_privileges(SPIPlanPtr plan);
extern char *mapping_shape(AmJob *job, AmMapping *map);

/* batch.c */
extern bool batch_lock_job(int64 job_id, LOCKMODE mode, bool session);
extern void batch_unlock_job(int64 job_id, LOCKMODE mode, bool session);
extern int64 batch_step(AmJob *job, AmMapping *map, int32 batch_size,
						bool *more);
extern void batch_free_plans(AmMapping *map);
extern int	batch_key_compare(AmMapping *map, Datum *a, Datum *b);
extern void batch_split_ranges(AmJob *job, AmMapping *map, int n);
extern bool batch_waiting_for(AmJob *job, char **parent);
extern bool batch_error_is_transient(int sqlerrcode);
extern int32 batch_adapt_size(AmJob *job, int32 batch_size, int64 took_ms);
extern void batch_commit_async(void);

/*
 * driver.c: the loop of a job's batches, shared by acme_migrate_run and the
 * workers, and meant for any other caller that turns "a job and a budget"
 * into batches (catch-up, for one).
 *
 * Use: fill an AmDriverOps, driver_init(), set max_steps / max_time_ms /
 * workers_rules / catch_up as needed, driver_run(), driver_end().  Each turn
 * of driver_run is one transaction: ops->begin, ops->load, the hold checks
 * (with workers_rules: the job's state, ops->lock, the jobs it depends on;
 * always: max_replication_lag), the mapping built again if the job's
 * definition changed, one batch_step (or capture_catch_up_step for a
 * copied job with capture) inside a subtransaction, ops->commit.  Then
 * ops->after, and ops->nap for the rate pause (max_rows_per_second) or a
 * wait, after the WAL is flushed.  A failed batch's subtransaction is rolled
 * back, its turn committed, and ops->failed decides (record, retry or
 * re-throw).  Errors outside the batch go to ops->abort, or, without one,
 * to the caller of driver_run.  Allocations of a turn are in d->stepcxt,
 * reset every turn, so a driver running for days does not grow.
 *
 * Catch-up (capture.c) drives a job the same way: a turn of a copied job
 * with capture applies one chunk of its log (capture_catch_up_step).
 * acme_migrate_catch_up, a function that stays in its caller's transaction,
 * gives begin and commit that do nothing and no abort, sets catch_up_only
 * (a job still copying is caught up, not copied), caller_xact and
 * max_time_ms, and leaves workers_rules unset: the driver stops at the
 * first turn that applies nothing, and the job's throttles apply to
 * catch-up as they do to the copy.
 */
typedef struct AmDriver AmDriver;

typedef struct AmDriverOps
{
	void		(*poll) (AmDriver *d);	/* before a turn; may be NULL */
	/* start and end the turn's transaction; NULL: the caller's goes on */
	void		(*begin) (AmDriver *d);
	void		(*commit) (AmDriver *d, bool last);
	AmJob	   *(*load) (AmDriver *d);	/* the job, NULL when it is gone */
	bool		(*lock) (AmDriver *d, AmJob *job);	/* may be NULL */
	void		(*abort) (AmDriver *d); /* NULL: errors go to the caller */
	bool		(*failed) (AmDriver *d, ErrorData *edata);	/* true: go on */
	bool		(*after) (AmDriver *d); /* after a turn; NULL, or false: stop */
	/* false: stop; NULL: am_sleep */
	bool		(*nap) (AmDriver *d, int64 ms, bool throttled);
	/*
	 * what the driver does now: busy (NULL: a batch), or waiting for what;
	 * NULL: a wait is a NOTICE
	 */
	void		(*report) (AmDriver *d, bool busy, const char *what);
} AmDriverOps;

struct AmDriver
{
	const AmDriverOps *ops;
	void	   *arg;			/* the caller's */
	int64		job_id;
	int64		max_steps;		/* -1: no limit */
	int64		max_time_ms;	/* -1: no limit */
	bool		workers_rules;	/* check state, lock and parents; the rate is
								 * shared by the job's workers; a job with
								 * capture goes on once copied */
	bool		catch_up;		/* with workers_rules: catch a copied job up */
	bool		catch_up_only;	/* every turn applies captured changes, none
								 * copies (acme_migrate_catch_up) */
	bool		caller_xact;	/* turns run in the caller's transaction:
								 * begin and commit do nothing */
	MemoryContext stepcxt;		/* reset at every turn */
	MemoryContext mapcxt;		/* the mapping's */
	AmMapping  *map;
	int32		batch_size;		/* adapted to batch_time_target */
	TimestampTz started;
	/* the current or last turn */
	AmJob	   *job;			/* in stepcxt */
	TimestampTz step_start;
	int64		rows;
	int64		took_ms;
	int64		pause_ms;
	int32		version;		/* the job's definition_version */
	/* totals */
	int64		steps;
	int64		rows_total;
};

extern void driver_init(AmDriver *d, const AmDriverOps *ops, void *arg,
						int64 job_id, MemoryContext parent);
extern void driver_run(AmDriver *d);
extern void driver_end(AmDriver *d);
extern ErrorData *am_subxact(void (*fn) (void *arg), void *arg);
extern int	am_job_lock_timeout(AmJob *job);

/* writer.c */
typedef struct AmWriter AmWriter;
extern AmWriter *writer_begin(AmMapping *map);
extern void writer_put(AmWriter *w, Datum *values, bool *isnull);
extern int64 writer_end(AmWriter *w);

/* fk.c */
typedef struct AmFkBatch AmFkBatch;
extern AmFkBatch *fk_batch_begin(AmMapping *map, Relation rel,
								 struct ResultRelInfo *rri);
extern void fk_batch_add(AmFkBatch *fb, struct TupleTableSlot *slot);
extern void fk_batch_check(AmFkBatch *fb);
extern void fk_free_plans(AmMapping *map);
extern void fk_set_immediate(Oid relid);

/* hash.c */
extern void hash_relation(Oid relid, int64 *row_count, uint8 *result);

/* security.c */
typedef struct AmOwnerContext
{
	Oid			save_userid;
	int			save_sec_context;
	int			nest;
} AmOwnerContext;

extern int	am_pin_search_path(void);
extern void am_unpin_search_path(int nest);
extern void am_check_owner_exists(AmJob *job);
extern void am_begin_as_owner(AmJob *job, AmOwnerContext *cxt);
extern void am_begin_writing_as_owner(AmJob *job, Oid relid,
									  AmOwnerContext *cxt);
extern void am_end_as_owner(AmOwnerContext *cxt);
extern const char *am_extension_schema(void);
extern void am_check_catalog_version(void);

/* capture.c */

/* how many log entries one catch-up statement applies */
#define AM_CAPTURE_CHUNK	2000

extern void capture_install(AmJob *job, char direction);
extern bool capture_remove(AmJob *job, char direction, bool nowait);
extern void capture_check_and_install(AmJob *job);
extern void capture_check_state(AmJob *job, const char *what);
extern bool capture_is_installed(AmJob *job);
extern AmJob *capture_reverse_job(AmJob *job);
extern Datum *capture_key_arrays(AmMapping *map, List *keys, int *nunique);
extern int64 capture_sync_members(AmJob *job, char direction);
extern void capture_missing_error(AmJob *job, int elevel);
extern int64 capture_apply(AmJob *job, AmMapping *map, char direction,
						   int limit, int64 *after, List **applied);
extern int64 capture_catch_up_step(AmJob *job, AmMapping *map);

/* cutover.c */
extern void capture_record_pre(AmJob *job);
extern void capture_rollback_before_cutover(AmJob *job, const char *then_sql,
											const char *why, int64 *deleted,
											int64 *restored, bool *equal);

/* remote.c: a merge of the key range (lo, hi], either NULL: unbounded */
typedef void (*AmMergeRange) (void *arg, Datum *lo, Datum *hi);

typedef struct AmRemote
{
	AmJob	   *job;
	AmMapping  *map;
	List	   *columns;		/* compared target columns (char *) */
	AmMergeRange merge;			/* lists the differences of a range */
	void	   *merge_arg;
	const char *mode;			/* out: remote_hashes, pushdown, full_fetch */
	char	   *why;			/* out: why full_fetch */
	int64		ranges_hashed;
	int64		ranges_merged;
	int64		equal_rows;		/* rows of the ranges found equal (each side) */
	int64		remote_rows;	/* rows fetched from the remote server */
} AmRemote;

extern bool remote_is_foreign(Oid relid);
extern bool remote_reconcile(AmRemote *r);

/* sequences.c */
extern void am_advance_sequences(AmJob *job, bool from_source);
extern void am_check_sequences(AmJob *job);

/* stoprules.c */
extern bool am_health_check_ok(AmJob *job);
extern char *am_error_rate_breached(AmJob *job, int64 rows_read,
									int64 rows_rejected);
extern void am_reconcile_breach(AmJob *job, int64 run_id,
								AmReconcileCounts *c);
extern void am_breach(AmJob *job, const char *rule, const char *reason,
					  ErrorData *edata);
extern void am_breach_rollback(AmJob *job, const char *reason);
extern int64 am_rollback_pending;
extern void am_stop_rules_alter_args(FunctionCallInfo fcinfo, int first,
									 char **health_check, char **on_breach);

/* locality.c */
extern char locality_citus_method(Oid relid);
extern const char *locality_why_not(Oid relid);
extern bool locality_is_local(Oid relid);
extern void locality_require_local(Oid relid, const char *action);
extern void locality_note_write(Oid relid);
extern bool locality_wrote_elsewhere(void);
extern bool locality_citus_table_hash(Oid relid, int64 *row_count,
									  uint8 *result);
extern bool locality_citus_has_us(Oid relid);
extern bool locality_citus_range_hashes(Oid relid, const char *bounds_json,
										int nranges, int64 *rows, uint8 *sums);
extern bool locality_copy_range(AmJob *job, AmMapping *map, List *lo,
								List *hi, int32 batch_size, int64 *rows,
								Datum **last_key, bool *at_end);
extern char *locality_sample_sql(AmJob *job, AmMapping *map, bool lo,
								 double *fraction);
extern void locality_release_connections(void);

/* worker.c */
extern void worker_register_launcher(void);
extern bool worker_stop_job(AmJob *job);

/* acme_migrate.c: helpers of argument checking, sleeping, standby lag */
extern int64 am_replication_lag_ms(void);
extern void am_sleep(int64 ms);
extern int64 am_interval_ms(Interval *iv, const char *argname, bool zero_ok);
extern Interval *am_ms_interval(int64 ms);
extern void am_copy_long(char *dst, const char *src, uint32 n);
extern int	am_cpus_for_workers(void);

/* acme_migrate.c: GUCs */
extern bool acme_migrate_direct_write;
extern bool acme_migrate_async_commit;
extern int	acme_migrate_max_workers;
extern int	acme_migrate_max_workers_per_role;
extern int	acme_migrate_max_workers_total;
extern int	acme_migrate_naptime;
extern char *acme_migrate_databases;
extern bool acme_migrate_store_row_data;
extern bool acme_migrate_remote_hashes;

/*
 * Copy a short value's bytes into a row being hashed.  memcpy with a
 * length known only at run time is compiled inline as "rep movsq" here
 * (gcc, -O2), whose start-up costs more than copying a 40-byte text: it
 * took a fifth of acme_migrate_table_hash's time.  From 4 to 32 bytes, the
 * first and last w bytes (w a constant: 4, 8 or 16), which may overlap;
 * neither reads nor writes outside the n bytes.
 */
static pg_attribute_always_inline void
am_copy_ends(char *dst, const char *src, uint32 n, uint32 w)
{
	char		head[16];
	char		tail[16];

	memcpy(head, src, w);
	memcpy(tail, src + n - w, w);
	memcpy(dst, head, w);
	memcpy(dst + n - w, tail, w);
}

static pg_attribute_always_inline void
am_copy_short(char *dst, const char *src, uint32 n)
{
	if (n >= 16 && n <= 32)
		am_copy_ends(dst, src, n, 16);
	else if (n >= 8 && n < 16)
		am_copy_ends(dst, src, n, 8);
	else if (n >= 4 && n < 8)
		am_copy_ends(dst, src, n, 4);
	else if (n < 4)
	{
		for (uint32 i = 0; i < n; i++)
			dst[i] = src[i];
	}
	else
		am_copy_long(dst, src, n);
}

#endif							/* ACME_MIGRATE_H */
