#!/usr/bin/env bash
# End-to-end encryption check of Repeater with matrix-js-sdk's Rust crypto: builds the server,
# starts two federating servers (s0.test and s1.test, static peers on free loopback ports,
# throwaway test-network configs), runs e2ee.mjs against them, stops them.
# REPEATER_BIN=path uses that binary instead of building one. Exit status is the check's. Needs: go, node >= 20, npm (registry reachable for the first npm ci).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/repeater-e2ee.XXXXXX")"
PIDS=()

cleanup() {
  for pid in "${PIDS[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    fi
  done
  rm -rf "$TMP"
}
trap cleanup EXIT

# shellcheck source=../lib.sh
. "$HERE/../lib.sh"
P0="$(free_port)"
P1="$(free_port)"
while [[ "$P1" == "$P0" ]]; do P1="$(free_port)"; done
PEERS="{\"s0.test\": \"http://127.0.0.1:$P0\", \"s1.test\": \"http://127.0.0.1:$P1\"}"

if [[ -n "${REPEATER_BIN:-}" ]]; then
  echo "== using $REPEATER_BIN"
  cp "$REPEATER_BIN" "$TMP/repeater"
else
  echo "== building repeater"
  (cd "$ROOT" && go build -o "$TMP/repeater" ./cmd/repeater)
fi

# start_named NAME PORT: a test-network server named NAME on 127.0.0.1:PORT peering with both.
start_named() {
  local name="$1" port="$2" conf="$TMP/$1"
  mkdir -p "$conf"
  "$TMP/repeater" generate-config --dir "$conf" --server-name "$name" \
    --listen "127.0.0.1:$port" --test-network >/dev/null
  grep -q '^    peers: {}$' "$conf/repeater.yaml" || { echo "no 'peers: {}' line in the generated config"; return 1; }
  sed -i "s|^    peers: {}\$|    peers: $PEERS|" "$conf/repeater.yaml"
  echo "== starting $name on 127.0.0.1:$port (log: $conf/server.log, removed on exit)"
  (cd "$conf" && exec "$TMP/repeater" --config "$conf/repeater.yaml") >"$conf/server.log" 2>&1 &
  PIDS+=($!)
  local pid=$!
  for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$port/_matrix/client/versions" >/dev/null 2>&1 && return 0
    kill -0 "$pid" 2>/dev/null || { echo "$name exited:"; cat "$conf/server.log"; return 1; }
    sleep 0.1
  done
  echo "$name not ready"; cat "$conf/server.log"; return 1
}
start_named s0.test "$P0"
start_named s1.test "$P1"

cd "$HERE"
if [[ ! -d node_modules ]]; then
  echo "== npm ci"
  npm ci --no-audit --no-fund
fi

echo "== node e2ee.mjs"
status=0
HS0_URL="http://127.0.0.1:$P0" HS1_URL="http://127.0.0.1:$P1" node e2ee.mjs || status=$?
if [[ $status -ne 0 ]]; then
  for name in s0.test s1.test; do
    echo "== last 40 lines of the $name log"
    tail -n 40 "$TMP/$name/server.log"
  done
fi
exit $status
