#!/usr/bin/env bash
set -u
OUT=/work/notes/ingest; mkdir -p $OUT
export JWT_SECRET=bench-secret
LT=/work/main/target/release/loadtest
wait_port() { for i in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/19301) 2>/dev/null && return 0; sleep 0.1; done; return 1; }
for round in 1 2 3; do
 for srv in i14 i15; do
   export DATABASE_URL=postgresql://postgres@127.0.0.1:55432/chat_$([ $srv = i14 ] && echo i14 || echo new)
   /work/bin/chat_server.$srv --bind 127.0.0.1:19301 ${EXTRA:-} >/tmp/srv-$srv.log 2>&1 & PID=$!
   wait_port; sleep 1
   $LT --url ws://127.0.0.1:19301/ -q room -c 1000 --rooms 1000 --senders 1000 --rate 0 --inflight 8 --warmup 2 --duration 5 --server-pid $PID --json $OUT/$srv-$round.json >/dev/null 2>$OUT/$srv-$round.err
   kill $PID; wait $PID 2>/dev/null; sleep 1
 done
done
