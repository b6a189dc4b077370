# Throttles and the worker's error paths take effect, seen from outside:
#
#  1. max_rows_per_second: a session's CALL acme_migrate_run sleeps between
#     batches (wait event Extension in pg_stat_activity, the target not
#     growing while it does); cancelled during that sleep and the server
#     stopped in immediate mode at once, every batch the session had
#     committed before (seen by another session) is still there after the
#     restart.  wal_writer_delay = 10 s keeps the WAL writer from flushing
#     asynchronous commits for us, so only the run's own flush before it
#     sleeps makes them durable.
#  2. lock_timeout: with the target locked against writes by another
#     session (EXCLUSIVE: reads still go through), a CALL fails with
#     PostgreSQL's own lock timeout error (55P03), recorded in
#     acme_migrate.errors; a worker records it as transient and retries,
#     the job still running, and finishes exactly once the lock is gone.
#  3. give-up: a worker meeting an error that is not transient (a CHECK
#     violation, on_error stop) retries and, at the fifth, fails the job.
#  4. acme_migrate_alter on a job whose worker sleeps 50 s per batch
#     (max_rows_per_second 1): the sleep ends, and the following batches
#     have the new batch_size.
#
# batch_time_target is in sql/throttles.sql (batch sizes, no second
# session needed).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use AcmeTest;
use Time::HiRes qw(usleep);

my $node = PostgreSQL::Test::Cluster->new('throttles');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'acme_migrate'
autovacuum = off
wal_writer_delay = 10s
wal_writer_flush_after = 1GB
});
$node->start;

$node->safe_psql(
	'postgres', q{
	CREATE EXTENSION acme_migrate;
	CREATE TABLE src (id bigint PRIMARY KEY, v text NOT NULL);
	INSERT INTO src SELECT g, md5(g::text) FROM generate_series(1, 20000) g;
	CREATE TABLE dst (LIKE src INCLUDING ALL);
	CREATE TABLE dst2 (LIKE src INCLUDING ALL);
	CREATE TABLE dst3 (id bigint PRIMARY KEY, v text NOT NULL CHECK (id <> 777));
	CREATE TABLE dst4 (LIKE src INCLUDING ALL);
});

# exactness against the source: EXCEPT ALL both ways over the keys copied
sub exact_prefix
{
	my ($target) = @_;
	return except_all($node, "SELECT * FROM $target",
		"SELECT * FROM src WHERE id <= (SELECT max(id) FROM $target)");
}

######################################################################
# 1. max_rows_per_second in a session; cancel in the sleep; crash
######################################################################

$node->safe_psql(
	'postgres', q{
	SELECT acme_migrate_create(job => 'rate', source => 'src', target => 'dst',
		batch_size => 500, max_rows_per_second => 100);
});
my $bg = $node->background_psql('postgres', on_error_stop => 0);
my $pid = $bg->query_safe('SELECT pg_backend_pid()');
$bg->query_until(qr/started/, q{
	\echo started
	CALL acme_migrate_run('rate');
});
ok( wait_for(
		$node, qq{SELECT wait_event = 'Extension' AND n > 0
		  FROM pg_stat_activity, (SELECT count(*) AS n FROM dst) c
		 WHERE pid = $pid}, 60, 20_000),
	'max_rows_per_second: the run sleeps after its first batch (wait event Extension)');
my $seen = $node->safe_psql('postgres', 'SELECT count(*) FROM dst');
usleep(500_000);
is($node->safe_psql('postgres', 'SELECT count(*) FROM dst'),
	$seen, 'max_rows_per_second: no batch while it sleeps (5 s for 500 rows)');
cmp_ok($seen, '<', 20000, 'max_rows_per_second: the run is not done');
$node->safe_psql('postgres', "SELECT pg_cancel_backend($pid)");
ok( wait_for(
		$node, qq{SELECT count(*) = 0 FROM pg_stat_activity
		  WHERE pid = $pid AND state = 'active'}, 30, 20_000),
	'the cancel ends the CALL');
$node->stop('immediate');
$node->start;
$bg->{run}->kill_kill;
my $after = $node->safe_psql('postgres', 'SELECT count(*) FROM dst');
cmp_ok($after, '>=', $seen,
	"cancelled in its throttle sleep, then an immediate shutdown: the $seen rows the run had committed are still there ($after)");
is($node->safe_psql('postgres',
		q{SELECT rows_copied FROM acme_migrate.jobs WHERE job_name = 'rate'}),
	$after, 'the checkpoint counts the rows that are there');
is(exact_prefix('dst'), '0|0', 'and they are the source rows, once');

######################################################################
# 2. lock_timeout: a session fails, a worker retries
######################################################################

$node->safe_psql(
	'postgres', q{
	SELECT acme_migrate_create(job => 'locked', source => 'src', target => 'dst2',
		batch_size => 5000, lock_timeout => '200 ms');
});
my $locker = $node->background_psql('postgres');
$locker->query_safe('BEGIN; LOCK TABLE dst2 IN EXCLUSIVE MODE;');
my ($ret, $out, $err) = $node->psql('postgres', q{CALL acme_migrate_run('locked')});
like($err, qr/canceling statement due to lock timeout/,
	'lock_timeout: the CALL fails with PostgreSQL\'s lock timeout');
is( $node->safe_psql(
		'postgres', q{
	SELECT string_agg(sqlstate || ' ' || transient, ',') FROM acme_migrate.errors e
	JOIN acme_migrate.jobs j USING (job_id) WHERE j.job_name = 'locked'}),
	'55P03 true', 'lock_timeout: recorded in acme_migrate.errors as transient');

$node->safe_psql('postgres', q{SELECT acme_migrate_start('locked')});
ok( wait_for(
		$node, q{SELECT count(*) >= 2 FROM acme_migrate.errors e
		  JOIN acme_migrate.jobs j USING (job_id)
		 WHERE j.job_name = 'locked' AND e.sqlstate = '55P03'
		   AND e.backend_pid IN (SELECT pid FROM pg_stat_activity
								 WHERE backend_type = 'acme_migrate worker')}, 60),
	'worker: the lock timeout is recorded again by the worker, which retries');
is($node->safe_psql('postgres',
		q{SELECT state || ' ' || rows_copied FROM acme_migrate.jobs WHERE job_name = 'locked'}),
	'running 0', 'worker: the job is still running, nothing copied');
$locker->query_safe('COMMIT');
$locker->quit;
is($node->safe_psql('postgres', q{SELECT acme_migrate_wait('locked', timeout => '2 min')}),
	'done', 'worker: once the lock is gone the job finishes');
is(except_all($node, 'SELECT * FROM dst2', 'SELECT * FROM src'),
	'0|0', 'worker: the target equals the source');

######################################################################
# 3. give-up: an error that is not transient, five times
######################################################################

$node->safe_psql(
	'postgres', q{
	SELECT acme_migrate_create(job => 'broken', source => 'src', target => 'dst3',
		batch_size => 1000);
	SELECT acme_migrate_start('broken');
});
is($node->safe_psql('postgres', q{SELECT acme_migrate_wait('broken', timeout => '2 min')}),
	'failed', 'give-up: the job fails');
is( $node->safe_psql(
		'postgres', q{
	SELECT count(*), bool_and(NOT transient), min(sqlstate), max(sqlstate)
	FROM acme_migrate.errors e JOIN acme_migrate.jobs j USING (job_id)
	WHERE j.job_name = 'broken'}),
	'5|t|23514|23514',
	'give-up: five attempts, each the CHECK violation (23514), not transient');
like($node->safe_psql('postgres',
		q{SELECT failure_reason FROM acme_migrate.jobs WHERE job_name = 'broken'}),
	qr/worker error after 5 attempts: .*check constraint/,
	'give-up: the reason names the attempts and the error');
is($node->safe_psql('postgres', 'SELECT count(*) FROM dst3 WHERE id < 777'),
	'0', 'give-up: nothing of the failing batch remains');

######################################################################
# 4. acme_migrate_alter takes effect in a running worker
######################################################################

$node->safe_psql(
	'postgres', q{
	SELECT acme_migrate_create(job => 'slow', source => 'src', target => 'dst4',
		batch_size => 50, max_rows_per_second => 1);
	SELECT acme_migrate_start('slow');
});
ok( wait_for(
		$node, q{SELECT count(*) = 1 FROM pg_stat_activity
		  WHERE backend_type = 'acme_migrate worker'
			AND query LIKE 'acme_migrate job slow: worker 1 sleeping % (max_rows_per_second)'},
		60),
	'alter: the worker sleeps 50 s after its first batch');
$node->safe_psql('postgres',
	q{SELECT acme_migrate_alter('slow', batch_size => 5000, max_rows_per_second => 0)});
is($node->safe_psql('postgres', q{SELECT acme_migrate_wait('slow', timeout => '40 s')}),
	'done', 'alter: the job is done well before the 50 s sleep would have ended');
is( $node->safe_psql(
		'postgres', q{
	SELECT string_agg(b.rows_read::text, ',' ORDER BY b.batch_no)
	FROM acme_migrate.batches b JOIN acme_migrate.jobs j USING (job_id)
	WHERE j.job_name = 'slow' AND b.rows_read > 0}),
	'50,5000,5000,5000,4950',
	'alter: one batch of 50, then batches of the new size');
is(exact_prefix('dst4'), '0|0', 'alter: the target equals the source');

$node->stop;
done_testing();
