# Background workers without shared_preload_libraries, and with too few
# background worker slots.
#
# Without preloading there is no launcher: acme_migrate_start still starts
# workers (dynamic background workers load the library themselves), a job
# left running by a crash stays where it is after the restart, and a later
# acme_migrate_start resumes it from its checkpoints, every row exactly
# once.  With max_worker_processes too small, acme_migrate_start starts what
# it can with a WARNING, or fails with an error naming max_worker_processes
# and leaves the job as it was.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use AcmeTest;
use Time::HiRes qw(usleep time);

my $nrows = 200_000;
my ($ret, $out, $err);

my $node = PostgreSQL::Test::Cluster->new('nopreload');
$node->init;
$node->start;

$node->safe_psql(
	'postgres', qq{
	CREATE EXTENSION acme_migrate;
	CREATE FUNCTION public.tap_slow(id bigint, note text, every integer, ms integer)
	RETURNS text LANGUAGE plpgsql AS \$\$
	BEGIN
		IF id % every = 0 THEN
			PERFORM pg_catalog.pg_sleep(ms / 1000.0);
		END IF;
		RETURN note;
	END \$\$;
	CREATE TABLE src (id bigint PRIMARY KEY, a integer NOT NULL, note text);
	INSERT INTO src SELECT g, g % 1000, md5(g::text) FROM generate_series(1, $nrows) g;
	ANALYZE src;
});

sub create_job
{
	my ($job) = @_;
	$node->safe_psql(
		'postgres', qq{
		CREATE TABLE dst_$job (id bigint NOT NULL, a integer NOT NULL, note text);
		SELECT acme_migrate_create(job => '$job', source => 'src',
			target => 'dst_$job', batch_size => 1000, on_conflict => 'error',
			columns => '{"note": "public.tap_slow(id, note, 1000, 40)"}');
	});
}


sub workers
{
	return $node->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'acme_migrate worker'"
	);
}

sub check_complete
{
	my ($job, $what) = @_;
	is( $node->safe_psql(
			'postgres', qq{
		SELECT j.state,
			   (SELECT count(*) FROM (SELECT * FROM src EXCEPT SELECT * FROM dst_$job) x),
			   (SELECT count(*) FROM (SELECT * FROM dst_$job EXCEPT SELECT * FROM src) x),
			   (SELECT count(*) FROM dst_$job) = (SELECT count(*) FROM src),
			   (SELECT count(*) FROM (SELECT id FROM dst_$job GROUP BY id
									  HAVING count(*) > 1) x),
			   j.rows_copied = (SELECT count(*) FROM dst_$job)
		  FROM acme_migrate.jobs j WHERE j.job_name = '$job'}),
		'done|0|0|t|0|t',
		"$what: done, target equals source, every key once");
}

is($node->safe_psql('postgres', 'SHOW shared_preload_libraries'),
	'', 'no shared_preload_libraries');
is( $node->safe_psql(
		'postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'acme_migrate%'"),
	'0',
	'no launcher without preloading');

# start works without preloading
create_job('np');
is($node->safe_psql('postgres', "SELECT acme_migrate_start('np', workers => 2)"),
	'2', 'acme_migrate_start launches 2 workers without preloading');
ok( wait_for($node, 
		q{SELECT rows_read > 20000 FROM acme_migrate.jobs WHERE job_name = 'np'},
		60),
	'the workers copy');
is(workers(), '2', 'two acme_migrate workers in pg_stat_activity');

# a crash mid-run: nothing resumes the job by itself
$node->stop('immediate');
$node->start;
my $read = $node->safe_psql('postgres',
	"SELECT rows_read FROM acme_migrate.jobs WHERE job_name = 'np'");
cmp_ok($read, '<', $nrows, "stopped part-way ($read rows)");
usleep(3_000_000);
is( $node->safe_psql(
		'postgres', q{
	SELECT j.state, j.rows_read, (SELECT count(*) FROM dst_np) = j.rows_copied,
		   (SELECT count(DISTINCT id) FROM dst_np) = j.rows_copied
	  FROM acme_migrate.jobs j WHERE job_name = 'np'}),
	"running|$read|t|t",
	'after the restart the job is still running, untouched, and consistent');
is(workers(), '0', 'no worker after the restart without preloading');

# a later acme_migrate_start resumes it.  It may say "already running" for
# the first 10 s after the job's last change (see acme_migrate_start); try
# every second
my ($launched, $notices, $t0) = (0, '', time());
while (time() - $t0 < 30)
{
	my ($ret, $out, $err) =
	  $node->psql('postgres', "SELECT acme_migrate_start('np', workers => 2)");
	die "acme_migrate_start failed: $err" if $ret != 0;
	if ($out ne '0')
	{
		$launched = $out;
		last;
	}
	$notices = $err;
	usleep(1_000_000);
}
is($launched, '2', 'a later acme_migrate_start launches 2 workers again');
diag(sprintf("resumed %.1f s after the restart%s",
		time() - $t0, $notices ne '' ? "; before that: $notices" : ''));
ok( wait_for($node, 
		q{SELECT state <> 'running' FROM acme_migrate.jobs WHERE job_name = 'np'},
		120),
	'the resumed job finishes');
check_complete('np', 'resumed by a later start');

# A job owned by a role without LOGIN: its workers would connect as the
# owner, and PostgreSQL 15 refuses a background worker connection for a
# NOLOGIN role (BGWORKER_BYPASS_ROLELOGINCHECK only exists from 17), so the
# start must be refused with the reason, or the job fail visibly.
$node->safe_psql(
	'postgres', q{
	CREATE ROLE tap_nologin NOLOGIN;
	GRANT CREATE ON SCHEMA public TO tap_nologin;
	SET ROLE tap_nologin;
	CREATE TABLE nl_src (id integer PRIMARY KEY, v text);
	INSERT INTO nl_src SELECT g, 'v' || g FROM generate_series(1, 1000) g;
	CREATE TABLE nl_dst (id integer PRIMARY KEY, v text);
	SELECT acme_migrate_create(job => 'nl', source => 'nl_src', target => 'nl_dst',
		batch_size => 100);
});
($ret, $out, $err) = $node->psql('postgres',
	"SET ROLE tap_nologin; SELECT acme_migrate_start('nl', workers => 2)");
my $nl_refused = $ret != 0;
my $nl_failed = wait_for($node, 
	q{SELECT state = 'failed' OR last_error IS NOT NULL OR state = 'done'
		FROM acme_migrate.jobs WHERE job_name = 'nl'}, 10);
ok( $nl_refused || $nl_failed,
	'a job owned by a NOLOGIN role is refused or fails visibly '
	  . '(start returned "' . $out . '", state '
	  . $node->safe_psql('postgres',
		"SELECT state || ', last_error ' || coalesce(last_error, 'NULL') FROM acme_migrate.jobs WHERE job_name = 'nl'")
	  . ')');
$node->safe_psql('postgres', "SELECT acme_migrate_cancel('nl')")
  unless $nl_refused;

# too few background worker slots: the logical replication launcher takes
# one of max_worker_processes = 2, which leaves one for acme_migrate (whose
# own limit, half of max_worker_processes by default, is raised so that the
# slots run out first)
$node->append_conf('postgresql.conf', 'max_worker_processes = 2');
$node->append_conf('postgresql.conf', 'acme_migrate.max_workers_total = 8');
$node->restart;
create_job('lim');
create_job('lim2');
($ret, $out, $err) =
  $node->psql('postgres', "SELECT acme_migrate_start('lim', workers => 4)");
is($out, '1', 'with one free slot, 1 of 4 workers starts');
like(
	$err,
	qr/WARNING:  started only 1 of 4 workers for job "lim".*HINT:  Raise max_worker_processes \(currently 2\)/s,
	'... with a WARNING whose hint names max_worker_processes');
ok( wait_for($node, 
		q{SELECT count(*) = 1 FROM pg_stat_activity
		   WHERE backend_type = 'acme_migrate worker'},
		30),
	'the one worker runs');
($ret, $out, $err) =
  $node->psql('postgres', "SELECT acme_migrate_start('lim2', workers => 2)");
isnt($ret, 0, 'no free slot: acme_migrate_start fails');
like(
	$err,
	qr/ERROR:  could not start a background worker for job "lim2".*HINT:  Raise max_worker_processes \(currently 2\)/s,
	'... with an error whose hint names max_worker_processes');
is( $node->safe_psql(
		'postgres', q{
	SELECT j.state, j.workers, (SELECT count(*) FROM acme_migrate.ranges r
								 WHERE r.job_id = j.job_id)
	  FROM acme_migrate.jobs j WHERE job_name = 'lim2'}),
	'created|0|0',
	'... and leaves the job as it was');
ok( wait_for($node, 
		q{SELECT state <> 'running' FROM acme_migrate.jobs WHERE job_name = 'lim'},
		120),
	'the job started with 1 of 4 workers finishes');
check_complete('lim', 'one worker for 16 ranges');

$node->stop;
done_testing();
