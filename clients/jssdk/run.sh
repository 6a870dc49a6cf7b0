#!/usr/bin/env bash
# End-to-end check of Repeater with matrix-js-sdk: builds the server, starts it on a free
# loopback port with a throwaway config, runs check.mjs against it, stops it; then runs
# run-e2ee.sh (encrypted DMs over two federating servers) and run-part97.sh (the amateur-radio
# mode) with the same binary.
# Exit status is non-zero if either check failed. Needs: go, node >= 20, npm (registry reachable for the first npm ci).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/repeater-jssdk.XXXXXX")"
SERVER_PID=""

# shellcheck source=../lib.sh
. "$HERE/../lib.sh"
trap stop_repeater EXIT
PORT="$(free_port)"
start_repeater

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

# Encrypted DMs (Rust crypto) on one server and across two federating ones, same binary.
echo "== run-e2ee.sh"
e2ee=0
REPEATER_BIN="$TMP/repeater" "$HERE/run-e2ee.sh" || e2ee=$?
[[ $status -ne 0 ]] || status=$e2ee

# The amateur-radio mode as Element meets it (Rust crypto, encryption refused), same binary.
echo "== run-part97.sh"
p97=0
REPEATER_BIN="$TMP/repeater" "$HERE/run-part97.sh" || p97=$?
[[ $status -ne 0 ]] || status=$p97
exit $status
