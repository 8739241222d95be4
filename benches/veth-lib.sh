# Shared by benches/veth-compare.sh and benches/veth-capacity.sh: the two namespaces joined
# by a veth pair, the server configurations, and starting and stopping coturn, eeaturn and
# eeaturn with the kernel fast path on the relay's core. Sourced after tests/interop/lib.sh;
# the caller sets VETH_NAME (its name, for the work directory and the config comments).
# Checks root and two CPUs, installs ethtool and coturn when missing, and sets WORK, EEATURN,
# BENCH, R and O, and
# installs the EXIT trap that deletes the namespaces (after the caller's veth_cleanup_first,
# when it defines one).
#
#   outside ns (load, CPU 0)                          relay ns (server, CPU 1)
#   o 198.18.1.2 (clients), 198.18.2.2 (peer) ==== rc 198.18.1.1 (listener :3478),
#                                                      198.18.2.1 (relay addresses)
#
# Both veth ends use threaded NAPI (GRO on, /sys/class/net/IFACE/threaded = 1); the relay
# side's NAPI thread is pinned to the server's core and the outside's to the load's, so that
# everything the relay host does for a packet (receive, XDP or socket and relay process,
# transmit) lands on CPU 1, for every server alike.

if [ "$(id -u)" -ne 0 ]; then
  echo "benches/$VETH_NAME.sh needs root (network namespaces, threaded NAPI, BPF)" >&2
  exit 1
fi
[ "$(nproc)" -ge 2 ] || { echo "benches/$VETH_NAME.sh needs 2 CPUs (load and relay pinned apart)" >&2; exit 1; }
command -v ethtool >/dev/null || apt-get install -y --no-install-recommends ethtool >/dev/null
ensure_coturn || { echo "could not install coturn" >&2; exit 1; }

(cd "$REPO" && cargo build --release --locked --bin eeaturn --bin eeaturn-bench >/dev/null)
EEATURN="$REPO/target/release/eeaturn"
BENCH="$REPO/target/release/eeaturn-bench"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/eeaturn-$VETH_NAME.XXXXXX")"
RESULTS="${RESULTS:-$WORK/results}"
mkdir -p "$RESULTS"
R="eeaturn-vr-$$"
O="eeaturn-vo-$$"
SERVER_PID=""
# A caller with more to clean up defines veth_cleanup_first.
cleanup() {
  if declare -F veth_cleanup_first >/dev/null; then veth_cleanup_first; fi
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
      napi/o-*)
        taskset -pc "$TOOL_CPU" "$pid" >/dev/null
        # With VETH_OUTSIDE_NAPI_FIFO, the outside's receive preempts whatever else runs on
        # the load's core (veth-capacity.sh: a generator that would otherwise starve it).
        if [ -n "${VETH_OUTSIDE_NAPI_FIFO:-}" ]; then chrt -f -p 50 "$pid" >/dev/null; fi
        ;;
    esac
  done < <(ps -eo pid=,comm=)
}

SECRET="$(random_secret)"
printf '%s\n' "$SECRET" >"$WORK/secret"
chmod 600 "$WORK/secret"
cat >"$WORK/eeaturn.toml" <<EOF
# Written by benches/$VETH_NAME.sh; addresses exist only in its namespaces.
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

