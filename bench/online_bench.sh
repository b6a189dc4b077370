#!/bin/bash
#
# online_bench.sh: what online migration costs (issue 8)
#
# Uses the cluster given by PGHOST/PGPORT/PGDATABASE (bench/bench.sh runs it
# on its own cluster, after the other benches), or starts a throwaway cluster
# (as user postgres when run as root) on a free port in 5800-5899 with
# shared_preload_libraries = 'acme_migrate', and removes it afterwards.
#
# Tables: ob_orders (ONLINE_ROWS rows, default 1,000,000; bench/orders.sh's
# layout) and ob_small (ONLINE_SMALL_ROWS, default 200,000), each with an
# empty target of the same layout.  Three figures:
#
#   1. capture cost: pgbench TPS of single-row writes on ob_orders (custom
#      script: 50% UPDATE by key, 30% INSERT, 20% DELETE by key; 8 clients,
#      ONLINE_SECS seconds, default 15) without capture and with trigger
#      capture (a job created with capture_changes, nothing catching up),
#      interleaved, REPS times each (default 3); medians, and the cost in %
#      of TPS.  Goal: at most 10%.
#   2. catch-up rate: a fresh capture job on ob_orders is copied with
#      CALL acme_migrate_run (rows/s), then a backlog of ONLINE_BACKLOG
#      changes (default 200,000: one UPDATE of that many rows, nothing else
#      running) is applied with acme_migrate_catch_up (changes/s); the ratio
#      catch-up / copy, median over REPS.  Goal: at least 1.  For scale,
#      the same keys rewritten by hand, each in one transaction rolled back:
#      DELETE + INSERT ... SELECT (what catch-up does), and one UPDATE ...
#      FROM the source, PostgreSQL's cheapest way to change existing rows.
#   3. cut-over lock: a capture job on ob_small is copied, one worker
#      catches up, pgbench writes at --rate 500 (8 clients), and
#      acme_migrate_cutover runs in the middle; the lock held, the attempts
#      and the changes drained, REPS times; the longest lock held.  Goal:
#      under 100 ms.
#
# Reports figures with their goal; never fails on a missed goal.  Exits
# non-zero only on errors (pgbench failing, a copy that does not end copied).
#
# Environment: ONLINE_ROWS, ONLINE_SMALL_ROWS, ONLINE_SECS, ONLINE_BACKLOG,
# REPS, PG_CONFIG.

set -euo pipefail

ONLINE_ROWS=${ONLINE_ROWS:-1000000}
ONLINE_SMALL_ROWS=${ONLINE_SMALL_ROWS:-200000}
ONLINE_SECS=${ONLINE_SECS:-15}
ONLINE_BACKLOG=${ONLINE_BACKLOG:-200000}
REPS=${REPS:-3}
BINDIR=$("${PG_CONFIG:-pg_config}" --bindir)
OWN_CLUSTER=
RUNAS=()
BG_PIDS=()
TMP=$(mktemp -d /tmp/online_bench.XXXXXX)
chmod 755 "$TMP"

if [ "$(id -u)" = 0 ]; then
	RUNAS=(runuser -u postgres --)
fi

cleanup() {
	local p
	for p in "${BG_PIDS[@]}"; do
		kill "$p" 2>/dev/null || true
	done
	if [ -n "$OWN_CLUSTER" ]; then
		"${RUNAS[@]}" "$BINDIR/pg_ctl" -D "$OWN_CLUSTER/data" -m fast stop >/dev/null 2>&1 || true
		rm -rf "$OWN_CLUSTER"
	fi
	rm -rf "$TMP"
}
trap cleanup EXIT

if [ -z "${PGHOST:-}${PGPORT:-}${PGDATABASE:-}" ]; then
	PORT=
	for p in $(seq 5800 5899); do
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && [ ! -e "/tmp/.s.PGSQL.$p" ]; then
			PORT=$p
			break
		fi
	done
	[ -n "$PORT" ] || { echo "no free port in 5800-5899" >&2; exit 1; }
	OWN_CLUSTER=$(mktemp -d /tmp/online_bench_cluster.XXXXXX)
	chmod 755 "$OWN_CLUSTER"
	[ ${#RUNAS[@]} -gt 0 ] && chown postgres "$OWN_CLUSTER"
	"${RUNAS[@]}" "$BINDIR/initdb" -D "$OWN_CLUSTER/data" -U postgres -A trust -E UTF8 \
		--locale=C >/dev/null
	cat <<CONF | "${RUNAS[@]}" tee -a "$OWN_CLUSTER/data/postgresql.conf" >/dev/null
listen_addresses = ''
unix_socket_directories = '$OWN_CLUSTER'
port = $PORT
shared_preload_libraries = 'acme_migrate'
max_worker_processes = 16
shared_buffers = 1GB
max_wal_size = 16GB
checkpoint_timeout = 30min
CONF
	"${RUNAS[@]}" "$BINDIR/pg_ctl" -D "$OWN_CLUSTER/data" -l "$OWN_CLUSTER/log" -w start >/dev/null
	export PGHOST=$OWN_CLUSTER PGPORT=$PORT PGDATABASE=postgres PGUSER=postgres
	echo "throwaway cluster on port $PORT ($OWN_CLUSTER)"
fi
export PGUSER=${PGUSER:-postgres}

psql_q() {
	"$BINDIR/psql" -X -q -v ON_ERROR_STOP=1 "$@"
}
q() { psql_q -At -c "$1"; }

median() {
	sort -n | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2];
		else printf "%.1f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

psql_q -c "SET client_min_messages = warning" -c "CREATE EXTENSION IF NOT EXISTS acme_migrate" >/dev/null

# shellcheck source=bench/orders.sh
source "$(dirname "${BASH_SOURCE[0]}")/orders.sh"
make_orders ob_orders "$ONLINE_ROWS"
make_orders ob_small "$ONLINE_SMALL_ROWS"
psql_q <<SQL
SET client_min_messages = warning;
DROP TABLE IF EXISTS ob_orders_v2, ob_small_v2;
CREATE TABLE ob_orders_v2 (LIKE ob_orders INCLUDING ALL);
CREATE TABLE ob_small_v2 (LIKE ob_small INCLUDING ALL);
DROP SEQUENCE IF EXISTS ob_ins_seq;
CREATE SEQUENCE ob_ins_seq START 100000000;
SELECT acme_migrate_drop(job_name) FROM acme_migrate.jobs WHERE job_name LIKE 'ob_%';
SQL

# single-row writes: 50% update by key, 30% insert, 20% delete by key
writes_script() {	# table rows
	cat <<EOF
\\set r random(1, 10)
\\set id random(1, $2)
\\if :r <= 5
UPDATE $1 SET amount = amount + 1, status = 'paid' WHERE id = :id;
\\elif :r <= 8
INSERT INTO $1 VALUES (nextval('ob_ins_seq'), :id % 100000, :r, 'new', now(), md5(:id::text));
\\else
DELETE FROM $1 WHERE id = :id;
\\endif
EOF
}
writes_script ob_orders "$ONLINE_ROWS" >"$TMP/orders.pgbench"
writes_script ob_small "$ONLINE_SMALL_ROWS" >"$TMP/small.pgbench"

# pgbench; prints its TPS, exits on its failure
run_pgbench() {	# output-file pgbench-args...
	local out=$1
	shift
	if ! "$BINDIR/pgbench" -n "$@" >"$out" 2>"$out.err"; then
		echo "ERROR: pgbench $* failed:" >&2
		tail -5 "$out.err" >&2
		exit 1
	fi
	if grep -qiE 'error|abort' "$out.err"; then
		echo "ERROR: pgbench reported errors:" >&2
		grep -iE 'error|abort' "$out.err" | head -5 >&2
		exit 1
	fi
	awk '/^tps = / { print $3 }' "$out"
}

size_of() { q "SELECT pg_size_pretty(pg_table_size('$1')) || ' data + ' || pg_size_pretty(pg_indexes_size('$1')) || ' index, ' || (SELECT count(*) FROM $1) || ' rows'"; }

echo "ob_orders: $(size_of ob_orders)"
echo "ob_small:  $(size_of ob_small)"
echo "server: $(q "SELECT version()" | cut -d, -f1); $(nproc) CPUs; load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "settings: $(q "SELECT string_agg(name || '=' || current_setting(name), ', ' ORDER BY name)
	FROM pg_settings WHERE name IN ('shared_buffers', 'fsync', 'synchronous_commit', 'wal_level',
		'max_wal_size', 'autovacuum')")"

######################################################################
# 1. capture cost
######################################################################
echo
echo "==== 1. capture cost: pgbench, 8 clients, $ONLINE_SECS s, single-row writes on ob_orders, $REPS reps"
declare -A TPS=()
for ((r = 1; r <= REPS; r++)); do
	for mode in plain capture; do
		psql_q -c "VACUUM ANALYZE ob_orders" -c "CHECKPOINT" >/dev/null
		if [ "$mode" = capture ]; then
			q "SELECT acme_migrate_create(job => 'ob_cost', source => 'ob_orders', target => 'ob_orders_v2', capture_changes => true)" >/dev/null
		fi
		tps=$(run_pgbench "$TMP/cost.out" -c 8 -j 2 -T "$ONLINE_SECS" -f "$TMP/orders.pgbench")
		logged=""
		if [ "$mode" = capture ]; then
			logged=" ($(q "SELECT count(*) FROM acme_migrate.capture_log") changes captured)"
			q "SELECT acme_migrate_drop('ob_cost')" >/dev/null
		fi
		TPS[$mode]+="$tps "
		printf 'rep %d  %-8s %9.1f tps%s  load %s\n' "$r" "$mode" "$tps" "$logged" "$(cut -d' ' -f1 /proc/loadavg)"
	done
done
TPS_PLAIN=$(printf '%s\n' ${TPS[plain]} | median)
TPS_CAPTURE=$(printf '%s\n' ${TPS[capture]} | median)

######################################################################
# 2. catch-up rate against the copy rate
######################################################################
# seconds the statements $1 take on the backlog's keys (temp table ob_keys),
# in a transaction rolled back
rewrite_by_hand() {
	psql_q -At <<SQL
SET client_min_messages = warning;
CREATE TEMP TABLE ob_keys AS SELECT id FROM ob_orders ORDER BY id LIMIT $ONLINE_BACKLOG;
ANALYZE ob_keys;
SELECT extract(epoch FROM clock_timestamp()) AS t0 \gset
BEGIN;
$1
SELECT extract(epoch FROM clock_timestamp()) - :t0;
ROLLBACK;
SQL
}

echo
echo "==== 2. catch-up of a backlog of $ONLINE_BACKLOG changes vs batch copy of ob_orders, $REPS reps"
COPY_RATES=""
CATCHUP_RATES=""
SQL_RATES=""
UPD_RATES=""
RATIOS=""
for ((r = 1; r <= REPS; r++)); do
	psql_q <<SQL >/dev/null
SET client_min_messages = warning;
SELECT acme_migrate_drop(job_name) FROM acme_migrate.jobs WHERE job_name = 'ob_rate';
TRUNCATE ob_orders_v2;
VACUUM ANALYZE ob_orders;
CHECKPOINT;
SELECT acme_migrate_create(job => 'ob_rate', source => 'ob_orders', target => 'ob_orders_v2',
	capture_changes => true);
SQL
	read -r copy_s copied state < <(psql_q -At -F ' ' <<'SQL'
SELECT extract(epoch FROM clock_timestamp()) AS t0 \gset
CALL acme_migrate_run('ob_rate');
SELECT extract(epoch FROM clock_timestamp()) - :t0, rows_copied, state
  FROM acme_migrate.jobs WHERE job_name = 'ob_rate';
SQL
	)
	[ "$state" = copied ] || { echo "ERROR: job ob_rate is $state after CALL acme_migrate_run" >&2; exit 1; }
	# the backlog: one UPDATE of ONLINE_BACKLOG existing rows, nothing else running
	q "UPDATE ob_orders SET amount = amount + 1 WHERE id IN (SELECT id FROM ob_orders ORDER BY id LIMIT $ONLINE_BACKLOG)" >/dev/null
	psql_q -c "VACUUM ANALYZE ob_orders" -c "CHECKPOINT" >/dev/null
	backlog=$(q "SELECT capture_backlog FROM acme_migrate.progress WHERE job = 'ob_rate'")
	read -r catch_s applied < <(psql_q -At -F ' ' <<'SQL'
SELECT extract(epoch FROM clock_timestamp()) AS t0 \gset
SELECT acme_migrate_catch_up('ob_rate') AS n \gset
SELECT extract(epoch FROM clock_timestamp()) - :t0, :n;
SQL
	)
	left_=$(q "SELECT capture_backlog FROM acme_migrate.progress WHERE job = 'ob_rate'")
	# the floor PostgreSQL itself sets: the same keys written again by hand
	# in one transaction, rolled back, as catch-up does (delete the target's
	# rows, insert the source's) and in PostgreSQL's cheapest way to change
	# existing rows (one UPDATE ... FROM the source: no delete pass, no second
	# probe)
	sql_s=$(rewrite_by_hand "DELETE FROM ob_orders_v2 t USING ob_keys k WHERE t.id = k.id;
INSERT INTO ob_orders_v2 SELECT s.* FROM ob_orders s JOIN ob_keys k USING (id);")
	upd_s=$(rewrite_by_hand "UPDATE ob_orders_v2 t SET customer_id = s.customer_id, amount = s.amount,
	status = s.status, created_at = s.created_at, note = s.note
  FROM ob_orders s JOIN ob_keys k USING (id) WHERE t.id = k.id;")
	copy_rate=$(awk -v n="$copied" -v s="$copy_s" 'BEGIN { printf "%.0f", n / s }')
	catch_rate=$(awk -v n="$applied" -v s="$catch_s" 'BEGIN { printf "%.0f", n / s }')
	sql_rate=$(awk -v n="$ONLINE_BACKLOG" -v s="$sql_s" 'BEGIN { printf "%.0f", n / s }')
	upd_rate=$(awk -v n="$ONLINE_BACKLOG" -v s="$upd_s" 'BEGIN { printf "%.0f", n / s }')
	ratio=$(awk -v a="$catch_rate" -v b="$copy_rate" 'BEGIN { printf "%.2f", a / b }')
	COPY_RATES+="$copy_rate "
	CATCHUP_RATES+="$catch_rate "
	SQL_RATES+="$sql_rate "
	UPD_RATES+="$upd_rate "
	RATIOS+="$ratio "
	printf 'rep %d  copy %d rows in %.2f s = %s rows/s; catch-up %d of %d changes in %.2f s = %s changes/s (%d left); ratio %s; the same keys by hand: DELETE + INSERT ... SELECT %.2f s = %s keys/s, UPDATE ... FROM %.2f s = %s keys/s\n' \
		"$r" "$copied" "$copy_s" "$copy_rate" "$applied" "$backlog" "$catch_s" "$catch_rate" "$left_" "$ratio" "$sql_s" "$sql_rate" "$upd_s" "$upd_rate"
done
q "SELECT acme_migrate_drop('ob_rate')" >/dev/null
echo "ob_orders_v2 after a copy: $(size_of ob_orders_v2)"
COPY_RATE=$(printf '%s\n' $COPY_RATES | median)
CATCHUP_RATE=$(printf '%s\n' $CATCHUP_RATES | median)
RATIO=$(printf '%s\n' $RATIOS | median)
SQL_RATE=$(printf '%s\n' $SQL_RATES | median)
UPD_RATE=$(printf '%s\n' $UPD_RATES | median)

######################################################################
# 3. the cut-over lock under ~500 writes/s
######################################################################
echo
echo "==== 3. cut-over of ob_small under pgbench --rate 500 (8 clients), $REPS reps"
HELD=""
for ((r = 1; r <= REPS; r++)); do
	psql_q <<SQL >/dev/null
SET client_min_messages = warning;
SELECT acme_migrate_drop(job_name) FROM acme_migrate.jobs WHERE job_name = 'ob_cut';
TRUNCATE ob_small_v2;
VACUUM ANALYZE ob_small;
CHECKPOINT;
SELECT acme_migrate_create(job => 'ob_cut', source => 'ob_small', target => 'ob_small_v2',
	capture_changes => true);
CALL acme_migrate_run('ob_cut');
SELECT acme_migrate_start('ob_cut', workers => 1);
SQL
	"$BINDIR/pgbench" -n -c 8 -j 2 -T 12 -R 500 -f "$TMP/small.pgbench" >"$TMP/cut.out" 2>"$TMP/cut.out.err" &
	pgb=$!
	BG_PIDS+=("$pgb")
	sleep 5
	backlog=$(q "SELECT capture_backlog || ' entries, ' || workers || ' worker(s)' FROM acme_migrate.progress WHERE job = 'ob_cut'")
	res=$(q "SET client_min_messages = warning; SELECT attempts, round(extract(epoch FROM lock_held) * 1000, 1), changes_drained, verified
		FROM acme_migrate_cutover('ob_cut', lock_timeout => '200 ms', max_lock_time => '1 s')")
	IFS='|' read -r attempts held drained verified <<<"$res"
	waits=$(q "SELECT string_agg(outcome || ' wait ' || round(extract(epoch FROM lock_wait) * 1000) || ' ms', ', ' ORDER BY attempt)
		FROM acme_migrate.cutovers c JOIN acme_migrate.jobs j USING (job_id) WHERE j.job_name = 'ob_cut'")
	if ! wait "$pgb"; then
		echo "ERROR: pgbench failed during the cut-over:" >&2
		tail -5 "$TMP/cut.out.err" >&2
		exit 1
	fi
	BG_PIDS=()
	if grep -qiE 'error|abort' "$TMP/cut.out.err"; then
		echo "ERROR: pgbench reported errors during the cut-over:" >&2
		grep -iE 'error|abort' "$TMP/cut.out.err" | head -5 >&2
		exit 1
	fi
	HELD+="$held "
	printf 'rep %d  backlog before: %s; cut-over: %s attempt(s) [%s], lock held %s ms, %s changes drained, verified %s; pgbench %s tps, latency avg %s ms, stddev %s ms\n' \
		"$r" "$backlog" "$attempts" "$waits" "$held" "$drained" "$verified" \
		"$(awk '/^tps = / { printf "%.0f", $3 }' "$TMP/cut.out")" \
		"$(awk '/^latency average/ { print $4 }' "$TMP/cut.out")" \
		"$(awk '/^latency stddev/ { print $4 }' "$TMP/cut.out")"
done
q "SELECT acme_migrate_drop('ob_cut')" >/dev/null
HELD_MAX=$(printf '%s\n' $HELD | sort -n | tail -1)
HELD_MED=$(printf '%s\n' $HELD | median)

echo
echo "==== online migration: results (medians over $REPS reps; goals are reported, not enforced)"
awk -v p="$TPS_PLAIN" -v c="$TPS_CAPTURE" 'BEGIN {
	cost = 100 * (p - c) / p;
	printf "capture cost:   %.1f tps without capture, %.1f tps with trigger capture: %.1f%% (goal <= 10%%: %s)\n",
		p, c, cost, (cost <= 10 ? "met" : "MISSED") }'
awk -v a="$CATCHUP_RATE" -v b="$COPY_RATE" -v r="$RATIO" -v s="$SQL_RATE" -v u="$UPD_RATE" 'BEGIN {
	printf "catch-up rate:  %.0f changes/s vs batch copy %.0f rows/s: ratio %.2f (goal >= 1: %s)\n",
		a, b, r, (r >= 1 ? "met" : "MISSED");
	printf "                (the same keys rewritten by hand, DELETE + INSERT ... SELECT in one transaction: %.0f keys/s = %.2f of the copy rate; catch-up reaches %.2f of it)\n",
		s, s / b, a / s;
	printf "                (PostgreSQL'"'"'s cheapest rewrite of existing rows, one UPDATE ... FROM the source: %.0f keys/s = %.2f of the copy rate)\n",
		u, u / b }'
awk -v m="$HELD_MAX" -v d="$HELD_MED" 'BEGIN {
	printf "cut-over lock:  longest held %.1f ms (median %.1f ms) under pgbench --rate 500 (goal < 100 ms: %s)\n",
		m, d, (m < 100 ? "met" : "MISSED") }'
