#!/bin/bash
#
# reconcile_bench.sh: speed of acme_migrate_reconcile against a FULL JOIN
# report and pg_comparator
#
# Uses the cluster given by PGHOST/PGPORT/PGDATABASE (any of them set), or
# starts a throwaway cluster (as user postgres when run as root) on the first
# free port in 5950-5999 (RECONCILE_BENCH_PORT to choose) with
# shared_preload_libraries = 'acme_migrate', and removes it afterwards
# (KEEP=1 keeps it, and says how to reach it).
#
# Tables (bench/reconcile_bench_setup.sql): rb_orders with ROWS rows (default
# 5,000,000: bigint key id, int, numeric(12,2), text, timestamptz,
# 40-character text), rb_copy0 an exact copy of it, rb_copy<DIFFS> a copy
# with about DIFFS (default 500) deterministic differences: a third of them
# deleted rows, a third updated rows, a third inserted rows.  REUSE=1 keeps
# tables of the right size left by an earlier run (KEEP=1).
#
# For each copy, the median (and minimum) over REPS repetitions (default 3),
# contenders interleaved within a repetition, of the wall-clock time of:
#
#   reconcile      SELECT * FROM acme_migrate_reconcile(source => 'rb_orders',
#                  target => 'rb_copyN')        (report in acme_migrate.diffs)
#   full_join      CREATE TABLE rb_report AS SELECT <key, kind, both rows as
#                  jsonb> FROM rb_orders s FULL JOIN rb_copyN t USING (id)
#                  WHERE s IS DISTINCT FROM t
#   pg_comparator  pg_comparator --use-key --checksum-function=ck (pgcmp
#                  extension) of the two tables in the same database, its
#                  report (INSERT/UPDATE/DELETE lines) written to a file
#
# and the ratios reconcile / full_join (goal <= 0.4) and pg_comparator /
# reconcile (goal >= 5).
#
# Then the same comparison for other key types (KEY_TYPES, default "text
# uuid composite"): tables rk_<type>_src and rk_<type>_0 / rk_<type>_N made
# from rb_orders and its copies with the key id replaced by text
# ('o' || lpad(id, 12, '0') in the source's order of md5), a uuid (md5 of
# id) or an (int, text) pair, each with its own primary key: reconcile vs
# the FULL JOIN report, counts checked against each other, ratio with its
# goal (<= 0.4); for the text key also pg_comparator (when among the
# contenders; without --use-key, which takes integer keys only), ratio
# pg_comparator / reconcile with its goal (>= 5).  Every run's differences (kind and key) are checked
# against what the setup did and against the other contenders' (counts and
# the set of keys); a disagreement is printed, never hidden.  Times are
# reported, never asserted: the exit status is non-zero only on errors.
#
# All contenders run on the same server with the same settings (printed).
# With the throwaway cluster they are SETTINGS below; on a given cluster they
# are whatever it has.
#
# Environment: ROWS, DIFFS, REPS, KEEP=1, REUSE=1, RECONCILE_CONTENDERS (default
# "reconcile full_join pg_comparator"), PROFILE=1 (one extra reconcile run of
# the copy with differences under perf record --call-graph dwarf on its
# backend; the report
# goes to $PROFILE_OUT, default /tmp/reconcile_bench.perf.txt), HUGE_PAGES
# (auto: the throwaway cluster's shared memory in huge pages when run as
# root; off: never; bench/huge_pages.sh says why).

set -euo pipefail

ROWS=${ROWS:-5000000}
DIFFS=${DIFFS:-500}
REPS=${REPS:-3}
CONTENDERS=${RECONCILE_CONTENDERS:-"reconcile full_join pg_comparator"}
PROFILE_OUT=${PROFILE_OUT:-/tmp/reconcile_bench.perf.txt}
BINDIR=$(pg_config --bindir)
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/huge_pages.sh"
OWN_CLUSTER=
RUNAS=()
WORK=$(mktemp -d /tmp/reconcile_bench_out.XXXXXX)
chmod 777 "$WORK"

# the throwaway cluster's settings: tuned for a read-mostly comparison of
# tables that fit in memory, identical for every contender
SETTINGS=(
	shared_buffers=4GB
	work_mem=256MB
	maintenance_work_mem=1GB
	effective_cache_size=16GB
	random_page_cost=1.1
	max_wal_size=8GB
	checkpoint_timeout=30min
	fsync=off
	synchronous_commit=off
	full_page_writes=off
	jit=off
	max_parallel_workers_per_gather=2
	autovacuum=off
)

if [ "$(id -u)" = 0 ]; then
	RUNAS=(runuser -u postgres --)
fi

cleanup() {
	local rc=$?
	if [ -n "$OWN_CLUSTER" ]; then
		if [ "${KEEP:-0}" = 1 ]; then
			echo "KEEP=1: cluster kept in $OWN_CLUSTER/data; reach it with" \
				"PGHOST=$OWN_CLUSTER PGPORT=$PORT PGUSER=postgres PGDATABASE=postgres;" \
				"stop it with: ${RUNAS[*]} $BINDIR/pg_ctl -D $OWN_CLUSTER/data stop"
			huge_pages_kept_note
		else
			"${RUNAS[@]}" "$BINDIR/pg_ctl" -D "$OWN_CLUSTER/data" -m fast stop >/dev/null 2>&1 || true
			huge_pages_release
			rm -rf "$OWN_CLUSTER"
		fi
	fi
	rm -rf "$WORK"
	exit $rc
}
trap cleanup EXIT

port_free() {
	! ss -Htln 2>/dev/null | awk '{ print $4 }' | grep -q ":$1\$" &&
		[ ! -e "/tmp/.s.PGSQL.$1" ] && [ ! -e "/var/run/postgresql/.s.PGSQL.$1" ]
}

if [ -z "${PGHOST:-}${PGPORT:-}${PGDATABASE:-}" ]; then
	PORT=${RECONCILE_BENCH_PORT:-}
	if [ -z "$PORT" ]; then
		for p in $(seq 5950 5999); do
			if port_free "$p"; then PORT=$p; break; fi
		done
		[ -n "$PORT" ] || { echo "no free port in 5950-5999" >&2; exit 1; }
	fi
	OWN_CLUSTER=$(mktemp -d /tmp/reconcile_bench.XXXXXX)
	chmod 755 "$OWN_CLUSTER"
	[ ${#RUNAS[@]} -gt 0 ] && chown postgres "$OWN_CLUSTER"
	"${RUNAS[@]}" "$BINDIR/initdb" -D "$OWN_CLUSTER/data" -E UTF8 --locale=C.UTF-8 \
		--auth=trust >/dev/null
	{
		echo "port = $PORT"
		echo "listen_addresses = 'localhost'"
		echo "unix_socket_directories = '$OWN_CLUSTER'"
		echo "shared_preload_libraries = 'acme_migrate'"
		for s in "${SETTINGS[@]}"; do echo "$s"; done
	} | "${RUNAS[@]}" tee -a "$OWN_CLUSTER/data/postgresql.conf" >/dev/null
	huge_pages_reserve "$BINDIR" "$OWN_CLUSTER/data" "${RUNAS[@]}"
	echo "$HUGE_PAGES_SETTING" | "${RUNAS[@]}" tee -a "$OWN_CLUSTER/data/postgresql.conf" >/dev/null
	"${RUNAS[@]}" "$BINDIR/pg_ctl" -D "$OWN_CLUSTER/data" -l "$OWN_CLUSTER/log" -w start >/dev/null
	export PGHOST=$OWN_CLUSTER PGPORT=$PORT PGDATABASE=postgres PGUSER=postgres
	echo "throwaway cluster on port $PORT ($OWN_CLUSTER)"
fi

psql_q() {
	"${RUNAS[@]}" env PGHOST="${PGHOST:-}" PGPORT="${PGPORT:-}" \
		PGDATABASE="${PGDATABASE:-}" PGUSER="${PGUSER:-}" \
		psql -X -q -v ON_ERROR_STOP=1 "$@"
}

now_ms() { echo $(($(date +%s%N) / 1000000)); }

median() {
	sort -n | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2];
		else printf "%.0f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

psql_q -c "SET client_min_messages = warning" \
	-c "CREATE EXTENSION IF NOT EXISTS acme_migrate" \
	-c "CREATE EXTENSION IF NOT EXISTS pg_prewarm" >/dev/null
if [[ " $CONTENDERS " == *" pg_comparator "* ]]; then
	psql_q -c "SET client_min_messages = warning" -c "CREATE EXTENSION IF NOT EXISTS pgcmp" >/dev/null
fi

NDIFF=$(( DIFFS < ROWS ? DIFFS : ROWS ))
COPIES=(rb_copy0 "rb_copy$NDIFF")

have=-1
if [ "${REUSE:-0}" = 1 ] &&
	[ "$(psql_q -At -c "SELECT to_regclass('rb_orders') IS NOT NULL AND to_regclass('rb_copy0') IS NOT NULL
		AND to_regclass('rb_copy$NDIFF') IS NOT NULL AND to_regclass('rb_expected') IS NOT NULL")" = t ]; then
	have=$(psql_q -At -c "SELECT count(*) FROM rb_orders")
fi
if [ "$have" != "$ROWS" ]; then
	echo "creating rb_orders ($ROWS rows), rb_copy0 and rb_copy$NDIFF"
	t0=$(now_ms)
	psql_q -v rows="$ROWS" -v ndiff="$DIFFS" -f "$HERE/reconcile_bench_setup.sql" >/dev/null
	echo "  (setup took $(( ($(now_ms) - t0) / 1000 )) s)"
fi

echo
echo "server: $(psql_q -At -c 'SHOW server_version'), $(nproc) CPUs, $(free -g | awk '/^Mem:/ { print $2 " GB RAM" }'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "settings (same for every contender):"
psql_q -At -F' = ' -c "SELECT name, current_setting(name) FROM pg_settings
	WHERE name IN ('shared_buffers', 'work_mem', 'maintenance_work_mem', 'effective_cache_size',
		'random_page_cost', 'max_wal_size', 'fsync', 'synchronous_commit', 'full_page_writes',
		'jit', 'max_parallel_workers_per_gather', 'max_parallel_workers', 'autovacuum',
		'shared_preload_libraries', 'enable_hashjoin', 'enable_mergejoin', 'huge_pages')
	ORDER BY name" | sed 's/^/  /'
[ -z "$OWN_CLUSTER" ] || echo "  ($HUGE_PAGES_NOTE)"
so=$(pg_config --pkglibdir)/acme_migrate.so
echo "  acme_migrate: repository at $(git -C "$HERE/.." log -1 --format='%h %cI' 2>/dev/null || echo '?'), $so built $(date -d "@$(stat -c %Y "$so")" -Iseconds), server started $(psql_q -At -c "SELECT date_trunc('second', pg_postmaster_start_time())")"
if [ "$(stat -c %Y "$so")" -gt "$(psql_q -At -c "SELECT extract(epoch FROM pg_postmaster_start_time())::bigint")" ]; then
	echo "  NOTE: $so was reinstalled after the server started: the server runs the library it loaded then"
fi
echo "  pg_comparator $(pg_comparator --version 2>&1 | sed -n 's/.*version is //p'), pgcmp $(psql_q -At -c "SELECT extversion FROM pg_extension WHERE extname = 'pgcmp'")"
echo
echo "tables:"
printf '  %-14s %12s %14s %12s %14s\n' table rows heap indexes total
for t in rb_orders "${COPIES[@]}"; do
	psql_q -At -F' ' -c "SELECT count(*), pg_size_pretty(pg_table_size('$t')),
		pg_size_pretty(pg_indexes_size('$t')), pg_size_pretty(pg_total_relation_size('$t')) FROM $t" |
		while read -r n a b c d e f; do
			printf '  %-14s %12s %14s %12s %14s\n' "$t" "$n" "$a $b" "$c $d" "$e $f"
		done
done
echo "  differences set up in rb_copy$NDIFF: $(psql_q -At -c "SELECT string_agg(kind || ' ' || n, ', ' ORDER BY kind)
	FROM (SELECT kind, count(*) n FROM rb_expected GROUP BY kind) s")"

# keep the tables in shared buffers (they fit) so that no contender pays for
# the first read
prewarm() {
	psql_q -At -c "SELECT sum(pg_prewarm(c.oid)) FROM pg_class c
		WHERE c.relname IN ('rb_orders', 'rb_orders_pkey', 'rb_copy0', 'rb_copy0_pkey',
			'rb_copy$NDIFF', 'rb_copy${NDIFF}_pkey')" >/dev/null
}
prewarm

# ---- contenders; each writes "ms missing extra changed" on stdout and its
# differences as sorted "kind id" lines to $WORK/<name>.<copy>.keys

run_reconcile() {
	local copy=$1 t0 t1 out run
	t0=$(now_ms)
	out=$(psql_q -At -F' ' -c "SELECT run_id, missing, extra, changed
		FROM acme_migrate_reconcile(source => 'rb_orders', target => '$copy')")
	t1=$(now_ms)
	read -r run m e c <<<"$out"
	psql_q -At -F' ' -c "SELECT kind, key->>'id' FROM acme_migrate.diffs WHERE run_id = $run" |
		sort >"$WORK/reconcile.$copy.keys"
	# leave the catalog as it was (untimed)
	psql_q -c "DELETE FROM acme_migrate.reconcile_runs WHERE run_id = $run" >/dev/null
	echo "$((t1 - t0)) $m $e $c"
}

FULL_JOIN_SELECT="SELECT coalesce(s.id, t.id) AS id,
	CASE WHEN t.id IS NULL THEN 'missing' WHEN s.id IS NULL THEN 'extra' ELSE 'changed' END AS kind,
	to_jsonb(s) AS source_row, to_jsonb(t) AS target_row
FROM rb_orders s FULL JOIN %s t USING (id)
WHERE s IS DISTINCT FROM t"

full_join_plan() {
	# shellcheck disable=SC2059
	psql_q -At -c "EXPLAIN $(printf "$FULL_JOIN_SELECT" "$1")" |
		grep -oE '(Merge|Hash|Nested Loop)[A-Za-z ]*Join|(Parallel )?(Seq|Index|Index Only) Scan|Sort|Gather' |
		paste -sd, - | sed 's/,/, /g'
}

run_full_join() {
	local copy=$1 t0 t1 sql
	# shellcheck disable=SC2059
	sql=$(printf "$FULL_JOIN_SELECT" "$copy")
	psql_q -c "SET client_min_messages = warning" -c "DROP TABLE IF EXISTS rb_report" >/dev/null
	t0=$(now_ms)
	psql_q -c "CREATE TABLE rb_report AS $sql" >/dev/null
	t1=$(now_ms)
	psql_q -At -F' ' -c "SELECT kind, id FROM rb_report" | sort >"$WORK/full_join.$copy.keys"
	echo "$((t1 - t0)) $(psql_q -At -F' ' -c "SELECT count(*) FILTER (WHERE kind = 'missing'),
		count(*) FILTER (WHERE kind = 'extra'), count(*) FILTER (WHERE kind = 'changed') FROM rb_report")"
}

# pg_comparator's URL: user@host:port/base/schema.table?key; a socket
# directory cannot be written as a URL host, so then the host stays empty and
# libpq takes it from PGHOST
pgc_url() {
	local host=${PGHOST:-}
	case $host in /*) host= ;; esac
	echo "pgsql://${PGUSER:-$(id -un)}@$host:${PGPORT:-5432}/${PGDATABASE:-postgres}/$(psql_q -At -c 'SELECT current_schema()').$1?${2:-id}"
}

run_pg_comparator() {
	local copy=$1 t0 t1 out=$WORK/pg_comparator.$copy.out
	t0=$(now_ms)
	"${RUNAS[@]}" env PGHOST="${PGHOST:-}" PGPORT="${PGPORT:-}" PGDATABASE="${PGDATABASE:-}" \
		PGUSER="${PGUSER:-}" pg_comparator --use-key --checksum-function=ck \
		"$(pgc_url rb_orders)" "$(pgc_url "$copy")" >"$out" 2>"$out.err" ||
		{ echo "pg_comparator failed:" >&2; cat "$out.err" >&2; return 1; }
	t1=$(now_ms)
	awk '$1 == "INSERT" { print "missing", $2 } $1 == "DELETE" { print "extra", $2 }
		$1 == "UPDATE" { print "changed", $2 }' "$out" | sort >"$WORK/pg_comparator.$copy.keys"
	echo "$((t1 - t0)) $(grep -c '^INSERT ' "$out" || true) $(grep -c '^DELETE ' "$out" || true) $(grep -c '^UPDATE ' "$out" || true)"
}

# what the setup did, as "kind id" lines
for copy in "${COPIES[@]}"; do
	if [ "$copy" = rb_copy0 ]; then
		: >"$WORK/expected.$copy.keys"
	else
		psql_q -At -F' ' -c "SELECT kind, id FROM rb_expected" | sort >"$WORK/expected.$copy.keys"
	fi
done

read -r -a ORDER <<<"$CONTENDERS"
if [[ " $CONTENDERS " == *" full_join "* ]]; then
	for copy in "${COPIES[@]}"; do
		echo "full_join plan on $copy: $(full_join_plan "$copy")"
	done
fi
declare -A RUNS=() COUNTS=() MED=() MIN=()
BAD=()

echo
echo "running: $REPS repetitions, contenders interleaved (${ORDER[*]})"
for ((r = 1; r <= REPS; r++)); do
	echo "  rep $r: load average $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) CPUs)"
	for copy in "${COPIES[@]}"; do
		for name in "${ORDER[@]}"; do
			res=$("run_$name" "$copy")
			read -r ms m e c <<<"$res"
			RUNS[$copy.$name]+="$ms "
			COUNTS[$copy.$name]="$m $e $c"
			if ! cmp -s "$WORK/$name.$copy.keys" "$WORK/expected.$copy.keys"; then
				BAD+=("$name on $copy (repetition $r): differences ($m missing, $e extra, $c changed) are not the $(wc -l <"$WORK/expected.$copy.keys") set up")
			fi
			printf '  rep %d %-9s %-14s %8d ms  missing %s extra %s changed %s\n' "$r" "$copy" "$name" "$ms" "$m" "$e" "$c"
		done
	done
done

echo
echo "results (wall clock, ms; median and minimum of $REPS):"
printf '  %-11s %-14s %10s %10s   %7s %7s %7s  %-6s  %s\n' copy contender median min missing extra changed keys runs
for copy in "${COPIES[@]}"; do
	for name in "${ORDER[@]}"; do
		MED[$copy.$name]=$(printf '%s\n' ${RUNS[$copy.$name]} | median)
		MIN[$copy.$name]=$(printf '%s\n' ${RUNS[$copy.$name]} | sort -n | head -n 1)
		read -r m e c <<<"${COUNTS[$copy.$name]}"
		if cmp -s "$WORK/$name.$copy.keys" "$WORK/expected.$copy.keys"; then ok=same; else ok=DIFFER; fi
		printf '  %-11s %-14s %10d %10d   %7s %7s %7s  %-6s  %s\n' "$copy" "$name" \
			"${MED[$copy.$name]}" "${MIN[$copy.$name]}" "$m" "$e" "$c" "$ok" "${RUNS[$copy.$name]}"
	done
done
echo "  (keys: 'same' when the contender's set of (kind, key) equals the one set up)"

echo
echo "ratios of medians (minima in parentheses):"
[[ " ${ORDER[*]} " == *" reconcile "* && ( " ${ORDER[*]} " == *" full_join "* || " ${ORDER[*]} " == *" pg_comparator "* ) ]] ||
	echo "  (none: they need reconcile and full_join or pg_comparator among CONTENDERS)"
for copy in "${COPIES[@]}"; do
	if [[ " ${ORDER[*]} " == *" reconcile "* && " ${ORDER[*]} " == *" full_join "* ]]; then
		awk -v a="${MED[$copy.reconcile]}" -v b="${MED[$copy.full_join]}" \
			-v a1="${MIN[$copy.reconcile]}" -v b1="${MIN[$copy.full_join]}" -v c="$copy" 'BEGIN {
			printf "  %-11s reconcile / full_join     %5.2f (%5.2f)   goal <= 0.4: %s\n", c, a / b, a1 / b1,
				(a / b <= 0.4) ? "met" : "MISSED" }'
	fi
	if [[ " ${ORDER[*]} " == *" reconcile "* && " ${ORDER[*]} " == *" pg_comparator "* ]]; then
		awk -v a="${MED[$copy.pg_comparator]}" -v b="${MED[$copy.reconcile]}" \
			-v a1="${MIN[$copy.pg_comparator]}" -v b1="${MIN[$copy.reconcile]}" -v c="$copy" 'BEGIN {
			printf "  %-11s pg_comparator / reconcile %5.2f (%5.2f)   goal >= 5:   %s\n", c, a / b, a1 / b1,
				(a / b >= 5) ? "met" : "MISSED" }'
	fi
done

echo
if [ ${#BAD[@]} -eq 0 ]; then
	echo "agreement: every contender found exactly the differences set up (same counts, same keys) in every run"
else
	echo "agreement: NOT all contenders agree:"
	printf '  %s\n' "${BAD[@]}"
	for copy in "${COPIES[@]}"; do
		for name in "${ORDER[@]}"; do
			if ! cmp -s "$WORK/$name.$copy.keys" "$WORK/expected.$copy.keys"; then
				echo "  $name on $copy, last run, first differing (kind, key) lines (< contender, > set up):"
				diff "$WORK/$name.$copy.keys" "$WORK/expected.$copy.keys" | grep '^[<>]' | head -n 10 | sed 's/^/    /' || true
			fi
		done
	done
fi

# ---- other key types: text, uuid, (int, text)
key_expr() {
	case $1 in
		text) echo "'o' || lpad(id::text, 12, '0') AS k" ;;
		uuid) echo "md5(id::text)::uuid AS k" ;;
		composite) echo "(id % 1000)::int AS k1, 'c' || (id / 1000) AS k2" ;;
	esac
}
key_cols() { if [ "$1" = composite ]; then echo "k1, k2"; else echo k; fi; }

KEY_TYPES=${KEY_TYPES:-"text uuid composite"}
for kt in $KEY_TYPES; do
	kc=$(key_cols "$kt")
	if [ "$(psql_q -At -c "SELECT to_regclass('rk_${kt}_$NDIFF') IS NOT NULL")" != t ] ||
		[ "${REUSE:-0}" != 1 ]; then
		for pair in "rb_orders:rk_${kt}_src" "rb_copy0:rk_${kt}_0" "rb_copy$NDIFF:rk_${kt}_$NDIFF"; do
			from=${pair%%:*} to=${pair#*:}
			# rows in an order unrelated to the key, as an application writes them
			psql_q -c "SET client_min_messages = warning" -c "DROP TABLE IF EXISTS $to" \
				-c "CREATE TABLE $to AS SELECT $(key_expr "$kt"), customer_id, amount, status, created_at, note
					FROM $from ORDER BY md5(id::text)" \
				-c "ALTER TABLE $to ADD PRIMARY KEY ($kc)" -c "VACUUM (FREEZE, ANALYZE) $to" >/dev/null
		done
	fi
	psql_q -At -c "SELECT sum(pg_prewarm(c.oid)) FROM pg_class c WHERE c.relname ~ '^rk_${kt}_'" >/dev/null
	src=rk_${kt}_src
	echo
	echo "key type $kt ($kc): $(psql_q -At -c "SELECT count(*) FROM $src") rows, $(psql_q -At -c "SELECT pg_size_pretty(pg_table_size('$src'))") heap"
	for copy in "rk_${kt}_0" "rk_${kt}_$NDIFF"; do
		rr="" rf=""
		for ((r = 1; r <= REPS; r++)); do
			t0=$(now_ms)
			out=$(psql_q -At -F' ' -c "SELECT run_id, missing, extra, changed
				FROM acme_migrate_reconcile(source => '$src', target => '$copy')")
			t1=$(now_ms)
			read -r run m e c <<<"$out"
			method=$(psql_q -At -c "SELECT method FROM acme_migrate.reconcile_runs WHERE run_id = $run")
			psql_q -c "DELETE FROM acme_migrate.reconcile_runs WHERE run_id = $run" >/dev/null
			rr+="$((t1 - t0)) "
			psql_q -c "SET client_min_messages = warning" -c "DROP TABLE IF EXISTS rb_report" >/dev/null
			t0=$(now_ms)
			psql_q -c "CREATE TABLE rb_report AS SELECT $kc,
				CASE WHEN t IS NULL THEN 'missing' WHEN s IS NULL THEN 'extra' ELSE 'changed' END AS kind,
				to_jsonb(s) AS source_row, to_jsonb(t) AS target_row
				FROM $src s FULL JOIN $copy t USING ($kc) WHERE s IS DISTINCT FROM t" >/dev/null
			t1=$(now_ms)
			rf+="$((t1 - t0)) "
			fj=$(psql_q -At -F' ' -c "SELECT count(*) FILTER (WHERE kind = 'missing'),
				count(*) FILTER (WHERE kind = 'extra'), count(*) FILTER (WHERE kind = 'changed') FROM rb_report")
			[ "$fj" = "$m $e $c" ] || BAD+=("$kt: reconcile of $copy found $m $e $c (missing extra changed), the FULL JOIN $fj")
		done
		a=$(printf '%s\n' $rr | median) b=$(printf '%s\n' $rf | median)
		if [ "$kt" = text ] && [[ " $CONTENDERS " == *" pg_comparator "* ]]; then
			rp=""
			for ((r = 1; r <= REPS; r++)); do
				t0=$(now_ms)
				"${RUNAS[@]}" env PGHOST="${PGHOST:-}" PGPORT="${PGPORT:-}" PGDATABASE="${PGDATABASE:-}" \
					PGUSER="${PGUSER:-}" pg_comparator --checksum-function=ck \
					"$(pgc_url "$src" k)" "$(pgc_url "$copy" k)" >"$WORK/pgc_text.out" 2>"$WORK/pgc_text.err" ||
					{ echo "pg_comparator failed:" >&2; cat "$WORK/pgc_text.err" >&2; exit 1; }
				t1=$(now_ms)
				rp+="$((t1 - t0)) "
				n=$(grep -c '^\(INSERT\|UPDATE\|DELETE\) ' "$WORK/pgc_text.out" || true)
				[ "$n" = $((m + e + c)) ] || BAD+=("text: pg_comparator on $copy listed $n differences, reconcile $((m + e + c))")
			done
			p=$(printf '%s\n' $rp | median)
			awk -v p="$p" -v a="$a" -v c="$copy" -v rp="$rp" 'BEGIN {
				printf "  %-16s pg_comparator %6d ms: pg_comparator / reconcile %5.2f   goal >= 5: %s   (runs %s)\n",
					c, p, p / a, (p / a >= 5) ? "met" : "MISSED", rp }'
		fi
		awk -v a="$a" -v b="$b" -v c="$copy" -v m="$method" -v n="$m $e $c" -v rr="$rr" -v rf="$rf" 'BEGIN {
			printf "  %-16s reconcile (%s) %6d ms, full_join %6d ms, diffs %s: reconcile / full_join %5.2f   goal <= 0.4: %s   (runs %s/ %s)\n",
				c, m, a, b, n, a / b, (a / b <= 0.4) ? "met" : "MISSED", rr, rf }'
	done
done
if [ ${#BAD[@]} -gt 0 ]; then
	echo "key types: disagreements:"
	printf '  %s\n' "${BAD[@]}"
fi

# ---- optional profile of one reconcile run
if [ "${PROFILE:-0}" = 1 ]; then
	copy=${COPIES[1]}
	echo
	echo "profiling one reconcile of $copy (perf record --call-graph dwarf on its backend)"
	if [ -n "$OWN_CLUSTER" ] && [ "$(stat -c %Y "$so")" -gt "$(psql_q -At -c "SELECT extract(epoch FROM pg_postmaster_start_time())::bigint")" ]; then
		# perf cannot read the symbols of a library replaced on disk
		echo "  $so was reinstalled during the run: restarting the server to profile the installed build"
		"${RUNAS[@]}" "$BINDIR/pg_ctl" -D "$OWN_CLUSTER/data" -l "$OWN_CLUSTER/log" -w restart >/dev/null
		prewarm
	fi
	pidfile=$WORK/pid
	psql_q -At >"$WORK/profile.psql" 2>&1 <<SQL &
SELECT pg_backend_pid() \g $pidfile
SELECT pg_sleep(2);
SELECT clock_timestamp();
SELECT run_id, missing, extra, changed FROM acme_migrate_reconcile(source => 'rb_orders', target => '$copy');
SELECT clock_timestamp();
SQL
	ppsql=$!
	for _ in $(seq 1 50); do [ -s "$pidfile" ] && break; sleep 0.1; done
	bpid=$(tr -dc 0-9 <"$pidfile")
	perf record --call-graph dwarf,16384 -F 499 -o "$WORK/perf.data" -p "$bpid" >/dev/null 2>"$WORK/perf.err" &
	pperf=$!
	wait "$ppsql"
	kill -INT "$pperf"
	wait "$pperf" || true
	perf report -i "$WORK/perf.data" --no-children --stdio --percent-limit 0.5 -g none \
		>"$PROFILE_OUT" 2>/dev/null || true
	perf report -i "$WORK/perf.data" --children --stdio --percent-limit 2 -g caller,0.5,callee \
		>>"$PROFILE_OUT" 2>/dev/null || true
	echo "  psql output:"; sed 's/^/    /' "$WORK/profile.psql"
	echo "  inclusive time of the main parts (children included):"
	perf report -i "$WORK/perf.data" --children --stdio -g none 2>/dev/null |
		grep -E '\] (rc_merge|rc_advance|rc_next|PortalRunFetch|index_getnext_slot|index_fetch_heap|spi_printtup|heap_form_tuple|heap_deform_tuple|rc_compare_rows|rc_admit|rc_key_cmp|rc_report|SPI_execute_plan|SPI_freetuptable|asm_exc_page_fault)( |$)' |
		sed 's/^/   /'
	echo "  self time, top entries (full report with call graphs in $PROFILE_OUT):"
	grep -E '^ +[0-9]' "$PROFILE_OUT" | head -n 25 | sed 's/^/   /'
fi
