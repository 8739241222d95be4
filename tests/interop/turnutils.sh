#!/usr/bin/env bash
# Interop: coturn's command-line test clients against eeaturn.
#
#   bash tests/interop/turnutils.sh
#
# Starts eeaturn on its own temp config (UDP 127.0.0.1 and [::1], port
# $TURNUTILS_PORT, default 28780, relay ports 29000-29499, a fresh random
# secret), echo peers (turnutils_peer) on 127.0.2.1 and ::1, then runs:
#   - turnutils_stunclient: a STUN Binding, IPv4 and IPv6; must print the
#     reflexive address, which is the client's own loopback address here;
#   - turnutils_uclient scenarios with TURN REST credentials (-W secret): each
#     must relay every message it sends and get each one echoed back
#     (tot_recv_msgs == tot_send_msgs == clients * messages);
#   - a wrong secret, which must get no allocation and relay nothing.
# Prints one PASS/FAIL line per scenario; exits non-zero if any failed.
# Only loopback addresses are used. Never add uclient's -G: it makes requests
# for public addresses.
#
# How turnutils_uclient is driven (coturn 4.6):
#   -W S     TURN REST secret; the client builds the username
#            "<now + 1 day>[:<-u value>]" and password base64(HMAC-SHA1(S, username)).
#   -c       no RTCP: one allocation per client (plus the probe allocation the
#            tool always makes first). Without -c the tool also asks for
#            EVEN-PORT with the R bit and a RESERVATION-TOKEN allocation.
#            Even with -c it adds EVEN-PORT (R=0) to half of its Allocates, at
#            random.
#   default  binds a channel to peer port+1 (twice) and then to the peer port
#            (twice), and sends ChannelData;
#   -s       sends Send indications after CreatePermission for the peer
#            port and port+1 (peer answers arrive as Data indications).
#   -L A     binds the client socket to A (127.0.1.1: another loopback "host").
#   -e/-r    the peer address and port.
#   IPv6: the tool ignores -x/-X when a peer address (-e) is given: it sets
#   REQUESTED-ADDRESS-FAMILY from the peer's family. So "-e ::1" asks for an
#   IPv6 relayed address, over whichever transport family the server address
#   has; with an IPv4 peer it sends no REQUESTED-ADDRESS-FAMILY (IPv4 default).
#   -x alone only matters in client-to-client mode (-y), which we don't use.
set -uo pipefail

# shellcheck source=tests/interop/lib.sh
source "$(dirname "$0")/lib.sh"

PORT="${TURNUTILS_PORT:-28780}"
RELAY_RANGE="${TURNUTILS_RELAY_RANGE:-29000-29499}"
# ::1 is one of the relay's own addresses, and the residency policy lets peers on the relay
# host be reached on relay ports only: the echo peers therefore listen at the top of the relay
# range (the relay skips ports it finds taken). The peer also binds PEER_PORT+1.
PEER_PORT="${TURNUTILS_PEER_PORT:-29490}"
PEER4=127.0.2.1
PEER6=::1
CLIENT4=127.0.1.1
CLIENT6=::1

interop_init turnutils
ensure_coturn || {
  fail setup "could not install coturn's turnutils"
  exit 1
}

if ! start_server "$WORK" "$PORT" "$RELAY_RANGE"; then
  fail setup "the server did not start"
  exit 1
fi

for p in "$PEER_PORT" "$((PEER_PORT + 1))"; do
  if ! udp_port_free "$p"; then
    fail setup "UDP port $p for the echo peers is already in use"
    exit 1
  fi
done
spawn "$WORK/peer4.log" turnutils_peer -L "$PEER4" -p "$PEER_PORT"
PEER4_PID=$SPAWNED
spawn "$WORK/peer6.log" turnutils_peer -L "$PEER6" -p "$PEER_PORT"
PEER6_PID=$SPAWNED
sleep 0.5
for pid in "$PEER4_PID" "$PEER6_PID"; do
  if ! kill -0 "$pid" 2>/dev/null; then
    fail setup "turnutils_peer (pid $pid) did not start"
    cat "$WORK"/peer*.log
    exit 1
  fi
done

RELAY_LO="${RELAY_RANGE%-*}"
RELAY_HI="${RELAY_RANGE#*-}"

# show_failure CLIENT_OUTPUT MARK
show_failure() {
  echo "    client output (last 30 lines of $1):"
  tail -n 30 "$1" | sed 's/^/    | /'
  show_server_log_since "$2"
}

# stun_scenario NAME LOCAL_ADDR SERVER_ADDR
stun_scenario() {
  local name="$1" local_addr="$2" server="$3"
  local out="$WORK/stunclient-$name.log" mark rc refl
  mark=$(log_mark)
  log "scenario $name: turnutils_stunclient -p $PORT -L $local_addr $server"
  timeout 20 turnutils_stunclient -p "$PORT" -L "$local_addr" "$server" >"$out" 2>&1
  rc=$?
  refl="$(sed -nE 's/.*UDP reflexive addr: (.*)$/\1/p' "$out" | head -n 1)"
  if [ "$rc" -eq 0 ] && [ "${refl%:*}" = "$local_addr" ] && [ -n "${refl##*:}" ]; then
    pass "$name" "reflexive address $refl"
  else
    fail "$name" "exit $rc, reflexive address '${refl}' (expected $local_addr:<port>)"
    show_failure "$out" "$mark"
  fi
}

# relay_scenario NAME EXPECTED_MSGS EXPECTED_RELAY_HOST UCLIENT_ARGS...
# The client must send EXPECTED_MSGS messages and receive every one back.
relay_scenario() {
  local name="$1" expected="$2" relay_host="$3"
  shift 3
  local out="$WORK/uclient-$name.log" mark rc line sent recv relay why=""
  mark=$(log_mark)
  log "scenario $name: turnutils_uclient -v $(redact "$@")"
  timeout 60 turnutils_uclient -v "$@" >"$out" 2>&1
  rc=$?
  line="$(grep -E 'start_mclient: tot_send_msgs=[0-9]+, tot_recv_msgs=[0-9]+' "$out" | tail -n 1)"
  sent="$(sed -nE 's/.*tot_send_msgs=([0-9]+).*/\1/p' <<<"$line")"
  recv="$(sed -nE 's/.*tot_recv_msgs=([0-9]+).*/\1/p' <<<"$line")"
  relay="$(sed -nE 's/.*Received relay addr: (.*)$/\1/p' "$out" | tail -n 1)"
  if [ "$rc" -ne 0 ]; then
    why="exit status $rc$([ "$rc" -eq 124 ] && echo ' (timed out after 60 s)')"
  elif [ -z "$line" ]; then
    why="no tot_send_msgs/tot_recv_msgs summary"
  elif [ "$sent" != "$expected" ]; then
    why="sent $sent messages, expected $expected"
  elif [ "$recv" != "$sent" ]; then
    why="sent $sent, received $recv back (lost $((sent - recv)))"
  elif [ "${relay%:*}" != "$relay_host" ]; then
    why="relayed address $relay is not on $relay_host"
  elif [ "${relay##*:}" -lt "$RELAY_LO" ] || [ "${relay##*:}" -gt "$RELAY_HI" ]; then
    why="relayed port ${relay##*:} is outside $RELAY_RANGE"
  fi
  if [ -z "$why" ]; then
    pass "$name" "tot_send_msgs=$sent tot_recv_msgs=$recv relay=$relay"
  else
    fail "$name" "$why"
    show_failure "$out" "$mark"
  fi
}

# --- STUN Binding -----------------------------------------------------------
stun_scenario stun-binding-ipv4 "$CLIENT4" 127.0.0.1
stun_scenario stun-binding-ipv6 "$CLIENT6" ::1

# --- TURN over UDP, IPv4 ------------------------------------------------------
# (a) ChannelData (the tool's default) with -c.
relay_scenario udp4-channeldata 50 127.0.0.1 \
  -W "$SECRET" -u alice -p "$PORT" -L "$CLIENT4" -e "$PEER4" -r "$PEER_PORT" -c -n 50 127.0.0.1
# (b) Send/Data indications.
relay_scenario udp4-send-indication 50 127.0.0.1 \
  -W "$SECRET" -u alice -p "$PORT" -L "$CLIENT4" -e "$PEER4" -r "$PEER_PORT" -c -s -n 50 127.0.0.1

# --- TURN over UDP, IPv6 ------------------------------------------------------
# (c) Server [::1], client ::1, peer ::1: the tool asks for an IPv6 relayed
#     address (REQUESTED-ADDRESS-FAMILY from the peer's family, see the top).
relay_scenario udp6-channeldata 50 ::1 \
  -W "$SECRET" -u bob -p "$PORT" -L "$CLIENT6" -e "$PEER6" -r "$PEER_PORT" -c -n 50 ::1
relay_scenario udp6-send-indication 50 ::1 \
  -W "$SECRET" -u bob -p "$PORT" -L "$CLIENT6" -e "$PEER6" -r "$PEER_PORT" -c -s -n 50 ::1
# IPv4 transport to the server, IPv6 relayed address and peer (RFC 8656 section
# 7.1, REQUESTED-ADDRESS-FAMILY = IPv6).
relay_scenario udp4-to-ipv6-relay 50 ::1 \
  -W "$SECRET" -u carol -p "$PORT" -L "$CLIENT4" -e "$PEER6" -r "$PEER_PORT" -c -n 50 127.0.0.1

# --- (d) several clients at a moderate rate -----------------------------------
relay_scenario udp4-5-clients 1000 127.0.0.1 \
  -W "$SECRET" -u dave -p "$PORT" -L "$CLIENT4" -e "$PEER4" -r "$PEER_PORT" -c -m 5 -n 200 -l 100 -z 5 127.0.0.1

# --- credentials ----------------------------------------------------------------
# No -u: the REST username is just "<expiry>" (accepted by coturn's scheme).
relay_scenario rest-username-without-user 20 127.0.0.1 \
  -W "$SECRET" -p "$PORT" -L "$CLIENT4" -e "$PEER4" -r "$PEER_PORT" -c -n 20 127.0.0.1
# Signed with the second line of the secret file: all lines are accepted.
# (coturn's baseline mode has a single static secret, so it skips this one.)
if [ "$INTEROP_SERVER" = eeaturn ]; then
  relay_scenario rest-older-secret 20 127.0.0.1 \
    -W "$SECRET_OLD" -u erin -p "$PORT" -L "$CLIENT4" -e "$PEER4" -r "$PEER_PORT" -c -n 20 127.0.0.1
fi

# Negative: a wrong secret must get no allocation (every Allocate is answered
# with 401; the tool gives up after 32 tries with "Cannot complete Allocation")
# and must relay nothing.
neg_wrong_secret() {
  local name=wrong-secret-refused out="$WORK/uclient-wrong-secret.log" mark rc why=""
  mark=$(log_mark)
  log "scenario $name: turnutils_uclient -v -W wrongsecret ..."
  timeout 60 turnutils_uclient -v -W wrongsecret -u mallory -p "$PORT" -L "$CLIENT4" \
    -e "$PEER4" -r "$PEER_PORT" -c -n 5 127.0.0.1 >"$out" 2>&1
  rc=$?
  if [ "$rc" -eq 0 ]; then
    why="the client exited 0"
  elif [ "$rc" -eq 124 ]; then
    why="the client timed out (expected a quick refusal)"
  elif grep -q 'Received relay addr' "$out"; then
    why="an allocation was granted: $(grep -m 1 'Received relay addr' "$out")"
  elif grep -qE 'tot_recv_msgs=[1-9]' "$out"; then
    why="messages were relayed"
  elif ! grep -q 'allocate response received' "$out"; then
    why="the server never answered the Allocate requests"
  elif ! grep -q 'Cannot complete Allocation' "$out"; then
    why="the client did not report 'Cannot complete Allocation'"
  fi
  if [ -z "$why" ]; then
    pass "$name" "no allocation ($(grep -c 'allocate response received' "$out") refusals, client exit $rc)"
  else
    fail "$name" "$why"
    show_failure "$out" "$mark"
  fi
}
neg_wrong_secret

# Informational only: coturn's RFC 5769 test-vector tool, where the package has it
# (Debian's coturn 4.6 does not ship it).
if command -v turnutils_rfc5769check >/dev/null 2>&1; then
  log "info: turnutils_rfc5769check (not counted):"
  timeout 30 turnutils_rfc5769check 2>&1 | tail -n 5 | sed 's/^/    | /' || true
else
  log "info: turnutils_rfc5769check is not installed by this coturn package; skipped"
fi

if ! kill -0 "$SERVER_PID" 2>/dev/null; then
  fail server-alive "the server exited during the scenarios"
  show_server_log_since 0 40
fi

# The contract: `serve` exits (status 0) on SIGINT or SIGTERM.
if [ "$INTEROP_SERVER" = eeaturn ]; then
  stop_server_scenario TERM
fi

interop_finish
