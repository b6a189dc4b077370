#!/bin/bash
#
# remote_bench.sh: reconcile of a source on another server (issue 10, item 1)
#
# Two throwaway clusters on this machine (test/lib.sh): "legacy" holds table
# legacy.bo with REMOTE_ROWS rows (default 1,000,000: bigint key, int,
# numeric(12,2), text with NULLs, timestamptz, 40-character text) in two
# databases, with_ext (acme_migrate installed) and plain (without); "new"
# reaches them through postgres_fdw over TCP (servers old_ext, listing acme_migrate
# in its extensions option, and old_plain) and holds app.bo, built with the
# same deterministic SQL.  Then about REMOTE_DIFFS (default 100) differences
# are planted on the legacy side: a third deleted, a third updated, a third
# inserted.
#
# Contenders, each REPS times (default 3) interleaved, median and minimum:
#
#   remote_hashes  acme_migrate_reconcile(source => 'src_ext.bo', ...)
#   pushdown       acme_migrate_reconcile(source => 'src_plain.bo', ...)
#   full_fetch     the same with acme_migrate.remote_hashes = off: every
#                  row through postgres_fdw, as any comparison of a foreign
#                  table did before
#   pg_comparator  pg_comparator --use-key --checksum-function=ck between the
#                  two servers (pgcmp installed on both; built-in md5 when
#                  pgcmp is not there for this PostgreSQL)
#
# Rows fetched from the legacy server: the sum of pg_stat_statements.rows
# over the legacy database (postgres_fdw's FETCH and our own SELECTs), reset
# before each run; it is computed by the legacy server, not by our code.
# Bytes: what the legacy server sends, counted by a TCP relay
# (bench/byte_relay.py) put between it and its clients for one more,
# untimed run of each contender.
# Printed with its fraction of the full fetch's (goal: under 2% for
# remote_hashes), and each time against full_fetch and pg_comparator (goal:
# faster than pg_comparator).  Every run's difference counts are checked
# against the planted ones.  Times are reported, never asserted.
#
# Environment: REMOTE_ROWS, REMOTE_DIFFS, REPS, PG_CONFIG, ACME_PORT_MIN/MAX.

set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../test/lib.sh
source "$HERE/../test/lib.sh"

ROWS=${REMOTE_ROWS:-1000000}
DIFFS=${REMOTE_DIFFS:-100}
REPS=${REPS:-3}
CONTENDERS="remote_hashes pushdown full_fetch pg_comparator"
SETTINGS=(
	"shared_buffers = 1GB"
	"work_mem = 64MB"
	"fsync = off"
	"synchronous_commit = off"
	"full_page_writes = off"
	"autovacuum = off"
	"jit = off"
	${REMOTE_BENCH_EXTRA_SETTING:+"$REMOTE_BENCH_EXTRA_SETTING"}
)

LEGACY_DIR= LEGACY_PORT= NEW_DIR= NEW_PORT= RELAY_PID=
cleanup() {
	local rc=$?
	[ -z "$RELAY_PID" ] || kill -TERM "$RELAY_PID" 2>/dev/null || true
	CLUSTER_DIR=$LEGACY_DIR cluster_stop
	CLUSTER_DIR=$NEW_DIR cluster_stop
	exit $rc
}
trap cleanup EXIT

cluster_start "${SETTINGS[@]}" "shared_preload_libraries = 'pg_stat_statements'"
LEGACY_DIR=$CLUSTER_DIR LEGACY_PORT=$CLUSTER_PORT
CLUSTER_DIR=
cluster_start "${SETTINGS[@]}"
NEW_DIR=$CLUSTER_DIR NEW_PORT=$CLUSTER_PORT

lpsql() { # database, psql arguments: on the legacy server
	local db=$1
	shift
	as_pg "$PG_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h "$LEGACY_DIR" -p "$LEGACY_PORT" \
		-U postgres -d "$db" "$@"
}
npsql() {
	as_pg "$PG_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h "$NEW_DIR" -p "$NEW_PORT" \
		-U postgres -d postgres "$@"
}
now_ms() { echo $(($(date +%s%N) / 1000000)); }
median() {
	sort -n | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2];
		else printf "%.0f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

# the same rows on both sides, from deterministic SQL
TABLE_SQL="
CREATE TABLE bo (id bigint PRIMARY KEY, a integer, amount numeric(12,2), note text,
	placed timestamptz, pad text);
INSERT INTO bo SELECT g, g % 1000, (g % 99991) / 100.0,
	CASE WHEN g % 11 <> 0 THEN 'note ' || (g % 5003) END,
	timestamptz '2020-01-01 00:00:00+00' + g * interval '17 seconds',
	md5(g::text) || lpad((g % 97)::text, 8, '0')
  FROM generate_series(1, $ROWS) g;"
STEP=$((ROWS / (DIFFS + 1)))
PLANT_SQL="
DELETE FROM legacy.bo WHERE id IN (SELECT g * $STEP * 3 FROM generate_series(1, $((DIFFS / 3))) g);
UPDATE legacy.bo SET note = coalesce(note, '') || ' changed'
 WHERE id IN (SELECT g * $STEP * 3 - $STEP FROM generate_series(1, $((DIFFS / 3))) g);
INSERT INTO legacy.bo SELECT g * $STEP * 3 - 2 * $STEP + 1 + $ROWS, 0, 0, 'new', NULL, 'new'
  FROM generate_series(1, $((DIFFS - 2 * (DIFFS / 3)))) g;"

# pg_comparator with pgcmp's checksums (its built-in md5 mode fails on
# PostgreSQL 15: "cannot cast type bytea to bit"): left out without pgcmp
CK=ck
command -v pg_comparator >/dev/null || ensure_packages postgresql-comparator || true
if ! command -v pg_comparator >/dev/null ||
	[ ! -f "$("$PG_CONFIG" --sharedir)/extension/pgcmp.control" ]; then
	warn "pg_comparator or pgcmp is not installed for this server: pg_comparator left out"
	CK=md5
	CONTENDERS="remote_hashes pushdown full_fetch"
fi
log "creating legacy.bo ($ROWS rows) in databases with_ext and plain, and app.bo"
t0=$(now_ms)
for db in with_ext plain; do
	lpsql postgres -c "CREATE DATABASE $db"
	lpsql "$db" -c "CREATE SCHEMA legacy" -c "CREATE EXTENSION pg_stat_statements"
	[ "$CK" = md5 ] || lpsql "$db" -c "CREATE EXTENSION pgcmp"
	[ "$db" = plain ] || lpsql "$db" -c "CREATE EXTENSION acme_migrate"
	lpsql "$db" -c "SET search_path = legacy" -c "$TABLE_SQL" -c "VACUUM ANALYZE legacy.bo" &
done
[ "$CK" = md5 ] || npsql -c "CREATE EXTENSION pgcmp"
npsql -c "CREATE EXTENSION acme_migrate" -c "CREATE EXTENSION postgres_fdw" \
	-c "CREATE SCHEMA app" \
	-c "SET search_path = app" -c "$TABLE_SQL" -c "VACUUM ANALYZE app.bo"
wait
npsql -c "CREATE SERVER old_ext FOREIGN DATA WRAPPER postgres_fdw
		OPTIONS (host '127.0.0.1', port '$LEGACY_PORT', dbname 'with_ext',
			extensions 'acme_migrate', fetch_size '1000')" \
	-c "CREATE SERVER old_plain FOREIGN DATA WRAPPER postgres_fdw
		OPTIONS (host '127.0.0.1', port '$LEGACY_PORT', dbname 'plain', fetch_size '1000')" \
	-c "CREATE USER MAPPING FOR postgres SERVER old_ext OPTIONS (user 'postgres')" \
	-c "CREATE USER MAPPING FOR postgres SERVER old_plain OPTIONS (user 'postgres')" \
	-c "CREATE SCHEMA src_ext" -c "CREATE SCHEMA src_plain" \
	-c "IMPORT FOREIGN SCHEMA legacy FROM SERVER old_ext INTO src_ext" \
	-c "IMPORT FOREIGN SCHEMA legacy FROM SERVER old_plain INTO src_plain"
for db in with_ext plain; do lpsql "$db" -c "$PLANT_SQL"; done
WANT=$(lpsql plain -At -c "SELECT (SELECT count(*) FROM legacy.bo WHERE id > $ROWS) || ' ' ||
	($ROWS - (SELECT count(*) FROM legacy.bo WHERE id <= $ROWS)) || ' ' ||
	(SELECT count(*) FROM legacy.bo WHERE note LIKE '% changed')")
log "setup took $(( ($(now_ms) - t0) / 1000 )) s; planted (missing extra changed): $WANT"

# one run: prints "ms fetched missing extra changed"; the legacy server is
# reached on port $2 (default its own) by pg_comparator
run_one() {
	local c=$1 lport=${2:-$LEGACY_PORT} db=with_ext src=src_ext guc=on t0 t1 counts fetched
	case $c in pushdown | full_fetch | pg_comparator) db=plain src=src_plain ;; esac
	[ "$c" = full_fetch ] && guc=off
	lpsql "$db" -At -c "SELECT pg_stat_statements_reset()" >/dev/null
	t0=$(now_ms)
	if [ "$c" = pg_comparator ]; then
		as_pg pg_comparator --use-key --checksum-function="$CK" \
			"pgsql://postgres@127.0.0.1:$lport/plain/legacy.bo?id" \
			"pgsql://postgres@127.0.0.1:$NEW_PORT/postgres/app.bo?id" \
			>"/tmp/remote_bench.pgc.$$" 2>&1 || { cat "/tmp/remote_bench.pgc.$$" >&2; return 1; }
		t1=$(now_ms)
		counts="$(grep -c '^INSERT ' "/tmp/remote_bench.pgc.$$" || true) $(grep -c '^DELETE ' "/tmp/remote_bench.pgc.$$" || true) $(grep -c '^UPDATE ' "/tmp/remote_bench.pgc.$$" || true)"
		rm -f "/tmp/remote_bench.pgc.$$"
	else
		counts=$(npsql -At -F' ' -c "SET client_min_messages = warning" \
			-c "SET acme_migrate.remote_hashes = $guc" \
			-c "SELECT missing, extra, changed FROM acme_migrate_reconcile(
				source => '$src.bo', target => 'app.bo', key => '{id}')")
		t1=$(now_ms)
	fi
	fetched=$(lpsql "$db" -At -c "SELECT coalesce(sum(rows), 0) FROM pg_stat_statements
		WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
		  AND query NOT LIKE '%pg_stat_statements%'")
	echo "$((t1 - t0)) $fetched $counts"
}

declare -A TIMES FETCHED
echo
echo "remote reconcile: $ROWS rows, $DIFFS differences planted on the legacy server;" \
	"$(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
for rep in $(seq 1 "$REPS"); do
	for c in $CONTENDERS; do
		read -r ms fetched counts <<<"$(run_one "$c")"
		TIMES[$c]+="$ms"$'\n'
		FETCHED[$c]=$fetched
		[ "$counts" = "$WANT" ] ||
			echo "  WARNING: $c found (missing extra changed) $counts, planted $WANT"
	done
done
# bytes: one more, untimed run of each contender through a relay that
# counts what the legacy server sends (bench/byte_relay.py, on 127.0.0.1)
declare -A BYTES
RELAY_OUT=$(mktemp /tmp/remote_bench.relay.XXXXXX)
set_fdw_port() {
	npsql -c "ALTER SERVER old_ext OPTIONS (SET port '$1')" \
		-c "ALTER SERVER old_plain OPTIONS (SET port '$1')"
}
for c in $CONTENDERS; do
	rport=$(find_free_port) || die "no free port for the byte relay"
	rm -f "$RELAY_OUT" "$RELAY_OUT.ready"
	python3 "$HERE/byte_relay.py" "$rport" "$LEGACY_PORT" "$RELAY_OUT" &
	RELAY_PID=$!
	for _ in $(seq 1 100); do [ -f "$RELAY_OUT.ready" ] && break; sleep 0.1; done
	set_fdw_port "$rport"
	run_one "$c" "$rport" >/dev/null
	set_fdw_port "$LEGACY_PORT"
	kill -TERM "$RELAY_PID"
	wait "$RELAY_PID" || true
	RELAY_PID=
	read -r _ BYTES[$c] <"$RELAY_OUT"
done
rm -f "$RELAY_OUT" "$RELAY_OUT.ready"

full_ms=$(printf '%s' "${TIMES[full_fetch]}" | median)
pgc_ms=$(printf '%s' "${TIMES[pg_comparator]:-0}" | median)
full_rows=${FETCHED[full_fetch]}
full_bytes=${BYTES[full_fetch]}
printf '  %-14s %9s %9s %12s %8s %13s %8s %7s %7s\n' contender "median ms" "min ms" "rows fetched" "of full" \
	"bytes sent" "of full" "/ full" "/ pg_c"
for c in $CONTENDERS; do
	m=$(printf '%s' "${TIMES[$c]}" | median)
	mn=$(printf '%s' "${TIMES[$c]}" | sort -n | head -1)
	awk -v c="$c" -v m="$m" -v mn="$mn" -v f="${FETCHED[$c]}" -v ff="$full_rows" \
		-v b="${BYTES[$c]}" -v fb="$full_bytes" -v fm="$full_ms" -v pm="$pgc_ms" 'BEGIN {
		printf "  %-14s %9d %9d %12d %7.2f%% %13d %7.2f%% %7.2f ", c, m, mn, f, 100 * f / ff,
			b, 100 * b / fb, m / fm
		if (pm > 0) printf "%7.2f\n", m / pm; else printf "%7s\n", "-" }'
done
echo "  rows fetched: sum of pg_stat_statements.rows on the legacy database during the run (postgres_fdw"
echo "  FETCHes and our range figures; for pg_comparator the rows its statements there returned or wrote,"
echo "  its checksum tables included, so not a count of rows sent)."
echo "  bytes sent: what the legacy server sent on its connections (our figures, postgres_fdw's rows,"
echo "  pg_comparator's queries), counted by a TCP relay (bench/byte_relay.py) in one more, untimed run."
echo "  / full, / pg_c: median time against full_fetch's and pg_comparator's."
echo "  Both clusters are on this machine: sending rows costs next to nothing here, so full_fetch is as"
echo "  fast as it will ever be; across a network its time grows with the rows fetched, the remote modes' hardly."
[ "$CK" = md5 ] || echo "  pg_comparator: --use-key --checksum-function=ck (pgcmp on both servers), between the two servers over TCP."
echo "  goals: remote_hashes fetches under 2% of full_fetch's rows (and bytes), and runs faster than pg_comparator."
