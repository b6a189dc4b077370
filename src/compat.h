/*-------------------------------------------------------------------------
 *
 * compat.h
 *	  Every PG_VERSION_NUM test of acme_migrate lives here.
 *
 * acme_migrate targets PostgreSQL 15.  Newer versions changed a few
 * executor entry points; the wrappers below keep the rest of the code free
 * of version tests.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ACME_MIGRATE_COMPAT_H
#define ACME_MIGRATE_COMPAT_H

#if PG_VERSION_NUM < 150000
#error "acme_migrate requires PostgreSQL 15 or later"
#endif

#if PG_VERSION_NUM >= 160000
#define am_ExecInsertIndexTuples(rri, slot, estate) \
	ExecInsertIndexTuples((rri), (slot), (estate), false, false, NULL, NIL, \
						  false)
#else
#define am_ExecInsertIndexTuples(rri, slot, estate) \
	ExecInsertIndexTuples((rri), (slot), (estate), false, false, NULL, NIL)
#endif

#endif							/* ACME_MIGRATE_COMPAT_H */
