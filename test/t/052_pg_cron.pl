# acme_migrate_run scheduled by pg_cron, for real (issue 10, item 4).
#
# A node with shared_preload_libraries = 'pg_cron,acme_migrate' schedules
# CALL acme_migrate_run('cronjob', max_time => '2 s') twice on the same
# schedule, so that every firing starts two runs of the one job at the same
# moment.  pg_cron 1.4 (postgresql-15-cron here) schedules by the minute
# only ('* * * * *'; the "N seconds" syntax came with 1.5), so the test
# waits for two or three minute boundaries: the job is throttled to need
# about 3 s of copying, more than one run's max_time.  Then:
#   - the job finished through the scheduled runs alone;
#   - cron.job_run_details shows every run succeeded, none took much longer
#     than max_time, and at each firing one of the two runs returned at
#     once (the job is busy in the other: a NOTICE, never a wait);
#   - acme_migrate.batches records the batches of each run: every batch was
#     run by the process of a succeeded cron run, and more than one run
#     copied;
#   - the target equals the source (EXCEPT ALL both ways).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $node = PostgreSQL::Test::Cluster->new('cron');
$node->init;
$node->append_conf(
	'postgresql.conf', qq{
shared_preload_libraries = 'pg_cron,acme_migrate'
cron.database_name = 'postgres'
cron.host = '@{[ $node->host ]}'
max_worker_processes = 16
});
$node->start;

$node->safe_psql(
	'postgres', q{
	CREATE EXTENSION pg_cron;
	CREATE EXTENSION acme_migrate;
	CREATE TABLE src (id integer PRIMARY KEY, v text NOT NULL);
	INSERT INTO src SELECT g, md5(g::text) FROM generate_series(1, 3000) g;
	ANALYZE src;
	CREATE TABLE dst (id integer NOT NULL, v text NOT NULL);
	SELECT acme_migrate_create(job => 'cronjob', source => 'src', target => 'dst',
		batch_size => 250, on_conflict => 'error', max_rows_per_second => 1000);
});
note('pg_cron '
	  . $node->safe_psql('postgres',
		"SELECT extversion FROM pg_extension WHERE extname = 'pg_cron'"));

$node->safe_psql(
	'postgres', q{
	SELECT cron.schedule('acme-a', '* * * * *',
		$$CALL acme_migrate_run('cronjob', max_time => '2 s')$$);
	SELECT cron.schedule('acme-b', '* * * * *',
		$$CALL acme_migrate_run('cronjob', max_time => '2 s')$$);
});

# at most three minute boundaries
my $deadline = time() + 200;
my $state = '';
while (time() < $deadline)
{
	$state = $node->safe_psql('postgres',
		"SELECT state FROM acme_migrate.jobs WHERE job_name = 'cronjob'");
	last if $state eq 'done';
	sleep 1;
}
is($state, 'done', 'the job finished through scheduled runs alone');

# let the runs of the last firing end, then stop the schedule
$node->poll_query_until('postgres',
	q{SELECT count(*) = 0 FROM cron.job_run_details WHERE status IN ('starting', 'running')})
  or diag('cron runs still going on');

my $runs = $node->safe_psql(
	'postgres', q{
	SELECT string_agg(format('%s %s %s %s s', j.jobname, d.status,
						to_char(d.start_time, 'HH24:MI:SS'),
						round(extract(epoch FROM d.end_time - d.start_time), 2)),
					  E'\n' ORDER BY d.start_time, j.jobname)
	  FROM cron.job_run_details d JOIN cron.job j USING (jobid)
});
note("cron runs:\n$runs");
$node->safe_psql('postgres',
	"SELECT cron.unschedule('acme-a'), cron.unschedule('acme-b')");

is( $node->safe_psql(
		'postgres', q{
	SELECT count(*) >= 4, count(*) FILTER (WHERE status <> 'succeeded')
	  FROM cron.job_run_details
}),
	't|0',
	'cron.job_run_details: at least two firings of two runs, every run succeeded');
is( $node->safe_psql(
		'postgres', q{
	SELECT count(*) FROM cron.job_run_details
	 WHERE end_time - start_time > interval '5 s'
}),
	'0',
	'no run took much longer than max_time (2 s)');
is( $node->safe_psql(
		'postgres', q{
	SELECT count(*) FROM (
		SELECT date_trunc('minute', start_time) AS firing
		  FROM cron.job_run_details
		 GROUP BY 1
		HAVING min(end_time - start_time) > interval '1 s') busy
}),
	'0',
	'at each firing, one of the two overlapping runs returned at once');

is( $node->safe_psql(
		'postgres', q{
	SELECT count(*) FILTER (WHERE NOT EXISTS (
				SELECT FROM cron.job_run_details d
				 WHERE d.job_pid = b.backend_pid AND d.status = 'succeeded')),
		   count(DISTINCT backend_pid) > 1,
		   sum(rows_read)
	  FROM acme_migrate.batches b
}),
	'0|t|3000',
	'acme_migrate.batches records the batches of each cron run, in more than one run');

is( $node->safe_psql(
		'postgres', q{
	SELECT count(*), count(DISTINCT id),
		   NOT EXISTS (SELECT * FROM src EXCEPT ALL SELECT * FROM dst),
		   NOT EXISTS (SELECT * FROM dst EXCEPT ALL SELECT * FROM src)
	  FROM dst
}),
	'3000|3000|t|t',
	'the target equals the source, every key once');

$node->stop;
done_testing();
