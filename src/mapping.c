/* mapping.c: work in progress */
#include "acme_migrate.h"
