# A legacy server as the source (issue 10, item 1): a job's source is a
# postgres_fdw foreign table on another cluster, and reconcile compares
# range hashes on that server first (src/remote.c).
#
# Two clusters: "legacy" holds the source tables in two databases, one with
# acme_migrate installed (its foreign server lists it in "extensions": mode
# remote_hashes) and one without (mode pushdown: built-in functions only).
# For each mode, jobs copy an integer-keyed table (NULLs, numerics,
# timestamps) and a text-keyed one; then rows are deleted, changed (to and
# from NULL) and inserted on the remote side, and extra rows planted in the
# target.  Each reconcile's list of (kind, key), in key order, must equal
# an oracle computed without our code: a FULL JOIN of the foreign table and
# the target with IS DISTINCT FROM.  The rows fetched from the remote side
# must be a small part of the table.  A job with a filter falls back to
# full_fetch, and says why.  A non-superuser job owner reaches the remote
# server through his own user mapping, with a password the server asks
# for; another role cannot use that mapping, and a mapping without a
# password is refused.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

# the key's order must be the same on both servers: the C collation
my $legacy = PostgreSQL::Test::Cluster->new('legacy');
$legacy->init(extra => ['--locale=C']);
# pg_stat_statements counts the rows the legacy server sends, without us
$legacy->append_conf('postgresql.conf',
	"shared_preload_libraries = 'pg_stat_statements'");
$legacy->start;
my $new = PostgreSQL::Test::Cluster->new('new');
$new->init(extra => ['--locale=C']);
$new->start;

# the remote asks alice_remote for a password, trusts everyone else
my $hba = $legacy->data_dir . '/pg_hba.conf';
my $old_hba = slurp_file($hba);
open my $fh, '>', $hba or die "could not write $hba: $!";
print $fh "local all alice_remote scram-sha-256\n"
  . "host all alice_remote 127.0.0.1/32 scram-sha-256\n" . $old_hba;
close $fh;
$legacy->reload;

my $source_sql = q{
	CREATE SCHEMA legacy;
	CREATE TABLE legacy.orders (id bigint PRIMARY KEY, amount numeric(10,2),
		note text, placed timestamptz, flag boolean);
	INSERT INTO legacy.orders
	SELECT g, (g % 997) / 4.0, CASE WHEN g % 7 <> 0 THEN md5(g::text) END,
		   timestamptz '2024-01-01 00:00:00+00' + g * interval '1 minute',
		   CASE WHEN g % 3 = 0 THEN NULL ELSE g % 2 = 0 END
	  FROM generate_series(1, 20000) g;
	CREATE TABLE legacy.codes (code text PRIMARY KEY, label text, qty integer);
	INSERT INTO legacy.codes
	SELECT 'c-' || lpad(g::text, 5, '0'), CASE WHEN g % 5 <> 0 THEN 'label ' || g END, g
	  FROM generate_series(1, 5000) g;
	CREATE ROLE alice_remote LOGIN PASSWORD 'secret';
	GRANT USAGE ON SCHEMA legacy TO alice_remote;
	GRANT SELECT ON ALL TABLES IN SCHEMA legacy TO alice_remote;
};
$legacy->safe_psql('postgres', 'CREATE DATABASE with_ext');
$legacy->safe_psql('postgres', 'CREATE DATABASE plain');
$legacy->safe_psql('with_ext', 'CREATE EXTENSION acme_migrate');
$legacy->safe_psql($_, 'CREATE EXTENSION pg_stat_statements')
  foreach ('with_ext', 'plain');
$legacy->safe_psql('with_ext', $source_sql);
$legacy->safe_psql('plain',
	$source_sql =~ s/CREATE ROLE alice_remote LOGIN PASSWORD 'secret';//r);

my ($host, $port) = ($legacy->host, $legacy->port);
$new->safe_psql(
	'postgres', qq{
	CREATE EXTENSION acme_migrate;
	CREATE EXTENSION postgres_fdw;
	CREATE SERVER old_ext FOREIGN DATA WRAPPER postgres_fdw
		OPTIONS (host '$host', port '$port', dbname 'with_ext', extensions 'acme_migrate');
	CREATE SERVER old_plain FOREIGN DATA WRAPPER postgres_fdw
		OPTIONS (host '$host', port '$port', dbname 'plain');
	CREATE USER MAPPING FOR postgres SERVER old_ext OPTIONS (user 'postgres');
	CREATE USER MAPPING FOR postgres SERVER old_plain OPTIONS (user 'postgres');
	CREATE SCHEMA src_ext;
	CREATE SCHEMA src_plain;
	IMPORT FOREIGN SCHEMA legacy FROM SERVER old_ext INTO src_ext;
	IMPORT FOREIGN SCHEMA legacy FROM SERVER old_plain INTO src_plain;
	CREATE SCHEMA app;
});

# the oracle: FULL JOIN of the foreign table and the target, without our code
sub oracle
{
	my ($src, $tgt, $key, $cols) = @_;
	my $s = join(', ', map { "s.$_" } @$cols);
	my $t = join(', ', map { "t.$_" } @$cols);
	return $new->safe_psql(
		'postgres', qq{
		SELECT CASE WHEN t.$key IS NULL THEN 'missing'
					WHEN s.$key IS NULL THEN 'extra' ELSE 'changed' END
			   || ' ' || coalesce(s.$key, t.$key)::text
		  FROM $src s FULL JOIN $tgt t ON s.$key = t.$key
		 WHERE s.$key IS NULL OR t.$key IS NULL OR ROW($s) IS DISTINCT FROM ROW($t)
		 ORDER BY coalesce(s.$key, t.$key)});
}

# reconcile a job: its (kind, key) list in the order listed, and its run
sub reconcile
{
	my ($job, $key) = @_;
	my $run = $new->safe_psql('postgres',
		"SELECT run_id FROM acme_migrate_reconcile('$job')");
	my $diffs = $new->safe_psql(
		'postgres', qq{
		SELECT kind || ' ' || (key->>'$key') FROM acme_migrate.diffs
		 WHERE run_id = $run ORDER BY diff_no});
	my $info = $new->safe_psql(
		'postgres', qq{
		SELECT remote_mode, coalesce(remote_rows, -1), method, equal,
			   coalesce(remote_note, '')
		  FROM acme_migrate.reconcile_runs WHERE run_id = $run});
	return ($diffs, split(/\|/, $info, -1));
}

# plant differences on the remote side (and extra rows in the target)
sub plant
{
	my ($db, $tag) = @_;
	$legacy->safe_psql(
		$db, q{
		DELETE FROM legacy.orders WHERE id IN (5, 777, 12000, 19999);
		UPDATE legacy.orders SET note = NULL WHERE id IN (8, 4242);
		UPDATE legacy.orders SET note = 'was null' WHERE id = 14;
		UPDATE legacy.orders SET amount = amount + 0.01 WHERE id IN (100, 15000);
		UPDATE legacy.orders SET flag = NULL WHERE id = 16001;
		UPDATE legacy.orders SET placed = placed + interval '1 second' WHERE id = 9000;
		INSERT INTO legacy.orders VALUES (20001, 1, NULL, NULL, NULL),
			(30000, 2.5, 'far', now(), true);
		DELETE FROM legacy.codes WHERE code IN ('c-00010', 'c-04000');
		UPDATE legacy.codes SET label = NULL WHERE code IN ('c-00011', 'c-02500');
		UPDATE legacy.codes SET qty = -1 WHERE code = 'c-03333';
		INSERT INTO legacy.codes VALUES ('a first', 'x', 1), ('c-02500b', NULL, NULL),
			('zz last', '', 0);
	});
	$new->safe_psql(
		'postgres', qq{
		INSERT INTO app.orders_$tag VALUES (0, 0, 'extra', NULL, NULL),
			(25000, 1, NULL, NULL, false);
		INSERT INTO app.codes_$tag VALUES ('c-00010x', 'extra', 1);
	});
}

my @ocols = qw(id amount note placed flag);
my $want_plain_orders;
my @ccols = qw(code label qty);
foreach my $mode (['ext', 'with_ext', 'remote_hashes'],
	['plain', 'plain', 'pushdown'])
{
	my ($tag, $db, $want) = @$mode;
	$new->safe_psql(
		'postgres', qq{
		CREATE TABLE app.orders_$tag (id bigint PRIMARY KEY, amount numeric(10,2),
			note text, placed timestamptz, flag boolean);
		CREATE TABLE app.codes_$tag (code text PRIMARY KEY, label text, qty integer);
		SELECT acme_migrate_create(job => 'orders_$tag', source => 'src_$tag.orders',
			target => 'app.orders_$tag', key => '{id}', batch_size => 5000);
		SELECT acme_migrate_create(job => 'codes_$tag', source => 'src_$tag.codes',
			target => 'app.codes_$tag', key => '{code}');
		CALL acme_migrate_run('orders_$tag');
		CALL acme_migrate_run('codes_$tag');
	});
	is( $new->safe_psql(
			'postgres', qq{
			SELECT (SELECT count(*) FROM (SELECT * FROM src_$tag.orders
				EXCEPT ALL SELECT * FROM app.orders_$tag) x)
			 + (SELECT count(*) FROM (SELECT * FROM app.orders_$tag
				EXCEPT ALL SELECT * FROM src_$tag.orders) x)}),
		'0', "$tag: the copy through postgres_fdw is exact");

	my ($diffs, $rmode, $rrows, $method, $equal) =
	  reconcile("orders_$tag", 'id');
	is($diffs, '', "$tag: equal tables list no difference");
	is($rmode, $want, "$tag: reconcile_runs.remote_mode is $want");
	is($equal, 't', "$tag: the run is equal");
	ok($rrows > 0 && $rrows < 2000,
		"$tag: equal tables fetch few rows from the remote side ($rrows of 20000)");

	plant($db, $tag);
	my $want_orders =
	  oracle("src_$tag.orders", "app.orders_$tag", 'id', \@ocols);
	isnt($want_orders, '', "$tag: the oracle sees the planted differences");
	$want_plain_orders = $want_orders;
	$legacy->safe_psql($db, 'SELECT pg_stat_statements_reset()');
	($diffs, $rmode, $rrows, $method, $equal) =
	  reconcile("orders_$tag", 'id');
	my $sent = $legacy->safe_psql(
		$db, q{
		SELECT sum(rows) FROM pg_stat_statements
		 WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
		   AND query NOT LIKE '%pg_stat_statements%'});
	ok($sent > 0 && $sent < 2000,
		"$tag: the legacy server's pg_stat_statements: $sent rows returned of 20000"
	);
	is($diffs, $want_orders,
		"$tag: integer key: (kind, key) in key order as the oracle says");
	is($rmode, $want, "$tag: differences found in mode $want");
	is($method, 'hash_ranges', "$tag: only differing ranges are merged");
	ok($rrows < 2000,
		"$tag: 16 differences fetch few rows ($rrows of 20000)");

	my $want_codes =
	  oracle("src_$tag.codes", "app.codes_$tag", 'code', \@ccols);
	my $cnote;
	($diffs, $rmode, $rrows, $method, $equal, $cnote) =
	  reconcile("codes_$tag", 'code');
	is($diffs, $want_codes,
		"$tag: text key: (kind, key) in key order as the oracle says");
	is($rmode, $want, "$tag: text key in mode $want") or diag($cnote);
}

# a filter is not sent to the remote server: every row is fetched, and why
$new->safe_psql(
	'postgres', q{
	CREATE TABLE app.filtered (id bigint PRIMARY KEY, amount numeric(10,2),
		note text, placed timestamptz, flag boolean);
	SELECT acme_migrate_create(job => 'filtered', source => 'src_plain.orders',
		target => 'app.filtered', key => '{id}', filter => 'id % 2 = 0');
	CALL acme_migrate_run('filtered');
	DELETE FROM app.filtered WHERE id IN (2, 18000);
});
my ($diffs, $rmode, $rrows, $method, $equal, $note) =
  reconcile('filtered', 'id');
my ($ret, $out, $err);
is($diffs, "missing 2\nmissing 18000", 'full_fetch: differences found');
is($rmode, 'full_fetch', 'a job with a filter reads every row (full_fetch)');
like($note, qr/filter/, 'and reconcile_runs.remote_note says why');

# a server that names acme_migrate in its extensions option without having
# it: pushdown, and a NOTICE says so
$new->safe_psql(
	'postgres', qq{
	CREATE SERVER old_liar FOREIGN DATA WRAPPER postgres_fdw
		OPTIONS (host '$host', port '$port', dbname 'plain', extensions 'acme_migrate');
	CREATE USER MAPPING FOR postgres SERVER old_liar OPTIONS (user 'postgres');
	CREATE SCHEMA src_liar;
	IMPORT FOREIGN SCHEMA legacy LIMIT TO (orders) FROM SERVER old_liar INTO src_liar;
});
($ret, $out, $err) = $new->psql(
	'postgres', q{
	SELECT missing || ' ' || extra || ' ' || changed
	  FROM acme_migrate_reconcile(source => 'src_liar.orders', target => 'app.orders_plain',
								  key => '{id}');
	SELECT remote_mode FROM acme_migrate.reconcile_runs ORDER BY run_id DESC LIMIT 1;
});
my @counts = split(/\n/, $want_plain_orders);
is( $out,
	join(' ', scalar(grep { /^missing/ } @counts),
		scalar(grep { /^extra/ } @counts),
		scalar(grep { /^changed/ } @counts))
	  . "\npushdown",
	'extensions lists acme_migrate but the remote lacks it: pushdown');
like($err, qr/acme_migrate is not installed on the source's server/,
	'and a NOTICE says why');

# over 100,000 target rows the first cuts come from a sample of the target
$legacy->safe_psql(
	'with_ext', q{
	CREATE TABLE legacy.big (id integer PRIMARY KEY, v text);
	INSERT INTO legacy.big SELECT g, 'v' || g FROM generate_series(1, 150000) g;
});
$new->safe_psql(
	'postgres', q{
	IMPORT FOREIGN SCHEMA legacy LIMIT TO (big) FROM SERVER old_ext INTO src_ext;
	CREATE TABLE app.big (id integer PRIMARY KEY, v text);
	SELECT acme_migrate_create(job => 'big', source => 'src_ext.big',
		target => 'app.big', key => '{id}', batch_size => 50000);
	CALL acme_migrate_run('big');
	DELETE FROM app.big WHERE id IN (1, 77777);
	UPDATE app.big SET v = NULL WHERE id IN (150000, 3);
});
$legacy->safe_psql('with_ext',
	"DELETE FROM legacy.big WHERE id = 100000; INSERT INTO legacy.big VALUES (0, 'zero')"
);
my $want_big = oracle('src_ext.big', 'app.big', 'id', [qw(id v)]);
($diffs, $rmode, $rrows) = reconcile('big', 'id');
is($diffs, $want_big, '150,000 rows, sampled first cuts: as the oracle says');
is($rmode, 'remote_hashes', 'in mode remote_hashes');
ok($rrows < 3000, "and few rows fetched ($rrows of 150000)");

# a foreign table of its own making: other table and column names there
# (table_name, column_name), and a target column filled from a source
# column of another name
$new->safe_psql(
	'postgres', q{
	CREATE FOREIGN TABLE src_ext.renamed (order_id bigint OPTIONS (column_name 'id'),
		amount numeric(10,2), remark text OPTIONS (column_name 'note'),
		placed timestamptz, flag boolean)
		SERVER old_ext OPTIONS (schema_name 'legacy', table_name 'orders');
	CREATE TABLE app.renamed (order_id bigint PRIMARY KEY, amount numeric(10,2),
		note text, placed timestamptz, flag boolean);
	SELECT acme_migrate_create(job => 'renamed', source => 'src_ext.renamed',
		target => 'app.renamed', key => '{order_id}', columns => '{"note": "remark"}');
	CALL acme_migrate_run('renamed');
	DELETE FROM app.renamed WHERE order_id = 4000;
	UPDATE app.renamed SET note = 'other' WHERE order_id = 4001;
});
($diffs, $rmode) = reconcile('renamed', 'order_id');
is($diffs, "missing 4000\nchanged 4001",
	'remote column names (column_name, table_name) and a renamed column');
is($rmode, 'remote_hashes', 'in mode remote_hashes');

# a mapped expression is not sent to the remote server: full_fetch, and why
$new->safe_psql(
	'postgres', q{
	CREATE TABLE app.codes_upper (code text PRIMARY KEY, label text, qty integer);
	SELECT acme_migrate_create(job => 'codes_upper', source => 'src_plain.codes',
		target => 'app.codes_upper', key => '{code}',
		columns => '{"label": "upper(label)"}');
	CALL acme_migrate_run('codes_upper');
	UPDATE app.codes_upper SET qty = 0 WHERE code = 'c-00100';
});
($diffs, $rmode, $rrows, $method, $equal, $note) =
  reconcile('codes_upper', 'code');
is($diffs, 'changed c-00100', 'mapped expression: the difference is found');
is($rmode, 'full_fetch', 'a mapped expression reads every row (full_fetch)');
like($note, qr/"label" is not a source column/, 'and remote_note says why');

# a non-superuser job owner with a user mapping that holds a password
$new->safe_psql(
	'postgres', q{
	CREATE ROLE alice LOGIN;
	CREATE ROLE bob LOGIN;
	CREATE ROLE carol LOGIN;
	GRANT USAGE ON FOREIGN SERVER old_ext TO alice, bob, carol;
	CREATE USER MAPPING FOR alice SERVER old_ext
		OPTIONS (user 'alice_remote', password 'secret');
	CREATE USER MAPPING FOR carol SERVER old_ext OPTIONS (user 'alice_remote');
	GRANT USAGE ON SCHEMA src_ext, app TO alice, bob, carol;
	GRANT SELECT ON src_ext.orders TO alice, bob, carol;
	GRANT CREATE ON SCHEMA app TO alice, bob, carol;
});
($ret, $out, $err) = $new->psql(
	'postgres', q{
	SET ROLE alice;
	CREATE TABLE app.orders_alice (id bigint PRIMARY KEY, amount numeric(10,2),
		note text, placed timestamptz, flag boolean);
	SELECT acme_migrate_create(job => 'orders_alice', source => 'src_ext.orders',
		target => 'app.orders_alice', key => '{id}');
	CALL acme_migrate_run('orders_alice');
	DELETE FROM app.orders_alice WHERE id = 3;
	SELECT missing FROM acme_migrate_reconcile('orders_alice');
});
$out .= ' ' . $new->safe_psql('postgres',
	'SELECT remote_mode FROM acme_migrate.reconcile_runs ORDER BY run_id DESC LIMIT 1');
is((split /\n/, $out)[-1], "1 remote_hashes",
	'a non-superuser reconciles through his own mapping (remote_hashes)')
  or diag("out: $out\nerr: $err");

foreach my $who (['bob', qr/user mapping not found for "bob"/],
	['carol', qr/password is required/])
{
	my ($role, $want) = @$who;
	($ret, $out, $err) = $new->psql(
		'postgres', qq{
		SET ROLE $role;
		CREATE TABLE app.orders_$role (id bigint PRIMARY KEY, amount numeric(10,2),
			note text, placed timestamptz, flag boolean);
		SELECT * FROM acme_migrate_reconcile(source => 'src_ext.orders',
			target => 'app.orders_$role', key => '{id}');
	});
	like($err, $want, "$role cannot reach the remote server for a reconcile");
}

$new->stop;
$legacy->stop;
done_testing();
