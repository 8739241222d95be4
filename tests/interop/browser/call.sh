#!/usr/bin/env bash
# Interop: a real browser call through eeaturn. Headless Chromium loads call.html, in which
# two RTCPeerConnections call each other through the relay only (iceTransportPolicy "relay",
# a turn:...?transport=udp server with TURN REST credentials), open a data channel and send
# COUNT messages of SIZE bytes each way; the page POSTs what arrived, with the selected
# candidate pair of each side from getStats() (both candidate types must be "relay"), to
# server.py, which writes it to a file this script checks.
#
#   bash tests/interop/browser/call.sh
#
# Two calls: with relay.offload = "off" (lib.sh's default), then with "required", where the
# XDP program on lo must have relayed packets in both directions (its counters map, read
# with bpftool as in tests/interop/offload.sh). The whole script runs in a network namespace
# of its own (its own lo, where the program attaches), so Chromium, the page's server and
# the relay meet no other traffic and nothing leaves the namespace. Skips, with the reason,
# when not root, without unshare/ip/bpftool/python3, against coturn, or when Chromium is
# missing and cannot be installed.
set -uo pipefail

if [ "${1:-}" != --inside ]; then
  if [ "${INTEROP_SERVER:-eeaturn}" != eeaturn ]; then
    echo "SKIP interop/browser: the offload run has no coturn counterpart"
    exit 0
  fi
  if [ "$(id -u)" -ne 0 ]; then
    echo "SKIP interop/browser: needs root (a network namespace and BPF)"
    exit 0
  fi
  for tool in unshare ip bpftool python3 timeout; do
    if ! command -v "$tool" >/dev/null; then
      echo "SKIP interop/browser: $tool not found (apt-get install -y util-linux iproute2 bpftool python3 coreutils)"
      exit 0
    fi
  done
  if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
    echo "interop/browser: installing chromium"
    export DEBIAN_FRONTEND=noninteractive
    if ! { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends chromium >/dev/null; } ||
      ! command -v chromium >/dev/null; then
      echo "SKIP interop/browser: chromium not installed and apt-get install chromium failed"
      exit 0
    fi
  fi
  exec unshare --net -- "$0" --inside
fi

ip link set lo up
HERE="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=tests/interop/lib.sh
source "$HERE/../lib.sh"

CHROMIUM="$(command -v chromium || command -v chromium-browser)"
HTTP_PORT=28990
COUNT=200         # messages each way
SIZE=100          # bytes each
INTERVAL_MS=20    # between sends: 4 s of traffic, time for ChannelBind to replace Send indications

interop_init browser

# metrics_summary PORT: the relay's own view of the call (ChannelBind requests answered,
# packets relayed, and of those in the kernel), from its metrics endpoint.
metrics_summary() {
  python3 - "$1" <<'PY'
import re, sys, urllib.request
text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=5).read().decode()
def total(name, **labels):
    s = 0
    for line in text.splitlines():
        m = re.match(r'^(\w+)(?:\{([^}]*)\})? (\S+)$', line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            s += float(m.group(3))
    return int(s)
binds = sum(total("eeaturn_requests_total", method=m) for m in ("channel_bind", "ChannelBind", "channel-bind"))
print(f"channel_bind requests {binds}, relayed packets to peer {total('eeaturn_relayed_packets_total', direction='to_peer')}"
      f" / to client {total('eeaturn_relayed_packets_total', direction='to_client')},"
      f" in kernel {total('eeaturn_relayed_in_kernel_packets_total', direction='to_peer')}"
      f" / {total('eeaturn_relayed_in_kernel_packets_total', direction='to_client')}")
PY
}

# run_call NAME TURN_PORT RELAY_RANGE METRICS_PORT: one call through a fresh relay. Sets
# CALL_OK (1 when both sides received every message over relay/relay pairs).
run_call() {
  local name="$1" port="$2" range="$3" mport="$4" dir="$WORK/$1"
  CALL_OK=0
  mkdir -p "$dir/www"
  export SERVER_CONFIG_EXTRA="
[metrics]
listen = \"127.0.0.1:$mport\""
  : >"$dir/server.log" # lib.sh's wait_for_log may look before the spawned server opens it
  if ! start_server "$dir" "$port" "$range"; then
    fail "$name/setup" "the relay did not start (${SERVER_RELAY_EXTRA:-offload = \"off\"})"
    return
  fi
  local server_pid=$SERVER_PID
  # TURN REST credentials (coturn's scheme): "<expiry>:<user>", base64(HMAC-SHA1(secret, it)).
  python3 - "$SECRET" "$port" "$COUNT" "$SIZE" "$INTERVAL_MS" >"$dir/www/config.json" <<'PY'
import base64, hashlib, hmac, json, sys, time
secret, port, count, size, interval = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:])
user = f"{int(time.time()) + 3600}:browser"
cred = base64.b64encode(hmac.new(secret.encode(), user.encode(), hashlib.sha1).digest()).decode()
print(json.dumps({"url": f"turn:127.0.0.1:{port}?transport=udp", "username": user, "credential": cred,
                  "count": count, "size": size, "intervalMs": interval, "timeoutMs": 25000}))
PY
  cp "$HERE/call.html" "$dir/www/"
  local result="$dir/result.json"
  spawn "$dir/http.log" python3 "$HERE/server.py" "$HTTP_PORT" "$dir/www" "$result"
  local http_pid=$SPAWNED i
  for i in $(seq 1 50); do
    python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $HTTP_PORT), 1)" 2>/dev/null && break
    sleep 0.1
  done
  # --allow-loopback-in-peer-connection: without it Chromium's WebRTC ignores loopback
  # interfaces, gathers no candidate at all (not even a relay one: the TURN server is reached
  # from a loopback address) and the call never connects.
  log "$name: chromium loads http://127.0.0.1:$HTTP_PORT/call.html"
  spawn "$dir/chromium.log" timeout 35 "$CHROMIUM" --headless=new --no-sandbox --disable-gpu \
    --use-fake-ui-for-media-stream --allow-loopback-in-peer-connection \
    --no-first-run --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$dir/profile" --enable-logging=stderr \
    "http://127.0.0.1:$HTTP_PORT/call.html"
  local chromium_pid=$SPAWNED
  for i in $(seq 1 350); do
    [ -s "$result" ] && break
    kill -0 "$chromium_pid" 2>/dev/null || break
    sleep 0.1
  done
  # timeout leads a process group of its own: end Chromium's whole tree, then the server.
  kill -TERM -- "-$chromium_pid" 2>/dev/null || kill -TERM "$chromium_pid" 2>/dev/null
  wait "$chromium_pid" 2>/dev/null
  kill -TERM "$http_pid" 2>/dev/null
  wait "$http_pid" 2>/dev/null

  if [ ! -s "$result" ]; then
    fail "$name/call" "no result from the page (Chromium exited or 35 s passed)"
    sed 's/^/    page | /' "$result.log" 2>/dev/null | tail -n 20
    grep -iE 'turn|ice|webrtc' "$dir/chromium.log" | tail -n 20 | sed 's/^/    chromium | /'
    show_server_log_since 0 30
  else
    local verdict
    verdict=$(python3 - "$result" "$COUNT" <<'PY'
import json, sys
r, n = json.load(open(sys.argv[1])), int(sys.argv[2])
if not r.get("ok"):
    print("FAIL", r.get("error"), f"(ICE {r.get('iceA')}/{r.get('iceB')},"
          f" {len(r.get('candidatesA', []))}+{len(r.get('candidatesB', []))} candidates gathered,"
          f" candidate errors: {r.get('errors') or 'none'})")
    sys.exit()
pa, pb = r.get("pairA") or {}, r.get("pairB") or {}
types = f"{pa.get('local')}/{pa.get('remote')} and {pb.get('local')}/{pb.get('remote')}"
good = (r["receivedByA"] == n and r["receivedByB"] == n and
        all(p.get(k) == "relay" for p in (pa, pb) for k in ("local", "remote")))
print("PASS" if good else "FAIL",
      f"received {r['receivedByA']}/{n} and {r['receivedByB']}/{n} messages of {r['size']} bytes,"
      f" selected pairs (local/remote) {types}, {pa.get('localAddress')} <-> {pa.get('remoteAddress')},"
      f" open after {r['connectMs']} ms")
PY
)
    if [ "${verdict%% *}" = PASS ]; then
      CALL_OK=1
      pass "$name/call" "${verdict#PASS }"
    else
      fail "$name/call" "${verdict#FAIL }"
      sed 's/^/    page | /' "$result.log" 2>/dev/null | tail -n 20
      show_server_log_since 0 30
    fi
  fi
  log "$name: relay metrics: $(metrics_summary "$mport" 2>&1)"
}

stop_relay() {
  kill -TERM "$SERVER_PID" 2>/dev/null
  wait "$SERVER_PID" 2>/dev/null
}

# 1. User-space relaying (lib.sh's default: relay.offload = "off").
unset SERVER_RELAY_EXTRA
run_call user-space 28981 30600-30649 28991
stop_relay

# 2. The kernel fast path on lo.
export SERVER_RELAY_EXTRA='offload = "required"'
run_call kernel 28982 30650-30699 28992
totals=$(xdp_kernel_totals lo)
if [ -z "$totals" ]; then
  fail kernel/in-kernel "no XDP program with a counters map on lo (bpftool net show dev lo: $(bpftool net show dev lo 2>&1 | tr '\n' ' '))"
else
  read -r kp kb cp cb <<<"$totals"
  if [ "$CALL_OK" = 1 ] && [ "${kp:-0}" -gt 0 ] && [ "${cp:-0}" -gt 0 ]; then
    pass kernel/in-kernel "the kernel relayed $kp packets ($kb bytes) to peers and $cp packets ($cb bytes) to clients"
  else
    fail kernel/in-kernel "call ok=$CALL_OK; the kernel relayed $kp packets ($kb bytes) to peers and $cp packets ($cb bytes) to clients (want > 0 both ways)"
  fi
fi
stop_relay

interop_finish
