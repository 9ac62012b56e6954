#!/usr/bin/env bash
# Ensure a private, project-local PostgreSQL cluster for development and tests.
#
#   scripts/pg.sh start        init + start if needed, create db `chat`, print its URL
#   scripts/pg.sh stop         stop the cluster (fast mode); no-op if not running
#   scripts/pg.sh status       exit 0 if running, non-zero otherwise
#   scripts/pg.sh url          print postgresql://postgres@127.0.0.1:PORT/chat
#   scripts/pg.sh psql ARGS..  run the matching psql against the cluster (db `chat`
#                              by default; a conninfo/URL argument overrides it)
#
# Environment: CHAT_PG_DIR (default: <repo>/.pg; holds data/, postgres.log, the
# unix socket), CHAT_PG_PORT (default 55432), CHAT_PG_BIN (server bin dir).
# We never touch a Debian-managed cluster (pg_ctlcluster): this one has its own
# data dir, port and socket dir. Progress goes to stderr; only URLs go to stdout.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PG_DIR=${CHAT_PG_DIR:-$ROOT/.pg}
case $PG_DIR in /*) ;; *) PG_DIR=$PWD/$PG_DIR ;; esac
# As root, postgres runs as the `postgres` user, which must be able to reach
# the data directory. When the checkout lives somewhere it cannot (e.g. under
# /root, mode 0700) and no CHAT_PG_DIR was given, use a per-checkout
# directory under /var/tmp instead.
if [ -z "${CHAT_PG_DIR:-}" ] && [ "$(id -u)" = 0 ] && id -u postgres >/dev/null 2>&1 &&
  ! (cd / && runuser -u postgres -- test -x "$ROOT"); then
  PG_DIR=/var/tmp/chat-pg-$(printf '%s' "$ROOT" | cksum | cut -d' ' -f1)
  echo "pg.sh: postgres cannot reach $ROOT; using $PG_DIR" >&2
fi
DATA=$PG_DIR/data
LOG=$PG_DIR/postgres.log
SOCK=$PG_DIR/run
PORT=${CHAT_PG_PORT:-55432}
URL="postgresql://postgres@127.0.0.1:$PORT/chat"

say() { echo "pg.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }

# PostgreSQL refuses to run as root, so as root we run server tools as the
# `postgres` system user (from / so an unreadable cwd does not matter).
as_pg() {
  if [ "$(id -u)" = 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}

# Pick the server bin dir: $CHAT_PG_BIN, else the version matching an existing
# cluster, else the highest /usr/lib/postgresql/*/bin, else whatever is on PATH.
find_bin() {
  local d ver=""
  [ -r "$DATA/PG_VERSION" ] && ver=$(cat "$DATA/PG_VERSION")
  for d in ${CHAT_PG_BIN:-} ${ver:+/usr/lib/postgresql/$ver/bin} \
    $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r) \
    "$(dirname "$(command -v pg_ctl 2>/dev/null || echo /nonexistent/x)")"; do
    if [ -x "$d/pg_ctl" ] && [ -x "$d/initdb" ] && [ -x "$d/postgres" ]; then
      BIN=$d; return 0
    fi
  done
  return 1
}

# Install the Debian `postgresql` package (server + client) if no binaries exist.
ensure_bin() {
  find_bin && return 0
  say "PostgreSQL server binaries not found; installing the 'postgresql' package"
  local sudo=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null ||
      die "not root and no sudo: install PostgreSQL yourself (apt-get install postgresql) or set CHAT_PG_BIN"
    sudo=sudo
  fi
  command -v apt-get >/dev/null || die "no apt-get: install PostgreSQL server binaries and set CHAT_PG_BIN"
  $sudo apt-get update >&2
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql >&2
  find_bin || die "installed 'postgresql' but still cannot find pg_ctl/initdb/postgres"
}

psql_bin() {
  if find_bin && [ -x "$BIN/psql" ]; then echo "$BIN/psql"
  elif command -v psql >/dev/null; then command -v psql
  else ensure_bin; echo "$BIN/psql"; fi
}

# Running = pg_ctl sees a live postmaster AND that pid is a postgres process
# that is not a zombie (a kill -9'd postmaster may linger unreaped in containers
# whose PID 1 is not an init; after a reboot the pid may belong to anything).
running() {
  [ -f "$DATA/postmaster.pid" ] || return 1
  as_pg "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1 || return 1
  local pid; pid=$(head -n1 "$DATA/postmaster.pid")
  [ ! -d /proc/self ] || awk '/^Name:/ {n = $2} /^State:/ {s = $2}
    END {exit !(n == "postgres" && s != "Z" && s != "X")}' "/proc/$pid/status" 2>/dev/null
}

# Serialise start/stop between concurrent invocations.
lock() {
  exec 9>>"$PG_DIR/.lock"
  command -v flock >/dev/null && { flock -w 180 9 || die "timed out waiting for $PG_DIR/.lock"; }
  return 0
}

prepare_dir() {
  mkdir -p "$PG_DIR"
  if [ "$(id -u)" = 0 ]; then
    id -u postgres >/dev/null 2>&1 || {
      say "creating system user 'postgres'"
      useradd --system --user-group --no-create-home --home-dir /var/lib/postgresql \
        --shell /usr/sbin/nologin postgres
    }
    chown postgres: "$PG_DIR"
    # Every parent directory must be searchable (o+x) by the postgres user.
    as_pg test -w "$PG_DIR" -a -x "$PG_DIR" || die "user 'postgres' cannot reach $PG_DIR" \
      "(a parent directory is not world-searchable, e.g. /root is 0700)." \
      "Run 'chmod o+x' on the parents, or set CHAT_PG_DIR=/var/tmp/chat-pg"
  fi
}

init_cluster() {
  [ -f "$DATA/PG_VERSION" ] && return 0
  say "initdb $DATA (log: $LOG)"
  # --auth=trust: a private dev/test cluster reachable only via loopback TCP and
  # a socket inside $PG_DIR; no passwords needed. Never expose it to a network.
  as_pg "$BIN/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 --locale=C \
    --no-sync >"$PG_DIR/initdb.log" 2>&1 || { cat "$PG_DIR/initdb.log" >&2; die "initdb failed"; }
  echo "include_if_exists = 'chat.conf'" | as_pg tee -a "$DATA/postgresql.conf" >/dev/null
}

# Settings are (re)written on every start, so edits here apply after a restart.
write_conf() {
  local sock=$SOCK q="'"
  # Unix socket paths are limited to ~107 bytes; fall back to TCP only.
  [ ${#sock} -lt 90 ] || { say "socket dir path too long, TCP only"; sock=""; }
  sock=${sock//$q/$q$q} # escape quotes for postgresql.conf
  as_pg mkdir -p "$SOCK"
  as_pg tee "$DATA/chat.conf" >/dev/null <<EOF
# Written by scripts/pg.sh on every start; edit the script, not this file.
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$sock'
max_connections = 500
shared_buffers = 256MB
# Durability stays ON: the server's durability guarantee is tested against it.
fsync = on
synchronous_commit = on
EOF
}

start() {
  ensure_bin
  prepare_dir
  lock
  init_cluster
  if running; then
    local p; p=$(sed -n 4p "$DATA/postmaster.pid")
    [ "$p" = "$PORT" ] || die "cluster in $DATA is running on port $p, not $PORT; run '$0 stop' first"
    say "already running on port $PORT"
  else
    # Not running: any postmaster.pid left is stale (crash/kill -9/reboot).
    # So is the socket lock in our private socket dir (its pid may be a zombie).
    [ ! -f "$DATA/postmaster.pid" ] || { say "removing stale postmaster.pid"; as_pg rm -f "$DATA/postmaster.pid"; }
    as_pg rm -f "$SOCK/.s.PGSQL.$PORT.lock"
    write_conf
    say "starting PostgreSQL ($BIN) on 127.0.0.1:$PORT"
    local try
    for try in 1 2 3; do
      # Retry: after a kill -9 the dying postmaster may hold the port briefly.
      # 9>&-: the postmaster must not inherit (and hold forever) our lock fd.
      as_pg "$BIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 start >&2 9>&- && break
      [ "$try" = 3 ] && { tail -n 20 "$LOG" >&2 || true; die "could not start PostgreSQL (see $LOG)"; }
      sleep 2
    done
  fi
  local psql=("$BIN/psql" -X -q -h 127.0.0.1 -p "$PORT" -U postgres -d postgres)
  if [ "$("${psql[@]}" -tAc "select 1 from pg_database where datname = 'chat'")" != 1 ]; then
    say "creating database chat"
    "${psql[@]}" -c 'create database chat' >&2
  fi
  echo "$URL"
}

stop() {
  [ -f "$DATA/PG_VERSION" ] || { say "no cluster at $DATA"; return 0; }
  find_bin || die "PostgreSQL binaries not found"
  lock
  if running; then
    as_pg "$BIN/pg_ctl" -D "$DATA" -m fast -w -t 60 stop >&2
  else
    say "not running"
  fi
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  status)
    if [ -f "$DATA/PG_VERSION" ] && find_bin && running; then
      echo "running on 127.0.0.1:$PORT (data: $DATA)"
    else
      echo "not running"; exit 3
    fi ;;
  url) echo "$URL" ;;
  psql)
    shift
    # Defaults via env so a positional db name/URL or -d/-h/-p/-U still wins.
    psql=$(psql_bin)
    PGHOST=127.0.0.1 PGPORT=$PORT PGUSER=postgres PGDATABASE=chat exec "$psql" -X "$@" ;;
  *) echo "usage: $0 start|stop|status|url|psql [ARGS...]" >&2; exit 2 ;;
esac
