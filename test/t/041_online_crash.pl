# Online migration across crashes: immediate shutdown (every process
# killed, crash recovery at restart) while a worker catches up a large
# backlog, and while a cut-over holds its lock (in a long then_sql).
#
# After each crash the job is either fully cut over or not at all: state
# copied with the capture triggers on the source and none on the target, or
# cut_over with none on the source.  No change is lost: every captured entry
# is either applied (its key's target row is the mapped source row) or still
# in the log; the job is then finished (catch-up, cut-over) and the target
# compared with the mapped source, EXCEPT ALL both ways.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use AcmeTest;
use IPC::Run;
use Time::HiRes qw(usleep time);

my $nrows = 30_000;

my $node = PostgreSQL::Test::Cluster->new('online_crash');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'acme_migrate'
max_worker_processes = 16
acme_migrate.naptime = 1
restart_after_crash = on
});
$node->start;

# tap_slow(id, note) is the identity on note, but sleeps 20 ms on every
# 100th key: a catch-up chunk of 2,000 keys takes some 0.4 s
$node->safe_psql(
	'postgres', qq{
	CREATE EXTENSION acme_migrate;
	CREATE FUNCTION public.tap_slow(id integer, note text) RETURNS text
	LANGUAGE plpgsql AS \$\$
	BEGIN
		IF id % 100 = 0 THEN
			PERFORM pg_catalog.pg_sleep(0.02);
		END IF;
		RETURN note;
	END \$\$;
	CREATE TABLE src (id serial PRIMARY KEY, a integer NOT NULL, note text);
	INSERT INTO src (a, note)
	SELECT g % 1000, CASE WHEN g % 7 <> 0 THEN md5(g::text) END
	  FROM generate_series(1, $nrows) g;
	CREATE TABLE dst (id integer PRIMARY KEY, a integer NOT NULL, note text);
	SELECT acme_migrate_create(job => 'crash', source => 'src', target => 'dst',
		columns => '{"a": "a * 2", "note": "public.tap_slow(id, note)"}',
		batch_size => 5000, capture_changes => true, reverse_columns => '{"a": "a / 2"}');
});

# wait (at most $secs seconds) until $sql returns true

sub q1
{
	return $node->safe_psql('postgres', $_[0]);
}

sub backlog
{
	return q1(q{SELECT count(*) FROM acme_migrate.capture_log WHERE direction = 'f'});
}


# No change lost so far: every key without a log entry has its mapped
# source row in the target, and the other way round (the entries still in
# the log are the keys not applied yet).
sub check_applied_or_logged
{
	my ($what) = @_;
	is( q1(
			q{
		WITH logged AS (SELECT DISTINCT key[1]::integer AS id FROM acme_migrate.capture_log
						 WHERE direction = 'f')
		SELECT (SELECT count(*) FROM (SELECT id, a * 2, note FROM src
									   WHERE id NOT IN (SELECT id FROM logged)
									  EXCEPT ALL SELECT * FROM dst) m),
			   (SELECT count(*) FROM (SELECT * FROM dst WHERE id NOT IN (SELECT id FROM logged)
									  EXCEPT ALL SELECT id, a * 2, note FROM src) e)}),
		'0|0',
		"$what: every key not in the log is applied (EXCEPT ALL both ways)");
}

sub check_equal
{
	my ($what) = @_;
	is( q1(
			q{
		SELECT (SELECT count(*) FROM (SELECT id, a * 2, note FROM src EXCEPT ALL
									  SELECT * FROM dst) m),
			   (SELECT count(*) FROM (SELECT * FROM dst EXCEPT ALL
									  SELECT id, a * 2, note FROM src) e),
			   (SELECT count(*) FROM src) = (SELECT count(*) FROM dst)}),
		'0|0|t',
		"$what: target = mapped source (EXCEPT ALL both ways, same count)");
}

sub crash_restart
{
	$node->stop('immediate');
	$node->start;
}

######################################################################
# 1. immediate shutdown while a worker catches up a large backlog
######################################################################

q1("CALL acme_migrate_run('crash')");
is(q1("SELECT state FROM acme_migrate.jobs WHERE job_name = 'crash'"),
	'copied', 'copied (no worker: nothing catches up yet)');

# a backlog of some 40,000 entries: every row updated, deletes, inserts,
# key moves, re-inserts
q1(qq{
	UPDATE src SET a = a + 1;
	DELETE FROM src WHERE id % 10 = 3;
	INSERT INTO src (a, note) SELECT g, 'new ' || g FROM generate_series(1, 3000) g;
	UPDATE src SET id = id + 1000000 WHERE id % 10 = 4;
	INSERT INTO src (id, a, note) SELECT g, 7, 'again' FROM generate_series(3, $nrows, 100) g;
});
my $backlog0 = backlog();
cmp_ok($backlog0, '>', 35000, "a backlog of $backlog0 entries");

is(q1("SELECT acme_migrate_start('crash', workers => 1)"),
	'1', 'a worker starts to catch up the copied job');
ok( wait_for($node, 
		qq{SELECT count(*) < $backlog0 - 2000 FROM acme_migrate.capture_log},
		60),
	'the worker has applied part of the backlog');
# the target held, so that no chunk of the worker commits between the count
# and the crash (one did, at a load of 9, and the count went down by it): the
# worker waits for the target's lock inside its catch-up, and the count is exact
my $hold = $node->background_psql('postgres');
$hold->query_safe("BEGIN");
$hold->query_safe("LOCK TABLE dst IN SHARE MODE");
ok( wait_for($node,
		q{SELECT count(*) = 1 FROM pg_locks l JOIN pg_stat_activity a USING (pid)
		  WHERE a.backend_type = 'acme_migrate worker' AND NOT l.granted
		    AND l.relation = 'dst'::regclass},
		60),
	'the worker waits for the held target inside its catch-up');
my $before = backlog();
ok( q1(q{SELECT count(*) = 1 FROM pg_stat_activity
		  WHERE backend_type = 'acme_migrate worker' AND query LIKE '%catching up%'}) eq 't'
	  && $before > 0,
	"the worker is catching up when the server goes down ($before entries left)");
crash_restart();
eval { $hold->quit; };
my $after = backlog();
diag("catch-up crash: backlog $backlog0 -> $before before the crash, $after after it");
cmp_ok($after, '>=', $before, 'no entry vanished in the crash without its change');
is(q1("SELECT state FROM acme_migrate.jobs WHERE job_name = 'crash'"),
	'copied', 'after the crash: still copied');
is(triggers_on($node, 'src'), '2', 'after the crash: capture triggers still on the source');
check_applied_or_logged('after the crash in catch-up');

# the launcher resumes the catch-up; more writes meanwhile
q1(q{UPDATE src SET note = 'after restart' WHERE id % 97 = 0});
ok( wait_for($node, 
		q{SELECT count(*) = 0 FROM acme_migrate.capture_log}, 120),
	'the resumed worker catches up the whole backlog');
check_equal('caught up after the crash');

######################################################################
# 2. immediate shutdown while a cut-over holds its lock
######################################################################

q1(q{UPDATE src SET a = a + 5 WHERE id % 13 = 0});
my ($out, $err) = ('', '');
my $cut = IPC::Run::start(
	[
		'psql', '-X', '-q', '-At', '-d', $node->connstr('postgres'), '-c',
		q{SELECT verified FROM acme_migrate_cutover('crash',
			then_sql => $$SELECT pg_advisory_xact_lock(4242); SELECT pg_sleep(5);
				ALTER TABLE src RENAME TO src_old$$)}
	],
	'<', \undef, '>', \$out, '2>', \$err);
# in then_sql: its advisory lock taken, pg_sleep running
ok( wait_for($node, 
		q{SELECT count(*) = 1 FROM pg_stat_activity a JOIN pg_locks l USING (pid)
		   WHERE a.query LIKE '%acme_migrate_cutover%' AND a.wait_event = 'PgSleep'
			 AND l.locktype = 'advisory' AND l.objid = 4242 AND l.granted
			 AND a.pid <> pg_backend_pid()}, 60),
	'the cut-over runs then_sql (pg_sleep)');
is( q1(q{SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)
		  WHERE l.relation = 'src'::regclass AND l.mode = 'ExclusiveLock' AND l.granted
			AND a.query LIKE '%acme_migrate_cutover%'}),
	'1', 'the cut-over holds EXCLUSIVE on the source');
is( q1(q{SET statement_timeout = '3 s'; SELECT count(*) > 0 FROM src}),
	't', 'readers of the source do not wait for the cut-over');
my ($wret, $wout, $werr) = $node->psql('postgres',
	q{SET lock_timeout = '200 ms'; UPDATE src SET a = a WHERE id = 1});
like($werr, qr/lock timeout/, 'writers of the source wait for the cut-over');
crash_restart();
eval { $cut->finish; };
unlike($out, qr/^t$/m, 'the cut-over did not return');
is( q1(
		q{SELECT j.state, (SELECT count(*) FROM acme_migrate.cutovers c
							WHERE c.job_id = j.job_id AND c.outcome = 'done'),
				 to_regclass('src') IS NOT NULL, to_regclass('src_old') IS NULL
			FROM acme_migrate.jobs j WHERE job_name = 'crash'}),
	'copied|0|t|t',
	'after the crash: not cut over at all (state copied, no done attempt, then_sql undone)');
is(triggers_on($node, 'src'), '2', 'after the crash: capture triggers on the source');
is(triggers_on($node, 'dst'), '0', 'after the crash: no reverse capture on the target');
check_applied_or_logged('after the crash in cut-over');

# writes after the restart, then the cut-over again
q1(q{
	INSERT INTO src (a, note) SELECT g, 'post crash' FROM generate_series(1, 500) g;
	DELETE FROM src WHERE id % 10 = 5;
	UPDATE src SET id = id + 2000000 WHERE id % 10 = 6 AND id < 1000000;
});
my $res = q1(
	q{SELECT attempts, extract(epoch FROM lock_held) * 1000, verified
		FROM acme_migrate_cutover('crash', then_sql => $$ALTER TABLE src RENAME TO src_old$$)});
my ($attempts, $held, $verified) = split /\|/, $res;
diag("cut-over after the crash: $attempts attempt(s), lock held $held ms");
is($verified, 't', 'the cut-over after the crash is verified');
is( q1(
		q{SELECT state FROM acme_migrate.jobs WHERE job_name = 'crash'}),
	'cut_over', 'state cut_over');
is(triggers_on($node, 'src_old'), '0', 'no capture trigger on the old source');
is(triggers_on($node, 'dst'), '2', 'reverse capture on the target');
q1('ALTER TABLE src_old RENAME TO src');
check_equal('cut over after the crash');

# a crash after the cut-over committed leaves it cut over
crash_restart();
is( q1(
		q{SELECT state FROM acme_migrate.jobs WHERE job_name = 'crash'}),
	'cut_over', 'a crash after the cut-over leaves it cut over');
is(triggers_on($node, 'src') . triggers_on($node, 'dst'), '02',
	'capture off the source, reverse capture on the target');
check_equal('after the last crash');

$node->stop;
done_testing();
