# shellcheck shell=bash
# Shared helpers for the interop scripts in this directory. Source it, don't run it.
#
# Everything here talks to loopback addresses only (127.0.0.0/8 and ::1).
# Every background process is recorded and killed by the EXIT trap that
# interop_init installs.
#
# Environment knobs (all optional):
#   EEATURN_BIN          server binary (default: <repo>/target/debug/eeaturn)
#   INTEROP_SERVER       "eeaturn" (default) or "coturn": run the same scenarios
#                        against coturn's turnserver, as a reference baseline
#   INTEROP_RESULTS      file to which "PASS name" / "FAIL name" lines are appended
#                        (run-all.sh sets it to count the results)
#   INTEROP_KEEP=1       keep the temp dir (logs, config) even when everything passed
#   EEATURN_LOG_LEVEL    [log] level of the server under test (default: info)

INTEROP_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$INTEROP_DIR/../.." && pwd)"
INTEROP_SERVER="${INTEROP_SERVER:-eeaturn}"

declare -a _INTEROP_PIDS=()
_INTEROP_FAILED=0
_INTEROP_PASSED=0

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*"; }

# Runs a command as root: directly when we are root (as in CI), else through sudo.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo -n "$@"
  else
    log "need root for: $*"
    return 1
  fi
}

# redact ARGS...: the arguments as one line for a log, with the value after -W (a TURN REST
# secret) or -w (a password) replaced: even the throw-away secrets of a test run stay out of
# logs.
redact() {
  local shown=() hide=0 a
  for a in "$@"; do
    if [ "$hide" = 1 ]; then
      shown+=("<redacted>")
      hide=0
    else
      shown+=("$a")
      case "$a" in -W | -w) hide=1 ;; esac
    fi
  done
  printf '%s' "${shown[*]}"
}

# coturn's package gives turnutils_uclient, turnutils_peer, turnutils_stunclient.
# Installing it must not leave its own turnserver daemon running or enabled.
ensure_coturn() {
  if command -v turnutils_uclient >/dev/null 2>&1 &&
    command -v turnutils_peer >/dev/null 2>&1 &&
    command -v turnutils_stunclient >/dev/null 2>&1; then
    return 0
  fi
  log "installing coturn (for its turnutils_* test clients)"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -q >/dev/null || return 1
  as_root apt-get install -y -q --no-install-recommends coturn >/dev/null || return 1
  stop_packaged_coturn
}

# Stops and disables the daemon that the coturn package may have started.
# Only turnserver processes running the package's /etc/turnserver.conf are
# touched, by pid; turnservers started by anyone else are left alone.
stop_packaged_coturn() {
  as_root systemctl disable --now coturn >/dev/null 2>&1 || true
  as_root service coturn stop >/dev/null 2>&1 || true
  local pid
  for pid in $(pgrep -x turnserver 2>/dev/null || true); do
    if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q '/etc/turnserver.conf'; then
      log "stopping the packaged coturn daemon (pid $pid)"
      as_root kill "$pid" 2>/dev/null || true
    fi
  done
}

# Python's aioice (a real third-party TURN client implementation).
ensure_aioice() {
  if python3 -c 'import aioice' >/dev/null 2>&1; then
    return 0
  fi
  log "installing aioice from PyPI"
  PIP_ROOT_USER_ACTION=ignore python3 -m pip install -q --disable-pip-version-check 'aioice==0.*' || return 1
  python3 -c 'import aioice' >/dev/null 2>&1
}

eeaturn_bin() {
  printf '%s\n' "${EEATURN_BIN:-${CARGO_TARGET_DIR:-$REPO_ROOT/target}/debug/eeaturn}"
}

# interop_init NAME: temp dir in $WORK, cleanup trap, result bookkeeping.
interop_init() {
  INTEROP_NAME="$1"
  WORK="$(mktemp -d "${TMPDIR:-/tmp}/eeaturn-interop-$INTEROP_NAME.XXXXXX")"
  trap _interop_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  log "$INTEROP_NAME: work dir $WORK (server under test: $INTEROP_SERVER)"
}

_interop_cleanup() {
  local rc=$?
  local pid i
  for pid in "${_INTEROP_PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${_INTEROP_PIDS[@]}"; do
    for i in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "pid $pid ignored SIGTERM for 5 s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  done
  if [ "$_INTEROP_FAILED" -eq 0 ] && [ "$rc" -eq 0 ] && [ "${INTEROP_KEEP:-0}" != 1 ]; then
    rm -rf "$WORK"
  else
    log "$INTEROP_NAME: logs kept in $WORK"
  fi
  exit "$rc"
}

# spawn LOGFILE CMD...: starts CMD in the background; its pid is in $SPAWNED
# and is killed on exit.
spawn() {
  local logfile="$1"
  shift
  "$@" >"$logfile" 2>&1 &
  SPAWNED=$!
  _INTEROP_PIDS+=("$SPAWNED")
}

# start_peers PORT IP...: starts a turnutils_peer (a UDP echo peer) on each IP at PORT, logs in
# $WORK/peer-IP.log; fails the setup and exits when one does not stay up.
start_peers() {
  local port="$1" ip pid
  shift
  local -a pids=()
  for ip in "$@"; do
    # shellcheck disable=SC2086 # PEER_EXEC is a command prefix (e.g. ip netns exec NS)
    spawn "$WORK/peer-$ip.log" ${PEER_EXEC:-} turnutils_peer -L "$ip" -p "$port"
    pids+=("$SPAWNED")
  done
  sleep 0.5
  for pid in "${pids[@]}"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      fail setup "turnutils_peer (pid $pid) did not start"
      cat "$WORK"/peer-*.log
      exit 1
    fi
  done
}

# xdp_kernel_totals DEV: the counters of the kernel fast path's XDP program attached to DEV
# (read with bpftool): packets and bytes to peers, packets and bytes to clients, summed over
# the first 64 slots (paths take the lowest free slots; a slot keeps its counts after its path
# goes). Prints nothing when DEV has no XDP program with a counters map.
xdp_kernel_totals() {
  ip -j -d link show dev "$1" | python3 -c '
import json, subprocess, sys
def bpftool(*args):
    return json.loads(subprocess.check_output(["bpftool", "-j", *args]))
prog = json.load(sys.stdin)[0].get("xdp", {}).get("prog", {}).get("id")
if prog is not None:
    for m in bpftool("prog", "show", "id", str(prog))["map_ids"]:
        if bpftool("map", "show", "id", str(m))["name"] != "counters":
            continue
        tot = [0, 0, 0, 0]
        for slot in range(64):
            key = [str(slot & 255), str(slot >> 8), "0", "0"]
            v = bpftool("map", "lookup", "id", str(m), "key", *key)["formatted"]["value"]
            for i, k in enumerate(["to_peer_packets", "to_peer_bytes", "to_client_packets", "to_client_bytes"]):
                tot[i] += v[k]
        print(*tot)'
}

pass() {
  local name="$1"
  shift
  _INTEROP_PASSED=$((_INTEROP_PASSED + 1))
  printf 'PASS %s/%s%s\n' "$INTEROP_NAME" "$name" "${*:+: $*}"
  if [ -n "${INTEROP_RESULTS:-}" ]; then
    printf 'PASS %s/%s\n' "$INTEROP_NAME" "$name" >>"$INTEROP_RESULTS"
  fi
}

fail() {
  local name="$1"
  shift
  _INTEROP_FAILED=$((_INTEROP_FAILED + 1))
  printf 'FAIL %s/%s%s\n' "$INTEROP_NAME" "$name" "${*:+: $*}"
  if [ -n "${INTEROP_RESULTS:-}" ]; then
    printf 'FAIL %s/%s\n' "$INTEROP_NAME" "$name" >>"$INTEROP_RESULTS"
  fi
}

# Prints the closing line of one script and returns non-zero if anything failed.
interop_finish() {
  log "$INTEROP_NAME: $_INTEROP_PASSED passed, $_INTEROP_FAILED failed"
  [ "$_INTEROP_FAILED" -eq 0 ]
}

strip_ansi() { sed 's/\x1b\[[0-9;]*[A-Za-z]//g'; }

# Fixed ports. Every listener, relay range and echo peer of these scripts sits
# in 28000-31999: below Linux's default ephemeral range (32768-60999, see
# /proc/sys/net/ipv4/ip_local_port_range), so an outgoing connection of an
# earlier scenario (testssl, uclient) can never hold a port a later server
# needs, and above the ranges the Rust integration tests use (21000-27999).
#   turnutils 28780, relay 29000-29499   aioice    28880, relay 29500-29999
#   residency 28980, relay 30000-30499   tls       28349, relay 30500-30599
#   stream    28080-28091, relay 31000-31499   evidence  28580, relay 30600-30999
#   api       28680, relay 31500-31999          fleet     29180-29181, relay 30600-30799
#   rolling-upgrade 28380-28381, peer 28390, relay 30800-30999
# The relay ranges overlap between scripts that never run at the same time.

# Is a UDP port free on the loopback addresses? (best effort; ss is optional)
udp_port_free() {
  local port="$1"
  if ! command -v ss >/dev/null 2>&1; then
    return 0
  fi
  [ -z "$(ss -Hlun "sport = :$port" 2>/dev/null)" ]
}

random_secret() {
  od -An -tx1 -N20 /dev/urandom | tr -d ' \n'
}

# write_server_config DIR PORT RELAY_RANGE
# Writes DIR/secret (two lines: the first signs, the second is an older one
# that must still be accepted) and DIR/eeaturn.toml, listening on
# 127.0.0.1:PORT and [::1]:PORT, with $SERVER_CONFIG_EXTRA (more tables, e.g.
# [evidence]) appended when set, and $SERVER_RELAY_EXTRA (lines of [relay]) or,
# without it, offload = "off": the suites relay in user space unless they are about the
# kernel fast path (offload.sh). The veth topology (offload-veth.sh) replaces the loopback
# addresses: $SERVER_LISTEN_HOSTS (hosts to listen on, default "127.0.0.1 [::1]"),
# $SERVER_RELAY_ADDRESSES and $SERVER_PEERS_ALLOW (TOML list items). Sets SECRET,
# SECRET_OLD, CONFIG.
write_server_config() {
  local dir="$1" port="$2" range="$3" host listen=""
  local relay_extra='offload = "off"'
  [ -n "${SERVER_RELAY_EXTRA:-}" ] && relay_extra="$SERVER_RELAY_EXTRA"
  local relay_addresses='"127.0.0.1", "::1"' peers_allow='"127.0.0.0/8", "::1/128"'
  [ -n "${SERVER_RELAY_ADDRESSES:-}" ] && relay_addresses="$SERVER_RELAY_ADDRESSES"
  [ -n "${SERVER_PEERS_ALLOW:-}" ] && peers_allow="$SERVER_PEERS_ALLOW"
  for host in ${SERVER_LISTEN_HOSTS:-127.0.0.1 [::1]}; do
    listen="$listen${listen:+, }\"udp://$host:$port\""
  done
  SECRET="$(random_secret)"
  SECRET_OLD="$(random_secret)"
  printf '%s\n%s\n' "$SECRET" "$SECRET_OLD" >"$dir/secret"
  chmod 600 "$dir/secret"
  CONFIG="$dir/eeaturn.toml"
  cat >"$CONFIG" <<EOF
# Written by tests/interop for one test run; loopback only.
[server]
realm = "eeaturn.dev"
listen = [$listen]

[auth]
secret_file = "$dir/secret"

[relay]
addresses = [$relay_addresses]
port_range = "$range"
$relay_extra

[geo]
country_db = "$REPO_ROOT/geo/testdata/world-country.mmdb"
asn_db = "$REPO_ROOT/geo/testdata/world-asn.mmdb"
max_age = "36500d"

[policy]
deny_asns = [9009]

[peers]
dangerous_allow = [$peers_allow]

[log]
level = "${EEATURN_LOG_LEVEL:-info}"
${SERVER_CONFIG_EXTRA:-}
EOF
}

# start_server DIR PORT RELAY_RANGE: writes the config, starts the server under
# test, waits until it is ready. Sets SERVER_PID and SERVER_LOG.
start_server() {
  local dir="$1" port="$2" range="$3"
  if ! udp_port_free "$port"; then
    log "UDP port $port is already in use on this machine:"
    ss -Hlunp "sport = :$port" 2>/dev/null || true
    return 1
  fi
  write_server_config "$dir" "$port" "$range"
  SERVER_LOG="$dir/server.log"
  case "$INTEROP_SERVER" in
    eeaturn)
      local bin
      bin="$(eeaturn_bin)"
      if [ ! -x "$bin" ]; then
        log "server binary $bin not found (run cargo build, or set EEATURN_BIN)"
        return 1
      fi
      log "starting $bin serve --config $CONFIG"
      spawn "$SERVER_LOG" env NO_COLOR=1 "$bin" serve --config "$CONFIG"
      SERVER_PID=$SPAWNED
      wait_for_log "$SERVER_LOG" "$SERVER_PID" 'ready' 30 || return 1
      ;;
    coturn)
      # Reference baseline only: the same scenarios against coturn's server.
      local lo="${range%-*}" hi="${range#*-}"
      cat >"$dir/turnserver.conf" <<EOF
listening-ip=127.0.0.1
listening-ip=::1
listening-port=$port
relay-ip=127.0.0.1
relay-ip=::1
min-port=$lo
max-port=$hi
allow-loopback-peers
use-auth-secret
static-auth-secret=$SECRET
realm=eeaturn.dev
no-tls
no-dtls
no-cli
no-rfc5780
fingerprint
log-file=stdout
userdb=$dir/turndb
pidfile=$dir/turnserver.pid
EOF
      log "starting coturn turnserver (baseline mode)"
      spawn "$SERVER_LOG" turnserver -c "$dir/turnserver.conf"
      SERVER_PID=$SPAWNED
      wait_for_log "$SERVER_LOG" "$SERVER_PID" 'Total General servers' 30 || return 1
      sleep 0.5
      ;;
    *)
      log "unknown INTEROP_SERVER=$INTEROP_SERVER"
      return 1
      ;;
  esac
  log "server is ready (pid $SERVER_PID)"
}

# wait_for_log FILE PID WORD SECONDS: waits until FILE has a line with WORD
# (whole word, any case) while PID is alive.
wait_for_log() {
  local file="$1" pid="$2" word="$3" secs="$4" i
  for i in $(seq 1 $((secs * 10))); do
    if strip_ansi <"$file" 2>/dev/null | grep -qiw -- "$word"; then
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid" 2>/dev/null
      log "process $pid exited (status $?) before logging '$word'; its output:"
      strip_ansi <"$file" | tail -n 40 | sed 's/^/    | /'
      return 1
    fi
    sleep 0.1
  done
  log "no '$word' in $file after $secs s; its output:"
  strip_ansi <"$file" | tail -n 40 | sed 's/^/    | /'
  return 1
}

# Server log position, to show only what a scenario caused.
log_mark() { wc -l <"$SERVER_LOG" | tr -d ' '; }

# show_server_log_since MARK [MAX_LINES]
show_server_log_since() {
  local mark="$1" max="${2:-60}"
  echo "    server log (new lines, last $max at most):"
  tail -n +"$((mark + 1))" "$SERVER_LOG" | strip_ansi | tail -n "$max" | sed 's/^/    | /'
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "    !! the server process $SERVER_PID is no longer running"
  fi
}

# record_results FILE: counts the "PASS x" / "FAIL x: why" lines that a helper
# program printed (already shown to the user) as results of this script.
record_results() {
  local word name
  while read -r word name; do
    name="${name%%:*}"
    case "$word" in
      PASS) _INTEROP_PASSED=$((_INTEROP_PASSED + 1)) ;;
      FAIL) _INTEROP_FAILED=$((_INTEROP_FAILED + 1)) ;;
      *) continue ;;
    esac
    if [ -n "${INTEROP_RESULTS:-}" ]; then
      printf '%s %s\n' "$word" "$name" >>"$INTEROP_RESULTS"
    fi
  done < <(grep -E '^(PASS|FAIL) ' "$1")
}

# stop_server_scenario SIGNAL: the server must exit with status 0 within 10 s
# of SIGNAL (the contract: `serve` runs until SIGINT or SIGTERM).
stop_server_scenario() {
  local sig="$1" name i rc
  name="exits-on-$(tr '[:upper:]' '[:lower:]' <<<"$sig")"
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    fail "$name" "the server was not running any more"
    return
  fi
  local mark
  mark=$(log_mark)
  kill -"$sig" "$SERVER_PID"
  for i in $(seq 1 100); do
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$SERVER_PID" 2>/dev/null; then
    fail "$name" "still running 10 s after $sig"
    show_server_log_since "$mark" 20
    return
  fi
  wait "$SERVER_PID"
  rc=$?
  if [ "$rc" -eq 0 ]; then
    pass "$name" "exit status 0"
  else
    fail "$name" "exit status $rc after $sig"
    show_server_log_since "$mark" 20
  fi
}
