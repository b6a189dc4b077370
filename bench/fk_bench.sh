#!/usr/bin/env bash
# bench/fk_bench.sh: copying into a target with a foreign key (issue 11).
#
# Runs on the cluster given by PGHOST / PGPORT / PGDATABASE (make bench runs
# it on its own cluster, after the main contenders); the acme_migrate
# extension is created there if missing.  Creates, in schema fk_bench:
#
#   customers   FK_PARENTS rows (default 200,000), int primary key
#   orders_src  FK_ROWS rows (default 1,000,000): bigint key, int customer_id
#               (every row has a parent), numeric(12,2), text, 40-char text
#   orders_fk   and orders_ins: the same columns, primary key, and
#               customer_id REFERENCES customers (NO ACTION, not deferrable)
#
# and copies orders_src into the empty targets REPS times (default 3), the
# contenders interleaved (rep 1: f i, rep 2: f i, ...):
#
#   f  CALL acme_migrate_run(job), batch_size 10000, into orders_fk: the
#      foreign key checked once per batch by a set-based query (fk.c)
#   i  INSERT INTO orders_ins SELECT * FROM orders_src: one statement, the
#      foreign key checked per row by PostgreSQL's RI trigger
#   r  (optional, FK_CONTENDERS="f i r") acme_migrate_run with
#      acme_migrate.direct_write = off: INSERT statements per batch, so the
#      per-row RI triggers, for information
#
# Times are the server-side duration of the one statement (psql \timing on
# a local socket); TRUNCATE, VACUUM ANALYZE and CHECKPOINT between runs.
# After the last f, its target is compared with the source (EXCEPT ALL both
# ways) and the constraint validated by PostgreSQL.  Prints medians and the
# ratio f/i with its goal; never asserts a time, exits non-zero on errors.
set -eEuo pipefail

FK_ROWS=${FK_ROWS:-1000000}
FK_PARENTS=${FK_PARENTS:-200000}
REPS=${REPS:-3}
FK_CONTENDERS=${FK_CONTENDERS:-"f i"}
PSQL=("$("${PG_CONFIG:-pg_config}" --bindir)/psql" -X -q -v ON_ERROR_STOP=1 -At)

log() { printf '%s fk_bench: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
[ -n "${PGHOST:-}${PGPORT:-}${PGDATABASE:-}" ] ||
	{ log "set PGHOST / PGPORT / PGDATABASE (make bench does)"; exit 2; }

log "creating fk_bench with $FK_ROWS orders, $FK_PARENTS customers"
"${PSQL[@]}" <<SQL
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS acme_migrate;
DROP SCHEMA IF EXISTS fk_bench CASCADE;
CREATE SCHEMA fk_bench;
CREATE TABLE fk_bench.customers (id int PRIMARY KEY, name text NOT NULL);
INSERT INTO fk_bench.customers SELECT g, 'customer ' || g FROM generate_series(1, $FK_PARENTS) g;
CREATE TABLE fk_bench.orders_src (id bigint PRIMARY KEY, customer_id int NOT NULL,
	amount numeric(12,2) NOT NULL, status text NOT NULL, note text NOT NULL);
INSERT INTO fk_bench.orders_src
SELECT i, (i * 7919 % $FK_PARENTS)::int + 1, ((i * 104729 % 10000000) / 100.0)::numeric(12,2),
	(ARRAY['new', 'paid', 'shipped', 'delivered'])[1 + i % 4],
	substr(md5(i::text) || md5((-i)::text), 1, 40)
FROM generate_series(1::bigint, $FK_ROWS::bigint) AS i;
CREATE TABLE fk_bench.orders_fk (LIKE fk_bench.orders_src INCLUDING ALL,
	CONSTRAINT orders_fk_customer FOREIGN KEY (customer_id) REFERENCES fk_bench.customers);
CREATE TABLE fk_bench.orders_ins (LIKE fk_bench.orders_src INCLUDING ALL,
	CONSTRAINT orders_ins_customer FOREIGN KEY (customer_id) REFERENCES fk_bench.customers);
VACUUM (FREEZE, ANALYZE) fk_bench.customers, fk_bench.orders_src;
SQL

settle() {
	"${PSQL[@]}" -c "TRUNCATE fk_bench.orders_fk, fk_bench.orders_ins" \
		-c "SELECT acme_migrate_drop('fk_bench_job') FROM acme_migrate.jobs WHERE job_name = 'fk_bench_job'" \
		-c "VACUUM ANALYZE fk_bench.customers, fk_bench.orders_fk, fk_bench.orders_ins" \
		-c "CHECKPOINT" >/dev/null
	"${PSQL[@]}" -c "SELECT count(*) FROM fk_bench.orders_src" -c "SELECT count(*) FROM fk_bench.customers" >/dev/null
}

# the server-side time of the last statement of $1, in seconds
timed() {
	local out
	out=$(printf '%s\n\\timing on\n%s\n' "${2:-}" "$1" | "${PSQL[@]}" 2>&1) ||
		{ echo "$out" >&2; return 1; }
	echo "$out" | awk '/^Time: / {t = $2} END {if (t == "") exit 1; printf "%.3f", t / 1000}'
}

run_job() {	# $1 direct_write on|off
	"${PSQL[@]}" -c "SELECT acme_migrate_create(job => 'fk_bench_job', source => 'fk_bench.orders_src',
		target => 'fk_bench.orders_fk', batch_size => 10000)" >/dev/null
	timed "CALL acme_migrate_run('fk_bench_job');" "SET acme_migrate.direct_write = $1;"
}

declare -A TIMES
for rep in $(seq 1 "$REPS"); do
	for c in $FK_CONTENDERS; do
		settle
		load=$(cut -d' ' -f1 /proc/loadavg)
		case $c in
			f) t=$(run_job on); tgt=orders_fk ;;
			r) t=$(run_job off); tgt=orders_fk ;;
			i) t=$(timed "INSERT INTO fk_bench.orders_ins SELECT * FROM fk_bench.orders_src;"); tgt=orders_ins ;;
			*) log "unknown contender $c"; exit 2 ;;
		esac
		n=$("${PSQL[@]}" -c "SELECT count(*) FROM fk_bench.$tgt")
		[ "$n" = "$FK_ROWS" ] || { log "ERROR: $c left $n rows in $tgt, expected $FK_ROWS"; exit 1; }
		TIMES[$c]="${TIMES[$c]:-} $t"
		log "rep $rep/$REPS $c: $t s, $n rows, loadavg before $load"
	done
done

case " $FK_CONTENDERS " in *" f "*)
	settle
	run_job on >/dev/null
	diffs=$("${PSQL[@]}" -c "SELECT (SELECT count(*) FROM (TABLE fk_bench.orders_src EXCEPT ALL TABLE fk_bench.orders_fk) a)
		+ (SELECT count(*) FROM (TABLE fk_bench.orders_fk EXCEPT ALL TABLE fk_bench.orders_src) b)")
	"${PSQL[@]}" -c "ALTER TABLE fk_bench.orders_fk VALIDATE CONSTRAINT orders_fk_customer"
	[ "$diffs" = 0 ] || { log "ERROR: f's target differs from the source in $diffs rows"; exit 1; }
	log "f's target equals the source (EXCEPT ALL both ways: 0 rows); its foreign key validates"
;; esac

median() { tr ' ' '\n' | awk 'NF' | sort -g | awk '{v[NR] = $1} END {if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
declare -A MED
echo
echo "FOREIGN KEY BENCH: $FK_ROWS orders referencing $FK_PARENTS customers, median of $REPS reps (seconds)"
echo "  orders_src: $("${PSQL[@]}" -c "SELECT pg_size_pretty(pg_total_relation_size('fk_bench.orders_src'))"), customers: $("${PSQL[@]}" -c "SELECT pg_size_pretty(pg_total_relation_size('fk_bench.customers'))")"
for c in $FK_CONTENDERS; do
	MED[$c]=$(echo "${TIMES[$c]}" | median)
	case $c in
		f) label="f  CALL acme_migrate_run, foreign key checked per batch" ;;
		i) label="i  INSERT INTO target SELECT * FROM source (RI per row)" ;;
		r) label="r  CALL acme_migrate_run, direct_write off (RI per row)" ;;
	esac
	printf '  %-58s %8.2f   (%s)\n' "$label" "${MED[$c]}" "$(echo "${TIMES[$c]}" | sed 's/^ //')"
done
if [ -n "${MED[f]:-}" ] && [ -n "${MED[i]:-}" ]; then
	printf '  f/i = %.3f   [goal <= 0.6: copy into an FK-checked target / INSERT ... SELECT into the same target]\n' \
		"$(echo "${MED[f]} / ${MED[i]}" | bc -l)"
fi
if [ -n "${MED[r]:-}" ] && [ -n "${MED[f]:-}" ]; then
	printf '  f/r = %.3f   (information: the batch check against the per-row RI triggers, same job)\n' \
		"$(echo "${MED[f]} / ${MED[r]}" | bc -l)"
fi
echo "  load average now: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs"
"${PSQL[@]}" -c "SET client_min_messages = warning" -c "DROP SCHEMA fk_bench CASCADE"
