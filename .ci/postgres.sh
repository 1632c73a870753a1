# shellcheck shell=bash
# A private PostgreSQL server for the test suite. Source it from .ci/run:
#
#     . .ci/postgres.sh
#
# It installs PostgreSQL with apt-get when initdb is missing, starts a server on its own port
# (a free port; never the packaged 5432 cluster) and socket directory as the `postgres` OS user
# (initdb refuses root), exports LOCALQ_TEST_PG_URL for the tests, and installs an EXIT trap
# that stops the server. Idempotent: run again, it reuses the data directory and a server
# already running there. fsync is off: this server holds test data only.

# A fresh directory and a free port per run unless given: two runs on one machine (a
# developer's and CI's) must never share, stop or delete each other's server.
LOCALQ_PG_PORT="${LOCALQ_PG_PORT:-$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
LOCALQ_PG_DIR="${LOCALQ_PG_DIR:-$(mktemp -d /tmp/localq-ci-pg.XXXXXX)}"

_localq_pg_bindir() {
    local initdb
    initdb="$(command -v initdb 2>/dev/null || true)"
    if [ -n "$initdb" ]; then
        dirname "$(readlink -f "$initdb")"
        return
    fi
    # newest major version first
    ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k4,4n | tail -1
}

if [ -z "$(_localq_pg_bindir)" ]; then
    echo "postgres.sh: installing PostgreSQL (apt-get)" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
LOCALQ_PG_BIN="$(_localq_pg_bindir)"
if [ -z "$LOCALQ_PG_BIN" ] || [ ! -x "$LOCALQ_PG_BIN/pg_ctl" ]; then
    echo "postgres.sh: no initdb/pg_ctl after installing PostgreSQL" >&2
    return 1 2>/dev/null || exit 1
fi

_localq_as_pg() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

mkdir -p "$LOCALQ_PG_DIR"
if [ "$(id -u)" = 0 ]; then
    chown postgres: "$LOCALQ_PG_DIR"
fi
chmod 700 "$LOCALQ_PG_DIR"

if [ ! -s "$LOCALQ_PG_DIR/data/PG_VERSION" ]; then
    rm -rf "$LOCALQ_PG_DIR/data"
    _localq_as_pg "$LOCALQ_PG_BIN/initdb" -D "$LOCALQ_PG_DIR/data" -U postgres -A trust \
        -E UTF8 --no-sync >/dev/null
fi

if ! _localq_as_pg "$LOCALQ_PG_BIN/pg_ctl" -D "$LOCALQ_PG_DIR/data" status >/dev/null 2>&1; then
    _localq_as_pg "$LOCALQ_PG_BIN/pg_ctl" -D "$LOCALQ_PG_DIR/data" -l "$LOCALQ_PG_DIR/server.log" \
        -w -t 60 start -o "-p $LOCALQ_PG_PORT -k $LOCALQ_PG_DIR -c listen_addresses=127.0.0.1 \
        -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" \
        >/dev/null || {
        echo "postgres.sh: the server did not start; its log:" >&2
        cat "$LOCALQ_PG_DIR/server.log" >&2
        return 1 2>/dev/null || exit 1
    }
fi

localq_pg_stop() {
    _localq_as_pg "$LOCALQ_PG_BIN/pg_ctl" -D "$LOCALQ_PG_DIR/data" -w -t 60 stop -m fast \
        >/dev/null 2>&1 || true
    case "$LOCALQ_PG_DIR" in /tmp/localq-ci-pg.*) rm -rf "$LOCALQ_PG_DIR" ;; esac
}
trap localq_pg_stop EXIT

export LOCALQ_TEST_PG_URL="postgresql://postgres@127.0.0.1:$LOCALQ_PG_PORT/postgres"
echo "postgres.sh: PostgreSQL $("$LOCALQ_PG_BIN/pg_ctl" --version | awk '{print $3}') at $LOCALQ_TEST_PG_URL" >&2
