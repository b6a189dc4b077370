# acme_migrate: PGXS build.
#
#   make && make install         build and install the extension (as root)
#   make installcheck            regress + isolation + TAP suites, each on a
#                                temporary instance (run as a non-root user)
#   make demo / make test / make bench
#                                the README's commands; see scripts in test/

EXTENSION = acme_migrate
MODULE_big = acme_migrate
OBJS = \
	src/acme_migrate.o \
	src/catalog.o \
	src/jobrow.o \
	src/mapping.o \
	src/mapping_check.o \
	src/batch.o \
	src/writer.o \
	src/fk.o \
	src/reconcile.o \
	src/worker.o \
	src/security.o \
	src/capture.o \
	src/cutover.o \
	src/sequences.o \
	src/stoprules.o \
	src/remote.o \
	src/locality.o \
	src/hash.o \
	src/driver.o

DATA_built = acme_migrate--1.0.sql acme_migrate--1.0--1.1.sql
# each script is assembled from its parts, in name order: sql/ext/ is the
# released 1.0 (never edited), sql/update/1.1/ the changes from 1.0 to 1.1
EXT_PARTS = $(sort $(wildcard sql/ext/*.sql))
UPDATE_1_1_PARTS = $(sort $(wildcard sql/update/1.1/*.sql))

# remote.c speaks libpq to a foreign table's server, as contrib/dblink does
# (libpq-dev: pkg-config finds its headers wherever pg_config points)
PG_CPPFLAGS = -I$(srcdir)/src -I$(libpq_srcdir) \
	$(shell pkg-config --cflags-only-I libpq 2>/dev/null)
PG_CFLAGS = -Wall -Wextra -Werror -Wno-unused-parameter -Wno-sign-compare \
	-Wno-missing-field-initializers
SHLIB_LINK = -lxxhash -lpq

REGRESS = $(shell cat test/regress_schedule 2>/dev/null)
REGRESS_OPTS = --temp-instance=$(CURDIR)/tmp_check_regress \
	--temp-config=$(srcdir)/test/regress.conf
ISOLATION = $(shell cat test/isolation_schedule 2>/dev/null)
ISOLATION_OPTS = --inputdir=$(srcdir)/test --outputdir=$(CURDIR)/test \
	--temp-instance=$(CURDIR)/tmp_check_iso \
	--temp-config=$(srcdir)/test/regress.conf
TAP_TESTS = 1
PROVE_TESTS = test/t/*.pl
# the helpers the TAP tests share (test/perl/AcmeTest.pm)
override PROVE_FLAGS += -I $(srcdir)/test/perl

EXTRA_CLEAN = tmp_check_regress tmp_check_iso test/output_iso test/results

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# no LLVM bitcode: JIT inlining of our functions is not worth a clang dependency
with_llvm = no

# every object depends on the shared header (PGXS does not track headers)
$(OBJS): src/acme_migrate.h src/compat.h

acme_migrate--1.0.sql: $(EXT_PARTS)
	cat $^ > $@

acme_migrate--1.0--1.1.sql: $(UPDATE_1_1_PARTS)
	cat $^ > $@

.PHONY: demo test bench pgtap format

demo:
	bash test/demo.sh

test:
	bash test/run_tests.sh

bench:
	bash bench/bench.sh

# pgTAP suites on a throwaway cluster (expects the extension installed)
pgtap:
	bash test/pgtap.sh

format:
	clang-format -i src/*.c src/*.h
