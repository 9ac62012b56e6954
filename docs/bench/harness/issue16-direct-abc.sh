#!/usr/bin/env bash
# Alternated: base (0dec8bc, before direct writes), new (this stop), ceiling; fresh server per run.
# Workloads: r1000 (100k frames/s), sat, ingest (rooms of 1), storm (reconnect). Summary: issue16-summary.py OUT
set -u
OUT=${OUT:-/work/notes/abc16}; mkdir -p $OUT
ROUNDS=${ROUNDS:-3}; WLS=${WLS:-"r1000 sat"}; SRVS=${SRVS:-"base new ceiling"}
export JWT_SECRET=bench-secret
LT=/work/main/target/release/loadtest
bin() { case $1 in base) echo /work/tgt-base/release/chat_server;; new) echo ${NEWBIN:-/work/bin/chat_server.new};; esac; }
wait_port() { for i in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/19301) 2>/dev/null && return 0; sleep 0.1; done; return 1; }
for round in $(seq ${FIRST:-1} $ROUNDS); do
 for srv in $SRVS; do
  for wl in $WLS; do
   export DATABASE_URL=postgresql://postgres@127.0.0.1:55432/chat_new
   if [ $srv = ceiling ]; then WS_BIND_ADDR=127.0.0.1:19301 /work/tgt-ceiling/release/ceiling --cores 2 >/tmp/ceil.log 2>&1 & PID=$!
   else $(bin $srv) --bind 127.0.0.1:19301 >/tmp/srv-$srv.log 2>&1 & PID=$!; fi
   wait_port; sleep 1
   case $wl in
    sat) A="-q room -c 1000 --rooms 10 --senders 1000 --rate 0 --inflight 4";;
    r1000) A="-q room -c 1000 --rooms 10 --senders 20 --rate 1000";;
    ingest) A="-q room -c 1000 --rooms 1000 --senders 1000 --rate 0 --inflight 8";;
    storm) A="-q reconnect -c 10000 --room-size 100";;
   esac
   D="--warmup 2 --duration 5"; [ $wl = storm ] && D="--duration 20"
   $LT --url ws://127.0.0.1:19301/ $D $A --server-pid $PID --json $OUT/$srv-$wl-$round.json >/dev/null 2>$OUT/$srv-$wl-$round.err
   kill $PID; wait $PID 2>/dev/null; sleep 1
  done
 done
done
echo done
