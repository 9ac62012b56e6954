#!/usr/bin/env bash
# THE "start a working server" command:
#   scripts/run-server.sh [chat_server args...]
# Provisions PostgreSQL (unless DATABASE_URL is set) and a JWT secret (unless
# JWT_SECRET is set; kept in .pg/jwt_secret), builds the release binary, makes
# sure room `general` exists, prints two tokens, the URL of the web page and
# how to connect, then execs the server (listening on WS_BIND_ADDR, default
# 127.0.0.1:9001) in DEVELOPMENT mode (--dev: the page can sign tokens for
# anyone; set CHAT_DEV=false to turn it off). The server API (issue 15) is on at
# CHAT_API_BIND (default 127.0.0.1:9002) with a key from CHAT_API_KEYS, else
# one generated and kept in .pg/api_key; CHAT_API_BIND=off turns it off.
set -euo pipefail
case ${CHAT_PG_DIR:-} in '' | /*) ;; *) export CHAT_PG_DIR=$PWD/$CHAT_PG_DIR ;; esac
cd "$(dirname "$0")/.."
say() { echo "run-server.sh: $*" >&2; }

if [ -z "${DATABASE_URL:-}" ]; then
  DATABASE_URL=$(scripts/pg.sh start)
fi
export DATABASE_URL

if [ -z "${JWT_SECRET:-}" ]; then
  secret_file=${CHAT_PG_DIR:-$PWD/.pg}/jwt_secret
  if [ -s "$secret_file" ]; then
    say "JWT_SECRET not set; using the one stored in $secret_file"
  else
    mkdir -p "$(dirname "$secret_file")"
    (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$secret_file")
    say "JWT_SECRET not set; generated a random one and stored it in $secret_file"
  fi
  JWT_SECRET=$(cat "$secret_file")
fi
export JWT_SECRET
export WS_BIND_ADDR=${WS_BIND_ADDR:-127.0.0.1:9001}

# The server API for the application's backend, with a key of its own.
export CHAT_API_BIND=${CHAT_API_BIND:-127.0.0.1:9002}
if [ "$CHAT_API_BIND" = off ]; then
  unset CHAT_API_BIND
elif [ -z "${CHAT_API_KEYS:-}" ]; then
  key_file=${CHAT_PG_DIR:-$PWD/.pg}/api_key
  if [ ! -s "$key_file" ]; then
    mkdir -p "$(dirname "$key_file")"
    (umask 077 && head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$key_file")
    say "CHAT_API_KEYS not set; generated an API key and stored it in $key_file"
  fi
  CHAT_API_KEYS=$(cat "$key_file")
  export CHAT_API_KEYS
fi
export CHAT_DEV=${CHAT_DEV:-true}

cargo build --release --bin chat_server
bin=${CARGO_TARGET_DIR:-target}/release/chat_server

"$bin" room create general # exits 0 with a note if it already exists
alice=$("$bin" token --user-id 1 --username alice --ttl 12h)
bob=$("$bin" token --user-id 2 --username bob --ttl 12h)
addr=${WS_BIND_ADDR/0.0.0.0/127.0.0.1} # a wildcard bind is reachable via loopback

dev_note="DEVELOPMENT MODE (--dev): the page's \"Generate dev token\" button signs a token
  for anyone who asks. Never run it like this where others can reach it (CHAT_DEV=false)."
[ "$CHAT_DEV" = true ] || dev_note="(--dev is off: paste one of the tokens below into the page.)"

cat >&2 <<MSG

Open the chat in your browser:

    http://$addr/

  $dev_note

Tokens (valid 12h):
  alice (user 1): $alice
  bob   (user 2): $bob

Connect, e.g. with websocat:
  websocat "ws://$addr/?token=$alice"
and send:
  {"type":"join","room":"general"}

MSG
if [ -n "${CHAT_API_BIND:-}" ]; then
  api_key=${CHAT_API_KEYS%%,*}
  cat >&2 <<MSG
The server API (for your backend) is on http://$CHAT_API_BIND/v1 (description:
http://$CHAT_API_BIND/v1/openapi.json). Key: $api_key
Create user 2 (bob), post a message to "general" as bob, then read the event feed:
  curl -s -X PUT -H "Authorization: Bearer $api_key" -H 'content-type: application/json' \\
       -d '{"username":"bob"}' http://$CHAT_API_BIND/v1/users/2
  curl -s -X POST -H "Authorization: Bearer $api_key" -H 'content-type: application/json' \\
       -d '{"from_user":2,"content":"hello from the backend"}' http://$CHAT_API_BIND/v1/rooms/general/messages
  curl -s -H "Authorization: Bearer $api_key" 'http://$CHAT_API_BIND/v1/events?after=0&limit=10'

MSG
fi
echo "Starting chat_server on $WS_BIND_ADDR ..." >&2
exec "$bin" "$@"
