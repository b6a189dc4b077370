# Monitoring and the pgTAP helpers without pgTAP (issue 10, items 5 and 6).
#
# The view acme_migrate.metrics has the documented columns, all numbers
# but the job's name and state, and shows a copying job and a capturing
# one with its backlog.  Every query of the postgres_exporter file
# contrib/postgres_exporter/acme_migrate.yaml (parsed here: the "query: |"
# block and the metrics list of each top-level key) runs against this
# database, returns the columns its metrics list names, and numbers where
# they are not labels.  In a database without pgTAP,
# acme_migrate_is_done and acme_migrate_is_reconciled return TAP lines of
# their own, numbered in the session.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('operations');
$node->init;
$node->start;

$node->safe_psql(
	'postgres', q{
	CREATE EXTENSION acme_migrate;
	CREATE TABLE src (id integer PRIMARY KEY, v text);
	INSERT INTO src SELECT g, 'v' || g FROM generate_series(1, 1000) g;
	ANALYZE src;
	CREATE TABLE dst (id integer PRIMARY KEY, v text);
	SELECT acme_migrate_create('copying', 'src', 'dst', batch_size => 300);
	SELECT acme_migrate_batch('copying');
	CREATE TABLE live (id integer PRIMARY KEY, v text);
	INSERT INTO live SELECT g, 'v' || g FROM generate_series(1, 100) g;
	CREATE TABLE live2 (id integer PRIMARY KEY, v text);
	SELECT acme_migrate_create('capturing', 'live', 'live2', capture_changes => true);
	SELECT acme_migrate_batch('capturing');
	UPDATE live SET v = 'w' WHERE id <= 3;
});

is( $node->safe_psql(
		'postgres', q{
	SELECT string_agg(column_name || ' ' || data_type, ', ' ORDER BY ordinal_position)
	  FROM information_schema.columns
	 WHERE table_schema = 'acme_migrate' AND table_name = 'metrics'
}),
	'job text, state text, rows_done bigint, rows_total bigint, '
	  . 'rows_per_second double precision, rejected bigint, batches bigint, '
	  . 'last_batch_seconds double precision, workers integer, capture_backlog bigint, '
	  . 'capture_lag_seconds double precision',
	'acme_migrate.metrics has the documented columns, numbers but job and state');
is( $node->safe_psql(
		'postgres', q{
	SELECT string_agg(format('%s %s %s/%s batches %s backlog %s lag>0 %s last>0 %s', job, state,
						rows_done, rows_total, batches, capture_backlog,
						capture_lag_seconds > 0, last_batch_seconds > 0), '; ' ORDER BY job)
	  FROM acme_migrate.metrics
}),
	'capturing copied 100/100 batches 1 backlog 3 lag>0 t last>0 t; '
	  . 'copying running 300/1000 batches 1 backlog 0 lag>0 f last>0 t',
	'acme_migrate.metrics shows both jobs, the capture backlog and its age');

# the exporter's queries, read from the YAML file
my $yaml = slurp_file('contrib/postgres_exporter/acme_migrate.yaml');
my (%query, %metrics, $key, $in);
for my $line (split /\n/, $yaml)
{
	next if $line =~ /^\s*#/ || $line =~ /^\s*$/;
	if ($line =~ /^(\w+):\s*$/)
	{
		$key = $1;
		$in = '';
		$query{$key} = '';
		$metrics{$key} = [];
	}
	elsif ($line =~ /^  query:\s*\|\s*$/) { $in = 'query'; }
	elsif ($line =~ /^  metrics:\s*$/) { $in = 'metrics'; }
	elsif ($in eq 'query' && $line =~ /^    (.*)$/) { $query{$key} .= "$1\n"; }
	elsif ($in eq 'metrics' && $line =~ /^    - (\w+):\s*$/)
	{
		push @{ $metrics{$key} }, { name => $1 };
	}
	elsif ($in eq 'metrics' && $line =~ /^        usage:\s*"(\w+)"/)
	{
		$metrics{$key}[-1]{usage} = $1;
	}
	elsif ($in eq 'metrics' && $line =~ /^        description:\s*"(.+)"/)
	{
		$metrics{$key}[-1]{description} = $1;
	}
}
is_deeply([ sort keys %query ], [qw(acme_migrate_job acme_migrate_job_state)],
	'the exporter file has its two queries');
for my $k (sort keys %query)
{
	my @m = @{ $metrics{$k} };
	ok( (!grep { !$_->{usage} || $_->{usage} !~ /^(LABEL|GAUGE|COUNTER)$/ || !$_->{description} }
		  @m),
		"$k: every metric has a usage and a description");
	my ($ret, $out, $err) = $node->psql(
		'postgres',
		"SELECT json_agg(q) FROM (\n$query{$k}) q",
		extra_params => [ '-v', 'ON_ERROR_STOP=1' ]);
	is($ret, 0, "$k: the query runs") or diag($err);
	my @rows = ($out =~ /\{[^{}]*\}/g);
	cmp_ok(scalar(@rows), '>', 1, "$k: it returns rows");
	my @cols = ($rows[0] =~ /"(\w+)"\s*:/g);
	is(join(',', @cols), join(',', map { $_->{name} } @m),
		"$k: its columns are the metrics listed");
	my @bad;
	for my $row (@rows)
	{
		for my $m (grep { $_->{usage} ne 'LABEL' } @m)
		{
			push @bad, "$m->{name} in $row"
			  unless $row =~ /"$m->{name}"\s*:\s*-?[0-9.]+(e[-+]?[0-9]+)?\s*[,}]/;
		}
	}
	is(join('; ', @bad), '', "$k: every value that is not a label is a number");
}

# the pgTAP helpers without pgTAP: TAP lines of their own, numbered
is( $node->safe_psql(
		'postgres', q{
	SELECT acme_migrate_is_done('copying');
	CALL acme_migrate_run('copying');
	SELECT acme_migrate_is_done('copying');
	SELECT acme_migrate_is_reconciled('copying', sample => 0.2, description => 'sampled');
}),
	qq{not ok 1 - migration job "copying" is done
# Failed test 1: "migration job "copying" is done"
#     state: running (done or cut_over expected)
#     rows read: 300 of about 1000, copied: 300, rejected: 0, batches: 1
#     checkpoint: {300}
ok 2 - migration job "copying" is done
ok 3 - sampled},
	'without pgTAP the helpers print TAP lines numbered in the session');

$node->stop;
done_testing();
