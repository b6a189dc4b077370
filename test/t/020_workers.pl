# Background workers with shared_preload_libraries: crashes, kills, pause,
# resume and cancel.
#
# A 2-worker job copies a 400,000-row source into a target WITHOUT a unique
# index (on_conflict => 'error', so a row copied twice would simply be there
# twice) while its workers are killed with kill -9 at random moments (every
# kill -9 of a backend makes the postmaster reset all of them) and the
# postmaster itself is killed with kill -9.  The launcher must resume the
# job by itself each time, and at the end the target must equal the source:
# EXCEPT empty both ways, same count, no key twice, rows_copied = count.
# Then: workers stopped by SIGTERM are replaced by the launcher after
# naptime; pause stops the workers and the launcher leaves a paused job
# alone until resume; cancel stops the workers within a batch and leaves
# exactly the rows the batch history lists.  Workers run as the role that
# owns the job and say in pg_stat_activity which job and range they copy.
#
# The random moments come from a fixed seed, printed; set
# ACME_WORKERS_SEED to try others.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use AcmeTest;
use Time::HiRes qw(usleep time);

my $seed = $ENV{ACME_WORKERS_SEED} // 2020;
srand($seed);
diag("kill moments from seed $seed (ACME_WORKERS_SEED)");

my $nrows = 400_000;

my $node = PostgreSQL::Test::Cluster->new('workers');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'acme_migrate'
max_worker_processes = 16
acme_migrate.naptime = 1
restart_after_crash = on
});
$node->start;

# tap_slow(id, note, every, ms) is the identity on note, but sleeps ms
# milliseconds on every every-th key: about one sleep per batch, which
# stretches the copy over seconds so that kills land in the middle of it.
$node->safe_psql(
	'postgres', qq{
	CREATE EXTENSION acme_migrate;
	CREATE ROLE tap_owner LOGIN;
	GRANT CREATE ON SCHEMA public TO tap_owner;
	CREATE FUNCTION public.tap_slow(id bigint, note text, every integer, ms integer)
	RETURNS text LANGUAGE plpgsql AS \$\$
	BEGIN
		IF id % every = 0 THEN
			PERFORM pg_catalog.pg_sleep(ms / 1000.0);
		END IF;
		RETURN note;
	END \$\$;
	SET ROLE tap_owner;
	CREATE TABLE src (id bigint PRIMARY KEY, a integer NOT NULL,
					  amount numeric(12,2) NOT NULL, note text);
	INSERT INTO src
	SELECT g, g % 1000, (g % 10007) / 7.0,
		   CASE WHEN g % 5 <> 0 THEN md5(g::text) END
	  FROM generate_series(1, $nrows) g;
	ANALYZE src;
});

# a target without any unique index, and a job copying into it
sub create_job
{
	my ($job, $every, $ms) = @_;
	$node->safe_psql(
		'postgres', qq{
		SET ROLE tap_owner;
		CREATE TABLE dst_$job (id bigint NOT NULL, a integer NOT NULL,
							   amount numeric(12,2) NOT NULL, note text);
		SELECT acme_migrate_create(job => '$job', source => 'src',
			target => 'dst_$job', batch_size => 1000, on_conflict => 'error',
			columns => '{"note": "public.tap_slow(id, note, $every, $ms)"}');
	});
}

sub job_field
{
	my ($job, $field) = @_;
	return $node->safe_psql('postgres',
		"SELECT $field FROM acme_migrate.jobs WHERE job_name = '$job'");
}

# pids of the job's live workers
# Did the postmaster see worker $pid killed (in its log after $offset)?
sub crashed
{
	my ($pid, $offset) = @_;
	for (my $i = 0; $i < 100; $i++)
	{
		return 1
		  if slurp_file($node->logfile, $offset) =~
		  /\(PID $pid\) was terminated by signal 9/;
		usleep(100_000);
	}
	return 0;
}

sub worker_pids
{
	my ($job) = @_;
	my $pids = $node->safe_psql(
		'postgres', qq{
		SELECT pid FROM pg_stat_activity
		 WHERE backend_type = 'acme_migrate worker'
		   AND application_name = 'acme_migrate job ' ||
			   (SELECT job_id FROM acme_migrate.jobs WHERE job_name = '$job')
		 ORDER BY pid});
	return split /\n/, $pids;
}

# wait until the server answers again (after a crash restart)
sub wait_server
{
	$node->poll_query_until('postgres', 'SELECT true')
	  or die "the server did not come back";
}

# wait (at most $secs seconds) until $sql returns true; false on timeout

# the committed state of a job after a kill: the target holds exactly the
# rows the checkpoints count, none twice, and the per-range checkpoints add
# up to the job's
sub check_consistent
{
	my ($job, $what) = @_;
	my $res = $node->safe_psql(
		'postgres', qq{
		WITH j AS (SELECT * FROM acme_migrate.jobs WHERE job_name = '$job'),
			 b AS (SELECT count(*) AS n, coalesce(sum(rows_copied), 0) AS rc
					 FROM acme_migrate.batches
					WHERE job_id = (SELECT job_id FROM j)),
			 r AS (SELECT coalesce(sum(rows_read), 0) AS rr
					 FROM acme_migrate.ranges
					WHERE job_id = (SELECT job_id FROM j)),
			 t AS (SELECT count(*) AS n, count(DISTINCT id) AS nd FROM dst_$job)
		SELECT t.n = j.rows_copied, t.nd = t.n, b.rc = j.rows_copied,
			   b.n = j.batches_done, r.rr = j.rows_read,
			   format('%s: target %s distinct %s copied %s batches %s/%s ranges read %s',
					  j.state, t.n, t.nd, j.rows_copied, b.n, j.batches_done, r.rr)
		  FROM j, b, r, t
	});
	my @f = split /\|/, $res;
	my $desc = pop @f;
	is(join(',', @f), 't,t,t,t,t',
		"$what: the checkpoints match the committed rows ($desc)");
}

# the end: the target equals the source, every key once, all counted
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
			   j.rows_copied = (SELECT count(*) FROM dst_$job),
			   j.rows_read = $nrows,
			   (SELECT bool_and(state = 'done') FROM acme_migrate.ranges
				 WHERE job_id = j.job_id)
		  FROM acme_migrate.jobs j WHERE j.job_name = '$job'}),
		'done|0|0|t|0|t|t|t',
		"$what: done, target equals source (EXCEPT both ways empty, "
		  . "same count, no key twice, rows_copied = count)");
}

sub wait_done
{
	my ($job, $what) = @_;
	ok( wait_for($node, 
			"SELECT state <> 'running' FROM acme_migrate.jobs WHERE job_name = '$job'",
			120),
		"$what: the job finished on its own within 120 s");
}

######################################################################
# 1. kill -9 of workers and of the postmaster at random moments
######################################################################

create_job('crash', 1000, 40);
is( $node->safe_psql(
		'postgres',
		"SET ROLE tap_owner; SELECT acme_migrate_start('crash', workers => 2)"),
	'2',
	'acme_migrate_start launches 2 workers');
is( $node->safe_psql(
		'postgres',
		q{SELECT state, workers,
				 (SELECT count(*) FROM acme_migrate.ranges r WHERE r.job_id = j.job_id)
			FROM acme_migrate.jobs j WHERE job_name = 'crash'}),
	'running|2|8',
	'the job is running with 2 workers, its key space split into 2 * 4 ranges'
);

# what the workers look like in pg_stat_activity
ok( wait_for($node, 
		q{SELECT count(*) = 2 FROM pg_stat_activity
		   WHERE backend_type = 'acme_migrate worker' AND query LIKE '% range %'},
		30),
	'two workers are copying ranges');
my $job_id = job_field('crash', 'job_id');
my $activity = $node->safe_psql(
	'postgres', q{
	SELECT usename, backend_type, application_name, query
	  FROM pg_stat_activity WHERE backend_type = 'acme_migrate worker'
	 ORDER BY pid});
my @rows = split /\n/, $activity;
is(scalar(@rows), 2, 'two rows in pg_stat_activity');
for my $row (@rows)
{
	like(
		$row,
		qr/^tap_owner\|acme_migrate worker\|acme_migrate job $job_id\|acme_migrate job crash: range \d+, keys \(\S+ \.\. \S+\]$/,
		"a worker runs as the job's owner and names job and range ($row)");
}
is( $node->safe_psql(
		'postgres',
		q{SELECT workers, activity LIKE 'acme_migrate job crash: %'
			FROM acme_migrate.progress WHERE job = 'crash'}),
	'2|t',
	'acme_migrate.progress counts the live workers and shows what they do');

# three kill -9 of a worker, then one of the postmaster
for my $round (1 .. 4)
{
	my $delay = 0.5 + rand(2.0);
	usleep(int($delay * 1_000_000));
	my @pids = worker_pids('crash');
	if (job_field('crash', 'state') ne 'running' || !@pids)
	{
		diag("round $round: the job is no longer running, no kill");
		last;
	}
	if ($round < 4)
	{
		my $victim = $pids[ int(rand(@pids)) ];
		diag(sprintf("round %d: kill -9 of worker %d after %.2f s",
				$round, $victim, $delay));
		my $offset = -s $node->logfile;
		# a worker that found no range left may have ended meanwhile: then
		# nothing crashed, and there is no restart to wait for
		if (kill('KILL', $victim) && crashed($victim, $offset))
		{
			$node->wait_for_log(
				qr/database system is ready to accept connections/, $offset);
			wait_server();
		}
		else
		{
			diag("round $round: worker $victim had ended, nothing crashed");
		}
	}
	else
	{
		diag(sprintf("round %d: kill -9 of the postmaster after %.2f s",
				$round, $delay));
		$node->kill9;
		# a restart fails while a backend of the dead postmaster lives on
		my $gone = 0;
		for (my $i = 0; $i < 1200; $i++)
		{
			if (!grep { kill(0, $_) } @pids)
			{
				$gone = 1;
				last;
			}
			usleep(100_000);
		}
		ok($gone, 'the workers of the killed postmaster are gone');
		$node->start;
	}
	check_consistent('crash', "after kill $round");
	ok( wait_for($node, 
			q{SELECT count(*) > 0 OR (SELECT state FROM acme_migrate.jobs
										WHERE job_name = 'crash') <> 'running'
				FROM pg_stat_activity WHERE backend_type = 'acme_migrate worker'},
			60),
		"after kill $round: the launcher started workers again");
}

wait_done('crash', 'after the kills');
check_complete('crash', 'after the kills');
ok($node->log_contains(qr/acme_migrate: resuming job "crash" with 2 worker\(s\)/),
	'the launcher logged that it resumed the job');
is( $node->safe_psql(
		'postgres',
		q{SELECT count(*) FROM pg_stat_activity
		   WHERE backend_type = 'acme_migrate worker'}),
	'0',
	'no worker is left once the job is done');

######################################################################
# 2. orphaned workers after kill -9 of the postmaster
######################################################################

# A worker busy copying batch after batch must notice that the postmaster
# died: an orphan that goes on copying keeps the server from starting again
# ("lock file postmaster.pid already exists").  This job has no sleeping
# transform, so the workers never wait on a latch between batches.
$node->safe_psql(
	'postgres', q{
	SET ROLE tap_owner;
	CREATE TABLE src_fast (id bigint PRIMARY KEY, a integer NOT NULL);
	INSERT INTO src_fast SELECT g, g % 1000 FROM generate_series(1, 1500000) g;
	ANALYZE src_fast;
	CREATE TABLE dst_fast (id bigint NOT NULL, a integer NOT NULL);
	SELECT acme_migrate_create(job => 'fast', source => 'src_fast',
		target => 'dst_fast', batch_size => 200, on_conflict => 'error');
	SELECT acme_migrate_start('fast', workers => 2);
});
ok( wait_for($node, 
		q{SELECT rows_read > 20000 FROM acme_migrate.jobs WHERE job_name = 'fast'},
		60),
	'the fast job is copying');
my @orphans = worker_pids('fast');
$node->kill9;
my $t0 = time();
usleep(3_000_000);
my @alive = grep { kill(0, $_) } @orphans;
ok(!@alive,
	'every worker exits within 3 s of the postmaster\'s death'
	  . (@alive ? ' (still alive: ' . join(',', @alive) . ')' : ''));
# let them finish, whatever the outcome above, so that the server can start
for (my $i = 0; $i < 1200 && grep { kill(0, $_) } @orphans; $i++)
{
	usleep(100_000);
}
diag(sprintf("orphaned workers lived %.1f s after the postmaster died",
		time() - $t0));
$node->start;
wait_done('fast', 'fast job after the postmaster died');
is( $node->safe_psql(
		'postgres', q{
	SELECT j.state, count(*) = 1500000, count(DISTINCT id) = count(*),
		   j.rows_copied = count(*)
	  FROM dst_fast, acme_migrate.jobs j WHERE j.job_name = 'fast'
	 GROUP BY j.state, j.rows_copied}),
	'done|t|t|t',
	'fast job: every row exactly once');

######################################################################
# 3. SIGTERM: the launcher replaces terminated workers after naptime
######################################################################

create_job('term', 1000, 40);
$node->safe_psql('postgres',
	"SET ROLE tap_owner; SELECT acme_migrate_start('term', workers => 2)");
# both workers up (under load the second may start a while after the first)
ok( wait_for($node, 
		q{SELECT j.rows_read > 20000 AND
				 (SELECT count(*) FROM pg_stat_activity
				   WHERE backend_type = 'acme_migrate worker'
					 AND application_name = 'acme_migrate job ' || j.job_id) = 2
			FROM acme_migrate.jobs j WHERE j.job_name = 'term'},
		60),
	'term: the job is copying');
my @term = worker_pids('term');
is(scalar(@term), 2, 'term: two workers');
is( $node->safe_psql(
		'postgres',
		'SELECT bool_and(pg_terminate_backend(pid, 10000)) FROM pg_stat_activity '
		  . "WHERE pid IN (" . join(',', @term) . ")"),
	't',
	'pg_terminate_backend stops both workers');
is($node->safe_psql('postgres', 'SELECT true'),
	't', 'SIGTERM of a worker does not restart the server');
check_consistent('term', 'after SIGTERM');
ok( wait_for($node, 
		q{SELECT count(*) > 0 OR (SELECT state FROM acme_migrate.jobs
									WHERE job_name = 'term') <> 'running'
			FROM pg_stat_activity WHERE backend_type = 'acme_migrate worker'
			 AND pid NOT IN (} . join(',', @term) . ')',
		30),
	'term: new workers within 30 s (acme_migrate.naptime = 1)');
wait_done('term', 'term');
check_complete('term', 'term');

######################################################################
# 4. pause mid-run, then resume
######################################################################

create_job('pr', 1000, 40);
$node->safe_psql('postgres',
	"SET ROLE tap_owner; SELECT acme_migrate_start('pr', workers => 2)");
ok( wait_for($node, 
		q{SELECT rows_read > 20000 FROM acme_migrate.jobs WHERE job_name = 'pr'},
		60),
	'pr: the job is copying');
is($node->safe_psql('postgres', "SELECT acme_migrate_pause('pr')"),
	't', 'acme_migrate_pause returns true');
ok( wait_for($node, 
		q{SELECT count(*) = 0 FROM pg_stat_activity
		   WHERE backend_type = 'acme_migrate worker'},
		10),
	'pr: the workers stop within 10 s');
my $paused_read = job_field('pr', 'rows_read');
cmp_ok($paused_read, '<', $nrows, "pr: paused part-way ($paused_read rows)");
check_consistent('pr', 'paused');
# three naptimes: the launcher does not resume a paused job
usleep(3_000_000);
is( $node->safe_psql(
		'postgres', q{
	SELECT j.state, j.rows_read,
		   (SELECT count(*) FROM pg_stat_activity
			 WHERE backend_type = 'acme_migrate worker')
	  FROM acme_migrate.jobs j WHERE job_name = 'pr'}),
	"paused|$paused_read|0",
	'pr: the launcher leaves a paused job alone');
is($node->safe_psql('postgres', "SELECT acme_migrate_resume('pr')"),
	'2', 'acme_migrate_resume relaunches the 2 workers');
wait_done('pr', 'pr after resume');
check_complete('pr', 'pr after resume');

######################################################################
# 5. cancel in the middle of a batch
######################################################################

# every batch sleeps 300 ms: a worker seen in pg_sleep is mid-batch
create_job('cx', 1000, 300);
$node->safe_psql('postgres',
	"SET ROLE tap_owner; SELECT acme_migrate_start('cx', workers => 2)");
ok( wait_for($node, 
		q{SELECT rows_read >= 2000 AND EXISTS (SELECT FROM pg_stat_activity
			  WHERE backend_type = 'acme_migrate worker' AND wait_event = 'PgSleep')
			FROM acme_migrate.jobs WHERE job_name = 'cx'},
		60),
	'cx: a worker is in the middle of a batch');
is($node->safe_psql('postgres', "SELECT acme_migrate_cancel('cx')"),
	't', 'acme_migrate_cancel returns true');
my $t_cancel = time();
ok( wait_for($node, 
		q{SELECT count(*) = 0 FROM pg_stat_activity
		   WHERE backend_type = 'acme_migrate worker'},
		5),
	'cx: the workers are gone within 5 s');
diag(sprintf("cx: workers gone %.1f s after the cancel", time() - $t_cancel));
usleep(2_000_000);
is( $node->safe_psql(
		'postgres', q{
	SELECT j.state, j.rows_read < 400000,
		   (SELECT count(*) FROM dst_cx) = j.rows_copied,
		   (SELECT count(*) FROM dst_cx) =
				(SELECT sum(rows_copied) FROM acme_migrate.batches b
				  WHERE b.job_id = j.job_id),
		   (SELECT count(DISTINCT id) FROM dst_cx) = (SELECT count(*) FROM dst_cx),
		   NOT EXISTS (SELECT * FROM dst_cx EXCEPT SELECT * FROM src),
		   (SELECT count(*) FROM pg_stat_activity
			 WHERE backend_type = 'acme_migrate worker')
	  FROM acme_migrate.jobs j WHERE job_name = 'cx'}),
	'cancelled|t|t|t|t|t|0',
	'cx: cancelled, the target has exactly the rows of the batch history, '
	  . 'and the launcher does not resume it');
# every target row lies in the key range of a committed batch, also for a
# job split in ranges
is( $node->safe_psql(
		'postgres', q{
	SELECT count(*) FROM dst_cx d
	 WHERE NOT EXISTS (SELECT FROM acme_migrate.batches b
						JOIN acme_migrate.jobs j USING (job_id)
					   WHERE j.job_name = 'cx'
						 AND d.id BETWEEN b.first_key[1]::bigint AND b.last_key[1]::bigint)}),
	'0',
	'cx: every target row is inside a committed batch\'s key range');

$node->stop;
done_testing();
