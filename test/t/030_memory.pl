# Backend memory stays flat over a long acme_migrate_run, and a worker's
# over a minute of throttled batches.
#
# The private memory (RssAnon) of the backend running the CALL is sampled
# early and late in a run of a few hundred batches, through both write paths
# and a table with NOT NULL columns and defaults (what the direct writer's
# buffer slots are made for).  Memory allocated once per batch and kept for
# the CALL would add tens of megabytes between the two samples; flat memory
# adds next to nothing.  Linux only (/proc).
#
# A worker whose every batch is throttled (max_rows_per_second) runs about a
# minute, thousands of batches; its TopMemoryContext itself (what nothing
# ever frees) is read through pg_log_backend_memory_contexts after a few
# seconds and at the end.  It must not grow: a string allocated there per
# batch after the batch's commit (the status line of the throttle sleep, as
# worker_loop did) adds ~100 bytes per batch, hundreds of kB in a minute.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use AcmeTest;

plan skip_all => 'needs /proc/<pid>/status' unless -r "/proc/$$/status";

my $node = PostgreSQL::Test::Cluster->new('memory');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'acme_migrate'");
$node->start;

$node->safe_psql(
	'postgres', q{
	CREATE EXTENSION acme_migrate;
	CREATE TABLE src (id bigint PRIMARY KEY, customer int NOT NULL,
		amount numeric(12,2) NOT NULL, status text NOT NULL,
		created timestamptz NOT NULL, note text NOT NULL);
	INSERT INTO src SELECT g, g % 1000, g / 7.0, 'new', now(), md5(g::text)
	FROM generate_series(1, 300000) g;
	CREATE TABLE dst (LIKE src INCLUDING ALL,
		copied_at timestamptz NOT NULL DEFAULT now());
});

# RssAnon of pid once the job 'mem' has read at least rows rows, and the
# rows read then
sub sample_at
{
	my ($pid, $rows) = @_;
	my $read = 0;
	for (my $i = 0; $i < 6000; $i++)
	{
		$read = $node->safe_psql('postgres',
			"SELECT rows_read FROM acme_migrate.jobs WHERE job_name = 'mem'");
		last if $read >= $rows;
		usleep(10_000);
	}
	return (rss_anon_kb($pid), $read);
}

foreach my $direct ('on', 'off')
{
	$node->safe_psql(
		'postgres', qq{
		TRUNCATE dst;
		SELECT acme_migrate_drop(job_name) FROM acme_migrate.jobs;
		SELECT acme_migrate_create(job => 'mem', source => 'src', target => 'dst',
			batch_size => 500, max_rows_per_second => 100000);
	});
	my $bg = $node->background_psql('postgres');
	my $pid = $bg->query_safe('SELECT pg_backend_pid()');
	$bg->query_until(qr/started/, qq{
		SET acme_migrate.direct_write = $direct;
		\\echo started
		CALL acme_migrate_run('mem');
		\\echo finished
	});

	# samples once a quarter and once nine tenths of the rows are read (by
	# progress, not by time: a loaded machine only makes the run longer)
	my ($early, $early_rows) = sample_at($pid, 75_000);
	my ($late, $late_rows) = sample_at($pid, 270_000);
	$bg->quit;

	ok(defined $early && defined $late,
		"direct_write $direct: memory sampled while the run went on");
	my $batches = ($late_rows - $early_rows) / 500;
	diag(sprintf(
		"direct_write %s: RssAnon %d kB -> %d kB over %d batches",
		$direct, $early // -1, $late // -1, $batches));
	cmp_ok($batches, '>=', 100,
		"direct_write $direct: at least 100 batches between the samples");
	cmp_ok(($late // 0) - ($early // 0), '<', 4096,
		"direct_write $direct: private memory grows by less than 4 MB");
}

# the copy itself is exact
is( $node->safe_psql(
		'postgres', q{
	SELECT count(*) FROM (SELECT id, customer, amount, status, created, note
						  FROM dst EXCEPT SELECT * FROM src) x}),
	'0', 'the last copy is exact');

# a worker, every batch of 10 rows throttled to 2,000 rows/s (5 ms a batch)
$node->safe_psql(
	'postgres', q{
	TRUNCATE dst;
	SELECT acme_migrate_drop(job_name) FROM acme_migrate.jobs;
	SELECT acme_migrate_create(job => 'memw', source => 'src', target => 'dst',
		batch_size => 10, max_rows_per_second => 2000);
	SELECT acme_migrate_start('memw');
});
my $wpid;
ok( wait_for(
		$node, q{SELECT count(*) = 1 FROM pg_stat_activity
		  WHERE backend_type = 'acme_migrate worker'
			AND query LIKE '%sleeping % (max_rows_per_second)'}, 60, 10_000),
	'the worker sleeps between throttled batches');
$wpid = $node->safe_psql('postgres',
	q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'acme_migrate worker'
	  AND query LIKE 'acme_migrate job memw: worker 1%'});
sleep(5);		# its caches warm up
my $top_early = top_context_bytes($node, $wpid);
my $rss_early = rss_anon_kb($wpid);
my $batches_early = $node->safe_psql('postgres',
	"SELECT batches_done FROM acme_migrate.jobs WHERE job_name = 'memw'");
sleep(60);
my $top_late = top_context_bytes($node, $wpid);
my $rss_late = rss_anon_kb($wpid);
my $batches = $node->safe_psql('postgres',
	"SELECT batches_done FROM acme_migrate.jobs WHERE job_name = 'memw'")
  - $batches_early;
diag(sprintf(
	"worker: TopMemoryContext %d -> %d bytes, RssAnon %d kB -> %d kB over %d batches",
	$top_early // -1, $top_late // -1, $rss_early // -1, $rss_late // -1,
	$batches));
ok(defined $top_early && defined $top_late,
	'worker: TopMemoryContext logged twice');
is( $node->safe_psql(
		'postgres', qq{SELECT count(*) FROM pg_stat_activity
		  WHERE pid = $wpid AND backend_type = 'acme_migrate worker'}),
	'1', 'worker: the same worker ran all along');
cmp_ok($batches, '>=', 1000, 'worker: at least 1,000 throttled batches between the samples');
cmp_ok(($top_late // 1e9) - ($top_early // 0), '<', 16384,
	'worker: TopMemoryContext grows by less than 16 kB');
cmp_ok(($rss_late // 0) - ($rss_early // 0), '<', 4096,
	'worker: private memory grows by less than 4 MB');

# lifted throttle: the rest is copied, exactly
$node->safe_psql('postgres',
	q{SELECT acme_migrate_alter('memw', max_rows_per_second => 0, batch_size => 20000)});
is($node->safe_psql('postgres', q{SELECT acme_migrate_wait('memw', timeout => '3 min')}),
	'done', 'worker: the job finishes once the throttle is lifted');
is( except_all(
		$node, 'SELECT id, customer, amount, status, created, note FROM dst',
		'SELECT * FROM src'),
	'0|0', 'worker: the copy is exact');

$node->stop;
done_testing();
