#!/usr/bin/env bash
# scripts/services.sh: make sure the services graft's demo, tests and benchmarks need answer.
#
#   scripts/services.sh [test|demo]
#
#   PostgreSQL at GRAFT_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres):
#              the user logs in without a password; for `test` (the default),
#              max_connections >= 300, because the tests run in parallel
#   Redis      at GRAFT_REDIS_URL (default redis://127.0.0.1:6379/0): answers PING
#
# What it changes. By itself, only what it created:
#   - nothing answers on the loopback PostgreSQL port and no cluster is configured there:
#     it creates and starts a Debian cluster of its own, named "graft" (trust auth on
#     loopback, max_connections 300), and may reconfigure and restart that cluster later;
#   - nothing answers on the loopback Redis port: it starts a redis-server of its own
#     (no persistence, state in ${XDG_STATE_HOME:-~/.local/state}/graft/redis).
# Anything else it would have to change (install packages, start a cluster someone else
# configured, add a pg_hba.conf rule, raise max_connections and restart) it does only when
# asked, with CI=true (set by .ci/run) or GRAFT_SETUP_SERVICES=1. Otherwise it stops with a
# message that names what is missing and the command that fixes it. Services that are not
# on loopback are only checked. Running it again changes nothing; it prints one line per
# service, and how to stop what it started.
set -euo pipefail

MODE="${1:-test}"
case "$MODE" in
test | demo) ;;
*)
	echo "usage: scripts/services.sh [test|demo]" >&2
	exit 2
	;;
esac

readonly DEFAULT_DATABASE_URL="postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable&binary_parameters=yes"
readonly DEFAULT_REDIS_URL="redis://127.0.0.1:6379/0"
readonly MIN_MAX_CONNECTIONS=300
readonly DEADLINE_SECONDS=60
readonly OWN_CLUSTER=graft
readonly OWN_MARKER=graft-services.created

PERMITTED=0
if [[ "${CI:-}" == true || "${GRAFT_SETUP_SERVICES:-}" == 1 ]]; then
	PERMITTED=1
fi
readonly PERMITTED
# CAN_SETUP is 0 where even GRAFT_SETUP_SERVICES=1 could not help (a server that is not a
# Debian cluster).
CAN_SETUP=1
readonly SETUP_HINT="or let this script do it: GRAFT_SETUP_SERVICES=1 scripts/services.sh $MODE"

LOG="$(mktemp "${TMPDIR:-/tmp}/graft-services.XXXXXX")"
trap 'rm -f "$LOG"' EXIT

die() {
	echo "services.sh: $*" >&2
	if [[ -s "$LOG" ]]; then
		echo "--- output of the last commands ---" >&2
		tail -n 40 "$LOG" >&2
	fi
	exit 1
}

# missing WHAT FIX...: stop, naming what is missing and the commands that fix it.
missing() {
	local what="$1"
	shift
	{
		echo "services.sh: $what"
		echo "  fix it with:"
		printf '    %s\n' "$@"
		((PERMITTED || !CAN_SETUP)) || echo "  $SETUP_HINT"
	} >&2
	exit 1
}

# Commands that need root: run directly as root, through sudo otherwise.
SUDO=()
if [[ "$(id -u)" -ne 0 ]]; then
	SUDO=(sudo)
fi
as_root() {
	if ((${#SUDO[@]})) && ! command -v sudo >/dev/null 2>&1; then
		die "not root and sudo is not installed; cannot run: $*"
	fi
	"${SUDO[@]}" "$@"
}
S="${SUDO[*]}${SUDO[*]:+ }" # "sudo " in the commands we suggest, when needed

# Run a command with its output in $LOG (shown only when something fails). Daemons started
# through it inherit neither the terminal/pipe of the caller nor the lock on fd 9.
quiet() { "$@" </dev/null >>"$LOG" 2>&1 9>&-; }

# Serialise concurrent runs (e.g. `make test` and `make demo` started together).
LOCK="${TMPDIR:-/tmp}/graft-services.lock"
if command -v flock >/dev/null 2>&1 && { exec 9>>"$LOCK"; } 2>/dev/null; then
	flock -w 300 9 || die "timed out waiting for another scripts/services.sh run (lock $LOCK)"
fi

# tcp_open HOST PORT: something accepts TCP connections there.
tcp_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# wait_until END CHECK...: poll CHECK until it succeeds or $SECONDS reaches END.
wait_until() {
	local end="$1"
	shift
	until "$@"; do
		((SECONDS < end)) || return 1
		sleep 0.5
	done
}

is_loopback() { [[ "$1" == 127.0.0.1 || "$1" == localhost || "$1" == ::1 || "$1" == "[::1]" ]]; }

install_packages() {
	local apt=(env DEBIAN_FRONTEND=noninteractive apt-get -y -q -o Dpkg::Use-Pty=0)
	if ! quiet as_root "${apt[@]}" install "$@"; then
		quiet as_root "${apt[@]}" update || die "apt-get update failed"
		quiet as_root "${apt[@]}" install "$@" || die "apt-get install $* failed"
	fi
	hash -r
}

# need_commands PACKAGE COMMAND...: install PACKAGE when a command is missing (when
# permitted), else stop naming the package.
need_commands() {
	local pkg="$1" cmd
	shift
	for cmd in "$@"; do
		command -v "$cmd" >/dev/null 2>&1 && continue
		((PERMITTED)) || missing "$cmd is not installed (Debian package $pkg)" "${S}apt-get install $pkg"
		install_packages "$pkg"
		command -v "$cmd" >/dev/null 2>&1 || die "$cmd is still missing after installing $pkg"
		return 0
	done
}

# ---------------------------------------------------------------- PostgreSQL

DATABASE_URL="${GRAFT_DATABASE_URL:-$DEFAULT_DATABASE_URL}"
PG_HOST="" PG_PORT="" PG_USER="" PG_DB="" PG_SSLMODE=""

# parse_database_url: split a postgres:// URL into the parts libpq tools take.
parse_database_url() {
	local re='^postgres(ql)?://(([^:@/]*)(:[^@/]*)?@)?(\[[^]]*\]|[^:/?]*)(:([0-9]+))?(/([^?]*))?(\?(.*))?$'
	[[ "$DATABASE_URL" =~ $re ]] || die "GRAFT_DATABASE_URL is not a postgres:// URL: $DATABASE_URL"
	PG_USER="${BASH_REMATCH[3]:-postgres}"
	PG_HOST="${BASH_REMATCH[5]:-127.0.0.1}"
	PG_PORT="${BASH_REMATCH[7]:-5432}"
	PG_DB="${BASH_REMATCH[9]:-postgres}"
	PG_SSLMODE=prefer
	if [[ "${BASH_REMATCH[11]}" =~ (^|&)sslmode=([^&]*) ]]; then PG_SSLMODE="${BASH_REMATCH[2]}"; fi
}

# libpq_url: the URL without the query parameters only lib/pq knows (binary_parameters).
libpq_url() {
	local base="${DATABASE_URL%%\?*}"
	echo "$base?sslmode=$PG_SSLMODE&connect_timeout=5"
}

pg_answers() { pg_isready -q -d "$(libpq_url)" >/dev/null 2>&1; }

# pg_sql SQL: run SQL at the URL, never prompting for a password.
pg_sql() { env PGCONNECT_TIMEOUT=5 psql -X -w -At -v ON_ERROR_STOP=1 -d "$(libpq_url)" -c "$1"; }

PG_VER="" PG_CLUSTER=""

# find_cluster: the Debian cluster configured on the port, if any.
find_cluster() {
	local line=""
	PG_VER="" PG_CLUSTER=""
	if command -v pg_lsclusters >/dev/null 2>&1; then
		line="$(pg_lsclusters -h 2>/dev/null | awk -v p="$PG_PORT" '$3 == p { print $1, $2; exit }')" || line=""
	fi
	[[ -n "$line" ]] && read -r PG_VER PG_CLUSTER <<<"$line"
	return 0
}

cluster_dir() { echo "/etc/postgresql/$PG_VER/$PG_CLUSTER"; }

# own_cluster: the cluster on the port is the one this script created.
own_cluster() { [[ "$PG_CLUSTER" == "$OWN_CLUSTER" && -f "$(cluster_dir)/$OWN_MARKER" ]]; }

# may_change_cluster: the script may reconfigure and restart the cluster on the port.
may_change_cluster() { [[ -n "$PG_CLUSTER" ]] && { own_cluster || ((PERMITTED)); }; }

# admin_cmd ACTION: the command a person runs to reload or restart the server on the port.
admin_cmd() {
	if [[ -n "$PG_CLUSTER" ]]; then
		echo "${S}pg_ctlcluster $PG_VER $PG_CLUSTER $1"
	else
		echo "pg_ctl $1 -D <its data directory>    # as the user that runs it"
	fi
}

pg_ctl() { quiet as_root pg_ctlcluster --skip-systemctl-redirect "$PG_VER" "$PG_CLUSTER" "$@"; }
cluster_log() { echo "/var/log/postgresql/postgresql-$PG_VER-$PG_CLUSTER.log"; }

# create_own_cluster: a new Debian cluster "graft" on the loopback port, trust auth for
# TCP from loopback, max_connections as the tests need; marked as created by this script.
create_own_cluster() {
	PG_VER="$(ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -1)" || PG_VER=""
	[[ -n "$PG_VER" ]] || die "no PostgreSQL server under /usr/lib/postgresql"
	PG_CLUSTER="$OWN_CLUSTER"
	if [[ -d "$(cluster_dir)" ]]; then
		missing "a cluster $PG_VER/$OWN_CLUSTER exists but is configured on another port than $PG_PORT" \
			"${S}pg_ctlcluster $PG_VER $OWN_CLUSTER start    # and use its port in GRAFT_DATABASE_URL"
	fi
	quiet as_root pg_createcluster --port "$PG_PORT" -o listen_addresses=localhost \
		-o "max_connections=$MIN_MAX_CONNECTIONS" "$PG_VER" "$PG_CLUSTER" -- --auth-host=trust --auth-local=peer ||
		die "pg_createcluster $PG_VER $PG_CLUSTER failed"
	echo "created by graft scripts/services.sh; it may reconfigure and restart this cluster" |
		quiet as_root tee "$(cluster_dir)/$OWN_MARKER"
	pg_ctl start || die "pg_ctlcluster $PG_VER $PG_CLUSTER start failed (log: $(cluster_log))"
	PG_NOTES+=("created cluster $PG_VER/$PG_CLUSTER; stop it with: ${S}pg_ctlcluster $PG_VER $PG_CLUSTER stop; remove it with: ${S}pg_dropcluster --stop $PG_VER $PG_CLUSTER")
}

# start_postgres: nothing answers on the loopback port.
start_postgres() {
	need_commands postgresql-client pg_isready psql
	find_cluster
	if [[ -z "$PG_CLUSTER" ]]; then
		if ! compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || ! command -v pg_createcluster >/dev/null 2>&1; then
			((PERMITTED)) || missing "no PostgreSQL answers on $PG_HOST:$PG_PORT and no PostgreSQL server is installed" \
				"${S}apt-get install postgresql    # then run this script again"
			install_packages postgresql
			find_cluster # the package may have created (and started) a cluster on the port
		fi
	fi
	if [[ -z "$PG_CLUSTER" ]]; then
		create_own_cluster
		PG_STATE="started"
		return
	fi
	if ! may_change_cluster; then
		missing "no PostgreSQL answers on $PG_HOST:$PG_PORT; cluster $PG_VER/$PG_CLUSTER is configured on that port but not running" \
			"${S}pg_ctlcluster $PG_VER $PG_CLUSTER start"
	fi
	pg_ctl start || die "pg_ctlcluster $PG_VER $PG_CLUSTER start failed (log: $(cluster_log))"
	PG_STATE="started (cluster $PG_VER/$PG_CLUSTER)"
}

# ensure_login: the URL's user logs in without a password.
ensure_login() {
	local err rule hba
	err="$(pg_sql 'select 1' 2>&1 >/dev/null)" && return 0
	is_loopback "$PG_HOST" || die "cannot log in at $DATABASE_URL: $err"
	find_cluster
	[[ -n "$PG_CLUSTER" ]] || CAN_SETUP=0
	if [[ "$err" == *"role \"$PG_USER\" does not exist"* ]]; then
		CAN_SETUP=0
		missing "user $PG_USER does not exist on the PostgreSQL at $PG_HOST:$PG_PORT" \
			"psql -h $PG_HOST -p $PG_PORT -U postgres -c 'CREATE ROLE \"$PG_USER\" LOGIN SUPERUSER'" \
			"(or set GRAFT_DATABASE_URL to a URL with a user that exists)"
	fi
	rule="host    all    $PG_USER    127.0.0.1/32    trust    # added by graft scripts/services.sh"
	if ! may_change_cluster; then
		hba="the pg_hba.conf of the server on port $PG_PORT (SHOW hba_file)"
		[[ -n "$PG_CLUSTER" ]] && hba="$(cluster_dir)/pg_hba.conf"
		missing "user $PG_USER cannot log in to $PG_HOST:$PG_PORT without a password: $err" \
			"put this line first in $hba:" \
			"  $rule" \
			"then reload it: $(admin_cmd reload)" \
			"(or set GRAFT_DATABASE_URL to a URL with a password)"
	fi
	hba="$(pg_conftool -s "$PG_VER" "$PG_CLUSTER" show hba_file 2>/dev/null || true)"
	hba="${hba//\'/}"
	[[ -n "$hba" ]] || hba="$(cluster_dir)/pg_hba.conf"
	# First matching line wins, so the rule goes on top.
	if as_root test -s "$hba"; then
		quiet as_root sed -i "1i $rule" "$hba" || die "cannot edit $hba"
	else
		echo "$rule" | quiet as_root tee -a "$hba" || die "cannot edit $hba"
	fi
	pg_ctl reload || die "pg_ctlcluster $PG_VER $PG_CLUSTER reload failed"
	wait_until $((SECONDS + 10)) quiet pg_sql 'select 1' ||
		die "user $PG_USER still cannot log in to $PG_HOST:$PG_PORT after adding a trust rule to $hba"
	PG_NOTES+=("trust auth added for $PG_USER@127.0.0.1 in $hba")
}

# ensure_max_connections: the tests run in parallel, each package with its own pools.
ensure_max_connections() {
	local cur datadir
	[[ "$MODE" == test ]] || return 0
	cur="$(pg_sql 'show max_connections' 2>>"$LOG")" || die "cannot read max_connections at $DATABASE_URL"
	((cur >= MIN_MAX_CONNECTIONS)) && return 0
	is_loopback "$PG_HOST" || die "max_connections at $DATABASE_URL is $cur; the tests need at least $MIN_MAX_CONNECTIONS"
	find_cluster
	[[ -n "$PG_CLUSTER" ]] || CAN_SETUP=0
	if ! may_change_cluster; then
		missing "max_connections of the PostgreSQL on $PG_HOST:$PG_PORT is $cur; the tests run in parallel and need at least $MIN_MAX_CONNECTIONS (make demo does not)" \
			"psql '$(libpq_url)' -c 'ALTER SYSTEM SET max_connections = $MIN_MAX_CONNECTIONS'" \
			"$(admin_cmd restart)"
	fi
	datadir="$(pg_sql 'show data_directory' 2>>"$LOG")" || die "cannot read data_directory"
	quiet pg_sql "alter system set max_connections = $MIN_MAX_CONNECTIONS" || die "ALTER SYSTEM SET max_connections failed"
	if ! pg_ctl restart || ! wait_until $((SECONDS + DEADLINE_SECONDS)) pg_answers; then
		# Do not leave PostgreSQL down: drop the setting and start it again as it was.
		as_root sed -i '/^[[:space:]]*max_connections[[:space:]]*=/d' "$datadir/postgresql.auto.conf" 2>>"$LOG" || true
		pg_ctl start || true
		die "PostgreSQL did not come back after raising max_connections to $MIN_MAX_CONNECTIONS (setting reverted; log: $(cluster_log))"
	fi
	cur="$(pg_sql 'show max_connections' 2>>"$LOG")" || die "cannot read max_connections after restart"
	((cur >= MIN_MAX_CONNECTIONS)) || die "max_connections is still $cur after restart (overridden on the command line?)"
	PG_NOTES+=("max_connections raised to $cur, restarted")
}

# ---------------------------------------------------------------- Redis

REDIS_URL="${GRAFT_REDIS_URL:-$DEFAULT_REDIS_URL}"
REDIS_HOST="" REDIS_PORT=""

parse_redis_url() {
	local re='^rediss?://([^@/]*@)?(\[[^]]*\]|[^:/?]*)(:([0-9]+))?(/.*)?$'
	[[ "$REDIS_URL" =~ $re ]] || die "GRAFT_REDIS_URL is not a redis:// URL: $REDIS_URL"
	REDIS_HOST="${BASH_REMATCH[2]:-127.0.0.1}"
	REDIS_PORT="${BASH_REMATCH[4]:-6379}"
}

# redis-cli has no reply timeout: bound it so a silent listener cannot hang the script.
TIMEOUT=()
command -v timeout >/dev/null 2>&1 && TIMEOUT=(timeout 5)
redis_reply() { "${TIMEOUT[@]}" redis-cli -u "$REDIS_URL" ping 2>&1 || true; }
redis_ready() { [[ "$(redis_reply)" == PONG ]]; }

# start_redis: a redis-server of this script's own on the loopback port.
start_redis() {
	local reply dir
	reply="$(redis_reply)"
	# Something that answers, but not with PONG (e.g. NOAUTH): starting another server cannot help.
	if [[ -n "$reply" && "$reply" != *"Connection refused"* && "$reply" != *"Could not connect"* ]]; then
		die "something answers on $REDIS_HOST:$REDIS_PORT but PING returned: $reply"
	fi
	if [[ -z "$reply" ]] && tcp_open "$REDIS_HOST" "$REDIS_PORT"; then
		die "something listens on $REDIS_HOST:$REDIS_PORT but does not answer PING"
	fi
	need_commands redis-server redis-server
	dir="${XDG_STATE_HOME:-${HOME:-/tmp}/.local/state}/graft/redis-$REDIS_PORT"
	mkdir -p "$dir" 2>/dev/null || { dir="${TMPDIR:-/tmp}/graft-redis-$REDIS_PORT" && mkdir -p "$dir"; }
	REDIS_LOG="$dir/redis.log"
	quiet redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" \
		--save "" --appendonly no --dir "$dir" --logfile "$REDIS_LOG" --pidfile "$dir/redis.pid" ||
		die "redis-server failed to start (log: $REDIS_LOG)"
	REDIS_STATE="started (dir $dir; stop it with: redis-cli -p $REDIS_PORT shutdown nosave)"
}

# ---------------------------------------------------------------- main

PG_STATE="ok (already running)" REDIS_STATE="ok (already running)" REDIS_LOG="" PG_NOTES=()

parse_database_url
parse_redis_url
need_commands postgresql-client pg_isready psql
need_commands redis-tools redis-cli

# pg_isready: 0 accepting, 1 rejecting (starting up or shutting down: just wait), 2 no answer.
pg_rc=0
pg_isready -q -d "$(libpq_url)" >/dev/null 2>&1 || pg_rc=$?
if ((pg_rc != 0 && pg_rc != 1)); then
	is_loopback "$PG_HOST" || die "PostgreSQL at $DATABASE_URL does not answer (pg_isready: $pg_rc); this script starts only loopback services"
	start_postgres
fi
if ! redis_ready; then
	is_loopback "$REDIS_HOST" || die "Redis at $REDIS_URL does not answer PING: $(redis_reply); this script starts only loopback services"
	start_redis
fi

deadline=$((SECONDS + DEADLINE_SECONDS))
wait_until "$deadline" pg_answers ||
	die "PostgreSQL does not answer on $PG_HOST:$PG_PORT after ${DEADLINE_SECONDS}s (log: /var/log/postgresql/)"
wait_until "$deadline" redis_ready ||
	die "Redis does not answer on $REDIS_HOST:$REDIS_PORT after ${DEADLINE_SECONDS}s${REDIS_LOG:+ (log: $REDIS_LOG)}; last reply: $(redis_reply)"

ensure_login
ensure_max_connections

if ((${#PG_NOTES[@]})); then
	notes="$(printf '; %s' "${PG_NOTES[@]}")"
	if [[ "$PG_STATE" == *")" ]]; then
		PG_STATE="${PG_STATE%)}$notes)" # ok (already running; ...)
	else
		PG_STATE="$PG_STATE (${notes#; })" # started (...)
	fi
fi
echo "postgres $PG_HOST:$PG_PORT: $PG_STATE"
echo "redis $REDIS_HOST:$REDIS_PORT: $REDIS_STATE"
