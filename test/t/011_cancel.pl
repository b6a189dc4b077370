# A run or batch stopped from outside: statement_timeout, pg_cancel_backend
# and pg_terminate_backend in the middle of a batch.  The interrupted batch
# leaves nothing behind, the batches committed before it stay, the error is
# recorded in acme_migrate.errors (when the session survives to record it),
# and the job is free for the next run at once.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(usleep);

my $nrows = 20_000;
my $batch = 1_000;

my $node = PostgreSQL::Test::Cluster->new('cancel');
$node->init;
$node->start;

# tap_note() sleeps on the rows named in the session's tap.slow_ids
$node->safe_psql(
	'postgres', qq{
	CREATE EXTENSION acme_migrate;
	CREATE FUNCTION public.tap_note(id integer, note text) RETURNS text
	LANGUAGE plpgsql AS \$\$
	BEGIN
		IF id = ANY (pg_catalog.string_to_array(
				pg_catalog.current_setting('tap.slow_ids', true), ',')::integer[]) THEN
			PERFORM pg_catalog.pg_sleep(60);
		END IF;
		RETURN note;
	END \$\$;
	CREATE TABLE src (id integer PRIMARY KEY, note text);
	INSERT INTO src SELECT g, md5(g::text) FROM generate_series(1, $nrows) g;
	CREATE TABLE dst (id integer PRIMARY KEY, note text);
	SELECT acme_migrate_create(job => 'cancel_job', source => 'src',
		target => 'dst', columns => '{"note": "public.tap_note(id, note)"}',
		batch_size => $batch);
});

# checkpoint, target and history agree
sub state_line
{
	return $node->safe_psql(
		'postgres', q{
		SELECT j.rows_read, j.rows_copied, j.batches_done,
			   (SELECT count(*) FROM dst), (SELECT coalesce(max(id), 0) FROM dst),
			   (SELECT count(*) FROM acme_migrate.batches b WHERE b.job_id = j.job_id)
		  FROM acme_migrate.jobs j WHERE j.job_name = 'cancel_job'});
}

sub rows_read
{
	return $node->safe_psql('postgres',
		"SELECT rows_read FROM acme_migrate.jobs WHERE job_name = 'cancel_job'");
}

sub start_psql
{
	my (@sql) = @_;
	my ($out, $err) = ('', '');
	local $ENV{PGAPPNAME} = 'tap_runner';
	my $h = IPC::Run::start(
		[
			'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1',
			'-d', $node->connstr('postgres'), map { ('-c', $_) } @sql
		],
		'<', \undef, '>', \$out, '2>', \$err);
	return { h => $h, out => \$out, err => \$err };
}

# pid of the runner once it sleeps in tap_note()
sub sleeping_pid
{
	$node->poll_query_until(
		'postgres', q{
		SELECT count(*) = 1 FROM pg_stat_activity
		 WHERE application_name = 'tap_runner' AND wait_event = 'PgSleep'})
	  or die "the runner did not reach its slow row";
	return $node->safe_psql(
		'postgres', q{
		SELECT pid FROM pg_stat_activity
		 WHERE application_name = 'tap_runner' AND wait_event = 'PgSleep'});
}

# 1. statement_timeout fires while the 6th batch sleeps on its last row
my ($ret, $out, $err) = $node->psql(
	'postgres', q{
	SET statement_timeout = '2s';
	SET tap.slow_ids = '6000';
	CALL acme_migrate_run('cancel_job');});
isnt($ret, 0, 'statement_timeout stops acme_migrate_run');
like($err, qr/canceling statement due to statement timeout/,
	'... with the timeout error');
is(state_line(), '5000|5000|5|5000|5000|5',
	'the five batches before the timeout stay, the sixth left nothing');
is( $node->safe_psql(
		'postgres', q{
		SELECT count(*) || '|' || string_agg(e.sqlstate || ',' || e.transient, ';')
		  FROM acme_migrate.errors e JOIN acme_migrate.jobs j USING (job_id)
		 WHERE j.job_name = 'cancel_job'}),
	'1|57014,false',
	'the timeout is recorded in acme_migrate.errors');
like( $node->safe_psql('postgres',
		"SELECT last_error FROM acme_migrate.jobs WHERE job_name = 'cancel_job'"),
	qr/statement timeout/,
	'and in jobs.last_error');

# 2. pg_cancel_backend while the 9th batch sleeps on its first row
my $run = start_psql("SET tap.slow_ids = '8001'",
	"CALL acme_migrate_run('cancel_job')");
my $pid = sleeping_pid();
is(rows_read(), '8000', 'the runner sleeps in the batch after 8000 rows');
$node->safe_psql('postgres', "SELECT pg_cancel_backend($pid)");
$run->{h}->finish;
like(${ $run->{err} }, qr/canceling statement due to user request/,
	'pg_cancel_backend stops acme_migrate_run');
is(state_line(), '8000|8000|8|8000|8000|8',
	'the cancelled batch left nothing');

# 3. pg_terminate_backend while the 11th batch sleeps on its last row: the
# session is gone, its job lock with it
$run = start_psql("SET tap.slow_ids = '11000'",
	"CALL acme_migrate_run('cancel_job')");
$pid = sleeping_pid();
$node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
$run->{h}->finish;
like(${ $run->{err} }, qr/terminating connection due to administrator command/,
	'pg_terminate_backend stops acme_migrate_run');
is(state_line(), '10000|10000|10|10000|10000|10',
	'the terminated batch left nothing');

# 4. a session holding the job in an open transaction after a batch is
# terminated: its uncommitted batch goes, and the job is free again
my $held = $node->background_psql('postgres');
$held->query_safe("BEGIN");
is($held->query_safe("SELECT acme_migrate_batch('cancel_job')"),
	'1000', 'a batch in an open transaction');
my $held_pid = $held->query_safe("SELECT pg_backend_pid()");
($ret, $out, $err) = $node->psql('postgres',
	"SELECT acme_migrate_batch('cancel_job')");
is($out, '0', 'the job is busy meanwhile');
like($err, qr/job "cancel_job" is busy in another session/,
	'... with a NOTICE');
$node->safe_psql('postgres', "SELECT pg_terminate_backend($held_pid)");
eval { $held->quit; };
$node->poll_query_until('postgres',
	"SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $held_pid")
  or die "terminated session did not go away";
is(state_line(), '10000|10000|10|10000|10000|10',
	'the terminated session\'s uncommitted batch left nothing');

# 5. the next run finds the job free and copies it to the end
$node->safe_psql('postgres', "CALL acme_migrate_run('cancel_job')");
is( $node->safe_psql(
		'postgres', q{
		SELECT state FROM acme_migrate.jobs WHERE job_name = 'cancel_job'}),
	'done', 'the job is done after the interruptions');
# the walk learns it is at the end from a batch that finds fewer rows than
# batch_size: after 20 full batches, a 21st finds none and records the end
is(state_line(), "$nrows|$nrows|21|$nrows|$nrows|21",
	'every row once, every batch once');
is( $node->safe_psql(
		'postgres', q{
		SELECT count(*) FROM (SELECT * FROM src EXCEPT SELECT * FROM dst) a}) .
	  $node->safe_psql(
		'postgres', q{
		SELECT count(*) FROM (SELECT * FROM dst EXCEPT SELECT * FROM src) b}),
	'00', 'the target equals the source');

$node->stop;
done_testing();
