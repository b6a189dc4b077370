# acme_migrate_run keeps its job in memory from batch to batch (jobrow.c):
# its next turn locks the row version its last checkpoint wrote and reads
# the job again only when that version is no longer the row's latest.  A
# change made by another session between two batches must still stop or
# change the run, seen from outside:
#
#  1. acme_migrate_pause while the run sleeps between batches
#     (max_rows_per_second): the run stops at its next turn, the job stays
#     paused, and the rows copied are those the checkpoint counts, once.
#  2. acme_migrate_alter(batch_size) likewise: the following batches have
#     the new size; then acme_migrate_cancel: the run stops, cancelled.
#  3. ALTER TABLE on the source between two batches (a column's type): the
#     shape the run keeps from batch to batch (mapping_check.c) is worked
#     out again, the job fails with the change recorded.
#
# A run that kept using its job after the change would copy on to the end
# (1, 3) or keep the old batch size (2).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use AcmeTest;

my $node = PostgreSQL::Test::Cluster->new('run_job_reuse');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'acme_migrate'
autovacuum = off
});
$node->start;

$node->safe_psql(
	'postgres', q{
	CREATE EXTENSION acme_migrate;
	CREATE TABLE src (id bigint PRIMARY KEY, v text NOT NULL);
	INSERT INTO src SELECT g, md5(g::text) FROM generate_series(1, 5000) g;
	CREATE TABLE dst (LIKE src INCLUDING ALL);
	CREATE TABLE dst2 (LIKE src INCLUDING ALL);
	CREATE TABLE src3 (LIKE src INCLUDING ALL);
	INSERT INTO src3 SELECT * FROM src;
	CREATE TABLE dst3 (LIKE src INCLUDING ALL);
	-- 50 rows at 100 rows per second: half a second between batches
	SELECT acme_migrate_create(job => 'paused_run', source => 'src',
		target => 'dst', batch_size => 50, max_rows_per_second => 100);
	SELECT acme_migrate_create(job => 'altered_run', source => 'src',
		target => 'dst2', batch_size => 50, max_rows_per_second => 100);
	SELECT acme_migrate_create(job => 'ddl_run', source => 'src3',
		target => 'dst3', batch_size => 50, max_rows_per_second => 100);
});

# start CALL acme_migrate_run(job) in a session of its own; its pid
sub start_run
{
	my ($job) = @_;
	my $bg = $node->background_psql('postgres', on_error_stop => 0);
	my $pid = $bg->query_safe('SELECT pg_backend_pid()');
	$bg->query_until(qr/started/, qq{
		\\echo started
		CALL acme_migrate_run('$job');
	});
	return ($bg, $pid);
}

sub run_ended
{
	my ($pid) = @_;
	return wait_for($node, qq{SELECT count(*) = 0 FROM pg_stat_activity
		WHERE pid = $pid AND state = 'active'}, 60);
}

# wait until the run of $job has done a few batches
sub few_batches
{
	my ($job, $what) = @_;
	ok( wait_for(
			$node, qq{SELECT batches_done >= 3 FROM acme_migrate.jobs
			  WHERE job_name = '$job'}, 60),
		"$what: the run has done a few batches");
}

sub job_row
{
	my ($job) = @_;
	return $node->safe_psql('postgres', qq{
		SELECT state, rows_copied, batches_done
		  FROM acme_migrate.jobs WHERE job_name = '$job'});
}

######################################################################
# 1. pause between batches
######################################################################

my ($bg, $pid) = start_run('paused_run');
few_batches('paused_run', 'pause');
$node->safe_psql('postgres', q{SELECT acme_migrate_pause('paused_run')});
ok(run_ended($pid), 'pause: the run ends');
my ($state, $copied, $batches) = split /\|/, job_row('paused_run');
is($state, 'paused', 'pause: the job stays paused');
cmp_ok($copied, '<', 2500, "pause: the run stopped short ($copied of 5000 rows)");
is($node->safe_psql('postgres', 'SELECT count(*) FROM dst'), $copied,
	'pause: the checkpoint counts the rows that are there');
is( $node->safe_psql(
		'postgres', q{SELECT count(*) FROM acme_migrate.batches b
		  JOIN acme_migrate.jobs j USING (job_id) WHERE j.job_name = 'paused_run'}),
	$batches, 'pause: one history row per batch counted');
is( except_all(
		$node, 'SELECT * FROM dst',
		'SELECT * FROM src WHERE id <= (SELECT max(id) FROM dst)'),
	'0|0', 'pause: the rows copied are the source rows, once');
$bg->quit;

######################################################################
# 2. alter, then cancel, between batches
######################################################################

($bg, $pid) = start_run('altered_run');
few_batches('altered_run', 'alter');
$node->safe_psql('postgres',
	q{SELECT acme_migrate_alter('altered_run', batch_size => 70)});
ok( wait_for(
		$node, q{SELECT count(*) >= 2 FROM acme_migrate.batches b
		  JOIN acme_migrate.jobs j USING (job_id)
		 WHERE j.job_name = 'altered_run' AND b.rows_read = 70}, 60),
	'alter: the following batches have the new batch_size');
$node->safe_psql('postgres', q{SELECT acme_migrate_cancel('altered_run')});
ok(run_ended($pid), 'cancel: the run ends');
($state, $copied) = split /\|/, job_row('altered_run');
is($state, 'cancelled', 'cancel: the job stays cancelled');
cmp_ok($copied, '<', 5000, "cancel: the run stopped short ($copied of 5000 rows)");
is($node->safe_psql('postgres', 'SELECT count(*) FROM dst2'), $copied,
	'cancel: the checkpoint counts the rows that are there');
$bg->quit;

######################################################################
# 3. ALTER TABLE between batches
######################################################################

($bg, $pid) = start_run('ddl_run');
few_batches('ddl_run', 'alter table');
$node->safe_psql('postgres', 'ALTER TABLE src3 ALTER COLUMN v TYPE varchar(40)');
ok(run_ended($pid), 'alter table: the run ends');
($state, $copied) = split /\|/, job_row('ddl_run');
is($state, 'failed', 'alter table: the job failed');
cmp_ok($copied, '<', 5000, "alter table: the run stopped short ($copied of 5000 rows)");
like( $node->safe_psql('postgres',
		q{SELECT failure_reason FROM acme_migrate.jobs WHERE job_name = 'ddl_run'}),
	qr/now source \(id bigint, v character varying\(40\)/,
	'alter table: the reason names the new type');
$bg->quit;

$node->stop;
done_testing();
