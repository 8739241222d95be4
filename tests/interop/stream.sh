#!/usr/bin/env bash
# Interop: TURN over TCP and over TLS (TURNS) against eeaturn, with real clients.
#
#   bash tests/interop/stream.sh
#
# Starts eeaturn on its own temp config: tcp:// on 127.0.0.1 and [::1] port
# $STREAM_TCP_PORT (default 28080), tls:// on the same addresses port
# $STREAM_TLS_PORT (default 28081) with the development certificate
# config/dev-cert.pem / dev-key.pem, relay ports 31000-31499, metrics on
# 127.0.0.1:$STREAM_METRICS_PORT (default 28089), a fresh random secret; an
# echo peer (turnutils_peer) on 127.0.2.1. Then:
#   - coturn's turnutils_uclient over TCP (-t) and over TLS (-t -S, verifying
#     the server certificate against config/dev-cert.pem with -E), with
#     ChannelData (the tool's default) and with Send indications (-s), from
#     127.0.1.1 (-L) and from ::1, payloads of 101 bytes (so ChannelData needs
#     padding on the stream, RFC 8656 section 12.5), and 5 clients at a
#     moderate rate: every message must come back (zero loss); the server log
#     must show the allocation on the right transport; once the client exits,
#     no allocation may remain (the eeaturn_allocations gauge returns to 0);
#   - a uclient killed in the middle of its run (TCP and TLS): its
#     connections drop, and the server must end the allocations with them
#     (eeaturn_allocations_ended_total{reason="connection-closed"} grows);
#   - uclient over TCP from 127.0.5.1 (US in the test world): the connection
#     is closed at accept, no allocation, the refusal counted;
#   - Python aioice's TURN client over TCP (IPv4, IPv6) and TLS
#     (aioice_tcp.py): allocate, echo through the relay, deallocate, and an
#     aborted connection that must free its allocation.
# Prints one PASS/FAIL line per scenario; exits non-zero if any failed.
#
# INTEROP_SERVER=coturn runs the uclient scenarios against coturn's turnserver
# (same ports, same certificate) as a baseline for the client flags; the
# eeaturn-specific checks (log, metrics) are skipped there.
#
# Only loopback addresses are used. Never add uclient's -G: it makes requests
# for public addresses. See turnutils.sh for how uclient's flags behave.
set -uo pipefail

# shellcheck source=tests/interop/lib.sh
source "$(dirname "$0")/lib.sh"

TCP_PORT="${STREAM_TCP_PORT:-28080}"
TLS_PORT="${STREAM_TLS_PORT:-28081}"
METRICS_PORT="${STREAM_METRICS_PORT:-28089}"
RELAY_RANGE="${STREAM_RELAY_RANGE:-31000-31499}"
# The echo peer; uclient also talks to PEER_PORT+1.
PEER_PORT="${STREAM_PEER_PORT:-28090}"
PEER4=127.0.2.1
CLIENT4=127.0.1.1
CLIENT6=::1
REFUSED4=127.0.5.1
CERT="$REPO_ROOT/config/dev-cert.pem"
KEY="$REPO_ROOT/config/dev-key.pem"
RELAY_LO="${RELAY_RANGE%-*}"
RELAY_HI="${RELAY_RANGE#*-}"

interop_init stream
ensure_coturn || {
  fail setup "could not install coturn's turnutils"
  exit 1
}
HAVE_AIOICE=1
ensure_aioice || HAVE_AIOICE=0

for f in "$CERT" "$KEY"; do
  if [ ! -r "$f" ]; then
    fail setup "missing $f (bash config/make-dev-cert.sh makes it)"
    exit 1
  fi
done

tcp_port_free() {
  command -v ss >/dev/null 2>&1 || return 0
  [ -z "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]
}

# Writes $WORK/secret and the server's config, starts it, waits until ready.
start_stream_server() {
  local p
  for p in "$TCP_PORT" "$TLS_PORT" "$METRICS_PORT"; do
    if ! tcp_port_free "$p"; then
      log "TCP port $p is already in use on this machine:"
      ss -Hltnp "sport = :$p" 2>/dev/null || true
      return 1
    fi
  done
  SECRET="$(random_secret)"
  printf '%s\n' "$SECRET" >"$WORK/secret"
  chmod 600 "$WORK/secret"
  SERVER_LOG="$WORK/server.log"
  case "$INTEROP_SERVER" in
    eeaturn)
      local bin
      bin="$(eeaturn_bin)"
      if [ ! -x "$bin" ]; then
        log "server binary $bin not found (run cargo build, or set EEATURN_BIN)"
        return 1
      fi
      CONFIG="$WORK/eeaturn.toml"
      cat >"$CONFIG" <<EOF
# Written by tests/interop/stream.sh for one test run; loopback only.
[server]
realm = "eeaturn.dev"
listen = [
    "tcp://127.0.0.1:$TCP_PORT", "tcp://[::1]:$TCP_PORT",
    "tls://127.0.0.1:$TLS_PORT", "tls://[::1]:$TLS_PORT",
]

[auth]
secret_file = "$WORK/secret"

[relay]
offload = "off"
addresses = ["127.0.0.1", "::1"]
port_range = "$RELAY_RANGE"

[geo]
country_db = "$REPO_ROOT/geo/testdata/world-country.mmdb"
asn_db = "$REPO_ROOT/geo/testdata/world-asn.mmdb"
max_age = "36500d"

[policy]
deny_asns = [9009]

[peers]
dangerous_allow = ["127.0.0.0/8", "::1/128"]

[tls]
certificate = "$CERT"
private_key = "$KEY"

[metrics]
listen = "127.0.0.1:$METRICS_PORT"

[log]
level = "${EEATURN_LOG_LEVEL:-info}"
EOF
      log "starting $bin serve --config $CONFIG"
      spawn "$SERVER_LOG" env NO_COLOR=1 "$bin" serve --config "$CONFIG"
      SERVER_PID=$SPAWNED
      wait_for_log "$SERVER_LOG" "$SERVER_PID" 'ready' 30 || return 1
      ;;
    coturn)
      local lo="${RELAY_RANGE%-*}" hi="${RELAY_RANGE#*-}"
      cat >"$WORK/turnserver.conf" <<EOF
listening-ip=127.0.0.1
listening-ip=::1
listening-port=$TCP_PORT
tls-listening-port=$TLS_PORT
relay-ip=127.0.0.1
relay-ip=::1
min-port=$lo
max-port=$hi
allow-loopback-peers
denied-peer-ip=127.0.5.0-127.0.5.255
use-auth-secret
static-auth-secret=$SECRET
realm=eeaturn.dev
cert=$CERT
pkey=$KEY
no-dtls
no-cli
no-rfc5780
fingerprint
log-file=stdout
userdb=$WORK/turndb
pidfile=$WORK/turnserver.pid
EOF
      log "starting coturn turnserver (baseline mode)"
      spawn "$SERVER_LOG" turnserver -c "$WORK/turnserver.conf"
      SERVER_PID=$SPAWNED
      wait_for_log "$SERVER_LOG" "$SERVER_PID" 'Total General servers' 30 || return 1
      sleep 0.5
      ;;
    *)
      log "unknown INTEROP_SERVER=$INTEROP_SERVER"
      return 1
      ;;
  esac
  log "server is ready (pid $SERVER_PID)"
}

if ! start_stream_server; then
  fail setup "the server did not start"
  exit 1
fi

for p in "$PEER_PORT" "$((PEER_PORT + 1))"; do
  if ! udp_port_free "$p"; then
    fail setup "UDP port $p for the echo peer is already in use"
    exit 1
  fi
done
spawn "$WORK/peer4.log" turnutils_peer -L "$PEER4" -p "$PEER_PORT"
PEER_PID=$SPAWNED
sleep 0.5
if ! kill -0 "$PEER_PID" 2>/dev/null; then
  fail setup "turnutils_peer did not start"
  cat "$WORK/peer4.log"
  exit 1
fi

is_eeaturn() { [ "$INTEROP_SERVER" = eeaturn ]; }

# metric NAME_WITH_LABELS: prints the sum of the samples of NAME that carry every label given
# (0 when there is none), so 'x{direction="to_client"}' sums x over its other labels.
metric() {
  local v
  v="$(curl -fsS --max-time 2 "http://127.0.0.1:$METRICS_PORT/metrics" 2>/dev/null |
    metric_sum "$1")"
  printf '%s\n' "${v:-0}"
}

# metric_sum QUERY: the sum described at metric, over exposition text on stdin.
metric_sum() {
  awk -v q="$1" '
    BEGIN {
      qb = q; ql = ""; i = index(q, "{")
      if (i) { qb = substr(q, 1, i - 1); ql = substr(q, i + 1, length(q) - i - 1) }
      n = split(ql, want, ",")
    }
    /^#/ { next }
    {
      s = $1; sb = s; sl = ","; j = index(s, "{")
      if (j) { sb = substr(s, 1, j - 1); sl = "," substr(s, j + 1, length(s) - j - 1) "," }
      if (sb != qb) next
      ok = 1
      for (k = 1; k <= n; k++) if (index(sl, "," want[k] ",") == 0) ok = 0
      if (ok) { sum += $2; found = 1 }
    }
    END { if (found) print sum }'
}

# wait_metric NAME OP VALUE SECONDS: waits until NAME OP VALUE holds (OP: -eq, -ge, ...).
wait_metric() {
  local name="$1" op="$2" want="$3" secs="$4" v
  for _ in $(seq 1 $((secs * 10))); do
    v="$(metric "$name")"
    if test "$v" "$op" "$want"; then
      return 0
    fi
    sleep 0.1
  done
  log "$name is $v after $secs s (wanted $op $want)"
  return 1
}

# show_failure CLIENT_OUTPUT MARK
show_failure() {
  echo "    client output (last 30 lines of $1):"
  tail -n 30 "$1" | sed 's/^/    | /'
  show_server_log_since "$2"
}

# relay_scenario NAME TRANSPORT EXPECTED_MSGS UCLIENT_ARGS...
# The client must send EXPECTED_MSGS messages and receive every one back,
# through a relayed address on 127.0.0.1 in the relay range.
relay_scenario() {
  local name="$1" transport="$2" expected="$3"
  shift 3
  local out="$WORK/uclient-$name.log" mark rc line sent recv relay why=""
  mark=$(log_mark)
  log "scenario $name: turnutils_uclient -v $(redact "$@")"
  timeout 90 turnutils_uclient -v "$@" >"$out" 2>&1
  rc=$?
  line="$(grep -E 'start_mclient: tot_send_msgs=[0-9]+, tot_recv_msgs=[0-9]+' "$out" | tail -n 1)"
  sent="$(sed -nE 's/.*tot_send_msgs=([0-9]+).*/\1/p' <<<"$line")"
  recv="$(sed -nE 's/.*tot_recv_msgs=([0-9]+).*/\1/p' <<<"$line")"
  relay="$(sed -nE 's/.*Received relay addr: (.*)$/\1/p' "$out" | tail -n 1)"
  if [ "$rc" -ne 0 ]; then
    why="exit status $rc$([ "$rc" -eq 124 ] && echo ' (timed out after 90 s)')"
  elif [ -z "$line" ]; then
    why="no tot_send_msgs/tot_recv_msgs summary"
  elif [ "$sent" != "$expected" ]; then
    why="sent $sent messages, expected $expected"
  elif [ "$recv" != "$sent" ]; then
    why="sent $sent, received $recv back (lost $((sent - recv)))"
  elif [ "${relay%:*}" != 127.0.0.1 ]; then
    why="relayed address '$relay' is not on 127.0.0.1"
  elif [ "${relay##*:}" -lt "$RELAY_LO" ] || [ "${relay##*:}" -gt "$RELAY_HI" ]; then
    why="relayed port ${relay##*:} is outside $RELAY_RANGE"
  elif is_eeaturn && ! tail -n +"$((mark + 1))" "$SERVER_LOG" | strip_ansi |
    grep 'allocation created' | grep -q "transport=\"$transport\""; then
    why="the server logged no allocation over $transport"
  elif is_eeaturn && ! wait_metric eeaturn_allocations -eq 0 5; then
    why="allocations remain 5 s after the client exited"
  fi
  if [ -z "$why" ]; then
    pass "$name" "tot_send_msgs=$sent tot_recv_msgs=$recv relay=$relay"
  else
    fail "$name" "$why"
    show_failure "$out" "$mark"
  fi
}

TLS_ARGS=(-S -E "$CERT")

# --- TURN over TCP --------------------------------------------------------------
relay_scenario tcp4-channeldata tcp 50 \
  -t -W "$SECRET" -u alice -p "$TCP_PORT" -L "$CLIENT4" -e "$PEER4" -r "$PEER_PORT" -c -n 50 -l 101 127.0.0.1
relay_scenario tcp4-send-indication tcp 50 \
  -t -W "$SECRET" -u alice -p "$TCP_PORT" -L "$CLIENT4" -e "$PEER4" -r "$PEER_PORT" -c -s -n 50 -l 101 127.0.0.1
relay_scenario tcp6-channeldata tcp 50 \
  -t -W "$SECRET" -u bob -p "$TCP_PORT" -L "$CLIENT6" -e "$PEER4" -r "$PEER_PORT" -c -n 50 -l 101 ::1
relay_scenario tcp4-5-clients tcp 1000 \
  -t -W "$SECRET" -u carol -p "$TCP_PORT" -L "$CLIENT4" -e "$PEER4" -r "$PEER_PORT" -c -m 5 -n 200 -l 101 -z 5 127.0.0.1

# --- TURN over TLS ----------------------------------------------------------------
relay_scenario tls4-channeldata tls 50 \
  -t "${TLS_ARGS[@]}" -W "$SECRET" -u alice -p "$TLS_PORT" -L "$CLIENT4" -e "$PEER4" -r "$PEER_PORT" -c -n 50 -l 101 127.0.0.1
relay_scenario tls4-send-indication tls 50 \
  -t "${TLS_ARGS[@]}" -W "$SECRET" -u alice -p "$TLS_PORT" -L "$CLIENT4" -e "$PEER4" -r "$PEER_PORT" -c -s -n 50 -l 101 127.0.0.1
relay_scenario tls6-channeldata tls 50 \
  -t "${TLS_ARGS[@]}" -W "$SECRET" -u bob -p "$TLS_PORT" -L "$CLIENT6" -e "$PEER4" -r "$PEER_PORT" -c -n 50 -l 101 ::1
relay_scenario tls4-5-clients tls 1000 \
  -t "${TLS_ARGS[@]}" -W "$SECRET" -u carol -p "$TLS_PORT" -L "$CLIENT4" -e "$PEER4" -r "$PEER_PORT" -c -m 5 -n 200 -l 101 -z 5 127.0.0.1

# --- a client that dies: its allocations end with its connections ----------------
# kill_scenario NAME PORT UCLIENT_EXTRA_ARGS...
kill_scenario() {
  local name="$1" port="$2"
  shift 2
  local out="$WORK/uclient-$name.log" mark pid before why=""
  mark=$(log_mark)
  local relayed_before
  before="$(metric 'eeaturn_allocations_ended_total{reason="connection-closed"}')"
  relayed_before="$(metric 'eeaturn_relayed_packets_total{direction="to_client"}')"
  log "scenario $name: turnutils_uclient $(redact "$@") (killed while relaying)"
  # Started without timeout(1) so that its own pid is the one killed, as a crash would end
  # it; spawn records the pid, so the EXIT trap ends it too if anything goes wrong here.
  spawn "$out" turnutils_uclient -v "$@" -W "$SECRET" -u dave -p "$port" -L "$CLIENT4" \
    -e "$PEER4" -r "$PEER_PORT" -c -n 100000 -z 20 127.0.0.1
  pid=$SPAWNED
  if ! wait_metric eeaturn_allocations -ge 1 20; then
    why="no allocation within 20 s"
  elif ! wait_metric 'eeaturn_relayed_packets_total{direction="to_client"}' -gt "$relayed_before" 20; then
    why="nothing relayed within 20 s"
  fi
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null
  if [ -z "$why" ] && ! wait_metric eeaturn_allocations -eq 0 5; then
    why="allocations remain 5 s after the client was killed"
  elif [ -z "$why" ] && ! wait_metric 'eeaturn_allocations_ended_total{reason="connection-closed"}' -gt "$before" 1; then
    why="no allocation ended with reason connection-closed"
  fi
  if [ -z "$why" ]; then
    pass "$name" "allocations ended with the connections ($(metric 'eeaturn_allocations_ended_total{reason="connection-closed"}') connection-closed in total)"
  else
    fail "$name" "$why"
    show_failure "$out" "$mark"
  fi
}
if is_eeaturn; then
  kill_scenario tcp4-client-killed "$TCP_PORT" -t
  kill_scenario tls4-client-killed "$TLS_PORT" -t "${TLS_ARGS[@]}"
fi

# --- a client from a refused country ---------------------------------------------
refused_scenario() {
  local name=tcp4-refused-client out="$WORK/uclient-refused.log" mark rc denied before why=""
  mark=$(log_mark)
  before="$(metric 'eeaturn_policy_denials_total{subject="client",rule="outside-region"}')"
  log "scenario $name: turnutils_uclient -t -L $REFUSED4 ..."
  timeout 60 turnutils_uclient -v -t -W "$SECRET" -u mallory -p "$TCP_PORT" -L "$REFUSED4" \
    -e "$PEER4" -r "$PEER_PORT" -c -n 5 127.0.0.1 >"$out" 2>&1
  rc=$?
  # The metrics are rendered once a second.
  wait_metric 'eeaturn_policy_denials_total{subject="client",rule="outside-region"}' -gt "$before" 3
  denied="$(metric 'eeaturn_policy_denials_total{subject="client",rule="outside-region"}')"
  if [ "$rc" -eq 124 ]; then
    why="the client timed out (expected the connection to be closed at once)"
  elif grep -q 'Received relay addr' "$out"; then
    why="an allocation was granted: $(grep -m 1 'Received relay addr' "$out")"
  elif grep -qE 'tot_recv_msgs=[1-9]' "$out"; then
    why="messages were relayed"
  elif [ "$denied" -le "$before" ]; then
    why="the refusal was not counted (denials $before -> $denied)"
  fi
  if [ -z "$why" ]; then
    pass "$name" "closed at accept, no allocation (client exit $rc, denials $before -> $denied)"
  else
    fail "$name" "$why"
    show_failure "$out" "$mark"
  fi
}
if is_eeaturn; then
  refused_scenario
fi

# --- aioice over TCP and TLS --------------------------------------------------------
# aioice_case TAG HOST PORT [--tls]
aioice_case() {
  local tag="$1" host="$2" port="$3"
  shift 3
  local out="$WORK/$tag.log" mark rc
  if [ "$HAVE_AIOICE" -ne 1 ]; then
    fail "$tag" "aioice is not installed"
    return
  fi
  mark=$(log_mark)
  log "aioice case $tag: server $host:$port $*"
  timeout 150 python3 "$INTEROP_DIR/aioice_tcp.py" --tag "$tag" --secret-file "$WORK/secret" \
    --server-host "$host" --server-port "$port" --port-range "$RELAY_RANGE" \
    --ca-file "$CERT" "$@" 2>&1 | tee "$out"
  rc=${PIPESTATUS[0]}
  record_results "$out"
  if [ "$rc" -ne 0 ] && ! grep -q '^FAIL ' "$out"; then
    fail "$tag" "aioice_tcp.py exited with status $rc"
  fi
  if [ "$rc" -ne 0 ]; then
    show_server_log_since "$mark"
  fi
}
aioice_case aioice-tcp4 127.0.0.1 "$TCP_PORT"
aioice_case aioice-tcp6 ::1 "$TCP_PORT"
aioice_case aioice-tls4 127.0.0.1 "$TLS_PORT" --tls

if ! kill -0 "$SERVER_PID" 2>/dev/null; then
  fail server-alive "the server exited during the scenarios"
  show_server_log_since 0 40
fi

if is_eeaturn; then
  stop_server_scenario TERM
fi

interop_finish
