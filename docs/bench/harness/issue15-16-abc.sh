#!/usr/bin/env bash
# Alternated: i14 (before issue 15/16), i15 (this stop), ceiling; fresh server per run.
set -u
OUT=${OUT:-/work/notes/abc15}; mkdir -p $OUT
export JWT_SECRET=bench-secret
LT=/work/main/target/release/loadtest
wait_port() { for i in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/19301) 2>/dev/null && return 0; sleep 0.1; done; return 1; }
for round in 1 2 3; do
 for srv in i14 i15 ceiling; do
  for wl in r1000 sat; do
   export DATABASE_URL=postgresql://postgres@127.0.0.1:55432/chat_$([ $srv = i14 ] && echo i14 || echo new)
   if [ $srv = ceiling ]; then WS_BIND_ADDR=127.0.0.1:19301 /work/tgt-ceiling/release/ceiling --cores 2 >/tmp/ceil.log 2>&1 & PID=$!
   else /work/bin/chat_server.$srv --bind 127.0.0.1:19301 >/tmp/srv-$srv.log 2>&1 & PID=$!; fi
   wait_port; sleep 1
   if [ $wl = sat ]; then A="--senders 1000 --rate 0 --inflight 4"; else A="--senders 20 --rate 1000"; fi
   $LT --url ws://127.0.0.1:19301/ -q room -c 1000 --rooms 10 --warmup 2 --duration 5 $A --server-pid $PID --json $OUT/$srv-$wl-$round.json >/dev/null 2>$OUT/$srv-$wl-$round.err
   kill $PID; wait $PID 2>/dev/null; sleep 1
  done
 done
done
echo done
