# max_replication_lag takes effect: with a standby replaying 3 s behind
# (recovery_min_apply_delay, while a writer keeps committing), a CALL
# acme_migrate_run of a job with max_replication_lag => '1 s' waits before
# its first batch (NOTICE, wait event Extension, nothing copied) while
# PostgreSQL's own pg_stat_replication.replay_lag is above the limit; once
# the standby applies at once again, the run copies its batches.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use AcmeTest;

my $primary = PostgreSQL::Test::Cluster->new('primary');
$primary->init(allows_streaming => 1);
$primary->append_conf('postgresql.conf', "shared_preload_libraries = 'acme_migrate'");
$primary->start;
$primary->backup('b');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'b', has_streaming => 1);
$standby->append_conf('postgresql.conf', "recovery_min_apply_delay = '3s'");
$standby->start;

$primary->safe_psql(
	'postgres', q{
	CREATE EXTENSION acme_migrate;
	CREATE TABLE noise (i int);
	CREATE TABLE src (id bigint PRIMARY KEY, v text NOT NULL);
	INSERT INTO src SELECT g, md5(g::text) FROM generate_series(1, 1000) g;
	CREATE TABLE dst (LIKE src INCLUDING ALL);
	SELECT acme_migrate_create(job => 'lag', source => 'src', target => 'dst',
		batch_size => 100, max_replication_lag => '1 s');
});

# a writer commits every 100 ms for up to a minute: the lag keeps being measured
my $writer = $primary->background_psql('postgres', on_error_stop => 0);
$writer->query_until(qr/writing/, q{
	\echo writing
	DO $$ BEGIN FOR i IN 1..600 LOOP INSERT INTO noise VALUES (i); COMMIT;
		PERFORM pg_sleep(0.1); END LOOP; END $$;
});
ok( wait_for(
		$primary, q{SELECT replay_lag > interval '1 s' FROM pg_stat_replication}, 60),
	'the standby replays more than 1 s behind');

my $run = $primary->background_psql('postgres', on_error_stop => 0);
my $pid = $run->query_safe('SELECT pg_backend_pid()');
$run->query_until(qr/started/, q{
	\echo started
	CALL acme_migrate_run('lag', max_batches => 3);
	\echo finished
});
ok( wait_for(
		$primary, qq{SELECT a.wait_event = 'Extension' AND r.replay_lag > interval '1 s'
		  FROM pg_stat_activity a, pg_stat_replication r WHERE a.pid = $pid}, 60, 20_000),
	'the run waits while the lag is above max_replication_lag');
is($primary->safe_psql('postgres', 'SELECT count(*) FROM dst'),
	'0', 'nothing is copied while it waits');
is($primary->safe_psql('postgres',
		q{SELECT batches_done FROM acme_migrate.jobs WHERE job_name = 'lag'}),
	'0', 'no batch while it waits');

# the standby applies at once again: the lag falls and the run goes on
$standby->append_conf('postgresql.conf', "recovery_min_apply_delay = 0");
$standby->reload;
ok( wait_for(
		$primary, q{SELECT batches_done = 3 FROM acme_migrate.jobs WHERE job_name = 'lag'},
		120),
	'once the standby has caught up, the run copies its 3 batches');
$run->query_until(qr/finished/, '');
like($run->{stderr}, qr/job "lag" waits for the standbys: replication lag \d+ ms above 1000 ms/,
	'the run said why it waited');
$run->quit;
is( except_all(
		$primary, 'SELECT * FROM dst',
		'SELECT * FROM src WHERE id <= 300'),
	'0|0', 'the 3 batches are the first 300 source rows');

$writer->{run}->kill_kill;
$standby->stop;
$primary->stop;
done_testing();
