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

# shellcheck source=../lib.sh
. "$HERE/../lib.sh"
trap stop_repeater EXIT

patch_config() {
  local f="$1" pat
  for pat in 's|^    aredn_node: .*$|    aredn_node: ""|' 's|^    mesh_dns: true$|    mesh_dns: false|' \
    '/^rate_limits:$/,/^[a-z]/ s|^    enabled: true$|    enabled: false|' 's|^bcrypt_cost: .*$|bcrypt_cost: 4|'; do
    sed -i "$pat" "$f"
  done
  grep -q '^    aredn_node: ""$' "$f" && grep -q '^    mesh_dns: false$' "$f" ||
    { echo "could not turn off AREDN polling and mesh DNS in the generated config"; return 1; }
}
PORT="$(free_port)"
start_repeater --part97 --callsign K5DLQ

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
