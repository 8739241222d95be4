#!/usr/bin/env bash
# Side-by-side data-path comparison on loopback: eeaturn, coturn, and four bare UDP forwarders
# (benches/forwarders: naive, one recvfrom/sendto per datagram from one socket; naive-sockets,
# the same but sending from one socket per client, the shape of a TURN relay; batched,
# recvmmsg/sendmmsg from one socket; sockets, batched like eeaturn and sending from one socket
# per client), all driven by the same load tool (src/bin/eeaturn-bench) with the same settings.
# eeaturn-evidence is the same eeaturn binary and configuration with signed evidence on
# ([evidence] enabled, fsync = "interval", a fresh directory under the work dir, the committed
# development key config/dev-evidence.key): the cost of evidence is eeaturn-evidence ÷ eeaturn.
# eeaturn-kernel is the same binary and configuration with relay.offload = "required": the
# kernel fast path's XDP program on lo (generic mode), run as root (the default list has it
# only then). Its relaying happens in the sender's softirq, on the load tool's core, so compare
# it by "both cores µs/pkt" (server and tool core together: the whole two-core machine), which
# the tables give for every server. Saturating loads use UDP GSO (--gso): a peer's GSO batch
# reaches the XDP program on lo as one datagram (generic XDP cannot see the segment size), so
# run eeaturn-kernel's saturating cells with --gso 1 (docs/design/kernel-fast-path.md).
# --baseline REV builds eeaturn at REV (any git revision) in a temporary git worktree with its
# own target directory, both removed once the binary is copied, and runs it as a further
# server, eeaturn-base, with the same configuration and pinning: eeaturn ÷ eeaturn-base is the
# change since REV. The tables then have a section comparing the three.
#
#   bash benches/compare.sh [--quick] [--runs N] [--duration S] [--rate PPS] [--gso N]
#                           [--results DIR] [--servers "LIST"] [--no-load] [--no-setup] [--no-memory]
#                           [--max-wait S] [--payloads "100 1200"] [--allocations "1 10 100"]
#                           [--modes "channel send"] [--loads "fixed saturate"]
#                           [--directions "to-peer to-client"] [--baseline REV]
#   bash benches/compare.sh --table-only RESULTS-DIR     # the tables of an earlier run
#
# The server under test runs pinned to CPU 1 and the load tool (clients and peer sockets in
# one process) to CPU 0 (`taskset`), the same for every server. Each cell of the matrix runs
# --runs times (default 3) and the tables show medians. Raw JSON lines (one per run) go to
# the results directory (default: a new directory under ${TMPDIR:-/tmp}).
#
# Matrix (issue 6): payload 100 and 1200 bytes; 1, 10 and 100 allocations; ChannelData and
# Send indications (the forwarders get bare datagrams); both directions for the TURN servers:
# client -> relay -> peer (ChannelData or Send in, bare datagrams out) and peer -> relay ->
# client (bare datagrams in, ChannelData or Data indications out; the forwarders forward one
# way, which is the same kernel work either way); a fixed offered rate that every
# server carries without loss (--rate, default 50,000 msg/s in total: a third of the slowest
# server's saturation here) and saturation. Saturating loads send with UDP GSO, --gso (8)
# packets per system call, so that one tool core can offer more than any server here takes
# (about 650k msg/s against 230k without); every server still receives single datagrams
# (none of them enables UDP_GRO). Fixed-rate loads send one packet per system call.
# Then the allocation setup rate (with authentication, 10,000 allocations) and the memory per
# idle allocation (1,000 and 10,000 allocations, one permission and one channel each).
# --no-load skips the load matrix (setup rate and memory only), --no-setup and --no-memory
# the other parts.
# --quick: one run of 100 bytes, 10 allocations, ChannelData towards the peer, fixed and
# saturating, every server; setup rate once; memory with 1,000 allocations. About 3 minutes
# after the build.
#
# Needs: Linux with 2+ CPUs, gcc, cargo, python3, root or sudo to install coturn when it is
# missing. Every address is a loopback address; every listener sits in 20000-20999, the
# peer on 20500, relay ports in 40000-59999.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=../tests/interop/lib.sh
source "$REPO/tests/interop/lib.sh"

QUICK=0
RUNS=3
DURATION=5
WARMUP=1
RATE=50000
GSO=8
RESULTS=""
SERVERS="forwarder-naive forwarder-naive-sockets forwarder-batched forwarder-sockets coturn eeaturn eeaturn-evidence"
[ "$(id -u)" = 0 ] && SERVERS="$SERVERS eeaturn-kernel"
BASELINE=""
DO_LOAD=1
DO_SETUP=1
DO_MEMORY=1
MAX_WAIT=30
TABLE_ONLY=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --runs) RUNS="$2"; shift ;;
    --duration) DURATION="$2"; shift ;;
    --rate) RATE="$2"; shift ;;
    --gso) GSO="$2"; shift ;;
    --results) RESULTS="$2"; shift ;;
    --servers) SERVERS="$2"; shift ;;
    --no-load) DO_LOAD=0 ;;
    --no-setup) DO_SETUP=0 ;;
    --no-memory) DO_MEMORY=0 ;;
    --max-wait) MAX_WAIT="$2"; shift ;;
    --table-only) TABLE_ONLY="$2"; shift ;;
    --baseline) BASELINE="$2"; shift ;;
    --payloads) read -r -a SEL_PAYLOADS <<<"$2"; shift ;;
    --allocations) read -r -a SEL_ALLOCS <<<"$2"; shift ;;
    --modes) read -r -a SEL_MODES <<<"$2"; shift ;;
    --loads) read -r -a SEL_LOADS <<<"$2"; shift ;;
    --directions) read -r -a SEL_DIRECTIONS <<<"$2"; shift ;;
    -h | --help) awk 'NR > 1 && /^set -euo/ { exit } NR > 1' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

if [ "$QUICK" = 1 ]; then
  RUNS=1
  PAYLOADS=(100)
  ALLOCS=(10)
  MODES=(channel)
  DIRECTIONS=(to-peer)
  SETUP_ALLOCS=2000
  MEMORY_ALLOCS=(1000)
else
  PAYLOADS=(100 1200)
  ALLOCS=(1 10 100)
  MODES=(channel send)
  DIRECTIONS=(to-peer to-client)
  SETUP_ALLOCS=10000
  MEMORY_ALLOCS=(1000 10000)
fi
LOADS=(fixed saturate)
# Explicit selections override the matrix (quoted lists, e.g. --payloads "1200").
[ -n "${SEL_PAYLOADS[*]:-}" ] && PAYLOADS=("${SEL_PAYLOADS[@]}")
[ -n "${SEL_ALLOCS[*]:-}" ] && ALLOCS=("${SEL_ALLOCS[@]}")
[ -n "${SEL_MODES[*]:-}" ] && MODES=("${SEL_MODES[@]}")
[ -n "${SEL_LOADS[*]:-}" ] && LOADS=("${SEL_LOADS[@]}")
[ -n "${SEL_DIRECTIONS[*]:-}" ] && DIRECTIONS=("${SEL_DIRECTIONS[@]}")
for d in "${DIRECTIONS[@]}"; do
  case "$d" in to-peer | to-client) ;; *) echo "--directions takes to-peer and/or to-client" >&2; exit 2 ;; esac
done
case "$RUNS$DURATION$RATE$MAX_WAIT$GSO" in
  *[!0-9.]*) echo "--runs, --duration and --rate take numbers" >&2; exit 2 ;;
esac
if [ "$RUNS" -lt 1 ] || [ "$RUNS" -gt 20 ]; then
  echo "--runs must be 1..20" >&2
  exit 2
fi
if [ -n "$BASELINE" ] && [[ " $SERVERS " != *" eeaturn-base "* ]]; then
  SERVERS="$SERVERS eeaturn-base"
fi
if [ -z "$BASELINE" ] && [[ " $SERVERS " == *" eeaturn-base "* ]]; then
  echo "eeaturn-base needs --baseline REV" >&2
  exit 2
fi

# Fixed addresses and ports (loopback only; below the ephemeral range 32768-60999, except
# the relay range, which needs 20,000 ports for 10,000 allocations and is bound only on
# 127.0.0.1 while clients bind 127.0.1.1).
HOST=127.0.0.1
CLIENT=127.0.1.1   # German in eeaturn's test world
PEER=127.0.2.1     # French
PEER_PORT=20500
RELAY_MIN=40000
RELAY_MAX=59999
REALM=bench.test
SERVER_CPU=1
TOOL_CPU=0
declare -A PORT=([coturn]=20000 [eeaturn]=20001 [eeaturn-base]=20002 [eeaturn-evidence]=20003
  [eeaturn-kernel]=20004
  [forwarder-naive]=20010 [forwarder-batched]=20011 [forwarder-sockets]=20012
  [forwarder-naive-sockets]=20013)

BENCH_PIDS=()
BASE_SRC=""
cleanup() {
  local pid
  # An interrupted --baseline build leaves no worktree behind.
  if [ -n "$BASE_SRC" ] && [ -d "$BASE_SRC" ]; then remove_baseline_tree; fi
  for pid in "${BENCH_PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${BENCH_PIDS[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# print_tables DIR: the tables (markdown) from the JSON lines in DIR. Also run alone with
# --table-only DIR to re-render an earlier run.
print_tables() {
  python3 - "$1" <<'PY'
import json, os, statistics, sys

results = sys.argv[1]
SERVERS = ["forwarder-naive", "forwarder-naive-sockets", "forwarder-batched", "forwarder-sockets",
           "coturn", "eeaturn"]
# eeaturn at --baseline REV and eeaturn with evidence on: columns only when a run has them.
EXTRA = ["eeaturn-base", "eeaturn-evidence", "eeaturn-kernel"]
SHORT = {"forwarder-naive": "naive", "forwarder-naive-sockets": "naive-sockets",
         "forwarder-batched": "batched", "forwarder-sockets": "sockets",
         "coturn": "coturn", "eeaturn": "eeaturn", "eeaturn-base": "eeaturn-base",
         "eeaturn-evidence": "eeaturn-evidence", "eeaturn-kernel": "eeaturn-kernel"}

def lines(name):
    path = os.path.join(results, name)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip().startswith("{")]

def med(rows, key):
    vals = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(vals) if vals else None

def fmt(v, spec):
    return "–" if v is None else format(v, spec)

def ratio(a, b):
    return None if a is None or b in (None, 0) else a / b

load = lines("load.jsonl")
setup = lines("setup.jsonl")
memory = lines("memory.jsonl")
present = {r["label"] for r in load + setup + memory}
SERVERS += [s for s in EXTRA if s in present]
noisy_path = os.path.join(results, "noisy.txt")
noisy = int(open(noisy_path).read().strip() or 0) if os.path.exists(noisy_path) else 0
fixed_rates = sorted({r["rate"] for r in load if r["rate"]})
cells = {}
for r in load:
    key = (r["label"], r["mode"], r.get("direction", "to-peer"), r["payload"], r["allocations"],
           "fixed" if r["rate"] else "saturate")
    cells.setdefault(key, []).append(r)

def cell(server, mode, direction, payload, n, kind):
    # The forwarders forward one way: the same kernel work as either direction of a relay.
    if server.startswith("forwarder"):
        mode, direction = "raw", "to-peer"
    rows = cells.get((server, mode, direction, payload, n, kind), [])
    if not rows:
        return None
    return {
        "runs": len(rows),
        "dpps": med(rows, "delivered_pps"),
        "loss": med(rows, "loss_pct"),
        "p50": med(rows, "lat_p50_us"),
        "p99": med(rows, "lat_p99_us"),
        "cpu": med(rows, "server_us_per_pkt"),
        "core": med(rows, "server_core_us_per_pkt"),
        "cores": med(rows, "cores_us_per_pkt"),
        "tool": med(rows, "tool_core_pct"),
        # Saturating without loss while the tool's core is full: the tool was the limit.
        "tool_bound": kind == "saturate" and (med(rows, "loss_pct") or 0) < 0.5
        and (med(rows, "tool_core_pct") or 0) > 95,
    }

turn_cells = sorted({(m, d, p, n, k) for (s, m, d, p, n, k) in cells if m != "raw"},
                    key=lambda c: (c[4] != "fixed", c[1] != "to-peer", c[0] != "channel", c[2], c[3]))
groups = sorted({(k, d, p, n) for (_, m, d, p, n, k) in cells},
                key=lambda g: (g[0] != "fixed", g[1] != "to-peer", g[2], g[3]))
rate_text = ", ".join(f"{r:,}" for r in fixed_rates) or "–"

if load:
    print(f"### Data path: medians per cell (fixed rate = {rate_text} msg/s in total)\n")
    print("| load | direction | bytes | allocs | server | mode | runs | delivered msg/s | loss % | p50 µs | p99 µs | server CPU µs/pkt | core µs/pkt | both cores µs/pkt | tool core % |")
    print("| --- | --- | ---: | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    bound = 0
    for (k, d, p, n) in groups:
        for s in SERVERS:
            if s.startswith("forwarder") and d != "to-peer":
                continue
            for m in (["raw"] if s.startswith("forwarder") else ["channel", "send"]):
                c = cell(s, m, d, p, n, k)
                if c is None:
                    continue
                mark = "†" if c["tool_bound"] else ""
                bound += bool(mark)
                print(f"| {k} | {d} | {p} | {n} | {s} | {m} | {c['runs']} | {fmt(c['dpps'], ',.0f')}{mark} | "
                      f"{fmt(c['loss'], '.2f')} | {fmt(c['p50'], '.0f')} | {fmt(c['p99'], '.0f')} | "
                      f"{fmt(c['cpu'], '.2f')} | {fmt(c['core'], '.2f')} | {fmt(c['cores'], '.2f')} | {fmt(c['tool'], '.0f')} |")
    if bound:
        print("\n† no loss while the load tool's core was full: the tool, not the server, was the limit.")

    def compact(kind, key, spec, title):
        rows = [c for c in turn_cells if c[4] == kind]
        if not rows:
            return
        print(f"\n### {title}\n")
        print("| direction | mode | bytes | allocs | " + " | ".join(SHORT[s] for s in SERVERS) + " |")
        print("| --- | --- | ---: | ---: | " + " | ".join("---:" for _ in SERVERS) + " |")
        for (m, d, p, n, k) in rows:
            vals = [fmt((cell(s, m, d, p, n, k) or {}).get(key), spec) for s in SERVERS]
            print(f"| {d} | {m} | {p} | {n} | " + " | ".join(vals) + " |")

    compact("fixed", "cpu", ".2f", f"Server CPU µs per relayed packet at {rate_text} msg/s (forwarders: bare datagrams)")
    compact("fixed", "cores", ".2f", f"Both cores (the whole two-core machine, kernel included) µs per relayed packet at {rate_text} msg/s")
    compact("saturate", "dpps", ",.0f", "Delivered msg/s, saturating (forwarders: bare datagrams)")

    print("\n### Ratios eeaturn / other (CPU per packet and p99: lower is better; msg/s: higher is better)\n")
    print("| load | direction | mode | bytes | allocs | CPU/pkt ÷ coturn | ÷ naive | ÷ naive-sockets | ÷ batched | ÷ sockets | msg/s ÷ coturn | ÷ naive | ÷ naive-sockets | ÷ batched | ÷ sockets | p99 ÷ coturn |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for (m, d, p, n, k) in turn_cells:
        e = cell("eeaturn", m, d, p, n, k)
        if e is None:
            continue
        o = {s: cell(s, m, d, p, n, k) or {} for s in SERVERS}
        def r(s, key):
            return fmt(ratio(e[key], o[s].get(key)), ".2f")
        # At a fixed rate every server delivers everything: msg/s ratios say nothing there,
        # and saturated p99 is queueing in socket buffers of different sizes.
        sat = k == "saturate"
        print(f"| {k} | {d} | {m} | {p} | {n} | {r('coturn', 'cpu')} | {r('forwarder-naive', 'cpu')} | "
              f"{r('forwarder-naive-sockets', 'cpu')} | {r('forwarder-batched', 'cpu')} | "
              f"{r('forwarder-sockets', 'cpu')} | "
              f"{r('coturn', 'dpps') if sat else '–'} | {r('forwarder-naive', 'dpps') if sat else '–'} | "
              f"{r('forwarder-naive-sockets', 'dpps') if sat else '–'} | "
              f"{r('forwarder-batched', 'dpps') if sat else '–'} | {r('forwarder-sockets', 'dpps') if sat else '–'} | "
              f"{'–' if sat else r('coturn', 'p99')} |")

    # eeaturn beside itself: at --baseline REV (eeaturn ÷ base) and with evidence on
    # (evidence ÷ eeaturn). Every cell's runs are listed, since single runs move by several %.
    own = [s for s in EXTRA if s in present and any(r["label"] == s for r in load)]
    if own:
        def runs(s, m, d, p, n, k, key):
            return "/".join(fmt(r.get(key), ".2f" if key == "server_us_per_pkt" else ",.0f")
                            for r in cells.get((s, m, d, p, n, k), []))
        for kind, key, spec, what in (("fixed", "cpu", ".2f", "server CPU µs per packet"),
                                      ("saturate", "dpps", ",.0f", "delivered msg/s, saturating")):
            rows = [c for c in turn_cells if c[4] == kind]
            if not rows:
                continue
            rawkey = "server_us_per_pkt" if key == "cpu" else "delivered_pps"
            print(f"\n### eeaturn beside {' and '.join(own)}: {what} (medians; single runs in brackets)\n")
            head = ["direction", "mode", "bytes", "allocs", "eeaturn"]
            for s in own:
                head += [s, ("eeaturn ÷ base" if s == "eeaturn-base" else f"{s.removeprefix('eeaturn-')} ÷ eeaturn")]
            print("| " + " | ".join(head) + " |")
            print("| --- | --- | ---: | ---: | " + " | ".join("---:" for _ in head[4:]) + " |")
            for (m, d, p, n, k) in rows:
                e = cell("eeaturn", m, d, p, n, k) or {}
                vals = [f"{fmt(e.get(key), spec)} ({runs('eeaturn', m, d, p, n, k, rawkey)})"]
                for s in own:
                    o = cell(s, m, d, p, n, k) or {}
                    vals.append(f"{fmt(o.get(key), spec)} ({runs(s, m, d, p, n, k, rawkey)})")
                    r = ratio(e.get(key), o.get(key)) if s == "eeaturn-base" else ratio(o.get(key), e.get(key))
                    vals.append(fmt(r, ".3f"))
                print(f"| {d} | {m} | {p} | {n} | " + " | ".join(vals) + " |")

kernel_cells = [c for c in turn_cells if cell("eeaturn-kernel", *c)]
if kernel_cells:
    print("\n### The kernel fast path (eeaturn-kernel) against the others: both cores µs per packet "
          "(the whole machine, softirq included) and p99 at the fixed rate, msg/s saturating\n")
    print("| load | direction | mode | bytes | allocs | both cores ÷ coturn | ÷ eeaturn | ÷ batched | ÷ sockets | "
          "p99 ÷ eeaturn | msg/s ÷ eeaturn | ÷ coturn |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for (m, d, p, n, k) in kernel_cells:
        e = cell("eeaturn-kernel", m, d, p, n, k)
        o = {s: cell(s, m, d, p, n, k) or {} for s in SERVERS}
        def r(s, key):
            return fmt(ratio(e[key], o[s].get(key)), ".2f")
        sat = k == "saturate"
        print(f"| {k} | {d} | {m} | {p} | {n} | {'–' if sat else r('coturn', 'cores')} | "
              f"{'–' if sat else r('eeaturn', 'cores')} | {'–' if sat else r('forwarder-batched', 'cores')} | "
              f"{'–' if sat else r('forwarder-sockets', 'cores')} | {'–' if sat else r('eeaturn', 'p99')} | "
              f"{r('eeaturn', 'dpps') if sat else '–'} | {r('coturn', 'dpps') if sat else '–'} |")

if setup:
    print("\n### Allocation setup rate (401 round + authenticated Allocate, 64 in flight)\n")
    print("| server | allocations | runs | allocations/s | each run | server CPU µs/allocation | tool CPU % | failed |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    rates = {}
    bounded = False
    for s in SERVERS:
        rows = [r for r in setup if r["label"] == s]
        if rows:
            rates[s] = med(rows, "allocs_per_s")
            # A full tool core means the server may do more: the rate is a lower bound.
            at_least = "≥ " if (med(rows, "tool_cpu_pct") or 0) > 90 else ""
            bounded = bounded or bool(at_least)
            each = "/".join(fmt(r.get("allocs_per_s"), ",.0f") for r in rows)
            print(f"| {s} | {rows[0]['allocations']} | {len(rows)} | {at_least}{fmt(rates[s], ',.0f')} | {each} | "
                  f"{fmt(med(rows, 'server_us_per_alloc'), '.1f')} | {fmt(med(rows, 'tool_cpu_pct'), '.0f')} | "
                  f"{sum(r['failed'] for r in rows)} |")
    if "eeaturn" in rates and rates.get("coturn"):
        print(f"\neeaturn / coturn: {rates['eeaturn'] / rates['coturn']:.2f}")
    if rates.get("eeaturn") and rates.get("eeaturn-base"):
        print(f"\neeaturn / eeaturn-base: {rates['eeaturn'] / rates['eeaturn-base']:.3f}")
    if rates.get("eeaturn") and rates.get("eeaturn-evidence"):
        print(f"\neeaturn-evidence / eeaturn: {rates['eeaturn-evidence'] / rates['eeaturn']:.3f}")
    if bounded:
        print("\n≥: the load tool's core was more than 90 % busy, so the server may do more.")

if memory:
    print("\n### Memory per idle allocation (one permission, one channel; VmRSS growth / allocations)\n")
    print("| server | allocations | VmRSS before KiB | VmRSS with them KiB | bytes/allocation | after release KiB |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in memory:
        print(f"| {r['label']} | {r['ok']} | {r['rss_before_kib']} | {r['rss_loaded_kib']} | "
              f"{r['bytes_per_allocation']:,.0f} | {r['rss_released_kib']} |")

peer_drops = sum(r.get("peer_socket_drops", 0) for r in load)
if peer_drops:
    print(f"\nWarning: the load tool's own receiving sockets dropped {peer_drops} datagrams; loss figures are too high.")
if noisy:
    print(f"\nNote: {noisy} measurement(s) started while another process kept a CPU busy.")
PY
}

if [ -n "$TABLE_ONLY" ]; then
  print_tables "$TABLE_ONLY"
  exit 0
fi

# ---- preparation -------------------------------------------------------------------------

if [ "$(nproc)" -lt 2 ]; then
  log "need at least 2 CPUs (server and load tool pinned apart); have $(nproc)"
  exit 1
fi
for cmd in gcc cargo python3 taskset; do
  command -v "$cmd" >/dev/null || { log "missing: $cmd"; exit 1; }
done
if [[ " $SERVERS " == *" coturn "* ]] && ! command -v turnserver >/dev/null 2>&1; then
  ensure_coturn
fi
if [[ " $SERVERS " == *" coturn "* ]]; then
  stop_packaged_coturn
fi

# Many allocations need many descriptors (a socket per allocation on both sides).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true

WORK="$(mktemp -d "${TMPDIR:-/tmp}/eeaturn-compare.XXXXXX")"
RESULTS="${RESULTS:-$WORK/results}"
mkdir -p "$RESULTS"
log "work dir $WORK, results in $RESULTS"

log "building eeaturn and eeaturn-bench (cargo build --release --locked)"
(cd "$REPO" && cargo build --release --locked --bins) >"$WORK/build.log" 2>&1 ||
  { tail -n 30 "$WORK/build.log"; exit 1; }
TARGET="${CARGO_TARGET_DIR:-$REPO/target}/release"
# Copies: a build in the same tree during the run must not change what is measured.
mkdir -p "$WORK/bin"
cp "$TARGET/eeaturn" "$TARGET/eeaturn-bench" "$WORK/bin/"
EEATURN="$WORK/bin/eeaturn"
BENCH="$WORK/bin/eeaturn-bench"
if [ -n "$BASELINE" ]; then
  # eeaturn at REV, built from a clean checkout of its own with a target directory of its own
  # (nothing shared with the build above), both removed once the binary is copied.
  BASE_REV="$(cd "$REPO" && git rev-parse --verify "$BASELINE^{commit}")" ||
    { log "--baseline: no such revision $BASELINE"; exit 1; }
  BASE_SRC="$WORK/baseline-src"
  BASE_TARGET="$WORK/baseline-target"
  log "building eeaturn at $BASELINE ($BASE_REV) in a temporary worktree $BASE_SRC"
  (cd "$REPO" && git worktree add --detach "$BASE_SRC" "$BASE_REV") >"$WORK/baseline-build.log" 2>&1 ||
    { tail -n 30 "$WORK/baseline-build.log"; exit 1; }
  remove_baseline_tree() {
    (cd "$REPO" && git worktree remove --force "$BASE_SRC") >>"$WORK/baseline-build.log" 2>&1 || true
    rm -rf "$BASE_SRC" "$BASE_TARGET"
    (cd "$REPO" && git worktree prune) || true
  }
  if ! (cd "$BASE_SRC" && CARGO_TARGET_DIR="$BASE_TARGET" cargo build --release --locked --bin eeaturn) \
    >>"$WORK/baseline-build.log" 2>&1; then
    tail -n 30 "$WORK/baseline-build.log"
    remove_baseline_tree
    exit 1
  fi
  cp "$BASE_TARGET/release/eeaturn" "$WORK/bin/eeaturn-base"
  remove_baseline_tree
fi
EEATURN_BASE="$WORK/bin/eeaturn-base"
for f in naive batched sockets; do
  gcc -O2 -Wall -Wextra -o "$WORK/$f" "$REPO/benches/forwarders/$f.c"
done
gcc -O2 -Wall -Wextra -DSOCKET_PER_CLIENT -o "$WORK/naive-sockets" "$REPO/benches/forwarders/naive.c"

SECRET="$(od -An -tx1 -N20 /dev/urandom | tr -d ' \n')"
printf '%s\n' "$SECRET" >"$WORK/secret"
chmod 600 "$WORK/secret"

cat >"$WORK/eeaturn.toml" <<EOF
# Written by benches/compare.sh; loopback only.
[server]
realm = "$REALM"
listen = ["udp://$HOST:${PORT[eeaturn]}"]
# One data-path worker for the one CPU it gets (0 would give the same under taskset).
workers = 1
[auth]
secret_file = "$WORK/secret"
[relay]
offload = "off"
addresses = ["$HOST"]
port_range = "$RELAY_MIN-$RELAY_MAX"
[limits]
max_allocations = 20000
# The load tool makes every allocation from one client address.
max_allocations_per_source = 20000
# The load tool opens thousands of allocations from one address, each with its own 401 round
# trip: the per-source budget of unauthenticated answers (threat-model.md T3) would measure
# itself, not the setup path, and coturn has no such limit to compare with. Off here only.
unauthenticated_rate = 0
unauthenticated_burst = 0
[geo]
country_db = "$REPO/geo/testdata/world-country.mmdb"
asn_db = "$REPO/geo/testdata/world-asn.mmdb"
max_age = "36500d"
[peers]
dangerous_allow = ["127.0.0.0/8"]
[log]
level = "warn"
EOF

# eeaturn-evidence: the same configuration on its own port, with signed evidence in a fresh
# directory (fsync at most a second behind, the default) and the committed development key.
mkdir -p "$WORK/evidence"
sed "s|udp://$HOST:${PORT[eeaturn]}|udp://$HOST:${PORT[eeaturn-evidence]}|" "$WORK/eeaturn.toml" \
  >"$WORK/eeaturn-evidence.toml"
cat >>"$WORK/eeaturn-evidence.toml" <<EOF
[evidence]
enabled = true
directory = "$WORK/evidence/bench"
signing_key_file = "$REPO/config/dev-evidence.key"
node_id = "bench"
fsync = "interval"
EOF
sed "s|udp://$HOST:${PORT[eeaturn]}|udp://$HOST:${PORT[eeaturn-base]}|" "$WORK/eeaturn.toml" \
  >"$WORK/eeaturn-base.toml"
# eeaturn-kernel: the same configuration on its own port, relaying ChannelData in the kernel
# (it refuses to start without the fast path rather than measure user space by mistake).
sed -e "s|udp://$HOST:${PORT[eeaturn]}|udp://$HOST:${PORT[eeaturn-kernel]}|" \
  -e 's|^offload = "off"|offload = "required"|' "$WORK/eeaturn.toml" >"$WORK/eeaturn-kernel.toml"

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "nproc: $(nproc)"
  lscpu | grep -E '^(Model name|CPU\(s\)|Thread|Core|Socket|Hypervisor|L2|L3)' | sed 's/  */ /g'
  echo "kernel: $(uname -r)"
  echo "eeaturn: $(cd "$REPO" && git describe --always --dirty 2>/dev/null || echo unknown)"
  [ -z "$BASELINE" ] || echo "eeaturn-base: $BASELINE = $BASE_REV"
  echo "coturn: $(turnserver --version 2>/dev/null | head -n1 || echo none)"
  echo "net.core.rmem_max: $(cat /proc/sys/net/core/rmem_max)"
  echo "runs: $RUNS, duration ${DURATION}s, warmup ${WARMUP}s, fixed rate $RATE msg/s, saturating with GSO $GSO"
} >"$RESULTS/machine.txt"
sed 's/^/    /' "$RESULTS/machine.txt"

# ---- servers -----------------------------------------------------------------------------

# start_server NAME: starts NAME pinned to $SERVER_CPU; sets SERVER_PID; waits until ready.
start_server() {
  local name="$1" port="${PORT[$1]}"
  local logf="$WORK/$name.log"
  case "$name" in
    forwarder-naive | forwarder-naive-sockets | forwarder-batched | forwarder-sockets)
      taskset -c "$SERVER_CPU" "$WORK/${name#forwarder-}" "$HOST:$port" "$PEER:$PEER_PORT" \
        >"$logf" 2>&1 &
      ;;
    coturn)
      # -n: no config file. Loopback peers need --allow-loopback-peers (--allowed-peer-ip
      # alone does not lift the loopback ban). One relay thread for the one CPU it gets, as
      # eeaturn gets one worker. No TLS/DTLS/CLI, log to a file only.
      taskset -c "$SERVER_CPU" turnserver -n \
        --listening-ip="$HOST" --listening-port="$port" --relay-ip="$HOST" \
        --min-port="$RELAY_MIN" --max-port="$RELAY_MAX" \
        --allow-loopback-peers --allowed-peer-ip="$PEER" \
        --use-auth-secret --static-auth-secret="$SECRET" --realm="$REALM" \
        --no-tls --no-dtls --no-cli --no-rfc5780 --relay-threads=1 \
        --log-file="$logf" --no-stdout-log --simple-log \
        --userdb="$WORK/turndb" --pidfile="$WORK/turnserver.pid" >/dev/null 2>&1 &
      ;;
    eeaturn)
      taskset -c "$SERVER_CPU" env NO_COLOR=1 "$EEATURN" serve --config "$WORK/eeaturn.toml" \
        >"$logf" 2>&1 &
      ;;
    eeaturn-evidence)
      taskset -c "$SERVER_CPU" env NO_COLOR=1 "$EEATURN" serve --config "$WORK/eeaturn-evidence.toml" \
        >"$logf" 2>&1 &
      ;;
    eeaturn-kernel)
      taskset -c "$SERVER_CPU" env NO_COLOR=1 "$EEATURN" serve --config "$WORK/eeaturn-kernel.toml" \
        >"$logf" 2>&1 &
      ;;
    eeaturn-base)
      taskset -c "$SERVER_CPU" env NO_COLOR=1 "$EEATURN_BASE" serve --config "$WORK/eeaturn-base.toml" \
        >"$logf" 2>&1 &
      ;;
    *) log "unknown server $name"; return 1 ;;
  esac
  SERVER_PID=$!
  BENCH_PIDS+=("$SERVER_PID")
  local i
  for i in $(seq 1 100); do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      log "$name exited at start; its log:"
      tail -n 20 "$logf" | sed 's/^/    | /'
      return 1
    fi
    case "$name" in
      forwarder-*)
        [ -n "$(ss -Hlun "sport = :$port" 2>/dev/null)" ] && return 0
        ;;
      *)
        # Ready when one authenticated allocation succeeds.
        if "$BENCH" setup --server "$HOST:$port" --secret-file "$WORK/secret" \
          --client-addr "$CLIENT" --allocations 1 >/dev/null 2>&1; then
          return 0
        fi
        ;;
    esac
    sleep 0.1
  done
  log "$name not ready after 10 s"
  return 1
}

stop_server() {
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
}

# Waits (up to --max-wait seconds, default 30) until both CPUs are nearly idle, so that other
# work on a shared machine does not land in a measurement. Counts the times it gives up.
NOISY=0
wait_quiet() {
  local i busy
  busy=0
  for i in $(seq 1 "$MAX_WAIT"); do
    busy=$(
      python3 - <<'PY'
import time
def read():
    out = {}
    for line in open("/proc/stat"):
        f = line.split()
        if f[0].startswith("cpu") and f[0] != "cpu":
            v = list(map(int, f[1:9]))
            out[f[0]] = (sum(v) - v[3] - v[4], sum(v))
    return out
a = read(); time.sleep(1.0); b = read()
print(max(round(100 * (b[c][0] - a[c][0]) / max(1, b[c][1] - a[c][1])) for c in a))
PY
    )
    [ "$busy" -le 10 ] && return 0
    [ "$i" = 1 ] && log "another process keeps a CPU ${busy}% busy; waiting for quiet"
  done
  if [ "$busy" -gt 10 ]; then
    log "machine still busy (${busy}% on one CPU); measuring anyway"
    NOISY=$((NOISY + 1))
  fi
}

bench() {
  timeout 300 taskset -c "$TOOL_CPU" "$BENCH" "$@" --client-addr "$CLIENT" --json
}

# ---- the matrix --------------------------------------------------------------------------

[ "$DO_LOAD" = 1 ] || RUNS_LOAD=0
for run in $(seq 1 "${RUNS_LOAD:-$RUNS}"); do
  for server in $SERVERS; do
    start_server "$server"
    port="${PORT[$server]}"
    for payload in "${PAYLOADS[@]}"; do
      for n in "${ALLOCS[@]}"; do
        if [[ "$server" == forwarder-* ]]; then
          modes=(raw) directions=(to-peer)
        else
          modes=("${MODES[@]}") directions=("${DIRECTIONS[@]}")
        fi
        for mode in "${modes[@]}"; do
         for direction in "${directions[@]}"; do
          for load in "${LOADS[@]}"; do
            if [ "$load" = fixed ]; then rate="$RATE" gso=1; else rate=0 gso="$GSO"; fi
            if [ "$mode" = raw ]; then
              extra=(--raw-forwarder)
            else
              extra=(--mode "$mode" --secret-file "$WORK/secret")
            fi
            wait_quiet
            if ! kill -0 "$SERVER_PID" 2>/dev/null; then
              # Something else on a shared machine may kill it; the cell must not be lost.
              log "$server (pid $SERVER_PID) is gone; starting it again"
              wait "$SERVER_PID" 2>/dev/null || true
              start_server "$server"
            fi
            log "run $run/$RUNS $server: $mode $direction, $payload B, $n allocations, $load"
            bench load --server "$HOST:$port" --server-pid "$SERVER_PID" --direction "$direction" \
              --server-core "$SERVER_CPU" --allocations "$n" --payload "$payload" \
              --rate "$rate" --gso "$gso" --duration "$DURATION" --warmup "$WARMUP" \
              --peer-addr "$PEER" --peer-port "$PEER_PORT" --label "$server" "${extra[@]}" \
              >>"$RESULTS/load.jsonl" 2> >(sed 's/^/    /' >&2) ||
              log "  failed (see above)"
          done
         done
        done
      done
    done
    stop_server
  done
done

# ---- allocation setup rate and memory (TURN servers only) --------------------------------

for server in $SERVERS; do
  [[ "$server" == forwarder-* ]] && continue
  port="${PORT[$server]}"
  if [ "$DO_SETUP" = 1 ]; then
    start_server "$server"
    for run in $(seq 1 "$RUNS"); do
      wait_quiet
      log "run $run/$RUNS $server: setup rate, $SETUP_ALLOCS allocations"
      bench setup --server "$HOST:$port" --secret-file "$WORK/secret" \
        --server-pid "$SERVER_PID" --allocations "$SETUP_ALLOCS" --label "$server" \
        >>"$RESULTS/setup.jsonl" 2> >(sed 's/^/    /' >&2) || log "  failed (see above)"
    done
    stop_server
  fi
  if [ "$DO_MEMORY" = 1 ]; then
    for n in "${MEMORY_ALLOCS[@]}"; do
      # A fresh server for each figure: growth from its idle state.
      start_server "$server"
      wait_quiet
      log "$server: memory with $n allocations"
      bench memory --server "$HOST:$port" --secret-file "$WORK/secret" \
        --server-pid "$SERVER_PID" --allocations "$n" --peer-addr "$PEER" \
        --peer-port "$PEER_PORT" --label "$server" \
        >>"$RESULTS/memory.jsonl" 2> >(sed 's/^/    /' >&2) || log "  failed (see above)"
      stop_server
    done
  fi
done

# ---- the tables --------------------------------------------------------------------------

printf '%s\n' "$NOISY" >"$RESULTS/noisy.txt"
print_tables "$RESULTS" | tee "$RESULTS/table.md"
log "done; raw results in $RESULTS"
