# shellcheck shell=bash
#
# Shared helpers of test/demo.sh, test/run_tests.sh and test/pgtap.sh:
# Debian packages, build and install, and throwaway clusters.
#
# PostgreSQL refuses to run as root, so when these scripts run as root every
# server-side command (initdb, pg_ctl, psql, pg_prove, make installcheck) runs
# as the "postgres" user through runuser, in directories that user owns.  As
# any other user they run as that user, and root's help (apt-get, make
# install) is asked for through sudo.
#
# Source this file; it sets no shell options of its own.

ACME_TOP="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PG_MAJOR="${PG_MAJOR:-15}"
PG_CONFIG="${PG_CONFIG:-/usr/lib/postgresql/${PG_MAJOR}/bin/pg_config}"
# the server's bindir: where PG_CONFIG lives when it is a path (it may name a
# relocated copy; it may not exist yet on a fresh machine); a bare "pg_config"
# (Debian's /usr/bin wrapper, as make bench passes it) is asked
case "$PG_CONFIG" in
*/*) PG_BINDIR="$(dirname "$PG_CONFIG")" ;;
*) PG_BINDIR="$("$PG_CONFIG" --bindir 2>/dev/null || echo "/usr/lib/postgresql/${PG_MAJOR}/bin")" ;;
esac
export PG_CONFIG

ACME_PACKAGES=(
	"postgresql-${PG_MAJOR}"
	"postgresql-server-dev-${PG_MAJOR}"
	"postgresql-${PG_MAJOR}-pgtap"
	"postgresql-${PG_MAJOR}-cron"
	libtap-parser-sourcehandler-pgtap-perl
	libipc-run-perl
	libxxhash-dev
	libpq-dev
	build-essential
)

# ports tried for throwaway clusters: the first free one wins
ACME_PORT_MIN="${ACME_PORT_MIN:-5600}"
ACME_PORT_MAX="${ACME_PORT_MAX:-5699}"

log() { printf '==> %s\n' "$*" >&2; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }
die() {
	printf 'ERROR: %s\n' "$*" >&2
	exit 1
}

is_root() { [ "$(id -u)" -eq 0 ]; }

# run a command as root: directly when root, else through sudo
as_root() {
	if is_root; then
		"$@"
	elif command -v sudo >/dev/null 2>&1; then
		sudo "$@"
	else
		die "\"$*\" needs root, and sudo is not installed; run this as root or install sudo"
	fi
}

# run a command as the user that owns the clusters: postgres when root
as_pg() {
	if is_root; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

# Install whichever of ACME_PACKAGES (plus "$@") are missing; apt-get update
# runs once, and only when something has to be installed.  Non-zero on
# failure.
ensure_packages() {
	local pkg status missing=()
	for pkg in "${ACME_PACKAGES[@]}" "$@"; do
		status="$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)"
		if [ "$status" != "installed" ]; then
			missing+=("$pkg")
		fi
	done
	if [ "${#missing[@]}" -eq 0 ]; then
		log "Debian packages: all ${#ACME_PACKAGES[@]} present"
		return 0
	fi
	log "installing missing Debian packages: ${missing[*]}"
	# explicit returns: callers may test this function, which turns off set -e
	as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q || return 1
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" ||
		return 1
	if [ ! -x "$PG_CONFIG" ]; then
		printf 'ERROR: %s is missing after installing the packages\n' "$PG_CONFIG" >&2
		return 1
	fi
}

# Serialise "make install" when ACME_BUILD_LOCK names a lock file (several
# builds sharing one machine); plain otherwise.
_with_build_lock() {
	if [ -n "${ACME_BUILD_LOCK:-}" ] && command -v flock >/dev/null 2>&1; then
		[ -e "$ACME_BUILD_LOCK" ] || : >>"$ACME_BUILD_LOCK"
		# read-only is enough for flock, and works on another user's file
		(
			flock 9
			"$@"
		) 9<"$ACME_BUILD_LOCK"
	else
		"$@"
	fi
}

# Build as the current user, install as root; non-zero on failure.
build_and_install() {
	local jobs
	jobs="$(nproc 2>/dev/null || echo 2)"
	log "building acme_migrate (make -j$jobs)"
	_with_build_lock make -C "$ACME_TOP" -j"$jobs" PG_CONFIG="$PG_CONFIG" all || return 1
	log "installing acme_migrate (make install)"
	_with_build_lock as_root make -C "$ACME_TOP" PG_CONFIG="$PG_CONFIG" install || return 1
}

# true when nothing answers on 127.0.0.1:$1 and no socket file uses the port
port_is_free() {
	local port="$1"
	if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
		return 1
	fi
	[ ! -e "/tmp/.s.PGSQL.$port" ] && [ ! -e "/var/run/postgresql/.s.PGSQL.$port" ]
}

# Print a free port between ACME_PORT_MIN and ACME_PORT_MAX, starting at a
# random offset so that parallel runs rarely race for the same one.
find_free_port() {
	local span=$((ACME_PORT_MAX - ACME_PORT_MIN + 1)) i port
	local start=$((RANDOM % span))
	for ((i = 0; i < span; i++)); do
		port=$((ACME_PORT_MIN + (start + i) % span))
		if port_is_free "$port"; then
			echo "$port"
			return 0
		fi
	done
	return 1
}

# Throwaway cluster.  cluster_start sets CLUSTER_DIR (a mktemp -d directory
# holding data/, the socket and the log), CLUSTER_PORT and CLUSTER_HOST (the
# socket directory); extra "name = value" settings may be given as arguments.
# The superuser is "postgres" whoever runs it; authentication is trust, and
# the server listens on 127.0.0.1 and on the socket in CLUSTER_DIR only.
CLUSTER_DIR=""
CLUSTER_PORT=""
CLUSTER_HOST=""

cluster_start() {
	local attempt setting
	CLUSTER_DIR="$(mktemp -d "${TMPDIR:-/tmp}/acme_migrate.XXXXXX")"
	chmod 0755 "$CLUSTER_DIR"
	if is_root; then
		chown postgres:postgres "$CLUSTER_DIR"
	fi
	CLUSTER_HOST="$CLUSTER_DIR"
	log "initdb in $CLUSTER_DIR/data"
	as_pg "$PG_BINDIR/initdb" -D "$CLUSTER_DIR/data" -U postgres -A trust \
		-E UTF8 --no-locale --no-sync >"$CLUSTER_DIR/initdb.log" 2>&1 ||
		{
			cat "$CLUSTER_DIR/initdb.log" >&2
			die "initdb failed"
		}
	{
		echo "# acme_migrate throwaway cluster"
		echo "listen_addresses = '127.0.0.1'"
		echo "unix_socket_directories = '$CLUSTER_DIR'"
		echo "max_worker_processes = 16"
		echo "shared_buffers = 256MB"
		echo "max_wal_size = 4GB"
		echo "logging_collector = off"
		for setting in "$@"; do
			echo "$setting"
		done
	} | as_pg tee -a "$CLUSTER_DIR/data/postgresql.conf" >/dev/null
	for attempt in 1 2 3 4 5; do
		CLUSTER_PORT="$(find_free_port)" ||
			die "no free port between $ACME_PORT_MIN and $ACME_PORT_MAX"
		if as_pg "$PG_BINDIR/pg_ctl" -D "$CLUSTER_DIR/data" -l "$CLUSTER_DIR/server.log" \
			-o "-p $CLUSTER_PORT" -w -t 60 start >/dev/null; then
			log "server running on port $CLUSTER_PORT (socket in $CLUSTER_DIR)"
			return 0
		fi
		warn "server did not start on port $CLUSTER_PORT (attempt $attempt)"
		tail -n 5 "$CLUSTER_DIR/server.log" >&2 || true
	done
	die "could not start a server; see $CLUSTER_DIR/server.log"
}

# Stop the throwaway cluster and remove its directory (KEEP_DIR=1 keeps it).
cluster_stop() {
	[ -n "$CLUSTER_DIR" ] || return 0
	if [ -f "$CLUSTER_DIR/data/postmaster.pid" ]; then
		as_pg "$PG_BINDIR/pg_ctl" -D "$CLUSTER_DIR/data" -m fast -w stop >/dev/null 2>&1 ||
			warn "could not stop the server in $CLUSTER_DIR"
	fi
	if [ "${KEEP_DIR:-0}" != 1 ]; then
		rm -rf "$CLUSTER_DIR"
	fi
	CLUSTER_DIR=""
}

# print the last lines of the server log (for failures)
cluster_log_tail() {
	if [ -n "$CLUSTER_DIR" ] && [ -f "$CLUSTER_DIR/server.log" ]; then
		echo "---- last lines of the server log ($CLUSTER_DIR/server.log) ----" >&2
		tail -n "${1:-40}" "$CLUSTER_DIR/server.log" >&2
		echo "----" >&2
	fi
}

# psql on the throwaway cluster as postgres; SQL comes from arguments or stdin
# (stdin is read by this shell, so files need not be readable by postgres)
# (database CLUSTER_DB, default postgres)
CLUSTER_DB="${CLUSTER_DB:-postgres}"
cpsql() {
	as_pg "$PG_BINDIR/psql" -X -v ON_ERROR_STOP=1 -h "$CLUSTER_HOST" -p "$CLUSTER_PORT" \
		-U postgres -d "$CLUSTER_DB" "$@"
}
