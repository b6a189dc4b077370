/*-------------------------------------------------------------------------
 *
 * acme_migrate.c
 *	  Module load and SQL-callable entry points of acme_migrate.
 *
 *-------------------------------------------------------------------------
 */
#include "acme_migrate.h"

#include "utils/guc.h"

PG_MODULE_MAGIC;

bool		acme_migrate_direct_write = true;

void		_PG_init(void);

void
_PG_init(void)
{
	DefineCustomBoolVariable("acme_migrate.direct_write",
							 "Writes batches through the table access method when the target allows it.",
							 "When off, every batch is written with INSERT ... ON CONFLICT statements.",
							 &acme_migrate_direct_write,
							 true,
							 PGC_USERSET,
							 0,
							 NULL, NULL, NULL);
	MarkGUCPrefixReserved("acme_migrate");
}
