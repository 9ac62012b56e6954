#!/usr/bin/env bash
# THE "start a working server" command:
#   scripts/run-server.sh [chat_server args...]
# Provisions PostgreSQL (unless DATABASE_URL is set) and a JWT secret (unless
# JWT_SECRET is set; kept in .pg/jwt_secret), builds the release binary, makes
# sure room `general` exists, prints two tokens, the URL of the web page and
# how to connect, then execs the server (listening on WS_BIND_ADDR, default
# 127.0.0.1:9001) in DEVELOPMENT mode (--dev: the page can sign tokens for
# anyone; set CHAT_DEV=false to turn it off).
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

Starting chat_server on $WS_BIND_ADDR ...
MSG
exec "$bin" "$@"
