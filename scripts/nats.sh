#!/usr/bin/env bash
# Ensure a private, project-local NATS server for cluster mode and its tests.
#
#   scripts/nats.sh start    install (Debian's nats-server) if missing, start if
#                            not running, print its URL
#   scripts/nats.sh stop     stop it; no-op if not running
#   scripts/nats.sh status   exit 0 if running, non-zero otherwise
#   scripts/nats.sh url      print nats://127.0.0.1:PORT
#
# Environment: CHAT_NATS_DIR (default: <repo>/.nats; holds the pid file and the
# log), CHAT_NATS_PORT (default 54222), CHAT_NATS_BIN (the nats-server binary).
# Loopback only. The Debian package also installs a systemd service: it is
# never used; this script runs its own process. Progress goes to stderr; only
# the URL goes to stdout.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=${CHAT_NATS_DIR:-$ROOT/.nats}
case $DIR in /*) ;; *) DIR=$PWD/$DIR ;; esac
PORT=${CHAT_NATS_PORT:-54222}
PIDFILE=$DIR/nats.pid
LOG=$DIR/nats.log
URL="nats://127.0.0.1:$PORT"

say() { echo "nats.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }

find_bin() {
  local b
  for b in ${CHAT_NATS_BIN:-} /usr/sbin/nats-server /usr/bin/nats-server "$(command -v nats-server 2>/dev/null || true)"; do
    if [ -n "$b" ] && [ -x "$b" ]; then BIN=$b; return 0; fi
  done
  return 1
}

ensure_bin() {
  find_bin && return 0
  say "installing Debian's nats-server package"
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq >&2 || say "apt-get update failed; trying the install anyway"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq nats-server >&2 ||
    die "could not install nats-server"
  find_bin || die "nats-server not found after install"
}

running() {
  [ -r "$PIDFILE" ] || return 1
  local pid
  pid=$(cat "$PIDFILE")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

wait_port() {
  local i
  for i in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then return 0; fi
    running || return 1
    sleep 0.1
  done
  return 1
}

case ${1:-} in
  start)
    if running; then
      echo "$URL"
      exit 0
    fi
    ensure_bin
    mkdir -p "$DIR"
    say "starting $BIN on 127.0.0.1:$PORT (log: $LOG)"
    # setsid: the server outlives this script and ignores the caller's signals.
    setsid "$BIN" -a 127.0.0.1 -p "$PORT" -P "$PIDFILE" >"$LOG" 2>&1 </dev/null &
    for _ in $(seq 1 50); do
      [ -s "$PIDFILE" ] && break
      sleep 0.1
    done
    wait_port || { tail -n 20 "$LOG" >&2 || true; die "nats-server did not start"; }
    echo "$URL"
    ;;
  stop)
    if running; then
      pid=$(cat "$PIDFILE")
      kill "$pid"
      for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
      done
      say "stopped"
    fi
    rm -f "$PIDFILE"
    ;;
  status) running ;;
  url) echo "$URL" ;;
  *)
    echo "usage: $0 start|stop|status|url" >&2
    exit 2
    ;;
esac
