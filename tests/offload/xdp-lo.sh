#!/usr/bin/env bash
# The kernel fast path's BPF program alone, on loopback in generic (SKB) XDP mode: it loads,
# relays ChannelData client -> peer (header and any padding stripped, sent from the relay address) and peer ->
# client (header added, sent from the listening address), counts both, and passes an unknown
# channel to user space. Runs in a network and mount namespace of its own (its own `lo`, its
# own bpffs), so no other process's loopback traffic meets the program. Paths are written with
# bpftool here; the relay's loader is tested by tests/offload.rs.
# Skips, with the reason, when not root or without bpftool/unshare.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

if [[ ${1:-} != --inside ]]; then
  if [[ $(id -u) -ne 0 ]]; then
    echo "SKIP tests/offload/xdp-lo.sh: needs root (CAP_BPF, CAP_NET_ADMIN)"
    exit 0
  fi
  for tool in bpftool unshare ip python3; do
    if ! command -v "$tool" >/dev/null; then
      echo "SKIP tests/offload/xdp-lo.sh: $tool not found (apt-get install -y bpftool iproute2 util-linux python3)"
      exit 0
    fi
  done
  exec timeout 60 unshare --net --mount --propagation private -- "$0" --inside
fi

ip link set lo up
# libbpf turns dots in pin paths into underscores: a name without dots.
dir=$(mktemp -d /tmp/eeaturn-bpf-XXXXXX)
mount -t bpf bpf "$dir"
mkdir "$dir/maps"
trap 'ip link set dev lo xdpgeneric off 2>/dev/null || true; umount "$dir"; rmdir "$dir"' EXIT
bpftool prog loadall bpf/relay.bpf.o "$dir/progs" type xdp pinmaps "$dir/maps"
ip link set dev lo xdpgeneric pinned "$dir/progs/eeaturn_lo"

# Client 127.0.0.2:40000 talks to the listener 127.0.0.1:3478 on channel 0x4000, bound to the
# peer 127.0.0.5:6000 through the relay address 127.0.0.1:50000; counters in slot 7.
client="127 0 0 2 0x9c 0x40"
server="127 0 0 1 0x0d 0x96"
relay="127 0 0 1 0xc3 0x50"
peer="127 0 0 5 0x17 0x70"
bpftool map update pinned "$dir/maps/to_peer" key $client $server 0x40 0x00 0 0 value $relay $peer 7 0 0 0
bpftool map update pinned "$dir/maps/to_client" key $relay $peer value $client $server 0x40 0x00 0 0 7 0 0 0
# Channel 0x4002 of the same client leads to a peer that is not on lo (10.0.0.9:6000, through
# the same relay address): XDP_TX on lo cannot deliver there, so the program must pass it.
far="10 0 0 9 0x17 0x70"
bpftool map update pinned "$dir/maps/to_peer" key $client $server 0x40 0x02 0 0 value $relay $far 8 0 0 0

python3 - <<'PY'
import socket
c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); c.bind(("127.0.0.2", 40000)); c.settimeout(2)
p = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); p.bind(("127.0.0.5", 6000)); p.settimeout(2)
listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); listener.bind(("127.0.0.1", 3478)); listener.settimeout(0.5)
relay = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); relay.bind(("127.0.0.1", 50000)); relay.settimeout(0.5)

payload = bytes(range(100))
c.sendto(bytes([0x40, 0, 0, len(payload)]) + payload, ("127.0.0.1", 3478))
data, src = p.recvfrom(2048)
assert (data, src) == (payload, ("127.0.0.1", 50000)), (data, src)

p.sendto(b"from the peer", ("127.0.0.1", 50000))
data, src = c.recvfrom(2048)
assert (data, src) == (bytes([0x40, 0, 0, 13]) + b"from the peer", ("127.0.0.1", 3478)), (data, src)

# ChannelData padded to a multiple of four (RFC 8656 §12.5 allows it over UDP): relayed
# without the padding.
for data_len in (1, 2, 3):
    body = b"xyz"[:data_len]
    c.sendto(bytes([0x40, 0, 0, data_len]) + body + bytes(4 - data_len), ("127.0.0.1", 3478))
    data, src = p.recvfrom(2048)
    assert (data, src) == (body, ("127.0.0.1", 50000)), (data, src)

# What the program does not know reaches the user-space sockets untouched: another channel,
# padding beyond the next multiple of four, a length longer than the datagram, a
# STUN-looking datagram, another peer.
for msg in (bytes([0x40, 1, 0, 3]) + b"abc", bytes([0x40, 0, 0, 3]) + b"abc" + bytes(5),
            bytes([0x40, 0, 0, 9]) + b"abc\0", b"\0\x01\0\0" + bytes(16),
            bytes([0x40, 2, 0, 3]) + b"far"):
    c.sendto(msg, ("127.0.0.1", 3478))
    data, src = listener.recvfrom(2048)
    assert (data, src) == (msg, ("127.0.0.2", 40000)), (data, src)
other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); other.bind(("127.0.0.5", 6001))
other.sendto(b"unknown peer", ("127.0.0.1", 50000))
data, src = relay.recvfrom(2048)
assert (data, src) == (b"unknown peer", ("127.0.0.5", 6001)), (data, src)
# A peer's UDP GSO batch (two 1000-byte segments) arrives on lo as one 2000-byte skb; the
# program must not relay it as one datagram: it passes, and the relay socket gets both.
UDP_SEGMENT = 103
p.setsockopt(socket.SOL_UDP, UDP_SEGMENT, 1000)
p.sendto(b"a" * 1000 + b"b" * 1000, ("127.0.0.1", 50000))
p.setsockopt(socket.SOL_UDP, UDP_SEGMENT, 0)
for want in (b"a" * 1000, b"b" * 1000):
    data, src = relay.recvfrom(4096)
    assert (data, src) == (want, ("127.0.0.5", 6000)), (len(data), src)
print("relayed both ways, padding trimmed; unknown traffic and a GSO batch passed to user space")
PY

counters=$(bpftool -j map lookup pinned "$dir/maps/counters" key 7 0 0 0)
expected='"to_peer_packets":4,"to_peer_bytes":106,"to_client_packets":1,"to_client_bytes":13'
if [[ $counters != *"$expected"* ]]; then
  echo "unexpected counters: $counters" >&2
  exit 1
fi
echo "ok: tests/offload/xdp-lo.sh (counters $expected)"
