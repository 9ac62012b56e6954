#!/usr/bin/env bash
# Issue 16 (targets 7, 6, 4): alternated rounds, a fresh server per run on
# 127.0.0.1:19301. Usage: issue16.sh [all|t7|hot|rs] (see docs/BENCHMARKS.md).
#   LT_BEFORE  loadtest built from the commit before the pacing thread
#   LT         loadtest of this tree     (target/release/loadtest)
#   SRV        chat_server of this tree  (target/release/chat_server)
#   SRV_PREV   an earlier chat_server to compare in the reconnect storm (optional)
#   CEIL       ../shared/yardsticks/ceiling built per its README
#   DATABASE_URL, JWT_SECRET (bench-secret), OUT (raw JSON directory)
set -u
OUT=${OUT:-/tmp/issue16}; mkdir -p "$OUT"
LT=${LT:-target/release/loadtest}; SRV=${SRV:-target/release/chat_server}
CEIL=${CEIL:-../shared/yardsticks/ceiling/target/release/ceiling}
export JWT_SECRET=${JWT_SECRET:-bench-secret}
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/19301) 2>/dev/null && return 0; sleep 0.1; done; return 1; }
run() { # name server loadtest-binary loadtest-args...
  local name=$1 s=$2 lt=$3; shift 3
  case $s in
    ceiling) WS_BIND_ADDR=127.0.0.1:19301 "$CEIL" --cores 2 >"$OUT/$name.srv.log" 2>&1 & PID=$!;;
    chat0) "$SRV" --bind 127.0.0.1:19301 --presence-batch-ms 0 >"$OUT/$name.srv.log" 2>&1 & PID=$!;;
    prev) "$SRV_PREV" --bind 127.0.0.1:19301 >"$OUT/$name.srv.log" 2>&1 & PID=$!;;
    *) "$SRV" --bind 127.0.0.1:19301 >"$OUT/$name.srv.log" 2>&1 & PID=$!;;
  esac
  wait_port; sleep 1
  echo "$name load $(cut -d' ' -f1-3 /proc/loadavg)" >> "$OUT/loadavg.txt"
  "$lt" --url ws://127.0.0.1:19301/ -q "$@" --server-pid $PID --json "$OUT/$name.json" >/dev/null 2>"$OUT/$name.err"
  kill $PID; wait $PID 2>/dev/null; sleep 1
}
R1000="room -c 1000 --rooms 10 --senders 20 --warmup 2 --duration 5 --rate 1000"
for r in 1 2 3; do
  case ${1:-all} in all|t7)
    run t7-before-$r chat "$LT_BEFORE" $R1000
    run t7-after-$r chat "$LT" $R1000
    run t7-ceiling-$r ceiling "$LT" $R1000;; esac
  case ${1:-all} in all|hot)
    for s in chat ceiling; do run hot-$s-$r $s "$LT" hot-room -c 10000 --warmup 2 --duration 5; done;; esac
  case ${1:-all} in all|rs)
    for s in chat ${SRV_PREV:+prev} chat0 ceiling; do
      run rs-$s-$r $s "$LT" reconnect -c 10000 --room-size 100 --duration 20
    done;; esac
done
