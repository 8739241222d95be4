#!/usr/bin/env bash
# The Debian package and the hardened unit under a real systemd (issue 15).
#
# Builds the package with cargo-deb, lints it, boots systemd in its own PID, mount and network
# namespaces (private /tmp and /var/tmp first: its boot clean-up must not empty the machine's),
# installs the package inside, writes a loopback config and then checks:
#   1. `systemctl start eeaturn` returns once the relay sent READY=1 (Type=notify, STATUS=);
#      the unit grants no capabilities, so relay.offload's default "auto" logs one line
#      naming the missing CAP_BPF and CAP_NET_ADMIN and the relay runs in user space;
#   2. coturn's turnutils_uclient relays through it (DE client 127.0.1.1 -> FR peer 127.0.2.1);
#   3. `eeaturn secret rotate` + `systemctl reload`: credentials of the new secret relay;
#   4. the journal holds no client or peer address and no secret;
#   5. `systemd-analyze security eeaturn.service` rates it 1.5 or lower;
#   6. `systemctl stop` drains (a running call keeps relaying) and the relay exits 0;
#   7. the evidence verifies; `dpkg --purge` removes the package.
# The namespaced systemd shares the file system: dpkg writes /usr/bin, /etc/eeaturn,
# /lib/systemd/system and /var/lib/dpkg; everything is purged on exit, success or not.
#
# Usage (as root, from anywhere): bash tests/deploy/systemd.sh
# EEATURN_DEPLOY_SKIP_BUILD=1 reuses the last package in $CARGO_TARGET_DIR/debian.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
repo=$PWD
name=deploy
# shellcheck source=tests/deploy/lib.sh
. tests/deploy/lib.sh

deploy_apt_install turnutils_uclient:coturn lintian:lintian

# --- the package -----------------------------------------------------------------------------
deploy_package
log "lintian (errors fail; warnings are listed in docs/operations.md)"
lintian_out=$(lintian --fail-on error "$deb") || die "lintian reports errors:
$lintian_out"
printf '%s\n' "$lintian_out" | sed 's/^/  lintian: /' >&2

# --- the namespaced systemd ------------------------------------------------------------------
work="$CARGO_TARGET_DIR/deploy-test"   # not /tmp: that is private inside
rm -rf "$work"
mkdir -p "$work"
user_existed=0
getent passwd eeaturn >/dev/null && user_existed=1
[ -e /var/lib/eeaturn ] && die "/var/lib/eeaturn exists already: not a clean machine"
installed=0

cleanup() {
  local rc=$?
  set +e
  if [ -n "$sdpid" ] && [ "$rc" != 0 ]; then
    nsenter -t "$sdpid" -a journalctl -u eeaturn --since "$since" --no-pager -o cat >"$work/journal.txt" 2>&1
  fi
  if [ -n "$sdpid" ] && [ "$installed" = 1 ]; then
    log "cleanup: purging the package"
    timeout 120 nsenter -t "$sdpid" -a dpkg --purge eeaturn >/dev/null 2>&1 \
      || timeout 120 dpkg --purge eeaturn >/dev/null 2>&1
  fi
  deploy_poweroff
  # What the installed relay left on the shared file system: its evidence (kept by a purge
  # on purpose) and its system user, if this test created it.
  rm -rf /var/lib/eeaturn /var/lib/private/eeaturn
  [ "$user_existed" = 0 ] && getent passwd eeaturn >/dev/null && userdel eeaturn 2>/dev/null
  [ "$user_existed" = 0 ] && getent group eeaturn >/dev/null && groupdel eeaturn 2>/dev/null
  if [ "$rc" = 0 ]; then
    log "PASS in $(($(date +%s) - started)) s"
  else
    log "FAILED (exit $rc); the relay's journal is in $work/journal.txt if it got that far"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

deploy_boot "$work/systemd.out"

# --- install ---------------------------------------------------------------------------------
log "dpkg -i"
installed=1
inside_t 120 dpkg -i "$deb" >"$work/dpkg.out" 2>&1 || die "dpkg -i failed: $(cat "$work/dpkg.out")"
for f in /usr/bin/eeaturn /lib/systemd/system/eeaturn.service /etc/eeaturn/eeaturn.toml \
  /usr/share/eeaturn/geo/world-country.mmdb /usr/share/doc/eeaturn/operations.md; do
  [ -e "$f" ] || die "the package did not install $f"
done
[ "$(stat -c '%U:%G %a' /etc/eeaturn/hmac-secret)" = "root:eeaturn 640" ] || die "hmac-secret mode"
[ "$(stat -c '%U %a' /etc/eeaturn/evidence.key)" = "root 600" ] || die "evidence.key mode"

# A loopback configuration in the test world (geo/README.md): 127.0.1.x is Germany,
# 127.0.2.x France. The conffile is replaced, so the purge removes this one.
cat >/etc/eeaturn/eeaturn.toml <<'EOF'
[server]
realm = "eeaturn.test"
listen = ["udp://127.0.0.1:3478", "tcp://127.0.0.1:3478"]
drain_timeout = "30s"
alternate_servers = ["127.0.0.2:3478"]

[auth]
secret_file = "/etc/eeaturn/hmac-secret"

[relay]
addresses = ["127.0.0.1"]
port_range = "40000-40999"

[geo]
country_db = "/usr/share/eeaturn/geo/world-country.mmdb"
asn_db = "/usr/share/eeaturn/geo/world-asn.mmdb"
max_age = "36500d"

[policy]
deny_asns = [9009]

[peers]
# TEST SETTING: loopback peers, as config/dev.toml; never in production.
dangerous_allow = ["127.0.0.0/8"]

[log]
level = "info"

[evidence]
enabled = true
directory = "/var/lib/eeaturn/evidence"
node_id = "deploy-test"
# This test reads the key from its file (group eeaturn below); tests/deploy/ansible.sh runs
# the relay with every secret as a credential (the unit's LoadCredential=), as on a host.
signing_key_file = "/etc/eeaturn/evidence.key"
EOF
chgrp eeaturn /etc/eeaturn/evidence.key
chmod 0640 /etc/eeaturn/evidence.key
old_secret=$(head -1 /etc/eeaturn/hmac-secret)
inside eeaturn config check --config /etc/eeaturn/eeaturn.toml >/dev/null 2>&1 \
  || log "(config check without the credential fails as expected: the signing key is systemd's)"

# An echo peer in France.
inside systemd-run --quiet --unit=echo-peer /usr/bin/turnutils_peer -L 127.0.2.1 -p 3480 >/dev/null

# --- 1. start: active only after READY=1 -----------------------------------------------------
log "systemctl start eeaturn"
inside_t 90 systemctl start eeaturn.service || die "start failed: $(inside journalctl -u eeaturn --since "$since" --no-pager -o cat 2>&1 | tail -20)"
show() { inside systemctl show -p "$1" --value eeaturn.service; }
[ "$(show Type)" = notify ] || die "Type is $(show Type)"
[ "$(show ActiveState)" = active ] || die "ActiveState is $(show ActiveState)"
status=$(show StatusText)
case "$status" in *allocations*) ;; *) die "no STATUS= from the relay: '$status'" ;; esac
[ "$(show WatchdogUSec)" != 0 ] || die "no watchdog"
# The start job completed only after READY=1: the relay's "ready" line precedes "Started".
inside journalctl -u eeaturn --since "$since" --no-pager -o cat >"$work/journal.txt"
ready_line=$(grep -n ' ready' "$work/journal.txt" | head -1 | cut -d: -f1)
started_line=$(grep -n '^Started ' "$work/journal.txt" | head -1 | cut -d: -f1)
[ -n "$ready_line" ] && [ -n "$started_line" ] && [ "$ready_line" -lt "$started_line" ] \
  || die "systemd reported the start before the relay was ready"
log "active after READY=1; STATUS=$status"
offload_lines=$(grep 'kernel fast path' "$work/journal.txt" || true)
[ "$(grep -c . <<<"$offload_lines")" = 1 ] || die "not one line about the kernel fast path: '$offload_lines'"
grep -q 'unavailable.*CAP_BPF and CAP_NET_ADMIN' <<<"$offload_lines" || die "the fast path line does not name the capabilities: $offload_lines"
# MainPID is a PID of the namespaced systemd's PID namespace: read its /proc from inside.
[ "$(inside awk '/^CapEff:/ { print $2 }' "/proc/$(show MainPID)/status")" = 0000000000000000 ] \
  || die "the packaged unit gave the relay capabilities"
log "offload auto without capabilities: $offload_lines"

# --- 2. relay with coturn's client ------------------------------------------------------------
check_relayed "$(uclient 20 -W "$old_secret" -p 3478 127.0.0.1)" "relay"

# --- 3. reload with a rotated secret ----------------------------------------------------------
inside eeaturn secret rotate --config /etc/eeaturn/eeaturn.toml >/dev/null
new_secret=$(head -1 /etc/eeaturn/hmac-secret)
[ "$new_secret" != "$old_secret" ] || die "the secret did not rotate"
inside_t 30 systemctl reload eeaturn.service || die "reload failed"
# ExecReload= sends SIGHUP and returns (Type=notify-reload, which waits, needs systemd 253).
for _ in $(seq 1 50); do
  inside journalctl -u eeaturn --since "$since" --no-pager -o cat | grep -q 'reloaded secrets on SIGHUP.*secrets=2' && break
  sleep 0.2
done
inside journalctl -u eeaturn --since "$since" --no-pager -o cat | grep -q 'reloaded secrets on SIGHUP.*secrets=2' \
  || die "the reload did not put both secrets in force"
[ "$(show ActiveState)" = active ] || die "not active after the reload"
check_relayed "$(uclient 20 -W "$new_secret" -p 3478 127.0.0.1)" "relay with the rotated secret"

# --- 5. exposure ------------------------------------------------------------------------------
exposure=$(inside systemd-analyze security eeaturn.service --no-pager | sed -n 's/.*Overall exposure level for eeaturn.service: \([0-9.]*\).*/\1/p')
[ -n "$exposure" ] || die "no exposure level"
awk -v e="$exposure" 'BEGIN { exit !(e <= 1.5) }' || die "exposure $exposure > 1.5"
log "systemd-analyze security: $exposure"

# --- 6. stop: drains while a call runs, exits 0 -----------------------------------------------
log "a call in progress, then systemctl stop"
(uclient 150 -W "$new_secret" -p 3478 127.0.0.1 >"$work/during-drain.txt") &
call=$!
sleep 8   # the client starts after a random 1-6 s delay
stop_start=$(date +%s)
inside_t 120 systemctl stop eeaturn.service || die "stop failed"
wait "$call" || true
log "stopped after $(($(date +%s) - stop_start)) s"
[ "$(show ExecMainStatus)" = 0 ] || die "ExecMainStatus=$(show ExecMainStatus)"
[ "$(show Result)" = success ] || die "Result=$(show Result)"
check_relayed "$(cat "$work/during-drain.txt")" "the call across the drain"
inside journalctl -u eeaturn --since "$since" --no-pager -o cat >"$work/journal.txt"
grep -q 'draining' "$work/journal.txt" || die "no drain in the journal"

# --- 4. the journal: no client or peer address, no secret --------------------------------------
ipv4='\b([0-9]{1,3}\.){3}[0-9]{1,3}\b'
ipv6='\b([0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}\b|\b[0-9a-fA-F]{1,4}(:[0-9a-fA-F]{1,4}){0,6}::([0-9a-fA-F]{1,4}(:[0-9a-fA-F]{1,4}){0,6})?\b|(^|[^0-9A-Za-z:])::[0-9a-fA-F]{1,4}\b'
# The relay's own listener and relay address (configuration, not personal data) may appear.
leaks=$(grep -oE "$ipv4|$ipv6" "$work/journal.txt" | grep -vx '127\.0\.0\.1' || true)
[ -z "$leaks" ] || die "IP addresses in the journal: $(sort -u <<<"$leaks" | tr '\n' ' ')"
for s in "$old_secret" "$new_secret"; do
  ! grep -qF "$s" "$work/journal.txt" || die "a secret is in the journal"
done
log "journal: $(wc -l <"$work/journal.txt") lines, no client/peer address, no secret"

# --- 7. evidence, purge -----------------------------------------------------------------------
inside eeaturn evidence verify --trust /etc/eeaturn/evidence.pub /var/lib/eeaturn/evidence \
  >"$work/verify.txt" 2>&1 || die "evidence does not verify: $(tail -5 "$work/verify.txt")"
grep -rqE '"reason":"(drained|drain-timeout)"' /var/lib/eeaturn/evidence \
  || die "no node-stopped record with a drain reason"
log "evidence verifies: $(tail -1 "$work/verify.txt")"

inside_t 120 dpkg --purge eeaturn >"$work/purge.out" 2>&1 || die "purge failed: $(cat "$work/purge.out")"
installed=0
for f in /usr/bin/eeaturn /lib/systemd/system/eeaturn.service /etc/eeaturn /usr/share/eeaturn; do
  [ ! -e "$f" ] || die "$f is left after the purge"
done
log "purged"
