#!/usr/bin/env bash
# Cluster benchmark (issue #8): one run of loadtest against either one node
# or two cluster nodes on this machine, with fresh server processes.
#
#   cluster.sh single|cluster LABEL LOADTEST-ARGS...
#
# single:  chat_server --cores 2 on 127.0.0.1:19501
# cluster: two nodes, --cores 1 each (the same two shards in total), on
#          127.0.0.1:19501 and :19502, with --cluster-url $NATS_URL;
#          loadtest gets both URLs and the PIDs of both nodes and of NATS.
# Env: DATABASE_URL, NATS_URL, NATS_PID, BIN (default target/release).
# Writes docs/bench/raw/cluster/LABEL.json and LABEL.log (server logs).
set -euo pipefail
mode=$1 label=$2
shift 2
BIN=${BIN:-target/release}
out=docs/bench/raw/cluster
mkdir -p "$out"
export JWT_SECRET=bench-secret RUST_LOG=warn
pids=()
start() { # port cores extra...
  local port=$1 cores=$2
  shift 2
  "$BIN/chat_server" --bind "127.0.0.1:$port" --cores "$cores" "$@" >>"$out/$label.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "server on $port did not start" >&2
  return 1
}
stop() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap stop EXIT
: >"$out/$label.log"
case $mode in
  single)
    start 19501 2
    urls=ws://127.0.0.1:19501/
    spids=${pids[0]}
    ;;
  cluster)
    start 19501 1 --cluster-url "$NATS_URL" --node-id a
    start 19502 1 --cluster-url "$NATS_URL" --node-id b
    urls=ws://127.0.0.1:19501/,ws://127.0.0.1:19502/
    spids=${pids[0]},${pids[1]}${NATS_PID:+,$NATS_PID}
    ;;
  *) echo "mode: single|cluster" >&2; exit 2 ;;
esac
echo "loadavg $(cut -d' ' -f1 /proc/loadavg)" >>"$out/$label.log"
"$BIN/loadtest" --url "$urls" -q "$@" --server-pid "$spids" --json "$out/$label.json"
