#!/usr/bin/env bash
# THE test command (README and CI call exactly this):
#   scripts/test.sh [extra `cargo test` args, e.g. a test-name filter]
# Uses $DATABASE_URL if set, else starts the private cluster (scripts/pg.sh),
# and $CHAT_TEST_NATS_URL if set, else the private NATS server (scripts/nats.sh),
# drops leftover chat_test_* databases, then runs all tests and doctests.
set -euo pipefail
# Resolve a relative CHAT_PG_DIR against the caller's cwd before we cd.
case ${CHAT_PG_DIR:-} in '' | /*) ;; *) export CHAT_PG_DIR=$PWD/$CHAT_PG_DIR ;; esac
cd "$(dirname "$0")/.."

if [ -z "${DATABASE_URL:-}" ]; then
  DATABASE_URL=$(scripts/pg.sh start) # separate from `export` so failure aborts
fi
export DATABASE_URL
export CHAT_TEST_DATABASE_URL="$DATABASE_URL"

# Cluster tests need NATS: $CHAT_TEST_NATS_URL if set, else the private
# server (scripts/nats.sh installs Debian's nats-server when missing).
if [ -z "${CHAT_TEST_NATS_URL:-}" ]; then
  CHAT_TEST_NATS_URL=$(scripts/nats.sh start)
fi
export CHAT_TEST_NATS_URL

# Tests create chat_test_* databases; drop any left by crashed/aborted runs.
# pg.sh psql picks a psql (PATH or the server's bin dir); the URL wins over its defaults.
echo "test.sh: dropping leftover chat_test_* databases" >&2
scripts/pg.sh psql "$DATABASE_URL" -q -v ON_ERROR_STOP=1 <<'SQL'
SELECT format('DROP DATABASE IF EXISTS %I WITH (FORCE)', datname)
FROM pg_database WHERE datname LIKE 'chat\_test\_%' \gexec
SQL

# The browser test (tests/browser) and the SDK test (tests/sdk) need Node.js;
# the browser test also Debian's Chromium and the
# pinned npm packages; install what is missing, as for PostgreSQL.
apt_install() {
  local sudo=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "test.sh: not root and no sudo: install $* yourself" >&2; return 1; }
    sudo=sudo
  fi
  command -v apt-get >/dev/null || { echo "test.sh: no apt-get: install $* yourself" >&2; return 1; }
  echo "test.sh: installing $*" >&2
  $sudo apt-get update >&2
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >&2
}
[ -x "${CHROMIUM:-/usr/bin/chromium}" ] || apt_install chromium || true
command -v node >/dev/null && command -v npm >/dev/null || apt_install nodejs npm || true
if [ ! -d tests/browser/node_modules/playwright-core ] && command -v npm >/dev/null; then
  echo "test.sh: npm ci in tests/browser" >&2
  (cd tests/browser && npm ci --no-audit --no-fund >&2) || true
fi
# The SDK's tests (tests/sdk) check its types with its pinned TypeScript.
if [ ! -d clients/js/node_modules/typescript ] && command -v npm >/dev/null; then
  echo "test.sh: npm ci in clients/js" >&2
  (cd clients/js && npm ci --no-audit --no-fund >&2) || true
fi
# (When any of this failed, the browser and SDK tests fail and say what is missing.)

log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --doc 2>&1 | tee -a "$log"
cargo test --workspace --all-targets "$@" 2>&1 | tee -a "$log"
# One closing line over every test binary (cargo prints one per binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
