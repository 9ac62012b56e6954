#!/usr/bin/env bash
set -u
OUT=/work/notes/mem16; mkdir -p $OUT
export JWT_SECRET=bench-secret DATABASE_URL=postgresql://postgres@127.0.0.1:55432/chat_new RUST_LOG=warn CHAT_MAX_PENDING_HANDSHAKES_PER_IP=1024
for round in 1 2 3; do for srv in base new; do
  B=/work/bin/chat_server.new; [ $srv = base ] && B=/work/tgt-base/release/chat_server
  $B --bind 127.0.0.1:19356 > /tmp/mem-$srv.log 2>&1 & PID=$!
  for i in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/19356) 2>/dev/null && break; sleep 0.1; done; sleep 1
  /work/main/target/release/memhold --url ws://127.0.0.1:19356/ --server-pid $PID --connections 10000 --rooms 100 --rate 5000 --settle 5 --timeout 60 > $OUT/$srv-$round.txt 2>&1
  kill $PID; wait $PID 2>/dev/null; sleep 1
done; done
