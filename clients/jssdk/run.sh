#!/usr/bin/env bash
# End-to-end check of Repeater with matrix-js-sdk: builds the server, starts it on a free
# loopback port with a throwaway config, runs check.mjs against it, stops it.
# Exit status is the check's. Needs: go, node >= 20, npm (registry reachable for the first npm ci).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/repeater-jssdk.XXXXXX")"
SERVER_PID=""

cleanup() {
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT

echo "== building repeater"
(cd "$ROOT" && go build -o "$TMP/repeater" ./cmd/repeater)

PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null \
  || node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')"
CONF="$TMP/conf"
mkdir -p "$CONF"
"$TMP/repeater" generate-config --dir "$CONF" --server-name "localhost:$PORT" \
  --listen "127.0.0.1:$PORT" --open-registration >/dev/null
# No rate limiting, cheap password hashing: this is a throwaway test server.
sed -i -e 's/^bcrypt_cost:.*/bcrypt_cost: 4/' \
  -e '/^rate_limits:/,/^[^ ]/ s/^\([[:space:]]*enabled:\).*/\1 false/' "$CONF/repeater.yaml"
grep -q '^bcrypt_cost: 4$' "$CONF/repeater.yaml" || { echo "could not set bcrypt_cost"; exit 1; }
sed -n '/^rate_limits:/,/^[^ ]/p' "$CONF/repeater.yaml" | grep -q 'enabled: false' \
  || { echo "could not disable rate_limits"; exit 1; }

echo "== starting repeater on 127.0.0.1:$PORT (log: $TMP/server.log, removed on exit)"
(cd "$CONF" && exec "$TMP/repeater" --config "$CONF/repeater.yaml") >"$TMP/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$PORT/_matrix/client/versions" >/dev/null 2>&1 && break
  kill -0 "$SERVER_PID" 2>/dev/null || { echo "repeater exited:"; cat "$TMP/server.log"; exit 1; }
  sleep 0.1
done
curl -sf "http://127.0.0.1:$PORT/_matrix/client/versions" >/dev/null || { echo "repeater not ready"; cat "$TMP/server.log"; exit 1; }

cd "$HERE"
if [[ ! -d node_modules ]]; then
  echo "== npm ci"
  npm ci --no-audit --no-fund
fi

echo "== node check.mjs"
status=0
HS_URL="http://127.0.0.1:$PORT" node check.mjs || status=$?
if [[ $status -ne 0 ]]; then
  echo "== last 40 lines of the server log"
  tail -n 40 "$TMP/server.log"
fi
exit $status
