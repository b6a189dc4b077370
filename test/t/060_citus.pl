# acme_migrate on Citus: a coordinator and two workers.
#
# Skipped, with the reason, when the citus extension is not installed on
# this machine.  Otherwise: jobs copy a local table into a distributed one,
# a distributed table into a co-located one and into one that is not
# co-located, by acme_migrate_run and by background workers; each target
# is compared with its source by an EXCEPT ALL oracle run through Citus,
# and by acme_migrate_reconcile.  Nothing lands in the coordinator's shell
# tables.  acme_migrate_table_hash of a distributed table equals the hash
# of the same rows in a local table, summed from the shards on the workers
# when acme_migrate is installed there and read through Citus when not.
# Capture of a distributed table is refused.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);
use IPC::Run;

my $nrows = 20_000;

# Is Citus here?  Ask a throwaway server that does not preload it.
my $probe = PostgreSQL::Test::Cluster->new('probe');
$probe->init;
$probe->start;
my $available = $probe->safe_psql('postgres',
	"SELECT count(*) FROM pg_available_extensions WHERE name = 'citus'");
$probe->stop;
plan skip_all =>
  'citus is not installed: no citus extension in pg_available_extensions of '
  . $probe->config_data('--sharedir')
  if $available eq '0';

my @nodes;
for my $name ('coordinator', 'worker1', 'worker2')
{
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	$node->append_conf(
		'postgresql.conf', q{
shared_preload_libraries = 'citus,acme_migrate'
max_prepared_transactions = 100
max_worker_processes = 32
citus.shard_count = 8
citus.node_conninfo = 'sslmode=disable'
fsync = off
});
	$node->start;
	push @nodes, $node;
}
my ($coord, $w1, $w2) = @nodes;

my ($ret, $out, $err) = $coord->psql('postgres', 'CREATE EXTENSION citus');
plan skip_all => "citus is not installed: CREATE EXTENSION citus failed: $err"
  if $ret != 0;
$_->safe_psql('postgres', 'CREATE EXTENSION citus') for ($w1, $w2);

my $host = $coord->host;
$coord->safe_psql(
	'postgres', qq{
	SELECT citus_set_coordinator_host('$host', ${\ $coord->port});
	SELECT citus_add_node('$host', ${\ $w1->port});
	SELECT citus_add_node('$host', ${\ $w2->port});
	-- propagated by Citus to the workers: acme_migrate is installed there too
	CREATE EXTENSION acme_migrate;
});
is( $coord->safe_psql(
		'postgres', q{
	SELECT string_agg(result, ',') FROM run_command_on_workers(
		$$SELECT count(*) FROM pg_extension WHERE extname = 'acme_migrate'$$)}),
	'1,1',
	'acme_migrate is installed on both workers');

# the source rows, local, and the same rows distributed
$coord->safe_psql(
	'postgres', qq{
	CREATE TABLE src_local (id bigint PRIMARY KEY, a integer NOT NULL,
		amount numeric(12,2), note text);
	INSERT INTO src_local SELECT g, g % 97, round(g * 1.37, 2),
		CASE WHEN g % 11 = 0 THEN NULL ELSE md5(g::text) END
	FROM generate_series(1, $nrows) g;
	CREATE TABLE d_src (LIKE src_local INCLUDING ALL);
	SELECT create_distributed_table('d_src', 'id');
	INSERT INTO d_src SELECT * FROM src_local;

	-- targets: from local, co-located, not co-located (other shard count)
	CREATE TABLE d_from_local (LIKE src_local INCLUDING ALL);
	SELECT create_distributed_table('d_from_local', 'id');
	CREATE TABLE d_coloc (LIKE src_local INCLUDING ALL);
	SELECT create_distributed_table('d_coloc', 'id', colocate_with => 'd_src');
	CREATE TABLE d_other (LIKE src_local INCLUDING ALL);
	SELECT create_distributed_table('d_other', 'id', colocate_with => 'none',
		shard_count => 5);
	CREATE TABLE d_workers (LIKE src_local INCLUDING ALL);
	SELECT create_distributed_table('d_workers', 'id', colocate_with => 'd_src');
});

# an oracle through Citus: rows missing from the target, rows extra in it
sub oracle
{
	my ($src, $dst) = @_;
	return $coord->safe_psql(
		'postgres', qq{
		SELECT (SELECT count(*) FROM (SELECT * FROM $src EXCEPT ALL SELECT * FROM $dst) x),
			   (SELECT count(*) FROM (SELECT * FROM $dst EXCEPT ALL SELECT * FROM $src) x),
			   (SELECT count(*) FROM $dst)});
}

# the job, its oracle, its reconciliation, and an empty shell
sub check_job
{
	my ($job, $src, $dst, $what) = @_;
	is(oracle($src, $dst), "0|0|$nrows",
		"$what: EXCEPT ALL through Citus finds the target equal to the source");
	is( $coord->safe_psql(
			'postgres', qq{
		SELECT j.state, j.rows_copied, r.equal, r.source_rows, r.target_rows,
			   r.missing, r.extra, r.changed
		  FROM acme_migrate.jobs j, acme_migrate_reconcile('$job') r
		 WHERE j.job_name = '$job'}),
		"done|$nrows|t|$nrows|$nrows|0|0|0",
		"$what: job done, acme_migrate_reconcile equal");
	is($coord->safe_psql('postgres', "SELECT pg_relation_size('$dst')"),
		'0', "$what: nothing written into the coordinator's shell table");
	is( $coord->safe_psql(
			'postgres', qq{
		SELECT r.method, r.remote_mode FROM acme_migrate.reconcile_runs r
		  JOIN acme_migrate.jobs j USING (job_id)
		 WHERE j.job_name = '$job' ORDER BY r.run_id DESC LIMIT 1}),
		'hash_ranges|citus_shards',
		"$what: reconcile summed the key ranges' hashes on the shards");
}

sub run_job
{
	my ($job, $src, $dst) = @_;
	$coord->safe_psql(
		'postgres', qq{
		SELECT acme_migrate_create(job => '$job', source => '$src',
			target => '$dst', batch_size => 3000);
		CALL acme_migrate_run('$job');
	});
}

run_job('from_local', 'src_local', 'd_from_local');
check_job('from_local', 'src_local', 'd_from_local',
	'local -> distributed');
# co-located: rows already in the target (stale values) are overwritten
$coord->safe_psql('postgres',
	"INSERT INTO d_coloc SELECT id, -1, 0, 'stale' FROM src_local WHERE id % 500 = 3");
run_job('coloc', 'd_src', 'd_coloc');
check_job('coloc', 'd_src', 'd_coloc',
	'distributed -> co-located, some keys already there');
run_job('other', 'd_src', 'd_other');
check_job('other', 'd_src', 'd_other', 'distributed -> not co-located');

# which path each took: pushed down only between co-located tables
sub path_of
{
	my ($job, $src, $dst) = @_;
	my ($ret, $out, $err) = $coord->psql(
		'postgres', qq{
		TRUNCATE $dst;
		SELECT acme_migrate_create(job => '$job', source => '$src', target => '$dst');
		SET client_min_messages = debug1;
		SELECT acme_migrate_batch('$job');});
	return $err =~ /copies key ranges by INSERT ... SELECT pushed down to (\d+) shard pairs/
	  ? "pushdown $1" : 'keyset';
}
is(path_of('coloc_p', 'd_src', 'd_coloc'), 'pushdown 8',
	'co-located job: batches pushed down to the 8 shard pairs');
is(path_of('other_p', 'd_src', 'd_other'), 'keyset',
	'not co-located job: keyset batches through Citus');
is(path_of('local_p', 'src_local', 'd_from_local'), 'keyset',
	'local -> distributed job: keyset batches through Citus');

# a mapping with a filter and transformed columns is pushed down as well,
# a transformed distribution column is not
$coord->safe_psql(
	'postgres', q{
	CREATE TABLE d_map (id bigint PRIMARY KEY, a2 integer, total_cents bigint, note text);
	SELECT create_distributed_table('d_map', 'id', colocate_with => 'd_src');
});
($ret, $out, $err) = $coord->psql(
	'postgres', q{
	SELECT acme_migrate_create(job => 'mapped', source => 'd_src', target => 'd_map',
		columns => '{"a2": "a * 2", "total_cents": "(amount * 100)::bigint"}',
		filter => 'a % 3 <> 0', batch_size => 500);
	SET client_min_messages = debug1;
	CALL acme_migrate_run('mapped');});
like($err, qr/pushed down to 8 shard pairs/, 'a job with a filter and transforms is pushed down');
is( $coord->safe_psql(
		'postgres', q{
	SELECT (SELECT count(*) FROM (SELECT id, a * 2, (amount * 100)::bigint, note FROM d_src WHERE a % 3 <> 0
								  EXCEPT ALL SELECT * FROM d_map) x),
		   (SELECT count(*) FROM (SELECT * FROM d_map EXCEPT ALL
								  SELECT id, a * 2, (amount * 100)::bigint, note FROM d_src WHERE a % 3 <> 0) x),
		   (SELECT count(*) FROM d_map) > 0}),
	'0|0|t',
	'pushed-down job with a filter and transforms: the target equals the mapped source');
is( $coord->safe_psql('postgres',
		"SELECT equal FROM acme_migrate_reconcile('mapped')"),
	't', 'and acme_migrate_reconcile says equal');
($ret, $out, $err) = $coord->psql(
	'postgres', q{
	CREATE TABLE d_moved (id bigint NOT NULL, a2 integer, total_cents bigint, note text);
	SELECT create_distributed_table('d_moved', 'total_cents', colocate_with => 'd_src');
	SELECT acme_migrate_create(job => 'moved', source => 'd_src', target => 'd_moved',
		columns => '{"a2": "a", "total_cents": "(amount * 100)::bigint"}',
		on_conflict => 'error');
	SET client_min_messages = debug1;
	CALL acme_migrate_run('moved');});
like($err, qr/distribution column "total_cents" is not the source's "id" unchanged/,
	'a target distributed on a computed column is copied through Citus, not pushed down');
is(oracle(q{(SELECT id, a, (amount * 100)::bigint, note FROM d_src) s}, 'd_moved'),
	"0|0|$nrows", 'and its target equals the mapped source');

$coord->safe_psql('postgres', q{
	SELECT acme_migrate_drop(j) FROM unnest(ARRAY['coloc_p', 'other_p', 'local_p']) j;
	TRUNCATE d_coloc; INSERT INTO d_coloc SELECT * FROM d_src;
	TRUNCATE d_other; INSERT INTO d_other SELECT * FROM d_src;
	TRUNCATE d_from_local; INSERT INTO d_from_local SELECT * FROM src_local;
});

# exactly once on the pushdown path: a range that fails leaves the ranges
# committed before it, with their checkpoint, and nothing of itself
$coord->safe_psql(
	'postgres', qq{
	CREATE TABLE d_fail (LIKE src_local INCLUDING ALL);
	SELECT create_distributed_table('d_fail', 'id', colocate_with => 'd_src');
	ALTER TABLE d_fail ADD CONSTRAINT not_yet CHECK (id <> ${\ int($nrows * 0.7)});
	SELECT acme_migrate_create(job => 'fail', source => 'd_src', target => 'd_fail',
		batch_size => 300);
});
($ret, $out, $err) = $coord->psql('postgres', "CALL acme_migrate_run('fail')");
like($err, qr/violates check constraint "not_yet/, 'a range fails on a CHECK constraint');
my ($state, $last, $copied) = split /\|/, $coord->safe_psql('postgres',
	"SELECT state, last_key[1], rows_copied FROM acme_migrate.jobs WHERE job_name = 'fail'");
is( $coord->safe_psql(
		'postgres', qq{
	SELECT '$state', (SELECT count(*) FROM d_fail) = (SELECT count(*) FROM d_src WHERE id <= $last),
		   (SELECT count(*) FROM (SELECT * FROM d_fail EXCEPT ALL SELECT * FROM d_src WHERE id <= $last) x),
		   (SELECT count(*) FROM d_fail) > 0,
		   (SELECT count(*) FROM d_fail) < (SELECT count(*) FROM d_src),
		   (SELECT count(*) FROM d_fail) = $copied}),
	'running|t|0|t|t|t',
	'after the failure: the target holds exactly the source rows up to the checkpoint');
$coord->safe_psql('postgres', q{
	ALTER TABLE d_fail DROP CONSTRAINT not_yet;
	CALL acme_migrate_run('fail');
});
check_job('fail', 'd_src', 'd_fail', 'distributed -> co-located, resumed after a failure');

# exactly once across a crash of the coordinator in the middle of a
# pushed-down job: after the restart and Citus's recovery of the prepared
# transactions (recover_prepared_transactions), the target holds exactly the
# source rows up to the checkpoint; the job then resumes to an equal target
$coord->safe_psql(
	'postgres', q{
	CREATE TABLE d_crash (LIKE src_local INCLUDING ALL);
	SELECT create_distributed_table('d_crash', 'id', colocate_with => 'd_src');
	SELECT acme_migrate_create(job => 'crash', source => 'd_src', target => 'd_crash',
		batch_size => 10);
});
my ($run_out, $run_err) = ('', '');
my $run = IPC::Run::start(
	[ 'psql', '-X', '-d', $coord->connstr('postgres'), '-c', "CALL acme_migrate_run('crash')" ],
	'<', \undef, '>', \$run_out, '2>', \$run_err);
my $t0 = time();
while (time() - $t0 < 60)
{
	last if $coord->safe_psql('postgres',
		"SELECT rows_copied > 2000 FROM acme_migrate.jobs WHERE job_name = 'crash'") eq 't';
	usleep(20_000);
}
$coord->stop('immediate');
eval { $run->finish; };
$coord->start;
$coord->safe_psql('postgres', 'SELECT recover_prepared_transactions()');
my ($cstate, $clast, $ccopied) = split /\|/, $coord->safe_psql('postgres',
	"SELECT state, last_key[1], rows_copied FROM acme_migrate.jobs WHERE job_name = 'crash'");
is( $coord->safe_psql(
		'postgres', qq{
	SELECT '$cstate', (SELECT count(*) FROM d_crash) = $ccopied,
		   (SELECT count(*) FROM (SELECT * FROM d_src WHERE id <= $clast EXCEPT ALL SELECT * FROM d_crash) x),
		   (SELECT count(*) FROM (SELECT * FROM d_crash EXCEPT ALL SELECT * FROM d_src WHERE id <= $clast) x),
		   $ccopied > 0 AND $ccopied < $nrows}),
	'running|t|0|0|t',
	"after a crash mid-job: the target is the source up to the checkpoint ($ccopied rows, key $clast)");
$coord->safe_psql('postgres', "CALL acme_migrate_run('crash')");
check_job('crash', 'd_src', 'd_crash', 'distributed -> co-located, resumed after a crash');

# The pushdown path keeps its connections to the workers from range to
# range (else every range opens new backends on the workers), and gives
# the session's citus.max_cached_conns_per_worker back when the job ends,
# also when it fails.  Sessions opened on worker1 (pg_stat_database) during
# a job of 10 ranges with a pool of 4 connections per worker, opened at once
# (slow start 0): each range would open 3 new ones if they were not kept.
sub sessions_on_w1
{
	return $w1->safe_psql('postgres',
		"SELECT sessions FROM pg_stat_database WHERE datname = 'postgres'");
}
$coord->safe_psql(
	'postgres', q{
	CREATE TABLE d_keep (LIKE src_local INCLUDING ALL);
	SELECT create_distributed_table('d_keep', 'id', colocate_with => 'd_src');
	CREATE TABLE d_tail (LIKE src_local INCLUDING ALL);
	SELECT create_distributed_table('d_tail', 'id', colocate_with => 'd_src');
	CREATE TABLE d_timed (LIKE src_local INCLUDING ALL);
	SELECT create_distributed_table('d_timed', 'id', colocate_with => 'd_src');
	SELECT acme_migrate_create(job => 'keep', source => 'd_src', target => 'd_keep',
		batch_size => 250);
});
my $sessions0 = sessions_on_w1();
($ret, $out, $err) = $coord->psql(
	'postgres', q{
	SET citus.max_adaptive_executor_pool_size = 4;
	SET citus.executor_slow_start_interval = 0;
	CALL acme_migrate_run('keep');
	SELECT 'cached ' || current_setting('citus.max_cached_conns_per_worker');});
my $opened = sessions_on_w1() - $sessions0;
ok($opened <= 8,
	"a job of about 10 pushed-down ranges opened $opened sessions on worker1 (its pool of 4 and the query counting them), not 3 more per range");
check_job('keep', 'd_src', 'd_keep', 'distributed -> co-located, connections kept');
$coord->safe_psql('postgres', q{
	TRUNCATE d_keep;
	SELECT acme_migrate_drop('keep');
	SELECT acme_migrate_create(job => 'keep', source => 'd_src', target => 'd_keep',
		batch_size => 250);
});
my $first = $ret . ':' . join(',', $out =~ /^cached (\d+)$/mg);
($ret, $out, $err) = $coord->psql(
	'postgres', q{
	SET citus.max_cached_conns_per_worker = 2;
	CALL acme_migrate_run('keep');
	SELECT 'cached ' || current_setting('citus.max_cached_conns_per_worker');});
is($first . ',' . $ret . ':' . join(',', $out =~ /^cached (\d+)$/mg), '0:1,0:2',
	'after a pushed-down job the session has its citus.max_cached_conns_per_worker again (default 1; 2 when set)');

($ret, $out, $err) = $coord->psql(
	'postgres', qq{
	ALTER TABLE d_tail ADD CONSTRAINT not_yet CHECK (id <> ${\ int($nrows * 0.7)});
	SELECT acme_migrate_create(job => 'tail', source => 'd_src', target => 'd_tail',
		batch_size => 245);
	CALL acme_migrate_run('tail');
	SELECT 'cached ' || current_setting('citus.max_cached_conns_per_worker');},
	on_error_stop => 0);
like($err, qr/violates check constraint "not_yet/, 'a pushed-down job fails mid-way');
is(join(',', $out =~ /^cached (\d+)$/mg), '1', 'and the session has its citus.max_cached_conns_per_worker again');

# A range holds about batch_size rows per shard; the tail after the last
# such range goes into it when it holds less than half as many.  With
# batch_size 190 (1520 rows a range on 8 shards) the sample takes every
# page, so the ranges are exact: 13 of 1520 rows, and a tail of 240 that
# joins the 13th.
$coord->safe_psql('postgres', q{
	ALTER TABLE d_tail DROP CONSTRAINT not_yet;
	TRUNCATE d_tail;
	SELECT acme_migrate_drop('tail');
	SELECT acme_migrate_create(job => 'tail', source => 'd_src', target => 'd_tail',
		batch_size => 190);
	CALL acme_migrate_run('tail');
});
is( $coord->safe_psql(
		'postgres', q{
	SELECT count(*), min(b.rows_read), max(b.rows_read), sum(b.rows_read)
	  FROM acme_migrate.batches b JOIN acme_migrate.jobs j USING (job_id)
	 WHERE j.job_name = 'tail'}),
	"13|1520|1760|$nrows",
	'pushed-down job: 13 ranges of 1520 rows, the last with the short tail');
check_job('tail', 'd_src', 'd_tail', 'distributed -> co-located, tail joined');

# batch_time_target sizes the pushed-down ranges too: a target of 1 ms,
# which no range meets, halves them down to a tenth of batch_size (20,000
# rows in ranges of 4000 without it)
$coord->safe_psql('postgres', q{
	SELECT acme_migrate_create(job => 'timed', source => 'd_src', target => 'd_timed',
		batch_size => 500, batch_time_target => '1 ms');
	CALL acme_migrate_run('timed');
});
is( $coord->safe_psql(
		'postgres', q{
	SELECT count(*) > 20, min(b.rows_read) < 500 * 8 / 4, sum(b.rows_read)
	  FROM acme_migrate.batches b JOIN acme_migrate.jobs j USING (job_id)
	 WHERE j.job_name = 'timed'}),
	"t|t|$nrows",
	'pushed-down job under batch_time_target: ranges made smaller as batches run over it');
check_job('timed', 'd_src', 'd_timed', 'distributed -> co-located, batch_time_target');

# background workers on a distributed -> distributed job
$coord->safe_psql(
	'postgres', q{
	SELECT acme_migrate_create(job => 'bg', source => 'd_src',
		target => 'd_workers', batch_size => 2000);
});
# the split into the workers' ranges samples at most the pages a batch's
# range would (1600 keys per 2000 rows a shard on 8 shards: 10%), not as
# many as the job's row estimate asks, which on Citus is its placeholder
# of 100,000 rows (16% for 8 ranges)
($ret, $out, $err) = $coord->psql(
	'postgres', q{
	SET citus.log_remote_commands = on;
	SELECT acme_migrate_start('bg', workers => 2);});
is($out, '2', 'two background workers on a distributed job');
my @pct = $err =~ /TABLESAMPLE system \('([0-9.]+)'::real\)/g;
ok(@pct == 8 && !grep({ $_ > 10 } @pct),
	'the split sampled each shard at 10% of its pages or less: ' . join(',', @pct));
is($coord->safe_psql('postgres', "SELECT acme_migrate_wait('bg', timeout => '3 min')"),
	'done', 'background workers finish the distributed job');
check_job('bg', 'd_src', 'd_workers', 'distributed -> co-located, workers');

# a few rows changed, none added or removed: only the hash sums of their
# key ranges tell, and only those ranges are merged
is( $coord->safe_psql(
		'postgres', q{
	UPDATE d_coloc SET amount = amount + 0.01 WHERE id IN (4321, 9876, 15001);
	SELECT changed, missing, extra FROM acme_migrate_reconcile('coloc');
	SELECT method, remote_mode, ranges_merged FROM acme_migrate.reconcile_runs ORDER BY run_id DESC LIMIT 1;
	UPDATE d_coloc c SET amount = s.amount FROM d_src s WHERE s.id = c.id AND c.id IN (4321, 9876, 15001);}),
	"3|0|0\nhash_ranges|citus_shards|3",
	'three rows changed in place: found by the ranges\' hash sums on the shards, three ranges merged');

# a difference is seen: remove and change rows behind the job's back
$coord->safe_psql(
	'postgres', q{
	DELETE FROM d_coloc WHERE id % 1000 = 7;
	UPDATE d_coloc SET note = 'changed' WHERE id % 1000 = 8;
});
# extra rows below the source's keys, source keys above the target's
$coord->safe_psql('postgres', qq{
	INSERT INTO d_coloc SELECT id - $nrows - 1, a, amount, note FROM d_src WHERE id % 2000 = 5;
	DELETE FROM d_coloc WHERE id > $nrows - 3;
});
# the oracles, through Citus: keys only in the source, only in the target,
# rows on both sides that differ
my $diff_oracle = q{
	SELECT (SELECT count(*) FROM (SELECT id FROM d_src EXCEPT ALL SELECT id FROM d_coloc) x),
		   (SELECT count(*) FROM (SELECT id FROM d_coloc EXCEPT ALL SELECT id FROM d_src) x),
		   (SELECT count(*) FROM (SELECT * FROM d_src WHERE id IN (SELECT id FROM d_coloc)
								  EXCEPT ALL SELECT * FROM d_coloc) x)};
my $expect_diff = $coord->safe_psql('postgres', $diff_oracle);
is($expect_diff, ($nrows / 1000 + 3) . '|' . ($nrows / 2000) . '|' . ($nrows / 1000),
	'rows removed, added and changed behind the job');
($ret, $out, $err) = $coord->psql(
	'postgres', q{
	SET citus.log_remote_commands = on;
	SELECT r.missing || '|' || r.extra || '|' || r.changed FROM acme_migrate_reconcile('coloc') r});
is($out, $expect_diff,
	'reconcile of a distributed target counts them as the EXCEPT ALL oracles do');
is( scalar(grep { /issuing .*acme_migrate_row_hash\(ROW\(/ } split /\n/, $err),
	16, 'the row hashes of both sides are summed on each of their 8 shards');
is( $coord->safe_psql(
		'postgres', q{
	WITH run AS (SELECT max(run_id) AS id FROM acme_migrate.reconcile_runs),
	listed AS (SELECT kind, (key->>'id')::bigint AS id FROM acme_migrate.diffs
				WHERE run_id = (SELECT id FROM run)),
	oracle AS (
		SELECT 'missing' AS kind, id FROM (SELECT id FROM d_src EXCEPT SELECT id FROM d_coloc) x
		UNION ALL SELECT 'extra', id FROM (SELECT id FROM d_coloc EXCEPT SELECT id FROM d_src) x
		UNION ALL SELECT 'changed', id FROM (SELECT * FROM d_src WHERE id IN (SELECT id FROM d_coloc)
											 EXCEPT SELECT * FROM d_coloc) x)
	SELECT (SELECT count(*) FROM (TABLE listed EXCEPT ALL TABLE oracle) x),
		   (SELECT count(*) FROM (TABLE oracle EXCEPT ALL TABLE listed) x),
		   (SELECT remote_mode FROM acme_migrate.reconcile_runs WHERE run_id = (SELECT id FROM run)),
		   (SELECT ranges_merged > 0 FROM acme_migrate.reconcile_runs WHERE run_id = (SELECT id FROM run))}),
	'0|0|citus_shards|t',
	'the differences it lists are exactly those the oracles find, merged from the differing ranges only');
is( $coord->safe_psql(
		'postgres', q{
	SET acme_migrate.remote_hashes = off;
	SELECT r.missing || '|' || r.extra || '|' || r.changed FROM acme_migrate_reconcile('coloc') r}),
	$expect_diff,
	'with acme_migrate.remote_hashes off the rows are read through Citus: the same counts');
is( $coord->safe_psql('postgres',
		"SELECT remote_mode IS NULL FROM acme_migrate.reconcile_runs ORDER BY run_id DESC LIMIT 1"),
	't', 'and that run does not say citus_shards');
$coord->safe_psql('postgres', "DELETE FROM d_coloc WHERE id < 0");

# table_hash: summed on the workers, equal to the local table's
my $local_hash =
  $coord->safe_psql('postgres', "SELECT row_count, hash FROM acme_migrate_table_hash('src_local')");
is( $coord->safe_psql('postgres',
		"SELECT row_count, hash FROM acme_migrate_table_hash('d_src')"),
	$local_hash,
	'table_hash of a distributed table equals the hash of the same rows stored locally');
is( $coord->safe_psql('postgres',
		"SELECT row_count FROM acme_migrate_table_hash('d_src')"),
	$coord->safe_psql('postgres', 'SELECT count(*) FROM d_src'),
	'table_hash row count equals count(*) through Citus');
($ret, $out, $err) = $coord->psql(
	'postgres', q{
	SET citus.log_remote_commands = on;
	SELECT row_count FROM acme_migrate_table_hash('d_src')});
is( scalar(() = $err =~ /acme_migrate_table_hash\('(?:public\.)?d_src_\d+'/g),
	8, 'table_hash of a distributed table hashes each of its 8 shards on a worker');
is( $coord->safe_psql(
		'postgres', q{
		SELECT sum(split_part(result, ',', 1)::bigint)
		  FROM run_command_on_shards('d_src',
			$$SELECT row_count || ',' || hash FROM acme_migrate_table_hash(%L::regclass)$$)}),
	$nrows,
	'the shards hash on the workers');

# range_hashes of a distributed table reads it through Citus: the ranges
# hold every row once, and hash as the same ranges of the local table
# range hashes of d_src at three bounds that differ from the local copy's
# (both ways), and the ranges
sub range_hashes_vs_local
{
	return $coord->safe_psql(
		'postgres', q{
	CREATE TEMP TABLE rd AS SELECT lo, hi, rows, hash FROM acme_migrate_range_hashes('d_src',
		bounds => '[{"id": 5000}, {"id": 10000}, {"id": 15000}]');
	CREATE TEMP TABLE rl AS SELECT lo, hi, rows, hash FROM acme_migrate_range_hashes('src_local',
		bounds => '[{"id": 5000}, {"id": 10000}, {"id": 15000}]');
	SELECT (SELECT count(*) FROM (TABLE rd EXCEPT ALL TABLE rl) x),
		   (SELECT count(*) FROM (TABLE rl EXCEPT ALL TABLE rd) x),
		   (SELECT count(*) FROM rd)});
}
is(range_hashes_vs_local(), '0|0|4',
	'range_hashes of a distributed table equal those of the local copy');
is( $coord->safe_psql('postgres',
		"SELECT sum(rows) FROM acme_migrate_range_hashes('d_src', chunks => 4)"),
	$nrows, 'range_hashes of a distributed table: every row once');
($ret, $out, $err) = $coord->psql(
	'postgres', q{
	SET citus.log_remote_commands = on;
	SELECT count(*) FROM acme_migrate_range_hashes('d_src',
		bounds => '[{"id": 5000}, {"id": 10000}, {"id": 15000}]')});
is( scalar(() = $err =~ /acme_migrate_range_hashes\('(?:public\.)?d_src_\d+'/g),
	8, 'range_hashes of a distributed table hashes each of its 8 shards on a worker');

# a reference table goes through Citus too
$coord->safe_psql(
	'postgres', q{
	CREATE TABLE r_copy (LIKE src_local INCLUDING ALL);
	SELECT create_reference_table('r_copy');
	INSERT INTO r_copy SELECT * FROM src_local;
});
is( $coord->safe_psql('postgres',
		"SELECT row_count, hash FROM acme_migrate_table_hash('r_copy')"),
	$local_hash,
	'table_hash of a reference table equals the local hash');

# Reconcile on the shards for keys other than a single integer column:
# text, uuid and composite (integer, text) keys, each a distributed table
# against a local one and against a distributed one (not co-located), equal
# and then with rows missing, extra and changed.  The buckets of key hashes
# are summed on the shards (acme_migrate.key_bucket), and only the rows of
# differing buckets are read, through Citus; the differences it lists are
# checked against FULL JOIN / EXCEPT oracles run through Citus.
my %kinds = (
	text => {
		cols => 'k text NOT NULL, a integer, note text, PRIMARY KEY (k)',
		keys => ['k'], dist => 'k',
		gen => q{'key-' || g}, extra => q{'extra-' || g}},
	uuid => {
		cols => 'k uuid NOT NULL, a integer, note text, PRIMARY KEY (k)',
		keys => ['k'], dist => 'k',
		gen => q{md5('u' || g)::uuid}, extra => q{md5('x' || g)::uuid}},
	comp => {
		cols => 'id integer NOT NULL, name text NOT NULL, a integer, note text, PRIMARY KEY (id, name)',
		keys => [ 'id', 'name' ], dist => 'id', dist2 => 'name',
		gen => q{g / 3, 'n' || g % 3}, extra => q{-g, 'x'}},
);
for my $kind (sort keys %kinds)
{
	my $k = $kinds{$kind};
	my $cols = $k->{cols};
	my $dist2 = $k->{dist2} // $k->{dist};
	$coord->safe_psql(
		'postgres', qq{
		CREATE TABLE kl_$kind ($cols);
		INSERT INTO kl_$kind SELECT $k->{gen}, g % 97,
			CASE WHEN g % 11 = 0 THEN NULL ELSE md5(g::text) END
		  FROM generate_series(1, $nrows) g;
		CREATE TABLE kd_$kind ($cols);
		SELECT create_distributed_table('kd_$kind', '$k->{dist}');
		INSERT INTO kd_$kind SELECT * FROM kl_$kind;
		CREATE TABLE kd2_$kind ($cols);
		SELECT create_distributed_table('kd2_$kind', '$dist2', colocate_with => 'none',
			shard_count => 5);
		INSERT INTO kd2_$kind SELECT * FROM kl_$kind;
		CREATE TABLE kl2_$kind ($cols);
		INSERT INTO kl2_$kind SELECT * FROM kl_$kind;
	});
}

# the differences an oracle finds between src and dst, through Citus, as
# (kind, key) rows that acme_migrate.diffs lists: keys only in src
# (missing), only in dst (extra), on both sides with rows that are
# distinct (changed, by a FULL JOIN)
sub key_oracle_sql
{
	my ($src, $dst, $keys) = @_;
	my $kl = join(', ', @$keys);
	my $on = join(' AND ', map { "s.$_ = d.$_" } @$keys);
	my $sk = join(', ', map { "s.$_" } @$keys);
	my $dk = join(', ', map { "d.$_" } @$keys);
	my $obj = sub {
		my $a = shift;
		'jsonb_build_object(' . join(', ', map { "'$_', $a.$_" } @$keys) . ')';
	};
	# materialized: Citus joins them on the coordinator, whatever their
	# distribution
	return qq{
		WITH s AS MATERIALIZED (SELECT * FROM $src), d AS MATERIALIZED (SELECT * FROM $dst)
		SELECT CASE WHEN d.$keys->[0] IS NULL THEN 'missing'
					WHEN s.$keys->[0] IS NULL THEN 'extra' ELSE 'changed' END AS kind,
			   CASE WHEN s.$keys->[0] IS NULL THEN ${\ $obj->('d')} ELSE ${\ $obj->('s')} END AS key
		  FROM s FULL JOIN d ON $on
		 WHERE (s.a, s.note) IS DISTINCT FROM (d.a, d.note)
			OR s.$keys->[0] IS NULL OR d.$keys->[0] IS NULL};
}

# reconcile src with dst; returns the summary, the run's method and mode,
# and the difference between what it listed and what the oracle finds
sub key_reconcile
{
	my ($src, $dst, $keys, $set) = @_;
	my $oracle = key_oracle_sql($src, $dst, $keys);
	my ($ret, $out, $err) = $coord->psql(
		'postgres', qq{
		SET citus.enable_repartition_joins = on;
		SET citus.log_remote_commands = on;
		SET client_min_messages = log;
		$set
		SELECT r.source_rows || '|' || r.target_rows || '|' || r.missing || '|' || r.extra
			|| '|' || r.changed || '|' || r.equal::text
		  FROM acme_migrate_reconcile(source => '$src', target => '$dst') r;
		SET citus.log_remote_commands = off;
		CREATE TEMP TABLE listed AS SELECT kind, key FROM acme_migrate.diffs
		 WHERE run_id = (SELECT max(run_id) FROM acme_migrate.reconcile_runs);
		CREATE TEMP TABLE oracle AS $oracle;
		SELECT (SELECT count(*) FROM (TABLE listed EXCEPT ALL TABLE oracle) x) || '|' ||
			   (SELECT count(*) FROM (TABLE oracle EXCEPT ALL TABLE listed) x) || '|' ||
			   (SELECT count(*) FROM oracle) || '|' ||
			   (SELECT coalesce(string_agg(kind || ':' || n, ',' ORDER BY kind), '')
				  FROM (SELECT kind, count(*) n FROM oracle GROUP BY kind) x);
		SELECT method || '|' || coalesce(remote_mode, 'none') || '|' || ranges_hashed
			|| '|' || ranges_merged
		  FROM acme_migrate.reconcile_runs ORDER BY run_id DESC LIMIT 1;});
	die "reconcile of $src and $dst failed: $err" if $ret != 0;
	my @lines = split /\n/, $out;
	my $first = grep { /issuing .*acme_migrate\.key_bucket\(.*GROUP BY/ } split /\n/, $err;
	my $second = grep { /issuing .*acme_migrate\.key_bucket\(.*=\)? ANY/ } split /\n/, $err;
	return (@lines, "$first|$second");
}

for my $kind (sort keys %kinds)
{
	my $keys = $kinds{$kind}{keys};
	my $pick = 'md5(' . join(q{ || '/' || }, map { "${_}::text" } @$keys) . ')';
	for my $pair ([ "kl_$kind", "kd_$kind", 'local -> distributed', 8 ],
		[ "kd_$kind", "kd2_$kind", 'distributed -> distributed', 13 ],
		[ "kd_$kind", "kl2_$kind", 'distributed -> local', 8 ])
	{
		my ($src, $dst, $what, $shards) = @$pair;
		# a parallel worker could read a local target: not on this path
		my $set = 'SET min_parallel_table_scan_size = 0;';
		my @r = key_reconcile($src, $dst, $keys, $set);
		is( join("\n", @r[ 0 .. 2 ]),
			"$nrows|$nrows|0|0|0|true\n0|0|0|\nhash_buckets|citus_shards|4096|0",
			"$kind key, $what, equal: equal, as the oracle says, key buckets summed on the shards");
		is($r[3], "$shards|0",
			"$kind key, $what, equal: key_bucket summed on each of the $shards shards, no rows read");

		# rows missing, extra and changed in the target
		$coord->safe_psql(
			'postgres', qq{
			DELETE FROM $dst WHERE $pick LIKE '00%';
			UPDATE $dst SET note = 'changed' WHERE $pick LIKE '01%';
			UPDATE $dst SET a = NULL WHERE $pick LIKE '020%';
			INSERT INTO $dst SELECT $kinds{$kind}{extra}, g, 'extra'
			  FROM generate_series(1, 25) g;
		});
		@r = key_reconcile($src, $dst, $keys, $set);
		my ($m, $e, $c) = $r[1] =~ /changed:(\d+),extra:(\d+),missing:(\d+)/
		  ? ($3, $2, $1) : (-1, -1, -1);
		ok($m > 20 && $c > 20 && $e == 25,
			"$kind key, $what: the oracle finds $m missing, $e extra, $c changed");
		is($r[0], "$nrows|" . ($nrows - $m + $e) . "|$m|$e|$c|false",
			"$kind key, $what, differences: reconcile counts them as the oracle does");
		like($r[1], qr/^0\|0\|/,
			"$kind key, $what, differences: it lists exactly the oracle's (kind, key) rows");
		my ($method, $mode, $hashed, $merged) = split /\|/, $r[2];
		ok( "$method|$mode" eq 'hash_buckets|citus_shards'
			  && $merged > 0 && $merged <= $m + $e + $c && $merged < $hashed / 4,
			"$kind key, $what, differences: summed on the shards, then $merged of $hashed buckets read ($r[2])");
		is($r[3], "$shards|$shards",
			"$kind key, $what, differences: key_bucket computed on each shard, in both reads");

		# as it was
		$coord->safe_psql('postgres', "TRUNCATE $dst; INSERT INTO $dst SELECT * FROM $src;");
	}
}

# an integer key, distributed source, local target that a parallel worker
# could read: the target is summed by the same SQL as the source, not by a
# worker hashing it in memory (whose sums would differ from the SQL's in
# every range, and send the whole comparison to a merge)
is( $coord->safe_psql(
		'postgres', q{
	SET min_parallel_table_scan_size = 0;
	SELECT r.equal FROM acme_migrate_reconcile(source => 'd_src', target => 'src_local') r;
	SELECT method || '|' || remote_mode || '|' || parallel_workers
	  FROM acme_migrate.reconcile_runs ORDER BY run_id DESC LIMIT 1}),
	"t\nhash_ranges|citus_shards|0",
	'integer key, distributed -> local target large enough for a parallel worker: both summed on the shards\' SQL');

# without the shards' sums, the same answer through the coordinator
$coord->safe_psql('postgres', q{DELETE FROM kd2_text WHERE k LIKE 'key-1%77'});
my @off = key_reconcile('kd_text', 'kd2_text', ['k'], 'SET acme_migrate.remote_hashes = off;');
is(join("\n", @off[ 0 .. 1 ], $off[3]), "$nrows|" . ($nrows - 111) . "|111|0|0|false\n0|0|111|missing:111\n0|0",
	'text key with acme_migrate.remote_hashes off: the same differences, read through the coordinator');
like($off[2], qr/^hash_buckets\|none\|/, 'and that run does not say citus_shards');
$coord->safe_psql('postgres', 'TRUNCATE kd2_text; INSERT INTO kd2_text SELECT * FROM kd_text;');

# a NULL key in the source (no primary key there) is reported as such, by
# the merge of everything the first read falls back to, as before
$coord->safe_psql(
	'postgres', q{
	CREATE TABLE kn_comp (id integer NOT NULL, name text, a integer, note text);
	SELECT create_distributed_table('kn_comp', 'id');
	INSERT INTO kn_comp SELECT * FROM kl_comp;
	INSERT INTO kn_comp VALUES (7, NULL, 1, 'no name');
});
is( $coord->safe_psql(
		'postgres', q{
	SELECT r.missing || '|' || r.extra || '|' || r.changed
	  FROM acme_migrate_reconcile(source => 'kn_comp', target => 'kd_comp', key => '{id,name}') r;
	SELECT null_keys || '|' || method || '|' || coalesce(remote_mode, 'none')
	  FROM acme_migrate.reconcile_runs ORDER BY run_id DESC LIMIT 1;
	SELECT kind || '|' || side || '|' || (key IS NULL) FROM acme_migrate.diffs
	 WHERE run_id = (SELECT max(run_id) FROM acme_migrate.reconcile_runs)}),
	"0|0|0\n1|merge|none\nnull_key|source|true",
	'a NULL key in a distributed source: reported as a null_key by the merge, as before');

# search_path attacks on the Citus paths: a plain role's distributed tables,
# copied by pushed-down ranges, reconciled on the shards and hashed there,
# with her traps first in her search_path (pg_temp, her schema, public, then
# pg_catalog): =, > and <= on bigint, count(), sum() and domains named int8,
# int4, text and numeric.  Her functions log the role that runs them on the
# coordinator (on a worker they would fail: the log is not there).  A trap
# sprung by plain SQL shows they are armed; none may be sprung by ours.
$coord->safe_psql(
	'postgres', q{
	CREATE ROLE cit_mallory LOGIN;
	GRANT CREATE ON SCHEMA public TO cit_mallory;
	GRANT CREATE ON DATABASE postgres TO cit_mallory;
	CREATE TABLE cit_log (trap text, ran_as name DEFAULT current_user);
	GRANT INSERT, SELECT, DELETE ON cit_log TO PUBLIC;
	SET ROLE cit_mallory;
	CREATE SCHEMA cit_m;
	CREATE FUNCTION cit_m.trap(what text) RETURNS boolean LANGUAGE plpgsql AS $$
	BEGIN
		INSERT INTO public.cit_log (trap) VALUES (what);
		RETURN true;
	END $$;
	CREATE FUNCTION cit_m.eq8(bigint, bigint) RETURNS boolean LANGUAGE plpgsql AS $$
	BEGIN PERFORM cit_m.trap('= (bigint, bigint)'); RETURN $1 OPERATOR(pg_catalog.=) $2; END $$;
	CREATE OPERATOR cit_m.= (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = cit_m.eq8);
	CREATE FUNCTION cit_m.gt8(bigint, bigint) RETURNS boolean LANGUAGE plpgsql AS $$
	BEGIN PERFORM cit_m.trap('> (bigint, bigint)'); RETURN $1 OPERATOR(pg_catalog.>) $2; END $$;
	CREATE OPERATOR public.> (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = cit_m.gt8);
	CREATE FUNCTION cit_m.le8(bigint, bigint) RETURNS boolean LANGUAGE plpgsql AS $$
	BEGIN PERFORM cit_m.trap('<= (bigint, bigint)'); RETURN $1 OPERATOR(pg_catalog.<=) $2; END $$;
	CREATE OPERATOR cit_m.<= (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = cit_m.le8);
	CREATE FUNCTION cit_m.eq4(integer, integer) RETURNS boolean LANGUAGE plpgsql AS $$
	BEGIN PERFORM cit_m.trap('= (integer, integer)'); RETURN $1 OPERATOR(pg_catalog.=) $2; END $$;
	CREATE OPERATOR cit_m.= (LEFTARG = integer, RIGHTARG = integer, FUNCTION = cit_m.eq4);
	CREATE FUNCTION cit_m.eqt(text, text) RETURNS boolean LANGUAGE plpgsql AS $$
	BEGIN PERFORM cit_m.trap('= (text, text)'); RETURN $1 OPERATOR(pg_catalog.=) $2; END $$;
	CREATE OPERATOR cit_m.= (LEFTARG = text, RIGHTARG = text, FUNCTION = cit_m.eqt);
	CREATE FUNCTION public.count(anyelement) RETURNS bigint LANGUAGE plpgsql AS $$
	BEGIN PERFORM cit_m.trap('count()'); RETURN 0; END $$;
	CREATE FUNCTION cit_m.sum(numeric) RETURNS numeric LANGUAGE plpgsql AS $$
	BEGIN PERFORM cit_m.trap('sum()'); RETURN 0; END $$;
	CREATE DOMAIN cit_m.text AS pg_catalog.text CHECK (cit_m.trap('domain text'));
	CREATE DOMAIN cit_m.numeric AS pg_catalog.numeric CHECK (cit_m.trap('domain numeric'));
	CREATE TABLE cit_m.s (id bigint PRIMARY KEY, a integer NOT NULL, note text);
	SELECT create_distributed_table('cit_m.s', 'id');
	INSERT INTO cit_m.s SELECT g, g % 7, md5(g::text) FROM generate_series(1, 6000) g;
	CREATE TABLE cit_m.d (LIKE cit_m.s INCLUDING ALL);
	SELECT create_distributed_table('cit_m.d', 'id', colocate_with => 'cit_m.s');
	SELECT acme_migrate_create(job => 'cit_hostile', source => 'cit_m.s',
		target => 'cit_m.d', batch_size => 500);
	CREATE TABLE cit_m.ts (k text PRIMARY KEY, a integer NOT NULL, note text);
	SELECT create_distributed_table('cit_m.ts', 'k');
	INSERT INTO cit_m.ts SELECT 'k' || g, g % 7, md5(g::text) FROM generate_series(1, 6000) g;
	CREATE TABLE cit_m.td (LIKE cit_m.ts INCLUDING ALL);
	SELECT create_distributed_table('cit_m.td', 'k', colocate_with => 'cit_m.ts');
	INSERT INTO cit_m.td SELECT * FROM cit_m.ts;
	UPDATE cit_m.td SET note = 'changed' WHERE k IN ('k1', 'k2', 'k3', 'k4');
});
my $hostile = q{SET ROLE cit_mallory;
	CREATE DOMAIN pg_temp.int8 AS pg_catalog.int8 CHECK (cit_m.trap('domain pg_temp.int8'));
	CREATE DOMAIN pg_temp.int4 AS pg_catalog.int4 CHECK (cit_m.trap('domain pg_temp.int4'));
	SET search_path = pg_temp, cit_m, public, pg_catalog;
};
is( $coord->safe_psql(
		'postgres', $hostile . q{
	SELECT 1::bigint = 2::bigint, 3::bigint > 2::bigint, 1 = ANY ('{1}'::integer[]), 'a'::text = 'a';
	RESET ROLE; RESET search_path;
	SELECT pg_catalog.string_agg(trap, ', ' ORDER BY trap) FROM public.cit_log;
	DELETE FROM public.cit_log;}),
	"f|t|t|t\n= (bigint, bigint), = (integer, integer), = (text, text), > (bigint, bigint), domain text",
	'hostile search_path on Citus: the traps spring on plain SQL');
$coord->safe_psql(
	'postgres', $hostile . q{
	CALL acme_migrate_run('cit_hostile');
	SELECT pg_catalog.count(*) FROM acme_migrate_reconcile('cit_hostile');
	SELECT pg_catalog.count(*) FROM acme_migrate_table_hash('cit_m.s');
	SELECT pg_catalog.count(*) FROM acme_migrate_range_hashes('cit_m.s', chunks => 3);
	UPDATE cit_m.d SET note = 'changed' WHERE id OPERATOR(pg_catalog.<) 4;
	SELECT pg_catalog.count(*) FROM acme_migrate_reconcile(source => 'cit_m.s', target => 'cit_m.d');
	SELECT pg_catalog.count(*) FROM acme_migrate_reconcile('cit_hostile');
	SELECT pg_catalog.count(*) FROM acme_migrate_reconcile(source => 'cit_m.ts', target => 'cit_m.td');
});
is( $coord->safe_psql(
		'postgres', q{
	SELECT r.method, r.remote_mode, r.changed, r.missing, r.extra FROM acme_migrate.reconcile_runs r
	 WHERE r.target_table = 'cit_m.td'::regclass ORDER BY r.run_id DESC LIMIT 1}),
	'hash_buckets|citus_shards|4|0|0',
	'hostile search_path on Citus: a text key reconciled on the shards (key buckets), the 4 changed rows found');
is( $coord->safe_psql(
		'postgres', q{
	SELECT r.method, r.remote_mode, r.changed FROM acme_migrate.reconcile_runs r
	  JOIN acme_migrate.jobs j USING (job_id)
	 WHERE j.job_name = 'cit_hostile' ORDER BY r.run_id DESC LIMIT 1}),
	'hash_ranges|citus_shards|3',
	'hostile search_path on Citus: the job copied by pushdown, reconcile on the shards found the 3 changed rows');
is(oracle('cit_m.s', 'cit_m.d'), '3|3|6000',
	'hostile search_path on Citus: EXCEPT ALL finds only the 3 changed rows');
is($coord->safe_psql('postgres',
		q{SELECT coalesce(string_agg(trap || ' as ' || ran_as, ', '), 'none') FROM cit_log}),
	'none',
	'hostile search_path on Citus: no trap sprung by copy, reconcile (of the job and of the tables, integer and text keys), table_hash or range_hashes');

# capture cannot see writes routed to shards: refused
($ret, $out, $err) = $coord->psql(
	'postgres', q{
	SELECT acme_migrate_create(job => 'cap', source => 'd_src',
		target => 'd_from_local', capture_changes => true)},
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/ERROR:  0A000: cannot capture the changes of "d_src"/,
	'capture of a distributed table is refused with SQLSTATE 0A000');

# without acme_migrate on the workers the hash reads the rows through Citus
$_->safe_psql('postgres',
	'SET citus.enable_ddl_propagation = off; DROP EXTENSION acme_migrate')
  for ($w1, $w2);
is( $coord->safe_psql('postgres',
		"SELECT row_count, hash FROM acme_migrate_table_hash('d_src')"),
	$local_hash,
	'without acme_migrate on the workers, table_hash reads through Citus, same hash');
is(range_hashes_vs_local(), '0|0|4',
	'and so does range_hashes, with the same hashes');
is( $coord->safe_psql(
		'postgres', q{
	SELECT equal FROM acme_migrate_reconcile('from_local');
	SELECT remote_mode IS NULL FROM acme_migrate.reconcile_runs ORDER BY run_id DESC LIMIT 1}),
	"t\nt", 'and reconcile reads the rows through Citus, still equal');

$_->stop for @nodes;
done_testing();
