#!/usr/bin/env bash
# scripts/services.sh: make sure the services graft's demo, tests and benchmarks need are up.
#
#   PostgreSQL on 127.0.0.1:5432, user postgres, trust auth, max_connections >= 300
#   Redis      on 127.0.0.1:6379
#
# A service that already answers is left alone (apart from the PostgreSQL auth and
# max_connections checks below). Otherwise the Debian packages are installed if the
# binaries are missing, and the service is started on loopback. Idempotent; prints one
# line per service on success and details only on failure.
set -euo pipefail

readonly PG_HOST=127.0.0.1 PG_PORT=5432 PG_USER=postgres
readonly REDIS_HOST=127.0.0.1 REDIS_PORT=6379
readonly MIN_MAX_CONNECTIONS=300
readonly DEADLINE_SECONDS=60

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

# Commands that need root: run directly as root, through sudo otherwise.
SUDO=()
if [[ "$(id -u)" -ne 0 ]]; then
	command -v sudo >/dev/null 2>&1 || die "not root and sudo is not installed; cannot install or start services"
	SUDO=(sudo)
fi
as_root() { "${SUDO[@]}" "$@"; }

# Run a command with its output in $LOG (shown only when something fails). Daemons started
# through it inherit neither the terminal/pipe of the caller nor the lock on fd 9.
quiet() { "$@" </dev/null >>"$LOG" 2>&1 9>&-; }

# Serialise concurrent runs (e.g. `make test` and `make demo` started together).
LOCK="${TMPDIR:-/tmp}/graft-services.lock"
if command -v flock >/dev/null 2>&1 && { exec 9>>"$LOCK"; } 2>/dev/null; then
	flock -w 300 9 || die "timed out waiting for another scripts/services.sh run (lock $LOCK)"
fi

# tcp_open HOST PORT: something accepts TCP connections there (used when clients are missing).
tcp_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# ---------------------------------------------------------------- readiness probes

pg_ready() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT" >/dev/null 2>&1; }

# pg_sql SQL: run SQL over TCP as user postgres, never prompting for or using a password.
pg_sql() {
	env -u PGPASSWORD -u PGSERVICE PGPASSFILE=/nonexistent/graft-no-pgpass PGCONNECT_TIMEOUT=5 \
		psql -X -w -At -v ON_ERROR_STOP=1 \
		"host=$PG_HOST port=$PG_PORT user=$PG_USER dbname=postgres sslmode=disable" \
		-c "$1"
}

# redis-cli has no reply timeout: bound it so a silent listener cannot hang the script.
TIMEOUT=()
command -v timeout >/dev/null 2>&1 && TIMEOUT=(timeout 5)
redis_reply() { "${TIMEOUT[@]}" redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>&1 || true; }
redis_ready() { [[ "$(redis_reply)" == PONG ]]; }

# wait_until END CHECK...: poll CHECK until it succeeds or $SECONDS reaches END.
wait_until() {
	local end="$1"
	shift
	until "$@"; do
		((SECONDS < end)) || return 1
		sleep 0.5
	done
}

# ---------------------------------------------------------------- packages

pg_server_installed() {
	command -v pg_ctlcluster >/dev/null 2>&1 && compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null
}

install_packages() {
	local pkgs=("$@")
	local apt=(env DEBIAN_FRONTEND=noninteractive apt-get -y -q -o Dpkg::Use-Pty=0)
	if ! quiet as_root "${apt[@]}" install "${pkgs[@]}"; then
		quiet as_root "${apt[@]}" update || die "apt-get update failed"
		quiet as_root "${apt[@]}" install "${pkgs[@]}" || die "apt-get install ${pkgs[*]} failed"
	fi
	hash -r
}

ensure_packages() {
	local pkgs=()
	if ! command -v pg_isready >/dev/null 2>&1 || ! command -v psql >/dev/null 2>&1; then
		# Clients are needed in any case; the server only when nothing answers.
		if tcp_open "$PG_HOST" "$PG_PORT"; then pkgs+=(postgresql-client); else pkgs+=(postgresql); fi
	elif ! tcp_open "$PG_HOST" "$PG_PORT" && ! pg_server_installed; then
		pkgs+=(postgresql)
	fi
	if ! command -v redis-cli >/dev/null 2>&1; then
		if tcp_open "$REDIS_HOST" "$REDIS_PORT"; then pkgs+=(redis-tools); else pkgs+=(redis-server); fi
	elif ! tcp_open "$REDIS_HOST" "$REDIS_PORT" && ! command -v redis-server >/dev/null 2>&1; then
		pkgs+=(redis-server)
	fi
	if ((${#pkgs[@]})); then
		install_packages "${pkgs[@]}"
	fi
}

# ---------------------------------------------------------------- PostgreSQL

PG_VER="" PG_CLUSTER=""

# find_cluster: the Debian cluster configured on port 5432, else the first version's "main".
find_cluster() {
	local line=""
	if command -v pg_lsclusters >/dev/null 2>&1; then
		line="$(pg_lsclusters -h 2>/dev/null | awk -v p="$PG_PORT" '$3 == p { print $1, $2; exit }')" || line=""
	fi
	if [[ -n "$line" ]]; then
		read -r PG_VER PG_CLUSTER <<<"$line"
	else
		PG_VER="$(ls /etc/postgresql 2>/dev/null | head -1)" || PG_VER=""
		PG_CLUSTER=main
	fi
}

have_cluster() { [[ -n "$PG_VER" && -f "/etc/postgresql/$PG_VER/$PG_CLUSTER/postgresql.conf" ]]; }

pg_conf_show() { pg_conftool -s "$PG_VER" "$PG_CLUSTER" show "$1" 2>/dev/null || true; }
pg_conf_set() { quiet as_root pg_conftool "$PG_VER" "$PG_CLUSTER" set "$1" "$2"; }

pg_ctl() { quiet as_root pg_ctlcluster --skip-systemctl-redirect "$PG_VER" "$PG_CLUSTER" "$@"; }

# Make the cluster listen on 127.0.0.1:5432 (only changes what is missing).
configure_listen() {
	local port addrs
	port="$(pg_conf_show port)"
	if [[ "$port" != "$PG_PORT" ]]; then
		pg_conf_set port "$PG_PORT" || die "cannot set port=$PG_PORT for cluster $PG_VER/$PG_CLUSTER"
	fi
	# Unset means the default, localhost (127.0.0.1 and ::1).
	addrs="$(pg_conftool -s "$PG_VER" "$PG_CLUSTER" show listen_addresses 2>/dev/null)" || addrs=localhost
	addrs="${addrs//\'/}"
	# pg_conftool quotes the value only when it is neither a number nor a plain word, so a
	# bare 127.0.0.1 would be written unquoted (a syntax error); localhost and lists are safe.
	case ",${addrs// /}," in
	*,\*,* | *,127.0.0.1,* | *,0.0.0.0,* | *,localhost,*) ;;
	,,) pg_conf_set listen_addresses localhost || die "cannot set listen_addresses" ;;
	*) pg_conf_set listen_addresses "$addrs,127.0.0.1" || die "cannot set listen_addresses" ;;
	esac
}

start_postgres() {
	find_cluster
	if ! have_cluster; then
		if [[ -z "$PG_VER" ]]; then
			PG_VER="$(ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -1)" || PG_VER=""
			[[ -n "$PG_VER" ]] || die "no PostgreSQL server found under /usr/lib/postgresql"
		fi
		PG_CLUSTER=main
		quiet as_root pg_createcluster --port "$PG_PORT" "$PG_VER" "$PG_CLUSTER" ||
			die "pg_createcluster $PG_VER $PG_CLUSTER failed"
	fi
	configure_listen
	# A cluster that runs but does not answer on TCP needs a restart to pick up the config.
	if quiet as_root pg_ctlcluster "$PG_VER" "$PG_CLUSTER" status; then
		pg_ctl restart || die "pg_ctlcluster $PG_VER $PG_CLUSTER restart failed (log: /var/log/postgresql/postgresql-$PG_VER-$PG_CLUSTER.log)"
	else
		pg_ctl start || die "pg_ctlcluster $PG_VER $PG_CLUSTER start failed (log: /var/log/postgresql/postgresql-$PG_VER-$PG_CLUSTER.log)"
	fi
}

# Make sure user postgres logs in from 127.0.0.1 without a password.
ensure_trust() {
	quiet pg_sql 'select 1' && return 0
	find_cluster
	have_cluster || die "PostgreSQL answers on $PG_HOST:$PG_PORT but user $PG_USER cannot log in without a password, and no Debian cluster on port $PG_PORT was found to fix pg_hba.conf"
	local hba rule="host    all    $PG_USER    127.0.0.1/32    trust    # added by graft scripts/services.sh"
	hba="$(pg_conf_show hba_file)"
	hba="${hba//\'/}"
	[[ -n "$hba" ]] || hba="/etc/postgresql/$PG_VER/$PG_CLUSTER/pg_hba.conf"
	# First matching line wins, so the rule goes on top.
	if as_root test -s "$hba"; then
		quiet as_root sed -i "1i $rule" "$hba" || die "cannot edit $hba"
	else
		echo "$rule" | quiet as_root tee -a "$hba" || die "cannot edit $hba"
	fi
	pg_ctl reload || die "pg_ctlcluster $PG_VER $PG_CLUSTER reload failed"
	sleep 0.5
	quiet pg_sql 'select 1' || die "user $PG_USER still cannot log in to $PG_HOST:$PG_PORT without a password after adding a trust rule to $hba"
	PG_NOTES+=("trust auth enabled for $PG_USER@127.0.0.1")
}

# Raise max_connections to MIN_MAX_CONNECTIONS when lower (tests run in parallel, each with
# its own pool). Needs a restart.
ensure_max_connections() {
	local cur datadir
	cur="$(pg_sql 'show max_connections' 2>>"$LOG")" || die "cannot read max_connections"
	((cur >= MIN_MAX_CONNECTIONS)) && return 0
	find_cluster
	if ! have_cluster; then
		echo "services.sh: warning: max_connections is $cur (< $MIN_MAX_CONNECTIONS) and no Debian cluster on port $PG_PORT to restart; parallel tests may run out of connections" >&2
		return 0
	fi
	datadir="$(pg_sql 'show data_directory' 2>>"$LOG")" || die "cannot read data_directory"
	quiet pg_sql "alter system set max_connections = $MIN_MAX_CONNECTIONS" || die "ALTER SYSTEM SET max_connections failed"
	if ! pg_ctl restart || ! wait_until $((SECONDS + DEADLINE_SECONDS)) pg_ready; then
		# Do not leave PostgreSQL down: drop the setting and start it again as it was.
		as_root sed -i '/^[[:space:]]*max_connections[[:space:]]*=/d' "$datadir/postgresql.auto.conf" 2>>"$LOG" || true
		pg_ctl start || true
		die "PostgreSQL did not come back after raising max_connections to $MIN_MAX_CONNECTIONS (setting reverted; log: /var/log/postgresql/postgresql-$PG_VER-$PG_CLUSTER.log)"
	fi
	cur="$(pg_sql 'show max_connections' 2>>"$LOG")" || die "cannot read max_connections after restart"
	((cur >= MIN_MAX_CONNECTIONS)) || die "max_connections is still $cur after restart (overridden on the command line?)"
	PG_NOTES+=("max_connections raised to $cur, restarted")
}

# ---------------------------------------------------------------- Redis

start_redis() {
	local reply dir=/var/lib/redis logdir=/var/log/redis logfile
	reply="$(redis_reply)"
	# Something that answers, but not with PONG (e.g. NOAUTH): starting another server cannot help.
	if [[ -n "$reply" && "$reply" != *"Connection refused"* && "$reply" != *"Could not connect"* ]]; then
		die "something answers on $REDIS_HOST:$REDIS_PORT but PING returned: $reply"
	fi
	if [[ -z "$reply" ]] && tcp_open "$REDIS_HOST" "$REDIS_PORT"; then
		die "something listens on $REDIS_HOST:$REDIS_PORT but does not answer PING"
	fi
	mkdir -p "$dir" "$logdir" 2>/dev/null || true
	[[ -d "$dir" && -w "$dir" ]] || { dir="${TMPDIR:-/tmp}/graft-redis"; mkdir -p "$dir"; }
	logfile="$logdir/ci.log"
	if ! [[ -d "$logdir" && -w "$logdir" ]] || { [[ -e "$logfile" ]] && ! [[ -w "$logfile" ]]; }; then
		logfile="${TMPDIR:-/tmp}/graft-redis-ci.log"
	fi
	REDIS_LOG="$logfile"
	quiet redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" \
		--save "" --appendonly no --dir "$dir" --logfile "$logfile" ||
		die "redis-server failed to start (log: $logfile)"
}

# ---------------------------------------------------------------- main

PG_STATE="ok (already running)" REDIS_STATE="ok (already running)" REDIS_LOG="" PG_NOTES=()

ensure_packages

# pg_isready: 0 accepting, 1 rejecting (starting up or shutting down: just wait), 2 no answer.
pg_rc=0
pg_isready -q -h "$PG_HOST" -p "$PG_PORT" >/dev/null 2>&1 || pg_rc=$?
if ((pg_rc != 0 && pg_rc != 1)); then
	start_postgres
	PG_STATE="started"
fi
if ! redis_ready; then
	start_redis
	REDIS_STATE="started"
fi

deadline=$((SECONDS + DEADLINE_SECONDS))
wait_until "$deadline" pg_ready ||
	die "PostgreSQL does not answer on $PG_HOST:$PG_PORT after ${DEADLINE_SECONDS}s (log: /var/log/postgresql/)"
wait_until "$deadline" redis_ready ||
	die "Redis does not answer on $REDIS_HOST:$REDIS_PORT after ${DEADLINE_SECONDS}s${REDIS_LOG:+ (log: $REDIS_LOG)}; last reply: $(redis_reply)"

ensure_trust
ensure_max_connections

if ((${#PG_NOTES[@]})); then
	notes="$(printf '; %s' "${PG_NOTES[@]}")"
	if [[ "$PG_STATE" == *")" ]]; then
		PG_STATE="${PG_STATE%)}$notes)" # ok (already running; ...)
	else
		PG_STATE="$PG_STATE (${notes#; })" # started (...)
	fi
fi
echo "postgres: $PG_STATE"
echo "redis: $REDIS_STATE"
