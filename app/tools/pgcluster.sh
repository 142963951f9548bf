# shellcheck shell=bash
# A throwaway PostgreSQL cluster for tests and benchmarks: source this file, then
#   pgcluster_start DIR   # initdb + start; exports PGCLUSTER_* and DATABASE_URL (superuser, socket)
#   pgcluster_stop DIR    # stop (fast) and leave DIR for the caller to remove
#   pgcluster_resume DIR  # start a stopped cluster again on the same port
# Debian's server binaries live in /usr/lib/postgresql/<major>/bin (15 on Debian 12, 17 on 13); the
# newest installed major is used. PostgreSQL refuses to run as root, so as root the server commands
# run as the `postgres` OS user (runuser); as anyone else they run as that user.

pgcluster_bindir() {
    local dir
    dir=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -type d -name bin 2>/dev/null | sort -V | tail -n 1)
    if [[ -z "$dir" || ! -x "$dir/initdb" ]]; then
        echo "pgcluster: no PostgreSQL server binaries under /usr/lib/postgresql (apt-get install postgresql)" >&2
        return 1
    fi
    echo "$dir"
}

# Run a server command as the cluster's OS user.
pgcluster_as_owner() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

pgcluster_free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

pgcluster_start() {
    local dir=$1 bindir port
    bindir=$(pgcluster_bindir)
    port=$(pgcluster_free_port)
    mkdir -p "$dir"
    chmod 0755 "$dir"
    if [[ $(id -u) -eq 0 ]]; then chown postgres: "$dir"; fi
    # --no-sync and the settings in pgcluster_resume trade durability for speed: this data lives
    # for one run.
    pgcluster_as_owner "$bindir/initdb" --pgdata="$dir/data" --username=postgres --auth=trust \
        --encoding=UTF8 --no-locale --no-sync >"$dir/initdb.log" 2>&1 || {
        cat "$dir/initdb.log" >&2
        return 1
    }
    echo "$port" >"$dir/port"
    pgcluster_resume "$dir"
}

# Start an initialised cluster again on the port it had (tests stop and restart the database).
pgcluster_resume() {
    local dir=$1 bindir port
    bindir=$(pgcluster_bindir)
    port=$(cat "$dir/port")
    pgcluster_as_owner "$bindir/pg_ctl" --pgdata="$dir/data" --log="$dir/server.log" --wait \
        --options="-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir \
-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
        start >/dev/null || {
        cat "$dir/server.log" >&2
        return 1
    }
    export PGCLUSTER_BINDIR=$bindir PGCLUSTER_DIR=$dir PGCLUSTER_PORT=$port
    export DATABASE_URL="postgresql+psycopg://postgres@127.0.0.1:$port/postgres"
}

pgcluster_stop() {
    local dir=$1 bindir
    [[ -f "$dir/data/postmaster.pid" ]] || return 0
    bindir=$(pgcluster_bindir) || return 0
    pgcluster_as_owner "$bindir/pg_ctl" --pgdata="$dir/data" --mode=fast --wait stop >/dev/null 2>&1 || true
}

# Export the variables of a running cluster without touching it (for callers in another process).
pgcluster_resume_env() {
    local dir=$1 port
    port=$(cat "$dir/port")
    export PGCLUSTER_DIR=$dir PGCLUSTER_PORT=$port
    export DATABASE_URL="postgresql+psycopg://postgres@127.0.0.1:$port/postgres"
}
