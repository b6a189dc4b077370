/*-------------------------------------------------------------------------
 *
 * sequences.c
 *	  Sequences follow the data: placeholder until the sequences work lands.
 *
 *-------------------------------------------------------------------------
 */
#include "acme_migrate.h"

void
am_advance_sequences(AmJob *job, bool from_source)
{
}
