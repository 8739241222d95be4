# Sourced by tests/interop/evidence.sh (EVIDENCE_BEFORE_STOP) when tests/interop/offload-veth.sh
# runs it with relay.offload = "required" on the veth topology, after the calls and before the
# relay stops (the program and its maps go with the relay): checks that the relay attached the
# routed program in native mode to both of its interfaces and that the kernel relayed
# ChannelData both ways. Uses evidence.sh's pass/fail and $SERVER_LOG.
# shellcheck shell=bash

# xdp_mode DEV: the XDP attach mode of DEV ("native", "generic" or "none").
xdp_mode() {
  ip -j -d link show dev "$1" | python3 -c '
import json, sys
link = json.load(sys.stdin)[0]
mode = link.get("xdp", {}).get("mode")
print({1: "native", 2: "generic"}.get(mode, "none"))'
}

modes="rc $(xdp_mode rc), rp $(xdp_mode rp)"
if [ "$modes" = "rc native, rp native" ] &&
  grep -q 'kernel fast path on' "$SERVER_LOG" && grep -q 'rc (native)' "$SERVER_LOG"; then
  pass native-xdp "$modes; the relay's log: $(grep -o 'interfaces=.*' "$SERVER_LOG" | head -n 1 | tr -d '\033' | cut -c1-80)"
else
  fail native-xdp "attached: $modes"
  grep -i 'offload\|fast path' "$SERVER_LOG" | head -n 5 | sed 's/^/    | /'
fi

# The counters of the program attached to rc (the same maps serve rp).
totals=$(xdp_kernel_totals rc)
read -r kp kb cp cb <<<"${totals:-0 0 0 0}"
# The ChannelData call sent 40 messages of 120 bytes and got them echoed. The first of them
# may reach user space while the kernel has no neighbour entry for the peer yet.
if [ "${kp:-0}" -ge 30 ] && [ "${cp:-0}" -ge 30 ] && [ "$kb" -eq $((kp * 120)) ] && [ "$cb" -eq $((cp * 120)) ]; then
  pass relayed-in-kernel "the kernel relayed $kp packets ($kb bytes) to the peer and $cp ($cb bytes) to the client of the ChannelData call's 40 each way"
else
  fail relayed-in-kernel "kernel counters: to peer $kp packets $kb bytes, to client $cp packets $cb bytes (want at least 30 of the 40 each way, 120 bytes each)"
fi
