# Online migration under write load: capture, catch-up, cut-over, rollback.
#
# 1. A 30,000-row source (serial key, a text column of which about one row
#    in 50 holds a TOASTed value of 3,200 characters) is migrated with
#    capture_changes by 2 workers while pgbench (8 clients, --rate 400, 20 s)
#    writes to it: inserts, updates, updates of the key, updates of the
#    TOASTed column, deletes, INSERT ... ON CONFLICT DO UPDATE and re-inserts
#    of deleted keys.  Once copied, worker 1 keeps catching up; then
#    acme_migrate_cutover runs WHILE pgbench still writes.
#
#    Choice for the writes after cut-over: then_sql renames the source away
#    (src -> src_old) and the target in its place (dst -> src), so pgbench's
#    later statements go to the new table, as an application's would; the
#    target keeps the source's column names (its transform is a + 1000, which
#    reverse_columns undoes), so no pgbench statement fails.  then_sql also
#    takes a copy of the target (dst_at_cutover) under the cut-over's lock:
#    the exact oracle is "src_old mapped = dst_at_cutover", since no write
#    reaches src_old after the rename and none reaches the target before the
#    cut-over commits.  The cut-over itself moves the target's sequence past
#    the source's and past the largest copied key (key moves go to negative
#    keys, from a sequence of their own): pgbench's inserts into the new
#    table would fail with duplicate keys otherwise.
#
#    Asserted: cut-over verified, lock_held under 1 s (generous; the goal is
#    100 ms, the figure is printed), attempts recorded, capture removed and
#    reverse capture installed, no pgbench error or aborted client, the
#    oracle both ways with EXCEPT ALL.
#
# 2. Rollback after cut-over (pgbench stopped): the writes pgbench made to
#    the new table, plus a marked insert, update and delete, are replayed into
#    the old one; then_sql swaps the names back.  Oracle: source mapped =
#    target with EXCEPT ALL both ways, and acme_migrate_reconcile equal.
#
# 3. Rollback before cut-over: a target that held rows before the job
#    (some overwritten by the copy, some by catch-up, one deleted by
#    catch-up) is put back: target_hash_equal, and EXCEPT ALL against a copy
#    taken before the job.
#
# 4. Cut-over under unthrottled writes (3 pgbench clients, no --rate), three
#    times: writes land between the catch-up and the lock, so keys are
#    drained and verified under the lock; then_sql copies source and target
#    under the lock, and the copies must match (EXCEPT ALL both ways).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use AcmeTest;
use IPC::Run;
use Time::HiRes qw(usleep time);

my $nrows = 30_000;
my $pgbench_secs = 20;

my $node = PostgreSQL::Test::Cluster->new('online');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'acme_migrate'
max_worker_processes = 16
acme_migrate.naptime = 1
log_lock_waits = on
});
$node->start;

$node->safe_psql(
	'postgres', qq{
	CREATE EXTENSION acme_migrate;
	CREATE SEQUENCE src_move_seq;
	CREATE TABLE src (id serial PRIMARY KEY, a integer NOT NULL,
					  status text NOT NULL, amount numeric(12,2), note text);
	INSERT INTO src (a, status, amount, note)
	SELECT g % 1000, (ARRAY['new', 'paid', 'shipped'])[g % 3 + 1], (g % 10007) / 7.0,
		   CASE WHEN g % 50 = 0
				THEN (SELECT string_agg(md5(g::text || i), '') FROM generate_series(1, 100) i)
				WHEN g % 7 <> 0 THEN md5(g::text) END
	  FROM generate_series(1, $nrows) g;
	CREATE TABLE dst (id serial PRIMARY KEY, a integer NOT NULL,
					  status text NOT NULL, amount numeric(12,2), note text);
	ANALYZE src;
});
ok( $node->safe_psql(
		'postgres', q{
	SELECT pg_relation_size(reltoastrelid) > 1000000 FROM pg_class WHERE relname = 'src'}
	),
	'the source has TOASTed values');

# the write mix: 1 statement per transaction, keys drawn from the copied range
my $script = "$PostgreSQL::Test::Utils::tmp_check/online_writes.pgbench";
PostgreSQL::Test::Utils::append_to_file(
	$script, qq{\\set r random(1, 100)
\\set x random(1, $nrows)
\\if :r <= 25
INSERT INTO src (a, status, amount, note) VALUES (:x % 1000, 'new', :x / 7.0, CASE WHEN :r = 1 THEN (SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 100)) ELSE md5(random()::text) END);
\\elif :r <= 50
UPDATE src SET a = a + 1, status = 'paid', amount = amount + 1 WHERE id = :x;
\\elif :r <= 55
UPDATE src SET note = (SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 100)) WHERE id = :x;
\\elif :r <= 63
UPDATE src SET id = -nextval('src_move_seq') WHERE id = :x;
\\elif :r <= 75
DELETE FROM src WHERE id = :x;
\\elif :r <= 90
INSERT INTO src (id, a, status, amount, note) VALUES (:x, :r, 'shipped', :r, md5(:x::text)) ON CONFLICT (id) DO UPDATE SET a = src.a + excluded.a, status = excluded.status, amount = excluded.amount;
\\else
INSERT INTO src (id, a, status, amount, note) VALUES (:x, :r, 'new', :r, NULL) ON CONFLICT DO NOTHING;
\\endif
});

# wait (at most $secs seconds) until $sql returns true


######################################################################
# 1. cut-over while pgbench writes
######################################################################

my ($pgb_out, $pgb_err) = ('', '');
my $pgbench = IPC::Run::start(
	[
		'pgbench', '-n', '-c', '8', '-j', '2', '-T', $pgbench_secs,
		'-R', '400', '-f', $script, $node->connstr('postgres')
	],
	'<', \undef, '>', \$pgb_out, '2>', \$pgb_err);
my $t_pgbench = time();

ok( wait_for($node, 
		q{SELECT n_tup_ins + n_tup_upd + n_tup_del > 200 FROM pg_stat_user_tables
		   WHERE relname = 'src'}, 30),
	'pgbench is writing to the source');

# capture starts in the creating transaction, the copy under the writes
is( $node->safe_psql(
		'postgres', q{
	SELECT acme_migrate_create(job => 'online', source => 'src', target => 'dst',
		columns => '{"a": "a + 1000"}', batch_size => 2000,
		capture_changes => true, reverse_columns => '{"a": "a - 1000"}')}),
	'1',
	'job created with capture_changes and reverse_columns');
is(triggers_on($node, 'src'), '2', 'capture triggers are on the source');
is($node->safe_psql('postgres', "SELECT acme_migrate_start('online', workers => 2)"),
	'2', 'two workers started');
is($node->safe_psql('postgres', "SELECT acme_migrate_wait('online', '120 s')"),
	'copied', 'the job is copied (acme_migrate_wait)');
cmp_ok(
	$node->safe_psql(
		'postgres', q{SELECT coalesce(last_value, 0) FROM pg_sequences
		   WHERE schemaname = 'acme_migrate' AND sequencename LIKE 'capture_log%'}),
	'>', 0,
	'writes during the copy were captured');

# worker 1 keeps catching up while the job is copied, for seconds
ok( wait_for($node, 
		q{SELECT workers = 1 AND activity LIKE '%catching up%' AND capture_backlog < 1000
			FROM acme_migrate.progress WHERE job = 'online'}, 30),
	'one worker catches up, the backlog stays small');
my @backlog;
for my $i (1 .. 4)
{
	usleep(700_000);
	push @backlog,
	  $node->safe_psql('postgres',
		q{SELECT workers || ' worker, backlog ' || capture_backlog || ', lag '
			|| coalesce(round(extract(epoch FROM capture_lag) * 1000)::text || ' ms', '-')
			FROM acme_migrate.progress WHERE job = 'online'});
}
diag("while copied: " . join('; ', @backlog));
is($node->safe_psql('postgres',
		q{SELECT workers FROM acme_migrate.progress WHERE job = 'online'}),
	'1', 'the catch-up worker is still there seconds after the copy ended');

ok($pgbench->pumpable, 'pgbench still runs at cut-over');
my $t_cut = time();
my $cut = $node->safe_psql(
	'postgres', q{
	SELECT attempts, extract(epoch FROM lock_held) * 1000, changes_drained, verified
	  FROM acme_migrate_cutover('online', lock_timeout => '200 ms',
			max_lock_time => '1 s', max_attempts => 50,
			then_sql => $$CREATE TABLE dst_at_cutover AS TABLE dst;
				ALTER TABLE src RENAME TO src_old;
				ALTER TABLE dst RENAME TO src$$)});
my ($attempts, $held_ms, $drained, $verified) = split /\|/, $cut;
diag(sprintf("cut-over %.1f s after pgbench started: %d attempt(s), lock held %.1f ms, "
		  . "%d changes drained, verified %s (call took %.2f s)",
		$t_cut - $t_pgbench, $attempts, $held_ms, $drained, $verified, time() - $t_cut));
is($verified, 't', 'cut-over verified the drained keys');
cmp_ok($held_ms, '<', 1000, "lock held under 1 s (goal 100 ms; held $held_ms ms)");
ok($pgbench->pumpable, 'pgbench still runs after the cut-over');
is( $node->safe_psql(
		'postgres', q{
	SELECT count(*) = max(attempt) AND bool_or(outcome = 'done')
		   AND count(*) FILTER (WHERE outcome = 'done') = 1
		   AND max(lock_held) FILTER (WHERE outcome = 'done') < interval '1 s'
	  FROM acme_migrate.cutovers c JOIN acme_migrate.jobs j USING (job_id)
	 WHERE j.job_name = 'online' AND c.operation = 'cutover'}),
	't',
	'every attempt is in acme_migrate.cutovers, the last one done');
is($node->safe_psql('postgres',
		q{SELECT state FROM acme_migrate.jobs WHERE job_name = 'online'}),
	'cut_over', 'state cut_over');
is(triggers_on($node, 'src_old'), '0', 'no capture trigger left on the old source');
is(triggers_on($node, 'src'), '2', 'reverse capture triggers on the new table');
is( $node->safe_psql(
		'postgres', q{SELECT count(*) FROM acme_migrate.capture_log
		   WHERE direction = 'f'}),
	'0', 'the forward capture log is empty');

# pgbench goes on writing, now to the new table
$pgbench->finish;
my $pgb_rc = $pgbench->full_result(0) >> 8;
is($pgb_rc, 0, 'pgbench exited with status 0');
unlike($pgb_err, qr/error|abort/i, 'pgbench reported no error and no aborted client');
like($pgb_out, qr/number of failed transactions: 0 /,
	'pgbench: no failed transaction');
my ($processed) = $pgb_out =~ /number of transactions actually processed: (\d+)/;
my ($tps) = $pgb_out =~ /tps = ([\d.]+)/;
diag("pgbench: $processed transactions, tps $tps");
note($pgb_err) if $pgb_err ne '';
cmp_ok(
	$node->safe_psql(
		'postgres', q{SELECT count(*) FROM acme_migrate.capture_log
		   WHERE direction = 'r'}),
	'>', 0,
	'writes made to the new table after cut-over were captured for the way back');

# the oracle: the old source mapped, as it was at cut-over, is the target
# as it was at cut-over
is( $node->safe_psql(
		'postgres', q{
	SELECT (SELECT count(*) FROM (SELECT id, a + 1000, status, amount, note FROM src_old
								  EXCEPT ALL SELECT * FROM dst_at_cutover) m),
		   (SELECT count(*) FROM (SELECT * FROM dst_at_cutover EXCEPT ALL
								  SELECT id, a + 1000, status, amount, note FROM src_old) e),
		   (SELECT count(*) FROM src_old) = (SELECT count(*) FROM dst_at_cutover)}),
	'0|0|t',
	'target at cut-over = mapped source at cut-over (EXCEPT ALL both ways, same count)');
is( $node->safe_psql(
		'postgres', qq{
	SELECT count(*) FILTER (WHERE id < 0) > 0,
		   count(*) FILTER (WHERE length(note) > 2000) > 0,
		   count(*) FILTER (WHERE id > $nrows) > 0,
		   count(*) FILTER (WHERE status = 'paid') > 0,
		   count(*) FILTER (WHERE id > 0) < $nrows + (SELECT count(*) FILTER (WHERE id > $nrows) FROM src_old)
	  FROM src_old}),
	't|t|t|t|t',
	'the source saw moved keys, TOASTed values, inserts, updates and deletes');

######################################################################
# 2. rollback after cut-over
######################################################################

# marked writes to the new table: an insert, an update and a delete of
# rows that the old table has too
$node->safe_psql(
	'postgres', q{
	CREATE TABLE marks AS
	SELECT (SELECT min(id) FROM src WHERE id IN (SELECT id FROM src_old)) AS updated_id,
		   (SELECT max(id) FROM src WHERE id > 0
			  AND id IN (SELECT id FROM src_old)) AS deleted_id;
	INSERT INTO src (id, a, status, amount, note) VALUES (20000001, 1777, 'rolled', 1.5, 'after cut-over');
	UPDATE src SET note = 'updated after cut-over' WHERE id = (SELECT updated_id FROM marks);
	DELETE FROM src WHERE id = (SELECT deleted_id FROM marks);
});
my $rb = $node->safe_psql(
	'postgres', q{
	SELECT rows_deleted, rows_restored, changes_returned, target_hash_equal
	  FROM acme_migrate_rollback('online',
			then_sql => $$ALTER TABLE src RENAME TO dst; ALTER TABLE src_old RENAME TO src$$)});
my ($rb_del, $rb_res, $rb_ret, $rb_eq) = split /\|/, $rb;
diag("rollback after cut-over: $rb_ret changes returned, verified $rb_eq");
is($rb_eq, 't', 'rollback after cut-over verified the replayed rows');
cmp_ok($rb_ret, '>', 3, 'the writes made after cut-over were returned');
is($node->safe_psql('postgres',
		q{SELECT state FROM acme_migrate.jobs WHERE job_name = 'online'}),
	'rolled_back', 'state rolled_back');
is(triggers_on($node, 'src') + triggers_on($node, 'dst'), 0, 'no capture trigger left');
is($node->safe_psql('postgres', 'SELECT count(*) FROM acme_migrate.capture_log'),
	'0', 'the capture log is empty');
is( $node->safe_psql(
		'postgres', q{
	SELECT (SELECT a || '|' || note FROM src WHERE id = 20000001),
		   (SELECT note FROM src WHERE id = (SELECT updated_id FROM marks)),
		   (SELECT count(*) FROM src WHERE id = (SELECT deleted_id FROM marks))}),
	'777|after cut-over|updated after cut-over|0',
	'the marked insert, update and delete made after cut-over are in the old table');
is( $node->safe_psql(
		'postgres', q{
	SELECT (SELECT count(*) FROM (SELECT id, a + 1000, status, amount, note FROM src
								  EXCEPT ALL SELECT * FROM dst) m),
		   (SELECT count(*) FROM (SELECT * FROM dst EXCEPT ALL
								  SELECT id, a + 1000, status, amount, note FROM src) e),
		   (SELECT count(*) FROM src) = (SELECT count(*) FROM dst)}),
	'0|0|t',
	'after rollback: mapped source = target (EXCEPT ALL both ways, same count)');
is( $node->safe_psql(
		'postgres', q{SELECT missing, extra, changed, equal
		   FROM acme_migrate_reconcile('online')}),
	'0|0|0|t',
	'acme_migrate_reconcile: source and target equal after rollback');

######################################################################
# 3. rollback before cut-over
######################################################################

$node->safe_psql(
	'postgres', q{
	CREATE TABLE src2 (id integer PRIMARY KEY, v text NOT NULL, note text);
	INSERT INTO src2 SELECT g, 'v' || g,
		   CASE WHEN g % 40 = 0 THEN repeat(md5(g::text), 100) END
	  FROM generate_series(1, 10000) g;
	CREATE TABLE dst2 (id integer PRIMARY KEY, v text NOT NULL, note text);
	-- rows the target held before the job: keys the copy overwrites, keys
	-- catch-up will overwrite or delete, keys the source never has
	INSERT INTO dst2 SELECT g, 'old ' || g, 'pre-job' FROM generate_series(1, 300) g;
	INSERT INTO dst2 SELECT g, 'old ' || g, repeat('x', 3000) FROM generate_series(20001, 20200) g;
	CREATE TABLE dst2_pre AS TABLE dst2;
	SELECT acme_migrate_create(job => 'before', source => 'src2', target => 'dst2',
		columns => '{"v": "upper(v)"}', batch_size => 1000, capture_changes => true);
	CALL acme_migrate_run('before');
});
is($node->safe_psql('postgres',
		q{SELECT state FROM acme_migrate.jobs WHERE job_name = 'before'}),
	'copied', 'job "before" copied');
$node->safe_psql(
	'postgres', q{
	UPDATE src2 SET v = v || '!' WHERE id % 100 = 0;
	DELETE FROM src2 WHERE id IN (5, 6, 7, 500);
	INSERT INTO src2 VALUES (20001, 'new 20001', NULL), (20300, 'new 20300', NULL);
	UPDATE src2 SET id = 20002 WHERE id = 8;   -- over a pre-job target row
	DELETE FROM src2 WHERE id = 20002;          -- and the pre-job row goes with it
});
cmp_ok($node->safe_psql('postgres', "SELECT acme_migrate_catch_up('before')"),
	'>', 100, 'catch-up applied the writes');
is( $node->safe_psql(
		'postgres', q{
	SELECT count(*) FROM (SELECT id, upper(v), note FROM src2
						  EXCEPT ALL SELECT * FROM dst2) m},
	),
	'0',
	'before rollback the target holds the mapped source');
is( $node->safe_psql(
		'postgres', q{SELECT count(*) FROM dst2 WHERE id = 20002}),
	'0', 'catch-up deleted a pre-job target row (its key was written in the source)');
my $rb2 = $node->safe_psql(
	'postgres', q{
	SELECT rows_deleted > 0, rows_restored > 0, changes_returned, target_hash_equal
	  FROM acme_migrate_rollback('before')});
is($rb2, 't|t|0|t', 'rollback before cut-over: rows deleted and restored, target_hash_equal');
is( $node->safe_psql(
		'postgres', q{
	SELECT (SELECT count(*) FROM (SELECT * FROM dst2 EXCEPT ALL SELECT * FROM dst2_pre) a),
		   (SELECT count(*) FROM (SELECT * FROM dst2_pre EXCEPT ALL SELECT * FROM dst2) b)}),
	'0|0',
	'the target equals its pre-job content (EXCEPT ALL both ways)');
is(triggers_on($node, 'src2'), '0', 'no capture trigger left on the source');
is($node->safe_psql('postgres',
		q{SELECT state FROM acme_migrate.jobs WHERE job_name = 'before'}),
	'rolled_back', 'state rolled_back');

######################################################################
# 4. cut-over under unthrottled writes
######################################################################

$node->safe_psql(
	'postgres', q{
	CREATE TABLE src3 (id integer PRIMARY KEY, n bigint NOT NULL, note text);
	INSERT INTO src3 SELECT g, 0, md5(g::text) FROM generate_series(1, 5000) g;
	CREATE TABLE dst3 (id integer PRIMARY KEY, n bigint NOT NULL, note text);
});
my $script3 = "$PostgreSQL::Test::Utils::tmp_check/online_hot.pgbench";
PostgreSQL::Test::Utils::append_to_file(
	$script3, q{\set x random(1, 5000)
UPDATE src3 SET n = n + 1, note = md5(random()::text) WHERE id = :x;
});
my $drained_total = 0;
for my $round (1 .. 3)
{
	$node->safe_psql(
		'postgres', q{
		SET client_min_messages = warning;
		DROP TABLE IF EXISTS snap_src, snap_dst;
		TRUNCATE dst3;
		SELECT acme_migrate_drop(job_name) FROM acme_migrate.jobs WHERE job_name = 'hot';
		SELECT acme_migrate_create(job => 'hot', source => 'src3', target => 'dst3',
			columns => '{"n": "n * 2"}', capture_changes => true);
		CALL acme_migrate_run('hot');
	});
	my ($o3, $e3) = ('', '');
	my $pgb3 = IPC::Run::start(
		[
			'pgbench', '-n', '-c', '3', '-j', '1', '-T', '4', '-f', $script3,
			$node->connstr('postgres')
		],
		'<', \undef, '>', \$o3, '2>', \$e3);
	usleep(1_000_000);
	# a writer whose transaction is open when the cut-over asks for the
	# lock: its change commits after the catch-up, so it is drained under
	# the lock
	my ($wo, $we) = ('', '');
	my $writer = IPC::Run::start(
		[
			'psql', '-X', '-q', '-d', $node->connstr('postgres'),
			'-c', 'BEGIN', '-c', 'UPDATE src3 SET n = n + 100 WHERE id = 1',
			'-c', "SELECT pg_sleep(1.5), 'open writer'", '-c', 'COMMIT'
		],
		'<', \undef, '>', \$wo, '2>', \$we);
	ok( wait_for($node, 
			q{SELECT count(*) = 1 FROM pg_stat_activity
			   WHERE query LIKE '%open writer%' AND wait_event = 'PgSleep'}, 30),
		"round $round: a writer holds its transaction open");
	my $r = $node->safe_psql(
		'postgres', q{
		SELECT changes_drained, verified, extract(epoch FROM lock_held) * 1000
		  FROM acme_migrate_cutover('hot', lock_timeout => '5 s', then_sql =>
			$$CREATE TABLE snap_src AS TABLE src3; CREATE TABLE snap_dst AS TABLE dst3$$)});
	$pgb3->finish;
	$writer->finish;
	my ($dr, $ver, $held3) = split /\|/, $r;
	cmp_ok($dr, '>=', 1, "round $round: the open writer's change was drained under the lock");
	$drained_total += $dr;
	diag("unthrottled round $round: $dr changes drained under the lock, held $held3 ms, verified $ver");
	is($ver, 't', "round $round: cut-over verified under unthrottled writes");
	unlike($e3, qr/error|abort/i, "round $round: no pgbench error");
	is( $node->safe_psql(
			'postgres', q{
		SELECT (SELECT count(*) FROM (SELECT id, n * 2, note FROM snap_src
									  EXCEPT ALL SELECT * FROM snap_dst) m),
			   (SELECT count(*) FROM (SELECT * FROM snap_dst EXCEPT ALL
									  SELECT id, n * 2, note FROM snap_src) e)}),
		'0|0',
		"round $round: target = mapped source under the lock (EXCEPT ALL both ways)");
}
note("changes drained under the lock in 3 rounds: $drained_total");

$node->stop;
done_testing();
