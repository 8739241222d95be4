#!/usr/bin/env bash
# Runs every interop script against eeaturn and prints, as its last line,
#   interop: N passed, M failed
# (N and M count scenarios). Exits non-zero if anything failed.
#
#   bash tests/interop/run-all.sh
#
# Installs its test clients when missing (coturn's turnutils and testssl.sh
# from Debian, aioice from PyPI); builds the server with `cargo build --locked`
# only when target/debug/eeaturn is missing and EEATURN_BIN is not set.
# Set INTEROP_SERVER=coturn to run the same scenarios against coturn's
# turnserver instead (a reference baseline for the test clients).
set -uo pipefail

# shellcheck source=tests/interop/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT" || exit 1

RESULTS="$(mktemp "${TMPDIR:-/tmp}/eeaturn-interop-results.XXXXXX")"
trap 'rm -f "$RESULTS"' EXIT
export INTEROP_RESULTS="$RESULTS"

setup_failed=0
ensure_coturn || { log "coturn install failed"; setup_failed=1; }
ensure_aioice || { log "aioice install failed"; setup_failed=1; }
stop_packaged_coturn

if [ "$INTEROP_SERVER" = eeaturn ] && [ -z "${EEATURN_BIN:-}" ] && [ ! -x "${CARGO_TARGET_DIR:-target}/debug/eeaturn" ]; then
  log "the eeaturn binary is missing: cargo build --locked"
  cargo build --locked || { log "cargo build failed"; setup_failed=1; }
fi
if [ "$setup_failed" -ne 0 ]; then
  echo "FAIL interop/setup" | tee -a "$RESULTS"
fi

for script in turnutils.sh offload.sh offload-veth.sh browser/call.sh aioice.sh residency.sh evidence.sh tls.sh stream.sh api.sh fleet.sh rolling-upgrade.sh; do
  log "=== $script ==="
  before=$(grep -c '^FAIL ' "$RESULTS")
  timeout 900 bash "$INTEROP_DIR/$script"
  rc=$?
  after=$(grep -c '^FAIL ' "$RESULTS")
  if [ "$rc" -ne 0 ] && [ "$after" -eq "$before" ]; then
    # The script failed without saying which scenario: count it once.
    echo "FAIL ${script%.sh}/script: exited with status $rc"
    echo "FAIL ${script%.sh}/script" >>"$RESULTS"
  fi
done

passed=$(grep -c '^PASS ' "$RESULTS")
failed=$(grep -c '^FAIL ' "$RESULTS")
if [ "$failed" -gt 0 ]; then
  echo "failed scenarios:"
  grep '^FAIL ' "$RESULTS" | sed 's/^FAIL /  /'
fi
echo "interop: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
