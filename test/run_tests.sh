#!/usr/bin/env bash
#
# make test: every test suite of acme_migrate, from a bare Debian 12.
#
#   1. installs the missing Debian packages, builds, installs (make install);
#   2. make installcheck, one suite at a time, each on its own temporary
#      instance: pg_regress (REGRESS), isolation (ISOLATION), then each TAP
#      test of test/t/*.pl on its own (PostgreSQL::Test::Cluster);
#   3. the pgTAP suites test/pgtap/*.sql through pg_prove (test/pgtap.sh).
#
# PostgreSQL refuses to run as root, so as root the tree is copied to a
# temporary directory owned by "postgres" and the suites run there as
# postgres; as any other user they run in place.  A failing suite prints its
# regression.diffs or TAP logs.  The last line is "N passed, N failed",
# counting tests (one per pg_regress test, isolation spec, TAP file and pgTAP
# file; a suite that breaks before reporting its tests counts as one failed);
# the exit status is non-zero when anything failed.
#
#   TEST_BUDGET=840   seconds for the whole run; suites left when it is spent
#                     are reported failed, not silently skipped
#   SKIP_BUILD=1      use the installed extension as it is
#   KEEP=1            keep the temporary copy of the tree (root only)
#   ACME_SUMMARY_FILE=F   also write the closing line to F (.ci/run prints it
#                     again after make's own messages)
#
set -euo pipefail

# shellcheck source=test/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TEST_BUDGET="${TEST_BUDGET:-840}"
T0="$(date +%s)"

TOTAL_PASSED=0
TOTAL_FAILED=0
SUMMARY=()

record() {	# suite passed failed [note]
	TOTAL_PASSED=$((TOTAL_PASSED + $2))
	TOTAL_FAILED=$((TOTAL_FAILED + $3))
	SUMMARY+=("$(printf '  %-10s %3d passed, %3d failed%s' "$1" "$2" "$3" "${4:+  ($4)}")")
}

finish_line() {
	echo
	echo "==================== acme_migrate test summary ===================="
	local line
	for line in "${SUMMARY[@]}"; do
		echo "$line"
	done
	echo "  ($(($(date +%s) - T0)) s)"
	echo "$TOTAL_PASSED passed, $TOTAL_FAILED failed"
	if [ -n "${ACME_SUMMARY_FILE:-}" ]; then
		echo "$TOTAL_PASSED passed, $TOTAL_FAILED failed" >"$ACME_SUMMARY_FILE"
	fi
}

# seconds left for a step: at most $1, at least 0
budget_left() {
	local left=$((TEST_BUDGET - ($(date +%s) - T0)))
	if [ "$left" -gt "$1" ]; then
		left="$1"
	fi
	if [ "$left" -lt 0 ]; then
		left=0
	fi
	echo "$left"
}

# print a file (at most $2 lines from its end) under a banner
show_file() {
	local f="$1" max="${2:-400}"
	[ -f "$f" ] || return 0
	echo "---- ${f#"$RUN_DIR"/} (last $max lines) ----"
	tail -n "$max" "$f"
	echo "---- end of ${f#"$RUN_DIR"/} ----"
}

# ---- 1. packages, build, install -------------------------------------------
if [ "${SKIP_BUILD:-0}" = 1 ]; then
	log "SKIP_BUILD=1: using the installed extension"
else
	if ! ensure_packages; then
		record setup 0 1 "installing the Debian packages failed"
		finish_line
		exit 1
	fi
	if ! build_and_install; then
		record setup 0 1 "build or make install failed; see the compiler output above"
		finish_line
		exit 1
	fi
fi

# ---- where the suites run ---------------------------------------------------
WORK_DIR=""
cleanup() {
	if [ -n "$WORK_DIR" ] && [ "${KEEP:-0}" != 1 ]; then
		rm -rf "$WORK_DIR"
	fi
}
trap cleanup EXIT

if is_root; then
	WORK_DIR="$(mktemp -d "${TMPDIR:-/tmp}/acme_migrate_test.XXXXXX")"
	RUN_DIR="$WORK_DIR/tree"
	mkdir "$RUN_DIR"
	# the tree without .git and without old test output
	tar -C "$ACME_TOP" --exclude=.git --exclude='./tmp_check*' --exclude=./results \
		--exclude=./regression.diffs --exclude=./regression.out -cf - . | tar -C "$RUN_DIR" -xf -
	chown -R postgres:postgres "$WORK_DIR"
	chmod 0755 "$WORK_DIR"
	log "running the suites as postgres in $RUN_DIR"
	RUNNER=(runuser -u postgres -- env HOME="$WORK_DIR")
else
	RUN_DIR="$ACME_TOP"
	RUNNER=()
	log "running the suites as $(id -un) in $RUN_DIR"
fi

# make installcheck in RUN_DIR as the test user, under a time limit
installcheck() {	# seconds, make arguments...
	local secs="$1"
	shift
	(cd "$RUN_DIR" && timeout -k 30 "$secs" "${RUNNER[@]}" \
		make --no-print-directory PG_CONFIG="$PG_CONFIG" installcheck "$@")
}

# Stop servers a killed or timed-out suite left running in RUN_DIR (a TAP
# script killed by timeout never runs the END block that stops its nodes).
stop_leftover_servers() {
	local pidfile
	while IFS= read -r pidfile; do
		warn "stopping a server left running in ${pidfile%/postmaster.pid}"
		"${RUNNER[@]}" "$PG_BINDIR/pg_ctl" -D "${pidfile%/postmaster.pid}" -m immediate -w stop \
			>/dev/null 2>&1 || true
	done < <(find "$RUN_DIR" -maxdepth 6 -name postmaster.pid 2>/dev/null)
}

# count "... ok" / "... FAILED" lines of pg_regress output in file $1
count_regress() {
	local ok bad
	ok="$(grep -cE '\.\.\. +ok( |$)' "$1" || true)"
	bad="$(grep -cE '\.\.\. +FAILED( |$)' "$1" || true)"
	echo "$ok $bad"
}

# ---- 2a. pg_regress ---------------------------------------------------------
run_pg_regress_suite() {	# name, make overrides..., -- diff files
	local name="$1" out rc=0 ok bad secs
	shift
	local args=()
	while [ "$1" != -- ]; do
		args+=("$1")
		shift
	done
	shift
	secs="$(budget_left 600)"
	if [ "$secs" -le 0 ]; then
		record "$name" 0 1 "not run: the time budget of $TEST_BUDGET s was spent"
		return
	fi
	echo
	echo "==================== $name (make installcheck) ===================="
	out="$WORK_LOG/$name.out"
	rm -f "$@"
	# pipefail: rc is make's status (tee does not fail)
	installcheck "$secs" "${args[@]}" 2>&1 | tee "$out" || rc=$?
	stop_leftover_servers
	if [ "$rc" -eq 124 ]; then
		echo "$name: killed after $secs s"
	fi
	read -r ok bad < <(count_regress "$out")
	if [ "$rc" -ne 0 ] && [ "$bad" -eq 0 ]; then
		record "$name" "$ok" 1 "make installcheck exited $rc before reporting a failed test"
	else
		record "$name" "$ok" "$bad"
	fi
	if [ "$rc" -ne 0 ]; then
		local f
		for f in "$@"; do
			show_file "$f" 400
		done
	fi
}

WORK_LOG="$(mktemp -d "${TMPDIR:-/tmp}/acme_migrate_log.XXXXXX")"
trap 'cleanup; rm -rf "$WORK_LOG"' EXIT

schedule() { grep -vE '^\s*(#|$)' "$ACME_TOP/$1" 2>/dev/null || true; }

if [ -n "$(schedule test/regress_schedule)" ]; then
	run_pg_regress_suite regress ISOLATION= TAP_TESTS= -- \
		"$RUN_DIR/regression.diffs" "$RUN_DIR/tmp_check_regress/log/postmaster.log"
else
	record regress 0 0 "test/regress_schedule is empty"
fi

# ---- 2b. isolation ----------------------------------------------------------
if [ -n "$(schedule test/isolation_schedule)" ]; then
	run_pg_regress_suite isolation REGRESS= TAP_TESTS= -- \
		"$RUN_DIR/test/regression.diffs" "$RUN_DIR/output_iso/regression.diffs" \
		"$RUN_DIR/tmp_check_iso/log/postmaster.log"
else
	record isolation 0 0 "test/isolation_schedule is empty"
fi

# ---- 2c. TAP, one file at a time --------------------------------------------
shopt -s nullglob
tap_files=("$ACME_TOP"/test/t/*.pl)
shopt -u nullglob
tap_ok=0
tap_bad=0
tap_note=""
if [ "${#tap_files[@]}" -gt 0 ]; then
	echo
	echo "==================== TAP (make installcheck, test/t/*.pl) ===================="
fi
for f in "${tap_files[@]}"; do
	rel="test/t/$(basename "$f")"
	secs="$(budget_left 420)"
	if [ "$secs" -le 0 ]; then
		tap_bad=$((tap_bad + 1))
		tap_note="time budget spent"
		echo "not run (time budget spent): $rel"
		continue
	fi
	echo "---- $rel"
	rc=0
	installcheck "$secs" REGRESS= ISOLATION= PROVE_TESTS="$rel" PROVE_FLAGS=--verbose \
		>"$WORK_LOG/tap.out" 2>&1 || rc=$?
	stop_leftover_servers
	if [ "$rc" -eq 0 ]; then
		tail -n 3 "$WORK_LOG/tap.out"
		tap_ok=$((tap_ok + 1))
	else
		tap_bad=$((tap_bad + 1))
		if [ "$rc" -eq 124 ]; then
			echo "TAP FAILED: $rel (killed after $secs s)"
		else
			echo "TAP FAILED: $rel (exit status $rc)"
		fi
		cat "$WORK_LOG/tap.out"
		for log_file in "$RUN_DIR"/tmp_check/log/*; do
			case "$log_file" in
			*/regress_log_*) show_file "$log_file" 300 ;;
			*) show_file "$log_file" 60 ;;
			esac
		done
	fi
done
record tap "$tap_ok" "$tap_bad" "$tap_note"

# ---- 3. pgTAP ---------------------------------------------------------------
echo
echo "==================== pgTAP (pg_prove, test/pgtap/*.sql) ===================="
secs="$(budget_left 600)"
if [ "$secs" -le 0 ]; then
	record pgtap 0 1 "not run: the time budget of $TEST_BUDGET s was spent"
else
	result_file="$WORK_LOG/pgtap.result"
	rc=0
	PGTAP_RESULT_FILE="$result_file" timeout -k 30 "$secs" bash "$ACME_TOP/test/pgtap.sh" || rc=$?
	if [ -s "$result_file" ]; then
		read -r p f <"$result_file"
		record pgtap "$p" "$f"
	else
		record pgtap 0 1 "test/pgtap.sh exited $rc before reporting"
	fi
fi

finish_line
if [ "$TOTAL_FAILED" -ne 0 ]; then
	exit 1
fi
if [ "$TOTAL_PASSED" -eq 0 ]; then
	echo "no test ran" >&2
	exit 1
fi
exit 0
