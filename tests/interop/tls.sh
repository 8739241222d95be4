#!/usr/bin/env bash
# Interop: the TLS listener (TURNS) and its bsi profile, seen by testssl.sh and
# openssl s_client.
#
#   bash tests/interop/tls.sh
#
# Starts eeaturn on its own temp config (lib.sh's, with the listeners replaced
# by tls://127.0.0.1:$TLS_PORT and tls://[::1]:$TLS_PORT, default 28349, relay
# ports 30500-30599, and a [tls] table with the committed DEVELOPMENT
# certificate config/dev-cert.pem and groups ["secp256r1", "secp384r1"]), then:
#   - testssl.sh (Debian package, installed when missing) with -p -E -f -P -S
#     -R -C and a JSON report, which must show: only TLS 1.2 and TLS 1.3; only
#     the AES-GCM ECDHE suites of the profile, in the server's order; only the
#     groups prime256v1 and secp384r1 (no X25519, no finite-field groups); no
#     session resumption (no tickets, no session IDs); no client-initiated
#     renegotiation; no compression; no ALPN/NPN; the extended master secret
#     extension; and the development certificate;
#   - openssl s_client: TLS 1.3 and TLS 1.2 handshakes that verify the
#     certificate (IPv4 and IPv6), and refusals (a TLS alert from the server)
#     for a TLS 1.1 and a TLS 1.0 client, ChaCha20-only clients (TLS 1.3 and
#     1.2), a CBC-only TLS 1.2 client and X25519-only clients;
#   - the groups changed to ["secp384r1"] and SIGHUP: new handshakes offer only
#     P-384 (testssl -f, and a P-256-only client is refused);
#   - the server exits with status 0 on SIGTERM.
# Prints one PASS/FAIL line per check; exits non-zero if any failed. Only
# loopback addresses are used; testssl runs with --nodns none (no DNS
# lookups) and without --phone-out (no CRL/OCSP fetches).
#
# With INTEROP_SERVER=coturn the script is skipped: the profile is eeaturn's.
set -uo pipefail

# shellcheck source=tests/interop/lib.sh
source "$(dirname "$0")/lib.sh"

PORT="${TLS_PORT:-28349}"
RELAY_RANGE="${TLS_RELAY_RANGE:-30500-30599}"
DEV_CERT="$REPO_ROOT/config/dev-cert.pem"
DEV_KEY="$REPO_ROOT/config/dev-key.pem"
TARGET="127.0.0.1:$PORT"

# What the bsi profile offers with the ECDSA development certificate (testssl's
# JSON ids; the RSA suites xc030/xc02f only appear with an RSA certificate).
EXPECTED_CIPHERS="cipher-tls1_2_xc02b cipher-tls1_2_xc02c cipher-tls1_3_x1301 cipher-tls1_3_x1302"
EXPECTED_ORDER_12="ECDHE-ECDSA-AES256-GCM-SHA384 ECDHE-ECDSA-AES128-GCM-SHA256"
EXPECTED_ORDER_13="TLS_AES_256_GCM_SHA384 TLS_AES_128_GCM_SHA256"

interop_init tls
if [ "$INTEROP_SERVER" != eeaturn ]; then
  log "tls: skipped for INTEROP_SERVER=$INTEROP_SERVER (the TLS profile is eeaturn's)"
  exit 0
fi

# testssl.sh from Debian: the package is "testssl.sh", the command "testssl".
ensure_testssl() {
  if command -v testssl >/dev/null 2>&1 || command -v testssl.sh >/dev/null 2>&1; then
    return 0
  fi
  log "installing testssl.sh from Debian"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -q >/dev/null || return 1
  as_root apt-get install -y -q --no-install-recommends testssl.sh >/dev/null || return 1
}
if ! ensure_testssl; then
  fail setup "could not install testssl.sh"
  exit 1
fi
TESTSSL="$(command -v testssl || command -v testssl.sh)"
for tool in openssl python3; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    fail setup "$tool is missing"
    exit 1
  fi
done

tcp_port_free() {
  command -v ss >/dev/null 2>&1 || return 0
  [ -z "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]
}

# write_tls_config GROUPS: lib.sh's config with TLS listeners only and a [tls]
# table; GROUPS is a TOML array body, e.g. '"secp256r1", "secp384r1"'. (It
# also writes a fresh secret file; nothing here authenticates with it.)
write_tls_config() {
  local groups="$1" tmp
  write_server_config "$WORK" "$PORT" "$RELAY_RANGE"
  tmp="$CONFIG.tmp"
  sed "s|^listen = .*|listen = [\"tls://127.0.0.1:$PORT\", \"tls://[::1]:$PORT\"]|" "$CONFIG" >"$tmp"
  cat >>"$tmp" <<EOF

[tls]
# DEVELOPMENT ONLY certificate (config/make-dev-cert.sh).
certificate = "$DEV_CERT"
private_key = "$DEV_KEY"
groups = [$groups]
EOF
  mv "$tmp" "$CONFIG"
}

start_tls_server() {
  local bin
  bin="$(eeaturn_bin)"
  if [ ! -x "$bin" ]; then
    log "server binary $bin not found (run cargo build, or set EEATURN_BIN)"
    return 1
  fi
  if ! tcp_port_free "$PORT"; then
    log "TCP port $PORT is already in use on this machine:"
    ss -Hltnp "sport = :$PORT" 2>/dev/null || true
    return 1
  fi
  write_tls_config '"secp256r1", "secp384r1"'
  SERVER_LOG="$WORK/server.log"
  log "starting $bin serve --config $CONFIG"
  spawn "$SERVER_LOG" env NO_COLOR=1 "$bin" serve --config "$CONFIG"
  SERVER_PID=$SPAWNED
  wait_for_log "$SERVER_LOG" "$SERVER_PID" 'ready' 30 || return 1
  log "server is ready (pid $SERVER_PID)"
}

if ! start_tls_server; then
  fail setup "the server did not start"
  exit 1
fi

# --- testssl.sh ----------------------------------------------------------------

# run_testssl NAME ARGS...: runs testssl against the listener; the JSON report
# is $WORK/testssl-NAME.json, the text output $WORK/testssl-NAME.log. Sets JSON.
run_testssl() {
  local name="$1" rc
  shift
  JSON="$WORK/testssl-$name.json"
  log "testssl $* $TARGET (report $JSON)"
  timeout 180 "$TESTSSL" --quiet --color 0 --warnings batch --nodns none \
    --connect-timeout 5 --openssl-timeout 10 --jsonfile "$JSON" "$@" "$TARGET" \
    >"$WORK/testssl-$name.log" 2>&1
  rc=$?
  if [ "$rc" -eq 124 ] || [ ! -s "$JSON" ]; then
    fail "testssl-$name" "no report (exit status $rc)"
    tail -n 30 "$WORK/testssl-$name.log" | sed 's/^/    | /'
    return 1
  fi
}

# finding ID: the finding of the first entry with that id in $JSON ("" if none).
finding() {
  python3 - "$JSON" "$1" <<'EOF'
import json, sys
for entry in json.load(open(sys.argv[1])):
    if entry.get("id") == sys.argv[2]:
        print(entry.get("finding", ""))
        break
EOF
}

# ids_matching PREFIX: the sorted ids in $JSON that start with PREFIX, on one line.
ids_matching() {
  python3 - "$JSON" "$1" <<'EOF'
import json, sys
ids = sorted({e.get("id", "") for e in json.load(open(sys.argv[1])) if e.get("id", "").startswith(sys.argv[2])})
print(" ".join(ids))
EOF
}

# expect NAME ID PATTERN: the finding of ID must match the extended regex PATTERN.
expect() {
  local name="$1" id="$2" pattern="$3" value
  value="$(finding "$id")"
  if grep -qE -- "$pattern" <<<"$value"; then
    pass "$name" "$id: $value"
  else
    fail "$name" "$id is '${value}', expected /$pattern/ (see $JSON)"
  fi
}

# same_words A B: the same words, in any order.
same_words() {
  [ "$(tr ' ' '\n' <<<"$1" | sed '/^$/d' | sort | tr '\n' ' ')" = \
    "$(tr ' ' '\n' <<<"$2" | sed '/^$/d' | sort | tr '\n' ' ')" ]
}

if run_testssl full -p -E -f -P -S -R -C; then
  bad=""
  for id in SSLv2 SSLv3 TLS1 TLS1_1; do
    v="$(finding "$id")"
    [[ "$v" == "not offered"* ]] || bad+=" $id='$v'"
  done
  for id in TLS1_2 TLS1_3; do
    v="$(finding "$id")"
    [[ "$v" == "offered"* ]] || bad+=" $id='$v'"
  done
  if [ -z "$bad" ]; then
    pass protocols-only-tls12-tls13 "SSLv2, SSLv3, TLS 1.0, TLS 1.1 not offered; TLS 1.2 and 1.3 offered"
  else
    fail protocols-only-tls12-tls13 "unexpected:$bad"
  fi

  ciphers="$(ids_matching cipher-)"
  if [ "$ciphers" = "$EXPECTED_CIPHERS" ]; then
    pass ciphers-only-aes-gcm-ecdhe "$ciphers"
  else
    fail ciphers-only-aes-gcm-ecdhe "offered: '$ciphers', expected: '$EXPECTED_CIPHERS'"
  fi

  expect server-cipher-order cipher_order '^server'
  expect cipher-order-tls12 cipherorder_TLSv1_2 "^$EXPECTED_ORDER_12\$"
  expect cipher-order-tls13 cipherorder_TLSv1_3 "^$EXPECTED_ORDER_13\$"

  curves="$(finding PFS_ECDHE_curves)"
  dh="$(finding DH_groups)"
  if same_words "$curves" "prime256v1 secp384r1" && { [ -z "$dh" ] || [[ "$dh" != *ffdhe* ]]; }; then
    pass groups-p256-p384 "ECDHE groups: $curves; finite-field groups: ${dh:-none}"
  else
    fail groups-p256-p384 "ECDHE groups '$curves' (expected prime256v1 secp384r1), finite-field '$dh'"
  fi

  expect forward-secrecy PFS '^offered'
  expect no-session-tickets sessionresumption_ticket '^not supported'
  expect no-session-id-resumption sessionresumption_ID '(not supported|no resumption)'
  expect no-client-renegotiation secure_client_renego 'not vulnerable'
  expect no-compression CRIME_TLS '^not vulnerable'
  expect extended-master-secret TLS_extensions 'extended master secret'
  expect no-alpn ALPN '^not offered'
  expect no-npn NPN '^not offered'

  want="$(openssl x509 -in "$DEV_CERT" -noout -fingerprint -sha256 | sed 's/.*=//; s/://g')"
  expect serves-the-configured-certificate cert_fingerprintSHA256 "^$want\$"
fi

# --- openssl s_client ------------------------------------------------------------

# s_client OUT ARGS...: one handshake (stdin closed right away); output in OUT.
s_client() {
  local out="$1"
  shift
  timeout 10 openssl s_client -servername localhost -brief -msg "$@" </dev/null >"$out" 2>&1
}

# accepted NAME PROTOCOL CIPHER GROUP ARGS...: the handshake must succeed with
# these parameters and verify the development certificate.
accepted() {
  local name="$1" proto="$2" cipher="$3" group="$4" out rc why=""
  shift 4
  out="$WORK/s_client-$name.log"
  s_client "$out" -CAfile "$DEV_CERT" -verify_return_error "$@"
  rc=$?
  if [ "$rc" -ne 0 ] || ! grep -q 'CONNECTION ESTABLISHED' "$out"; then
    why="no connection (exit status $rc)"
  elif ! grep -q "^Protocol version: $proto\$" "$out"; then
    why="protocol: $(grep '^Protocol version' "$out")"
  elif ! grep -q "^Ciphersuite: $cipher\$" "$out"; then
    why="cipher: $(grep '^Ciphersuite' "$out")"
  elif ! grep -q "^Server Temp Key: ECDH, $group," "$out"; then
    why="key exchange: $(grep '^Server Temp Key' "$out")"
  elif ! grep -q '^Verification: OK' "$out"; then
    why="certificate: $(grep -i '^Verif' "$out")"
  fi
  if [ -z "$why" ]; then
    pass "$name" "$proto $cipher $group, certificate verified"
  else
    fail "$name" "$why (see $out)"
    tail -n 15 "$out" | sed 's/^/    | /'
  fi
}

# refused NAME HELLO ARGS...: the client must send a ClientHello whose -msg line
# matches HELLO, and the server must answer with a fatal alert, no handshake.
refused() {
  local name="$1" hello="$2" out rc why=""
  shift 2
  out="$WORK/s_client-$name.log"
  s_client "$out" "$@"
  rc=$?
  if ! grep -qE "^>>> $hello, Handshake .*ClientHello" "$out"; then
    why="the local openssl sent no '$hello' ClientHello; the check proves nothing (see $out)"
  elif grep -q 'CONNECTION ESTABLISHED' "$out" || [ "$rc" -eq 0 ]; then
    why="the handshake succeeded: $(grep -E '^(Protocol version|Ciphersuite|Server Temp Key)' "$out" | tr '\n' ' ')"
  elif ! grep -qE '^<<< .*Alert.*fatal' "$out"; then
    why="no fatal alert from the server (exit status $rc; see $out)"
  fi
  if [ -z "$why" ]; then
    pass "$name" "refused with: $(grep -m 1 -oE 'fatal [a-z_]+' "$out")"
  else
    fail "$name" "$why"
    tail -n 15 "$out" | sed 's/^/    | /'
  fi
}

accepted tls13-handshake TLSv1.3 TLS_AES_256_GCM_SHA384 prime256v1 \
  -connect "$TARGET" -tls1_3 -verify_hostname localhost
accepted tls12-handshake TLSv1.2 ECDHE-ECDSA-AES256-GCM-SHA384 prime256v1 \
  -connect "$TARGET" -tls1_2 -verify_ip 127.0.0.1
accepted tls13-handshake-ipv6 TLSv1.3 TLS_AES_256_GCM_SHA384 prime256v1 \
  -connect "[::1]:$PORT" -tls1_3 -verify_ip ::1
accepted tls13-p384-client TLSv1.3 TLS_AES_256_GCM_SHA384 secp384r1 \
  -connect "$TARGET" -tls1_3 -groups P-384

# Old protocol versions: the client must really offer them (OpenSSL 3 needs
# security level 0 for TLS 1.0/1.1).
refused tls11-refused "TLS 1.1" -connect "$TARGET" -tls1_1 -cipher 'DEFAULT:@SECLEVEL=0'
refused tls10-refused "TLS 1.0" -connect "$TARGET" -tls1 -cipher 'DEFAULT:@SECLEVEL=0'
refused chacha20-tls13-refused "TLS 1.[23]" -connect "$TARGET" -tls1_3 \
  -ciphersuites TLS_CHACHA20_POLY1305_SHA256
refused chacha20-tls12-refused "TLS 1.2" -connect "$TARGET" -tls1_2 \
  -cipher ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305
refused cbc-tls12-refused "TLS 1.2" -connect "$TARGET" -tls1_2 \
  -cipher 'ECDHE-ECDSA-AES256-SHA384:ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA:ECDHE-ECDSA-AES128-SHA'
refused x25519-tls13-refused "TLS 1.[23]" -connect "$TARGET" -tls1_3 -groups X25519
refused x25519-tls12-refused "TLS 1.2" -connect "$TARGET" -tls1_2 -groups X25519

# --- SIGHUP: new groups for new handshakes ------------------------------------------
reload_groups() {
  local mark _
  mark=$(log_mark)
  write_tls_config '"secp384r1"'
  kill -HUP "$SERVER_PID"
  for _ in $(seq 1 50); do
    if tail -n +"$((mark + 1))" "$SERVER_LOG" | strip_ansi | grep -q 'reloaded the TLS certificate'; then
      pass reload-on-sighup "the server reloaded [tls] (groups = [\"secp384r1\"])"
      return 0
    fi
    sleep 0.1
  done
  fail reload-on-sighup "no 'reloaded the TLS certificate' in the log 5 s after SIGHUP"
  show_server_log_since "$mark" 20
  return 1
}

if reload_groups; then
  if run_testssl after-reload -f; then
    curves="$(finding PFS_ECDHE_curves)"
    if same_words "$curves" "secp384r1"; then
      pass groups-after-reload "ECDHE groups: $curves"
    else
      fail groups-after-reload "ECDHE groups '$curves', expected only secp384r1"
    fi
  fi
  refused p256-refused-after-reload "TLS 1.[23]" -connect "$TARGET" -tls1_3 -groups P-256
  accepted tls13-after-reload TLSv1.3 TLS_AES_256_GCM_SHA384 secp384r1 \
    -connect "$TARGET" -tls1_3 -verify_hostname localhost
fi

if ! kill -0 "$SERVER_PID" 2>/dev/null; then
  fail server-alive "the server exited during the checks"
  show_server_log_since 0 40
else
  stop_server_scenario TERM
fi

interop_finish
