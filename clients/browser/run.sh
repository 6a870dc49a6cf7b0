#!/usr/bin/env bash
# Browser check: builds Repeater, starts it and a static server for the Hydrogen web client on
# free loopback ports (different origins, so CORS is exercised), drives Hydrogen in headless
# Chromium with check.mjs, stops everything by PID, exits with the check's status.
# Needs: go, node >= 20, npm (registry only for the first npm ci), /usr/bin/chromium
# (Debian: apt-get install -y chromium). Screenshots: $SHOT_DIR (default /tmp).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/repeater-browser.XXXXXX")"
SERVER_PID=""; STATIC_PID=""
cleanup() {
  for pid in "$STATIC_PID" "$SERVER_PID"; do
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  done
  rm -rf "$TMP"
}
trap cleanup EXIT
# shellcheck source=../lib.sh
. "$HERE/../lib.sh"

PORT="$(free_port)"
start_repeater

cd "$HERE"
[[ -d node_modules ]] || { echo "== npm ci"; npm ci --no-audit --no-fund; }
echo "== building the Hydrogen app into dist/"
node build.mjs

APP_PORT="$(free_port)"
echo "== serving Hydrogen on 127.0.0.1:$APP_PORT"
HS_URL="http://127.0.0.1:$PORT" PORT="$APP_PORT" node serve.mjs >"$TMP/static.log" 2>&1 &
STATIC_PID=$!
for _ in $(seq 1 50); do grep -q '^listening' "$TMP/static.log" 2>/dev/null && break; sleep 0.1; done
grep -q '^listening' "$TMP/static.log" || { echo "static server did not start"; cat "$TMP/static.log"; exit 1; }

echo "== node check.mjs"
status=0
APP_URL="http://127.0.0.1:$APP_PORT/" HS_URL="http://127.0.0.1:$PORT" node check.mjs || status=$?
if [[ $status -ne 0 ]]; then echo "== last 40 lines of the server log"; tail -n 40 "$TMP/server.log"; fi
exit $status
