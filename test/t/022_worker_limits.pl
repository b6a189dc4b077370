# Workers cannot take the server (issue 9, finding 8).
#
# A role's jobs together get at most acme_migrate.max_workers_per_role
# workers and all jobs at most acme_migrate.max_workers_total: beyond them
# acme_migrate_start starts fewer (NOTICE) or none (ERROR 53400).  Workers
# throttled by max_rows_per_second => 1 sleep for minutes between batches;
# pause and cancel must stop them within a second or two, alter must reach
# them while they sleep, and acme_migrate_drop of a running job, by a
# superuser or a member of acme_migrate_admin, stops its workers and leaves
# nothing behind.  Workers run as the job's owner.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use AcmeTest;
use Time::HiRes qw(usleep time);

my $node = PostgreSQL::Test::Cluster->new('limits');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'acme_migrate'
max_worker_processes = 16
acme_migrate.max_workers_per_role = 3
acme_migrate.max_workers_total = 5
});
$node->start;

$node->safe_psql(
	'postgres', q{
	CREATE EXTENSION acme_migrate;
	CREATE ROLE tap_alice LOGIN;
	CREATE ROLE tap_bob LOGIN;
	CREATE ROLE tap_carol LOGIN IN ROLE acme_migrate_admin;
	CREATE TABLE src (id bigint PRIMARY KEY, v text);
	INSERT INTO src SELECT g, md5(g::text) FROM generate_series(1, 20000) g;
	ANALYZE src;
	GRANT SELECT ON src TO PUBLIC;
	GRANT CREATE ON SCHEMA public TO tap_alice, tap_bob;
});

# a job of $role copying src into its own table, 50 rows per batch at one
# row per second: after its first batch each worker sleeps for minutes
sub create_job
{
	my ($role, $job) = @_;
	$node->safe_psql(
		'postgres', qq{
		SET ROLE $role;
		CREATE TABLE dst_$job (id bigint PRIMARY KEY, v text);
		SELECT acme_migrate_create(job => '$job', source => 'src',
			target => 'dst_$job', batch_size => 50, max_rows_per_second => 1);
	});
}

# psql as $role: (exit code, stdout, stderr)
sub psql_as
{
	my ($role, $sql) = @_;
	my ($ret, $out, $err) = $node->psql('postgres', "SET ROLE $role; $sql");
	return ($ret, $out, $err);
}

# wait (at most $secs seconds) until $sql returns true; false on timeout

sub workers_of
{
	my ($job) = @_;
	return qq{(SELECT count(*) FROM pg_stat_activity
		WHERE backend_type = 'acme_migrate worker'
		  AND application_name = 'acme_migrate job ' ||
			(SELECT job_id FROM acme_migrate.jobs WHERE job_name = '$job'))};
}

# every worker of the job is sleeping in its throttle
sub wait_sleeping
{
	my ($job, $n) = @_;
	return wait_for($node, 
		qq{SELECT count(*) = $n FROM pg_stat_activity
			WHERE backend_type = 'acme_migrate worker'
			  AND query LIKE 'acme_migrate job $job: worker % sleeping % (max_rows_per_second)'},
		30);
}

create_job('tap_alice', $_) for qw(a1 a2 a3);
create_job('tap_bob',   $_) for qw(b1 b2);

######################################################################
# 1. caps per role and in all
######################################################################

my ($ret, $out, $err) =
  psql_as('tap_alice', "SELECT acme_migrate_start('a1', workers => 2)");
is($out, '2', 'alice: a1 starts with 2 workers');
($ret, $out, $err) =
  psql_as('tap_alice', "SELECT acme_migrate_start('a2', workers => 2)");
is($out, '1', 'alice: a2 gets 1 of 2 workers (max_workers_per_role = 3)');
like(
	$err,
	qr/NOTICE:  starting 1 of the 2 workers asked for job "a2"/,
	'alice: a NOTICE says how many were started');
($ret, $out, $err) =
  psql_as('tap_alice', "SELECT acme_migrate_start('a3', workers => 1)");
isnt($ret, 0, 'alice: a3 cannot start a worker');
like(
	$err,
	qr/ERROR:  could not start workers for job "a3"\nDETAIL:  Role "tap_alice" already runs 3 background workers/,
	'alice: the error names the role and its limit');
is( $node->safe_psql(
		'postgres', q{SELECT state, workers FROM acme_migrate.jobs
					   WHERE job_name = 'a3'}),
	'created|0',
	'alice: the refused start left a3 as it was');
($ret, $out, $err) = psql_as(
	'tap_alice', q{DO $$ BEGIN PERFORM acme_migrate_start('a3');
		EXCEPTION WHEN OTHERS THEN RAISE NOTICE 'sqlstate %', SQLSTATE; END $$});
like($err, qr/NOTICE:  sqlstate 53400/, 'alice: the refusal is SQLSTATE 53400');

($ret, $out, $err) =
  psql_as('tap_bob', "SELECT acme_migrate_start('b1', workers => 3)");
is($out, '2', 'bob: b1 gets 2 of 3 workers (max_workers_total = 5)');
($ret, $out, $err) =
  psql_as('tap_bob', "SELECT acme_migrate_start('b2', workers => 1)");
like(
	$err,
	qr/ERROR:  could not start workers for job "b2"\nDETAIL:  Jobs already run 5 background workers, the most acme_migrate.max_workers_total allows/,
	'bob: b2 is refused, all jobs together have the most workers allowed');

ok(wait_sleeping('a1', 2) && wait_sleeping('a2', 1) && wait_sleeping('b1', 2),
	'the 5 workers copied a batch each and sleep in their throttle');
is( $node->safe_psql(
		'postgres', q{
	SELECT string_agg(usename || ':' || n, ',' ORDER BY usename)
	  FROM (SELECT usename, count(*) AS n FROM pg_stat_activity
			 WHERE backend_type = 'acme_migrate worker' GROUP BY usename) x}),
	'tap_alice:3,tap_bob:2',
	'workers run as their job\'s owner, never as a superuser: 3 of alice, 2 of bob');
is( $node->safe_psql(
		'postgres', q{SELECT count(*) FROM pg_stat_activity
					   WHERE backend_type = 'acme_migrate worker'
						 AND usesysid IN (SELECT oid FROM pg_roles WHERE rolsuper)}),
	'0', 'no worker runs as a superuser');

######################################################################
# 2. pause and cancel reach sleeping workers
######################################################################

my $t0 = time();
($ret, $out, $err) = psql_as('tap_alice', "SELECT acme_migrate_pause('a1')");
is($out, 't', 'alice pauses a1');
ok(wait_for($node, 'SELECT ' . workers_of('a1') . ' = 0', 4),
	'the sleeping workers of a1 stop within 4 s of the pause');
diag(sprintf('a1: workers gone %.1f s after the pause', time() - $t0));

$t0 = time();
($ret, $out, $err) = psql_as('tap_alice', "SELECT acme_migrate_cancel('a2')");
is($out, 't', 'alice cancels a2');
ok(wait_for($node, 'SELECT ' . workers_of('a2') . ' = 0', 4),
	'the sleeping worker of a2 stops within 4 s of the cancel');
diag(sprintf('a2: worker gone %.1f s after the cancel', time() - $t0));

# with a1 paused and a2 cancelled, alice has room again
($ret, $out, $err) =
  psql_as('tap_alice', "SELECT acme_migrate_start('a3', workers => 1)");
is($out, '1', 'alice: a3 starts once her other jobs stopped');
ok(wait_sleeping('a3', 1), 'a3: its worker sleeps in its throttle');

######################################################################
# 3. alter reaches a sleeping worker
######################################################################

$t0 = time();
psql_as('tap_alice',
	"SELECT acme_migrate_alter('a3', max_rows_per_second => 0, batch_size => 5000)");
ok( wait_for($node, 
		q{SELECT state = 'done' FROM acme_migrate.jobs WHERE job_name = 'a3'}, 20),
	'a3: with the throttle lifted the sleeping worker wakes and finishes the job');
diag(sprintf('a3: done %.1f s after the alter', time() - $t0));
is( $node->safe_psql(
		'postgres', q{SELECT count(*) FROM dst_a3}),
	'20000', 'a3: every row copied');

######################################################################
# 4. drop of a running job
######################################################################

my $b1 = $node->safe_psql('postgres',
	"SELECT job_id FROM acme_migrate.jobs WHERE job_name = 'b1'");
is($node->safe_psql('postgres', 'SELECT ' . workers_of('b1')),
	'2', 'b1 runs with 2 workers');
$t0 = time();
($ret, $out, $err) =
  $node->psql('postgres', "SELECT acme_migrate_drop('b1')");
is($out, 't', 'a superuser drops b1 while its workers run');
like($err, qr/NOTICE:  stopping 2 worker\(s\) of job "b1"/,
	'the drop says it stops the workers');
diag(sprintf('b1: dropped in %.1f s', time() - $t0));
is( $node->safe_psql(
		'postgres', qq{
	SELECT (SELECT count(*) FROM pg_stat_activity
			 WHERE backend_type = 'acme_migrate worker'
			   AND application_name = 'acme_migrate job $b1'),
		   (SELECT count(*) FROM acme_migrate.jobs WHERE job_id = $b1),
		   (SELECT count(*) FROM acme_migrate.batches WHERE job_id = $b1),
		   (SELECT count(*) FROM acme_migrate.ranges WHERE job_id = $b1),
		   (SELECT count(*) FROM acme_migrate.errors WHERE job_id = $b1)}),
	'0|0|0|0|0',
	'b1: no worker, no job, batch, range or error row is left');

# an admin (not a superuser) drops alice's resumed job
($ret, $out, $err) = psql_as('tap_alice', "SELECT acme_migrate_resume('a1')");
is($out, '2', 'alice resumes a1 with its 2 workers');
ok(wait_for($node, 'SELECT ' . workers_of('a1') . ' = 2', 30), 'a1 runs again');
my $a1 = $node->safe_psql('postgres',
	"SELECT job_id FROM acme_migrate.jobs WHERE job_name = 'a1'");
($ret, $out, $err) = psql_as('tap_carol', "SELECT acme_migrate_drop('a1')");
is($out, 't', 'a member of acme_migrate_admin drops a1 while its workers run');
is( $node->safe_psql(
		'postgres', qq{
	SELECT (SELECT count(*) FROM pg_stat_activity
			 WHERE backend_type = 'acme_migrate worker'
			   AND application_name = 'acme_migrate job $a1'),
		   (SELECT count(*) FROM acme_migrate.jobs WHERE job_id = $a1),
		   (SELECT count(*) FROM acme_migrate.batches WHERE job_id = $a1),
		   (SELECT count(*) FROM acme_migrate.ranges WHERE job_id = $a1)}),
	'0|0|0|0',
	'a1: no worker and no catalog row is left');

# the launcher does not bring dropped jobs back
usleep(2_000_000);
is( $node->safe_psql(
		'postgres', q{SELECT count(*) FROM pg_stat_activity
					   WHERE backend_type = 'acme_migrate worker'}),
	'0', 'no worker is left in the server');
ok(!$node->log_contains(qr/server process .* was terminated by signal|terminated by signal/),
	'no process crashed');

$node->stop;
done_testing();
