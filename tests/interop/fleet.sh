#!/usr/bin/env bash
# Interop: a fleet of two relay nodes, real clients, one merged residency report.
#
#   bash tests/interop/fleet.sh
#
# Two `eeaturn serve` processes share one TURN REST secret; each has its own
# evidence directory and its own signing key (made with `eeaturn evidence
# keygen`): node A on UDP 127.0.0.1:$FLEET_PORT_A (default 29180, relay ports
# 30600-30699), node B on UDP 127.0.0.2:$FLEET_PORT_B (default 29181, relay
# ports 30700-30799), both in the loopback test world (geo/testdata). Echo
# peers (turnutils_peer) on a French (127.0.2.1), a Norwegian (127.0.3.1) and
# an American (127.0.5.1) address. With coturn's turnutils_uclient:
#   - a German client (127.0.1.1) relays to the French peer through node A and
#     another (127.0.1.2) to the Norwegian peer through node B, zero loss;
#   - a German client (127.0.1.3) towards the American peer through node A:
#     allocation yes, permission refused (403 outside-region);
#   - a British client (127.0.6.1) on node B: every Allocate refused (403);
#   - both nodes stop cleanly on SIGTERM;
#   - `eeaturn report --format json` over both directories, both public keys
#     trusted, exits 0, and python3 checks it against what the clients saw:
#     allocations per node and in total, clients by country (DE only), peers
#     by country (FR, NO), client refusals (country GB) and peer refusals
#     (country US), one row per node, verified, 100 % inside the region.
#     What turnutils does, so what the figures must be (coturn 4.6.1, see
#     turnutils.sh): each run allocates twice, the probe allocation the tool
#     always makes first and its one client's allocation (-c: no RTCP pair),
#     each printing "Received relay addr". Node A: DE-FR and DE-US runs, 4
#     allocations; node B: the DE-NO run, 2 (the GB run gets none). The DE-US
#     run gives up after its first refused ChannelBind: 1 peer refusal. The GB
#     run's probe and client Allocates are both refused: 2 client refusals.
#     The script checks that the clients' output shows exactly these numbers,
#     then that the report does;
#   - `eeaturn evidence verify` passes on each directory with its own key.
# Prints one PASS/FAIL line per scenario; exits non-zero if any failed.
#
# Only loopback addresses are used. Never add uclient's -G: it makes requests
# for public addresses. See turnutils.sh for how turnutils_uclient is driven.
# With INTEROP_SERVER=coturn the script is skipped (no evidence to compare).
set -uo pipefail

# shellcheck source=tests/interop/lib.sh
source "$(dirname "$0")/lib.sh"

PORT_A="${FLEET_PORT_A:-29180}"
PORT_B="${FLEET_PORT_B:-29181}"
ADDR_A=127.0.0.1
ADDR_B=127.0.0.2
RANGE_A="${FLEET_RELAY_RANGE_A:-30600-30699}"
RANGE_B="${FLEET_RELAY_RANGE_B:-30700-30799}"
PEER_PORT="${FLEET_PEER_PORT:-29190}" # uclient also talks to PEER_PORT+1
PEER_FR=127.0.2.1
PEER_NO=127.0.3.1
PEER_US=127.0.5.1
# Messages per allowed run.
N=30

interop_init fleet
if [ "$INTEROP_SERVER" != eeaturn ]; then
  log "fleet: skipped for INTEROP_SERVER=$INTEROP_SERVER (no evidence to compare)"
  exit 0
fi
ensure_coturn || {
  fail setup "could not install coturn's turnutils"
  exit 1
}
BIN="$(eeaturn_bin)"
if [ ! -x "$BIN" ]; then
  fail setup "server binary $BIN not found (run cargo build, or set EEATURN_BIN)"
  exit 1
fi
for p in "$PORT_A" "$PORT_B" "$PEER_PORT" "$((PEER_PORT + 1))"; do
  if ! udp_port_free "$p"; then
    fail setup "UDP port $p is already in use"
    exit 1
  fi
done

# One secret for the fleet.
SECRET="$(random_secret)"
printf '%s\n' "$SECRET" >"$WORK/secret"
chmod 600 "$WORK/secret"
FROM="$(date -u +%F)"

# node_config NAME ADDR PORT RANGE: writes $WORK/NAME.toml, makes NAME's key pair.
node_config() {
  local name="$1" addr="$2" port="$3" range="$4"
  mkdir -p "$WORK/$name"
  "$BIN" evidence keygen --out-private "$WORK/$name.key" --out-public "$WORK/$name.pub" \
    >"$WORK/$name.keygen.log" 2>&1 || return 1
  cat >"$WORK/$name.toml" <<EOF
# Written by tests/interop/fleet.sh for one test run; loopback only.
[server]
realm = "eeaturn.dev"
listen = ["udp://$addr:$port"]

[auth]
secret_file = "$WORK/secret"

[relay]
offload = "off"
addresses = ["$addr"]
port_range = "$range"

[geo]
country_db = "$REPO_ROOT/geo/testdata/world-country.mmdb"
asn_db = "$REPO_ROOT/geo/testdata/world-asn.mmdb"
max_age = "36500d"

[policy]
deny_asns = [9009]

[peers]
dangerous_allow = ["127.0.0.0/8"]

[log]
level = "${EEATURN_LOG_LEVEL:-info}"

[evidence]
enabled = true
directory = "$WORK/$name/evidence"
signing_key_file = "$WORK/$name.key"
node_id = "$name"
site = "site-$name"
checkpoint_interval = "1s"
EOF
}

declare -A PID=()
# start_node NAME: starts NAME on its config, waits until it is ready.
start_node() {
  local name="$1"
  spawn "$WORK/$name.log" env NO_COLOR=1 "$BIN" serve --config "$WORK/$name.toml"
  PID[$name]=$SPAWNED
  wait_for_log "$WORK/$name.log" "${PID[$name]}" 'ready' 30
}

for n in fleet-a fleet-b; do
  case "$n" in
    fleet-a) node_config "$n" "$ADDR_A" "$PORT_A" "$RANGE_A" ;;
    fleet-b) node_config "$n" "$ADDR_B" "$PORT_B" "$RANGE_B" ;;
  esac || {
    fail setup "could not write $n's config and key ($(cat "$WORK/$n.keygen.log"))"
    exit 1
  }
  if ! start_node "$n"; then
    fail setup "node $n did not start"
    tail -n 20 "$WORK/$n.log"
    exit 1
  fi
done
log "nodes ready: fleet-a pid ${PID[fleet-a]}, fleet-b pid ${PID[fleet-b]}"

start_peers "$PEER_PORT" "$PEER_FR" "$PEER_NO" "$PEER_US"

# What the clients saw, per node; compared with the report at the end.
declare -A ALLOCATIONS=([fleet-a]=0 [fleet-b]=0)
PEER_REFUSALS=0
CLIENT_REFUSALS=0

# uclient NAME NODE ADDR PORT ARGS...: runs turnutils_uclient against a node;
# the output goes to $WORK/uclient-NAME.log; counts the allocations it got.
uclient() {
  local name="$1" node="$2" addr="$3" port="$4" out
  shift 4
  out="$WORK/uclient-$name.log"
  log "scenario $name ($node): turnutils_uclient -v $(redact "$@") -p $port $addr"
  timeout 60 turnutils_uclient -v -W "$SECRET" -p "$port" "$@" "$addr" >"$out" 2>&1
  UCLIENT_RC=$?
  local got
  got=$(grep -c 'Received relay addr' "$out")
  ALLOCATIONS[$node]=$((ALLOCATIONS[$node] + got))
}

# allowed NAME NODE ADDR PORT CLIENT PEER
allowed() {
  local name="$1" node="$2" addr="$3" port="$4" client="$5" peer="$6" out line sent recv
  out="$WORK/uclient-$name.log"
  uclient "$name" "$node" "$addr" "$port" -u "u-$name" -L "$client" -e "$peer" -r "$PEER_PORT" -c -n "$N"
  line="$(grep -E 'start_mclient: tot_send_msgs=[0-9]+, tot_recv_msgs=[0-9]+' "$out" | tail -n 1)"
  sent="$(sed -nE 's/.*tot_send_msgs=([0-9]+).*/\1/p' <<<"$line")"
  recv="$(sed -nE 's/.*tot_recv_msgs=([0-9]+).*/\1/p' <<<"$line")"
  if [ "$UCLIENT_RC" -eq 0 ] && [ "$sent" = "$N" ] && [ "$recv" = "$N" ]; then
    pass "$name" "through $node: tot_send_msgs=$sent tot_recv_msgs=$recv"
  else
    fail "$name" "through $node: exit $UCLIENT_RC, sent '${sent:-}', received '${recv:-}'"
    tail -n 20 "$out" | sed 's/^/    | /'
  fi
}

allowed de-fr-on-a fleet-a "$ADDR_A" "$PORT_A" 127.0.1.1 "$PEER_FR"
allowed de-no-on-b fleet-b "$ADDR_B" "$PORT_B" 127.0.1.2 "$PEER_NO"

# A German client towards the American peer through node A: allocated, peer refused.
name=de-us-refused-on-a
uclient "$name" fleet-a "$ADDR_A" "$PORT_A" -u "u-$name" -L 127.0.1.3 -e "$PEER_US" -r "$PEER_PORT" -c -n 10
refused="$(grep -cE 'error 403 \(.*peer address refused by rule outside-region' "$WORK/uclient-$name.log")"
PEER_REFUSALS=$((PEER_REFUSALS + refused))
if [ "$UCLIENT_RC" -ne 0 ] && [ "$refused" -ge 1 ] && ! grep -qE 'tot_recv_msgs=[1-9]' "$WORK/uclient-$name.log"; then
  pass "$name" "$refused x 403 outside-region for the peer, nothing relayed"
else
  fail "$name" "exit $UCLIENT_RC, $refused peer refusals"
  tail -n 20 "$WORK/uclient-$name.log" | sed 's/^/    | /'
fi

# A British client on node B: no allocation.
name=gb-client-refused-on-b
uclient "$name" fleet-b "$ADDR_B" "$PORT_B" -u "u-$name" -L 127.0.6.1 -e "$PEER_FR" -r "$PEER_PORT" -c -n 5
refused="$(grep -cE 'error 403 \(.*client address refused by rule outside-region' "$WORK/uclient-$name.log")"
CLIENT_REFUSALS=$((CLIENT_REFUSALS + refused))
if [ "$UCLIENT_RC" -ne 0 ] && [ "$refused" -ge 1 ] && ! grep -q 'Received relay addr' "$WORK/uclient-$name.log"; then
  pass "$name" "$refused x 403 outside-region for the client, no allocation"
else
  fail "$name" "exit $UCLIENT_RC, $refused client refusals"
  tail -n 20 "$WORK/uclient-$name.log" | sed 's/^/    | /'
fi

# Both nodes stop cleanly: node-stopped and a manifest for the open segment.
for n in fleet-a fleet-b; do
  kill -TERM "${PID[$n]}"
done
for n in fleet-a fleet-b; do
  for _ in $(seq 1 100); do
    kill -0 "${PID[$n]}" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "${PID[$n]}" 2>/dev/null; then
    fail "$n-stops" "still running 10 s after SIGTERM"
    continue
  fi
  wait "${PID[$n]}"
  rc=$?
  if [ "$rc" -eq 0 ]; then
    pass "$n-stops" "exit status 0 after SIGTERM"
  else
    fail "$n-stops" "exit status $rc after SIGTERM"
    tail -n 20 "$WORK/$n.log" | sed 's/^/    | /'
  fi
done

TO="$(date -u +%F)"
log "clients saw: allocations fleet-a=${ALLOCATIONS[fleet-a]} fleet-b=${ALLOCATIONS[fleet-b]}, peer refusals $PEER_REFUSALS, client refusals $CLIENT_REFUSALS"

# What turnutils does (see the header): 2 allocations per run, 1 peer refusal,
# 2 client refusals.
seen="${ALLOCATIONS[fleet-a]} ${ALLOCATIONS[fleet-b]} $PEER_REFUSALS $CLIENT_REFUSALS"
if [ "$seen" = "4 2 1 2" ]; then
  pass clients-as-expected "allocations A=4 B=2, 1 peer refusal, 2 client refusals"
else
  fail clients-as-expected "the clients saw allocations A, B, peer and client refusals = $seen, expected 4 2 1 2"
fi

# --- one report over both nodes ------------------------------------------------
"$BIN" report --format json --from "$FROM" --to "$TO" \
  --trust "$WORK/fleet-a.pub" --trust "$WORK/fleet-b.pub" \
  --out "$WORK/report.json" "$WORK/fleet-a/evidence" "$WORK/fleet-b/evidence" \
  >"$WORK/report.log" 2>&1
rc=$?
if [ "$rc" -eq 0 ]; then
  pass report-exit "eeaturn report exited 0 (verified, 100 % inside the region)"
else
  fail report-exit "eeaturn report exited $rc: $(tail -n 3 "$WORK/report.log")"
fi

if why="$(python3 - "$WORK/report.json" "${ALLOCATIONS[fleet-a]}" "${ALLOCATIONS[fleet-b]}" \
  "$PEER_REFUSALS" "$CLIENT_REFUSALS" 2>&1 <<'EOF'
import json, sys
report = json.load(open(sys.argv[1]))
alloc_a, alloc_b, peer_refusals, client_refusals = map(int, sys.argv[2:6])
s = report["summary"]
problems = []
def expect(what, got, want):
    if got != want:
        problems.append(f"{what}: {got!r}, expected {want!r}")
expect("summary.nodes", s["nodes"], 2)
expect("summary.verified", s["verified"], True)
expect("summary.allocations", s["allocations"], alloc_a + alloc_b)
expect("summary.allocations_inside", s["allocations_inside"], alloc_a + alloc_b)
expect("summary.allocations_inside_share", s["allocations_inside_share"], 1.0)
expect("summary.bytes_inside_share", s["bytes_inside_share"], 1.0)
expect("summary.all_inside", s["all_inside"], True)
expect("summary.client_refusals", s["client_refusals"], client_refusals)
expect("summary.peer_refusals", s["peer_refusals"], peer_refusals)
if s["bytes"] <= 0 or s["bytes"] != s["bytes_inside"]:
    problems.append(f"bytes {s['bytes']} / inside {s['bytes_inside']}")
rows = {n["node"]: n for n in report["nodes"]}
expect("node rows", sorted(rows), ["fleet-a", "fleet-b"])
if len(rows) == 2:
    expect("fleet-a allocations", rows["fleet-a"]["allocations"], alloc_a)
    expect("fleet-b allocations", rows["fleet-b"]["allocations"], alloc_b)
    expect("fleet-a peer refusals", rows["fleet-a"]["peer_refusals"], peer_refusals)
    expect("fleet-b client refusals", rows["fleet-b"]["refusals"], client_refusals)
    expect("fleet-a site", rows["fleet-a"]["site"], "site-fleet-a")
    for n in rows.values():
        expect(f"{n['node']} verified", n["verified"], True)
        expect(f"{n['node']} keys", len(n["key_fingerprints"]), 1)
clients = {r["country"]: r["count"] for r in report["clients_by_country"]}
expect("clients by country", clients, {"DE": alloc_a + alloc_b})
peers = {r["country"]: r for r in report["peers_by_country"]}
expect("peer countries", sorted(peers), ["FR", "NO"])
if all(r["inside"] for r in peers.values()) is not True:
    problems.append("a peer country is not inside")
refusals = {r["country"]: (r["clients"], r["peers"]) for r in report["refusals_by_country"]}
expect("refusals by country", refusals, {"GB": (client_refusals, 0), "US": (0, peer_refusals)})
rules = {r["rule"] for r in report["refusals_by_rule"]}
expect("refusal rules", rules, {"outside-region"})
expect("outside the region", report["outside"]["total"], 0)
print("; ".join(problems))
sys.exit(1 if problems else 0)
EOF
)"; then
  pass report-figures "allocations ${ALLOCATIONS[fleet-a]}+${ALLOCATIONS[fleet-b]}, refusals: $CLIENT_REFUSALS client (GB), $PEER_REFUSALS peer (US), one row per node, 100 % inside"
else
  fail report-figures "$why"
fi

for n in fleet-a fleet-b; do
  if "$BIN" evidence verify "$WORK/$n/evidence" --trust "$WORK/$n.pub" >"$WORK/verify-$n.log" 2>&1; then
    pass "verify-$n" "$(grep -m 1 'VERIFIED' "$WORK/verify-$n.log")"
  else
    fail "verify-$n" "$(tail -n 5 "$WORK/verify-$n.log")"
  fi
done

interop_finish
