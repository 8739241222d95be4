#!/usr/bin/env bash
# Interop: residency enforcement seen through coturn's turnutils_uclient.
#
#   bash tests/interop/residency.sh
#
# Starts eeaturn on its own temp config (lib.sh: the loopback test world of
# geo/testdata, region "eea", AS9009 denied, loopback peers lifted from the
# special-purpose refusal only; UDP 127.0.0.1 and [::1], port $RESIDENCY_PORT,
# default 28980, relay ports 30000-30499, a fresh random secret), echo peers
# (turnutils_peer) on a French (127.0.2.1), a Norwegian (127.0.3.1) and an
# American (127.0.5.1) address, then:
#   - a client bound to a German address (-L 127.0.1.1) relays to the French
#     and to the Norwegian peer with zero loss, by ChannelData and by Send
#     indications (tot_recv_msgs == tot_send_msgs == messages);
#   - the same client towards the American peer gets no relaying: the tool's
#     ChannelBind / CreatePermission is answered "403 ... refused by rule
#     outside-region" (the tool then gives up before sending, so it sends and
#     receives nothing), the server logs "denied by policy" for the peer, and
#     the server's own counters show that its allocations carried no packet in
#     either direction (checked after SIGTERM, from the "allocation ended"
#     lines);
#   - a client bound to an American address (-L 127.0.5.1) cannot allocate:
#     every Allocate is answered 403 (rule outside-region, client).
# Prints one PASS/FAIL line per scenario; exits non-zero if any failed.
# Only loopback addresses are used. Never add uclient's -G: it makes requests
# for public addresses. See turnutils.sh for how turnutils_uclient is driven.
#
# With INTEROP_SERVER=coturn the script is skipped: coturn has no residency
# policy to compare with.
set -uo pipefail

# The "denied by policy" line of each refusal is written at debug level (at info the relay
# summarises refusals in one line per 10 s), and the scenarios below look for them.
EEATURN_LOG_LEVEL="${EEATURN_LOG_LEVEL:-debug}"

# shellcheck source=tests/interop/lib.sh
source "$(dirname "$0")/lib.sh"

PORT="${RESIDENCY_PORT:-28980}"
RELAY_RANGE="${RESIDENCY_RELAY_RANGE:-30000-30499}"
PEER_PORT="${RESIDENCY_PEER_PORT:-28990}" # uclient also talks to PEER_PORT+1
CLIENT_DE=127.0.1.1
CLIENT_US=127.0.5.1
PEER_FR=127.0.2.1
PEER_NO=127.0.3.1
PEER_US=127.0.5.1
SERVER=127.0.0.1

interop_init residency
if [ "$INTEROP_SERVER" != eeaturn ]; then
  log "residency: skipped for INTEROP_SERVER=$INTEROP_SERVER (no residency policy to test)"
  exit 0
fi
ensure_coturn || {
  fail setup "could not install coturn's turnutils"
  exit 1
}

if ! start_server "$WORK" "$PORT" "$RELAY_RANGE"; then
  fail setup "the server did not start"
  exit 1
fi
if ! grep -q 'world-country.mmdb' "$CONFIG"; then
  fail setup "the server config does not use the loopback test world ($CONFIG)"
  exit 1
fi

for p in "$PEER_PORT" "$((PEER_PORT + 1))"; do
  if ! udp_port_free "$p"; then
    fail setup "UDP port $p for the echo peers is already in use"
    exit 1
  fi
done
start_peers "$PEER_PORT" "$PEER_FR" "$PEER_NO" "$PEER_US"

RELAY_LO="${RELAY_RANGE%-*}"
RELAY_HI="${RELAY_RANGE#*-}"

# show_failure CLIENT_OUTPUT MARK
show_failure() {
  echo "    client output (last 30 lines of $1):"
  tail -n 30 "$1" | sed 's/^/    | /'
  show_server_log_since "$2"
}

# new_server_lines MARK: the server log lines written since MARK, without colours.
new_server_lines() {
  tail -n +"$(($1 + 1))" "$SERVER_LOG" | strip_ansi
}

# allowed_scenario NAME MESSAGES UCLIENT_ARGS...
# A German client relays to an allowed peer: every message sent comes back.
allowed_scenario() {
  local name="$1" expected="$2"
  shift 2
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
  elif [ "${relay%:*}" != "$SERVER" ]; then
    why="relayed address $relay is not on $SERVER"
  elif [ "${relay##*:}" -lt "$RELAY_LO" ] || [ "${relay##*:}" -gt "$RELAY_HI" ]; then
    why="relayed port ${relay##*:} is outside $RELAY_RANGE"
  elif new_server_lines "$mark" | grep -q 'denied by policy'; then
    why="the server logged a policy denial: $(new_server_lines "$mark" | grep -m 1 'denied by policy')"
  fi
  if [ -z "$why" ]; then
    pass "$name" "tot_send_msgs=$sent tot_recv_msgs=$recv relay=$relay"
  else
    fail "$name" "$why"
    show_failure "$out" "$mark"
  fi
}

# Allocation ids of the refused scenarios, checked for zero traffic at the end.
declare -a REFUSED_ALLOCATIONS=()

# refused_peer_scenario NAME UCLIENT_ARGS...
# A German client towards the American peer: allocation yes, relaying no.
refused_peer_scenario() {
  local name="$1"
  shift
  local out="$WORK/uclient-$name.log" mark rc why="" ids
  mark=$(log_mark)
  log "scenario $name: turnutils_uclient -v $(redact "$@")"
  timeout 60 turnutils_uclient -v "$@" >"$out" 2>&1
  rc=$?
  ids="$(new_server_lines "$mark" | sed -nE 's/.*allocation created allocation=([0-9a-f]+).*/\1/p')"
  if [ "$rc" -eq 0 ]; then
    why="the client exited 0"
  elif [ "$rc" -eq 124 ]; then
    why="the client timed out (expected a quick refusal)"
  elif ! grep -q 'Received relay addr' "$out"; then
    why="no allocation was made (the client is German and must get one)"
  elif ! grep -qE 'error 403 \(.*peer address refused by rule outside-region' "$out"; then
    why="the client did not report '403 ... peer address refused by rule outside-region'"
  elif grep -qE 'refused by rule outside-region.*(US|7922|127\.0\.5)' "$out"; then
    why="the reason phrase reveals the database facts or the address"
  elif grep -qE 'tot_recv_msgs=[1-9]' "$out"; then
    why="messages came back: $(grep -E 'tot_recv_msgs=[1-9]' "$out" | tail -n 1)"
  elif ! new_server_lines "$mark" | grep 'denied by policy' | grep -i 'subject=peer' | grep -q 'outside-region'; then
    why="the server log has no 'denied by policy' line for the peer with rule outside-region"
  elif [ -z "$ids" ]; then
    why="no 'allocation created' line in the server log"
  fi
  if [ -z "$why" ]; then
    local n
    n=$(new_server_lines "$mark" | grep -c 'denied by policy')
    # shellcheck disable=SC2206 # one id per word
    REFUSED_ALLOCATIONS+=($ids)
    pass "$name" "403 outside-region, $n denial(s) logged, client exit $rc"
  else
    fail "$name" "$why"
    show_failure "$out" "$mark"
  fi
}

# refused_client_scenario NAME UCLIENT_ARGS...
# A client on an American address: no allocation at all.
refused_client_scenario() {
  local name="$1"
  shift
  local out="$WORK/uclient-$name.log" mark rc why=""
  mark=$(log_mark)
  log "scenario $name: turnutils_uclient -v $(redact "$@")"
  timeout 60 turnutils_uclient -v "$@" >"$out" 2>&1
  rc=$?
  if [ "$rc" -eq 0 ]; then
    why="the client exited 0"
  elif [ "$rc" -eq 124 ]; then
    why="the client timed out (expected a quick refusal)"
  elif grep -q 'Received relay addr' "$out"; then
    why="an allocation was granted: $(grep -m 1 'Received relay addr' "$out")"
  elif ! grep -qE 'error 403 \(.*client address refused by rule outside-region' "$out"; then
    why="the client did not report '403 ... client address refused by rule outside-region'"
  elif grep -qE 'tot_recv_msgs=[1-9]' "$out"; then
    why="messages were relayed"
  elif ! new_server_lines "$mark" | grep 'denied by policy' | grep -i 'subject=client' | grep -q 'outside-region'; then
    why="the server log has no 'denied by policy' line for the client with rule outside-region"
  elif new_server_lines "$mark" | grep -q 'allocation created'; then
    why="the server logged an allocation"
  fi
  if [ -z "$why" ]; then
    pass "$name" "every Allocate refused ($(grep -c 'client address refused' "$out") x 403), client exit $rc"
  else
    fail "$name" "$why"
    show_failure "$out" "$mark"
  fi
}

# --- inside the region: zero loss ---------------------------------------------
allowed_scenario de-to-fr-channeldata 50 \
  -W "$SECRET" -u alice -p "$PORT" -L "$CLIENT_DE" -e "$PEER_FR" -r "$PEER_PORT" -c -n 50 "$SERVER"
allowed_scenario de-to-fr-send-indication 50 \
  -W "$SECRET" -u alice -p "$PORT" -L "$CLIENT_DE" -e "$PEER_FR" -r "$PEER_PORT" -c -s -n 50 "$SERVER"
# Norway: EEA, not EU.
allowed_scenario de-to-no-channeldata 50 \
  -W "$SECRET" -u alice -p "$PORT" -L "$CLIENT_DE" -e "$PEER_NO" -r "$PEER_PORT" -c -n 50 "$SERVER"

# --- towards the United States: refused ---------------------------------------
refused_peer_scenario de-to-us-channeldata-refused \
  -W "$SECRET" -u alice -p "$PORT" -L "$CLIENT_DE" -e "$PEER_US" -r "$PEER_PORT" -c -n 20 "$SERVER"
refused_peer_scenario de-to-us-send-indication-refused \
  -W "$SECRET" -u alice -p "$PORT" -L "$CLIENT_DE" -e "$PEER_US" -r "$PEER_PORT" -c -s -n 20 "$SERVER"

# --- from the United States: no allocation ------------------------------------
refused_client_scenario us-client-cannot-allocate \
  -W "$SECRET" -u mallory -p "$PORT" -L "$CLIENT_US" -e "$PEER_FR" -r "$PEER_PORT" -c -n 5 "$SERVER"

# The relay is still serving German clients after the refusals.
allowed_scenario de-to-fr-after-refusals 20 \
  -W "$SECRET" -u alice -p "$PORT" -L "$CLIENT_DE" -e "$PEER_FR" -r "$PEER_PORT" -c -n 20 "$SERVER"

if ! kill -0 "$SERVER_PID" 2>/dev/null; then
  fail server-alive "the server exited during the scenarios"
  show_server_log_since 0 40
fi

# SIGTERM ends every allocation, each with its traffic counters in the log.
stop_server_scenario TERM

# Nothing was relayed for the allocations that were refused the American peer.
check_refused_allocations_carried_nothing() {
  local name=us-peer-nothing-relayed id line why=""
  if [ "${#REFUSED_ALLOCATIONS[@]}" -eq 0 ]; then
    fail "$name" "no allocations recorded by the refused-peer scenarios"
    return
  fi
  for id in "${REFUSED_ALLOCATIONS[@]}"; do
    line="$(strip_ansi <"$SERVER_LOG" | grep "allocation ended allocation=$id " | tail -n 1)"
    if [ -z "$line" ]; then
      why="no 'allocation ended' line for allocation $id"
      break
    fi
    if ! grep -q 'packets_to_peer=0 ' <<<"$line" || ! grep -q 'packets_to_client=0 ' <<<"$line"; then
      why="allocation $id carried traffic: $line"
      break
    fi
  done
  if [ -z "$why" ]; then
    pass "$name" "${#REFUSED_ALLOCATIONS[@]} allocations, packets_to_peer=0 and packets_to_client=0 each"
  else
    fail "$name" "$why"
    show_server_log_since 0 40
  fi
}
check_refused_allocations_carried_nothing

interop_finish
