#!/usr/bin/env bash
# The cost of signed evidence, measured in pairs: the same eeaturn binary and configuration with
# [evidence] off and on, both running at once, the load alternating between them run by run so
# that whatever else the machine does falls on both alike.
#
#   bash benches/evidence-cost.sh [--rounds N]
#                                 [--part setup|packets|threads|instructions|setup-instructions|all]
#                                 [--results DIR]
#
# Parts (default: all):
#   setup         allocation setup rate (401 round + authenticated Allocate, 10,000 allocations,
#                 64 in flight) and the server's CPU per allocation, N rounds of one run each;
#   packets       server CPU per relayed packet at a fixed 50,000 msg/s (ChannelData, 100 B,
#                 to the peer), 10 and 100 allocations, N rounds;
#   threads       CPU per allocation of each relay thread (worker, evidence writer) over five
#                 setup-and-release runs of 10,000 allocations, from /proc/PID/task/*/stat;
#   instructions  instructions per relayed packet under valgrind's callgrind (deterministic: no
#                 hardware counters needed, no noise from other processes), 2,000 msg/s and 10
#                 allocations, the difference of a 3 s and a 9 s run divided by the difference
#                 of their packets, per thread, plus the instructions spent in evidence code on
#                 the worker thread.
#   setup-instructions  instructions per allocation set up and released, per thread, under
#                 callgrind: the difference of a 1,000 and a 3,000 allocation run.
#                 (Under valgrind, ring's SHA-256 runs without the CPU's SHA extensions, so
#                 the writer's hashing counts more than it costs on the real CPU.)
#
# Both servers run pinned to CPU 1 and the load tool (eeaturn-bench) to CPU 0, as in
# benches/compare.sh; evidence is written with fsync = "interval" (the default) to a fresh
# directory, signed with the committed development key. Each part prints medians, the paired
# on ÷ off ratios of every round (median and range) and the ratio of the medians.
# benches/compare.sh puts the same servers beside coturn and the bare forwarders; this script
# answers the narrower question of what evidence costs, with pairs instead of blocks.
#
# Needs: Linux with 2+ CPUs, cargo, python3, taskset; valgrind for `instructions` (installed
# with apt-get when missing). Every address is a loopback address; listeners on 20101 and
# 20103, the bench peer on 20500, relay ports 40000-59999.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROUNDS=10
PART=all
RESULTS=""
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS="$2"; shift ;;
    --part) PART="$2"; shift ;;
    --results) RESULTS="$2"; shift ;;
    -h | --help) awk 'NR > 1 && /^set -euo/ { exit } NR > 1' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
case "$PART" in setup | packets | threads | instructions | setup-instructions | all) ;; *)
  echo "--part takes setup, packets, threads, instructions, setup-instructions or all" >&2; exit 2 ;;
esac
case "$ROUNDS" in '' | *[!0-9]*) echo "--rounds takes a number" >&2; exit 2 ;; esac
if [ "$ROUNDS" -lt 1 ] || [ "$ROUNDS" -gt 50 ]; then
  echo "--rounds must be 1..50" >&2
  exit 2
fi
if [ "$(nproc)" -lt 2 ]; then
  echo "needs two CPUs (the server on one, the load tool on the other)" >&2
  exit 1
fi

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/eeaturn-evidence-cost.XXXXXX")"
RESULTS="${RESULTS:-$WORK/results}"
mkdir -p "$RESULTS"
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK/evidence"
}
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || true

log "building eeaturn and eeaturn-bench (cargo build --release --locked)"
(cd "$REPO" && cargo build --release --locked --bins) >"$WORK/build.log" 2>&1 ||
  { tail -20 "$WORK/build.log" >&2; exit 1; }
EEATURN="$REPO/target/release/eeaturn"
BENCH="$REPO/target/release/eeaturn-bench"

od -An -tx1 -N20 /dev/urandom | tr -d ' \n' >"$WORK/secret"
chmod 600 "$WORK/secret"
for cfg in off on; do
  port=$([ "$cfg" = on ] && echo 20103 || echo 20101)
  cat >"$WORK/$cfg.toml" <<EOF
# Written by benches/evidence-cost.sh; loopback only.
[server]
realm = "bench.test"
listen = ["udp://127.0.0.1:$port"]
workers = 1
[auth]
secret_file = "$WORK/secret"
[relay]
offload = "off"
addresses = ["127.0.0.1"]
port_range = "40000-59999"
[limits]
max_allocations = 20000
# The load tool makes every allocation from one client address.
max_allocations_per_source = 20000
# The load tool makes thousands of allocations from one address, each with its own 401 round
# trip: the per-source budget of unauthenticated answers would throttle the tool, not test
# the relay (threat-model.md T3; tests/hostile.rs covers the budget). Off here only.
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
done
cat >>"$WORK/on.toml" <<EOF
[evidence]
enabled = true
directory = "$WORK/evidence/bench"
signing_key_file = "$REPO/config/dev-evidence.key"
node_id = "bench"
fsync = "interval"
EOF
port_of() { [ "$1" = on ] && echo 20103 || echo 20101; }

# Starts both servers pinned to CPU 1; sets PID_off and PID_on.
start_both() {
  rm -rf "$WORK/evidence"
  local cfg
  for cfg in off on; do
    taskset -c 1 "$EEATURN" serve --config "$WORK/$cfg.toml" >"$WORK/serve-$cfg.log" 2>&1 &
    PIDS+=("$!")
    printf -v "PID_$cfg" '%s' "$!"
  done
  local i
  for i in $(seq 1 50); do
    if ss -Hlun "sport = :20101" | grep -q . && ss -Hlun "sport = :20103" | grep -q .; then
      return 0
    fi
    sleep 0.1
  done
  log "the servers did not start:"; tail -5 "$WORK"/serve-*.log >&2; exit 1
}
stop_both() {
  kill "$PID_off" "$PID_on" 2>/dev/null || true
  wait "$PID_off" "$PID_on" 2>/dev/null || true
  PIDS=()
}
bench() { timeout 300 taskset -c 0 "$BENCH" "$@" --client-addr 127.0.1.1 --json; }

# Prints medians and paired ratios of KEY for the rows of FILE labelled off and on, in order.
pairs() {
  python3 - "$1" "$2" "$3" <<'PY'
import json, statistics as st, sys
path, key, title = sys.argv[1:4]
rows = [json.loads(l) for l in open(path) if l.strip()]
off = [r[key] for r in rows if r["label"] == "off" and r.get(key) is not None]
on = [r[key] for r in rows if r["label"] == "on" and r.get(key) is not None]
n = min(len(off), len(on))
if n == 0:
    print(f"| {title} | no runs | | | |"); sys.exit()
ratios = sorted(b / a for a, b in zip(off[:n], on[:n]) if a)
print(f"| {title} | {st.median(off):,.2f} | {st.median(on):,.2f} | "
      f"{st.median(on) / st.median(off):.3f} | {st.median(ratios):.3f} "
      f"({ratios[0]:.3f}–{ratios[-1]:.3f}, {n} pairs) |")
PY
}
table_head() {
  echo
  echo "| $1 | off (median) | on (median) | on ÷ off, medians | on ÷ off, paired median (range) |"
  echo "| --- | ---: | ---: | ---: | ---: |"
}

if [ "$PART" = setup ] || [ "$PART" = all ]; then
  start_both
  : >"$RESULTS/setup.jsonl"
  for r in $(seq 1 "$ROUNDS"); do
    for cfg in off on; do
      pid_var="PID_$cfg"
      log "setup round $r/$ROUNDS, evidence $cfg"
      bench setup --server "127.0.0.1:$(port_of "$cfg")" --secret-file "$WORK/secret" \
        --server-pid "${!pid_var}" --allocations 10000 --label "$cfg" >>"$RESULTS/setup.jsonl"
    done
  done
  stop_both
  table_head "setup (10,000 allocations, 64 in flight)"
  pairs "$RESULTS/setup.jsonl" allocs_per_s "allocations/s"
  pairs "$RESULTS/setup.jsonl" server_us_per_alloc "server CPU µs per allocation"
  pairs "$RESULTS/setup.jsonl" tool_cpu_pct "tool CPU %"
fi

if [ "$PART" = packets ] || [ "$PART" = all ]; then
  start_both
  for n in 10 100; do
    : >"$RESULTS/packets-$n.jsonl"
    for r in $(seq 1 "$ROUNDS"); do
      for cfg in off on; do
        pid_var="PID_$cfg"
        log "packets round $r/$ROUNDS, $n allocations, evidence $cfg"
        bench load --server "127.0.0.1:$(port_of "$cfg")" --server-pid "${!pid_var}" \
          --server-core 1 --direction to-peer --allocations "$n" --payload 100 --rate 50000 \
          --gso 1 --duration 4 --warmup 1 --peer-addr 127.0.2.1 --peer-port 20500 \
          --label "$cfg" --mode channel --secret-file "$WORK/secret" >>"$RESULTS/packets-$n.jsonl"
      done
    done
  done
  stop_both
  table_head "per packet, 50,000 msg/s"
  for n in 10 100; do
    pairs "$RESULTS/packets-$n.jsonl" server_us_per_pkt "server CPU µs per packet, $n allocations"
    pairs "$RESULTS/packets-$n.jsonl" loss_pct "loss %, $n allocations"
  done
fi

if [ "$PART" = threads ] || [ "$PART" = all ]; then
  start_both
  clk=$(getconf CLK_TCK)
  snap() { # comm ticks, summed over the threads of one name
    local t
    for t in /proc/"$1"/task/*; do
      echo "$(tr ' ' '_' <"$t/comm") $(awk '{print $14 + $15}' "$t/stat")"
    done | awk '{a[$1] += $2} END {for (k in a) print k, a[k]}' | sort
  }
  echo
  echo "| evidence | thread | CPU µs per allocation (5 × 10,000 set up and released) |"
  echo "| --- | --- | ---: |"
  for cfg in off on; do
    pid_var="PID_$cfg"
    snap "${!pid_var}" >"$WORK/t0-$cfg"
    for i in 1 2 3 4 5; do
      log "threads: evidence $cfg, run $i/5"
      bench setup --server "127.0.0.1:$(port_of "$cfg")" --secret-file "$WORK/secret" \
        --allocations 10000 --label "$cfg" >/dev/null
    done
    sleep 1.5 # the writer takes the last records within its gather interval
    snap "${!pid_var}" >"$WORK/t1-$cfg"
    join "$WORK/t0-$cfg" "$WORK/t1-$cfg" |
      awk -v cfg="$cfg" -v clk="$clk" '$3 > $2 {printf "| %s | %s | %.1f |\n", cfg, $1, ($3 - $2) * 1e6 / clk / 50000}'
  done
  stop_both
fi

# Runs the server under callgrind twice per configuration, with a small and a large amount of
# work (the load command reads $AMOUNT and prints how many units it completed), and appends
# "cfg amount units thread instructions evidence-instructions" per thread to $1.
callgrind_pair() {
  local out="$1" small="$2" large="$3" load="$4" cfg amount units vp f ir who ev
  if ! command -v valgrind >/dev/null; then
    log "installing valgrind"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q valgrind >/dev/null
  fi
  : >"$out"
  for cfg in off on; do
    for amount in "$small" "$large"; do
      rm -rf "$WORK/evidence" "$WORK/cg"
      mkdir -p "$WORK/cg"
      log "callgrind: evidence $cfg, $load $amount"
      valgrind --tool=callgrind --separate-threads=yes --compress-strings=no --callgrind-out-file="$WORK/cg/out.%p" \
        "$EEATURN" serve --config "$WORK/$cfg.toml" >/dev/null 2>"$WORK/valgrind.log" &
      vp=$!
      PIDS+=("$vp")
      for _ in $(seq 1 100); do
        ss -Hlun "sport = :$(port_of "$cfg")" | grep -q . && break
        sleep 0.2
      done
      units=$(CFG="$cfg" AMOUNT="$amount" "$load")
      sleep 2 # the writer takes the last records within its gather interval
      kill -TERM "$vp"
      wait "$vp" 2>/dev/null || true
      PIDS=()
      for f in "$WORK"/cg/out.*-*; do
        ir=$(awk '/^summary:/ {print $2}' "$f")
        [ -n "$ir" ] || continue
        # Which thread: only the worker receives datagrams; the writer runs Thread's methods
        # and, unlike the main thread that starts it, never opens the log.
        if grep -q '^fn=eeaturn::shell::batch::Batch::recv' "$f"; then
          who=worker
        elif grep -q '^fn=eeaturn::shell::evidence::Thread::' "$f" &&
          ! grep -q '^fn=eeaturn::shell::evidence::open_log' "$f"; then
          who=writer
        else
          who=other
        fi
        ev=0
        if [ "$who" = worker ]; then
          ev=$(callgrind_annotate --inclusive=yes --threshold=100 "$f" 2>/dev/null |
            awk '/src\/shell\/evidence\/mod.rs:/ {gsub(",", "", $1); s += $1} END {print s + 0}')
        fi
        echo "$cfg $amount $units $who $ir $ev" >>"$out"
      done
    done
  done
}

# Prints instructions per unit (the difference of the large and the small run, divided by the
# difference of their units) per thread, with and without evidence.
callgrind_table() {
  python3 - "$1" "$2" "$3" "$4" <<'PY'
import sys, collections
path, small, large, unit = sys.argv[1:5]
ir = collections.defaultdict(int); units = {}; ev = collections.defaultdict(int)
for line in open(path):
    cfg, amount, done, who, n, e = line.split()
    ir[(cfg, amount, who)] += int(n); units[(cfg, amount)] = int(done); ev[(cfg, amount)] += int(e)
print(f"\n| evidence | thread | instructions per {unit} | of which in evidence code |")
print("| --- | --- | ---: | ---: |")
per = {}
for cfg in ("off", "on"):
    du = units[(cfg, large)] - units[(cfg, small)]
    for who in ("worker", "writer", "other"):
        di = ir[(cfg, large, who)] - ir[(cfg, small, who)]
        if ir[(cfg, large, who)] == 0:
            continue
        per[(cfg, who)] = di / du
        evu = (ev[(cfg, large)] - ev[(cfg, small)]) / du if who == "worker" and cfg == "on" else None
        print(f"| {cfg} | {who} | {di / du:,.0f} | {'' if evu is None else f'{evu:,.1f}'} |")
if ("off", "worker") in per and ("on", "worker") in per:
    print(f"\nworker thread, on ÷ off: {per[('on', 'worker')] / per[('off', 'worker')]:.3f}")
    tot = lambda c: sum(v for (k, _), v in per.items() if k == c)
    print(f"all threads, on ÷ off: {tot('on') / tot('off'):.3f}")
PY
}

load_packets() {
  bench load --server "127.0.0.1:$(port_of "$CFG")" --direction to-peer \
    --allocations 10 --payload 100 --rate 2000 --gso 1 --duration "$AMOUNT" --warmup 0 \
    --peer-addr 127.0.2.1 --peer-port 20500 --label "$CFG" --mode channel \
    --secret-file "$WORK/secret" | python3 -c 'import json,sys; print(json.load(sys.stdin)["delivered"])'
}

load_setups() {
  bench setup --server "127.0.0.1:$(port_of "$CFG")" --secret-file "$WORK/secret" \
    --allocations "$AMOUNT" --label "$CFG" | python3 -c 'import json,sys; print(json.load(sys.stdin)["released"])'
}

if [ "$PART" = instructions ] || [ "$PART" = all ]; then
  # Packets: 3 s and 9 s at 2,000 msg/s through 10 allocations.
  callgrind_pair "$RESULTS/instructions.txt" 3 9 load_packets
  callgrind_table "$RESULTS/instructions.txt" 3 9 "relayed packet"
fi

if [ "$PART" = setup-instructions ] || [ "$PART" = all ]; then
  # Allocations set up and released: 1,000 and 3,000.
  callgrind_pair "$RESULTS/setup-instructions.txt" 1000 3000 load_setups
  callgrind_table "$RESULTS/setup-instructions.txt" 1000 3000 "allocation set up and released"
fi

log "done; raw results in $RESULTS"
