#!/usr/bin/env bash
# Bounded mixed soak, run by hand (about 10 minutes; SOAK_SECONDS to change):
#   scripts/soak.sh
# Against a fresh `chat_soak` database and a fresh release server on loopback:
#   - steady room traffic: loadtest, 1000 connections in 10 rooms, 500 msg/s of 1000 B;
#   - reconnect churn: a 300-connection handshake storm every 30 s;
#   - 3 slow clients that join a busy room and never read;
#   - 2 flooding clients that send as fast as they can and reconnect when closed;
#   - a PostgreSQL restart half-way through.
# Reports messages acknowledged vs stored, frames lost/duplicated/out of order,
# and the server's peak and final RSS. Everything stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${SOAK_SECONDS:-600}
PORT=${SOAK_PORT:-19501}
OUT=target/soak
mkdir -p "$OUT"

ADMIN_URL=${DATABASE_URL:-$(scripts/pg.sh start)}
DB=chat_soak
scripts/pg.sh psql "$ADMIN_URL" -q -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
export DATABASE_URL=${ADMIN_URL%/*}/$DB
export JWT_SECRET=soak-secret
cargo build --release -q -p chat_server -p loadtest
BIN=target/release

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; }
trap cleanup EXIT

NO_COLOR=1 RUST_LOG=info,chat_server::connection=debug "$BIN/chat_server" --bind "127.0.0.1:$PORT" --cores 2 2>"$OUT/server.log" &
SERVER=$!
pids+=("$SERVER")
for _ in $(seq 100); do grep -q "chat server ready" "$OUT/server.log" && break; sleep 0.2; done
grep -q "chat server ready" "$OUT/server.log" || { echo "soak: server did not start" >&2; exit 1; }
WS=ws://127.0.0.1:$PORT/

# Server RSS every 2 s.
(while kill -0 "$SERVER" 2>/dev/null; do
  awk -v t="$(date +%s)" '/VmRSS/ {print t, $2}' "/proc/$SERVER/status" 2>/dev/null || true
  sleep 2
done) >"$OUT/rss.log" &
pids+=($!)

"$BIN/loadtest" --url "$WS" -q --json "$OUT/load.json" room -c 1000 --rooms 10 --senders 100 \
  --rate 500 --payload 1000 --warmup 0 --duration "$DURATION" --drain 30 >/dev/null 2>"$OUT/load.log" &
LOAD=$!
pids+=("$LOAD")
sleep 10 # rooms provisioned and joined

(end=$((SECONDS + DURATION - 40)); n=0
while [ "$SECONDS" -lt "$end" ]; do
  "$BIN/loadtest" --url "$WS" -q --user-id-base 2000000 connect -c 300 >/dev/null 2>&1 && n=$((n + 1))
  sleep 30
done; echo "churn: $n handshake storms of 300") >"$OUT/churn.log" &
pids+=($!)
helpers=($!)

for i in 1 2 3; do
  token=$("$BIN/chat_server" token --user-id $((3000000 + i)) --username "soak-slow-$i" --ttl 2h)
  python3 scripts/soak_clients.py slow "$WS" "$token" lt-r10-0 $((DURATION - 40)) >"$OUT/slow-$i.log" &
  pids+=($!)
  helpers+=($!)
done
for i in 1 2; do
  token=$("$BIN/chat_server" token --user-id $((3100000 + i)) --username "soak-flood-$i" --ttl 2h)
  python3 scripts/soak_clients.py flood "$WS" "$token" lt-r10-1 $((DURATION - 40)) >"$OUT/flood-$i.log" &
  pids+=($!)
  helpers+=($!)
done

sleep $((DURATION / 2 - 10))
echo "soak: restarting PostgreSQL" >&2
restart_started=$(date +%s.%N)
scripts/pg.sh stop >/dev/null 2>&1
sleep 2
scripts/pg.sh start >/dev/null 2>&1
restart_ended=$(date +%s.%N)

wait "$LOAD" || true
for p in "${helpers[@]}"; do wait "$p" 2>/dev/null || true; done
stored=$(scripts/pg.sh psql "$DATABASE_URL" -tA -c "SELECT count(*) FROM messages")
rss_peak=$(awk 'max < $2 {max = $2} END {print max}' "$OUT/rss.log")
rss_final=$(tail -n 1 "$OUT/rss.log" | awk '{print $2}')
kill -TERM "$SERVER" 2>/dev/null || true
wait "$SERVER" 2>/dev/null || true

python3 - "$OUT/load.json" "$stored" "$rss_peak" "$rss_final" "$restart_started" "$restart_ended" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
stored, peak, final = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
outage = float(sys.argv[6]) - float(sys.argv[5])
refused = r.get("server_errors", 0)
acked = r["sent"] - refused
print(f"duration            {r['duration_s']:.0f} s (+ warm-up, drain)")
print(f"sent                {r['sent']}")
print(f"refused by server   {refused}  {r.get('error_kinds', {})}")
print(f"delivered frames    {r['delivered']}  lost {r['lost']}  dup {r['dup']}  out-of-order {r['out_of_order']}  disconnects {r['disconnects']}")
print(f"acknowledged        {acked}  (sent - refused)")
print(f"stored (messages)   {stored}  -> {'MATCH' if stored == acked else 'MISMATCH'}")
print(f"latency             p50 {r['p50_us']/1000:.1f} ms  p99 {r['p99_us']/1000:.1f} ms  max {r['max_us']/1000:.1f} ms")
print(f"PostgreSQL restart  {outage:.1f} s (stop + 2 s + start)")
print(f"server RSS          peak {peak/1024:.1f} MiB  final {final/1024:.1f} MiB")
PY
for f in "$OUT"/slow-*.log "$OUT"/flood-*.log "$OUT"/churn.log; do cat "$f"; done
echo "connections closed, by reason (server log):"
grep "connection closed" "$OUT/server.log" | sed -E 's/.*reason=//' | sort | uniq -c | sort -rn
grep -E "WARN|ERROR" "$OUT/server.log" | sed -E 's/^.*(WARN|ERROR)/\1/' | cut -c1-90 | sort | uniq -c | sort -rn | head -8
