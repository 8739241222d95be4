#!/usr/bin/env bash
# The kernel fast path's routed program (eeaturn_routed) alone, in native XDP mode on a topology
# of network namespaces joined by veth pairs: a client namespace, a peer namespace and the relay
# between them, addressed from the test world's 198.18.0.0/15 blocks (geo/README.md):
#
#   client ns              relay ns (this script's own)                peer ns
#   c 198.18.1.2/24 ---- rc 198.18.1.1/24 (listener :3478)
#                           rp 198.18.2.1/24 (relay address :50000) ---- p 198.18.2.2/24
#
# It checks that the program relays ChannelData client -> peer (header stripped, sent from the
# relay address out of the other interface) and peer -> client (header added), that a packet
# whose next hop the kernel cannot resolve yet goes to user space untouched, that unknown
# traffic passes, and the counters. Paths are written with bpftool; the relay's loader is
# tested by tests/interop/offload-veth.sh. Nothing leaves these namespaces: the script runs in
# a network and mount namespace of its own and creates the two others, and deletes them.
# Skips, with the reason, when not root or without bpftool/ip/ethtool/unshare.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

if [[ ${1:-} != --inside ]]; then
  if [[ $(id -u) -ne 0 ]]; then
    echo "SKIP tests/offload/xdp-veth.sh: needs root (CAP_BPF, CAP_NET_ADMIN, namespaces)"
    exit 0
  fi
  for tool in bpftool unshare ip ethtool python3; do
    if ! command -v "$tool" >/dev/null; then
      echo "SKIP tests/offload/xdp-veth.sh: $tool not found (apt-get install -y bpftool iproute2 ethtool util-linux python3)"
      exit 0
    fi
  done
  exec timeout 60 unshare --net --mount --propagation private -- "$0" --inside
fi

suffix=$$
C=eeaturn-c-$suffix
P=eeaturn-p-$suffix
dir=$(mktemp -d /tmp/eeaturn-bpf-XXXXXX)
cleanup() {
  ip netns del "$C" 2>/dev/null || true
  ip netns del "$P" 2>/dev/null || true
  umount "$dir" 2>/dev/null || true
  rmdir "$dir" 2>/dev/null || true
}
trap cleanup EXIT

ip link set lo up
ip netns add "$C"
ip netns add "$P"
ip link add rc type veth peer name c netns "$C"
ip link add rp type veth peer name p netns "$P"
ip addr add 198.18.1.1/24 dev rc
ip addr add 198.18.2.1/24 dev rp
ip link set rc up
ip link set rp up
ip -n "$C" link set lo up
ip -n "$C" addr add 198.18.1.2/24 dev c
# A second peer on the client's own link: its packets leave rc, the interface they came in on.
ip -n "$C" addr add 198.18.1.3/24 dev c
ip -n "$C" link set c up
ip -n "$P" link set lo up
ip -n "$P" addr add 198.18.2.2/24 dev p
ip -n "$P" link set p up
# A veth delivers redirected frames only to a peer with NAPI, which GRO (or XDP) switches on.
ip netns exec "$C" ethtool -K c gro on >/dev/null
ip netns exec "$P" ethtool -K p gro on >/dev/null
# The program's route lookup is made as for this host's own packets (input interface lo),
# which bpf_fib_lookup answers only with forwarding on for lo. No other interface forwards.
sysctl -qw net.ipv4.conf.lo.forwarding=1
[[ $(sysctl -n net.ipv4.conf.rc.forwarding) == 0 && $(sysctl -n net.ipv4.conf.rp.forwarding) == 0 ]]

mount -t bpf bpf "$dir"
mkdir "$dir/maps"
bpftool prog loadall bpf/relay.bpf.o "$dir/progs" type xdp pinmaps "$dir/maps"
ip link set dev rc xdpdrv pinned "$dir/progs/eeaturn_routed"
ip link set dev rp xdpdrv pinned "$dir/progs/eeaturn_routed"
ip -d link show dev rc | grep -q 'prog/xdp ' || {
  echo "the program is not attached in native mode to rc" >&2
  exit 1
}
# The interfaces the program may redirect to: key ifindex, value ifindex and no program.
for dev in rc rp; do
  i=$(ip -o link show dev "$dev" | cut -d: -f1)
  bpftool map update pinned "$dir/maps/egress" key $i 0 0 0 value $i 0 0 0 0 0 0 0
done

# Client 198.18.1.2:40000 talks to the listener 198.18.1.1:3478 on channel 0x4000, bound to the
# peer 198.18.2.2:6000 through the relay address 198.18.2.1:50000; counters in slot 7.
client="198 18 1 2 0x9c 0x40"
server="198 18 1 1 0x0d 0x96"
relay="198 18 2 1 0xc3 0x50"
peer="198 18 2 2 0x17 0x70"
bpftool map update pinned "$dir/maps/to_peer" key $client $server 0x40 0x00 0 0 value $relay $peer 7 0 0 0
bpftool map update pinned "$dir/maps/to_client" key $relay $peer value $client $server 0x40 0x00 0 0 7 0 0 0
# Channel 0x4003 of the same client leads to 198.18.1.3:6000, behind rc itself, through the
# relay address 198.18.2.1:50001; counters in slot 9. Its neighbour entry is written here, so
# the first packet already goes in the kernel: a redirect back out of rc. (XDP_TX there would
# be lost: a veth wakes its peer for XDP_TX frames only when the peer runs XDP itself.)
mac=$(ip -n "$C" -o link show c | grep -o 'link/ether [0-9a-f:]*' | cut -d' ' -f2)
ip neigh replace 198.18.1.3 lladdr "$mac" dev rc nud permanent
bpftool map update pinned "$dir/maps/to_peer" key $client $server 0x40 0x03 0 0 value 198 18 2 1 0xc3 0x51 198 18 1 3 0x17 0x70 9 0 0 0

# The relay's sockets: what the program passes arrives here.
python3 - "$C" "$P" <<'PY' &
import socket, sys
listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); listener.bind(("198.18.1.1", 3478))
relay = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); relay.bind(("198.18.2.1", 50000))
listener.settimeout(20); relay.settimeout(20)
# 1. The first ChannelData: no neighbour entry for the peer yet, so user space gets it.
data, src = listener.recvfrom(2048)
assert (data, src) == (bytes([0x40, 0, 0, 5]) + b"first", ("198.18.1.2", 40000)), (data, src)
# User space relays it, as the relay would: this resolves the peer's neighbour entry.
relay.sendto(data[4:], ("198.18.2.2", 6000))
# 4. An unknown channel and ChannelData padded beyond the next multiple of four reach the
# listener untouched.
for want in (bytes([0x40, 1, 0, 3]) + b"abc", bytes([0x40, 0, 0, 3]) + b"abc" + bytes(5)):
    data, src = listener.recvfrom(2048)
    assert (data, src) == (want, ("198.18.1.2", 40000)), (data, src)
# 5. A peer without a path reaches the relay socket untouched.
data, src = relay.recvfrom(2048)
assert (data, src) == (b"unknown peer", ("198.18.2.2", 6001)), (data, src)
print("user space got the first message (no neighbour yet) and everything not on a path")
PY
sockets=$!
sleep 0.5

run() { ip netns exec "$1" python3 -c "$2"; }
# The client's first message passes to user space, which relays it (and so learns the
# peer's MAC); the peer answers and the reply, in the kernel, reaches the client.
run "$P" '
import socket
p = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); p.bind(("198.18.2.2", 6000)); p.settimeout(5)
open("/tmp/eeaturn-veth-peer-ready-'"$suffix"'", "w").close()
data, src = p.recvfrom(2048)
assert (data, src) == (b"first", ("198.18.2.1", 50000)), (data, src)
p.sendto(b"from the peer", src)
# 3. The client now sends in the kernel: 100 bytes arrive from the relay address.
data, src = p.recvfrom(2048)
assert (data, src) == (bytes(range(100)), ("198.18.2.1", 50000)), (data, src)
# 4. Padded to a multiple of four: relayed in the kernel without the padding.
data, src = p.recvfrom(2048)
assert (data, src) == (b"abc", ("198.18.2.1", 50000)), (data, src)
print("peer got the first message via user space and the next two via the kernel")
# 5. A datagram from a port without a path goes to the relay socket.
o = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); o.bind(("198.18.2.2", 6001))
o.sendto(b"unknown peer", ("198.18.2.1", 50000))
' &
peer_side=$!
for _ in $(seq 50); do [[ -e /tmp/eeaturn-veth-peer-ready-$suffix ]] && break; sleep 0.1; done
rm -f "/tmp/eeaturn-veth-peer-ready-$suffix"
run "$C" '
import socket
c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); c.bind(("198.18.1.2", 40000)); c.settimeout(5)
c.sendto(bytes([0x40, 0, 0, 5]) + b"first", ("198.18.1.1", 3478))
# 2. The peer answer comes back with the ChannelData header, from the listening address.
data, src = c.recvfrom(2048)
assert (data, src) == (bytes([0x40, 0, 0, 13]) + b"from the peer", ("198.18.1.1", 3478)), (data, src)
payload = bytes(range(100))
c.sendto(bytes([0x40, 0, 0, len(payload)]) + payload, ("198.18.1.1", 3478))
# 4. Padded ChannelData (for the kernel); another channel and too much padding (not).
c.sendto(bytes([0x40, 0, 0, 3]) + b"abc\0", ("198.18.1.1", 3478))
c.sendto(bytes([0x40, 1, 0, 3]) + b"abc", ("198.18.1.1", 3478))
c.sendto(bytes([0x40, 0, 0, 3]) + b"abc" + bytes(5), ("198.18.1.1", 3478))
print("client got the peer answer via the kernel")
# 6. To the peer behind rc: 64 datagrams out of the interface they came in on.
near = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); near.bind(("198.18.1.3", 6000)); near.settimeout(5)
for i in range(64):
    c.sendto(bytes([0x40, 3, 0, 4]) + i.to_bytes(4, "big"), ("198.18.1.1", 3478))
    data, src = near.recvfrom(2048)
    assert (data, src) == (i.to_bytes(4, "big"), ("198.18.2.1", 50001)), (data, src)
print("the peer behind the ingress interface got 64 of 64 via the kernel")
'
wait "$peer_side"
wait "$sockets"

counters=$(bpftool -j map lookup pinned "$dir/maps/counters" key 7 0 0 0)
expected='"to_peer_packets":2,"to_peer_bytes":103,"to_client_packets":1,"to_client_bytes":13'
if [[ $counters != *"$expected"* ]]; then
  echo "unexpected counters: $counters" >&2
  exit 1
fi
near=$(bpftool -j map lookup pinned "$dir/maps/counters" key 9 0 0 0)
if [[ $near != *'"to_peer_packets":64,"to_peer_bytes":256,'* ]]; then
  echo "unexpected counters for the peer behind rc: $near" >&2
  exit 1
fi
echo "ok: tests/offload/xdp-veth.sh (native XDP on veth, redirected both ways and back out of the ingress interface; counters $expected)"
