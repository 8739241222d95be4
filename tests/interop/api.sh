#!/usr/bin/env bash
# Interop: the credential API (docs/api.md) of the real binary, with real clients.
#
#   bash tests/interop/api.sh
#
# Starts eeaturn on its own temp config: TURN on udp:// and tcp://
# 127.0.0.1:$API_TURN_PORT (default 28680), relay ports 31500-31999, the API on
# https://127.0.0.1:$API_PORT (default 28443) with the development certificate
# config/dev-cert.pem and the development key config/dev.api-key (its SHA-256
# in [[api.keys]], name "dev"), a rate limit high enough for schemathesis; an
# echo peer (turnutils_peer) on 127.0.2.1. Then:
#   (a) curl POSTs /v1/credentials; coturn's turnutils_uclient relays messages
#       with that username and password (-u/-w) over UDP: every message must
#       come back; the same with a credential from GET /v1/ice-servers;
#   (b) the same over TCP (-t);
#   (c) rotating the signing secret with SIGHUP: a new secret is prepended to
#       the secret file, HUP: the old credential still allocates, a new one is
#       signed with the new secret and allocates; the old secret is removed,
#       HUP: the old credential is refused (401, no allocation), the new one
#       still allocates;
#   (d) the key in the query string (even next to a valid header) and a wrong
#       key are refused with 401 and their error codes; neither the key nor an
#       issued password appears in the server log;
#   (e) an API key added to the config works after SIGHUP; removed, it gets
#       401 after the next SIGHUP;
#   (f) schemathesis runs docs/api/openapi.yaml against the live API with all
#       its checks (no server errors; status codes, content types, headers and
#       response schemas as described; requests the schema forbids refused and
#       those it allows accepted; no answer without the key); bounded by
#       $SCHEMATHESIS_MAX_TIME (default 90 s). Passes only if schemathesis
#       exits 0. Then once more over the evidence endpoints (tag evidence)
#       with a key of scope evidence, the relay keeping evidence in $WORK.
# Prints one PASS/FAIL line per scenario; exits non-zero if any failed.
#
# schemathesis is installed (pinned, $SCHEMATHESIS_VERSION) into a venv under
# ${TMPDIR:-/tmp} when missing there; set SCHEMATHESIS=/path/to/st to use
# another one. The API is eeaturn's own: with INTEROP_SERVER=coturn there is
# nothing to compare, and the script passes nothing and fails nothing.
#
# Only loopback addresses are used. Never add uclient's -G: it makes requests
# for public addresses. See turnutils.sh for how uclient's flags behave.
set -uo pipefail

# shellcheck source=tests/interop/lib.sh
source "$(dirname "$0")/lib.sh"

API_PORT="${API_PORT:-28443}"
TURN_PORT="${API_TURN_PORT:-28680}"
RELAY_RANGE="${API_RELAY_RANGE:-31500-31999}"
# The echo peer; uclient also talks to PEER_PORT+1.
PEER_PORT="${API_PEER_PORT:-28690}"
PEER4=127.0.2.1
CLIENT4=127.0.1.1
CERT="$REPO_ROOT/config/dev-cert.pem"
KEY="$REPO_ROOT/config/dev-key.pem"
API_KEY_FILE="$REPO_ROOT/config/dev.api-key"
OPENAPI="$REPO_ROOT/docs/api/openapi.yaml"
BASE="https://127.0.0.1:$API_PORT"
RELAY_LO="${RELAY_RANGE%-*}"
RELAY_HI="${RELAY_RANGE#*-}"
SCHEMATHESIS_VERSION="${SCHEMATHESIS_VERSION:-4.32.5}"
# Messages per uclient run.
N=20

interop_init api
if [ "$INTEROP_SERVER" != eeaturn ]; then
  log "the credential API is eeaturn's own; nothing to run against $INTEROP_SERVER"
  interop_finish
  exit $?
fi
ensure_coturn || {
  fail setup "could not install coturn's turnutils"
  exit 1
}
for f in "$CERT" "$KEY" "$API_KEY_FILE" "$OPENAPI"; do
  if [ ! -r "$f" ]; then
    fail setup "missing $f"
    exit 1
  fi
done
API_KEY="$(head -n 1 "$API_KEY_FILE" | tr -d '\r\n')"
# [[api.keys]] sha256 is over the key string alone, without the newline.
API_KEY_SHA256="$(printf '%s' "$API_KEY" | sha256sum | cut -d ' ' -f 1)"
# A key of scope evidence for the /v1/evidence/ endpoints (made up for this run).
EVIDENCE_KEY="eeaturn_interop-evidence-$(random_secret)"
EVIDENCE_KEY_SHA256="$(printf '%s' "$EVIDENCE_KEY" | sha256sum | cut -d ' ' -f 1)"

tcp_port_free() {
  command -v ss >/dev/null 2>&1 || return 0
  [ -z "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]
}

# Writes $WORK/secret (one line, $SECRET_A) and the config, starts the server,
# waits until it is ready.
start_api_server() {
  if ! udp_port_free "$TURN_PORT" || ! tcp_port_free "$TURN_PORT" || ! tcp_port_free "$API_PORT"; then
    log "port $TURN_PORT (UDP/TCP) or $API_PORT (TCP) is already in use on this machine:"
    ss -Hlnp "sport = :$TURN_PORT or sport = :$API_PORT" 2>/dev/null || true
    return 1
  fi
  SECRET_A="$(random_secret)"
  SECRET_B="$(random_secret)"
  printf '%s\n' "$SECRET_A" >"$WORK/secret"
  chmod 600 "$WORK/secret"
  SERVER_LOG="$WORK/server.log"
  CONFIG="$WORK/eeaturn.toml"
  cat >"$CONFIG" <<EOF
# Written by tests/interop/api.sh for one test run; loopback only.
[server]
realm = "eeaturn.dev"
listen = ["udp://127.0.0.1:$TURN_PORT", "tcp://127.0.0.1:$TURN_PORT"]

[auth]
secret_file = "$WORK/secret"

[relay]
offload = "off"
addresses = ["127.0.0.1"]
port_range = "$RELAY_RANGE"

[geo]
country_db = "$REPO_ROOT/geo/testdata/world-country.mmdb"
asn_db = "$REPO_ROOT/geo/testdata/world-asn.mmdb"
max_age = "36500d"

[policy]
deny_asns = [9009]

[peers]
dangerous_allow = ["127.0.0.0/8", "::1/128"]

[tls]
certificate = "$CERT"
private_key = "$KEY"

[log]
level = "${EEATURN_LOG_LEVEL:-info}"

[api]
listen = "$BASE"
uris = ["turn:127.0.0.1:$TURN_PORT?transport=udp", "turn:127.0.0.1:$TURN_PORT?transport=tcp"]
# schemathesis sends thousands of requests: no rate limit in its way.
rate_limit = 1000000
rate_burst = 100000

[[api.keys]]
name = "dev"
scope = "credentials"
sha256 = "$API_KEY_SHA256"

[[api.keys]]
name = "auditor"
scope = "evidence"
sha256 = "$EVIDENCE_KEY_SHA256"

[evidence]
enabled = true
directory = "$WORK/evidence"
signing_key_file = "$REPO_ROOT/config/dev-evidence.key"
node_id = "api-interop"
checkpoint_interval = "1s"
EOF
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
  log "server is ready (pid $SERVER_PID)"
}

if ! start_api_server; then
  fail setup "the server did not start"
  exit 1
fi

for p in "$PEER_PORT" "$((PEER_PORT + 1))"; do
  if ! udp_port_free "$p"; then
    fail setup "UDP port $p for the echo peer is already in use"
    exit 1
  fi
done
spawn "$WORK/peer4.log" turnutils_peer -L "$PEER4" -p "$PEER_PORT"
PEER_PID=$SPAWNED
sleep 0.5
if ! kill -0 "$PEER_PID" 2>/dev/null; then
  fail setup "turnutils_peer did not start"
  cat "$WORK/peer4.log"
  exit 1
fi

# --- helpers ------------------------------------------------------------------

# api OUT METHOD PATH [BODY] [CURL_ARGS...]: calls the API with the key in the
# header; the body goes to OUT; prints the HTTP status.
api() {
  local out="$1" method="$2" path="$3" body="${4:-}"
  shift 3
  [ $# -gt 0 ] && shift
  local args=(-sS --max-time 10 --cacert "$CERT" -o "$out" -w '%{http_code}' -X "$method"
    -H "Authorization: Bearer $API_KEY")
  if [ -n "$body" ]; then
    args+=(-H 'content-type: application/json' --data "$body")
  fi
  curl "${args[@]}" "$@" "$BASE$path" 2>>"$WORK/curl.log" || printf 'curl-failed'
}

# json_get FILE EXPR: prints a field of the JSON in FILE (EXPR in Python
# subscript syntax, e.g. '["username"]').
json_get() {
  python3 -c 'import json, sys; print(eval("json.load(open(sys.argv[1]))" + sys.argv[2]))' "$1" "$2"
}

# rest_password SECRET USERNAME: base64(HMAC-SHA1(secret, username)).
rest_password() {
  python3 -c 'import base64, hashlib, hmac, sys
print(base64.b64encode(hmac.new(sys.argv[1].encode(), sys.argv[2].encode(), hashlib.sha1).digest()).decode())' "$1" "$2"
}

# issue NAME USER: POSTs /v1/credentials {"user": USER, "ttl": 600}; sets
# CRED_USER and CRED_PASS. Fails the scenario NAME and returns 1 on any error.
issue() {
  local name="$1" user="$2" out="$WORK/credential-$2.json" status
  status="$(api "$out" POST /v1/credentials "{\"user\":\"$user\",\"ttl\":600}")"
  if [ "$status" != 200 ]; then
    fail "$name" "POST /v1/credentials answered $status: $(cat "$out" 2>/dev/null)"
    return 1
  fi
  CRED_USER="$(json_get "$out" '["username"]')" || CRED_USER=""
  CRED_PASS="$(json_get "$out" '["password"]')" || CRED_PASS=""
  if ! [[ "$CRED_USER" =~ ^[0-9]+:dev/$user$ ]] || [ -z "$CRED_PASS" ]; then
    fail "$name" "unexpected credential: $(cat "$out")"
    return 1
  fi
  ISSUED_PASSWORDS+=("$CRED_PASS")
}
declare -a ISSUED_PASSWORDS=()

# show_failure CLIENT_OUTPUT MARK
show_failure() {
  echo "    client output (last 30 lines of $1):"
  tail -n 30 "$1" | sed 's/^/    | /'
  show_server_log_since "$2"
}

# relays NAME USERNAME PASSWORD [UCLIENT_ARGS...]: uclient with that
# credential must send $N messages and get every one back through a relayed
# address in the range. Prints the reason and returns 1 otherwise.
relays() {
  local name="$1" user="$2" pass="$3"
  shift 3
  local out="$WORK/uclient-$name.log" rc line sent recv relay
  timeout 60 turnutils_uclient -v -u "$user" -w "$pass" -p "$TURN_PORT" -L "$CLIENT4" \
    -e "$PEER4" -r "$PEER_PORT" -c -n "$N" "$@" 127.0.0.1 >"$out" 2>&1
  rc=$?
  line="$(grep -E 'start_mclient: tot_send_msgs=[0-9]+, tot_recv_msgs=[0-9]+' "$out" | tail -n 1)"
  sent="$(sed -nE 's/.*tot_send_msgs=([0-9]+).*/\1/p' <<<"$line")"
  recv="$(sed -nE 's/.*tot_recv_msgs=([0-9]+).*/\1/p' <<<"$line")"
  relay="$(sed -nE 's/.*Received relay addr: (.*)$/\1/p' "$out" | tail -n 1)"
  if [ "$rc" -ne 0 ]; then
    echo "exit status $rc$([ "$rc" -eq 124 ] && echo ' (timed out after 60 s)')"
  elif [ -z "$line" ]; then
    echo "no tot_send_msgs/tot_recv_msgs summary"
  elif [ "$sent" != "$N" ]; then
    echo "sent $sent messages, expected $N"
  elif [ "$recv" != "$sent" ]; then
    echo "sent $sent, received $recv back (lost $((sent - recv)))"
  elif [ "${relay%:*}" != 127.0.0.1 ] || [ "${relay##*:}" -lt "$RELAY_LO" ] || [ "${relay##*:}" -gt "$RELAY_HI" ]; then
    echo "relayed address '$relay' is not 127.0.0.1:$RELAY_RANGE"
  else
    echo "tot_send_msgs=$sent tot_recv_msgs=$recv relay=$relay"
    return 0
  fi
  return 1
}

# refused NAME USERNAME PASSWORD: uclient with that credential must get no
# allocation: every Allocate answered (with 401), "Cannot complete
# Allocation", nothing relayed. Prints the reason and returns 1 otherwise.
refused() {
  local name="$1" user="$2" pass="$3" out="$WORK/uclient-$1.log" rc
  timeout 60 turnutils_uclient -v -u "$user" -w "$pass" -p "$TURN_PORT" -L "$CLIENT4" \
    -e "$PEER4" -r "$PEER_PORT" -c -n 5 127.0.0.1 >"$out" 2>&1
  rc=$?
  if [ "$rc" -eq 0 ]; then
    echo "the client exited 0"
  elif [ "$rc" -eq 124 ]; then
    echo "the client timed out (expected a quick refusal)"
  elif grep -q 'Received relay addr' "$out"; then
    echo "an allocation was granted: $(grep -m 1 'Received relay addr' "$out")"
  elif grep -qE 'tot_recv_msgs=[1-9]' "$out"; then
    echo "messages were relayed"
  elif ! grep -q 'allocate response received' "$out"; then
    echo "the server never answered the Allocate requests"
  elif ! grep -q 'Cannot complete Allocation' "$out"; then
    echo "the client did not report 'Cannot complete Allocation'"
  else
    echo "no allocation ($(grep -c 'allocate response received' "$out") refusals, client exit $rc)"
    return 0
  fi
  return 1
}

# expect_ok NAME CMD...: PASS if CMD succeeds (its output is the detail).
expect_ok() {
  local name="$1" mark detail
  shift
  mark=$(log_mark)
  log "scenario $name"
  if detail="$("$@")"; then
    pass "$name" "$detail"
  else
    fail "$name" "$detail"
    show_failure "$WORK/uclient-$name.log" "$mark"
  fi
}

# hup_and_wait: sends SIGHUP and waits until the server logs the reload of
# the secrets (once more than before).
hup_and_wait() {
  local before
  before="$(strip_ansi <"$SERVER_LOG" | grep -c 'reloaded secrets on SIGHUP')"
  kill -HUP "$SERVER_PID"
  for _ in $(seq 1 50); do
    if [ "$(strip_ansi <"$SERVER_LOG" | grep -c 'reloaded secrets on SIGHUP')" -gt "$before" ]; then
      return 0
    fi
    sleep 0.1
  done
  log "no 'reloaded secrets on SIGHUP' in the server log 5 s after SIGHUP"
  show_server_log_since "$(($(log_mark) - 10))" 10
  return 1
}

# --- (a) a credential from the API relays over UDP ----------------------------
if issue udp-credential u1; then
  expect_ok udp-credential relays udp-credential "$CRED_USER" "$CRED_PASS"
fi
# ... and one from GET /v1/ice-servers, with Send indications this time.
status="$(api "$WORK/ice.json" GET '/v1/ice-servers?user=u-ice&ttl=300')"
if [ "$status" = 200 ]; then
  ice_user="$(json_get "$WORK/ice.json" '["iceServers"][0]["username"]')"
  ice_pass="$(json_get "$WORK/ice.json" '["iceServers"][0]["credential"]')"
  ISSUED_PASSWORDS+=("$ice_pass")
  expect_ok udp-ice-servers-credential relays udp-ice-servers-credential "$ice_user" "$ice_pass" -s
else
  fail udp-ice-servers-credential "GET /v1/ice-servers answered $status: $(cat "$WORK/ice.json" 2>/dev/null)"
fi

# --- (b) over TCP ----------------------------------------------------------------
if issue tcp-credential u2; then
  expect_ok tcp-credential relays tcp-credential "$CRED_USER" "$CRED_PASS" -t
fi

# --- (c) rotating the signing secret with SIGHUP --------------------------------
rotation() {
  local old_user old_pass new_user new_pass detail
  issue rotation-old-credential rot-old || return
  old_user="$CRED_USER" old_pass="$CRED_PASS"
  if [ "$old_pass" != "$(rest_password "$SECRET_A" "$old_user")" ]; then
    fail rotation-signed-with-first-secret "the password is not HMAC-SHA1 of the secret file's only secret"
  fi
  # Prepend the new secret: it signs from now on, the old one still verifies.
  printf '%s\n%s\n' "$SECRET_B" "$SECRET_A" >"$WORK/secret"
  if ! hup_and_wait; then
    fail rotation-prepend-reload "the server did not reload its secrets"
    return
  fi
  issue rotation-new-credential rot-new || return
  new_user="$CRED_USER" new_pass="$CRED_PASS"
  if [ "$new_pass" = "$(rest_password "$SECRET_B" "$new_user")" ]; then
    pass rotation-new-secret-signs "the credential issued after HUP is signed with the prepended secret"
  else
    fail rotation-new-secret-signs "the credential issued after HUP is not signed with the prepended secret"
  fi
  expect_ok rotation-old-still-works relays rotation-old-still-works "$old_user" "$old_pass"
  expect_ok rotation-new-works relays rotation-new-works "$new_user" "$new_pass"
  # Retire the old secret.
  printf '%s\n' "$SECRET_B" >"$WORK/secret"
  if ! hup_and_wait; then
    fail rotation-retire-reload "the server did not reload its secrets"
    return
  fi
  expect_ok rotation-old-refused-after-retire refused rotation-old-refused-after-retire "$old_user" "$old_pass"
  expect_ok rotation-new-works-after-retire relays rotation-new-works-after-retire "$new_user" "$new_pass"
}
rotation

# --- (d) keys in the URL and wrong keys ------------------------------------------
# expect_error NAME STATUS CODE CURL_ARGS...: the API must answer STATUS with
# {"error": CODE} and no credential.
expect_error() {
  local name="$1" want_status="$2" want_code="$3" out="$WORK/$1.json" status code
  shift 3
  status="$(curl -sS --max-time 10 --cacert "$CERT" -o "$out" -w '%{http_code}' "$@" 2>>"$WORK/curl.log")"
  code="$(json_get "$out" '["error"]' 2>/dev/null)"
  if [ "$status" = "$want_status" ] && [ "$code" = "$want_code" ] &&
    ! grep -qE '"(password|credential)"' "$out"; then
    pass "$name" "$status $code"
  else
    fail "$name" "answered $status $(cat "$out" 2>/dev/null) (wanted $want_status $want_code)"
  fi
}
expect_error key-in-query-refused 401 api_key_in_query \
  -H "Authorization: Bearer $API_KEY" -H 'content-type: application/json' \
  -X POST --data '{"user":"u3"}' "$BASE/v1/credentials?api_key=$API_KEY"
expect_error key-in-query-refused-get 401 api_key_in_query \
  "$BASE/v1/ice-servers?user=u3&access_token=$API_KEY"
expect_error wrong-key-refused 401 invalid_api_key \
  -H "Authorization: Bearer eeaturn_not-the-development-key" -H 'content-type: application/json' \
  -X POST --data '{"user":"u3"}' "$BASE/v1/credentials"
expect_error no-key-refused 401 missing_api_key -X POST "$BASE/v1/credentials"

leaks=""
if strip_ansi <"$SERVER_LOG" | grep -qF -- "$API_KEY"; then
  leaks="the API key"
fi
if strip_ansi <"$SERVER_LOG" | grep -qF -- "$EVIDENCE_KEY"; then
  leaks="${leaks:+$leaks, }the evidence key"
fi
for p in "${ISSUED_PASSWORDS[@]}"; do
  if strip_ansi <"$SERVER_LOG" | grep -qF -- "$p"; then
    leaks="${leaks:+$leaks, }an issued password"
    break
  fi
done
if [ -z "$leaks" ]; then
  pass no-secrets-in-the-log "neither the key nor ${#ISSUED_PASSWORDS[@]} issued passwords"
else
  fail no-secrets-in-the-log "the server log holds $leaks"
fi

# --- (e) API keys are re-read on SIGHUP ------------------------------------------
# hup_api_and_wait: sends SIGHUP and waits for the API's reload line.
hup_api_and_wait() {
  local before
  before="$(strip_ansi <"$SERVER_LOG" | grep -c 'reloaded the API settings and keys')"
  kill -HUP "$SERVER_PID"
  for _ in $(seq 1 50); do
    if [ "$(strip_ansi <"$SERVER_LOG" | grep -c 'reloaded the API settings and keys')" -gt "$before" ]; then
      return 0
    fi
    sleep 0.1
  done
  log "no 'reloaded the API settings and keys' in the server log 5 s after SIGHUP"
  return 1
}

key_reload() {
  local second status
  second="eeaturn_interop-$(random_secret)"
  cp "$CONFIG" "$WORK/eeaturn.toml.orig"
  printf '\n[[api.keys]]\nname = "second"\nscope = "credentials"\nsha256 = "%s"\n' \
    "$(printf '%s' "$second" | sha256sum | cut -d ' ' -f 1)" >>"$CONFIG"
  if ! hup_api_and_wait; then
    fail key-added-on-hup "the API did not reload"
    return
  fi
  status="$(curl -sS --max-time 10 --cacert "$CERT" -o "$WORK/second-key.json" -w '%{http_code}' \
    -H "Authorization: Bearer $second" "$BASE/v1/credentials?user=u4" 2>>"$WORK/curl.log")"
  if [ "$status" = 200 ] && grep -q '"username":"[0-9]*:second/u4"' "$WORK/second-key.json"; then
    pass key-added-on-hup "a key added to the config works after SIGHUP, named in the username"
  else
    fail key-added-on-hup "answered $status: $(cat "$WORK/second-key.json" 2>/dev/null)"
  fi
  cp "$WORK/eeaturn.toml.orig" "$CONFIG"
  if ! hup_api_and_wait; then
    fail key-removed-on-hup "the API did not reload"
    return
  fi
  expect_error key-removed-on-hup 401 invalid_api_key \
    -H "Authorization: Bearer $second" "$BASE/v1/credentials?user=u4"
}
key_reload

# --- (f) schemathesis against docs/api/openapi.yaml ------------------------------
ensure_schemathesis() {
  if [ -n "${SCHEMATHESIS:-}" ]; then
    ST="$SCHEMATHESIS"
    return 0
  fi
  local venv="${TMPDIR:-/tmp}/eeaturn-schemathesis-$SCHEMATHESIS_VERSION"
  ST="$venv/bin/st"
  if [ -x "$ST" ]; then
    return 0
  fi
  log "installing schemathesis $SCHEMATHESIS_VERSION into $venv"
  python3 -m venv "$venv" >/dev/null || return 1
  "$venv/bin/python" -m pip install -q --disable-pip-version-check \
    "schemathesis==$SCHEMATHESIS_VERSION" || return 1
  [ -x "$ST" ]
}

# schemathesis_scenario NAME KEY CONFIG [ST_ARGS...]
schemathesis_scenario() {
  local name="$1" key="$2" config="$3" out mark rc
  shift 3
  out="$WORK/$name.log"
  if ! ensure_schemathesis; then
    fail "$name" "could not install schemathesis $SCHEMATHESIS_VERSION"
    return
  fi
  mark=$(log_mark)
  log "scenario $name: $("$ST" --version 2>&1) against $BASE"
  # From $WORK: schemathesis keeps its hypothesis database in the current directory.
  # One worker: several trip a CPython 3.11 thread-safety bug in ast.parse ("AST
  # constructor recursion depth mismatch") inside hypothesis.
  (
    cd "$WORK" &&
      timeout 150 "$ST" --config-file "$config" run "$OPENAPI" \
        --url "$BASE" \
        --header "Authorization: Bearer $key" \
        "$@" \
        --tls-verify "$CERT" \
        --checks all \
        --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-60}" \
        --max-time "${SCHEMATHESIS_MAX_TIME:-90}" \
        ${SCHEMATHESIS_SEED:+--seed "$SCHEMATHESIS_SEED"} \
        --request-timeout 10 \
        --workers 1 \
        --no-color
  ) >"$out" 2>&1
  rc=$?
  if [ "$rc" -eq 0 ]; then
    pass "$name" "$(strip_ansi <"$out" | grep -E '[0-9]+ (passed|generated)' | tail -n 1 | sed 's/^ *//')"
  else
    fail "$name" "schemathesis exited $rc$([ "$rc" -eq 124 ] && echo ' (timed out)')"
    if strip_ansi <"$out" | grep -qE '^=+ (FAILURES|ERRORS) =+$'; then
      echo "    schemathesis findings (from $out; the full tracebacks are there):"
      strip_ansi <"$out" | sed -n '/^=* \(FAILURES\|ERRORS\) =*$/,$p' |
        grep -vE '^ {4}(  |File |Traceback)' | head -n 100 | sed 's/^/    | /'
    else
      echo "    schemathesis output (last 60 lines of $out):"
      strip_ansi <"$out" | tail -n 60 | sed 's/^/    | /'
    fi
    show_server_log_since "$mark" 20
  fi
}
# The credential and health operations with the credentials key, then the evidence
# operations with the evidence key (tests/api.rs checks that each key gets 403 on the
# other's endpoints; here schemathesis would only warn that a key is refused).
schemathesis_scenario schemathesis "$API_KEY" "$INTEROP_DIR/schemathesis.toml" \
  --exclude-tag evidence
schemathesis_scenario schemathesis-evidence "$EVIDENCE_KEY" "$INTEROP_DIR/schemathesis-evidence.toml" \
  --include-tag evidence

if ! kill -0 "$SERVER_PID" 2>/dev/null; then
  fail server-alive "the server exited during the scenarios"
  show_server_log_since 0 40
fi
stop_server_scenario TERM

interop_finish
