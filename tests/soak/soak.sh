#!/usr/bin/env bash
# Soak: the relay under mixed load for a while, then its memory slope and file descriptors.
#
#   bash tests/soak/soak.sh [--duration SECONDS] [--out DIR]     # default 600 s (issue 16)
#
# One release build of `eeaturn serve` on loopback (UDP and TCP on 127.0.0.1:27478, the API
# on https://127.0.0.1:27443, metrics on 127.0.0.1:27464, relay ports 41000-44999, evidence
# on, the bundled test world) carries, at the same time and until the deadline:
#   - allocations coming and going: `eeaturn-bench setup` rounds of 500 allocations over UDP
#     and 60 over TCP (under the 64 connections per source) from a German address (127.0.1.1),
#     each set up and released;
#   - relaying: `eeaturn-bench load` rounds, 20 allocations, ChannelData at 5,000 msg/s to a
#     French peer (127.0.2.1), 20 s each;
#   - refusals: setup rounds of 100 from an American address (127.0.5.1): every Allocate 403;
#   - the API: credential requests with the development key, and requests with a wrong key
#     (401), ten a second.
# Every 5 s it samples the relay's VmRSS and open descriptors (/proc). After the deadline the
# loads stop, the relay is left idle for 10 s and sampled again.
#
# Verdict (exit 1 when either fails):
#   - memory: the least-squares slope of VmRSS over the samples after warm-up (the first 20 %
#     of the run) is flat within noise: its total over the measured span is under 5 % of the
#     mean RSS, or under twice its standard error;
#   - descriptors: idle after the run, the relay holds at most 4 more than idle before it.
# Samples go to DIR/samples.csv and the summary to DIR/summary.txt (and stdout).
#
# Not in .ci/run (ten minutes); docs/performance.md records the last run and its command.
# Loopback only; every loop is bounded by the deadline and every client by `timeout`.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DURATION=600
OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION="$2"; shift ;;
    --out) OUT="$2"; shift ;;
    -h | --help) awk 'NR > 1 && /^set -euo/ { exit } NR > 1' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
case "$DURATION" in '' | *[!0-9]*) echo "--duration takes seconds" >&2; exit 2 ;; esac
if [ "$DURATION" -lt 60 ] || [ "$DURATION" -gt 7200 ]; then
  echo "--duration must be 60..7200 seconds" >&2
  exit 2
fi
for cmd in cargo curl python3; do
  command -v "$cmd" >/dev/null || { echo "missing: $cmd" >&2; exit 1; }
done

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
WORK="$(mktemp -d "${TMPDIR:-/tmp}/eeaturn-soak.XXXXXX")"
OUT="${OUT:-$WORK/out}"
mkdir -p "$OUT"
PIDS=()
RELAY=""
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -n "$RELAY" ] && kill "$RELAY" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$WORK/evidence"
}
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || true

log "building (cargo build --release --locked --bins)"
(cd "$REPO" && cargo build --release --locked --bins) >"$WORK/build.log" 2>&1 ||
  { tail -20 "$WORK/build.log" >&2; exit 1; }
EEATURN="$REPO/target/release/eeaturn"
BENCH="$REPO/target/release/eeaturn-bench"

cp "$REPO/config/dev.secret" "$WORK/secret"
chmod 600 "$WORK/secret"
KEY="$(cat "$REPO/config/dev.api-key")"
cat >"$WORK/soak.toml" <<EOF
# Written by tests/soak/soak.sh; loopback only.
[server]
realm = "soak.test"
listen = ["udp://127.0.0.1:27478", "tcp://127.0.0.1:27478"]
[tls]
certificate = "$REPO/config/dev-cert.pem"
private_key = "$REPO/config/dev-key.pem"
[auth]
secret_file = "$WORK/secret"
[relay]
offload = "off"
addresses = ["127.0.0.1"]
port_range = "41000-44999"
[limits]
max_allocations = 3000
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
[metrics]
listen = "127.0.0.1:27464"
[log]
level = "warn"
[api]
listen = "https://127.0.0.1:27443"
uris = ["turn:127.0.0.1:27478?transport=udp"]
[[api.keys]]
name = "soak"
scope = "credentials"
sha256 = "$(printf '%s' "$KEY" | sha256sum | cut -d' ' -f1)"
[evidence]
enabled = true
directory = "$WORK/evidence"
signing_key_file = "$REPO/config/dev-evidence.key"
node_id = "soak"
EOF

"$EEATURN" serve --config "$WORK/soak.toml" >"$WORK/relay.log" 2>&1 &
RELAY=$!
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:27464/metrics" >/dev/null 2>&1 && break
  sleep 0.1
done
kill -0 "$RELAY" 2>/dev/null || { tail -20 "$WORK/relay.log" >&2; exit 1; }
log "relay pid $RELAY; soaking for $DURATION s (samples every 5 s in $OUT/samples.csv)"

sample() { # phase, seconds since start
  local rss fds
  rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$RELAY/status")
  fds=$(find "/proc/$RELAY/fd" -mindepth 1 -maxdepth 1 | wc -l)
  echo "$1,$2,$rss,$fds" >>"$OUT/samples.csv"
}
echo "phase,t_s,rss_kib,fds" >"$OUT/samples.csv"
sleep 2
sample idle-before 0

START=$(date +%s)
DEADLINE=$((START + DURATION))
bench() { timeout 120 "$BENCH" "$@" >>"$WORK/bench.log" 2>&1 || true; }
# Each loop ends at the deadline; every client call is bounded by timeout.
(while [ "$(date +%s)" -lt "$DEADLINE" ]; do
  bench setup --server 127.0.0.1:27478 --secret-file "$WORK/secret" --allocations 500 --client-addr 127.0.1.1
  bench setup --server 127.0.0.1:27478 --transport tcp --secret-file "$WORK/secret" --allocations 60 --client-addr 127.0.1.1
done) &
PIDS+=("$!")
(while [ "$(date +%s)" -lt "$DEADLINE" ]; do
  bench load --server 127.0.0.1:27478 --secret-file "$WORK/secret" --mode channel --direction to-peer \
    --allocations 20 --payload 100 --rate 5000 --gso 1 --duration 20 --warmup 0 \
    --peer-addr 127.0.2.1 --peer-port 20600 --client-addr 127.0.1.2
done) &
PIDS+=("$!")
(while [ "$(date +%s)" -lt "$DEADLINE" ]; do
  bench setup --server 127.0.0.1:27478 --secret-file "$WORK/secret" --allocations 100 --client-addr 127.0.5.1
  sleep 1
done) &
PIDS+=("$!")
(n=0; while [ "$(date +%s)" -lt "$DEADLINE" ]; do
  n=$((n + 1))
  curl -s -o /dev/null --max-time 5 --cacert "$REPO/config/dev-cert.pem" -H "Authorization: Bearer $KEY" \
    -H 'Content-Type: application/json' -d "{\"user\":\"soak-$n\",\"ttl\":600}" \
    https://127.0.0.1:27443/v1/credentials || true
  curl -s -o /dev/null --max-time 5 --cacert "$REPO/config/dev-cert.pem" -H "Authorization: Bearer wrong-key-$n" \
    https://127.0.0.1:27443/v1/ice-servers || true
  sleep 0.1
done) &
PIDS+=("$!")

while [ "$(date +%s)" -lt "$DEADLINE" ]; do
  sleep 5
  kill -0 "$RELAY" 2>/dev/null || { log "the relay died"; tail -20 "$WORK/relay.log" >&2; exit 1; }
  sample load $(($(date +%s) - START))
done
log "deadline; waiting for the loads to finish their last round"
for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
PIDS=()
sleep 10
sample idle-after $(($(date +%s) - START))
curl -s "http://127.0.0.1:27464/metrics" >"$OUT/metrics.txt" || true

python3 - "$OUT/samples.csv" "$DURATION" <<'PY' | tee "$OUT/summary.txt"
import csv, math, sys
rows = list(csv.DictReader(open(sys.argv[1])))
duration = int(sys.argv[2])
load = [(int(r["t_s"]), int(r["rss_kib"])) for r in rows if r["phase"] == "load"]
measured = [(t, v) for t, v in load if t >= 0.2 * duration]
before = next(r for r in rows if r["phase"] == "idle-before")
after = next(r for r in rows if r["phase"] == "idle-after")
n = len(measured)
if n < 5:
    print(f"too few samples after warm-up ({n})"); sys.exit(1)
mt = sum(t for t, _ in measured) / n
mv = sum(v for _, v in measured) / n
sxx = sum((t - mt) ** 2 for t, _ in measured)
slope = sum((t - mt) * (v - mv) for t, v in measured) / sxx           # KiB per second
resid = [v - (mv + slope * (t - mt)) for t, v in measured]
se = math.sqrt(sum(e * e for e in resid) / (n - 2) / sxx) if n > 2 else float("inf")
span = measured[-1][0] - measured[0][0]
drift = slope * span
flat = abs(drift) < 0.05 * mv or abs(slope) < 2 * se
fd_before, fd_after = int(before["fds"]), int(after["fds"])
fds_ok = fd_after <= fd_before + 4
peak = max(v for _, v in load)
print(f"samples: {len(load)} under load, {n} after warm-up ({measured[0][0]}-{measured[-1][0]} s)")
print(f"RSS: idle before {int(before['rss_kib'])} KiB, mean under load {mv:.0f} KiB, peak {peak} KiB, idle after {int(after['rss_kib'])} KiB")
print(f"RSS slope after warm-up: {slope * 60:+.1f} KiB/min (standard error {se * 60:.1f}), "
      f"{drift:+.0f} KiB over {span} s = {100 * drift / mv:+.2f} % of the mean: {'flat' if flat else 'GROWING'}")
print(f"descriptors: idle before {fd_before}, idle after {fd_after}: {'no leak' if fds_ok else 'LEAK'}")
sys.exit(0 if flat and fds_ok else 1)
PY
