# Shared by the client checks (source it): builds Repeater and starts a
# throwaway test-network server (open registration, no rate limits, cheap
# password hashing) on 127.0.0.1:$PORT, config and log under $TMP. Sets
# SERVER_PID; the caller stops it. Needs ROOT, TMP and PORT set.

free_port() {
  node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

start_repeater() {
  echo "== building repeater"
  (cd "$ROOT" && go build -o "$TMP/repeater" ./cmd/repeater)
  local conf="$TMP/conf"
  mkdir -p "$conf"
  "$TMP/repeater" generate-config --dir "$conf" --server-name "localhost:$PORT" \
    --listen "127.0.0.1:$PORT" --test-network >/dev/null
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
