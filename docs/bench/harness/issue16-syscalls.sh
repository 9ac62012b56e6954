#!/bin/bash
# Syscalls and context switches over 5 s of the 100k frames/s load: issue16-syscalls.sh {new|ceiling}
# $1 = new|ceiling
export JWT_SECRET=bench-secret DATABASE_URL=postgresql://postgres@127.0.0.1:55432/chat_new
if [ $1 = ceiling ]; then WS_BIND_ADDR=127.0.0.1:19301 /work/tgt-ceiling/release/ceiling --cores 2 >/tmp/ceil.log 2>&1 & PID=$!
else /work/bin/chat_server.$1 --bind 127.0.0.1:19301 >/tmp/srv-s.log 2>&1 & PID=$!; fi
sleep 1.5
/work/main/target/release/loadtest --url ws://127.0.0.1:19301/ -q room -c 1000 --rooms 10 --senders 20 --rate 1000 --warmup 2 --duration 10 --server-pid $PID --json /tmp/sys-$1.json >/dev/null 2>&1 &
sleep 6
E=""; for s in sendto recvfrom epoll_wait futex write read writev; do E="$E,syscalls:sys_enter_$s"; done
perf stat -e raw_syscalls:sys_enter,context-switches${E} -p $PID -- sleep 5 2>&1 | grep -E "sys_enter|context" 
sleep 4; kill $PID; wait $PID 2>/dev/null
