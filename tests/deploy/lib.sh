# Shared by tests/deploy/systemd.sh and tests/deploy/ansible.sh (sourced, not run): logging,
# the package build, and a real systemd booted in its own PID, mount and network namespaces.
#
# The namespaced systemd shares the machine's file system (dpkg writes /usr/bin, /etc and
# /var/lib/dpkg), so the scripts take one lock and never run at the same time; each purges
# what it installed on exit. Its /tmp and /var/tmp are private tmpfs mounts: its boot-time
# clean-up must not empty the machine's.
#
# Before sourcing, set: repo (the checkout), name (the log prefix).

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}
started=$(date +%s)
since="@$started"   # the namespaced journal is on the shared disk: only this run's lines
upid=""
sdpid=""

log() { printf '[%s %3ss] %s\n' "$name" "$(($(date +%s) - started))" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (dpkg, unshare, nsenter)"

# One deployment test at a time on this machine (fd 9 stays open until the script exits).
exec 9>/run/lock/eeaturn-deploy-test.lock
flock -w 3600 9 || die "another deployment test holds /run/lock/eeaturn-deploy-test.lock"

inside() { nsenter -t "$sdpid" -a "$@"; }
inside_t() { local limit=$1; shift; timeout "$limit" nsenter -t "$sdpid" -a "$@"; }

# deploy_apt_install CMD:PKG...: installs each Debian package whose command is missing.
deploy_apt_install() {
  local missing=() pair
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# deploy_package: sets deb to the package, built with cargo-deb (or the last one with
# EEATURN_DEPLOY_SKIP_BUILD=1).
deploy_package() {
  if ! cargo deb --version >/dev/null 2>&1; then
    log "installing cargo-deb"
    cargo install cargo-deb --locked --quiet
  fi
  if [ "${EEATURN_DEPLOY_SKIP_BUILD:-0}" = 1 ]; then
    deb=$(ls -t "$CARGO_TARGET_DIR"/debian/eeaturn_*.deb | head -1)
  else
    log "cargo deb"
    deb=$(cargo deb --locked --strip --output "$CARGO_TARGET_DIR/debian/" 2>/dev/null | tail -1)
  fi
  [ -f "$deb" ] || die "no package built"
  log "package: $deb ($(du -h "$deb" | cut -f1))"
}

# deploy_boot OUT: boots systemd in new namespaces (its console to OUT), sets sdpid, brings up
# loopback and masks the machine's services the tests do not need. `mount --make-rshared /`
# (inside the new, already private mount namespace, so nothing reaches the machine's mounts)
# lets systemd's per-service mounts propagate: without it, a service's
# $CREDENTIALS_DIRECTORY is an empty root-only directory and LoadCredential= cannot work.
deploy_boot() {
  log "booting systemd in new PID, mount and network namespaces"
  unshare --fork --pid --mount --net --uts --propagation private --mount-proc -- /bin/sh -c \
    'mount --make-rshared / && mount -t tmpfs tmpfs /tmp && mount -t tmpfs tmpfs /var/tmp && exec /lib/systemd/systemd --system' \
    >"$1" 2>&1 &
  upid=$!
  local state=""
  for _ in $(seq 1 100); do
    # ps fails while unshare has not forked yet: under `set -e -o pipefail` that must not end
    # the script (it did, silently, on a loaded machine).
    sdpid=$(ps -o pid= --ppid "$upid" | tr -d ' ' | head -1) || sdpid=""
    [ -n "$sdpid" ] && [ "$(cat "/proc/$sdpid/comm" 2>/dev/null)" = systemd ] && break
    sdpid=""
    sleep 0.1
  done
  [ -n "$sdpid" ] || die "systemd did not start"
  for _ in $(seq 1 150); do
    state=$(inside systemctl is-system-running 2>/dev/null || true)
    case "$state" in running | degraded) break ;; esac
    sleep 0.2
  done
  log "systemd (PID $sdpid on the machine) is $state"
  inside ip link set lo up
  # Runtime masks live in the private /run.
  local unit
  for unit in coturn.service postgresql.service avahi-daemon.service avahi-daemon.socket \
    e2scrub_reap.service cron.service ssh.service prometheus.service; do
    if inside systemctl cat "$unit" >/dev/null 2>&1; then
      inside systemctl mask --runtime --now "$unit" >/dev/null 2>&1 || true
    fi
  done
}

# deploy_poweroff: stops the namespaced systemd (poweroff, then SIGKILL) and reaps unshare.
deploy_poweroff() {
  if [ -n "$sdpid" ] && kill -0 "$sdpid" 2>/dev/null; then
    log "cleanup: powering the namespaced systemd off"
    timeout 10 nsenter -t "$sdpid" -a systemctl poweroff >/dev/null 2>&1
    for _ in $(seq 1 100); do kill -0 "$sdpid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$sdpid" 2>/dev/null && kill -KILL "$sdpid"
  fi
  if [ -n "$upid" ]; then
    # unshare --fork ignores SIGTERM while its child runs, and a namespace's init ignores
    # signals from outside but SIGKILL: kill the child (whatever systemd got to), then reap.
    pkill -KILL -P "$upid" 2>/dev/null
    kill -0 "$upid" 2>/dev/null && kill "$upid"
    wait "$upid" 2>/dev/null
  fi
  return 0
}

# uclient MESSAGES ARGS...: one coturn client in Germany (127.0.1.1) relaying MESSAGES to the
# echo peer in France (127.0.2.1:3480); ARGS are the credentials and the server, e.g.
# `-W SECRET -p 3478 127.0.0.1`. Prints its totals line.
uclient() {
  local n=$1
  shift
  timeout 60 nsenter -t "$sdpid" -a turnutils_uclient -L 127.0.1.1 -e 127.0.2.1 -r 3480 \
    -c -m 1 -n "$n" -l 100 -z 20 "$@" 2>&1 | grep 'tot_send_msgs' | tail -1
}

# check_relayed LINE WHAT: at least 90 % of the messages came back through the relay.
check_relayed() {
  local sent recv
  sent=$(sed -n 's/.*tot_send_msgs=\([0-9]*\).*/\1/p' <<<"$1")
  recv=$(sed -n 's/.*tot_recv_msgs=\([0-9]*\).*/\1/p' <<<"$1")
  [ -n "$sent" ] && [ "${recv:-0}" -gt 0 ] && [ "$recv" -ge $((sent * 9 / 10)) ] \
    || die "$2: relayed too little: '$1'"
  log "$2: $1"
}
