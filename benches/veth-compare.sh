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
if [ "$(id -u)" -ne 0 ]; then
  echo "benches/veth-compare.sh needs root (network namespaces, threaded NAPI, BPF)" >&2
  exit 1
fi
[ "$(nproc)" -ge 2 ] || { echo "needs 2 CPUs (tool and relay pinned apart)" >&2; exit 1; }
command -v ethtool >/dev/null || apt-get install -y --no-install-recommends ethtool >/dev/null
ensure_coturn || { echo "could not install coturn" >&2; exit 1; }

(cd "$REPO" && cargo build --release --locked --bin eeaturn --bin eeaturn-bench >/dev/null)
EEATURN="$REPO/target/release/eeaturn"
BENCH="$REPO/target/release/eeaturn-bench"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/eeaturn-veth-compare.XXXXXX")"
RESULTS="${RESULTS:-$WORK/results}"
mkdir -p "$RESULTS"
R="eeaturn-vr-$$"
O="eeaturn-vo-$$"
SERVER_PID=""
cleanup() {
  [ -n "$SERVER_PID" ] && stop_server
  ip netns del "$R" 2>/dev/null || true
  ip netns del "$O" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

SERVER_CPU=1 TOOL_CPU=0
LISTEN=198.18.1.1 RELAY=198.18.2.1 CLIENT=198.18.1.2 PEER=198.18.2.2
PORT=3478 PEER_PORT=20500 RELAY_MIN=40000 RELAY_MAX=49999 REALM=bench.test
inr() { ip netns exec "$R" "$@"; }
ino() { ip netns exec "$O" "$@"; }

ip netns add "$R"
ip netns add "$O"
ip link add rc netns "$R" type veth peer name o netns "$O"
inr ip link set lo up
ino ip link set lo up
inr ip addr add "$LISTEN/24" dev rc
inr ip addr add "$RELAY/24" dev rc
ino ip addr add "$CLIENT/24" dev o
ino ip addr add "$PEER/24" dev o
inr ip link set rc up
ino ip link set o up
inr ethtool -K rc gro on >/dev/null
ino ethtool -K o gro on >/dev/null
# eeaturn_routed's route lookups (docs/operations.md); rc itself does not forward.
inr sysctl -qw net.ipv4.conf.lo.forwarding=1
inr sh -c 'echo 1 > /sys/class/net/rc/threaded'
ino sh -c 'echo 1 > /sys/class/net/o/threaded'

# pin_napi: the relay side's NAPI threads on the server's core, the outside's on the tool's.
# Attaching or detaching XDP may restart them, so this runs after every server start.
pin_napi() {
  local pid comm
  while read -r pid comm; do
    case "$comm" in
      napi/rc-*) taskset -pc "$SERVER_CPU" "$pid" >/dev/null ;;
      napi/o-*) taskset -pc "$TOOL_CPU" "$pid" >/dev/null ;;
    esac
  done < <(ps -eo pid=,comm=)
}

SECRET="$(random_secret)"
printf '%s\n' "$SECRET" >"$WORK/secret"
chmod 600 "$WORK/secret"
cat >"$WORK/eeaturn.toml" <<EOF
# Written by benches/veth-compare.sh; addresses exist only in its namespaces.
[server]
realm = "$REALM"
listen = ["udp://$LISTEN:$PORT"]
workers = 1
[auth]
secret_file = "$WORK/secret"
[relay]
offload = "off"
addresses = ["$RELAY"]
port_range = "$RELAY_MIN-$RELAY_MAX"
[limits]
max_allocations = 20000
max_allocations_per_source = 20000
# As in compare.sh: the per-source budget of unauthenticated answers would measure itself.
unauthenticated_rate = 0
unauthenticated_burst = 0
[geo]
country_db = "$REPO/geo/testdata/world-country.mmdb"
asn_db = "$REPO/geo/testdata/world-asn.mmdb"
max_age = "36500d"
[peers]
dangerous_allow = ["198.18.0.0/15"]
[log]
level = "warn"
EOF
sed 's|^offload = "off"|offload = "required"|' "$WORK/eeaturn.toml" >"$WORK/eeaturn-kernel.toml"

start_server() {
  local name="$1" logf="$WORK/$1.log"
  # ip netns exec and taskset exec the server: $! is the server's own pid.
  case "$name" in
    coturn)
      ip netns exec "$R" taskset -c "$SERVER_CPU" turnserver -n --listening-ip="$LISTEN" --listening-port="$PORT" \
        --relay-ip="$RELAY" --min-port="$RELAY_MIN" --max-port="$RELAY_MAX" --allowed-peer-ip="$PEER" \
        --use-auth-secret --static-auth-secret="$SECRET" --realm="$REALM" \
        --no-tls --no-dtls --no-cli --no-rfc5780 --relay-threads=1 \
        --log-file="$logf" --no-stdout-log --simple-log \
        --userdb="$WORK/turndb" --pidfile="$WORK/turnserver.pid" >/dev/null 2>&1 &
      ;;
    eeaturn)
      ip netns exec "$R" taskset -c "$SERVER_CPU" env NO_COLOR=1 "$EEATURN" serve --config "$WORK/eeaturn.toml" >"$logf" 2>&1 &
      ;;
    eeaturn-kernel)
      ip netns exec "$R" taskset -c "$SERVER_CPU" env NO_COLOR=1 "$EEATURN" serve --config "$WORK/eeaturn-kernel.toml" >"$logf" 2>&1 &
      ;;
    *) echo "unknown server $name" >&2; return 1 ;;
  esac
  SERVER_PID=$!
  local i
  for i in $(seq 1 100); do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      echo "$name exited at start:" >&2
      tail -n 20 "$logf" >&2
      return 1
    fi
    if ino "$BENCH" setup --server "$LISTEN:$PORT" --secret-file "$WORK/secret" \
      --client-addr "$CLIENT" --allocations 1 >/dev/null 2>&1; then
      pin_napi
      return 0
    fi
    sleep 0.1
  done
  echo "$name not ready after 10 s; the load tool's last attempt:" >&2
  ino "$BENCH" setup --server "$LISTEN:$PORT" --secret-file "$WORK/secret" \
    --client-addr "$CLIENT" --allocations 1 2>&1 | grep -v "^ *[0-9]*: \|^ *at " | tail -n 8 >&2
  tail -n 5 "$logf" >&2
  return 1
}

stop_server() {
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}

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
