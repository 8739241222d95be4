#!/usr/bin/env bash
# The relay data path on a veth pair between two network namespaces, with the relay's side of
# the work on a core of its own: coturn, eeaturn relaying in user space, and eeaturn with the
# kernel fast path (relay.offload = "required": eeaturn_routed in native XDP mode), all driven
# by the load tool of benches/compare.sh (src/bin/eeaturn-bench) with the same settings.
#
#   outside ns (load tool, CPU 0)                     relay ns (server, CPU 1)
#   o 198.18.1.2 (clients), 198.18.2.2 (peer) ==== rc 198.18.1.1 (listener :3478),
#                                                      198.18.2.1 (relay addresses)
#
# Why this and not compare.sh for the fast path: on lo the XDP program runs in the sender's
# softirq, on the load tool's core, so the tool's core limits both the load and the relaying.
# Here both veth ends use threaded NAPI (GRO on, /sys/class/net/IFACE/threaded = 1) and the
# relay side's NAPI thread is pinned to the server's core: everything the relay host does for
# a packet (receive, XDP or socket and relay process, transmit) lands on CPU 1, everything
# the load tool does on CPU 0, for every server alike. A packet relayed through XDP_TX goes
# back out of rc (client and peer are both behind it), which is the one-interface host shape.
#
#   bash benches/veth-compare.sh [--runs N] [--duration S] [--rate PPS] [--gso N]
#                                [--servers "coturn eeaturn eeaturn-kernel"]
#                                [--directions "to-peer to-client"] [--loads "fixed saturate"]
#                                [--payload B] [--allocations N] [--results DIR]
#
# Tables as compare.sh prints them (bash benches/compare.sh --table-only DIR re-renders them);
# "core µs/pkt" is CPU 1, the relay host's whole cost. Needs root, iproute2, ethtool, coturn
# (installed when missing) and a release build (made when missing). Traffic stays in the two
# namespaces, which the script deletes on exit.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=../tests/interop/lib.sh
source "$REPO/tests/interop/lib.sh"

RUNS=3 DURATION=5 WARMUP=1 RATE=50000 GSO=8 PAYLOAD=100 ALLOCS=10 RESULTS=""
SERVERS="coturn eeaturn eeaturn-kernel"
DIRECTIONS="to-peer to-client"
LOADS="fixed saturate"
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) RUNS="$2"; shift ;;
    --duration) DURATION="$2"; shift ;;
    --rate) RATE="$2"; shift ;;
    --gso) GSO="$2"; shift ;;
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
case "$RUNS$DURATION$RATE$GSO$PAYLOAD$ALLOCS" in
  *[!0-9.]*) echo "--runs, --duration, --rate, --gso, --payload and --allocations take numbers" >&2; exit 2 ;;
esac
VETH_NAME=veth-compare
# shellcheck source=veth-lib.sh
source "$REPO/benches/veth-lib.sh"

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "topology: veth rc (relay ns) -- o (outside ns), threaded NAPI, GRO on"
  echo "kernel: $(uname -r)"
  echo "eeaturn: $(cd "$REPO" && git describe --always --dirty 2>/dev/null || echo unknown)"
  echo "runs: $RUNS, duration ${DURATION}s, fixed rate $RATE msg/s, saturating with GSO $GSO, $PAYLOAD B, $ALLOCS allocations"
} >"$RESULTS/machine.txt"
sed 's/^/    /' "$RESULTS/machine.txt"

for run in $(seq 1 "$RUNS"); do
  for server in $SERVERS; do
    start_server "$server"
    for direction in $DIRECTIONS; do
      for load in $LOADS; do
        if [ "$load" = fixed ]; then rate="$RATE" gso=1; else rate=0 gso="$GSO"; fi
        log "run $run/$RUNS $server: channel $direction, $PAYLOAD B, $ALLOCS allocations, $load"
        ino timeout 300 taskset -c "$TOOL_CPU" "$BENCH" load --server "$LISTEN:$PORT" \
          --server-pid "$SERVER_PID" --server-core "$SERVER_CPU" --direction "$direction" \
          --allocations "$ALLOCS" --payload "$PAYLOAD" --rate "$rate" --gso "$gso" \
          --duration "$DURATION" --warmup "$WARMUP" --peer-addr "$PEER" --peer-port "$PEER_PORT" \
          --client-addr "$CLIENT" --label "$server" --mode channel --secret-file "$WORK/secret" --json \
          >>"$RESULTS/load.jsonl" 2> >(sed 's/^/    /' >&2) || log "  failed (see above)"
      done
    done
    if [ "$server" = eeaturn-kernel ]; then
      mode=$(inr ip -d link show dev rc | grep -o 'prog/xdp\|xdpgeneric\|xdpdrv' | head -n 1)
      log "  eeaturn-kernel: program on rc: ${mode:-none}"
    fi
    stop_server
  done
done

bash "$REPO/benches/compare.sh" --table-only "$RESULTS" | tee "$RESULTS/table.md"
log "done; raw results in $RESULTS"
