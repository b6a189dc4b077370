#!/usr/bin/env bash
# bench/bench.sh: `make bench`.
#
# Copies a generated orders table (ROWS rows, default 5,000,000) into an empty
# target with a primary key, REPS times (default 3) per contender, and prints the
# median times, rates, table sizes, ratios and the backend's memory:
#
#   a  CALL acme_migrate_run(job)   batch_size => 10000, one commit per batch
#   b  INSERT INTO target SELECT * FROM source   (one statement, one commit)
#   c  CALL acme_migrate_run(job)   batch_size => 1000
#   d  pgcopydb copy table-data into a second database of the same cluster,
#      target table (with its primary key) pre-created there
#   d2 (information; PGCOPYDB_POSTINDEX=0 skips it) pgcopydb's own bulk path:
#      `pgcopydb copy data` into a table without index; it builds the primary key
#
# It starts a throwaway cluster (mktemp -d, free port in 5700-5799), runs every
# contender with the same settings, CHECKPOINT + VACUUM ANALYZE between runs,
# and removes the cluster at the end (KEEP=1 keeps it).  The contenders are
# interleaved (rep 1: a b c d, rep 2: a b c d, ...) so drift hits all alike.
# It reports; it never asserts a time.  It exits non-zero only on an error
# (including a target whose row count differs from the source's).
#
# Environment:
#   ROWS=5000000 REPS=3 KEEP=0
#   CONTENDERS="a b c d"    subset / order of contenders (d2 added by PGCOPYDB_POSTINDEX=1)
#   PGCOPYDB_POSTINDEX=1    also run d2 (after the CONTENDERS)
#   INSTALL=auto            auto: `make install` (as root, under flock) only when the
#                           extension is not installed; 1: always; 0: never
#   PG_CONFIG=pg_config     which PostgreSQL
#   SHARED_BUFFERS=4GB      (other settings: see SETTINGS below; all printed)
#   HUGE_PAGES=auto         auto: shared memory in huge pages, reserved for the run when
#                           run as root (bench/huge_pages.sh says why); off: never
#   SYNCHRONOUS_COMMIT=on   off: for information only (every commit then skips its WAL flush
#                           wait, INSERT ... SELECT's and pgcopydb's included)
#   ASYNC_COMMIT=on         acme_migrate.async_commit (its default, on: a and c commit every
#                           batch but the last of the call without waiting for the WAL flush,
#                           as pgcopydb commits its COPY with synchronous_commit = off);
#                           off: every batch waits for its flush, for information
#   HASH_BENCH=1            run bench/hash_bench.sh on the same cluster if executable
#   RECONCILE_BENCH=1       likewise bench/reconcile_bench.sh (reconcile vs FULL JOIN vs pg_comparator)
#   WORKERS_BENCH=1         likewise bench/workers_bench.sh (1 vs 2 workers, bookkeeping cost)
#   FK_BENCH=1              likewise bench/fk_bench.sh (copy into a target with a foreign key,
#                           checked per batch, vs INSERT ... SELECT and its per-row RI triggers;
#                           FK_ROWS=1000000, FK_PARENTS=200000)
#   ONLINE_BENCH=1          likewise bench/online_bench.sh (online migration: pgbench TPS without and
#                           with trigger capture, catch-up rate vs copy rate, lock held at cut-over
#                           under pgbench --rate 500; ONLINE_ROWS, ONLINE_SECS, ONLINE_BACKLOG)
#   REMOTE_BENCH=1          likewise bench/remote_bench.sh, on two throwaway clusters of its own
#                           (reconcile of a postgres_fdw source: rows fetched and time against a
#                           full fetch and pg_comparator; REMOTE_ROWS, default 1,000,000)
#   CITUS_BENCH=1           likewise bench/citus_bench.sh, on clusters of its own (a coordinator and
#                           two workers; skipped with a message when Citus is not installed):
#                           CITUS_ROWS (2,000,000) distributed -> distributed, job vs INSERT ... SELECT
#   PROFILE=0               1: also load pg_stat_statements (track = all) and perf-record the
#                           backend during the first rep of a (and c); prints both at the end.
#                           Changes the settings, so figures of a PROFILE=1 run are not the bench's.
#   Optional contender p:   a PL/pgSQL keyset loop (INSERT ... SELECT ... WHERE id > last
#                           ORDER BY id LIMIT 10000; COMMIT) -- the do-it-yourself baseline;
#                           add it with CONTENDERS="a b c d p".
set -eEuo pipefail
trap 'echo "$(date +%H:%M:%S) bench: ERROR: status $? at line $LINENO: $BASH_COMMAND" >&2' ERR

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/huge_pages.sh"
REPO=$(cd "$HERE/.." && pwd)
ROWS=${ROWS:-5000000}
REPS=${REPS:-3}
KEEP=${KEEP:-0}
INSTALL=${INSTALL:-auto}
PG_CONFIG=${PG_CONFIG:-pg_config}
SHARED_BUFFERS=${SHARED_BUFFERS:-4GB}
SYNCHRONOUS_COMMIT=${SYNCHRONOUS_COMMIT:-on}
ASYNC_COMMIT=${ASYNC_COMMIT:-on}
PGCOPYDB=${PGCOPYDB:-$(command -v pgcopydb || echo /usr/bin/pgcopydb)}
PGCOPYDB_POSTINDEX=${PGCOPYDB_POSTINDEX:-1}
HASH_BENCH=${HASH_BENCH:-1}
PROFILE=${PROFILE:-0}
CONTENDERS=${CONTENDERS:-"a b c d"}
if [ "$PGCOPYDB_POSTINDEX" = 1 ]; then CONTENDERS="$CONTENDERS d2"; fi

case "$ROWS" in ''|*[!0-9]*) echo "bench: ROWS must be a positive integer" >&2; exit 2 ;; esac
case "$REPS" in ''|*[!0-9]*|0) echo "bench: REPS must be a positive integer" >&2; exit 2 ;; esac

BINDIR=$("$PG_CONFIG" --bindir)
SHAREDIR=$("$PG_CONFIG" --sharedir)
PKGLIBDIR=$("$PG_CONFIG" --pkglibdir)

log() { printf '%s bench: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- install
# the contenders' tools, as make demo installs its packages (Debian names)
for pkg in pgcopydb postgresql-comparator pgbench; do
	case $pkg in pgbench) cmd=pgbench; pkg=postgresql-client-15 ;; postgresql-comparator) cmd=pg_comparator ;; *) cmd=$pkg ;; esac
	if ! command -v "$cmd" >/dev/null 2>&1; then
		[ "$(id -u)" = 0 ] || die "$cmd is missing: install the Debian package $pkg"
		log "installing the Debian package $pkg (for $cmd)"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$pkg" >&2 ||
			{ DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 &&
			  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$pkg" >&2; } ||
			die "could not install $pkg"
	fi
done

ext_installed() { [ -f "$SHAREDIR/extension/acme_migrate.control" ] && [ -f "$PKGLIBDIR/acme_migrate.so" ]; }
if [ "$INSTALL" = 1 ] || { [ "$INSTALL" = auto ] && ! ext_installed; }; then
	[ "$(id -u)" = 0 ] || die "acme_migrate is not installed; run 'make install' as root first"
	log "make install (under flock /tmp/acme_build.lock)"
	flock /tmp/acme_build.lock make -C "$REPO" install PG_CONFIG="$PG_CONFIG" >&2
fi
ext_installed || die "acme_migrate is not installed in $SHAREDIR / $PKGLIBDIR"

# ---------------------------------------------------------------- cluster
if [ "$(id -u)" = 0 ]; then
	PGOSUSER=postgres
	AS_PG=(runuser -u postgres --)
else
	PGOSUSER=$(id -un)
	AS_PG=()
fi
as_pg() { "${AS_PG[@]}" "$@"; }

WORK=$(mktemp -d /tmp/acme_bench.XXXXXX)
chmod 755 "$WORK"
PGDATA_DIR="$WORK/data"
SOCK="$WORK/sock"
mkdir -p "$SOCK" "$WORK/tmp"
if [ "$(id -u)" = 0 ]; then chown -R postgres: "$WORK"; fi

PORT=
for p in $(seq 5700 5799); do
	if ! (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null && [ ! -e "/tmp/.s.PGSQL.$p" ]; then
		PORT=$p
		break
	fi
done
[ -n "$PORT" ] || die "no free port in 5700-5799"

STARTED=0
cleanup() {
	local rc=$?
	set +e
	if [ -n "${SAMPLER_PID:-}" ]; then kill "$SAMPLER_PID" 2>/dev/null; fi
	if [ "$rc" != 0 ] && [ -s "$WORK/server.log" ]; then
		log "exit status $rc; last lines of the server log:"
		tail -20 "$WORK/server.log" >&2
	fi
	if [ "$STARTED" = 1 ]; then
		if [ "$KEEP" = 1 ]; then
			log "KEEP=1: cluster left running: PGDATA=$PGDATA_DIR host=$SOCK port=$PORT (stop: runuser -u $PGOSUSER -- $BINDIR/pg_ctl -D $PGDATA_DIR stop)"
			huge_pages_kept_note >&2
		else
			as_pg "$BINDIR/pg_ctl" -D "$PGDATA_DIR" -m fast -w stop >/dev/null 2>&1
		fi
	fi
	if [ "$KEEP" != 1 ] || [ "$STARTED" != 1 ]; then huge_pages_release; fi
	if [ "$KEEP" != 1 ]; then
		rm -rf "$WORK"
	fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "initdb in $PGDATA_DIR (port $PORT)"
as_pg "$BINDIR/initdb" -D "$PGDATA_DIR" -U postgres -A trust -E UTF8 --locale=C >"$WORK/initdb.log" 2>&1 \
	|| { cat "$WORK/initdb.log" >&2; die "initdb failed"; }

# The same settings serve every contender.  Durability stays on (fsync,
# synchronous_commit, full_page_writes): a migration tool is judged with them.
# wal_level stays 'replica' (the default), as on a production primary.
# autovacuum is off so that no background vacuum lands in one contender's
# timing; the script runs CHECKPOINT + VACUUM ANALYZE between runs instead.
SETTINGS=(
	"shared_buffers = '$SHARED_BUFFERS'"
	"effective_cache_size = '16GB'"
	"work_mem = '64MB'"
	"maintenance_work_mem = '1GB'"
	"wal_buffers = '64MB'"
	"wal_level = 'replica'"
	"max_wal_size = '16GB'"
	"min_wal_size = '2GB'"
	"checkpoint_timeout = '30min'"
	"checkpoint_completion_target = 0.9"
	"fsync = on"
	"synchronous_commit = $SYNCHRONOUS_COMMIT"
	"acme_migrate.async_commit = $ASYNC_COMMIT"
	"full_page_writes = on"
	"wal_compression = off"
	"autovacuum = off"
	"jit = off"
	"max_connections = 50"
	"max_worker_processes = 16"
	"shared_preload_libraries = '$( [ "$PROFILE" = 1 ] && echo 'acme_migrate, pg_stat_statements' || echo acme_migrate)'"
	"listen_addresses = ''"
	"unix_socket_directories = '$SOCK'"
	"port = $PORT"
	"log_min_messages = warning"
	"log_checkpoints = on"
	"compute_query_id = on"
)
if [ "$PROFILE" = 1 ]; then SETTINGS+=("pg_stat_statements.track = 'all'" "pg_stat_statements.max = 1000"); fi
printf '%s\n' "${SETTINGS[@]}" >>"$PGDATA_DIR/postgresql.conf"
# shared memory in huge pages when this may reserve them (bench/huge_pages.sh)
huge_pages_reserve "$BINDIR" "$PGDATA_DIR" as_pg
SETTINGS+=("$HUGE_PAGES_SETTING")
echo "$HUGE_PAGES_SETTING" >>"$PGDATA_DIR/postgresql.conf"

log "starting the cluster"
as_pg "$BINDIR/pg_ctl" -D "$PGDATA_DIR" -l "$WORK/server.log" -w -t 120 start >/dev/null \
	|| { tail -50 "$WORK/server.log" >&2; die "server did not start"; }
STARTED=1

export PGHOST="$SOCK" PGPORT="$PORT" PGUSER=postgres
DB=acme_bench
DB2=acme_bench_pgcopydb
DB3=acme_bench_pgcopydb_post
PSQL=("$BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -At)
q() { "${PSQL[@]}" -d "${QDB:-$DB}" -c "$1"; }       # one query, unaligned tuples only

"${PSQL[@]}" -d postgres -c "CREATE DATABASE $DB" -c "CREATE DATABASE $DB2" -c "CREATE DATABASE $DB3"

# ---------------------------------------------------------------- header
PGVERSION=$(QDB=postgres q "SELECT version()")
{
	echo "================================================================================"
	echo "acme_migrate bench  $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
	echo "repo:      $REPO  ($(git -C "$REPO" log -1 --format='%h %s' 2>/dev/null || echo 'not a git checkout'))"
	echo "installed: $PKGLIBDIR/acme_migrate.so ($(date -r "$PKGLIBDIR/acme_migrate.so" '+%Y-%m-%d %H:%M:%S'))"
	echo "server:    $PGVERSION"
	echo "pgcopydb:  $("$PGCOPYDB" --version 2>/dev/null | grep -i 'pgcopydb version' | head -1)"
	echo "machine:   $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')), kernel $(uname -r)"
	free -g | sed 's/^/           /'
	echo "disk:      $(df -h "$WORK" | awk 'NR==2 {print $1 ", " $4 " free"}')"
	echo "rows=$ROWS reps=$REPS contenders: $CONTENDERS"
	echo "settings (postgresql.conf, the same for every contender):"
	printf '           %s\n' "${SETTINGS[@]}"
	echo "           ($HUGE_PAGES_NOTE)"
	echo "================================================================================"
} 

# ---------------------------------------------------------------- schema and data
# orders: bigint key, int, numeric(12,2), text, timestamptz, 40-character text
ORDERS_COLS="id bigint NOT NULL, customer_id integer NOT NULL, amount numeric(12,2) NOT NULL,
	status text NOT NULL, created_at timestamptz NOT NULL, note text NOT NULL"

log "creating the schema"
case " $CONTENDERS " in
	*" a "*|*" c "*) "${PSQL[@]}" -d "$DB" -c "CREATE EXTENSION acme_migrate" ;;
	*) log "contenders a and c not selected: the extension is not created" ;;
esac
if [ "$PROFILE" = 1 ]; then "${PSQL[@]}" -d "$DB" -c "CREATE EXTENSION pg_stat_statements"; fi
"${PSQL[@]}" -d "$DB" <<SQL
CREATE SCHEMA legacy;
CREATE SCHEMA app;
CREATE PROCEDURE app.diy_run(bs integer) LANGUAGE plpgsql AS \$\$
DECLARE
	last_id bigint := 0;
	n bigint;
BEGIN
	LOOP
		WITH ins AS (
			INSERT INTO app.orders_run SELECT * FROM legacy.orders
			WHERE id > last_id ORDER BY id LIMIT bs RETURNING id)
		SELECT count(*), max(id) INTO n, last_id FROM ins;
		EXIT WHEN n = 0;
		COMMIT;
	END LOOP;
END
\$\$;
CREATE TABLE legacy.orders ($ORDERS_COLS);
CREATE TABLE app.orders_run ($ORDERS_COLS, CONSTRAINT orders_run_pkey PRIMARY KEY (id));
CREATE TABLE app.orders_insert ($ORDERS_COLS, CONSTRAINT orders_insert_pkey PRIMARY KEY (id));
SQL
# the pgcopydb target: same schema-qualified name as the source (pgcopydb
# copies legacy.orders to legacy.orders), with the same primary key
"${PSQL[@]}" -d "$DB2" <<SQL
CREATE SCHEMA legacy;
CREATE TABLE legacy.orders ($ORDERS_COLS, CONSTRAINT orders_pkey PRIMARY KEY (id));
SQL
# d2's target: the table without its primary key, which pgcopydb builds
"${PSQL[@]}" -d "$DB3" <<SQL
CREATE SCHEMA legacy;
CREATE TABLE legacy.orders ($ORDERS_COLS);
SQL

log "generating $ROWS source rows"
t0=$(date +%s.%N)
"${PSQL[@]}" -d "$DB" <<SQL
SET synchronous_commit = off;
INSERT INTO legacy.orders
SELECT i,
       (i * 7919 % 200000)::integer + 1,
       ((i * 104729 % 10000000) / 100.0)::numeric(12,2),
       (ARRAY['new', 'paid', 'shipped', 'delivered', 'cancelled', 'refunded'])[1 + i % 6],
       timestamptz '2020-01-01 00:00:00+00' + i * interval '7 seconds',
       substr(md5(i::text) || md5((-i)::text), 1, 40)
FROM generate_series(1::bigint, $ROWS::bigint) AS i;
ALTER TABLE legacy.orders ADD CONSTRAINT orders_pkey PRIMARY KEY (id);
VACUUM (FREEZE, ANALYZE) legacy.orders;
CHECKPOINT;
SQL
log "source ready in $(echo "$(date +%s.%N) - $t0" | bc) s"
SRC_ROWS=$(q "SELECT count(*) FROM legacy.orders")
SRC_SIZE=$(q "SELECT pg_total_relation_size('legacy.orders')")
SRC_HEAP=$(q "SELECT pg_relation_size('legacy.orders')")
[ "$SRC_ROWS" = "$ROWS" ] || die "source has $SRC_ROWS rows, expected $ROWS"

# ---------------------------------------------------------------- helpers
# CPU seconds used so far by the whole cluster: the postmaster, its live
# children (backends, checkpointer, walwriter, ...), and the children it has
# reaped (cutime/cstime), so that exited backends (pgcopydb's) count too
CLK_TCK=$(getconf CLK_TCK)
cluster_cpu() {
	local pm files
	pm=$(head -1 "$PGDATA_DIR/postmaster.pid")
	files=$(ps -o pid= --ppid "$pm" | awk '{print "/proc/" $1 "/stat"}' || true)
	{
		sed 's/^.*) //' "/proc/$pm/stat" | awk '{print $12 + $13 + $14 + $15}'
		# a child may exit between ps and cat: its file is then simply missing
		{ cat $files 2>/dev/null || true; } | sed 's/^.*) //' | awk '{print $12 + $13}'
	} | awk -v hz="$CLK_TCK" '{t += $1} END {printf "%.2f", t / hz}'
}

# reset between runs: empty targets, everything vacuumed, clean checkpoint
settle() {
	"${PSQL[@]}" -d "$DB" -c "TRUNCATE app.orders_run, app.orders_insert" -c "VACUUM ANALYZE" -c "CHECKPOINT"
	"${PSQL[@]}" -d "$DB2" -c "TRUNCATE legacy.orders" -c "VACUUM ANALYZE" -c "CHECKPOINT"
	"${PSQL[@]}" -d "$DB3" -c "SET client_min_messages = warning" \
		-c "ALTER TABLE legacy.orders DROP CONSTRAINT IF EXISTS orders_pkey" \
		-c "DROP INDEX IF EXISTS legacy.orders_pkey" -c "TRUNCATE legacy.orders" \
		-c "VACUUM ANALYZE" -c "CHECKPOINT"
	# warm the source in shared buffers / page cache for every contender alike
	q "SELECT count(*) FROM legacy.orders" >/dev/null
}

# memory sampler: every 0.1 s, VmRSS / RssAnon of the backend whose pid
# appears in $1.pid, until $1.done exists; one line per sample: t rss anon
sampler() {
	local base=$1 pid= t0 now
	while [ ! -s "$base.pid" ]; do sleep 0.02; done
	pid=$(cat "$base.pid")
	t0=$(date +%s.%N)
	local perfpid=
	if [ "${PROFILE_THIS:-0}" = 1 ] && command -v perf >/dev/null; then
		perf record -F 499 -g -p "$pid" -o "$base.perf" >/dev/null 2>"$base.perf.log" &
		perfpid=$!
	fi
	while [ ! -e "$base.done" ] && [ -r "/proc/$pid/status" ]; do
		now=$(date +%s.%N)
		awk -v t="$(echo "$now - $t0" | bc)" '/^VmRSS:/ {r=$2} /^RssAnon:/ {a=$2} END {if (r != "") print t, r, a}' \
			"/proc/$pid/status" >>"$base.samples" 2>/dev/null || true
		sleep 0.1
	done
	if [ -n "$perfpid" ]; then kill -INT "$perfpid" 2>/dev/null; wait "$perfpid" 2>/dev/null || true; fi
}

# run_psql_timed NAME SQL_SETUP SQL_TIMED: runs SQL_SETUP, then SQL_TIMED
# timed by the server clock, in one session; records secs, VmHWM and samples
run_psql_timed() {
	local name=$1 setup=$2 timed=$3 base="$WORK/tmp/$1"
	rm -f "$base".*
	sampler "$base" &
	SAMPLER_PID=$!
	"${PSQL[@]}" -d "$DB" >"$base.out" <<SQL
$setup
SELECT pg_backend_pid() AS bpid \gset
\setenv BPID :bpid
\setenv BASE $base
\! echo \$BPID > \$BASE.pid.tmp && mv \$BASE.pid.tmp \$BASE.pid
SELECT extract(epoch FROM clock_timestamp()) AS t0 \gset
$timed
SELECT extract(epoch FROM clock_timestamp()) - :t0 AS secs \gset
\! touch \$BASE.done
\! grep -E '^(VmHWM|VmRSS|RssAnon|RssShmem):' /proc/\$BPID/status > \$BASE.status
\echo secs :secs
SQL
	wait "$SAMPLER_PID" || true
	SAMPLER_PID=
	RUN_SECS=$(awk '$1 == "secs" {print $2}' "$base.out")
	RUN_HWM=$(awk '$1 == "VmHWM:" {print $2}' "$base.status")
	RUN_ANON_END=$(awk '$1 == "RssAnon:" {print $2}' "$base.status")
	# peak private memory, and private memory at ~10% of the elapsed time
	RUN_ANON_PEAK=$(awk 'BEGIN {m = 0} $3 > m {m = $3} END {print m}' "$base.samples" 2>/dev/null || echo 0)
	RUN_ANON_10=$(awk -v T="$RUN_SECS" '$1 >= 0.1 * T {print $3; exit}' "$base.samples" 2>/dev/null || true)
	RUN_RSS_10=$(awk -v T="$RUN_SECS" '$1 >= 0.1 * T {print $2; exit}' "$base.samples" 2>/dev/null || true)
	RUN_RSS_END=$(awk '$1 == "VmRSS:" {print $2}' "$base.status")
	[ -n "$RUN_SECS" ] || die "$name: no timing in $base.out"
}

JOB=bench_orders
contender_job() {	# $1 = batch size
	local bs=$1
	"${PSQL[@]}" -d "$DB" -c "SELECT acme_migrate_drop(job_name) FROM acme_migrate.jobs WHERE job_name = '$JOB'" >/dev/null
	q "SELECT acme_migrate_create(job => '$JOB', source => 'legacy.orders', target => 'app.orders_run', batch_size => $bs)" >/dev/null
	if [ "$PROFILE_THIS" = 1 ]; then q "SELECT pg_stat_statements_reset()" >/dev/null; fi
	run_psql_timed "job$bs" "" "CALL acme_migrate_run('$JOB');"
	if [ "$PROFILE_THIS" = 1 ]; then profile_report "$c (batch_size $bs), rep 1" "$WORK/tmp/job$bs"; fi
	local state
	state=$(q "SELECT state || ' ' || rows_copied || ' ' || batches_done FROM acme_migrate.jobs WHERE job_name = '$JOB'")
	JOB_STATE=$state
	TGT_ROWS=$(q "SELECT count(*) FROM app.orders_run")
	TGT_SIZE=$(q "SELECT pg_total_relation_size('app.orders_run')")
}

PROFILES="$WORK/profiles.txt"
profile_report() {	# $1 title, $2 base of the run's files
	{
		echo
		echo "---- profile of $1 ----"
		echo "pg_stat_statements (track = all), top 12 by total time:"
		"$BINDIR/psql" -X -d "$DB" -c "SELECT calls, round(total_exec_time::numeric, 1) AS total_ms,
			round(mean_exec_time::numeric, 3) AS mean_ms, rows,
			left(regexp_replace(query, '\s+', ' ', 'g'), 110) AS query
			FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 12"
		if [ -s "$2.perf" ]; then
			echo "perf (backend only, self time, symbols >= 1%):"
			perf report -i "$2.perf" --stdio --no-children --sort dso,symbol --percent-limit 1 -g none 2>/dev/null \
				| grep -v '^#' | grep -v '^$' | head -40
		else
			echo "(no perf data: $(head -c 300 "$2.perf.log" 2>/dev/null))"
		fi
	} >>"$PROFILES"
}

contender_diy() {
	if [ "$PROFILE_THIS" = 1 ]; then q "SELECT pg_stat_statements_reset()" >/dev/null; fi
	run_psql_timed diy "" "CALL app.diy_run(10000);"
	if [ "$PROFILE_THIS" = 1 ]; then profile_report "p, rep 1" "$WORK/tmp/diy"; fi
	TGT_ROWS=$(q "SELECT count(*) FROM app.orders_run")
	TGT_SIZE=$(q "SELECT pg_total_relation_size('app.orders_run')")
}

contender_insert() {
	run_psql_timed insert "" "INSERT INTO app.orders_insert SELECT * FROM legacy.orders;"
	TGT_ROWS=$(q "SELECT count(*) FROM app.orders_insert")
	TGT_SIZE=$(q "SELECT pg_total_relation_size('app.orders_insert')")
}

SRC_URI="postgres:///$DB?host=$SOCK&port=$PORT&user=postgres"
printf '[include-only-table]\nlegacy.orders\n' >"$WORK/pgcopydb.filters"
if [ "$(id -u)" = 0 ]; then chown postgres: "$WORK/pgcopydb.filters"; fi

# run_pgcopydb TARGET_DB SUBCOMMAND...: pgcopydb with its defaults (no
# --table-jobs / --index-jobs given), one command after the other on the same
# --dir; the time is the wall time from the first start to the last end
run_pgcopydb() {
	local tdb=$1 dir="$WORK/pgcopydb" t0 t1 sub
	shift
	as_pg rm -rf "$dir"
	: >"$WORK/pgcopydb.log"
	: >"$WORK/pgcopydb.cpu"
	t0=$(date +%s.%N)
	for sub in "$@"; do
		/usr/bin/time -a -o "$WORK/pgcopydb.cpu" -f '%U %S' \
			"${AS_PG[@]}" env -u PGHOST -u PGPORT -u PGUSER HOME="$WORK" TMPDIR="$WORK/tmp" PATH="$BINDIR:/usr/bin:/bin" \
			"$PGCOPYDB" copy "$sub" --source "$SRC_URI" \
			--target "postgres:///$tdb?host=$SOCK&port=$PORT&user=postgres" \
			--dir "$dir" --filters "$WORK/pgcopydb.filters" >"$WORK/pgcopydb.one.log" 2>&1 \
			|| { cat "$WORK/pgcopydb.one.log" >>"$WORK/pgcopydb.log"; tail -40 "$WORK/pgcopydb.one.log" >&2; die "pgcopydb copy $sub failed"; }
		cat "$WORK/pgcopydb.one.log" >>"$WORK/pgcopydb.log"
	done
	t1=$(date +%s.%N)
	RUN_SECS=$(echo "$t1 - $t0" | bc)
	CLIENT_CPU=$(awk '{s += $1 + $2} END {printf "%.2f", s}' "$WORK/pgcopydb.cpu")
	cp "$WORK/pgcopydb.log" "$WORK/tmp/pgcopydb-$tdb.log"
	# pgcopydb's summary lines for the table: OID | schema | name | copy duration | indexes | create index duration
	PGCOPYDB_COPY=$(awk -F'|' '$2 ~ /legacy/ && $3 ~ /orders/ {gsub(/ /, ""); printf "%s%s COPY, %s index(es) in %s", sep, $4, $5, $6; sep = "; "}' "$WORK/pgcopydb.log" || true)
	# the COPY duration, as pgcopydb prints them: 123ms, 3s410, 12s, 1m05s, 1h02m
	PGCOPYDB_COPY_MS=$(awk -F'|' '$2 ~ /legacy/ && $3 ~ /orders/ {v = $4; gsub(/ /, "", v); ms = 0;
		if (match(v, /^[0-9]+h/)) {ms += substr(v, 1, RLENGTH - 1) * 3600000; v = substr(v, RLENGTH + 1)}
		if (match(v, /^[0-9]+m([0-9]|$)/) && v !~ /^[0-9]+ms$/) {n = v; sub(/m.*/, "", n); ms += n * 60000; sub(/^[0-9]+m/, "", v)}
		if (v ~ /^[0-9]+ms$/) {sub(/ms$/, "", v); ms += v}
		else if (v ~ /^[0-9]+s[0-9]+$/) {split(v, p, "s"); ms += p[1] * 1000 + p[2]}
		else if (v ~ /^[0-9]+s$/) {sub(/s$/, "", v); ms += v * 1000}
		if (ms > best) best = ms}
		END {if (best != "") print best}' "$WORK/pgcopydb.log" || true)
	TGT_ROWS=$(QDB=$tdb q "SELECT count(*) FROM legacy.orders")
	TGT_SIZE=$(QDB=$tdb q "SELECT pg_total_relation_size('legacy.orders')")
	TGT_PK=$(QDB=$tdb q "SELECT count(*) FROM pg_constraint WHERE conrelid = 'legacy.orders'::regclass AND contype = 'p'")
	if [ "$TGT_PK" != 1 ]; then die "pgcopydb copy $*: legacy.orders in $tdb has no primary key afterwards"; fi
}

# d: pgcopydb copy table-data into legacy.orders of $DB2, created there with
# its primary key beforehand.  Included in the time: catalog queries and
# snapshot, COPY source -> pgcopydb -> target (the primary key maintained
# during the COPY), and the VACUUM ANALYZE of the target pgcopydb runs after.
contender_pgcopydb() { run_pgcopydb "$DB2" table-data; }

# d2: pgcopydb's bulk path, index after data: copy table-data into $DB3's
# legacy.orders, which has no index, then copy indexes (CREATE UNIQUE INDEX)
# and copy constraints (ADD PRIMARY KEY USING INDEX).  ('pgcopydb copy data'
# would do all three in one command, but 0.10 also copies the acme_migrate
# extension's configuration tables there and has no filter to skip them.)
contender_pgcopydb_postindex() { run_pgcopydb "$DB3" table-data indexes constraints; }

# ---------------------------------------------------------------- warm-up
# One untimed copy first, so that no contender pays for first-time costs
# (shared memory pages faulted in for the first time, WAL segments created
# rather than recycled, relation files grown from nothing on a fresh cluster).
log "warm-up (untimed): INSERT ... SELECT into app.orders_run, then TRUNCATE"
settle
"${PSQL[@]}" -d "$DB" -c "INSERT INTO app.orders_run SELECT * FROM legacy.orders"
settle

# ---------------------------------------------------------------- run
declare -A TOTCPU SRVCPU CLICPU LOADS COPYMS TIMES HWM ANONPEAK ANON10 ANONEND RSS10 RSSEND ROWSOUT SIZEOUT EXTRA
FAILED=0
for rep in $(seq 1 "$REPS"); do
	for c in $CONTENDERS; do
		settle
		RUN_HWM= RUN_ANON_PEAK= RUN_ANON_10= RUN_ANON_END= RUN_RSS_10= RUN_RSS_END= JOB_STATE= PGCOPYDB_COPY= PGCOPYDB_COPY_MS=
		LOAD_BEFORE=$(cut -d' ' -f1 /proc/loadavg)
		CLIENT_CPU=
		CPU0=$(cluster_cpu)
		PROFILE_THIS=0
		if [ "$PROFILE" = 1 ] && [ "$rep" = 1 ]; then PROFILE_THIS=1; fi
		case $c in
			p) contender_diy ;;
			a) contender_job 10000 ;;
			b) contender_insert ;;
			c) contender_job 1000 ;;
			d) contender_pgcopydb ;;
			d2) contender_pgcopydb_postindex ;;
			*) die "unknown contender $c" ;;
		esac
		CPU1=$(cluster_cpu)
		SRV_CPU=$(printf "%.2f" "$(echo "$CPU1 - $CPU0" | bc)")
		TIMES[$c]="${TIMES[$c]:-} $RUN_SECS"
		SRVCPU[$c]="${SRVCPU[$c]:-} $SRV_CPU"
		CLICPU[$c]="${CLICPU[$c]:-} ${CLIENT_CPU:-}"
		TOTCPU[$c]="${TOTCPU[$c]:-} $(echo "$SRV_CPU + ${CLIENT_CPU:-0}" | bc)"
		HWM[$c]="${HWM[$c]:-} ${RUN_HWM:-}"
		ANONPEAK[$c]="${ANONPEAK[$c]:-} ${RUN_ANON_PEAK:-}"
		ANON10[$c]="${ANON10[$c]:-} ${RUN_ANON_10:-}"
		ANONEND[$c]="${ANONEND[$c]:-} ${RUN_ANON_END:-}"
		RSS10[$c]="${RSS10[$c]:-} ${RUN_RSS_10:-}"
		RSSEND[$c]="${RSSEND[$c]:-} ${RUN_RSS_END:-}"
		COPYMS[$c]="${COPYMS[$c]:-} ${PGCOPYDB_COPY_MS:-}"
		LOADS[$c]="${LOADS[$c]:-} $LOAD_BEFORE"
		ROWSOUT[$c]=$TGT_ROWS
		SIZEOUT[$c]=$TGT_SIZE
		if [ -n "$JOB_STATE" ]; then EXTRA[$c]="job: $JOB_STATE (state rows_copied batches)"; fi
		if [ -n "$PGCOPYDB_COPY" ]; then EXTRA[$c]="pgcopydb summary: $PGCOPYDB_COPY"; fi
		msg="rep $rep/$REPS $c: $(printf '%.2f' "$RUN_SECS") s, server CPU $SRV_CPU s${CLIENT_CPU:+, client CPU $CLIENT_CPU s}, $TGT_ROWS rows, loadavg before $LOAD_BEFORE"
		if [ -n "$RUN_HWM" ]; then msg="$msg, VmHWM ${RUN_HWM} kB, peak RssAnon ${RUN_ANON_PEAK} kB"; fi
		if [ -n "$JOB_STATE" ]; then msg="$msg, job $JOB_STATE"; fi
		log "$msg"
		if [ "$TGT_ROWS" != "$SRC_ROWS" ]; then
			log "ERROR: contender $c left $TGT_ROWS rows in its target, the source has $SRC_ROWS"
			FAILED=1
		fi
	done
done

# ---------------------------------------------------------------- report
median() { tr ' ' '\n' | awk 'NF' | sort -g | awk '{v[NR] = $1} END {if (NR == 0) {print ""; exit} if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
minmax() { tr ' ' '\n' | awk 'NF' | sort -g | awk 'NR == 1 {lo = $1} {hi = $1} END {if (NR) printf "%.2f-%.2f", lo, hi}'; }
mb() { awk -v b="$1" 'BEGIN {if (b == "") print "-"; else printf "%.1f", b / 1048576}'; }
kb2mb() { awk -v k="$1" 'BEGIN {if (k == "") print "-"; else printf "%.1f", k / 1024}'; }

declare -A MED LABEL
LABEL[a]="a  CALL acme_migrate_run, batch_size 10000"
LABEL[b]="b  INSERT INTO target SELECT * FROM source"
LABEL[c]="c  CALL acme_migrate_run, batch_size 1000"
LABEL[d]="d  pgcopydb copy table-data (PK pre-created)"
LABEL[p]="p  PL/pgSQL keyset loop, 10000 rows + COMMIT"
LABEL[d2]="d2 pgcopydb table-data+indexes+constraints"

echo
echo "RESULTS: $ROWS rows, median of $REPS reps (times in seconds, wall clock)"
echo "source legacy.orders: $SRC_ROWS rows, pg_total_relation_size $(mb "$SRC_SIZE") MB (heap $(mb "$SRC_HEAP") MB)"
echo
printf '%-47s %9s %13s %9s %9s %10s %9s %9s %6s\n' "contender" "median s" "min-max s" "rows/s" "srv CPU" "client CPU" "tgt rows" "tgt MB" "load1"
printf '%s\n' "--------------------------------------------------------------------------------------------------------------------------------"
for c in $CONTENDERS; do
	MED[$c]=$(echo "${TIMES[$c]}" | median)
	cc=$(echo "${CLICPU[$c]}" | median)
	printf '%-47s %9.2f %13s %9.0f %9.2f %10s %9s %9s %6s\n' "${LABEL[$c]}" "${MED[$c]}" "$(echo "${TIMES[$c]}" | minmax)" \
		"$(echo "$SRC_ROWS / ${MED[$c]}" | bc -l)" "$(echo "${SRVCPU[$c]}" | median)" "${cc:--}" \
		"${ROWSOUT[$c]}" "$(mb "${SIZEOUT[$c]}")" "$(echo "${LOADS[$c]}" | median)"
done
echo
echo "ratios of median wall times (goals from the issue in brackets):"
ratio() { if [ -n "${MED[$1]:-}" ] && [ -n "${MED[$2]:-}" ]; then printf '%.3f' "$(echo "${MED[$1]} / ${MED[$2]}" | bc -l)"; else echo "n/a"; fi; }
echo "  a/b = $(ratio a b)   [goal <= 1.0, stretch <= 0.85]"
echo "  a/d = $(ratio a d)   [goal <= 0.67, i.e. a at least 1.5x faster than pgcopydb]"
echo "  c/a = $(ratio c a)   [goal <= 1.1: run with 1k batches / run with 10k batches (issue 11)]"
case " $CONTENDERS " in *" d2 "*) echo "  a/d2 = $(ratio a d2)   [information: pgcopydb building the primary key after the data]" ;; esac
declare -A MEDCPU
for c in $CONTENDERS; do MEDCPU[$c]=$(echo "${TOTCPU[$c]}" | median); done
cratio() { if [ -n "${MEDCPU[$1]:-}" ] && [ -n "${MEDCPU[$2]:-}" ]; then printf '%.3f' "$(echo "${MEDCPU[$1]} / ${MEDCPU[$2]}" | bc -l)"; else echo "n/a"; fi; }
echo "the same ratios of median CPU seconds (server + client), for information:"
echo "  a/b = $(cratio a b)   a/d = $(cratio a d)   c/a = $(cratio c a)$(case " $CONTENDERS " in *" d2 "*) echo "   a/d2 = $(cratio a d2)" ;; esac)"
echo
echo "backend memory (kB -> MB; median over reps; each rep is a new connection):"
printf '  %-4s %10s %12s %14s %14s %14s %12s\n' "" "VmHWM" "VmRSS@10%" "VmRSS@end" "RssAnon peak" "RssAnon@10%" "RssAnon@end"
for c in $CONTENDERS; do
	[ -n "$(echo "${HWM[$c]:-}" | tr -d ' ')" ] || continue
	printf '  %-4s %10s %12s %14s %14s %14s %12s\n' "$c" \
		"$(kb2mb "$(echo "${HWM[$c]}" | median)")" "$(kb2mb "$(echo "${RSS10[$c]}" | median)")" \
		"$(kb2mb "$(echo "${RSSEND[$c]}" | median)")" "$(kb2mb "$(echo "${ANONPEAK[$c]}" | median)")" \
		"$(kb2mb "$(echo "${ANON10[$c]}" | median)")" "$(kb2mb "$(echo "${ANONEND[$c]}" | median)")"
done
echo "  VmHWM/VmRSS include the shared buffers the backend touched (RssShmem), which grow with"
echo "  the data it reads and writes; RssAnon is the backend's private memory (sampled every 0.1 s)."
echo
echo "notes:"
echo "  a, c: time of the CALL alone (server clock, same session); acme_migrate_create before it and"
echo "        acme_migrate_drop + TRUNCATE of the target after it are not timed."
case " $CONTENDERS " in *" p "*)
echo "  p:    time of CALL app.diy_run(10000): a PL/pgSQL loop of INSERT ... SELECT ... WHERE id > last"
echo "        ORDER BY id LIMIT 10000 + COMMIT, no checkpoint table: the do-it-yourself baseline."
;; esac
echo "  b:    time of the INSERT alone (server clock); one transaction."
case " $CONTENDERS " in *" d "*)
echo "  d:    wall time of the whole pgcopydb command, run with its defaults (no --table-jobs /"
echo "        --index-jobs given: pgcopydb $("$PGCOPYDB" --version 2>/dev/null | awk '/pgcopydb version/ {print $NF; exit}') defaults are table-jobs 4, index-jobs 4; with a single"
echo "        table not split, one COPY runs). Included: its catalog queries and snapshot, the COPY"
echo "        out of the source and into the target over the Unix socket, primary key maintained"
echo "        during the COPY (pre-created), and the VACUUM ANALYZE of the target it runs afterwards."
;; esac
case " $CONTENDERS " in *" d2 "*)
echo "  d2:   pgcopydb's bulk path (index after data), for information: 'pgcopydb copy table-data' into"
echo "        a table without index (COPY + VACUUM ANALYZE), then 'copy indexes' (CREATE UNIQUE INDEX)"
echo "        and 'copy constraints' (ADD PRIMARY KEY USING INDEX), same defaults; wall time of the three."
;; esac
for c in d d2; do
	m=$(echo "${COPYMS[$c]:-}" | median)
	if [ -n "$m" ]; then printf '  %-5s pgcopydb-reported COPY duration of the table alone, median: %.2f s\n' "$c:" "$(echo "$m / 1000" | bc -l)"; fi
done
for c in $CONTENDERS; do
	if [ -n "${EXTRA[$c]:-}" ]; then echo "  last $c: ${EXTRA[$c]}"; fi
done
echo "  srv CPU: median CPU seconds the whole cluster used during the run (backends, also exited ones,"
echo "        and background processes); client CPU: CPU seconds of pgcopydb and its sub-processes."
echo "        Less sensitive than wall time to other work competing for the CPUs."
echo "  load1: median 1-minute load average just before the runs (this cluster is idle between runs, so"
echo "        a load well above 0 means other work on the machine competed for its $(nproc) CPUs)."
echo "  before rep 1: one untimed INSERT ... SELECT (warm-up: shared memory, WAL segments to recycle)."
echo "  between runs: TRUNCATE of the targets, VACUUM ANALYZE and CHECKPOINT of all three databases,"
echo "  and a full read of the source (it fits in shared_buffers: cache warm for every contender)."
echo "  order: rep 1 runs $CONTENDERS, then rep 2 the same, ...; each run in a new connection."

if [ -s "$PROFILES" ]; then cat "$PROFILES"; fi

# ------------------------------------- hash, reconcile and worker benches
# (issues 3, 4, 8 and 11): each on this same cluster, in this same run; remote
# (issue 10) and citus (issue 13) start clusters of their own
for sub in hash reconcile workers fk online remote citus; do
	flag="$(echo "$sub" | tr a-z A-Z)_BENCH"
	if [ "${!flag:-1}" = 1 ] && [ -x "$HERE/${sub}_bench.sh" ]; then
		echo
		log "running bench/${sub}_bench.sh on the same cluster"
		# CONTENDERS is this script's: each sub-bench has its own (X_CONTENDERS)
		env -u KEEP -u CONTENDERS PGHOST="$SOCK" PGPORT="$PORT" PGDATABASE="$DB" PGUSER=postgres ROWS="$ROWS" \
			PG_CONFIG="$PG_CONFIG" \
			"$HERE/${sub}_bench.sh" \
			|| { log "ERROR: bench/${sub}_bench.sh failed"; FAILED=1; }
	fi
done

[ "$FAILED" = 0 ] || exit 1
exit 0
