#!/usr/bin/env bash
# usage: run.sh LABEL "SERVER ARGS" LOADTEST ARGS...
# Fresh server per run, loadtest with --server-pid, raw JSON to docs/bench/raw/LABEL.json
set -u
cd /work/main
export DATABASE_URL=postgresql://postgres@127.0.0.1:55432/chat JWT_SECRET=bench-secret
label=$1; sargs=$2; shift 2
RAW=docs/bench/raw; PORT=19301
# wait until nothing is bound on the port
while ss -ltn | grep -q ":$PORT "; do sleep 0.2; done
${SRV:-/tmp/bb/chat_server} --bind 127.0.0.1:$PORT $sargs 2>/tmp/bb/srv-$label.log &
spid=$!
for i in $(seq 1 100); do grep -q "chat server ready" /tmp/bb/srv-$label.log && break; sleep 0.1; done
python3 /tmp/bb/sampler.py $spid /tmp/bb/cpu-$label.json &
smp=$!
[ -n "${COUNT:-}" ] && c0=$(psql -Atc "select count(*) from messages" $DATABASE_URL)
la=$(cut -d' ' -f1-3 /proc/loadavg)
cmd="loadtest --url ws://127.0.0.1:$PORT/ -q $* --server-pid \$PID --json $RAW/$label.json"
/tmp/bb/loadtest --url ws://127.0.0.1:$PORT/ -q "$@" --server-pid $spid --json $RAW/$label.json >/dev/null 2>/tmp/bb/lt-$label.err
rc=$?
[ -n "${COUNT:-}" ] && c1=$(psql -Atc "select count(*) from messages" $DATABASE_URL) && echo "messages rows: before $c0 after $c1 delta $((c1-c0))" | tee /tmp/bb/count-$label.txt
kill -TERM $spid; wait $spid 2>/dev/null; wait $smp 2>/dev/null
warn=$(grep -ciE "warn|error" /tmp/bb/srv-$label.log)
# merge metadata
python3 - "$RAW/$label.json" "$label" "$(basename ${SRV:-chat_server}) --bind 127.0.0.1:$PORT $sargs" "$cmd" "$la" "$rc" "$warn" /tmp/bb/cpu-$label.json <<'PY'
import json,sys
p,label,scmd,lcmd,la,rc,warn,cpuf=sys.argv[1:]
try: d=json.load(open(p))
except Exception: d={}
try: cpu=json.load(open(cpuf))
except Exception: cpu=None
d['_bench']={'label':label,'server_cmd':scmd,'loadtest_cmd':lcmd,'loadavg_before':la,'exit':int(rc),'server_log_warn_error_lines':int(warn),'cpu_samples_1hz':cpu}
json.dump(d,open(p,'w'),indent=1)
PY
if [ -s $RAW/$label.json ]; then
jq -c '{l:._bench.label, rc:._bench.exit, la:._bench.loadavg_before, ok:.connections_ok, fail:.connections_failed, dpf:.delivered_per_s, spf:.sent_per_s, p50:.p50_us, p99:.p99_us, p999:.p999_us, scpu:.server_cpu_us_per_frame, ccpu:.client_cpu_us_per_frame, spct:.server_cpu_pct, cpct:.client_cpu_pct, lost:.lost, dup:.dup, ooo:.out_of_order, err:.errors, busy:.server_busy, disc:.disconnects, hs:.handshakes_per_s, kib:.server_rss_kib_per_conn, sent:.sent, exp:.expected, w:._bench.server_log_warn_error_lines}' $RAW/$label.json
fi
[ $rc = 0 ] || tail -5 /tmp/bb/lt-$label.err
