# AcmeTest: helpers the TAP tests of acme_migrate share.
#
# On prove's include path through the Makefile (PROVE_FLAGS += -I test/perl):
#     use AcmeTest;
package AcmeTest;

use strict;
use warnings;

use Exporter 'import';
use Time::HiRes qw(usleep);

our @EXPORT = qw(wait_for triggers_on rss_anon_kb top_context_bytes except_all);

# Poll $sql on $node until it returns 't' or $secs have passed; true when it
# did.  Errors of the query count as "not yet".
sub wait_for
{
	my ($node, $sql, $secs, $interval_us) = @_;
	my $until = time() + $secs;
	while (time() < $until)
	{
		my ($ret, $out) = $node->psql('postgres', $sql);
		return 1 if $ret == 0 && $out eq 't';
		usleep($interval_us // 100_000);
	}
	return 0;
}

# "n|m": rows of query $a not in query $b, and of $b not in $a, duplicates
# counted (EXCEPT ALL both ways); "0|0" when they hold the same rows.
sub except_all
{
	my ($node, $a, $b) = @_;
	return $node->safe_psql(
		'postgres', qq{
		SELECT (SELECT count(*) FROM ($a EXCEPT ALL $b) x),
			   (SELECT count(*) FROM ($b EXCEPT ALL $a) x)});
}

# How many of acme_migrate's capture triggers $table has.
sub triggers_on
{
	my ($node, $table) = @_;
	return $node->safe_psql(
		'postgres', qq{
		SELECT count(*) FROM pg_trigger
		 WHERE tgrelid = '$table'::regclass AND tgname LIKE 'acme_migrate_%'});
}

# The private memory (RssAnon, kB) of process $pid, undef if unknown (Linux).
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

# Bytes held by the TopMemoryContext of backend $pid itself (not its
# children), from pg_log_backend_memory_contexts in the server log; undef
# if it did not show up within 10 s.
sub top_context_bytes
{
	my ($node, $pid) = @_;
	my $offset = -s $node->logfile;
	$node->safe_psql('postgres', "SELECT pg_log_backend_memory_contexts($pid)");
	my $until = time() + 10;
	while (time() < $until)
	{
		my $log = PostgreSQL::Test::Utils::slurp_file($node->logfile, $offset);
		return $1
		  if $log =~ /\[$pid\] LOG:\s+level: 0; TopMemoryContext: (\d+) total/;
		usleep(100_000);
	}
	return undef;
}

1;
