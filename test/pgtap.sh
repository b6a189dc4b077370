#!/usr/bin/env bash
#
# make pgtap: run the pgTAP suites test/pgtap/*.sql with pg_prove on a
# throwaway cluster (acme_migrate in shared_preload_libraries, database
# "acme_pgtap" with CREATE EXTENSION pgtap done).  Expects acme_migrate
# installed (make install); test/run_tests.sh calls it after installing.
#
# Each file runs as its own pg_prove call, so one broken file cannot hide the
# others.  The last line is "pgtap: N passed, N failed" (files); when
# PGTAP_RESULT_FILE is set, "N_PASSED N_FAILED" is also written there.
#
set -euo pipefail

# shellcheck source=test/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PGTAP_TIMEOUT="${PGTAP_TIMEOUT:-300}"	# seconds for each file

passed=0
failed=0
report() {
	echo "pgtap: $passed passed, $failed failed"
	if [ -n "${PGTAP_RESULT_FILE:-}" ]; then
		echo "$passed $failed" >"$PGTAP_RESULT_FILE"
	fi
}

shopt -s nullglob
files=("$ACME_TOP"/test/pgtap/*.sql)
shopt -u nullglob
if [ "${#files[@]}" -eq 0 ]; then
	log "no pgTAP suites in test/pgtap/"
	report
	exit 0
fi
command -v pg_prove >/dev/null 2>&1 ||
	die "pg_prove is missing: install libtap-parser-sourcehandler-pgtap-perl"

finish() {
	local rc=$?
	if [ "$rc" -ne 0 ] || [ "$failed" -ne 0 ]; then
		cluster_log_tail 60
	fi
	cluster_stop
	exit "$rc"
}
trap finish EXIT

cluster_start "shared_preload_libraries = 'acme_migrate'"
cpsql -q -c "CREATE DATABASE acme_pgtap"
CLUSTER_DB=acme_pgtap
cpsql -q -c "CREATE EXTENSION pgtap"

# pg_prove runs as postgres when we are root: give it copies it can read
suite_dir="$CLUSTER_DIR/pgtap"
mkdir -p "$suite_dir"
cp "${files[@]}" "$suite_dir/"
if is_root; then
	chown -R postgres:postgres "$suite_dir"
fi

runner=()
if is_root; then
	runner=(runuser -u postgres --)
fi
for f in "${files[@]}"; do
	name="$(basename "$f")"
	echo "---- pgTAP: test/pgtap/$name"
	if (cd "$suite_dir" && timeout -k 10 "$PGTAP_TIMEOUT" "${runner[@]}" \
		env PGHOST="$CLUSTER_HOST" PGPORT="$CLUSTER_PORT" PGUSER=postgres \
		PGDATABASE="$CLUSTER_DB" pg_prove --failures "$name"); then
		passed=$((passed + 1))
	else
		echo "pgTAP FAILED: test/pgtap/$name" >&2
		failed=$((failed + 1))
	fi
done
report
[ "$failed" -eq 0 ]
