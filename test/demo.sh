#!/usr/bin/env bash
#
# make demo: the quick start.  Installs what is missing, builds and installs
# acme_migrate, starts a throwaway PostgreSQL 15 cluster, loads the ACME
# legacy database (demo/acme_legacy.sql), defines the jobs that migrate it
# into the schema "app" (demo/migrate.sql), runs them with visible progress,
# prints a summary and a reconciliation, and removes the cluster.
#
#   SCALE=N    number of legacy orders (default 1000000); customers ~ N/10,
#              products 1000, payments ~ 1 per order
#   KEEP=1     keep the cluster running afterwards and print how to connect
#   SKIP_BUILD=1  use the installed extension as it is (no packages, no build)
#
set -euo pipefail

# shellcheck source=test/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SCALE="${SCALE:-1000000}"
KEEP="${KEEP:-0}"
RUN_SLICE="${RUN_SLICE:-2 s}"			# max_time of each CALL acme_migrate_run
STALL_LIMIT="${STALL_LIMIT:-5}"			# calls in a row without progress before giving up

[[ "$SCALE" =~ ^[1-9][0-9]*$ ]] || die "SCALE must be a positive number of orders, not \"$SCALE\""

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

T_START="$(now)"
declare -A JOB_SECONDS=()
FAILED=1

finish() {
	local rc=$?
	if [ "$FAILED" = 1 ] && [ -n "$CLUSTER_DIR" ]; then
		cluster_log_tail 30
	fi
	if [ "$KEEP" = 1 ] && [ -n "$CLUSTER_DIR" ]; then
		local stop_cmd="$PG_BINDIR/pg_ctl -D $CLUSTER_DIR/data stop && rm -rf $CLUSTER_DIR"
		if is_root; then
			stop_cmd="runuser -u postgres -- $PG_BINDIR/pg_ctl -D $CLUSTER_DIR/data stop && rm -rf $CLUSTER_DIR"
		fi
		cat <<EOF

The demo cluster is still running (KEEP=1):
  connect:  psql -h $CLUSTER_HOST -p $CLUSTER_PORT -U postgres $CLUSTER_DB
        or  psql -h 127.0.0.1 -p $CLUSTER_PORT -U postgres $CLUSTER_DB
  log:      $CLUSTER_DIR/server.log
  stop it:  $stop_cmd
EOF
	else
		cluster_stop
	fi
	exit "$rc"
}
trap finish EXIT

echo "acme_migrate demo: SCALE=$SCALE orders"

# ---- packages, build, install ----------------------------------------------
if [ "${SKIP_BUILD:-0}" = 1 ]; then
	log "SKIP_BUILD=1: using the installed extension"
else
	t="$(now)"
	ensure_packages
	build_and_install
	echo "packages, build and install: $(since "$t") s"
fi

# ---- cluster ----------------------------------------------------------------
t="$(now)"
cluster_start "shared_preload_libraries = 'acme_migrate'"
cpsql -q -c "CREATE DATABASE acme"
CLUSTER_DB=acme
cpsql -q -c "CREATE EXTENSION acme_migrate"
echo "cluster started on port $CLUSTER_PORT: $(since "$t") s"

# ---- the legacy database ----------------------------------------------------
log "loading the ACME legacy database (SCALE=$SCALE)"
t="$(now)"
cpsql -q -v scale="$SCALE" <"$ACME_TOP/demo/acme_legacy.sql"
echo "legacy database generated: $(since "$t") s"

# ---- target schema and jobs -------------------------------------------------
log "creating schema app and the migration jobs (demo/migrate.sql)"
cpsql -q <"$ACME_TOP/demo/migrate.sql"

# ---- run the jobs, parents first --------------------------------------------
mapfile -t JOBS < <(cpsql -qAt -c "SELECT job_name FROM acme_migrate.jobs ORDER BY job_id")
[ "${#JOBS[@]}" -gt 0 ] || die "demo/migrate.sql defined no jobs"

show_errors() {
	cpsql -q -v job="$1" <<'SQL' >&2 || true
SELECT e.occurred_at, e.sqlstate, e.message, e.detail
FROM acme_migrate.errors e JOIN acme_migrate.jobs j USING (job_id)
WHERE j.job_name = :'job' ORDER BY e.error_id DESC LIMIT 5;
SQL
}

run_job() {
	local job="$1" t0 out state done_ total pct rate eta rejected last_error
	local last_done=-1 stalled=0
	t0="$(now)"
	log "running job $job: CALL acme_migrate_run('$job', max_time => '$RUN_SLICE') until it is copied"
	while :; do
		if ! out="$(cpsql -qAt -F '|' -v job="$job" -v slice="$RUN_SLICE" <<'SQL'
CALL acme_migrate_run(:'job', max_time => :'slice');
SELECT state, rows_done, coalesce(rows_total, 0), coalesce(percent, 0),
	   coalesce(round(rows_per_second), 0), coalesce(date_trunc('second', eta)::text, '-'),
	   rejected, coalesce(last_error, '')
FROM acme_migrate.progress WHERE job = :'job';
SQL
		)"; then
			show_errors "$job"
			die "CALL acme_migrate_run('$job') failed"
		fi
		IFS='|' read -r state done_ total pct rate eta rejected last_error <<<"$out"
		printf '  %-11s %-8s %11s / %-11s %6s%%  %8s rows/s  eta %-9s rejected %s\n' \
			"$job" "$state" "$done_" "$total" "$pct" "$rate" "$eta" "$rejected"
		case "$state" in
		done | copied | cut_over)
			break
			;;
		failed | cancelled | rolled_back)
			show_errors "$job"
			die "job $job ended in state $state: $last_error"
			;;
		esac
		if [ "$done_" = "$last_done" ]; then
			stalled=$((stalled + 1))
			if [ "$stalled" -ge "$STALL_LIMIT" ]; then
				show_errors "$job"
				die "job $job made no progress in $STALL_LIMIT calls (state $state${last_error:+: $last_error})"
			fi
		else
			stalled=0
		fi
		last_done="$done_"
	done
	JOB_SECONDS[$job]="$(since "$t0")"
}

t="$(now)"
for job in "${JOBS[@]}"; do
	run_job "$job"
done
MIGRATE_SECONDS="$(since "$t")"

# ---- summary ----------------------------------------------------------------
echo
echo "Summary (rows and batches from acme_migrate.jobs / acme_migrate.batches):"
printf '  %-11s %-8s %11s %9s %8s %12s %9s %10s\n' \
	job state rows_copied rejected batches batch_time_s elapsed_s rows/s
total_rows=0
total_rejected=0
while IFS='|' read -r job state copied rejected batches batch_s; do
	elapsed="${JOB_SECONDS[$job]:-0}"
	rate="$(awk -v r="$copied" -v s="$elapsed" 'BEGIN { printf "%.0f", (s > 0) ? r / s : 0 }')"
	printf '  %-11s %-8s %11s %9s %8s %12s %9s %10s\n' \
		"$job" "$state" "$copied" "$rejected" "$batches" "$batch_s" "$elapsed" "$rate"
	total_rows=$((total_rows + copied))
	total_rejected=$((total_rejected + rejected))
done < <(cpsql -qAt -F '|' <<'SQL'
SELECT j.job_name, j.state, j.rows_copied, j.rows_rejected, j.batches_done,
	   coalesce(round(extract(epoch FROM sum(b.duration))::numeric, 1), 0)
FROM acme_migrate.jobs j LEFT JOIN acme_migrate.batches b USING (job_id)
GROUP BY j.job_id ORDER BY j.job_id;
SQL
)
echo "  total: $total_rows rows copied, $total_rejected rejected, in $MIGRATE_SECONDS s"
if [ "$total_rejected" -gt 0 ]; then
	echo "  first rejects (acme_migrate.rejects):"
	cpsql -q -c "SELECT j.job_name AS job, r.key, r.sqlstate, r.message
				 FROM acme_migrate.rejects r JOIN acme_migrate.jobs j USING (job_id)
				 ORDER BY r.reject_id LIMIT 5"
fi

# ---- reconciliation ---------------------------------------------------------
t="$(now)"
has_reconcile="$(cpsql -qAt -c "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_proc
									WHERE proname = 'acme_migrate_reconcile')")"
if [ "$has_reconcile" = t ]; then
	log "reconciling with acme_migrate_reconcile (demo/reconcile.sql)"
	cpsql -q <"$ACME_TOP/demo/reconcile.sql"
else
	log "acme_migrate_reconcile is not in this build: independent EXCEPT check (demo/verify.sql)"
	cpsql -q <"$ACME_TOP/demo/verify.sql"
fi
echo "reconciliation: $(since "$t") s"

# ---- online migration: the application keeps writing -------------------------
# pgbench plays the application (demo/online_app.pgbench, 4 clients) on
# legacy.customers: alone for ONLINE_PHASE seconds (TPS before), during the
# online migration of the table into app.customers_live (a job with
# capture_changes, 2 workers, catch-up, cut-over whose then_sql puts an
# updatable view of the new table in the old one's place), and for
# ONLINE_PHASE seconds after it, through that view (TPS after).
ONLINE="${ONLINE:-1}"
ONLINE_PHASE="${ONLINE_PHASE:-5}"		# seconds of the before and after runs
ONLINE_DURING="${ONLINE_DURING:-20}"	# seconds of the run during the migration
ONLINE_WAIT="${ONLINE_WAIT:-60 s}"		# longest wait for the copy
online_pgbench() {	# seconds, extra pgbench options...: prints pgbench's output
	local secs="$1"
	shift
	as_pg "$PG_BINDIR/pgbench" -n -c 4 -j 2 -T "$secs" "$@" -f "$CLUSTER_DIR/online_app.pgbench" \
		-h "$CLUSTER_HOST" -p "$CLUSTER_PORT" -U postgres "$CLUSTER_DB"
}
online_check() {	# pgbench output file, what
	if grep -qiE 'error|abort' "$1"; then
		grep -iE 'error|abort' "$1" | head -5 >&2
		die "the application (pgbench) saw errors $2"
	fi
}
online_tps() { awk '/^tps = / { printf "%.0f", $3 }' "$1"; }
if [ "$ONLINE" = 1 ]; then
	t="$(now)"
	echo
	echo "Online migration of legacy.customers while the application writes to it:"
	cpsql -q <"$ACME_TOP/demo/online.sql"
	cp "$ACME_TOP/demo/online_app.pgbench" "$CLUSTER_DIR/online_app.pgbench"
	chmod 0644 "$CLUSTER_DIR/online_app.pgbench"
	online_pgbench "$ONLINE_PHASE" >"$CLUSTER_DIR/pgbench_before.out" 2>&1 ||
		{ cat "$CLUSTER_DIR/pgbench_before.out" >&2; die "pgbench failed before the migration"; }
	online_check "$CLUSTER_DIR/pgbench_before.out" "before the migration"
	TPS_BEFORE="$(online_tps "$CLUSTER_DIR/pgbench_before.out")"
	echo "  application alone:           $TPS_BEFORE tps ($ONLINE_PHASE s, 4 clients)"

	online_pgbench "$ONLINE_DURING" -P 2 >"$CLUSTER_DIR/pgbench_during.out" 2>&1 &
	ONLINE_PGBENCH=$!
	t_during="$(now)"
	sleep 1
	cpsql -qAt <<'SQL' >/dev/null
SELECT acme_migrate_create(
	job		=> 'customers_live',
	source	=> 'legacy.customers',
	target	=> 'app.customers_live',
	columns	=> '{"full_name":    "name",
				 "email":        "lower(email)",
				 "country_code": "upper(country)",
				 "created_at":   "created::timestamp AT TIME ZONE ''UTC''"}',
	batch_size => 20000,
	capture_changes => true);
SELECT acme_migrate_start('customers_live', workers => 2);
SQL
	echo "  job customers_live created with capture_changes, 2 workers copying"
	state="$(cpsql -qAt -c "SET client_min_messages = warning" \
		-c "SELECT acme_migrate_wait('customers_live', '$ONLINE_WAIT')")"
	if [ "$state" != copied ]; then
		kill "$ONLINE_PGBENCH" 2>/dev/null || true
		show_errors customers_live
		die "job customers_live is $state, not copied, after $ONLINE_WAIT (a slow machine? ONLINE_WAIT=... waits longer)"
	fi
	for i in 1 2 3; do
		cpsql -qAt -F ' ' -c "SELECT state, rows_done, capture_backlog,
				coalesce(round(extract(epoch FROM capture_lag) * 1000)::text, '0')
			FROM acme_migrate.progress WHERE job = 'customers_live'" |
			while read -r st rows backlog lag; do
				printf '  %-8s %8s rows copied, capture backlog %5s changes, oldest %5s ms\n' \
					"$st" "$rows" "$backlog" "$lag"
			done
		sleep 1
	done
	t_cut="$(since "$t_during")"
	if ! out="$(cpsql -qAt -F '|' <<'SQL'
SET client_min_messages = warning;
SELECT attempts, round(extract(epoch FROM lock_held) * 1000, 1), changes_drained, verified
FROM acme_migrate_cutover('customers_live', lock_timeout => '200 ms', max_lock_time => '1 s',
	max_attempts => 10,
	then_sql => $$ALTER TABLE legacy.customers RENAME TO customers_old;
		CREATE VIEW legacy.customers AS
		SELECT customer_id, full_name AS name, email, lower(country_code) AS country,
			   NULL::text AS fax, created_at::date AS created
		FROM app.customers_live$$);
SQL
	)"; then
		kill "$ONLINE_PGBENCH" 2>/dev/null || true
		show_errors customers_live
		die "acme_migrate_cutover('customers_live') failed"
	fi
	IFS='|' read -r attempts held drained verified <<<"$out"
	if [ "$verified" != t ]; then
		kill "$ONLINE_PGBENCH" 2>/dev/null || true
		cpsql -q -c "SELECT * FROM acme_migrate.cutovers" >&2 || true
		die "the cut-over of customers_live did not happen in $attempts attempts (see acme_migrate.cutovers above)"
	fi
	echo "  cut over $t_cut s into the run: $attempts attempt(s), lock held $held ms (writers waited, readers did not), $drained changes drained under the lock, verified"
	wait "$ONLINE_PGBENCH" ||
		{ cat "$CLUSTER_DIR/pgbench_during.out" >&2; die "pgbench failed during the migration"; }
	online_check "$CLUSTER_DIR/pgbench_during.out" "during the migration"
	echo "  application during the migration: $(online_tps "$CLUSTER_DIR/pgbench_during.out") tps ($ONLINE_DURING s); pgbench every 2 s:"
	grep '^progress:' "$CLUSTER_DIR/pgbench_during.out" | awk '{ printf "    %6s s %8s tps  latency %s ms\n", $2, $4, $7 }'

	online_pgbench "$ONLINE_PHASE" >"$CLUSTER_DIR/pgbench_after.out" 2>&1 ||
		{ cat "$CLUSTER_DIR/pgbench_after.out" >&2; die "pgbench failed after the cut-over"; }
	online_check "$CLUSTER_DIR/pgbench_after.out" "after the cut-over"
	echo "  application after the cut-over (through the view on app.customers_live): $(online_tps "$CLUSTER_DIR/pgbench_after.out") tps"
	cpsql -qAt -F ' ' -c "SELECT (SELECT count(*) FROM legacy.customers_old),
			(SELECT count(*) FROM app.customers_live),
			(SELECT count(*) FROM app.customers_live WHERE customer_id > 50000000),
			(SELECT relkind FROM pg_class WHERE oid = 'legacy.customers'::regclass)" |
		while read -r old new created kind; do
			echo "  legacy.customers_old: $old rows (frozen at the cut-over); app.customers_live: $new rows, $created of them created by the application; legacy.customers is now a $( [ "$kind" = v ] && echo view || echo "relation of kind $kind")"
		done
	echo "online migration: $(since "$t") s"
fi

FAILED=0
echo
echo "demo finished in $(since "$T_START") s: $total_rows rows migrated, source and target reconciled"
