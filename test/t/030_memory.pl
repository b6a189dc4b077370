# Backend memory stays flat over a long acme_migrate_run.
#
# The private memory (RssAnon) of the backend running the CALL is sampled
# early and late in a run of a few hundred batches, through both write paths
# and a table with NOT NULL columns and defaults (what the direct writer's
# buffer slots are made for).  Memory allocated once per batch and kept for
# the CALL would add tens of megabytes between the two samples; flat memory
# adds next to nothing.  Linux only (/proc).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

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

sub rss_anon_kb
{
	my ($pid) = @_;
	open(my $fh, '<', "/proc/$pid/status") or return undef;
	while (<$fh>)
	{
		return $1 if /^RssAnon:\s+(\d+)/;
	}
	return undef;
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

	# samples at about a quarter and at about nine tenths of the run (3 s)
	usleep(700_000);
	my $early = rss_anon_kb($pid);
	my $early_rows = $node->safe_psql('postgres',
		"SELECT rows_read FROM acme_migrate.jobs WHERE job_name = 'mem'");
	usleep(1_900_000);
	my $late = rss_anon_kb($pid);
	my $late_rows = $node->safe_psql('postgres',
		"SELECT rows_read FROM acme_migrate.jobs WHERE job_name = 'mem'");
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

$node->stop;
done_testing();
