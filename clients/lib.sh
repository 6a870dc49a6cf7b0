# Shared by the client checks (source it): builds Repeater and starts a
# throwaway server on 127.0.0.1:$PORT, config and log under $TMP. Sets
# SERVER_PID; stop_repeater (or the EXIT trap it is meant for) stops it and
# removes $TMP. Needs ROOT, TMP and PORT set.

free_port() {
  node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

# stop_repeater stops the server (if running) and removes $TMP.
stop_repeater() {
  if [[ -n "${SERVER_PID:-}" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$TMP"
}

# start_repeater [generate-config flags]: builds $TMP/repeater (or copies
# $REPEATER_BIN), writes a config with the given flags (default
# --test-network: open registration, no rate limits, cheap password
# hashing), lets patch_config edit it if the caller defined that function,
# and starts the server.
start_repeater() {
  if [[ -n "${REPEATER_BIN:-}" ]]; then
    cp "$REPEATER_BIN" "$TMP/repeater"
  else
    echo "== building repeater"
    (cd "$ROOT" && go build -o "$TMP/repeater" ./cmd/repeater)
  fi
  local conf="$TMP/conf"
  mkdir -p "$conf"
  [[ $# -gt 0 ]] || set -- --test-network
  "$TMP/repeater" generate-config --dir "$conf" --server-name "localhost:$PORT" \
    --listen "127.0.0.1:$PORT" "$@" >/dev/null
  if declare -F patch_config >/dev/null; then patch_config "$conf/repeater.yaml"; fi
  echo "== starting repeater on 127.0.0.1:$PORT (log: $TMP/server.log, removed on exit)"
  (cd "$conf" && exec "$TMP/repeater" --config "$conf/repeater.yaml") >"$TMP/server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$PORT/_matrix/client/versions" >/dev/null 2>&1 && return 0
    kill -0 "$SERVER_PID" 2>/dev/null || { echo "repeater exited:"; cat "$TMP/server.log"; return 1; }
    sleep 0.1
  done
  echo "repeater not ready"; cat "$TMP/server.log"; return 1
}
