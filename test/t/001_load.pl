# acme_migrate loads and copies with and without shared_preload_libraries.
#
# Without preloading, CREATE EXTENSION loads the library on first use; with
# it, the library is in the postmaster from the start (its launcher, when
# there is one, must not get in the way of a database that has no
# extension yet).  Either way a small job copies to the end.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('load');
$node->init;
$node->start;

# a small job, copied by batches and by the procedure; returns its summary
sub copy_small_job
{
	my ($db) = @_;
	$node->safe_psql(
		$db, q{
		CREATE TABLE src (id integer PRIMARY KEY, v text NOT NULL);
		INSERT INTO src SELECT g, 'v' || g FROM generate_series(1, 250) g;
		CREATE TABLE dst (id integer PRIMARY KEY, v text NOT NULL);
		SELECT acme_migrate_create(job => 'small', source => 'src',
			target => 'dst', batch_size => 100);
	});
	my $first = $node->safe_psql($db, "SELECT acme_migrate_batch('small')");
	$node->safe_psql($db, "CALL acme_migrate_run('small')");
	return $first . '|'
	  . $node->safe_psql(
		$db, q{
		SELECT state, rows_copied, batches_done,
			   (SELECT count(*) FROM dst),
			   NOT EXISTS (SELECT * FROM src EXCEPT SELECT * FROM dst)
		  FROM acme_migrate.jobs WHERE job_name = 'small'
	});
}

is($node->safe_psql('postgres', 'SHOW shared_preload_libraries'),
	'', 'first start: no shared_preload_libraries');
$node->safe_psql('postgres', 'CREATE EXTENSION acme_migrate');
is( $node->safe_psql(
		'postgres',
		"SELECT extversion FROM pg_extension WHERE extname = 'acme_migrate'"),
	'1.1',
	'CREATE EXTENSION without preloading');
is(copy_small_job('postgres'), '100|done|250|3|250|t',
	'a job copies to the end without preloading');

# drop and create again: the extension leaves nothing behind that the next
# CREATE EXTENSION trips over (its admin role is cluster-wide and stays)
$node->safe_psql('postgres', 'DROP EXTENSION acme_migrate');
$node->safe_psql('postgres', 'CREATE EXTENSION acme_migrate');
is( $node->safe_psql('postgres', 'SELECT count(*) FROM acme_migrate.jobs'),
	'0', 'DROP EXTENSION then CREATE EXTENSION gives an empty catalog');

$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'acme_migrate'");
$node->restart;
is($node->safe_psql('postgres', 'SHOW shared_preload_libraries'),
	'acme_migrate', 'restarted with shared_preload_libraries');
is($node->safe_psql('postgres', 'SHOW acme_migrate.direct_write'),
	'on', 'GUCs are defined by the preloaded library');

# a database where the extension has never been created is unaffected
$node->safe_psql('postgres', 'CREATE DATABASE fresh');
is($node->safe_psql('fresh', 'SELECT 1'), '1',
	'a database without the extension works with the library preloaded');

$node->safe_psql('fresh', 'CREATE EXTENSION acme_migrate');
is($node->safe_psql('fresh',
	"SELECT extversion FROM pg_extension WHERE extname = 'acme_migrate'"),
	'1.1', 'CREATE EXTENSION with preloading');
is(copy_small_job('fresh'), '100|done|250|3|250|t',
	'a job copies to the end with preloading');

# the library refuses an unknown acme_migrate.* setting (prefix reserved)
my ($ret, $out, $err) =
  $node->psql('fresh', 'SET acme_migrate.no_such_setting = 1');
isnt($ret, 0, 'unknown acme_migrate.* setting is refused');
like($err, qr/invalid configuration parameter name/,
	'... as a reserved prefix');

$node->stop;
done_testing();
