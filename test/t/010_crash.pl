# Exactly-once copy across crashes.
#
# CALL acme_migrate_run copies a 200,000-row source in batches of 1,000 and is
# killed again and again: kill -9 of its backend (the postmaster then resets
# every backend and runs crash recovery) at random moments, kill -9 while it
# sleeps on the last row of a batch (everything read, nothing committed),
# kill -9 on the first row of a batch (the previous batch just committed),
# and immediate shutdowns of the whole server.  After every crash the
# committed checkpoint must describe exactly the committed rows; at the end
# the target must equal the mapped source, without a duplicate.
#
# The random moments come from a fixed seed, printed; set ACME_CRASH_SEED to
# try others.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(usleep);

my $seed = $ENV{ACME_CRASH_SEED} // 4242;
srand($seed);
diag("crash moments from seed $seed (ACME_CRASH_SEED)");

my $nrows = 500_000;
my $batch = 1_000;

my $node = PostgreSQL::Test::Cluster->new('crash');
$node->init;
$node->append_conf('postgresql.conf', 'restart_after_crash = on');
$node->start;

# tap_note() is the identity on note, but sleeps on the rows named in the
# session's tap.slow_ids: the way to stop a batch at a row of our choosing.
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
	CREATE TABLE src (id integer PRIMARY KEY, amount numeric(12,2) NOT NULL,
					  status text NOT NULL, note text);
	INSERT INTO src
	SELECT g, (g % 10007) / 7.0, (ARRAY['new', 'paid', 'shipped'])[g % 3 + 1],
		   CASE WHEN g % 5 <> 0 THEN md5(g::text) END
	  FROM generate_series(1, $nrows) g;
	CREATE VIEW src_mapped AS
	SELECT id, (amount * 100)::bigint AS amount_cents, upper(status) AS status, note
	  FROM src;
	CREATE TABLE dst_pk (id integer PRIMARY KEY, amount_cents bigint NOT NULL,
						 status text NOT NULL, note text);
	CREATE TABLE dst_nokey (id integer NOT NULL, amount_cents bigint NOT NULL,
							status text NOT NULL, note text);
});

my $columns =
  '{"amount_cents": "(amount * 100)::bigint", "status": "upper(status)", '
  . '"note": "public.tap_note(id, note)"}';

# the committed state of a job, checked against its target after a crash:
# the checkpoint describes exactly the committed rows, nothing more or less
sub check_consistent
{
	my ($job, $target, $what) = @_;
	my $res = $node->safe_psql(
		'postgres', qq{
		WITH j AS (SELECT * FROM acme_migrate.jobs WHERE job_name = '$job'),
			 b AS (SELECT count(*) AS n, coalesce(sum(rows_read), 0) AS rr,
						  coalesce(sum(rows_copied), 0) AS rc,
						  coalesce(max(batch_no), 0) AS maxno
					 FROM acme_migrate.batches
					WHERE job_id = (SELECT job_id FROM j)),
			 t AS (SELECT count(*) AS n, count(DISTINCT id) AS nd,
						  coalesce(max(id), 0) AS maxid
					 FROM $target)
		SELECT t.n = j.rows_copied, t.nd = t.n, b.n = j.batches_done,
			   b.maxno = b.n, b.rr = j.rows_read, b.rc = j.rows_copied,
			   t.maxid = coalesce(j.last_key[1]::integer, 0),
			   t.n = t.maxid,
			   format('target %s distinct %s copied %s read %s batches %s/%s last_key %s',
					  t.n, t.nd, j.rows_copied, j.rows_read, b.n, j.batches_done,
					  j.last_key)
		  FROM j, b, t
	});
	my @f = split /\|/, $res;
	my $desc = pop @f;
	is(join(',', @f), 't,t,t,t,t,t,t,t',
		"$what: checkpoint matches the committed rows ($desc)");
	return $desc;
}

sub job_rows_read
{
	my ($job) = @_;
	return $node->safe_psql('postgres',
		"SELECT rows_read FROM acme_migrate.jobs WHERE job_name = '$job'");
}

sub job_state
{
	my ($job) = @_;
	return $node->safe_psql('postgres',
		"SELECT state FROM acme_migrate.jobs WHERE job_name = '$job'");
}

# session settings of each job's runs: the write path to exercise, and
# whether batches before the last of a call may commit without waiting for
# the WAL flush (acme_migrate.async_commit, on by default)
my %job_settings = (
	crash_pk =>
	  'SET acme_migrate.direct_write = on; SET acme_migrate.async_commit = off',
	crash_nokey =>
	  'SET acme_migrate.direct_write = off; SET acme_migrate.async_commit = off',
	crash_async => 'SET acme_migrate.direct_write = on');

# start CALL acme_migrate_run in its own psql; returns the IPC::Run handle
sub start_run
{
	my ($job, $slow_ids) = @_;
	my ($out, $err) = ('', '');
	local $ENV{PGAPPNAME} = 'tap_runner';
	my $h = IPC::Run::start(
		[
			'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1',
			'-d', $node->connstr('postgres'),
			'-c', $job_settings{$job},
			'-c', "SET tap.slow_ids = '" . ($slow_ids // '') . "'",
			'-c', "CALL acme_migrate_run('$job')"
		],
		'<', \undef, '>', \$out, '2>', \$err);
	return { h => $h, out => \$out, err => \$err };
}

# is the runner's psql still going?
sub run_alive
{
	my ($run) = @_;
	eval { $run->{h}->pump_nb; };
	return $run->{h}->pumpable;
}

# pid of the runner's backend once it is inside the CALL, or undef when the
# run ended before
sub runner_pid
{
	my ($run) = @_;
	for (my $i = 0; $i < 100 * $PostgreSQL::Test::Utils::timeout_default; $i++)
	{
		my $pid = $node->safe_psql(
			'postgres', q{
			SELECT pid FROM pg_stat_activity
			 WHERE application_name = 'tap_runner'
			   AND query LIKE 'CALL acme_migrate_run%' AND state = 'active'});
		return $pid if $pid ne '';
		return undef unless run_alive($run);
		usleep(10_000);
	}
	die "acme_migrate_run did not start";
}

# wait until the runner waits on the given event: PgSleep in tap_note(),
# Extension in the throttle of acme_migrate_run between two batches; false
# if the run ended instead
sub wait_for_event
{
	my ($run, $pid, $event) = @_;
	for (my $i = 0; $i < 100 * $PostgreSQL::Test::Utils::timeout_default; $i++)
	{
		return 1
		  if $node->safe_psql('postgres',
			"SELECT wait_event FROM pg_stat_activity WHERE pid = $pid") eq
		  $event;
		return 0 unless run_alive($run);
		usleep(5_000);
	}
	die "acme_migrate_run did not wait on $event";
}

sub finish_run
{
	my ($run) = @_;
	eval { $run->{h}->finish; };
	return $run->{h}->result;
}

# after a kill -9 of a backend the postmaster resets every backend and runs
# crash recovery: wait for both in the log, so that no query of ours slips
# in before the reset
sub wait_for_recovery
{
	my ($offset) = @_;
	$node->wait_for_log(
		qr/terminated by signal 9: Killed.*all server processes terminated; reinitializing.*database system is ready to accept connections/s,
		$offset);
}

# One crash of the given kind while CALL acme_migrate_run copies the job:
#   last_row	kill -9 while the run sleeps on the last row of a batch: the
#				batch has read every row and committed nothing
#   first_row	kill -9 while it sleeps on the first row of a batch: the
#				batch before has just committed
#   between		kill -9 while the run's throttle waits between two batches
#   random		kill -9 after a random delay
# and with the suffix _immediate, an immediate shutdown of the whole server
# (the postmaster and every backend) instead of the kill -9.  Returns a
# description.
sub crash_once
{
	my ($job, $kind, $limit) = @_;
	my $done = job_rows_read($job);
	my ($slow, $label, $before);

	$slow = $done + 2 * $batch if $kind =~ /^last_row/;
	$slow = $done + 2 * $batch + 1 if $kind =~ /^first_row/;
	if (defined $slow && $slow > $limit)
	{
		fail("$job $kind: no rows left to crash in (rows_read $done)");
		return "$kind: skipped";
	}

	my $run = start_run($job, $slow);
	my $pid = runner_pid($run);
	my $reached = defined $pid;
	if ($reached && defined $slow)
	{
		$reached = wait_for_event($run, $pid, 'PgSleep');
	}
	elsif ($reached && $kind =~ /^between/)
	{
		$reached = wait_for_event($run, $pid, 'Extension');
	}
	elsif ($reached)
	{
		usleep(int(5_000 + rand(35_000)));
	}
	if (!$reached)
	{
		finish_run($run);
		fail("$job $kind: the run ended before the crash point");
		return "$kind: run ended first";
	}

	$before = job_rows_read($job);
	if ($kind =~ /^first_row/)
	{
		is($before, $slow - 1,
			"$job $kind: the batch before the slow row has committed");
	}
	elsif ($kind =~ /^last_row/)
	{
		is($before, $slow - $batch,
			"$job $kind: the slow row's batch has not committed");
	}

	if ($kind =~ /_immediate$/)
	{
		$node->stop('immediate');
		finish_run($run);
		$node->start;
		$label = "immediate shutdown";
	}
	else
	{
		my $offset = -s $node->logfile;
		my $killed = kill 'KILL', $pid;
		finish_run($run);
		# a backend already gone (its run ended) causes no reset
		wait_for_recovery($offset) if $killed;
		$label =
		  $killed ? "kill -9 of backend $pid" : "backend gone before the kill";
	}

	my $after = job_rows_read($job);
	if ($job_settings{$job} !~ /async_commit = off/)
	{
		# batches committed without the flush may be undone, never half
		# undone (check_consistent) nor advanced
		cmp_ok($after, '<=', $before,
			"$job $kind: checkpoint not past what was seen before the crash")
		  if defined $slow;
	}
	elsif (defined $slow)
	{
		is($after, $before, "$job $kind: checkpoint unchanged by the crash");
	}
	else
	{
		cmp_ok($after, '>=', $before, "$job $kind: no committed batch lost");
	}
	return "$kind ($label) at rows_read $after";
}

# copy one job to the end through a series of crashes, then check it
# against the mapped source rows it was to copy
sub crash_and_resume
{
	my ($job, $target, $where, $limit, $method, @kinds) = @_;
	foreach my $kind (@kinds)
	{
		my $what = crash_once($job, $kind, $limit);
		note($what);
		check_consistent($job, $target, "$job after $what");
	}

	# resume until done: a run resumed after a crash must not find the job
	# busy (the crashed session's lock is gone)
	my $tries = 0;
	while (job_state($job) ne 'done' && $tries++ < 3)
	{
		$node->safe_psql('postgres',
			"$job_settings{$job};\nCALL acme_migrate_run('$job');");
	}
	is(job_state($job), 'done', "$job: done after resuming");
	check_consistent($job, $target, "$job at the end");

	my $res = $node->safe_psql(
		'postgres', qq{
		SELECT (SELECT count(*) FROM $target),
			   (SELECT count(*) FROM src_mapped WHERE $where),
			   (SELECT count(*) FROM (SELECT id FROM $target GROUP BY id
									   HAVING count(*) > 1) d),
			   (SELECT count(*) FROM (SELECT * FROM src_mapped WHERE $where
									  EXCEPT ALL SELECT * FROM $target) m),
			   (SELECT count(*) FROM (SELECT * FROM $target
									  EXCEPT ALL SELECT * FROM src_mapped
									   WHERE $where) e),
			   (SELECT rows_copied FROM acme_migrate.jobs WHERE job_name = '$job')
	});
	my ($nt, $ns, $dups, $missing, $extra, $copied) = split /\|/, $res;
	is($nt, $ns, "$job: target has as many rows as the source ($ns)");
	is($dups, 0, "$job: no key twice in the target");
	is($missing, 0, "$job: no mapped source row missing from the target");
	is($extra, 0, "$job: no target row that is not a mapped source row");
	is($copied, $nt, "$job: rows_copied counts the target rows");
	is( $node->safe_psql(
			'postgres', qq{
			SELECT sum(b.rows_read) = j.rows_read AND sum(b.rows_copied) = j.rows_copied
			   AND count(*) = j.batches_done
			   AND bool_and(b.first_key[1]::integer <= b.last_key[1]::integer)
			  FROM acme_migrate.batches b JOIN acme_migrate.jobs j USING (job_id)
			 WHERE j.job_name = '$job'
			 GROUP BY j.rows_read, j.rows_copied, j.batches_done}),
		't',
		"$job: batch history adds up to the job's counters");
	is( $node->safe_psql(
			'postgres', qq{
			SELECT count(*) FROM (
				SELECT b.first_key[1]::integer AS lo,
					   lag(b.last_key[1]::integer) OVER (ORDER BY b.batch_no) AS prev_hi
				  FROM acme_migrate.batches b JOIN acme_migrate.jobs j USING (job_id)
				 WHERE j.job_name = '$job') s
			 WHERE prev_hi IS NOT NULL AND lo <= prev_hi}),
		'0',
		"$job: batch key ranges follow each other without overlap");
	is( $node->safe_psql(
			'postgres', qq{
			SELECT string_agg(DISTINCT b.method, ',')
			  FROM acme_migrate.batches b JOIN acme_migrate.jobs j USING (job_id)
			 WHERE j.job_name = '$job' AND b.rows_read > 0}),
		$method,
		"$job: every batch was written by the $method path");
}

# A target with a primary key, copied at full speed by the direct (table
# access method) writer; on_conflict 'error' so
# that copying a key a second time would fail the job rather than be
# absorbed by an upsert.
$node->safe_psql(
	'postgres', qq{
	SELECT acme_migrate_create(job => 'crash_pk', source => 'src',
		target => 'dst_pk', columns => '$columns', batch_size => $batch,
		on_conflict => 'error')});
crash_and_resume(
	'crash_pk', 'dst_pk', 'true', $nrows, 'direct',
	'last_row', 'first_row', 'random', 'random', 'random', 'last_row',
	'random', 'last_row_immediate', 'random_immediate', 'first_row',
	'random', 'first_row_immediate', 'random');

# A target without any unique index, where a key copied twice would stay
# visible, written by INSERT statements (direct_write off); a filter, and a
# throttle so that the run waits between batches
# (5,000 rows/s: 200 ms a batch, most of it waiting; 60,000 rows, so that a
# loaded machine, slow to reach each crash point while the run goes on, does
# not run out of rows before the last one: 40,000 at 10,000 rows/s did once).
my $nokey_rows = 60_000;
$node->safe_psql(
	'postgres', qq{
	SELECT acme_migrate_create(job => 'crash_nokey', source => 'src',
		target => 'dst_nokey', key => '{id}', columns => '$columns',
		filter => 'id <= $nokey_rows', batch_size => $batch,
		on_conflict => 'error', max_rows_per_second => 5000)});
crash_and_resume(
	'crash_nokey', 'dst_nokey', "id <= $nokey_rows", $nokey_rows, 'sql',
	'between', 'last_row', 'random', 'between', 'first_row',
	'between_immediate', 'random', 'random_immediate', 'between',
	'last_row');

# The same copy with the default acme_migrate.async_commit = on: a crash may
# undo batches committed without waiting for the flush, but only whole ones
# with their checkpoint, so every row still lands exactly once.
$node->safe_psql(
	'postgres', qq{
	CREATE TABLE dst_async (LIKE dst_pk INCLUDING ALL);
	SELECT acme_migrate_create(job => 'crash_async', source => 'src',
		target => 'dst_async', columns => '$columns', batch_size => $batch,
		on_conflict => 'error')});
is($node->safe_psql('postgres', "LOAD 'acme_migrate'; SHOW acme_migrate.async_commit"),
	'on', 'acme_migrate.async_commit is on by default');
crash_and_resume(
	'crash_async', 'dst_async', 'true', $nrows, 'direct',
	'first_row', 'random', 'last_row', 'random_immediate', 'random',
	'first_row_immediate', 'random');

$node->stop;
done_testing();
