# Shared by the benchmark scripts: the benchmark's orders table.
#
# make_orders TABLE ROWS: (re)creates TABLE with ROWS rows (bigint key, int,
# numeric(12,2), text, timestamptz, 40-character text), frozen and analyzed,
# unless KEEP=1 and it already has ROWS rows.  Needs psql_q from the caller.

make_orders() {
	local table=$1 rows=$2 have=-1
	if [ "$(psql_q -At -c "SELECT to_regclass('$table') IS NOT NULL")" = t ]; then
		have=$(psql_q -At -c "SELECT count(*) FROM $table")
	fi
	if [ "${KEEP:-0}" = 1 ] && [ "$have" = "$rows" ]; then
		return 0
	fi
	echo "creating $table with $rows rows"
	psql_q <<SQL
SET client_min_messages = warning;
DROP TABLE IF EXISTS $table;
CREATE TABLE $table (
	id bigint PRIMARY KEY,
	customer_id integer NOT NULL,
	amount numeric(12,2) NOT NULL,
	status text NOT NULL,
	created_at timestamptz NOT NULL,
	note text NOT NULL
);
INSERT INTO $table
SELECT i, ((i * 7919) % 100000)::integer, ((i * 104729) % 1000000) / 100.0,
	   (ARRAY['new', 'paid', 'shipped', 'delivered', 'cancelled'])[1 + i % 5],
	   timestamptz '2020-01-01 00:00:00+00' + i * interval '17 seconds',
	   substr(md5(i::text) || md5((i + 1)::text), 1, 40)
FROM generate_series(1::bigint, $rows) i;
VACUUM (FREEZE, ANALYZE) $table;
SQL
}
