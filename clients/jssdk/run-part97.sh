#!/usr/bin/env bash
# Check of Repeater's amateur-radio (Part 97) mode with matrix-js-sdk and Rust crypto, as Element
# uses them: starts one node made by `generate-config --part97 --callsign` on a free loopback port
# (no AREDN node to poll, no mesh DNS: nothing leaves loopback; no rate limits), runs part97.mjs.
# REPEATER_BIN=path uses that binary instead of building one. Needs: go, node >= 20, npm.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/repeater-part97.XXXXXX")"
SERVER_PID=""
cleanup() {
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT

# shellcheck source=../lib.sh
. "$HERE/../lib.sh"
PORT="$(free_port)"
if [[ -n "${REPEATER_BIN:-}" ]]; then
  cp "$REPEATER_BIN" "$TMP/repeater"
else
  echo "== building repeater"
  (cd "$ROOT" && go build -o "$TMP/repeater" ./cmd/repeater)
fi
conf="$TMP/conf"
"$TMP/repeater" generate-config --part97 --callsign K5DLQ --dir "$conf" --server-name "localhost:$PORT" \
  --listen "127.0.0.1:$PORT" >/dev/null
for pat in 's|^    aredn_node: .*$|    aredn_node: ""|' 's|^    mesh_dns: true$|    mesh_dns: false|' \
  '/^rate_limits:$/,/^[a-z]/ s|^    enabled: true$|    enabled: false|' 's|^bcrypt_cost: .*$|bcrypt_cost: 4|'; do
  sed -i "$pat" "$conf/repeater.yaml"
done
grep -q '^    aredn_node: ""$' "$conf/repeater.yaml" && grep -q '^    mesh_dns: false$' "$conf/repeater.yaml" ||
  { echo "could not turn off AREDN polling and mesh DNS in the generated config"; exit 1; }
echo "== starting a Part 97 node on 127.0.0.1:$PORT"
(cd "$conf" && exec "$TMP/repeater" --config "$conf/repeater.yaml") >"$TMP/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$PORT/_matrix/client/versions" >/dev/null 2>&1 && break
  kill -0 "$SERVER_PID" 2>/dev/null || { echo "repeater exited:"; cat "$TMP/server.log"; exit 1; }
  sleep 0.1
done

cd "$HERE"
[[ -d node_modules ]] || npm ci --no-audit --no-fund
echo "== node part97.mjs"
status=0
HS_URL="http://127.0.0.1:$PORT" node part97.mjs || status=$?
if [[ $status -ne 0 ]]; then
  echo "== last 40 lines of the server log"
  tail -n 40 "$TMP/server.log"
fi
exit $status
