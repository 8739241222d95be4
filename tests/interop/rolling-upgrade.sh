#!/usr/bin/env bash
# Interop: a rolling upgrade of a two-node fleet without a dropped call.
#
#   bash tests/interop/rolling-upgrade.sh
#
# Two `eeaturn serve` processes with one TURN REST secret, each with its own
# evidence directory and signing key, each naming the other in
# server.alternate_servers, both with server.drain_timeout = $DRAIN:
# node A on UDP 127.0.0.1:$ROLLING_PORT_A (default 28380, relay ports
# 30800-30899), node B on UDP 127.0.0.2:$ROLLING_PORT_B (default 28381,
# relay ports 30900-30999), in the loopback test world (geo/testdata). An
# echo peer (turnutils_peer) on a French address (127.0.2.1). Every call is
# coturn's turnutils_uclient from a German address, ChannelData of $LEN bytes
# every 20 ms to the echo peer.
#
# Then A is upgraded, then B, the same way (upgrade NODE OTHER):
#   1. a call through OTHER that lasts longer than NODE's whole upgrade, and a
#      call through NODE, both relaying;
#   2. SIGTERM to NODE: it drains (its log says so);
#   3. a new client sent to NODE gets 300 (Try Alternate) and follows the
#      ALTERNATE-SERVER to OTHER (uclient reconnects to the address it names),
#      where its call relays every message; NODE made no allocation for it;
#   4. NODE's call goes on to its last message, every one echoed, and NODE
#      exits with status 0 (once the drain timeout ends the tool's idle probe
#      allocation: turnutils_uclient makes one before its data allocation and
#      never releases it; see fleet.sh);
#   5. NODE's evidence verifies (`eeaturn evidence verify`) and
#      rolling_upgrade_check.py finds in it every call of NODE released with
#      the tool's exact counts, no allocation that had relayed anything ended
#      by the relay, none left open, and node-stopped (a drain reason) last;
#   6. NODE starts again from the "new build" on the same evidence directory:
#      $ROLLING_NEW_BIN when set (e.g. a build of another revision), else the
#      same binary as before, which is then said in the log and the PASS
#      line: the test shows the procedure, not a change of version. Run on
#      2026-12-06 with EEATURN_BIN built at 593d3ce (the merge that brought
#      the drain) and ROLLING_NEW_BIN at ae80219: 44 passed, the old build's
#      evidence verified and continued by the new one;
#   7. OTHER's call was still running when NODE came back, and ends with
#      every message echoed.
# At the end both nodes (now "new") stop on SIGINT, and the evidence of each,
# across both of its processes, verifies and passes the same checks.
# Every call is counted: messages sent = messages echoed = the number asked,
# and exit status 0. Prints one PASS/FAIL line per check; exits non-zero if
# any failed. Takes about 2 minutes (two drains of $DRAIN each).
#
# Only loopback addresses are used; never add uclient's -G.
# With INTEROP_SERVER=coturn the script is skipped (coturn does not drain).
set -uo pipefail

# shellcheck source=tests/interop/lib.sh
source "$(dirname "$0")/lib.sh"

PORT_A="${ROLLING_PORT_A:-28380}"
PORT_B="${ROLLING_PORT_B:-28381}"
ADDR_A=127.0.0.1
ADDR_B=127.0.0.2
RANGE_A=30800-30899
RANGE_B=30900-30999
PEER_PORT="${ROLLING_PEER_PORT:-28390}" # uclient also talks to PEER_PORT+1
PEER_FR=127.0.2.1
# The drain timeout: longer than the node's call lasts after SIGTERM (its
# 12 s of messages, plus the up to 10 s the tool waits for a lost one).
DRAIN=30
# Messages: the call through the node being upgraded (12 s), the call through
# the other node (45 s: it must outlast the upgrade, about 6 s to get going plus
# the drain plus the restart), the redirected call (2 s).
N_NODE=600
N_OTHER=2250
N_SHORT=100
LEN=100

interop_init rolling-upgrade
if [ "$INTEROP_SERVER" != eeaturn ]; then
  log "rolling-upgrade: skipped for INTEROP_SERVER=$INTEROP_SERVER (coturn does not drain)"
  exit 0
fi
ensure_coturn || {
  fail setup "could not install coturn's turnutils"
  exit 1
}
OLD_BIN="$(eeaturn_bin)"
NEW_BIN="${ROLLING_NEW_BIN:-$OLD_BIN}"
# User space only, as every interop suite but offload.sh (a root run's default "auto" would put
# one node's ChannelData into the kernel and not the other's). Builds older than relay.offload
# reject the key, so it is written only when both binaries know it.
OFFLOAD_KEY=""
if grep -qa 'relay.offload' "$OLD_BIN" && grep -qa 'relay.offload' "$NEW_BIN"; then
  OFFLOAD_KEY='offload = "off"'
fi
for b in "$OLD_BIN" "$NEW_BIN"; do
  if [ ! -x "$b" ]; then
    fail setup "server binary $b not found (run cargo build, or set EEATURN_BIN / ROLLING_NEW_BIN)"
    exit 1
  fi
done
if cmp -s "$OLD_BIN" "$NEW_BIN"; then
  SAME_BUILD=1
  log "the \"new build\" is the same binary as the old one ($("$OLD_BIN" --version)); set ROLLING_NEW_BIN to upgrade to another build"
else
  SAME_BUILD=0
  log "old build: $OLD_BIN ($("$OLD_BIN" --version), sha256 $(sha256sum <"$OLD_BIN" | cut -c1-16)), new build: $NEW_BIN ($("$NEW_BIN" --version), sha256 $(sha256sum <"$NEW_BIN" | cut -c1-16))"
fi
for p in "$PORT_A" "$PORT_B" "$PEER_PORT" "$((PEER_PORT + 1))"; do
  if ! udp_port_free "$p"; then
    fail setup "UDP port $p is already in use"
    exit 1
  fi
done

SECRET="$(random_secret)"
printf '%s\n' "$SECRET" >"$WORK/secret"
chmod 600 "$WORK/secret"

declare -A ADDR=([a]=$ADDR_A [b]=$ADDR_B)
declare -A PORT=([a]=$PORT_A [b]=$PORT_B)
declare -A RANGE=([a]=$RANGE_A [b]=$RANGE_B)
declare -A PID=()
declare -A RUNS=([a]=0 [b]=0)

# node_config NODE OTHER: writes $WORK/NODE.toml, makes NODE's key pair.
node_config() {
  local n="$1" o="$2"
  mkdir -p "$WORK/$n"
  "$OLD_BIN" evidence keygen --out-private "$WORK/$n.key" --out-public "$WORK/$n.pub" \
    >"$WORK/$n.keygen.log" 2>&1 || return 1
  cat >"$WORK/$n.toml" <<EOF
# Written by tests/interop/rolling-upgrade.sh for one test run; loopback only.
[server]
realm = "eeaturn.dev"
listen = ["udp://${ADDR[$n]}:${PORT[$n]}"]
drain_timeout = "${DRAIN}s"
alternate_servers = ["${ADDR[$o]}:${PORT[$o]}"]

[auth]
secret_file = "$WORK/secret"

[relay]
${OFFLOAD_KEY}
addresses = ["${ADDR[$n]}"]
port_range = "${RANGE[$n]}"

[geo]
country_db = "$REPO_ROOT/geo/testdata/world-country.mmdb"
asn_db = "$REPO_ROOT/geo/testdata/world-asn.mmdb"
max_age = "36500d"

[peers]
dangerous_allow = ["127.0.0.0/8"]

[log]
level = "${EEATURN_LOG_LEVEL:-info}"

[evidence]
enabled = true
directory = "$WORK/$n/evidence"
signing_key_file = "$WORK/$n.key"
node_id = "rolling-$n"
site = "site-$n"
checkpoint_interval = "1s"
EOF
}

# start_node NODE BIN: starts NODE from BIN, waits until it is ready. Each run
# of a node logs to its own file, $WORK/NODE.RUN.log; $WORK/NODE.log is the current one.
start_node() {
  local n="$1" bin="$2"
  RUNS[$n]=$((RUNS[$n] + 1))
  : >"$WORK/$n.${RUNS[$n]}.log"
  spawn "$WORK/$n.${RUNS[$n]}.log" env NO_COLOR=1 "$bin" serve --config "$WORK/$n.toml"
  PID[$n]=$SPAWNED
  ln -sf "$n.${RUNS[$n]}.log" "$WORK/$n.log"
  wait_for_log "$WORK/$n.log" "${PID[$n]}" 'ready' 30
}

# call NAME NODE MESSAGES: starts turnutils_uclient through NODE in the
# background (pid in CALL_PID[NAME], output in $WORK/call-NAME.log), notes its start time.
declare -A CALL_PID=() CALL_NODE=() CALL_N=() CALL_STARTED=()
call() {
  local name="$1" n="$2" msgs="$3" client
  client="127.0.1.$((${#CALL_PID[@]} + 1))"
  CALL_STARTED[$name]="$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)"
  CALL_NODE[$name]=$n
  CALL_N[$name]=$msgs
  log "call $name through $n: turnutils_uclient -v $(redact -W "$SECRET") -u u-$name -L $client -e $PEER_FR -r $PEER_PORT -c -n $msgs -l $LEN -z 20 -p ${PORT[$n]} ${ADDR[$n]}"
  timeout 180 turnutils_uclient -v -W "$SECRET" -u "u-$name" -L "$client" -e "$PEER_FR" \
    -r "$PEER_PORT" -c -n "$msgs" -l "$LEN" -z 20 -p "${PORT[$n]}" "${ADDR[$n]}" \
    >"$WORK/call-$name.log" 2>&1 &
  CALL_PID[$name]=$!
  _INTEROP_PIDS+=("$!")
}

# wait_relaying NAME: waits (at most 20 s) until the call's data allocation
# exists: the node logged two allocations for its user (the probe, then the one
# carrying the data), plus a second for the ChannelBind and the first messages.
wait_relaying() {
  local name="$1" n="${CALL_NODE[$1]}" i
  for i in $(seq 1 200); do
    if [ "$(strip_ansi <"$WORK/$n.log" | grep -c "allocation created .*user=u-$name ")" -ge 2 ]; then
      sleep 1
      return 0
    fi
    kill -0 "${CALL_PID[$name]}" 2>/dev/null || break
    sleep 0.1
  done
  return 1
}

# finish_call NAME: waits for the call to end and checks it: exit 0, every
# message sent and echoed. Appends it to $WORK/calls-NODE.jsonl for the
# evidence check.
finish_call() {
  local name="$1" n="${CALL_NODE[$1]}" out rc line sent recv relayed ended
  out="$WORK/call-$name.log"
  wait "${CALL_PID[$name]}"
  rc=$?
  line="$(grep -E 'start_mclient: tot_send_msgs=[0-9]+, tot_recv_msgs=[0-9]+' "$out" | tail -n 1)"
  sent="$(sed -nE 's/.*tot_send_msgs=([0-9]+).*/\1/p' <<<"$line")"
  recv="$(sed -nE 's/.*tot_recv_msgs=([0-9]+).*/\1/p' <<<"$line")"
  relayed="$(sed -nE 's/.*Received relay addr: (.*)$/\1/p' "$out" | tail -n 1)"
  if [ "$rc" -eq 0 ] && [ "$sent" = "${CALL_N[$name]}" ] && [ "$recv" = "${CALL_N[$name]}" ]; then
    pass "call-$name" "through $n on $relayed: sent $sent, echoed $recv, $(grep -m 1 -o 'Total lost packets [0-9]*' "$out")"
  else
    fail "call-$name" "through $n: exit $rc, sent '${sent:-}', echoed '${recv:-}' of ${CALL_N[$name]}"
    tail -n 15 "$out" | sed 's/^/    | /'
    return
  fi
  # The tool's last write to its log is when the call ended: a later call may get the same
  # relayed port from the restarted node, so the checker looks only between start and end.
  ended="$(date -u -r "$out" +%Y-%m-%dT%H:%M:%S.%3NZ)"
  printf '{"name":"%s","relayed":"%s","started":"%s","ended":"%s","sent":%s,"received":%s,"sent_bytes":%s,"received_bytes":%s}\n' \
    "$name" "$relayed" "${CALL_STARTED[$name]}" "$ended" "$sent" "$recv" "$((sent * LEN))" "$((recv * LEN))" \
    >>"$WORK/calls-$n.jsonl"
}

# check_evidence NODE STOPS: verify, then the evidence checks (see rolling_upgrade_check.py).
check_evidence() {
  local n="$1" stops="$2" tag="$3"
  if "$NEW_BIN" evidence verify "$WORK/$n/evidence" --trust "$WORK/$n.pub" >"$WORK/verify-$n-$tag.log" 2>&1; then
    pass "$n-verify-$tag" "$(grep -m 1 'VERIFIED' "$WORK/verify-$n-$tag.log")"
  else
    fail "$n-verify-$tag" "$(tail -n 5 "$WORK/verify-$n-$tag.log")"
  fi
  touch "$WORK/calls-$n.jsonl"
  python3 "$INTEROP_DIR/rolling_upgrade_check.py" --dir "$WORK/$n/evidence" --node "$n-$tag" \
    --calls "$WORK/calls-$n.jsonl" --stops "$stops" >"$WORK/check-$n-$tag.log" 2>&1
  cat "$WORK/check-$n-$tag.log"
  record_results "$WORK/check-$n-$tag.log"
  if ! grep -qE '^(PASS|FAIL) ' "$WORK/check-$n-$tag.log"; then
    fail "$n-evidence-$tag" "the checker printed no result"
  fi
}

# upgrade NODE OTHER: the steps in the header.
upgrade() {
  local n="$1" o="$2" i rc t0
  log "=== upgrading $n (alternate: $o) ==="
  call "$o-during-$n" "$o" "$N_OTHER"
  call "$n-old" "$n" "$N_NODE"
  if ! wait_relaying "$n-old" || ! wait_relaying "$o-during-$n"; then
    fail "$n-calls-up" "the calls did not get going within 20 s"
    return
  fi

  t0=$(date +%s)
  kill -TERM "${PID[$n]}"
  if wait_for_log "$WORK/$n.log" "${PID[$n]}" 'draining' 10; then
    pass "$n-drains" "$(strip_ansi <"$WORK/$n.log" | grep -m 1 -o 'draining.*')"
  else
    fail "$n-drains" "no 'draining' in $n's log after SIGTERM"
    return
  fi

  # A new client sent to the draining node: 300 with OTHER's address, then a call on OTHER.
  local r="$n-redirected" out="$WORK/call-$n-redirected.log"
  call "$r" "$n" "$N_SHORT"
  CALL_NODE[$r]=$o # its call lands on the other node
  finish_call "$r"
  if grep -q 'error 300 (Try Alternate' "$out" &&
    grep -q "Connected to: ${ADDR[$o]}:${PORT[$o]}" "$out" &&
    strip_ansi <"$WORK/$o.log" | grep -q "allocation created .*user=u-$r " &&
    ! strip_ansi <"$WORK/$n.log" | grep -q "allocation created .*user=u-$r "; then
    pass "$n-sends-to-$o" "300 Try Alternate from $n, the client reconnected to ${ADDR[$o]}:${PORT[$o]} and allocated there"
  else
    fail "$n-sends-to-$o" "no 300 naming $o's address, or the allocation not on $o"
    grep -E 'error|Connected to' "$out" | sed 's/^/    | /'
  fi

  # The node's own call runs to its end; the node exits by itself with status 0.
  finish_call "$n-old"
  for i in $(seq 1 $(((DRAIN + 20) * 10))); do
    kill -0 "${PID[$n]}" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "${PID[$n]}" 2>/dev/null; then
    fail "$n-exits" "still running $((DRAIN + 20)) s after SIGTERM"
    kill -INT "${PID[$n]}"
    return
  fi
  wait "${PID[$n]}"
  rc=$?
  if [ "$rc" -eq 0 ]; then
    pass "$n-exits" "exit status 0, $(($(date +%s) - t0)) s after SIGTERM ($(strip_ansi <"$WORK/$n.log" | grep -oE 'drained: the last allocation has ended|server.drain_timeout passed' | head -n 1))"
  else
    fail "$n-exits" "exit status $rc"
    strip_ansi <"$WORK/$n.log" | tail -n 10 | sed 's/^/    | /'
  fi
  check_evidence "$n" drain "after-drain"

  # The "new build" on the same evidence directory.
  if start_node "$n" "$NEW_BIN"; then
    if [ "$SAME_BUILD" = 1 ]; then
      pass "$n-restarted" "ready again (the same binary as before: no version change is shown, only the procedure)"
    else
      pass "$n-restarted" "ready again from $NEW_BIN ($("$NEW_BIN" --version))"
    fi
  else
    fail "$n-restarted" "the new build did not start"
    return
  fi
  if kill -0 "${CALL_PID[$o-during-$n]}" 2>/dev/null; then
    pass "$o-call-spans-$n-upgrade" "the call through $o was still running when $n came back"
  else
    fail "$o-call-spans-$n-upgrade" "the call through $o ended before $n came back: it does not span the upgrade (make N_OTHER larger)"
  fi
  finish_call "$o-during-$n"
}

for n in a b; do
  case "$n" in
    a) node_config a b ;;
    b) node_config b a ;;
  esac || {
    fail setup "could not write $n's config and key ($(cat "$WORK/$n.keygen.log"))"
    exit 1
  }
  if ! start_node "$n" "$OLD_BIN"; then
    fail setup "node $n did not start"
    exit 1
  fi
done
log "nodes ready: a pid ${PID[a]} on $ADDR_A:$PORT_A, b pid ${PID[b]} on $ADDR_B:$PORT_B"
start_peers "$PEER_PORT" "$PEER_FR"

upgrade a b
upgrade b a

# Both nodes run the new build; stop them at once and check each whole history.
for n in a b; do
  if kill -0 "${PID[$n]}" 2>/dev/null; then
    kill -INT "${PID[$n]}"
    wait "${PID[$n]}"
    rc=$?
    if [ "$rc" -eq 0 ]; then
      pass "$n-final-stop" "exit status 0 on SIGINT"
    else
      fail "$n-final-stop" "exit status $rc on SIGINT"
    fi
  fi
done
check_evidence a drain,shutdown "both-runs"
check_evidence b drain,shutdown "both-runs"

interop_finish
