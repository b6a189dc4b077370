#!/bin/bash
#
# workers_bench.sh: throughput of acme_migrate's background workers
#
# Uses the cluster given by PGHOST/PGPORT/PGDATABASE (any of them set; the
# library must be in its shared_preload_libraries only for the launcher, and
# pg_stat_statements must be preloaded for the bookkeeping figures), or
# starts a throwaway cluster (as user postgres when run as root) on a free
# port in 5900-5999 (WORKERS_BENCH_PORT to choose) with
# shared_preload_libraries = 'acme_migrate, pg_stat_statements' and
# max_worker_processes = 16, and removes it afterwards.
#
# Creates wb_orders with ROWS rows (default 5,000,000): bigint key, int,
# numeric(12,2), text, timestamptz, 40-character text; then copies it into
# an empty wb_orders_v2 with a primary key, REPS times (default 3), each
# contender once per repetition (interleaved, so that drifting load on the
# machine hits them alike):
#
#   w1     acme_migrate_start(job, workers => 1) + acme_migrate_wait
#   w2     acme_migrate_start(job, workers => 2) + acme_migrate_wait
#   run    CALL acme_migrate_run(job) in one session
#   plain  a PL/pgSQL procedure: INSERT ... SELECT ... WHERE id > last
#          ORDER BY id LIMIT batch, COMMIT after each (no bookkeeping)
#
# Every job uses batch_size BATCH (default 10000).  The time of a copy is
# measured in the server: from the start of its first batch to its last
# commit (jobs.finished_at), so that worker launch and acme_migrate_wait's
# polling interval do not count; the wall time seen by the client is
# printed too.  Prints medians, the w2/w1 throughput ratio, what the
# workers waited on during a 2-worker copy (pg_stat_activity sampled every
# 100 ms), CPU use (vmstat), WAL written (pg_stat_wal), and the cost of the
# catalog bookkeeping: (a) time of "run" against "plain", and (b) the time
# pg_stat_statements (track = all) counts in the statements on
# acme_migrate.* tables during a "run" copy, over that copy's time.
#
# Never asserts a time; exits non-zero only on errors.
#
# Environment: ROWS, REPS, BATCH, KEEP=1 (reuse an existing wb_orders of
# ROWS rows), WORKERS_CONTENDERS ("w1 w2 run plain" by default; not CONTENDERS,
# which make bench sets for its own contenders).

set -euo pipefail

ROWS=${ROWS:-5000000}
REPS=${REPS:-3}
BATCH=${BATCH:-10000}
CONTENDERS=${WORKERS_CONTENDERS:-"w1 w2 run plain"}
BINDIR=$(pg_config --bindir)
SRC=wb_orders
DST=wb_orders_v2
JOB=wb_job
OWN_CLUSTER=
RUNAS=()
BG_PIDS=()

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
}
trap cleanup EXIT

port_is_free() {
	! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null &&
		[ ! -e "/tmp/.s.PGSQL.$1" ] && [ ! -e "/var/run/postgresql/.s.PGSQL.$1" ]
}

if [ -z "${PGHOST:-}${PGPORT:-}${PGDATABASE:-}" ]; then
	PORT=${WORKERS_BENCH_PORT:-}
	if [ -z "$PORT" ]; then
		start=$((RANDOM % 100))
		for ((i = 0; i < 100; i++)); do
			p=$((5900 + (start + i) % 100))
			if port_is_free "$p"; then
				PORT=$p
				break
			fi
		done
		[ -n "$PORT" ] || { echo "no free port in 5900-5999" >&2; exit 1; }
	fi
	OWN_CLUSTER=$(mktemp -d /tmp/workers_bench.XXXXXX)
	chmod 755 "$OWN_CLUSTER"
	[ ${#RUNAS[@]} -gt 0 ] && chown postgres "$OWN_CLUSTER"
	"${RUNAS[@]}" "$BINDIR/initdb" -D "$OWN_CLUSTER/data" -U postgres -E UTF8 \
		--locale=C.UTF-8 >/dev/null
	cat <<CONF | "${RUNAS[@]}" tee -a "$OWN_CLUSTER/data/postgresql.conf" >/dev/null
listen_addresses = ''
unix_socket_directories = '$OWN_CLUSTER'
port = $PORT
shared_preload_libraries = 'acme_migrate, pg_stat_statements'
max_worker_processes = 16
shared_buffers = 1GB
max_wal_size = 16GB
checkpoint_timeout = 30min
track_wal_io_timing = on
pg_stat_statements.track = all
CONF
	"${RUNAS[@]}" "$BINDIR/pg_ctl" -D "$OWN_CLUSTER/data" -l "$OWN_CLUSTER/log" -w start >/dev/null
	export PGHOST=$OWN_CLUSTER PGPORT=$PORT PGDATABASE=postgres PGUSER=postgres
	echo "throwaway cluster on port $PORT ($OWN_CLUSTER)"
fi

psql_q() {
	"${RUNAS[@]}" env PGHOST="${PGHOST:-}" PGPORT="${PGPORT:-}" \
		PGDATABASE="${PGDATABASE:-}" PGUSER="${PGUSER:-}" \
		psql -X -q -v ON_ERROR_STOP=1 "$@"
}

psql_q -c "SET client_min_messages = warning" \
	-c "CREATE EXTENSION IF NOT EXISTS acme_migrate" >/dev/null
PGSS=0
if [ "$(psql_q -At -c "SELECT current_setting('shared_preload_libraries') ~ 'pg_stat_statements'")" = t ]; then
	psql_q -c "SET client_min_messages = warning" \
		-c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" >/dev/null
	PGSS=1
fi

# shellcheck source=bench/orders.sh
source "$(dirname "${BASH_SOURCE[0]}")/orders.sh"
make_orders "$SRC" "$ROWS"
psql_q <<SQL
SET client_min_messages = warning;
DROP TABLE IF EXISTS $DST;
CREATE TABLE $DST (LIKE $SRC INCLUDING ALL);
CREATE OR REPLACE PROCEDURE wb_plain_copy(batch integer)
LANGUAGE plpgsql AS \$\$
DECLARE
	last bigint := NULL;
	n bigint;
BEGIN
	LOOP
		WITH ins AS (
			INSERT INTO $DST
			SELECT * FROM $SRC WHERE last IS NULL OR id > last
			 ORDER BY id LIMIT batch
			RETURNING id)
		SELECT max(id), count(*) INTO last, n FROM ins;
		COMMIT;
		EXIT WHEN n < batch;
	END LOOP;
END \$\$;
SQL

# warm the cache
psql_q -At -c "SELECT count(note) FROM $SRC" >/dev/null

median() {
	sort -n | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2];
		else printf "%.1f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

now_ms() { date +%s%3N; }

# an empty target and a fresh job; a checkpoint so that none lands in the copy
reset_target() {
	psql_q <<SQL >/dev/null
SET client_min_messages = warning;
SELECT acme_migrate_drop(job_name) FROM acme_migrate.jobs WHERE job_name = '$JOB';
TRUNCATE $DST;
CHECKPOINT;
SELECT acme_migrate_create(job => '$JOB', source => '$SRC', target => '$DST',
	batch_size => $BATCH);
SQL
}

# server-side milliseconds of the job's copy: first batch start to finish
job_ms() {
	psql_q -At -c "SELECT round(extract(epoch FROM j.finished_at - min(b.started_at)) * 1000, 1)
		FROM acme_migrate.jobs j JOIN acme_migrate.batches b USING (job_id)
		WHERE j.job_name = '$JOB' GROUP BY j.finished_at"
}

check_copy() {
	local got
	got=$(psql_q -At -c "SELECT count(*) FROM $DST")
	if [ "$got" != "$ROWS" ]; then
		echo "ERROR: $1 copied $got rows, not $ROWS" >&2
		exit 1
	fi
}

wal_snapshot() {
	psql_q -At -F ' ' -c "SELECT wal_bytes, wal_write, wal_sync, wal_write_time, wal_sync_time FROM pg_stat_wal"
}

# sample the workers' wait events every 100 ms into $1 until $2 disappears
sample_waits() {
	local out=$1 pidfile=$2
	while [ -e "$pidfile" ]; do
		psql_q -At -c "SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU')
			FROM pg_stat_activity WHERE backend_type = 'acme_migrate worker'
			   OR (application_name = 'workers_bench' AND state = 'active')" >>"$out" 2>/dev/null || true
		sleep 0.1
	done
}

# one copy by contender $1; prints "server_ms wall_ms"
copy_once() {
	local what=$1 profile=${2:-0} t0 t1 ms vm="" waits="" flag="" w0="" w1=""
	reset_target
	if [ "$profile" = 1 ]; then
		vm=$(mktemp) waits=$(mktemp) flag=$(mktemp)
		chmod 666 "$vm" "$waits"
		vmstat 1 >"$vm" &
		BG_PIDS+=($!)
		sample_waits "$waits" "$flag" &
		BG_PIDS+=($!)
		w0=$(wal_snapshot)
	fi
	if [ "$what" = run ] && [ "$PGSS" = 1 ]; then
		psql_q -At -c "SELECT pg_stat_statements_reset()" >/dev/null
	fi
	t0=$(now_ms)
	case $what in
	w1 | w2)
		psql_q -At -c "SET client_min_messages = warning" \
			-c "SELECT acme_migrate_start('$JOB', workers => ${what#w})" \
			-c "SELECT acme_migrate_wait('$JOB', timeout => '2 hours')" >/dev/null
		;;
	run)
		PGAPPNAME=workers_bench psql_q -c "CALL acme_migrate_run('$JOB')" >/dev/null
		;;
	plain)
		PGAPPNAME=workers_bench psql_q -c "CALL wb_plain_copy($BATCH)" >/dev/null
		;;
	*)
		echo "ERROR: unknown contender $what (w1, w2, run or plain)" >&2
		exit 1
		;;
	esac
	t1=$(now_ms)
	check_copy "$what"
	if [ "$what" = plain ]; then
		ms=$((t1 - t0))
	else
		[ "$(psql_q -At -c "SELECT state FROM acme_migrate.jobs WHERE job_name = '$JOB'")" = done ] ||
			{ echo "ERROR: job not done after $what" >&2; exit 1; }
		ms=$(job_ms)
	fi
	if [ "$what" = run ] && [ "$PGSS" = 1 ]; then
		# statements on the catalog, nested in the batches, against the copy
		psql_q -At -F ' ' -c "SELECT round(sum(total_exec_time)::numeric, 1), sum(calls)
			FROM pg_stat_statements
			WHERE NOT toplevel AND query ~ 'acme_migrate\.(jobs|batches|ranges|errors|rejects)'
			  AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database())" \
			>>"$BOOKKEEPING"
		echo "$ms" >>"$BOOKKEEPING.ms"
		if [ "${PROFILE_DONE_RUN:-0}" = 0 ]; then
			PROFILE_DONE_RUN=1
			psql_q -c "SELECT calls, round(total_exec_time::numeric, 1) AS total_ms,
					round(mean_exec_time::numeric, 3) AS mean_ms,
					left(regexp_replace(query, '\s+', ' ', 'g'), 90) AS statement
				FROM pg_stat_statements WHERE NOT toplevel
				ORDER BY total_exec_time DESC LIMIT 8" >"$TOP_STATEMENTS"
		fi
	fi
	if [ "$profile" = 1 ]; then
		w1=$(wal_snapshot)
		rm -f "$flag"
		sleep 0.3
		kill "${BG_PIDS[@]}" 2>/dev/null || true
		wait "${BG_PIDS[@]}" 2>/dev/null || true
		BG_PIDS=()
		{
			echo "---- profile of one $what copy ($ms ms)"
			awk 'NR > 3 && NF >= 17 { n++; us += $13; sy += $14; id += $15; wa += $16; r += $1 }
				END { if (n) printf "vmstat (%d samples): cpu user %.0f%%  system %.0f%%  idle %.0f%%  iowait %.0f%%  runnable %.1f\n",
					n, us / n, sy / n, id / n, wa / n, r / n }' "$vm"
			read -r b0 wr0 sy0 wt0 st0 <<<"$w0"
			read -r b1 wr1 sy1 wt1 st1 <<<"$w1"
			awk -v b="$((b1 - b0))" -v wr="$((wr1 - wr0))" -v sy="$((sy1 - sy0))" \
				-v wt="$(awk -v a="$wt1" -v b="$wt0" 'BEGIN { print a - b }')" \
				-v st="$(awk -v a="$st1" -v b="$st0" 'BEGIN { print a - b }')" -v ms="$ms" 'BEGIN {
				printf "pg_stat_wal: %.0f MB of WAL (%.1f MB/s), %d writes, %d syncs, write %.0f ms, sync %.0f ms\n",
					b / 1048576, b / 1048576 / (ms / 1000), wr, sy, wt, st }'
			echo "wait events of the copying processes (sampled every 100 ms; CPU = no wait event):"
			sort "$waits" | uniq -c | sort -rn | awk '{ t += $1; a[NR] = $0 } END {
				for (i = 1; i <= NR; i++) { split(a[i], f, " "); printf "  %5.1f%%  %s\n", 100 * f[1] / t, f[2] } }'
		} >>"$PROFILES"
		rm -f "$vm" "$waits"
	fi
	echo "$ms $((t1 - t0))"
}

PROFILES=$(mktemp)
BOOKKEEPING=$(mktemp)
TOP_STATEMENTS=$(mktemp)
ONE=$(mktemp)
trap 'rm -f "$PROFILES" "$BOOKKEEPING" "$BOOKKEEPING.ms" "$TOP_STATEMENTS" "$ONE"; cleanup' EXIT

echo "table $SRC: $(psql_q -At -c "SELECT pg_size_pretty(pg_table_size('$SRC')) || ' data + ' ||
	pg_size_pretty(pg_indexes_size('$SRC')) || ' index, ' || (SELECT count(*) FROM $SRC) || ' rows'")"
echo "server: $(psql_q -At -c "SELECT version()" | cut -d, -f1); $(nproc) CPUs; load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "settings: $(psql_q -At -c "SELECT string_agg(name || '=' || current_setting(name), ', ' ORDER BY name)
	FROM pg_settings WHERE name IN ('shared_buffers', 'fsync', 'synchronous_commit', 'wal_level',
		'max_wal_size', 'max_worker_processes', 'wal_compression', 'full_page_writes',
		'checkpoint_timeout', 'acme_migrate.direct_write', 'acme_migrate.max_workers')")"
echo "batch_size $BATCH, reps $REPS, contenders: $CONTENDERS"

declare -A RUNS=() WALL=()
for ((r = 0; r < REPS; r++)); do
	for c in $CONTENDERS; do
		profile=0
		if [ "$r" = 0 ] && { [ "$c" = w1 ] || [ "$c" = w2 ]; }; then
			profile=1
		fi
		copy_once "$c" "$profile" >"$ONE"
		read -r ms wall <"$ONE"
		RUNS[$c]+="$ms "
		WALL[$c]+="$wall "
		printf 'rep %d  %-6s %9.1f ms  (wall %d ms)  load %s\n' "$((r + 1))" "$c" "$ms" "$wall" \
			"$(cut -d' ' -f1 /proc/loadavg)"
	done
done
echo "target $DST after a copy: $(psql_q -At -c "SELECT pg_size_pretty(pg_table_size('$DST')) || ' data + ' ||
	pg_size_pretty(pg_indexes_size('$DST')) || ' index'")"

echo
echo "==== results: $ROWS rows, batch_size $BATCH, medians over $REPS reps (server-side copy time)"
declare -A MED=()
for c in $CONTENDERS; do
	MED[$c]=$(printf '%s\n' ${RUNS[$c]} | median)
	printf '%-6s median %9.1f ms  %9.0f rows/s   wall median %7s ms   runs: %s\n' "$c" "${MED[$c]}" \
		"$(awk -v n="$ROWS" -v ms="${MED[$c]}" 'BEGIN { print n / (ms / 1000) }')" \
		"$(printf '%s\n' ${WALL[$c]} | median)" "${RUNS[$c]}"
done
if [ -n "${MED[w1]:-}" ] && [ -n "${MED[w2]:-}" ]; then
	awk -v a="${MED[w1]}" -v b="${MED[w2]}" 'BEGIN {
		printf "ratio w2/w1 throughput: %.2fx (goal >= 1.4x on 2 cores)\n", a / b }'
fi
if [ -n "${MED[run]:-}" ] && [ -n "${MED[w1]:-}" ]; then
	awk -v a="${MED[w1]}" -v c="${MED[run]}" 'BEGIN {
		printf "ratio w1/run throughput: %.2fx (one worker against CALL acme_migrate_run)\n", c / a }'
fi
if [ -n "${MED[run]:-}" ] && [ -n "${MED[plain]:-}" ]; then
	awk -v c="${MED[run]}" -v p="${MED[plain]}" 'BEGIN {
		printf "bookkeeping, by difference: run %.1f ms vs plain PL/pgSQL keyset loop %.1f ms: run/plain = %.2f\n", c, p, c / p;
		printf "  (run includes the catalog writes and everything else acme_migrate does per batch;\n";
		printf "   plain has no checkpoint, history or mapping, and writes through SQL, not the table AM)\n" }'
fi
if [ -s "$BOOKKEEPING" ]; then
	paste -d' ' "$BOOKKEEPING" "$BOOKKEEPING.ms" | awk '{ t += $1; c += $2; ms += $3; n++ } END {
		printf "bookkeeping, measured: catalog statements (acme_migrate.jobs/batches/ranges/...) took %.1f ms in %d calls\n",
			t / n, c / n;
		printf "  per run on average = %.2f%% of the run time %.1f ms (pg_stat_statements, track = all)\n",
			100 * t / ms, ms / n }'
	echo "top nested statements of one run:"
	cat "$TOP_STATEMENTS"
elif [ "$PGSS" = 0 ]; then
	echo "bookkeeping, measured: skipped (pg_stat_statements is not in shared_preload_libraries)"
fi
echo
cat "$PROFILES"
