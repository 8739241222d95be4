#!/usr/bin/env bash
# The HTML report in headless Chromium (Debian's `chromium`): the DOM carries the summary
# figures and the SVG charts, --lang de gives German headings, and the page makes no request.
# With --images it also rewrites docs/images/report-first-page.png and report.pdf.
#
# Usage: bash tests/report/chromium.sh [--images]   (from the repository root; .ci/run calls it)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

images=false
[[ "${1:-}" == "--images" ]] && images=true
chromium=$(command -v chromium || command -v chromium-browser || true)
if [[ -z "$chromium" ]]; then
  echo "chromium not installed (apt-get install -y chromium); skipping" >&2
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The scripted two-node fleet of evidence/tests/report.rs, and the binary.
EEATURN_REPORT_FLEET="$work/evidence" cargo test --quiet --locked -p eeaturn-evidence \
  --test report write_fleet_for_the_browser_test >/dev/null
cargo build --quiet --locked -p eeaturn --bin eeaturn
bin=$(realpath "${CARGO_TARGET_DIR:-target}/debug/eeaturn")

for lang in en de; do
  (cd "$work" && SOURCE_DATE_EPOCH=1796605200 "$bin" report \
    --from 2026-12-06 --to 2026-12-07 --lang "$lang" --trust evidence/evidence-signing.pub \
    --out "report-$lang.html" evidence/fra-1 evidence/osl-1)
done

fail() { echo "FAIL: $*" >&2; exit 1; }

# No request can leave the page: the policy forbids it, and nothing in it points outside.
for lang in en de; do
  html="$work/report-$lang.html"
  grep -q "default-src 'none'; style-src 'unsafe-inline'; img-src data:" "$html" || fail "no CSP in $lang"
  if grep -Eo "https?://[^\"' <]*|src=[\"'][^\"']*|url\([^)]*\)|<script|<link" "$html"; then
    fail "$lang report refers to something outside the page"
  fi
done

flags=(--headless --no-sandbox --disable-gpu --disable-background-networking
  --disable-component-update --disable-sync --no-first-run --user-data-dir="$work/profile")

# The DOM as Chromium built it, with every request it tried to make logged.
"$chromium" "${flags[@]}" --enable-logging=stderr --v=1 --dump-dom "file://$work/report-en.html" \
  >"$work/dom-en.html" 2>"$work/chromium-en.log"
"$chromium" "${flags[@]}" --dump-dom "file://$work/report-de.html" >"$work/dom-de.html" 2>/dev/null

dom="$work/dom-en.html"
grep -q 'id="verdict"' "$dom" || fail "no verdict"
grep -q '100.\{1,3\}% of relayed traffic stayed inside the region' "$dom" || fail "verdict text"
grep -q 'id="fig-bytes-inside">100.\{1,3\}%<' "$dom" || fail "bytes inside figure"
grep -q 'id="fig-allocations">8<' "$dom" || fail "allocations figure"
grep -q 'id="fig-refusals">19<' "$dom" || fail "refusals figure"
grep -q '1,550,400 B' "$dom" || fail "relayed bytes"
[[ $(grep -o '<svg class="chart"' "$dom" | wc -l) -eq 2 ]] || fail "two SVG charts"
grep -q '<rect' "$dom" || fail "chart bars"
grep -q 'eeaturn evidence verify --trust' "$dom" || fail "verify box"
if grep -Eiq 'Failed to load resource|Refused to load|Refused to apply|violates the following Content Security Policy' "$work/chromium-en.log"; then
  grep -Ei 'Failed to load resource|Refused to load|Refused to apply|violates the following Content Security Policy' "$work/chromium-en.log" >&2
  fail "the page tried to load something"
fi

de="$work/dom-de.html"
for h in 'Bericht zur Datenresidenz' 'Zusammenfassung' 'So lesen Sie diesen Bericht' \
  'So prüfen Sie selbst' 'Abweisungen nach Regel' '1.550.400 B' \
  '100.\{1,3\}% des weitergeleiteten Datenverkehrs blieben in der Region'; do
  grep -q "$h" "$de" || fail "German: $h"
done

if $images; then
  mkdir -p docs/images
  "$chromium" "${flags[@]}" --hide-scrollbars --window-size=1240,1754 \
    --screenshot="$PWD/docs/images/report-first-page.png" "file://$work/report-en.html" 2>/dev/null
  "$chromium" "${flags[@]}" --no-pdf-header-footer \
    --print-to-pdf="$PWD/docs/images/report.pdf" "file://$work/report-en.html" 2>/dev/null
  "$chromium" "${flags[@]}" --hide-scrollbars --window-size=1240,1754 \
    --screenshot="$PWD/docs/images/report-first-page-de.png" "file://$work/report-de.html" 2>/dev/null
  echo "wrote docs/images/report-first-page.png, report-first-page-de.png, report.pdf"
fi
echo "ok: the HTML report in Chromium"
