#!/usr/bin/env bash
# Interop: the kernel fast path on real (virtual) interfaces, in native XDP mode, with coturn's
# turnutils_uclient as the client and turnutils_peer as the peers, compared with the same
# calls relayed in user space. The topology is built here, from network namespaces joined by
# veth pairs, addressed from the test world's 198.18.0.0/15 blocks (geo/README.md):
#
#   client ns            relay ns (this script's own)              peer ns
#   c 198.18.1.2 (DE) -- rc 198.18.1.1   listener :28580
#                        rp 198.18.2.1   relay address ------------ p 198.18.2.2 (FR)
#                            198.18.5.1                               198.18.5.2 (US)
#
# It runs tests/interop/evidence.sh twice on it, each time with a fresh relay and evidence
# directory: with relay.offload = "off" and with "required". Each run checks what evidence.sh
# checks (every message relayed and echoed, the refused peer refused with 403, the evidence
# records' per-peer packets and bytes equal to what the tool sent and received, the chain
# verified, every record schema-valid). The kernel run also checks, before its relay stops
# (tests/interop/offload_veth_checks.sh), that the program is attached in native mode to both
# relay interfaces and that the kernel relayed ChannelData in both directions; the evidence
# check then shows that the kernel's bytes were folded in exactly.
#
#   bash tests/interop/offload-veth.sh
#
# Nothing leaves the namespaces: the script runs in a network and mount namespace of its own,
# creates the two others, and deletes them. Skips, with the reason, when not root, without
# unshare/ip/bpftool/ethtool, or against coturn.
set -uo pipefail

INTEROP_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if [ "${1:-}" != --inside ]; then
  if [ "${INTEROP_SERVER:-eeaturn}" != eeaturn ]; then
    echo "SKIP interop/offload-veth: eeaturn's kernel fast path has no coturn counterpart"
    exit 0
  fi
  if [ "$(id -u)" -ne 0 ]; then
    echo "SKIP interop/offload-veth: needs root (network namespaces and BPF)"
    exit 0
  fi
  if ! command -v ethtool >/dev/null; then
    apt-get install -y --no-install-recommends ethtool >/dev/null 2>&1 || true
  fi
  for tool in unshare ip bpftool ethtool; do
    if ! command -v "$tool" >/dev/null; then
      echo "SKIP interop/offload-veth: $tool not found (apt-get install -y util-linux iproute2 bpftool ethtool)"
      exit 0
    fi
  done
  exec unshare --net --mount --propagation private -- "$0" --inside
fi

# shellcheck source=tests/interop/lib.sh
source "$INTEROP_DIR/lib.sh"
interop_init offload-veth
ensure_coturn || {
  fail setup "could not install coturn's turnutils"
  exit 1
}

C="eeaturn-c-$$"
P="eeaturn-p-$$"
topology_down() {
  ip netns del "$C" 2>/dev/null || true
  ip netns del "$P" 2>/dev/null || true
}
# lib.sh's EXIT trap stops the processes; the namespaces go after it.
trap 'topology_down; _interop_cleanup' EXIT

topology_up() {
  ip link set lo up &&
    ip netns add "$C" && ip netns add "$P" &&
    ip link add rc type veth peer name c netns "$C" &&
    ip link add rp type veth peer name p netns "$P" &&
    ip addr add 198.18.1.1/24 dev rc &&
    ip addr add 198.18.2.1/24 dev rp && ip addr add 198.18.5.1/24 dev rp &&
    ip link set rc up && ip link set rp up &&
    ip -n "$C" link set lo up && ip -n "$C" addr add 198.18.1.2/24 dev c && ip -n "$C" link set c up &&
    ip -n "$P" link set lo up && ip -n "$P" addr add 198.18.2.2/24 dev p &&
    ip -n "$P" addr add 198.18.5.2/24 dev p && ip -n "$P" link set p up &&
    # A veth delivers redirected frames only to a peer with NAPI, which GRO switches on.
    ip netns exec "$C" ethtool -K c gro on >/dev/null &&
    ip netns exec "$P" ethtool -K p gro on >/dev/null &&
    # What the relay needs for the routed program (docs/operations.md): forwarding on lo
    # only. rc and rp do not forward.
    sysctl -qw net.ipv4.conf.lo.forwarding=1
}
if ! topology_up; then
  fail setup "could not build the veth topology"
  exit 1
fi
log "topology: $C (198.18.1.2) -- rc | relay | rp -- $P (198.18.2.2, 198.18.5.2)"

export EVIDENCE_CLIENT_DE=198.18.1.2 EVIDENCE_CLIENT_US="" EVIDENCE_PEER_FR=198.18.2.2
export EVIDENCE_PEER_US=198.18.5.2 EVIDENCE_SERVER=198.18.1.1
export UCLIENT_EXEC="ip netns exec $C" PEER_EXEC="ip netns exec $P"
export SERVER_LISTEN_HOSTS=198.18.1.1 SERVER_RELAY_ADDRESSES='"198.18.2.1"'
export SERVER_PEERS_ALLOW='"198.18.0.0/15"'

# run_variant NAME OFFLOAD [CHECKS]: evidence.sh on the topology; its PASS/FAIL lines go to
# this script's output and results.
run_variant() {
  local name="$1" offload="$2" checks="${3:-}" out rc
  out="$WORK/evidence-$name.log"
  log "=== evidence.sh with relay.offload = \"$offload\" ==="
  EVIDENCE_VARIANT="$name" SERVER_RELAY_EXTRA="offload = \"$offload\"" \
    EVIDENCE_BEFORE_STOP="$checks" INTEROP_RESULTS="" \
    timeout 300 bash "$INTEROP_DIR/evidence.sh" >"$out" 2>&1
  rc=$?
  sed 's/^/    | /' "$out" | grep -E '^    \| (PASS|FAIL) ' || true
  while read -r verdict scenario _; do
    case "$verdict" in
      PASS) pass "$name/${scenario#"evidence-$name/"}" ;;
      FAIL) fail "$name/${scenario#"evidence-$name/"}" ;;
    esac
  done < <(grep -E '^(PASS|FAIL) ' "$out" | sed 's/:.*//')
  if [ "$rc" -ne 0 ] && ! grep -q '^FAIL ' "$out"; then
    fail "$name/script" "evidence.sh exited with status $rc"
    tail -n 30 "$out" | sed 's/^/    | /'
  fi
}

run_variant user-space off
run_variant kernel required "$INTEROP_DIR/offload_veth_checks.sh"

interop_finish
