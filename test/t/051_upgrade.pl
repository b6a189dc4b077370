# ALTER EXTENSION acme_migrate UPDATE from 1.0 (issue 10, item 3).
#
# Two databases on one cluster: "fresh" gets the newest version with
# CREATE EXTENSION; "old" gets VERSION '1.0', a job copied one batch under
# it, then ALTER EXTENSION acme_migrate UPDATE.  Every object of the
# extension is then listed from pg_catalog in both (functions with their
# signatures, C symbols or bodies, settings and ACLs; tables, views and
# sequences with their options, ACLs and row security; columns with types,
# defaults and identity; constraints, indexes, policies, view definitions,
# comments' presence, the tables and sequences marked for pg_dump): the two
# sets must be identical, and every difference is printed.  The job created
# under 1.0 must then finish and reconcile equal.
#
# The library of this tree reads and writes the catalog of the newest
# version only: acme_migrate_create under a 1.0 catalog fails (column
# "search_path" of relation "jobs" does not exist).  That is recorded below
# as a TODO test; the job of 1.0 is written into the 1.0 catalog row for
# row as the 1.0 library wrote it (its INSERT's column list), with its
# first batch copied and checkpointed the same way.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('upgrade');
$node->init;
$node->start;

$node->safe_psql('postgres', 'CREATE DATABASE fresh');
$node->safe_psql('postgres', 'CREATE DATABASE old');
$node->safe_psql('fresh', 'CREATE EXTENSION acme_migrate');
$node->safe_psql('old', "CREATE EXTENSION acme_migrate VERSION '1.0'");
is( $node->safe_psql(
		'old', "SELECT extversion FROM pg_extension WHERE extname = 'acme_migrate'"),
	'1.0',
	'version 1.0 installs');

$node->safe_psql(
	'old', q{
	CREATE TABLE src (id integer PRIMARY KEY, v text, amount numeric(8,2));
	INSERT INTO src SELECT g, 'v' || g, g / 3.0 FROM generate_series(1, 1000) g;
	CREATE TABLE dst (id integer PRIMARY KEY, v text, amount numeric(8,2));
});

TODO:
{
	local $TODO =
	  'the library reads and writes the catalog of the newest version only';
	my ($ret, $out, $err) = $node->psql(
		'old', q{
		BEGIN;
		SELECT acme_migrate_create('probe', 'src', 'dst');
		ROLLBACK;
	});
	is($ret, 0, 'acme_migrate_create works under a 1.0 catalog')
	  or diag($err);
}

# the job as the 1.0 library created it, and its first batch of 300 rows
$node->safe_psql(
	'old', q{
	INSERT INTO acme_migrate.jobs (job_name, owner, source_table, target_table,
		key_columns, target_key_columns, key_is_unique, column_map, columns_given,
		filter, batch_size, on_conflict, on_error, max_error_rate, capture_changes,
		depends_on, max_rows_per_second, batch_time_target, max_replication_lag,
		lock_timeout, rows_estimate)
	VALUES ('v10', 'postgres', 'src', 'dst', '{id}', '{id}', true,
		'{"id": "id", "v": "v", "amount": "amount"}', NULL, NULL, 300, 'update',
		'abort', NULL, false, NULL, NULL, NULL, NULL, NULL, 1000);
	BEGIN;
	INSERT INTO dst SELECT * FROM src WHERE id <= 300;
	UPDATE acme_migrate.jobs SET last_key = '{300}', rows_read = 300, rows_copied = 300,
		   batches_done = 1, state = 'running', started_at = now(), updated_at = now()
	 WHERE job_name = 'v10';
	INSERT INTO acme_migrate.batches (job_id, batch_no, first_key, last_key, rows_read,
		rows_copied, rows_rejected, method, started_at, duration)
	SELECT job_id, 1, '{1}', '{300}', 300, 300, 0, 'direct', now(), '5 ms'
	  FROM acme_migrate.jobs WHERE job_name = 'v10';
	COMMIT;
});

$node->safe_psql('old', 'ALTER EXTENSION acme_migrate UPDATE');
is( $node->safe_psql(
		'old', "SELECT extversion FROM pg_extension WHERE extname = 'acme_migrate'"),
	$node->safe_psql(
		'fresh', "SELECT extversion FROM pg_extension WHERE extname = 'acme_migrate'"),
	'ALTER EXTENSION UPDATE reaches the newest version');

# every object of the extension, one line each, from pg_catalog
my $objects_sql = q{
WITH ext AS (SELECT oid, extnamespace, extconfig, extcondition FROM pg_extension
			  WHERE extname = 'acme_migrate'),
mem AS (SELECT d.classid, d.objid FROM pg_depend d, ext
		 WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid
		   AND d.deptype = 'e'),
rels AS (SELECT c.* FROM pg_class c JOIN mem ON mem.classid = 'pg_class'::regclass
		  AND mem.objid = c.oid)
SELECT x FROM (
	SELECT format('function %s returns %s language %s kind %s strict %s secdef %s volatile %s '
				  'parallel %s leakproof %s config %s acl %s defaults %s symbol %s source %s comment %s',
			p.oid::regprocedure, p.prorettype::regtype, l.lanname, p.prokind, p.proisstrict,
			p.prosecdef, p.provolatile, p.proparallel, p.proleakproof, p.proconfig, p.proacl,
			pg_get_expr(p.proargdefaults, 0), p.probin,
			CASE WHEN l.lanname = 'c' THEN p.prosrc ELSE md5(p.prosrc) END,
			obj_description(p.oid, 'pg_proc') IS NOT NULL) AS x
	  FROM pg_proc p JOIN mem ON mem.classid = 'pg_proc'::regclass AND mem.objid = p.oid
	  JOIN pg_language l ON l.oid = p.prolang
	UNION ALL
	SELECT format('relation %s kind %s options %s acl %s rls %s force %s persistence %s comment %s',
			c.oid::regclass, c.relkind, c.reloptions, c.relacl, c.relrowsecurity,
			c.relforcerowsecurity, c.relpersistence,
			obj_description(c.oid, 'pg_class') IS NOT NULL)
	  FROM rels c
	UNION ALL
	SELECT format('column %s.%s position %s type %s notnull %s default %s identity %s generated %s '
				  'collation %s acl %s comment %s',
			a.attrelid::regclass, a.attname,
			row_number() OVER (PARTITION BY a.attrelid ORDER BY a.attnum),
			format_type(a.atttypid, a.atttypmod), a.attnotnull,
			pg_get_expr(ad.adbin, ad.adrelid), a.attidentity, a.attgenerated,
			a.attcollation, a.attacl, col_description(a.attrelid, a.attnum) IS NOT NULL)
	  FROM pg_attribute a JOIN rels c ON c.oid = a.attrelid
	  LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
	 WHERE a.attnum > 0 AND NOT a.attisdropped
	UNION ALL
	SELECT format('constraint %s on %s: %s', co.conname, co.conrelid::regclass,
			pg_get_constraintdef(co.oid))
	  FROM pg_constraint co JOIN rels c ON c.oid = co.conrelid
	UNION ALL
	SELECT format('index %s', pg_get_indexdef(i.indexrelid))
	  FROM pg_index i JOIN rels c ON c.oid = i.indrelid
	UNION ALL
	SELECT format('policy %s on %s cmd %s permissive %s roles %s using %s check %s',
			po.polname, po.polrelid::regclass, po.polcmd, po.polpermissive,
			po.polroles::regrole[], pg_get_expr(po.polqual, po.polrelid),
			pg_get_expr(po.polwithcheck, po.polrelid))
	  FROM pg_policy po JOIN rels c ON c.oid = po.polrelid
	UNION ALL
	SELECT format('trigger %s on %s: %s', t.tgname, t.tgrelid::regclass,
			pg_get_triggerdef(t.oid))
	  FROM pg_trigger t JOIN rels c ON c.oid = t.tgrelid
	 WHERE NOT t.tgisinternal	-- foreign keys' triggers, named by OID
	UNION ALL
	SELECT format('view %s: %s', c.oid::regclass, md5(pg_get_viewdef(c.oid)))
	  FROM rels c WHERE c.relkind IN ('v', 'm')
	UNION ALL
	SELECT format('schema %s owner-acl %s comment %s', n.nspname, n.nspacl,
			obj_description(n.oid, 'pg_namespace') IS NOT NULL)
	  FROM pg_namespace n JOIN mem ON mem.classid = 'pg_namespace'::regclass
	   AND mem.objid = n.oid
	UNION ALL
	SELECT format('member %s', pg_describe_object(mem.classid, mem.objid, 0))
	  FROM mem
	UNION ALL
	SELECT format('dumped %s where %s', c::regclass, coalesce(w, ''))
	  FROM ext, unnest(ext.extconfig, ext.extcondition) AS u(c, w)
) s
ORDER BY x
};

my %fresh = map { $_ => 1 } split /\n/, $node->safe_psql('fresh', $objects_sql);
my %old = map { $_ => 1 } split /\n/, $node->safe_psql('old', $objects_sql);
my @only_fresh = sort grep { !$old{$_} } keys %fresh;
my @only_old = sort grep { !$fresh{$_} } keys %old;
diag("only in a fresh install: $_") for @only_fresh;
diag("only after the update:   $_") for @only_old;
cmp_ok(scalar(keys %fresh), '>', 300, 'the listing covers the objects ('
	  . scalar(keys %fresh)
	  . ' lines)');
is(scalar(@only_fresh) + scalar(@only_old),
	0, 'the updated extension is identical to a fresh install');
ok((grep { /^function acme_migrate_create\(.*symbol .*acme_migrate_create_1_1 / }
	  keys %old),
	'... acme_migrate_create of the updated database calls the 1.1 symbol');

# the job created under 1.0 goes on after the update
$node->safe_psql('old', "CALL acme_migrate_run('v10')");
is( $node->safe_psql(
		'old', q{
	SELECT j.state, j.rows_read, j.batches_done, j.shape IS NOT NULL,
		   (SELECT count(*) FROM dst),
		   NOT EXISTS (SELECT * FROM src EXCEPT ALL SELECT * FROM dst),
		   NOT EXISTS (SELECT * FROM dst EXCEPT ALL SELECT * FROM src)
	  FROM acme_migrate.jobs j WHERE j.job_name = 'v10'
}),
	'done|1000|4|t|1000|t|t',
	'the job of 1.0 finishes after the update (its shape taken on its first 1.1 batch)');
is($node->safe_psql('old', "SELECT acme_migrate_is_reconciled('v10')"),
	'ok 1 - migration job "v10" is reconciled',
	'... and reconciles equal');

$node->stop;
done_testing();
