#!/usr/bin/env bash
# Interop: Python aioice's TURN client against eeaturn.
#
#   bash tests/interop/aioice.sh
#
# Starts eeaturn on its own temp config (UDP 127.0.0.1 and [::1], port
# $AIOICE_PORT, default 28880, relay ports 29500-29999, a fresh random
# secret) and runs aioice_turn.py twice:
#   udp4: client -> 127.0.0.1, relayed address expected on 127.0.0.1
#   udp6: client -> [::1]; aioice sends no REQUESTED-ADDRESS-FAMILY, so the
#         relayed address must be IPv4 (RFC 8656 section 7.2), on 127.0.0.1
# with UDP echo peers on 127.0.2.2 and 127.0.2.3. See aioice_turn.py for the
# checks. Credentials come from `eeaturn credentials issue --json`.
# Only loopback addresses are used.
set -uo pipefail

# shellcheck source=tests/interop/lib.sh
source "$(dirname "$0")/lib.sh"

PORT="${AIOICE_PORT:-28880}"
RELAY_RANGE="${AIOICE_RELAY_RANGE:-29500-29999}"

interop_init aioice
ensure_aioice || {
  fail setup "could not install aioice"
  exit 1
}
log "aioice $(python3 -c 'import importlib.metadata as m; print(m.version("aioice"))') on $(python3 --version 2>&1)"

if ! start_server "$WORK" "$PORT" "$RELAY_RANGE"; then
  fail setup "the server did not start"
  exit 1
fi

bin_args=()
if [ "$INTEROP_SERVER" = eeaturn ]; then
  bin_args=(--bin "$(eeaturn_bin)" --config "$CONFIG")
fi

# run_case TAG SERVER_HOST
run_case() {
  local tag="$1" host="$2" out="$WORK/aioice-$1.log" mark rc
  mark=$(log_mark)
  log "aioice case $tag: server $host:$PORT"
  timeout 200 python3 "$INTEROP_DIR/aioice_turn.py" --tag "$tag" "${bin_args[@]}" \
    --secret-file "$WORK/secret" --server-host "$host" --server-port "$PORT" \
    --expect-relay-host 127.0.0.1 --port-range "$RELAY_RANGE" 2>&1 | tee "$out"
  rc=${PIPESTATUS[0]}
  record_results "$out"
  if [ "$rc" -ne 0 ] && ! grep -q '^FAIL ' "$out"; then
    fail "$tag" "aioice_turn.py exited with status $rc"
  fi
  if [ "$rc" -ne 0 ]; then
    show_server_log_since "$mark"
  fi
}

run_case udp4 127.0.0.1
run_case udp6 ::1

if ! kill -0 "$SERVER_PID" 2>/dev/null; then
  fail server-alive "the server exited during the checks"
  show_server_log_since 0 40
fi

# The contract: `serve` exits (status 0) on SIGINT or SIGTERM.
if [ "$INTEROP_SERVER" = eeaturn ]; then
  stop_server_scenario INT
fi

interop_finish
