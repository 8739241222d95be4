#!/usr/bin/env bash
# Interop: coturn's turnutils_uclient through eeaturn with the kernel fast path on
# (relay.offload = "required"), compared with what the same scenarios need without it
# (tests/interop/turnutils.sh): every message relayed and echoed, and here also counted by
# the XDP program, read from its maps with bpftool before the relay stops.
#
#   bash tests/interop/offload.sh
#
# Runs in a network namespace of its own (its own lo, where the program attaches in generic
# mode), so the program meets no other process's traffic and nothing leaves the namespace.
# Skips, with the reason, when not root, without unshare/ip/bpftool, or against coturn.
set -uo pipefail

if [ "${1:-}" != --inside ]; then
  if [ "${INTEROP_SERVER:-eeaturn}" != eeaturn ]; then
    echo "SKIP interop/offload: eeaturn's kernel fast path has no coturn counterpart"
    exit 0
  fi
  if [ "$(id -u)" -ne 0 ]; then
    echo "SKIP interop/offload: needs root (a network namespace and BPF)"
    exit 0
  fi
  for tool in unshare ip bpftool; do
    if ! command -v "$tool" >/dev/null; then
      echo "SKIP interop/offload: $tool not found (apt-get install -y util-linux iproute2 bpftool)"
      exit 0
    fi
  done
  exec unshare --net -- "$0" --inside
fi

ip link set lo up
# shellcheck source=tests/interop/lib.sh
source "$(dirname "$0")/lib.sh"

PORT=28790
RELAY_RANGE=29500-29599
PEER_PORT=29590
PEER4=127.0.2.1
CLIENT4=127.0.1.1

interop_init offload
ensure_coturn || {
  fail setup "could not install coturn's turnutils"
  exit 1
}
export SERVER_RELAY_EXTRA='offload = "required"'
if ! start_server "$WORK" "$PORT" "$RELAY_RANGE"; then
  fail setup "the server did not start with relay.offload = \"required\""
  show_server_log_since 0
  exit 1
fi
start_peers "$PEER_PORT" "$PEER4"

# kernel_totals: the program's four counters (lib.sh's xdp_kernel_totals on this namespace's lo).
kernel_totals() { xdp_kernel_totals lo; }

# run_uclient NAME UCLIENT_ARGS...: sets SENT and RECV from the tool's summary.
run_uclient() {
  local name="$1" out
  shift
  out="$WORK/uclient-$name.log"
  log "scenario $name: turnutils_uclient $(redact "$@")"
  timeout 60 turnutils_uclient "$@" >"$out" 2>&1
  local line
  line="$(grep -E 'start_mclient: tot_send_msgs=[0-9]+, tot_recv_msgs=[0-9]+' "$out" | tail -n 1)"
  SENT="$(sed -nE 's/.*tot_send_msgs=([0-9]+).*/\1/p' <<<"$line")"
  RECV="$(sed -nE 's/.*tot_recv_msgs=([0-9]+).*/\1/p' <<<"$line")"
}

# (a) ChannelData, 4 clients x 100 messages of 100 bytes, echoed: all of it in the kernel.
run_uclient channeldata -W "$SECRET" -u alice -p "$PORT" -L "$CLIENT4" -e "$PEER4" -r "$PEER_PORT" \
  -c -m 4 -n 100 -l 100 -z 5 127.0.0.1
read -r kp kb cp cb <<<"$(kernel_totals)"
if [ "${SENT:-}" = 400 ] && [ "${RECV:-}" = 400 ] && [ "$kp" = 400 ] && [ "$cp" = 400 ] &&
  [ "$kb" = 40000 ] && [ "$cb" = 40000 ]; then
  pass channeldata-in-kernel "sent $SENT, echoed $RECV; the kernel relayed $kp/$cp packets, $kb/$cb bytes"
else
  fail channeldata-in-kernel "sent ${SENT:-?}, echoed ${RECV:-?}; the kernel relayed to peer $kp packets $kb bytes, to client $cp packets $cb bytes (want 400, 40000 each)"
  tail -n 20 "$WORK/uclient-channeldata.log"
fi

# (b) Send/Data indications are not offloaded: they still work with the program attached,
#     and the kernel's counters do not move.
run_uclient send-indication -W "$SECRET" -u bob -p "$PORT" -L "$CLIENT4" -e "$PEER4" -r "$PEER_PORT" \
  -c -s -n 50 127.0.0.1
read -r kp2 kb2 cp2 cb2 <<<"$(kernel_totals)"
if [ "${SENT:-}" = 50 ] && [ "${RECV:-}" = 50 ] && [ "$kp2 $kb2 $cp2 $cb2" = "$kp $kb $cp $cb" ]; then
  pass send-indication-in-user-space "sent $SENT, echoed $RECV; kernel counters unchanged"
else
  fail send-indication-in-user-space "sent ${SENT:-?}, echoed ${RECV:-?}; kernel counters $kp $kb $cp $cb -> $kp2 $kb2 $cp2 $cb2"
fi

interop_finish
