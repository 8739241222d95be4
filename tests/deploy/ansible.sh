#!/usr/bin/env bash
# The Ansible role (ansible/roles/eeaturn) converged for real against a namespaced systemd
# (issue 15; tests/deploy/lib.sh boots it the way tests/deploy/systemd.sh does).
#
#   1. ansible-lint (production profile) over ansible/, with pinned ansible-core and
#      ansible-lint in a venv (PyPI);
#   2. the package built with cargo-deb; systemd booted in its own PID, mount and network
#      namespaces (private /tmp and /var/tmp);
#   3. `ansible-playbook -c local ansible/site.yml` inside it: the package from the .deb, the
#      test-world databases copied (geo source "copy": no internet), TLS from files, the API
#      on loopback, secrets as systemd credentials; no secret in Ansible's output;
#   4. a second run reports changed=0;
#   5. the relay the role installed and started: credentials passed by LoadCredential= (the
#      config holds none), coturn's turnutils_uclient relays DE -> FR over UDP with the REST
#      secret, over TLS, and with credentials issued by the API for the role's API key;
#   6. `nft list ruleset` holds the role's rules (listener ports, relay range, nothing else),
#      the journald drop-in is in force (journald restarted after it, MaxRetentionSec=90day);
#   7. a secret rotation through the role restarts the relay (systemd 252 copies credentials
#      at start only), which drains and comes back with both secrets;
#   8. with eeaturn_rest_secret_delivery=file a rotation only reloads (same process);
#   9. a config that fails `eeaturn config check` (template validate:) is not installed and
#      the relay runs on; 10. rolling-restart.yml restarts the relay;
#  11. eeaturn_offload=auto installs the drop-in offload.conf and the lo forwarding sysctl
#      (set in the namespace): the restarted relay holds CAP_BPF and CAP_NET_ADMIN, attaches its XDP program to the namespace's lo and coturn's
#      client relays through it; eeaturn_offload=off removes the drop-in and the capabilities
#      (the runs before it, with the role's default "off", left the unit without any);
#  12. the journal holds no client or peer address and no secret.
# Everything the role wrote on the shared file system is removed on exit, success or not.
#
# Usage (as root): bash tests/deploy/ansible.sh
# EEATURN_DEPLOY_SKIP_BUILD=1 reuses the last package in $CARGO_TARGET_DIR/debian.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
repo=$PWD
name=ansible
# shellcheck source=tests/deploy/lib.sh
. tests/deploy/lib.sh

# Versions that install here (Python 3.11); bump them together with a lint run.
readonly ANSIBLE_CORE=2.17.7
readonly ANSIBLE_LINT=24.12.2

# --- tools -----------------------------------------------------------------------------------
# nftables: the role installs it with apt, but the namespaced systemd has no network, so the
# package must be on the machine before (apt then finds it installed).
deploy_apt_install turnutils_uclient:coturn nft:nftables curl:curl
venv="$CARGO_TARGET_DIR/ansible-venv"
installed_versions=$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("ansible-core"), m.version("ansible-lint"))' 2>/dev/null || true)
if [ "$installed_versions" != "$ANSIBLE_CORE $ANSIBLE_LINT" ]; then
  log "pip install ansible-core==$ANSIBLE_CORE ansible-lint==$ANSIBLE_LINT"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "ansible-core==$ANSIBLE_CORE" "ansible-lint==$ANSIBLE_LINT"
fi
export PATH="$venv/bin:$PATH"
export ANSIBLE_CONFIG="$repo/ansible/ansible.cfg" ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0

# --- 1. lint ---------------------------------------------------------------------------------
log "ansible-lint (profile production)"
(cd ansible && NO_COLOR=1 ansible-lint --nocolor) >"$CARGO_TARGET_DIR/ansible-lint.txt" 2>&1 \
  || die "ansible-lint: $(tail -30 "$CARGO_TARGET_DIR/ansible-lint.txt")"
log "ansible-lint: $(tail -1 "$CARGO_TARGET_DIR/ansible-lint.txt")"

# --- 2. package and systemd ------------------------------------------------------------------
deploy_package
work="$CARGO_TARGET_DIR/ansible-test"   # not /tmp: that is private inside
rm -rf "$work"
mkdir -p -m 0700 "$work" "$work/home"
[ -e /var/lib/eeaturn ] && die "/var/lib/eeaturn exists already: not a clean machine"
[ -e /etc/eeaturn ] && die "/etc/eeaturn exists already: not a clean machine"
user_existed=0
getent passwd eeaturn >/dev/null && user_existed=1
# /etc/nftables.conf and nftables.service belong to the machine: restored on exit.
nft_conf_existed=0
[ -e /etc/nftables.conf ] && nft_conf_existed=1 && cp -p /etc/nftables.conf "$work/nftables.conf.orig"
nft_enabled=$(systemctl is-enabled nftables.service 2>/dev/null || true)
wants=(/etc/systemd/system/multi-user.target.wants/eeaturn.service
  /etc/systemd/system/timers.target.wants/eeaturn-geoupdate.timer
  /etc/systemd/system/sysinit.target.wants/nftables.service)
wants_before=()
for w in "${wants[@]}"; do [ -e "$w" ] || [ -L "$w" ] && wants_before+=("$w"); done
installed=0

cleanup() {
  local rc=$?
  set +e
  if [ -n "$sdpid" ] && [ "$rc" != 0 ]; then
    nsenter -t "$sdpid" -a journalctl -u eeaturn --since "$since" --no-pager -o cat >"$work/journal.txt" 2>&1
  fi
  if [ -n "$sdpid" ] && [ "$installed" = 1 ]; then
    log "cleanup: stopping the relay, purging the package"
    timeout 60 nsenter -t "$sdpid" -a systemctl kill -s SIGINT eeaturn.service >/dev/null 2>&1
    timeout 120 nsenter -t "$sdpid" -a dpkg --purge eeaturn >/dev/null 2>&1 \
      || timeout 120 dpkg --purge eeaturn >/dev/null 2>&1
  fi
  deploy_poweroff
  # What the role and the relay wrote on the shared file system.
  rm -rf /etc/eeaturn /etc/systemd/system/eeaturn.service.d \
    /etc/systemd/system/eeaturn-geoupdate.service.d /etc/nftables.d/eeaturn.nft \
    /etc/systemd/journald.conf.d/eeaturn.conf /etc/sysctl.d/60-eeaturn-offload.conf /var/cache/eeaturn \
    /usr/local/sbin/eeaturn-acme-deploy-hook /var/lib/eeaturn /var/lib/private/eeaturn
  rmdir /etc/nftables.d /etc/systemd/journald.conf.d 2>/dev/null
  local w keep
  for w in "${wants[@]}"; do
    keep=0
    for k in "${wants_before[@]}"; do [ "$k" = "$w" ] && keep=1; done
    [ "$keep" = 0 ] && rm -f "$w"
  done
  if [ "$nft_conf_existed" = 1 ]; then
    cp -p "$work/nftables.conf.orig" /etc/nftables.conf
  else
    rm -f /etc/nftables.conf
  fi
  [ "$user_existed" = 0 ] && getent passwd eeaturn >/dev/null && userdel eeaturn 2>/dev/null
  [ "$user_existed" = 0 ] && getent group eeaturn >/dev/null && groupdel eeaturn 2>/dev/null
  rm -f "$work/secrets.json"
  if [ "$rc" = 0 ]; then
    log "PASS in $(($(date +%s) - started)) s (nftables.service was '${nft_enabled:-absent}')"
  else
    log "FAILED (exit $rc); the playbook output and the relay's journal are in $work"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

deploy_boot "$work/systemd.out"

# --- 3. converge -----------------------------------------------------------------------------
# Test secrets, made here and given to Ansible in a root-only file (as a vault would).
hex() { od -An -tx1 -N32 /dev/urandom | tr -d ' \n'; }
secret1=$(hex)
secret2=$(hex)
secret3=$(hex)
api_key="ci_$(hex)"
api_hash=$(printf '%s' "$api_key" | sha256sum | cut -d' ' -f1)
write_secrets() { # SECRETS_JSON_ARRAY
  (umask 077 && cat >"$work/secrets.json" <<EOF
{"eeaturn_rest_secrets": $1,
 "eeaturn_api_keys": [{"name": "ci-signaling", "scope": "credentials", "sha256": "$api_hash"}]}
EOF
  )
}
write_secrets "[\"$secret1\"]"

# One node of the example fleet, on loopback in the test world (geo/README.md): 127.0.0.1
# and 127.0.1.x are Germany, 127.0.2.x France.
cat >"$work/inventory.yml" <<EOF
eeaturn:
  hosts:
    fra-1:
      ansible_connection: local
      ansible_python_interpreter: /usr/bin/python3
      ansible_become: false
      eeaturn_package_source: deb
      eeaturn_package_deb: $deb
      eeaturn_realm: eeaturn.test
      eeaturn_listen: ["udp://127.0.0.1:3478", "tcp://127.0.0.1:3478", "tls://127.0.0.1:5349"]
      eeaturn_relay_addresses: [127.0.0.1]
      eeaturn_relay_port_range: "40000-40999"
      eeaturn_drain_timeout: 20s
      eeaturn_alternate_servers: ["127.0.0.2:3478"]
      eeaturn_deny_asns: [9009]
      # TEST SETTING: loopback peers; never in production.
      eeaturn_peers_dangerous_allow: [127.0.0.0/8]
      eeaturn_site: Frankfurt am Main, DE (loopback test)
      eeaturn_geo_source: copy
      eeaturn_geo_country_db_src: $repo/geo/testdata/world-country.mmdb
      eeaturn_geo_asn_db_src: $repo/geo/testdata/world-asn.mmdb
      eeaturn_geo_max_age: 36500d
      eeaturn_tls_source: files
      eeaturn_tls_certificate_src: $repo/config/dev-cert.pem
      eeaturn_tls_private_key_src: $repo/config/dev-key.pem
      eeaturn_api_listen: http://127.0.0.1:8080
      eeaturn_api_uris: ["turn:127.0.0.1:3478?transport=udp"]
      eeaturn_evidence_public_key_fetch_dir: $work/keys
EOF

# playbook N PLAYBOOK [ARGS...]: runs ansible/PLAYBOOK inside (output in converge-N.txt),
# sets rc and recap, and fails if a secret shows in the output.
playbook() {
  local n=$1 book=$2
  shift 2
  log "ansible-playbook $book, run $n"
  rc=0
  inside_t 900 env ANSIBLE_CONFIG="$ANSIBLE_CONFIG" ANSIBLE_NOCOLOR=1 HOME="$work/home" \
    ANSIBLE_REMOTE_TMP="$work/home/.ansible/tmp" \
    "$venv/bin/ansible-playbook" -c local -i "$work/inventory.yml" -e "@$work/secrets.json" \
    "$@" "$repo/ansible/$book" >"$work/converge-$n.txt" 2>&1 || rc=$?
  recap=$(grep -E '^fra-1 +:' "$work/converge-$n.txt" | tail -1)
  log "run $n: ${recap:-no recap} (exit $rc)"
  for s in "$secret1" "$secret2" "$secret3" "$api_key"; do
    ! grep -qF "$s" "$work/converge-$n.txt" || die "a secret is in Ansible's output of run $n"
  done
}
converge() { # N [ARGS...]: site.yml, which must succeed
  playbook "$1" site.yml "${@:2}"
  [ "$rc" = 0 ] || die "run $1 failed: $(grep -E 'fatal|FAILED|ERROR|msg' "$work/converge-$1.txt" | tail -15)"
}
installed=1
converge 1
grep -qE 'failed=0 ' <<<"$recap" || die "run 1 failed a task"

# --- 4. idempotence --------------------------------------------------------------------------
converge 2
grep -qE ' changed=0 ' <<<"$recap" || die "the second run changed something: $(grep -B3 '^changed' "$work/converge-2.txt" | head -30)"
grep -qE 'failed=0 ' <<<"$recap" || die "run 2 failed a task"

# --- 5. the relay the role installed -----------------------------------------------------------
show() { inside systemctl show -p "$1" --value eeaturn.service; }
[ "$(show ActiveState)" = active ] || die "eeaturn is $(show ActiveState)"
[ "$(inside systemctl is-enabled eeaturn.service)" = enabled ] || die "eeaturn is not enabled"
# The credentials systemd copied for the running relay (its $CREDENTIALS_DIRECTORY).
creds=$(inside ls /run/credentials/eeaturn.service | sort | tr '\n' ' ')
[ "$creds" = "api-keys evidence-signing-key hmac-secret " ] || die "the relay's credentials are '$creds'"
for f in /etc/eeaturn/credentials/hmac-secret /etc/eeaturn/credentials/api-keys /etc/eeaturn/evidence.key; do
  [ "$(stat -c '%U:%G %a' "$f")" = "root:root 600" ] || die "$f is $(stat -c '%U:%G %a' "$f")"
done
[ "$(stat -c '%a' /etc/eeaturn/credentials)" = 700 ] || die "the credentials directory is not 0700"
for s in "$secret1" "$api_key" "$api_hash"; do
  ! grep -qF "$s" /etc/eeaturn/eeaturn.toml || die "a secret or key hash is in the config"
done
grep -q '^# Ansible managed' /etc/eeaturn/eeaturn.toml || die "the config is not the role's"
[ -s "$work/keys/fra-1.pub" ] || die "the evidence public key was not fetched"
log "active, enabled; credentials: $creds"

inside systemd-run --quiet --unit=echo-peer /usr/bin/turnutils_peer -L 127.0.2.1 -p 3480 >/dev/null
check_relayed "$(uclient 20 -W "$secret1" -p 3478 127.0.0.1)" "UDP with the REST secret"
check_relayed "$(uclient 20 -W "$secret1" -t -S -p 5349 127.0.0.1)" "TLS with the REST secret"
issued=$(printf 'Authorization: Bearer %s\n' "$api_key" \
  | inside_t 20 curl -sSf -X POST -H @- -H 'Content-Type: application/json' -d '{"user":"ci"}' \
    http://127.0.0.1:8080/v1/credentials) || die "the API refused the role's API key"
api_user=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["username"])' <<<"$issued")
api_pass=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["password"])' <<<"$issued")
check_relayed "$(uclient 20 -u "$api_user" -w "$api_pass" -p 3478 127.0.0.1)" "UDP with credentials from the API"

# --- 6. nftables and journald ------------------------------------------------------------------
ruleset=$(inside nft list ruleset)
printf '%s\n' "$ruleset" >"$work/ruleset.txt"
grep -qE 'udp dport 3478 accept comment "eeaturn listeners \(UDP\)"' <<<"$ruleset" \
  || die "no UDP listener rule: $ruleset"
grep -qE 'tcp dport \{ 3478, 5349 \} accept comment "eeaturn listeners \(TCP, TLS, API\)"' <<<"$ruleset" \
  || die "no TCP/TLS listener rule: $ruleset"
grep -qE 'udp dport 40000-40999 accept comment "eeaturn relay ports"' <<<"$ruleset" \
  || die "no relay port rule: $ruleset"
[ "$(grep -c 'eeaturn' <<<"$ruleset")" = 3 ] || die "more eeaturn rules than the three: $ruleset"
! grep -qE 'dport (\{ )?(8080|9464)' <<<"$ruleset" || die "a loopback listener is opened: $ruleset"
[ "$(inside systemctl is-active nftables.service)" = active ] || die "nftables.service is not active"
log "nftables: the listener ports and the relay range, nothing else"
inside systemd-analyze cat-config systemd/journald.conf | grep -qx 'MaxRetentionSec=90day' \
  || die "the journald drop-in is not in journald's configuration"
jstart=$(inside systemctl show -p ActiveEnterTimestampMonotonic --value systemd-journald.service)
boot_s=$(cut -d' ' -f1 </proc/uptime)
dropin_age=$(($(date +%s) - $(stat -c %Y /etc/systemd/journald.conf.d/eeaturn.conf)))
# journald (re)started after the drop-in was written: its start is later than (uptime - age).
awk -v j="$jstart" -v up="$boot_s" -v age="$dropin_age" 'BEGIN { exit !(j / 1e6 >= up - age - 1) }' \
  || die "journald was not restarted after the drop-in was written"
log "journald: MaxRetentionSec=90day in force"

# --- 7. secret rotation: a restart, with drain ---------------------------------------------------
pid_before=$(show MainPID)
write_secrets "[\"$secret2\", \"$secret1\"]"
converge 3
grep -qE ' changed=[1-9]' <<<"$recap" || die "the rotation changed nothing"
grep -q 'RUNNING HANDLER \[eeaturn : Restart eeaturn (drains)\]' "$work/converge-3.txt" \
  || die "the rotation did not restart the relay"
[ "$(show ActiveState)" = active ] || die "eeaturn is $(show ActiveState) after the rotation"
[ "$(show MainPID)" != "$pid_before" ] || die "the relay was not restarted"
inside journalctl -u eeaturn --since "$since" --no-pager -o cat >"$work/journal.txt"
grep -q 'draining' "$work/journal.txt" || die "the restart did not drain"
check_relayed "$(uclient 20 -W "$secret2" -p 3478 127.0.0.1)" "UDP with the new secret"
check_relayed "$(uclient 20 -W "$secret1" -p 3478 127.0.0.1)" "UDP with the old secret, still accepted"

# --- 8. the REST secret as a file: a rotation only reloads -------------------------------------
# Switching the delivery changes the credentials drop-in (a restart); rotating then reloads.
converge 4 -e eeaturn_rest_secret_delivery=file
[ "$(stat -c '%U:%G %a' /etc/eeaturn/hmac-secret)" = "root:eeaturn 640" ] || die "hmac-secret mode"
[ ! -e /etc/eeaturn/credentials/hmac-secret ] || die "the hmac-secret credential is left"
pid_before=$(show MainPID)
write_secrets "[\"$secret3\", \"$secret2\"]"
converge 5 -e eeaturn_rest_secret_delivery=file
grep -q 'RUNNING HANDLER \[eeaturn : Reload eeaturn\]' "$work/converge-5.txt" || die "run 5 did not reload"
! grep -q 'RUNNING HANDLER \[eeaturn : Restart eeaturn' "$work/converge-5.txt" || die "run 5 restarted"
[ "$(show MainPID)" = "$pid_before" ] || die "the relay was restarted for a file secret"
for _ in $(seq 1 50); do
  inside journalctl -u eeaturn --since "$since" --no-pager -o cat | grep -q 'reloaded secrets on SIGHUP.*secrets=2' && break
  sleep 0.2
done
check_relayed "$(uclient 20 -W "$secret3" -p 3478 127.0.0.1)" "UDP with the secret rotated by a reload"

# --- 9. a config that fails `eeaturn config check` is not installed --------------------------------
config_sum=$(sha256sum </etc/eeaturn/eeaturn.toml)
playbook 6 site.yml -e eeaturn_rest_secret_delivery=file -e '{"eeaturn_config_extra": "[limits]\nno_such_key = 1"}'
[ "$rc" != 0 ] || die "a config with an unknown key was accepted"
grep -q "Render the relay's configuration" <<<"$(grep -B3 'fatal' "$work/converge-6.txt")" \
  || die "run 6 failed elsewhere: $(grep -A3 fatal "$work/converge-6.txt" | head -8)"
[ "$(sha256sum </etc/eeaturn/eeaturn.toml)" = "$config_sum" ] || die "the failed config replaced the old one"
[ "$(show ActiveState)" = active ] || die "eeaturn is $(show ActiveState) after a refused config"
log "a config that fails the check was refused; the relay runs on with the old one"

# --- 10. the rolling restart playbook -----------------------------------------------------------
pid_before=$(show MainPID)
playbook 7 rolling-restart.yml
[ "$rc" = 0 ] || die "rolling-restart.yml failed: $(grep -E 'fatal|msg' "$work/converge-7.txt" | tail -5)"
[ "$(show MainPID)" != "$pid_before" ] || die "rolling-restart.yml did not restart the relay"
check_relayed "$(uclient 20 -W "$secret3" -p 3478 127.0.0.1)" "UDP after the rolling restart"

# --- 11. the kernel fast path: capabilities only while eeaturn_offload asks for it ---------------
# CapEff of the relay's main process, as a hex mask; CAP_NET_ADMIN is bit 12, CAP_BPF bit 39.
# MainPID is a PID of the namespaced systemd's PID namespace: read its /proc from inside.
cap_eff() { inside awk '/^CapEff:/ { print $2 }' "/proc/$(show MainPID)/status"; }
[ ! -e /etc/systemd/system/eeaturn.service.d/offload.conf ] || die "offload.conf exists with eeaturn_offload off"
[ "$(cap_eff)" = 0000000000000000 ] || die "the relay holds capabilities without offload: $(cap_eff)"
pid_before=$(show MainPID)
converge 8 -e eeaturn_rest_secret_delivery=file -e eeaturn_offload=auto
grep -q 'RUNNING HANDLER \[eeaturn : Restart eeaturn (drains)\]' "$work/converge-8.txt" \
  || die "eeaturn_offload=auto did not restart the relay"
[ -f /etc/systemd/system/eeaturn.service.d/offload.conf ] || die "no offload.conf with eeaturn_offload=auto"
grep -qx 'offload = "auto"' /etc/eeaturn/eeaturn.toml || die "relay.offload is not auto in the config"
[ "$(show MainPID)" != "$pid_before" ] || die "the relay was not restarted"
[ "$(cap_eff)" = 0000008000001000 ] || die "the relay's capabilities are $(cap_eff), not CAP_BPF CAP_NET_ADMIN"
grep -qx 'net.ipv4.conf.lo.forwarding = 1' /etc/sysctl.d/60-eeaturn-offload.conf \
  || die "no /etc/sysctl.d/60-eeaturn-offload.conf with eeaturn_offload=auto"
[ "$(inside sysctl -n net.ipv4.conf.lo.forwarding)" = 1 ] || die "lo forwarding is not on with eeaturn_offload=auto"
pid_now=$(show MainPID)
offload_lines=$(inside journalctl -u eeaturn --since "$since" _PID="$pid_now" --no-pager -o cat | grep 'kernel fast path' || true)
[ "$(grep -c . <<<"$offload_lines")" = 1 ] || die "not one line about the fast path: '$offload_lines'"
grep -q 'kernel fast path on' <<<"$offload_lines" || die "the fast path is not on: $offload_lines"
inside ip link show lo | grep -q 'xdpgeneric' || die "no XDP program on the namespace's lo"
check_relayed "$(uclient 20 -W "$secret3" -p 3478 127.0.0.1)" "UDP through the kernel fast path"
# The kernel's counters are folded twice a second and the metrics set once a second.
for _ in $(seq 1 10); do
  relayed_in_kernel=$(inside_t 10 curl -sS http://127.0.0.1:9464/metrics | awk '/^eeaturn_relayed_in_kernel_packets_total/ { n += $2 } END { print n + 0 }')
  [ "$relayed_in_kernel" -gt 0 ] && break
  sleep 0.5
done
[ "$relayed_in_kernel" -gt 0 ] || die "the kernel relayed nothing (eeaturn_relayed_in_kernel_packets_total)"
log "offload auto: CAP_BPF CAP_NET_ADMIN, XDP on lo, $relayed_in_kernel packets relayed in the kernel"
converge 9 -e eeaturn_rest_secret_delivery=file
[ ! -e /etc/systemd/system/eeaturn.service.d/offload.conf ] || die "offload.conf left with eeaturn_offload off"
[ ! -e /etc/sysctl.d/60-eeaturn-offload.conf ] || die "60-eeaturn-offload.conf left with eeaturn_offload off"
[ "$(cap_eff)" = 0000000000000000 ] || die "the relay kept capabilities after offload off: $(cap_eff)"
! inside ip link show lo | grep -q 'xdp' || die "an XDP program is left on lo"
check_relayed "$(uclient 20 -W "$secret3" -p 3478 127.0.0.1)" "UDP in user space again"
log "offload off: the drop-in and the capabilities are gone"

# --- 12. the journal: no client or peer address, no secret ----------------------------------------
inside journalctl -u eeaturn --since "$since" --no-pager -o cat >"$work/journal.txt"
ipv4='\b([0-9]{1,3}\.){3}[0-9]{1,3}\b'
leaks=$(grep -oE "$ipv4" "$work/journal.txt" | grep -vx '127\.0\.0\.[12]' || true)
[ -z "$leaks" ] || die "IP addresses in the journal: $(sort -u <<<"$leaks" | tr '\n' ' ')"
for s in "$secret1" "$secret2" "$secret3" "$api_key"; do
  ! grep -qF "$s" "$work/journal.txt" || die "a secret is in the journal"
done
log "journal: $(wc -l <"$work/journal.txt") lines, no client/peer address, no secret"
