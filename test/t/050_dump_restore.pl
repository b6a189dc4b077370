# pg_dump and pg_restore of a database with jobs under way (issue 10, item 2).
#
# Database "orig" holds a job copied half-way (3 batches of 300 rows out of
# 2,000, into a target WITHOUT a unique index, so a row copied twice would be
# there twice), a reconciliation run that found the other rows missing, a
# job that rejected rows and a job capturing changes.  It is dumped with
# pg_dump -Fc and restored with pg_restore into "restored", then:
#   - every table and every sequence of the catalog is marked for pg_dump,
#     and came back with the same rows and sequence positions;
#   - the half-done job resumes from its checkpoint and finishes exactly:
#     EXCEPT ALL is empty both ways, no key twice, the batch history goes on
#     from batch 4;
#   - new jobs, reconcile runs and rejects get ids above the restored ones
#     (before the fix: duplicate key value violates unique constraint
#     "jobs_pkey");
#   - the capturing job, whose internal triggers pg_dump leaves out, fails
#     clearly instead of losing the writes made since.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('dump');
$node->init;
$node->start;

$node->safe_psql('postgres', 'CREATE DATABASE orig');
$node->safe_psql(
	'orig', q{
	CREATE EXTENSION acme_migrate;
	CREATE SCHEMA legacy;
	CREATE SCHEMA app;
	CREATE TABLE legacy.orders (id integer PRIMARY KEY, amount numeric(10,2) NOT NULL,
								note text);
	INSERT INTO legacy.orders
	SELECT g, (g % 977) / 4.0, CASE WHEN g % 7 <> 0 THEN md5(g::text) END
	  FROM generate_series(1, 2000) g;
	CREATE TABLE app.orders (id integer NOT NULL, amount_cents bigint NOT NULL, note text);
	SELECT acme_migrate_create(job => 'half', source => 'legacy.orders',
		target => 'app.orders', columns => '{"amount_cents": "(amount * 100)::bigint"}',
		batch_size => 300, on_conflict => 'error');
	SELECT acme_migrate_batch('half');
	SELECT acme_migrate_batch('half');
	SELECT acme_migrate_batch('half');
	SELECT run_id FROM acme_migrate_reconcile('half');

	-- a job that rejects the rows its target refuses
	CREATE TABLE app.small (id integer PRIMARY KEY, amount numeric(10,2) CHECK (amount < 200),
							note text);
	SELECT acme_migrate_create(job => 'rej', source => 'legacy.orders',
		target => 'app.small', on_error => 'reject');
	CALL acme_migrate_run('rej');

	-- a job capturing the writes to its source
	CREATE TABLE legacy.live (id integer PRIMARY KEY, v text);
	INSERT INTO legacy.live SELECT g, 'v' || g FROM generate_series(1, 300) g;
	CREATE TABLE app.live (id integer PRIMARY KEY, v text);
	SELECT acme_migrate_create(job => 'cap', source => 'legacy.live', target => 'app.live',
		batch_size => 100, capture_changes => true);
	SELECT acme_migrate_batch('cap');
	UPDATE legacy.live SET v = 'changed' WHERE id = 5;
});

is( $node->safe_psql(
		'orig', q{
	SELECT (SELECT state || ' ' || rows_read FROM acme_migrate.jobs WHERE job_name = 'half'),
		   (SELECT missing FROM acme_migrate.reconcile_runs),
		   (SELECT count(*) FROM acme_migrate.diffs),
		   (SELECT count(*) > 0 FROM acme_migrate.rejects),
		   (SELECT count(*) FROM acme_migrate.capture_log)
}),
	'running 900|1100|1100|t|1',
	'before the dump: a job half done, a run with diffs, rejects, a captured write');

# every table and every sequence that belongs to the extension is dumped
is( $node->safe_psql(
		'orig', q{
	SELECT coalesce(string_agg(c.oid::regclass::text, ', ' ORDER BY c.oid), 'none')
	  FROM pg_depend d
	  JOIN pg_class c ON c.oid = d.objid AND d.classid = 'pg_class'::regclass
	  JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'acme_migrate'
	 WHERE d.deptype = 'e' AND c.relkind IN ('r', 'p', 'S')
	   AND c.oid <> ALL (e.extconfig)
}),
	'none',
	'every catalog table and sequence is marked with pg_extension_config_dump');

# what the catalog holds, table by table, and where each sequence stands
sub catalog_summary
{
	my ($db) = @_;
	my @lines;
	for my $t (
		qw(jobs batches rejects errors reconcile_runs diffs ranges
		capture_log preimages cutovers))
	{
		push @lines,
		  "$t: "
		  . $node->safe_psql($db,
			"SELECT count(*) || ' rows, md5 ' || md5(coalesce(string_agg(r::text, ',' ORDER BY r::text), '')) FROM acme_migrate.$t r"
		  );
	}
	for my $s (
		split /\n/,
		$node->safe_psql(
			$db, q{
		SELECT s::regclass FROM pg_extension e, unnest(e.extconfig) s
		 WHERE e.extname = 'acme_migrate'
		   AND (SELECT relkind FROM pg_class WHERE oid = s) = 'S' ORDER BY 1::text
	}))
	{
		push @lines,
		  "$s: "
		  . $node->safe_psql($db,
			"SELECT 'last_value ' || last_value || ', is_called ' || is_called FROM $s");
	}
	return join("\n", @lines);
}

my $before = catalog_summary('orig');
like($before, qr/jobs_job_id_seq: last_value 3, is_called t/,
	'the catalog summary lists the sequences');

my $dump = $node->basedir . '/orig.dump';
$node->command_ok(
	[ 'pg_dump', '-Fc', '-f', $dump, '-d', $node->connstr('orig') ],
	'pg_dump -Fc');
$node->safe_psql('postgres', 'CREATE DATABASE restored');
$node->command_ok(
	[
		'pg_restore', '--exit-on-error', '-d', $node->connstr('restored'),
		$dump
	],
	'pg_restore into a new database');

is(catalog_summary('restored'),
	$before, 'the catalog came back row for row, sequences included');

# the half-done job resumes from its checkpoint and finishes exactly
$node->safe_psql('restored', "CALL acme_migrate_run('half')");
is( $node->safe_psql(
		'restored', q{
	SELECT j.state, j.rows_read, j.rows_copied,
		   (SELECT count(*) FROM app.orders),
		   (SELECT count(DISTINCT id) FROM app.orders),
		   NOT EXISTS (SELECT id, (amount * 100)::bigint, note FROM legacy.orders
					   EXCEPT ALL SELECT id, amount_cents, note FROM app.orders),
		   NOT EXISTS (SELECT id, amount_cents, note FROM app.orders
					   EXCEPT ALL SELECT id, (amount * 100)::bigint, note FROM legacy.orders),
		   (SELECT string_agg(batch_no::text, ',' ORDER BY batch_no)
			  FROM acme_migrate.batches b WHERE b.job_id = j.job_id),
		   (SELECT sum(rows_read) FROM acme_migrate.batches b WHERE b.job_id = j.job_id)
	  FROM acme_migrate.jobs j WHERE j.job_name = 'half'
}),
	'done|2000|2000|2000|2000|t|t|1,2,3,4,5,6,7|2000',
	'the restored half-done job finishes exactly: EXCEPT ALL empty both ways, no key twice, history goes on');

# new jobs, runs and rejects get fresh ids
my ($old_job, $old_run, $old_reject) = split /\|/,
  $node->safe_psql(
	'restored', q{
	SELECT (SELECT max(job_id) FROM acme_migrate.jobs),
		   (SELECT max(run_id) FROM acme_migrate.reconcile_runs),
		   (SELECT max(reject_id) FROM acme_migrate.rejects)
});
my ($ret, $out, $err) = $node->psql(
	'restored', q{
	CREATE TABLE app.orders2 (LIKE app.orders);
	SELECT acme_migrate_create(job => 'after', source => 'legacy.orders',
		target => 'app.orders2', columns => '{"amount_cents": "(amount * 100)::bigint"}',
		on_conflict => 'error');
});
is($ret, 0, 'a new job can be created after the restore') or diag($err);
cmp_ok($out, '>', $old_job, '... with an id above the restored ones');
$node->safe_psql('restored', "CALL acme_migrate_run('after')");
is( $node->safe_psql(
		'restored', q{
	SELECT r.run_id > } . $old_run . q{, r.equal, r.source_rows, r.target_rows,
		   (SELECT state FROM acme_migrate.jobs WHERE job_name = 'after')
	  FROM acme_migrate_reconcile('after') r
}),
	't|t|2000|2000|done',
	'the new job finishes, and a new reconcile run gets a fresh id and is equal');
is( $node->safe_psql(
		'restored',
		q{SELECT equal FROM acme_migrate_reconcile('half')}),
	't',
	'the restored job reconciles equal');

$node->safe_psql(
	'restored', q{
	CREATE TABLE app.small2 (LIKE app.small INCLUDING ALL);
	SELECT acme_migrate_create(job => 'rej2', source => 'legacy.orders',
		target => 'app.small2', on_error => 'reject');
	CALL acme_migrate_run('rej2');
});
is( $node->safe_psql(
		'restored', q{
	SELECT min(reject_id) > } . $old_reject . q{, count(*) > 0
	  FROM acme_migrate.rejects r JOIN acme_migrate.jobs j USING (job_id)
	 WHERE j.job_name = 'rej2'
}),
	't|t',
	'new rejects get ids above the restored ones');

# the capturing job lost its triggers in the dump: it says so
($ret, $out, $err) =
  $node->psql('restored', "SELECT acme_migrate_catch_up('cap')");
isnt($ret, 0, 'catch-up of a restored capturing job is refused');
like(
	$err,
	qr/capture triggers of job "cap" are missing/,
	'... because its capture triggers are missing');
($ret, $out, $err) =
  $node->psql('restored', "SELECT acme_migrate_batch('cap')");
like(
	$err,
	qr/WARNING:  capture triggers of job "cap" are missing/,
	'a batch of the restored capturing job warns');
is( $node->safe_psql(
		'restored',
		q{SELECT state, failure_reason LIKE '%capture triggers are missing%'
			FROM acme_migrate.jobs WHERE job_name = 'cap'}),
	'failed|t',
	'... and fails the job, with the reason recorded');
is( $node->safe_psql(
		'orig', q{SELECT acme_migrate_batch('cap')}),
	'100',
	'the same job in the original database, triggers in place, copies on');

$node->stop;
done_testing();
