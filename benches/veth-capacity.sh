#!/usr/bin/env bash
# The relay host's capacity and latency on a veth pair, with the load generated in the kernel:
# coturn, eeaturn relaying in user space, and eeaturn with the kernel fast path
# (relay.offload = "required"), on the topology of benches/veth-compare.sh (benches/veth-lib.sh:
# the relay's side on CPU 1, everything outside on CPU 0).
#
# Why a second tool: in veth-compare.sh the load tool (user-space sockets) and the outside
# veth end share CPU 0 and fill it before the kernel fast path fills CPU 1, so it cannot show
# the relay's capacity. Here benches/xdpgen makes the load: eeaturn-bench only sets up the
# allocations ("hold": a channel to the peer on each) and keeps them; xdpgen then transmits
# the clients' ChannelData (to-peer) or the peer's datagrams (to-client) from the outside end
# with BPF_PROG_RUN in live-frames mode, a few hundred nanoseconds per frame, and counts what
# the relay sends back with an XDP program on the same end, which drops the generated frames
# and passes everything else (so the allocations' STUN traffic still works). Frames carry the
# kernel's monotonic time, so latency is the relay host's own, without the user-space tool's
# scheduling in it. The frames enter rc as XDP frames, as from a NIC's driver; what the relay
# sends leaves rc as it would towards a NIC. The outside's receive thread runs at real-time
# priority, so the generator, which takes whatever CPU 0 has left, never starves the count.
#
# Loads: "fixed" (--rate, for CPU per packet and latency) and "sweep": the offered rates of
# --sweep in turn, paced on 100 µs ticks (a 1 ms burst at a high rate would overflow the
# veth's 256-frame ring by itself). Capacity is read from the sweep: the most delivered, and
# the highest offered rate relayed with less than 0.1 % loss.
#
#   bash benches/veth-capacity.sh [--runs N] [--duration S] [--rate PPS]
#                                 [--sweep "100000 200000 400000 800000 1200000 1600000"]
#                                 [--servers "coturn eeaturn eeaturn-kernel"]
#                                 [--directions "to-peer to-client"] [--loads "fixed sweep"]
#                                 [--payload B] [--allocations N] [--results DIR]
#
# Prints a table per load; raw JSON lines (one per cell, xdpgen's fields plus server and
# direction) in DIR/capacity.jsonl. Needs root, iproute2, ethtool, coturn, clang and
# libbpf-dev (installed when missing) and a release build (made when missing). Traffic stays
# in the two namespaces, which the script deletes on exit.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=../tests/interop/lib.sh
source "$REPO/tests/interop/lib.sh"

RUNS=3 DURATION=5 WARMUP=1 RATE=50000 PAYLOAD=100 ALLOCS=10 RESULTS="" TICK_US=100
SWEEP="100000 200000 400000 800000 1200000 1600000"
SERVERS="coturn eeaturn eeaturn-kernel"
DIRECTIONS="to-peer to-client"
LOADS="fixed sweep"
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) RUNS="$2"; shift ;;
    --duration) DURATION="$2"; shift ;;
    --rate) RATE="$2"; shift ;;
    --sweep) SWEEP="$2"; shift ;;
    --servers) SERVERS="$2"; shift ;;
    --directions) DIRECTIONS="$2"; shift ;;
    --loads) LOADS="$2"; shift ;;
    --payload) PAYLOAD="$2"; shift ;;
    --allocations) ALLOCS="$2"; shift ;;
    --results) RESULTS="$2"; shift ;;
    -h | --help) awk 'NR > 1 && /^set -euo/ { exit } NR > 1' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
case "$RUNS$DURATION$RATE$PAYLOAD$ALLOCS${SWEEP// /}" in
  *[!0-9.]*) echo "--runs, --duration, --rate, --sweep, --payload and --allocations take numbers" >&2; exit 2 ;;
esac
[ "$ALLOCS" -ge 1 ] && [ "$ALLOCS" -le 64 ] || { echo "--allocations must be 1..64 (xdpgen's flows)" >&2; exit 2; }
VETH_NAME=veth-capacity
VETH_OUTSIDE_NAPI_FIFO=1
HOLD_PID=""
veth_cleanup_first() { stop_hold; }
# shellcheck source=veth-lib.sh
source "$REPO/benches/veth-lib.sh"

bash "$REPO/benches/xdpgen/build.sh" "$WORK/xdpgen" >/dev/null
XDPGEN="$WORK/xdpgen/xdpgen"
RC_MAC="$(inr cat /sys/class/net/rc/address)"
O_MAC="$(ino cat /sys/class/net/o/address)"
# Static neighbours both ways: no ARP round in any measured window.
for a in "$CLIENT" "$PEER"; do inr ip neigh replace "$a" lladdr "$O_MAC" dev rc nud permanent; done
for a in "$LISTEN" "$RELAY"; do ino ip neigh replace "$a" lladdr "$RC_MAC" dev o nud permanent; done

# start_hold: the allocations, each with channel 0x4000 to the peer, set up and kept by
# eeaturn-bench hold (until its stdin, a pipe from this script, closes); their 5-tuples in
# $WORK/flows.json. Three attempts: coturn, just after it first answered, now and then
# refuses the next client's first datagram with an ICMP port unreachable.
start_hold() {
  local attempt
  for attempt in 1 2 3; do
    if start_hold_once; then return 0; fi
    stop_hold
    log "  eeaturn-bench hold failed (attempt $attempt of 3; $WORK/hold.log)"
    sleep 1
  done
  return 1
}

start_hold_once() {
  rm -f "$WORK/flows.json" "$WORK/hold.in"
  mkfifo "$WORK/hold.in"
  ino taskset -c "$TOOL_CPU" "$BENCH" hold --server "$LISTEN:$PORT" --secret-file "$WORK/secret" \
    --client-addr "$CLIENT" --peer-addr "$PEER" --peer-port "$PEER_PORT" --allocations "$ALLOCS" \
    --seconds "$HOLD_SECS" <"$WORK/hold.in" >"$WORK/flows.json" 2>>"$WORK/hold.log" &
  HOLD_PID=$!
  exec 7>"$WORK/hold.in"
  local i
  for i in $(seq 1 100); do
    [ -s "$WORK/flows.json" ] && return 0
    kill -0 "$HOLD_PID" 2>/dev/null || { grep -v '^ *[0-9]*: \|^ *at ' "$WORK/hold.log" | tail -n 3 >&2; return 1; }
    sleep 0.1
  done
  echo "eeaturn-bench hold: no allocations after 10 s" >&2
  return 1
}

stop_hold() {
  [ -n "$HOLD_PID" ] || return 0
  exec 7>&-
  for _ in $(seq 1 50); do kill -0 "$HOLD_PID" 2>/dev/null || break; sleep 0.1; done
  kill -TERM "$HOLD_PID" 2>/dev/null || true
  wait "$HOLD_PID" 2>/dev/null || true
  HOLD_PID=""
}

# flows DIRECTION: xdpgen's --flows from the held allocations.
flows() {
  python3 - "$1" "$PORT" "$PEER_PORT" "$WORK/flows.json" <<'PY'
import json, sys
direction, port, peer_port, path = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
held = json.load(open(path))["flows"]
port_of = lambda a: a.rsplit(":", 1)[1]
if direction == "to-peer":
    print(",".join(f"{port_of(f['client'])}:{port}:{f['channel']}" for f in held))
else:
    print(",".join(f"{peer_port}:{port_of(f['relayed'])}:0" for f in held))
PY
}

# The hold outlives one server's cells (each about warm-up + duration + 3 s) with a margin;
# it ends sooner, when this script closes its stdin.
ncells=0
for load in $LOADS; do
  case "$load" in fixed) ncells=$((ncells + 1)) ;; sweep) for _ in $SWEEP; do ncells=$((ncells + 1)); done ;; esac
done
ndirs=$(echo "$DIRECTIONS" | wc -w)
HOLD_SECS=$(python3 -c "print(int($ndirs * $ncells * ($WARMUP + $DURATION + 3) + 120))")

# snap FILE: the counters that say where a frame was lost, for the JSON line of a cell.
snap() {
  {
    echo "== rc"; inr ethtool -S rc
    echo "== o"; ino ethtool -S o
    echo "== rc_tx_dropped: $(inr cat /sys/class/net/rc/statistics/tx_dropped)"
    echo "== udp_drops: $(inr awk 'NR > 1 { s += $NF } END { print s + 0 }' /proc/net/udp)"
  } >"$1"
}

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "topology: veth rc (relay ns, CPU 1) -- o (outside ns, CPU 0), threaded NAPI, GRO on; load from xdpgen (BPF_PROG_RUN live frames)"
  echo "kernel: $(uname -r)"
  echo "eeaturn: $(cd "$REPO" && git describe --always --dirty 2>/dev/null || echo unknown)"
  echo "runs: $RUNS, duration ${DURATION}s, fixed rate $RATE msg/s, sweep $SWEEP msg/s, ${TICK_US} µs ticks, $PAYLOAD B, $ALLOCS allocations"
} >"$RESULTS/machine.txt"
sed 's/^/    /' "$RESULTS/machine.txt"

for run in $(seq 1 "$RUNS"); do
  for server in $SERVERS; do
    start_server "$server"
    start_hold
    for direction in $DIRECTIONS; do
      if [ "$direction" = to-peer ]; then src="$CLIENT" dst="$LISTEN"; else src="$PEER" dst="$RELAY"; fi
      f="$(flows "$direction")"
      cells=""
      for load in $LOADS; do
        case "$load" in
          fixed) cells="$cells fixed:$RATE" ;;
          sweep) for r in $SWEEP; do cells="$cells sweep:$r"; done ;;
          *) echo "unknown load $load (fixed, sweep)" >&2; exit 2 ;;
        esac
      done
      for cell in $cells; do
        load="${cell%%:*}" rate="${cell#*:}"
        log "run $run/$RUNS $server: channel $direction, $PAYLOAD B, $ALLOCS allocations, $load $rate msg/s"
        snap "$WORK/before"
        ino timeout 120 taskset -c "$TOOL_CPU" "$XDPGEN" --dev o --dst-mac "$RC_MAC" \
          --src-ip "$src" --dst-ip "$dst" --flows "$f" --payload "$PAYLOAD" --rate "$rate" --tick-us "$TICK_US" \
          --warmup "$WARMUP" --duration "$DURATION" --label "$server" >"$WORK/cell.json" \
          2> >(sed 's/^/    /' >&2) || { log "  failed (see above)"; continue; }
        snap "$WORK/after"
        python3 - "$WORK/cell.json" "$server" "$direction" "$load" "$run" "$WORK/before" "$WORK/after" \
          >>"$RESULTS/capacity.jsonl" <<'PY'
import json, sys
cell = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
cell.update(server=sys.argv[2], direction=sys.argv[3], load=sys.argv[4], run=int(sys.argv[5]))
def counters(path):
    out, side = {}, ""
    for line in open(path):
        line = line.strip()
        if line.startswith("== "):
            name, _, value = line[3:].partition(":")
            side = name
            if value.strip():
                out[name] = int(value)
        elif ":" in line and side in ("rc", "o"):
            k, _, v = line.partition(":")
            if v.strip().isdigit():
                out[f"{side}.{k.strip()}"] = int(v)
    return out
a, b = counters(sys.argv[6]), counters(sys.argv[7])
d = lambda k: b.get(k, 0) - a.get(k, 0)
# Over the whole cell (warm-up and drain too), so next to offered and delivered they show
# where frames went, not exact shares of the window's loss.
cell["drops"] = {
    "into_relay_ring": d("o.tx_queue_0_xdp_xmit_errors"),
    "relay_sockets": d("udp_drops"),
    "out_of_relay_xdp": d("rc.tx_queue_0_xdp_xmit_errors"),
    "out_of_relay_skb": d("rc_tx_dropped"),
    "relay_rx_queue": d("rc.rx_queue_0_drops"),
    "outside_rx_queue": d("o.rx_queue_0_drops"),
}
print(json.dumps(cell))
PY
      done
    done
    if [ "$server" = eeaturn-kernel ]; then
      mode=$(inr ip -d link show dev rc | grep -o 'prog/xdp\|xdpgeneric\|xdpdrv' | head -n 1)
      log "  eeaturn-kernel: program on rc: ${mode:-none}"
    fi
    stop_hold
    stop_server
  done
done

python3 "$REPO/benches/capacity-table.py" "$RESULTS/capacity.jsonl" "$SERVER_CPU" "$TOOL_CPU" | tee "$RESULTS/table.md"
log "done; raw results in $RESULTS"
