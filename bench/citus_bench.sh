#!/bin/bash
#
# citus_bench.sh: a distributed -> distributed job on Citus against one
# INSERT ... SELECT through Citus.
#
# Skipped (exit 0, with a message) when the citus extension is not installed
# in the PostgreSQL of PG_CONFIG.  Otherwise starts three throwaway clusters
# on loopback (a coordinator and two workers, shared_preload_libraries =
# 'citus,acme_migrate', as user postgres when run as root) on free ports in
# CITUS_BENCH_PORTS (default 5850-5899), creates cb_src with CITUS_ROWS
# rows (default 2,000,000; bigint key, int, numeric(12,2), text) distributed
# on its key (SHARDS shards, default 32) and an empty co-located target
# cb_dst, and copies it REPS times (default 3), contenders interleaved:
#
#   job    CALL acme_migrate_run(job)   batch_size BATCH (default 10000):
#          the Citus pushdown path, one INSERT ... SELECT per key range of
#          about BATCH rows per shard, each committing its checkpoint on the
#          coordinator in the same distributed transaction as its rows
#   w2     acme_migrate_start(job, workers => 2) + acme_migrate_wait
#   sql    INSERT INTO cb_dst SELECT * FROM cb_src  (one statement, pushed
#          down by Citus to every shard pair, one distributed commit)
#
# Prints the median times, the ratios job/sql and w2/sql, and the load.
# Then (CITUS_RECONCILE=1, the default) times acme_migrate_reconcile of a
# job between the two, equal, REPS times each way: hash sums per key range
# computed on the shards (remote_mode citus_shards) and every row read
# through Citus to the coordinator (acme_migrate.remote_hashes = off).
# Then (CITUS_TEXT_RECONCILE=1, the default) the same for a text key: the
# same rows keyed by text in two distributed tables that are not
# co-located, equal and with 100 rows changed (hash sums per bucket of key
# hashes on the shards, acme_migrate.key_bucket, against every row read
# through the coordinator).
# Never asserts a time; exits non-zero only on errors (a target whose
# EXCEPT ALL against the source is not empty is one, so is a reconcile
# whose counts or mode are not the expected ones).
#
# Environment: CITUS_ROWS, REPS, BATCH, SHARDS, PG_CONFIG, KEEP=1 (leave the
# clusters running and print how to reach them), CITUS_CONTENDERS ("job w2 sql"; empty: no copy),
# CITUS_RECONCILE (1), CITUS_TEXT_RECONCILE (1).

set -euo pipefail

ROWS=${CITUS_ROWS:-2000000}
REPS=${REPS:-3}
BATCH=${BATCH:-10000}
SHARDS=${SHARDS:-32}
KEEP=${KEEP:-0}
CONTENDERS=${CITUS_CONTENDERS-"job w2 sql"}
RECONCILE=${CITUS_RECONCILE:-1}
TEXT_RECONCILE=${CITUS_TEXT_RECONCILE:-1}
PG_CONFIG=${PG_CONFIG:-pg_config}
PORTS=${CITUS_BENCH_PORTS:-5850-5899}
BINDIR=$("$PG_CONFIG" --bindir)
SHAREDIR=$("$PG_CONFIG" --sharedir)
PKGLIBDIR=$("$PG_CONFIG" --pkglibdir)

log() { printf '%s citus_bench: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

if [ ! -f "$SHAREDIR/extension/citus.control" ] || [ ! -f "$PKGLIBDIR/citus.so" ]; then
	echo "citus_bench: skipped: citus is not installed in $SHAREDIR/extension (Citus is not in Debian's archive; build it from its source against this PostgreSQL to run this bench)"
	exit 0
fi

if [ "$(id -u)" = 0 ]; then AS_PG=(runuser -u postgres --); else AS_PG=(); fi
as_pg() { "${AS_PG[@]}" "$@"; }

WORK=$(mktemp -d /tmp/acme_citus_bench.XXXXXX)
chmod 755 "$WORK"
if [ "$(id -u)" = 0 ]; then chown postgres: "$WORK"; fi

port_is_free() {
	! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && [ ! -e "/tmp/.s.PGSQL.$1" ] &&
		[ ! -e "$WORK/.s.PGSQL.$1" ]
}

NODES=(coord w1 w2)
declare -A PORT
next=${PORTS%-*}
for n in "${NODES[@]}"; do
	while ! port_is_free "$next"; do
		next=$((next + 1))
		[ "$next" -le "${PORTS#*-}" ] || die "no free port in $PORTS"
	done
	PORT[$n]=$next
	next=$((next + 1))
	as_pg "$BINDIR/initdb" -D "$WORK/$n" -U postgres -A trust -E UTF8 --no-locale \
		--no-sync >"$WORK/$n.initdb.log" 2>&1 || die "initdb failed: $WORK/$n.initdb.log"
	cat <<EOF | as_pg tee -a "$WORK/$n/postgresql.conf" >/dev/null
listen_addresses = '127.0.0.1'
unix_socket_directories = '$WORK'
shared_preload_libraries = 'citus,acme_migrate'
max_prepared_transactions = 200
max_worker_processes = 32
max_connections = 200
shared_buffers = 512MB
max_wal_size = 4GB
citus.shard_count = $SHARDS
citus.node_conninfo = 'sslmode=disable'
logging_collector = off
EOF
	as_pg "$BINDIR/pg_ctl" -D "$WORK/$n" -l "$WORK/$n.log" -o "-p ${PORT[$n]}" -w -t 60 \
		start >/dev/null || die "server $n did not start: $WORK/$n.log"
done

cleanup() {
	if [ "$KEEP" = 1 ]; then
		log "clusters kept: psql -h $WORK -p ${PORT[coord]} -U postgres postgres (stop: pg_ctl -D $WORK/<node> stop)"
		return
	fi
	for n in "${NODES[@]}"; do
		as_pg "$BINDIR/pg_ctl" -D "$WORK/$n" -m fast -w stop >/dev/null 2>&1 || true
	done
	rm -rf "$WORK"
}
trap cleanup EXIT

q() { as_pg "$BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h "$WORK" -p "${PORT[$1]}" -U postgres -d postgres "${@:2}"; }

for n in w1 w2; do q "$n" -c 'CREATE EXTENSION citus' >/dev/null; done
q coord >/dev/null <<EOF
CREATE EXTENSION citus;
SELECT citus_set_coordinator_host('127.0.0.1', ${PORT[coord]});
SELECT citus_add_node('127.0.0.1', ${PORT[w1]});
SELECT citus_add_node('127.0.0.1', ${PORT[w2]});
CREATE EXTENSION acme_migrate;
CREATE TABLE cb_src (id bigint PRIMARY KEY, a integer NOT NULL,
	amount numeric(12,2), note text);
SELECT create_distributed_table('cb_src', 'id');
INSERT INTO cb_src SELECT g, g % 1000, round(g * 1.37, 2), md5(g::text)
FROM generate_series(1, $ROWS) g;
CREATE TABLE cb_dst (LIKE cb_src INCLUDING ALL);
SELECT create_distributed_table('cb_dst', 'id', colocate_with => 'cb_src');
VACUUM ANALYZE cb_src;
EOF
log "coordinator :${PORT[coord]}, workers :${PORT[w1]} :${PORT[w2]}; cb_src: $ROWS rows in $SHARDS shards, $(q coord -Atc "SELECT pg_size_pretty(citus_table_size('cb_src'))")"

now_ms() { date +%s%3N; }
declare -A TIMES
run_one() {
	local c=$1 t0 t1
	q coord -c 'TRUNCATE cb_dst' -c "SELECT acme_migrate_drop(job_name) FROM acme_migrate.jobs" \
		-c 'VACUUM ANALYZE cb_dst' -c 'CHECKPOINT' >/dev/null
	for n in w1 w2; do q "$n" -c CHECKPOINT >/dev/null; done
	if [ "$c" != sql ]; then
		q coord -c "SELECT acme_migrate_create(job => 'cb', source => 'cb_src', target => 'cb_dst', batch_size => $BATCH)" >/dev/null
	fi
	t0=$(now_ms)
	case $c in
	job) q coord -c "CALL acme_migrate_run('cb')" >/dev/null ;;
	w2) q coord -c "SELECT acme_migrate_start('cb', workers => 2)" \
		-c "SELECT acme_migrate_wait('cb', timeout => '30 min')" >/dev/null 2>&1 ;;
	sql) q coord -c 'INSERT INTO cb_dst SELECT * FROM cb_src' >/dev/null ;;
	*) die "unknown contender $c (job, w2 or sql)" ;;
	esac
	t1=$(now_ms)
	[ "$(q coord -Atc 'SELECT (SELECT count(*) FROM (SELECT * FROM cb_src EXCEPT ALL SELECT * FROM cb_dst) x) + (SELECT count(*) FROM (SELECT * FROM cb_dst EXCEPT ALL SELECT * FROM cb_src) x)')" = 0 ] ||
		die "$c: target differs from source"
	TIMES[$c]="${TIMES[$c]:-} $((t1 - t0))"
	log "rep $rep $c: $((t1 - t0)) ms"
}
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

LOAD=$(cut -d' ' -f1 /proc/loadavg)
for rep in $(seq 1 "$REPS"); do
	for c in $CONTENDERS; do run_one "$c"; done
done

echo
echo "Citus: distributed -> co-located distributed copy, $ROWS rows, $SHARDS shards on 2 workers, batch_size $BATCH, $REPS reps (load1 before: $LOAD, $(nproc) CPUs)"
declare -A MED RMED
for c in $CONTENDERS; do
	MED[$c]=$(echo "${TIMES[$c]}" | median)
	printf '  %-4s median %8.2f s   (%s ms)\n' "$c" "$(echo "${MED[$c]} / 1000" | bc -l)" "${TIMES[$c]# }"
done
if [ -n "${MED[sql]:-}" ]; then
	for c in job w2; do
		if [ -n "${MED[$c]:-}" ]; then
			printf '  %s/sql: %.2fx (goal: within 1.1x)\n' "$c" "$(echo "${MED[$c]} / ${MED[sql]}" | bc -l)"
		fi
	done
fi

# reconcile_bench LABEL CALL EXPECT: CALL (an acme_migrate_reconcile(...)
# FROM item) timed REPS times with acme_migrate.remote_hashes on (sums
# computed on the shards, remote_mode citus_shards) and off (every row read
# through Citus to the coordinator), interleaved; EXPECT is the
# "equal|source_rows|missing|extra|changed" both must give
reconcile_bench() {
	local label=$1 call=$2 expect=$3 mode res t0 t1
	local -A RTIMES RMED
	for rep in $(seq 1 "$REPS"); do
		for mode in on off; do
			t0=$(now_ms)
			res=$(q coord -Atc "SET acme_migrate.remote_hashes = $mode" \
				-c "SELECT equal, source_rows, missing, extra, changed FROM $call" \
				-c "SELECT method, remote_mode FROM acme_migrate.reconcile_runs ORDER BY run_id DESC LIMIT 1" | tr '\n' '|')
			t1=$(now_ms)
			case "$mode:$res" in
			"on:$expect|"*"|citus_shards|" | "off:$expect|"*"||") ;;
			*) die "$label, reconcile with remote_hashes $mode: $res (expected $expect)" ;;
			esac
			RTIMES[$mode]="${RTIMES[$mode]:-} $((t1 - t0))"
			log "rep $rep $label remote_hashes=$mode: $((t1 - t0)) ms ($res)"
		done
	done
	echo "Citus: acme_migrate_reconcile, $label, $REPS reps"
	for mode in on off; do
		RMED[$mode]=$(echo "${RTIMES[$mode]}" | median)
	done
	printf '  on the shards (citus_shards)      median %8.2f s   (%s ms)\n' "$(echo "${RMED[on]} / 1000" | bc -l)" "${RTIMES[on]# }"
	printf '  rows read through the coordinator median %8.2f s   (%s ms)\n' "$(echo "${RMED[off]} / 1000" | bc -l)" "${RTIMES[off]# }"
	printf '  coordinator/shards: %.2fx\n' "$(echo "${RMED[off]} / ${RMED[on]}" | bc -l)"
}

# reconcile of the copied job, equal tables: hash sums per key range
# computed on the shards (citus_shards) against every row read through
# Citus to the coordinator (acme_migrate.remote_hashes = off)
if [ "$RECONCILE" = 1 ]; then
	q coord -c 'TRUNCATE cb_dst' -c 'INSERT INTO cb_dst SELECT * FROM cb_src' \
		-c "SELECT acme_migrate_drop(job_name) FROM acme_migrate.jobs" \
		-c "SELECT acme_migrate_create(job => 'rc', source => 'cb_src', target => 'cb_dst')" >/dev/null
	reconcile_bench "the $ROWS-row job (bigint key), equal tables" \
		"acme_migrate_reconcile('rc')" "t|$ROWS|0|0|0"
fi

# a text key (CITUS_TEXT_RECONCILE=1, the default): cb_tsrc, the rows of
# cb_src keyed by 'key-' || id, distributed on the key, and cb_tdst, a copy
# distributed on its key in a colocation group of its own; reconciled equal,
# then with 100 rows changed in cb_tdst (hash sums per bucket of key hashes
# on the shards, then the rows of differing buckets only)
if [ "$TEXT_RECONCILE" = 1 ]; then
	q coord >/dev/null <<EOF
CREATE TABLE cb_tsrc (k text PRIMARY KEY, a integer NOT NULL, amount numeric(12,2), note text);
SELECT create_distributed_table('cb_tsrc', 'k');
INSERT INTO cb_tsrc SELECT 'key-' || id, a, amount, note FROM cb_src;
CREATE TABLE cb_tdst (LIKE cb_tsrc INCLUDING ALL);
SELECT create_distributed_table('cb_tdst', 'k', colocate_with => 'none');
INSERT INTO cb_tdst SELECT * FROM cb_tsrc;
VACUUM ANALYZE cb_tsrc;
VACUUM ANALYZE cb_tdst;
EOF
	log "cb_tsrc and cb_tdst: $ROWS rows each, text keys, $SHARDS shards each, $(q coord -Atc "SELECT pg_size_pretty(citus_table_size('cb_tsrc'))") each"
	reconcile_bench "$ROWS rows, text key, equal tables" \
		"acme_migrate_reconcile(source => 'cb_tsrc', target => 'cb_tdst')" "t|$ROWS|0|0|0"
	q coord -c "UPDATE cb_tdst SET note = 'changed' WHERE k IN (SELECT 'key-' || (g * ($ROWS / 100)) FROM generate_series(1, 100) g)" >/dev/null
	reconcile_bench "$ROWS rows, text key, 100 rows changed" \
		"acme_migrate_reconcile(source => 'cb_tsrc', target => 'cb_tdst')" "f|$ROWS|0|0|100"
fi
