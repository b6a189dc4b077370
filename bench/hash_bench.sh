#!/bin/bash
#
# hash_bench.sh: speed of acme_migrate_table_hash against SQL alternatives
#
# Uses the cluster given by PGHOST/PGPORT/PGDATABASE (any of them set), or
# starts a throwaway cluster (as user postgres when run as root) on
# HASH_BENCH_PORT (default 5590) and removes it afterwards.
#
# Creates hash_bench_orders with ROWS rows (default 5,000,000): bigint key,
# int, numeric(12,2), text, timestamptz, 40-character text; then prints the
# median over REPS runs (default 5: the runs are short, and a few noisy
# ones must not move the median) of:
#
#   acme       SELECT * FROM acme_migrate_table_hash('hash_bench_orders')
#   range      SELECT count(*) FROM acme_migrate_range_hashes('hash_bench_orders')
#              (64 key ranges from a sample of the primary key)
#   hre        SELECT count(*), sum(hash_record_extended(t, 0)) FROM ... t
#   md5        SELECT count(*), sum(('x' || substr(md5(t::text), 1, 16))
#                                   ::bit(64)::bigint) FROM ... t
#   floor      SELECT count(note) FROM ...   (note is the last column)
#
# once with parallel query off (max_parallel_workers_per_gather = 0: every
# contender on one core) and once with the server's parallel settings
# (acme_migrate_table_hash and acme_migrate_range_hashes then share a
# parallel scan with parallel workers, as count(note) does).  Goals (issue
# 11): table_hash / parallel count(note) <= 1.2 and range_hashes /
# table_hash <= 1.5, in the parallel mode.
#
# Environment: ROWS, REPS, KEEP=1 (reuse an existing table of ROWS rows),
# MODES ("serial parallel" by default).

set -euo pipefail

ROWS=${ROWS:-5000000}
REPS=${REPS:-5}
MODES=${MODES:-"serial parallel"}
PORT=${HASH_BENCH_PORT:-5590}
BINDIR=$(pg_config --bindir)
TABLE=hash_bench_orders
OWN_CLUSTER=
RUNAS=()

if [ "$(id -u)" = 0 ]; then
	RUNAS=(runuser -u postgres --)
fi

cleanup() {
	if [ -n "$OWN_CLUSTER" ]; then
		"${RUNAS[@]}" "$BINDIR/pg_ctl" -D "$OWN_CLUSTER/data" -m fast stop >/dev/null 2>&1 || true
		rm -rf "$OWN_CLUSTER"
	fi
}
trap cleanup EXIT

if [ -z "${PGHOST:-}${PGPORT:-}${PGDATABASE:-}" ]; then
	OWN_CLUSTER=$(mktemp -d /tmp/hash_bench.XXXXXX)
	chmod 755 "$OWN_CLUSTER"
	[ ${#RUNAS[@]} -gt 0 ] && chown postgres "$OWN_CLUSTER"
	"${RUNAS[@]}" "$BINDIR/initdb" -D "$OWN_CLUSTER/data" -E UTF8 --locale=C.UTF-8 >/dev/null
	"${RUNAS[@]}" "$BINDIR/pg_ctl" -D "$OWN_CLUSTER/data" -l "$OWN_CLUSTER/log" \
		-o "-p $PORT -k $OWN_CLUSTER -c shared_buffers=2GB -c fsync=off -c max_wal_size=8GB" \
		-w start >/dev/null
	export PGHOST=$OWN_CLUSTER PGPORT=$PORT PGDATABASE=postgres PGUSER=postgres
	echo "throwaway cluster on port $PORT"
fi

psql_q() {
	"${RUNAS[@]}" env PGHOST="${PGHOST:-}" PGPORT="${PGPORT:-}" \
		PGDATABASE="${PGDATABASE:-}" PGUSER="${PGUSER:-}" \
		psql -X -q -v ON_ERROR_STOP=1 "$@"
}

psql_q -c "SET client_min_messages = warning" \
	-c "CREATE EXTENSION IF NOT EXISTS acme_migrate" >/dev/null

# shellcheck source=bench/orders.sh
source "$(dirname "${BASH_SOURCE[0]}")/orders.sh"
make_orders "$TABLE" "$ROWS"

# warm the cache: every contender then reads from shared buffers or the OS;
# and write out what earlier work left dirty, so that no checkpoint lands
# in one contender's timing
psql_q -At -c "SELECT count(note) FROM $TABLE" >/dev/null
psql_q -At -c "SELECT count(note) FROM $TABLE" >/dev/null
psql_q -At -c "CHECKPOINT" >/dev/null

declare -A SQLS=(
	[acme]="SELECT * FROM acme_migrate_table_hash('$TABLE')"
	[range]="SELECT count(*) FROM acme_migrate_range_hashes('$TABLE')"
	[hre]="SELECT count(*), sum(hash_record_extended(t, 0)) FROM $TABLE t"
	[md5]="SELECT count(*), sum(('x' || substr(md5(t::text), 1, 16))::bit(64)::bigint) FROM $TABLE t"
	[floor]="SELECT count(note) FROM $TABLE"
)
ORDER=(acme range hre md5 floor)

# milliseconds of one run of a query, measured in the server
time_ms() {
	local setting=$1 sql=$2
	psql_q -At <<SQL | tail -n 1
$setting
DO \$\$
DECLARE t0 timestamptz := clock_timestamp(); r record;
BEGIN
	FOR r IN EXECUTE \$q\$$sql\$q\$ LOOP END LOOP;
	PERFORM set_config('hash_bench.ms',
		(extract(epoch FROM clock_timestamp() - t0) * 1000)::numeric(12,1)::text, false);
END
\$\$;
SELECT current_setting('hash_bench.ms');
SQL
}

median() {
	sort -n | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2];
		else printf "%.1f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

size=$(psql_q -At -c "SELECT pg_size_pretty(pg_table_size('$TABLE')) || ' (' ||
	pg_table_size('$TABLE') || ' bytes), ' || (SELECT count(*) FROM $TABLE) || ' rows'")
echo "table $TABLE: $size"
echo "server: $(psql_q -At -c 'SHOW server_version'), max_parallel_workers_per_gather=$(psql_q -At -c 'SHOW max_parallel_workers_per_gather'), reps=$REPS"

for mode in $MODES; do
	if [ "$mode" = serial ]; then
		setting="SET max_parallel_workers_per_gather = 0;"
	else
		setting=""
	fi
	declare -A MED=() MIN=() RUNS=()
	# contenders interleaved within each repetition, so that load drifting
	# on the machine hits all of them alike
	for ((r = 0; r < REPS; r++)); do
		for name in "${ORDER[@]}"; do
			RUNS[$name]+="$(time_ms "$setting" "${SQLS[$name]}" 2>/dev/null) "
		done
	done
	for name in "${ORDER[@]}"; do
		MED[$name]=$(printf '%s\n' ${RUNS[$name]} | median)
		MIN[$name]=$(printf '%s\n' ${RUNS[$name]} | sort -n | head -n 1)
		printf '%-9s %-6s median %9.1f ms  min %9.1f ms   runs: %s\n' "$mode" "$name" \
			"${MED[$name]}" "${MIN[$name]}" "${RUNS[$name]}"
	done
	awk -v a="${MED[acme]}" -v h="${MED[hre]}" -v m="${MED[md5]}" -v f="${MED[floor]}" \
		-v a1="${MIN[acme]}" -v h1="${MIN[hre]}" -v f1="${MIN[floor]}" -v mode="$mode" \
		-v g="${MED[range]}" -v g1="${MIN[range]}" 'BEGIN {
		fgoal = (mode == "parallel") ? 1.2 : 1.5;
		printf "%-9s medians: table_hash/floor %.2f (goal <= %.1f: %s)   range_hashes/table_hash %.2f (goal <= 1.5: %s)   table_hash/hre %.2f (goal <= 0.7)   table_hash/md5 %.2f\n",
			mode, a / f, fgoal, (a / f <= fgoal) ? "met" : "MISSED", g / a, (g / a <= 1.5) ? "met" : "MISSED", a / h, a / m;
		printf "%-9s minima:  table_hash/floor %.2f   range_hashes/table_hash %.2f   table_hash/hre %.2f\n", mode, a1 / f1, g1 / a1, a1 / h1
	}'
	unset MED MIN RUNS
done
