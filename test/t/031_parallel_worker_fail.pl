# A parallel worker of acme_migrate_reconcile or acme_migrate_table_hash
# that dies in the middle (pg_terminate_backend, as a DBA or the OOM killer
# would end it) fails the call: an error in the session, nothing half
# written (no reconcile run recorded, no partial hash returned), the
# session usable, and the same call afterwards gives the right answer.
#
# A poller in another session waits for the call's parallel worker to show
# in pg_stat_activity and terminates it.  The worker lives as long as the
# hash pass (the reconcile worker then waits for the session to compare
# the buckets), so the poller finds it; an attempt in which the call ended
# before the poller saw a worker, or in which the worker was ending anyway
# (the call's result must then be right), is tried again, up to 5 times,
# and the test says so.  A call that swallowed the death of a worker with
# work left would return a result: the test fails.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('parallel_worker_fail');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'acme_migrate'
autovacuum = off
max_parallel_workers_per_gather = 2
min_parallel_table_scan_size = 0
parallel_setup_cost = 0
});
$node->start;

$node->safe_psql(
	'postgres', q{
	CREATE EXTENSION acme_migrate;
	CREATE TABLE s (id bigint PRIMARY KEY, v text NOT NULL);
	INSERT INTO s SELECT g, md5(g::text) FROM generate_series(1, 1500000) g;
	CREATE TABLE t (LIKE s INCLUDING ALL);
	INSERT INTO t SELECT * FROM s;
	UPDATE t SET v = 'changed' WHERE id % 100000 = 7;
	VACUUM ANALYZE s, t;
});

# Run $call in a session of its own while a poller terminates its parallel
# worker, until an attempt's worker was terminated while it had work left
# (the call failed), at most 5 attempts; returns (terminated, output,
# failed, error, alive) of the last attempt.  A worker terminated as it was
# exiting may leave the call a success: its output must then be $expected
# (never a wrong result), and the test tries again.
sub kill_worker_of
{
	my ($call, $expected) = @_;
	my @last = (0, '', 0, '', '');
	for my $attempt (1 .. 5)
	{
		my $caller = $node->background_psql('postgres', on_error_stop => 0);
		my $pid = $caller->query_safe('SELECT pg_backend_pid()');
		my $poller = $node->background_psql('postgres', on_error_stop => 0);
		$poller->query_until(qr/polling/, qq{
			\\echo polling
			DO \$\$
			DECLARE
				w int;
			BEGIN
				FOR i IN 1 .. 6000 LOOP
					PERFORM pg_stat_clear_snapshot();
					SELECT pid INTO w FROM pg_stat_activity
					WHERE leader_pid = $pid AND pid <> $pid
					  AND backend_type = 'parallel worker';
					IF w IS NOT NULL AND pg_terminate_backend(w) THEN
						RAISE NOTICE 'terminated worker';
						RETURN;
					END IF;
					PERFORM pg_sleep(0.002);
				END LOOP;
			END
			\$\$;
		});
		my ($out, $failed) = $caller->query($call);
		my $err = $caller->{stderr};
		$caller->{stderr} = '';
		# the poller is done (or gives up) once the call has ended
		$poller->query('SELECT 1');
		my $terminated = $poller->{stderr} =~ /terminated worker/;
		my $alive = $caller->query_safe('SELECT 1');
		$poller->quit;
		$caller->quit;
		@last = ($terminated, $out, $failed, $err, $alive);
		return @last if $terminated && $failed;
		if ($terminated)
		{
			is($out, $expected,
				"attempt $attempt: the worker ended as it was done, the result is right");
		}
		else
		{
			note "attempt $attempt: the call ended before its worker was seen";
		}
	}
	return @last;
}

# the checks of a call whose worker was terminated: $what failed, as it
# should, with nothing returned and its session usable
sub call_failed
{
	my ($what, $terminated, $out, $failed, $err, $alive) = @_;
	ok($terminated, "$what: its parallel worker was terminated during the call");
	ok($failed, "$what: the call failed");
	like($err, qr/ERROR:.*due to administrator command.*CONTEXT:\s+parallel worker/s,
		"$what: with the worker's error");
	is($out, '', "$what: nothing returned");
	is($alive, '1', "$what: the session is usable afterwards");
}

######################################################################
# 1. reconcile
######################################################################

call_failed('reconcile', kill_worker_of(
	q{SELECT missing, extra, changed FROM acme_migrate_reconcile(source => 's', target => 't')},
	'0|0|15'));
is($node->safe_psql('postgres', 'SELECT count(*) FROM acme_migrate.reconcile_runs'),
	'0', 'reconcile: no run recorded, no difference listed');
$node->safe_psql('postgres',
	q{SELECT count(*) FROM acme_migrate_reconcile(source => 's', target => 't')});
is( $node->safe_psql(
		'postgres', q{SELECT missing, extra, changed, parallel_workers
		  FROM acme_migrate.reconcile_runs}),
	'0|0|15|1', 'reconcile: the same call afterwards, with its worker, lists the 15 changes');

######################################################################
# 2. table_hash
######################################################################

my $serial = $node->safe_psql('postgres', q{
	SET max_parallel_workers_per_gather = 0;
	SELECT row_count || ' ' || hash FROM acme_migrate_table_hash('t')});
call_failed('table_hash', kill_worker_of(
	q{SELECT row_count || ' ' || hash FROM acme_migrate_table_hash('t')}, $serial));
my $parallel = $node->safe_psql('postgres',
	q{SELECT row_count || ' ' || hash FROM acme_migrate_table_hash('t')});
is($parallel, $serial, 'table_hash: the same call afterwards equals the serial hash');
like($serial, qr/^1500000 /, 'table_hash: of every row');

$node->stop;
done_testing();
