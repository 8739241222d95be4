#!/usr/bin/env bash
# Interop: the residency evidence of real clients' calls.
#
#   bash tests/interop/evidence.sh
#
# Starts eeaturn on its own temp config (lib.sh: the loopback test world,
# port $EVIDENCE_PORT, default 28580, relay ports 30600-30999) with
# [evidence] on (a temp directory, the development signing key
# config/dev-evidence.key, fsync "always"), echo peers (turnutils_peer) on a
# French (127.0.2.1) and an American (127.0.5.1) address, then runs coturn's
# turnutils_uclient:
#   - from a German address (-L 127.0.1.1) to the French peer: a known number
#     of messages of a known size, by ChannelData and by Send indications;
#     every message must come back;
#   - from the German address to the American peer: refused (403 at
#     ChannelBind);
#   - from an American address (-L 127.0.5.2): every Allocate refused (403).
# Then it stops the relay with SIGTERM and checks the evidence directory
# (evidence_check.py):
#   - exactly the allocations the tool made (two per run: its probe and the
#     one that carries the data, named by the relayed address it printed),
#     each created by rule "region" for a DE client and each ended;
#   - the channels it bound (exactly the numbers it printed), every permission
#     allowed for the FR peer, at least one per ChannelBind it sent;
#   - the refusals: a denied permission (US, outside-region) per 403 the tool
#     got at ChannelBind, an allocation-refused record (US, outside-region)
#     per 403 it got at Allocate, and no traffic on the refused allocations;
#   - per-peer packets and bytes equal to what the tool counted: the records
#     count payload bytes (the application data, without the 4-byte
#     ChannelData header or the Send/Data indication's STUN framing), which
#     is what turnutils_uclient counts in tot_send_bytes/tot_recv_bytes (-l
#     bytes per message): bytes_to_peer = tot_send_bytes, packets_to_peer =
#     tot_send_msgs, and the same for the echoes towards the client;
# and that `eeaturn evidence verify --trust config/dev-evidence.pub` passes
# and every record validates against docs/evidence/record.schema.json
# (tests/evidence/check-schema.py, Python jsonschema).
# Prints one PASS/FAIL line per scenario and check; exits non-zero if any
# failed. Only loopback addresses are used; never add uclient's -G.
#
# With INTEROP_SERVER=coturn the script is skipped: coturn keeps no evidence.
set -uo pipefail

# shellcheck source=tests/interop/lib.sh
source "$(dirname "$0")/lib.sh"

PORT="${EVIDENCE_PORT:-28580}"
RELAY_RANGE="${EVIDENCE_RELAY_RANGE:-30600-30999}"
PEER_PORT="${EVIDENCE_PEER_PORT:-28590}" # uclient also talks to PEER_PORT+1
# tests/interop/offload-veth.sh runs this script again on its veth topology, with the
# kernel fast path off and on: it sets these addresses, UCLIENT_EXEC and PEER_EXEC (command
# prefixes that run the tool and the peers in their namespaces), EVIDENCE_VARIANT (a suffix
# for the scenario names), EVIDENCE_CONFIG_EXTRA and EVIDENCE_BEFORE_STOP (a file sourced
# before the relay stops, for checks of its own). EVIDENCE_CLIENT_US empty skips the
# refused-client scenario.
CLIENT_DE=${EVIDENCE_CLIENT_DE-127.0.1.1}
CLIENT_US=${EVIDENCE_CLIENT_US-127.0.5.2}
PEER_FR=${EVIDENCE_PEER_FR-127.0.2.1}
PEER_US=${EVIDENCE_PEER_US-127.0.5.1}
SERVER=${EVIDENCE_SERVER-127.0.0.1}

interop_init "evidence${EVIDENCE_VARIANT:+-$EVIDENCE_VARIANT}"
if [ "$INTEROP_SERVER" != eeaturn ]; then
  log "evidence: skipped for INTEROP_SERVER=$INTEROP_SERVER (coturn keeps no evidence)"
  exit 0
fi
ensure_coturn || {
  fail setup "could not install coturn's turnutils"
  exit 1
}
if ! python3 -c 'import jsonschema' >/dev/null 2>&1; then
  log "installing Python jsonschema (as .ci/run does)"
  PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check jsonschema || {
    fail setup "could not install Python jsonschema"
    exit 1
  }
fi

EVIDENCE_DIR="$WORK/evidence"
SERVER_CONFIG_EXTRA="
[evidence]
enabled = true
directory = \"$EVIDENCE_DIR\"
signing_key_file = \"$REPO_ROOT/config/dev-evidence.key\"
node_id = \"interop-evidence\"
site = \"interop\"
fsync = \"always\"
checkpoint_interval = \"1s\"
${EVIDENCE_CONFIG_EXTRA:-}"
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
start_peers "$PEER_PORT" "$PEER_FR" "$PEER_US"

# What each run of the tool said, one JSON object per line, for evidence_check.py.
EXPECT="$WORK/expected.jsonl"
: >"$EXPECT"

# run_uclient NAME KIND UCLIENT_ARGS...: runs the tool and notes what it reported.
# KIND: "relayed", "peer-refused" or "client-refused".
run_uclient() {
  local name="$1" kind="$2"
  shift 2
  local out="$WORK/uclient-$name.log" rc n
  log "scenario $name: turnutils_uclient -v $(redact "$@")"
  # shellcheck disable=SC2086 # UCLIENT_EXEC is a command prefix (e.g. ip netns exec NS)
  timeout 60 ${UCLIENT_EXEC:-} turnutils_uclient -v "$@" >"$out" 2>&1
  rc=$?
  local total bytes relays channels
  total="$(grep -E 'start_mclient: tot_send_msgs=[0-9]+, tot_recv_msgs=[0-9]+' "$out" | tail -n 1)"
  bytes="$(grep -E 'start_mclient: tot_send_bytes ~ [0-9]+, tot_recv_bytes ~ [0-9]+' "$out" | tail -n 1)"
  relays="$(sed -nE 's/.*Received relay addr: (.*)$/\1/p' "$out" | sed 's/.*/"&"/' | paste -sd, -)"
  channels="$(sed -nE 's/.*: success: (0x[0-9a-f]+)$/\1/p' "$out" | sort -u | sed 's/.*/"&"/' | paste -sd, -)"
  n() { sed -nE "s/.*$1[ =~]+([0-9]+).*/\\1/p" <<<"$2"; }
  printf '{"name":"%s","kind":"%s","exit":%d,"relays":[%s],"channels":[%s],"channel_binds":%d,"sent_msgs":%s,"recv_msgs":%s,"sent_bytes":%s,"recv_bytes":%s,"peer_403":%d,"client_403":%d}\n' \
    "$name" "$kind" "$rc" "$relays" "$channels" \
    "$(grep -c 'channel bind sent' "$out")" \
    "$(n tot_send_msgs "$total" | grep . || echo null)" \
    "$(n tot_recv_msgs "$total" | grep . || echo null)" \
    "$(n tot_send_bytes "$bytes" | grep . || echo null)" \
    "$(n tot_recv_bytes "$bytes" | grep . || echo null)" \
    "$(grep -cE 'error 403 \(.*peer address refused' "$out")" \
    "$(grep -cE 'error 403 \(.*client address refused' "$out")" >>"$EXPECT"
  case "$kind" in
    relayed) [ "$rc" -eq 0 ] ;;
    *) [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] ;;
  esac || {
    fail "$name" "turnutils_uclient exit status $rc"
    tail -n 20 "$out" | sed 's/^/    | /'
    return
  }
  pass "$name" "exit $rc; $(tail -n 1 "$EXPECT" | cut -c1-200)"
}

# --- the calls ----------------------------------------------------------------
run_uclient de-to-fr-channeldata relayed \
  -W "$SECRET" -u alice -p "$PORT" -L "$CLIENT_DE" -e "$PEER_FR" -r "$PEER_PORT" -c -n 40 -l 120 "$SERVER"
run_uclient de-to-fr-send-indication relayed \
  -W "$SECRET" -u alice -p "$PORT" -L "$CLIENT_DE" -e "$PEER_FR" -r "$PEER_PORT" -c -s -n 25 -l 333 "$SERVER"
run_uclient de-to-us-refused peer-refused \
  -W "$SECRET" -u alice -p "$PORT" -L "$CLIENT_DE" -e "$PEER_US" -r "$PEER_PORT" -c -n 10 -l 100 "$SERVER"
if [ -n "$CLIENT_US" ]; then
  run_uclient us-client-refused client-refused \
    -W "$SECRET" -u mallory -p "$PORT" -L "$CLIENT_US" -e "$PEER_FR" -r "$PEER_PORT" -c -n 5 -l 100 "$SERVER"
fi
if [ -n "${EVIDENCE_BEFORE_STOP:-}" ]; then
  # shellcheck source=/dev/null
  source "$EVIDENCE_BEFORE_STOP"
fi

# A clean stop: every allocation ends with its counters, node-stopped, a manifest.
stop_server_scenario TERM

# --- the evidence -------------------------------------------------------------
out="$WORK/evidence-check.log"
python3 "$INTEROP_DIR/evidence_check.py" --dir "$EVIDENCE_DIR" --expected "$EXPECT" \
  --relay-host "$SERVER" | tee "$out"
record_results "$out"

out="$WORK/verify.log"
"$(eeaturn_bin)" evidence verify --trust "$REPO_ROOT/config/dev-evidence.pub" "$EVIDENCE_DIR" >"$out" 2>&1
rc=$?
if [ "$rc" -eq 0 ] && grep -q '^VERIFIED' "$out" && grep -q 'findings:      none' "$out"; then
  pass verify "$(grep '^VERIFIED' "$out")"
else
  fail verify "eeaturn evidence verify exit $rc"
  sed 's/^/    | /' "$out"
fi

out="$WORK/schema.log"
python3 "$REPO_ROOT/tests/evidence/check-schema.py" "$EVIDENCE_DIR" >"$out" 2>&1
rc=$?
if [ "$rc" -eq 0 ]; then
  pass schema "$(tail -n 1 "$out")"
else
  fail schema "check-schema.py exit $rc"
  tail -n 20 "$out" | sed 's/^/    | /'
fi

interop_finish
