#!/bin/bash
#
# huge_pages.sh: sourced by bench.sh and reconcile_bench.sh.  Backs a
# throwaway cluster's shared memory with huge pages for the run.
#
# Why: on a virtual machine the first touch of each 4 kB page of
# shared_buffers by a process costs a page-table update that the hypervisor
# traps.  Measured here (2-CPU VM, shared_buffers 4GB, 109 MB table in
# shared buffers): SELECT count(*) in a new connection took 460-990 ms, the
# same query again in that connection 43-68 ms; with huge pages 46-50 ms
# both times.  Every contender opens new connections (and parallel workers),
# so without huge pages a bench mostly measures how many pages each process
# maps, not the work done.  PostgreSQL's documentation recommends huge pages
# for a large shared_buffers on a production server.
#
# HUGE_PAGES=auto (default): reserve them when this runs as root and the
# kernel lets it (vm.nr_hugepages), else leave huge_pages = try (the
# default: none reserved, none used).  HUGE_PAGES=off: never.  The reserve
# is the cluster's own figure (postgres -C shared_memory_size_in_huge_pages)
# and is given back by huge_pages_release.
#
# huge_pages_reserve <bindir> <pgdata> <command prefix to run as the
# cluster's owner...>: sets HUGE_PAGES_SETTING (a postgresql.conf line) and
# HUGE_PAGES_NOTE (what was done, for the report).

HUGE_PAGES=${HUGE_PAGES:-auto}
HUGE_PAGES_RESERVED=0
HUGE_PAGES_SETTING="huge_pages = try"
HUGE_PAGES_NOTE="huge pages: none reserved (HUGE_PAGES=$HUGE_PAGES)"

huge_pages_reserve() {
	local bindir=$1 pgdata=$2 need cur
	shift 2
	[ "$HUGE_PAGES" != off ] || return 0
	if [ "$(id -u)" != 0 ] || [ ! -w /proc/sys/vm/nr_hugepages ]; then
		HUGE_PAGES_NOTE="huge pages: none reserved (needs root and a writable vm.nr_hugepages)"
		return 0
	fi
	need=$("$@" "$bindir/postgres" -D "$pgdata" -C shared_memory_size_in_huge_pages 2>/dev/null) || need=
	if ! [[ "$need" =~ ^[0-9]+$ ]] || [ "$need" -le 0 ]; then
		HUGE_PAGES_NOTE="huge pages: none reserved (the server did not say how many it needs)"
		return 0
	fi
	cur=$(cat /proc/sys/vm/nr_hugepages)
	echo $((cur + need)) >/proc/sys/vm/nr_hugepages 2>/dev/null || true
	HUGE_PAGES_RESERVED=$(($(cat /proc/sys/vm/nr_hugepages) - cur))
	if [ "$HUGE_PAGES_RESERVED" -lt "$need" ]; then
		huge_pages_release
		HUGE_PAGES_NOTE="huge pages: none reserved (the kernel found $HUGE_PAGES_RESERVED of $need)"
		return 0
	fi
	HUGE_PAGES_SETTING="huge_pages = on"
	HUGE_PAGES_NOTE="huge pages: $need of $(awk '/^Hugepagesize/ {print $2 " " $3}' /proc/meminfo) reserved for this run (vm.nr_hugepages $cur -> $((cur + need)), given back at the end)"
}

huge_pages_release() {
	local cur
	[ "$HUGE_PAGES_RESERVED" -gt 0 ] || return 0
	cur=$(cat /proc/sys/vm/nr_hugepages)
	echo $((cur > HUGE_PAGES_RESERVED ? cur - HUGE_PAGES_RESERVED : 0)) >/proc/sys/vm/nr_hugepages 2>/dev/null || true
	HUGE_PAGES_RESERVED=0
}

# for a cluster kept running (KEEP=1): what to do once it is stopped
huge_pages_kept_note() {
	[ "$HUGE_PAGES_RESERVED" -gt 0 ] || return 0
	echo "its $HUGE_PAGES_RESERVED huge pages stay reserved: once it is stopped, lower vm.nr_hugepages by $HUGE_PAGES_RESERVED"
}
