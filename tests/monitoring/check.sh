#!/usr/bin/env bash
# The monitoring files against the metrics: `promtool check rules` and `promtool test rules`
# over docs/monitoring/alerts.yml, and the Grafana dashboard's (and the rules') queries against
# docs/metrics.md (tests/monitoring/check_queries.py). Installs Debian's prometheus (for
# promtool) and python3-yaml when they are missing. Run from anywhere; CI runs it from .ci/run.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."

log() { printf 'monitoring: %s\n' "$*"; }

if ! command -v promtool >/dev/null; then
  log "installing Debian's prometheus package (for promtool)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus >/dev/null
fi
if ! python3 -c 'import yaml' >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-yaml >/dev/null
fi

log "$(promtool --version 2>&1 | head -1)"
promtool check rules docs/monitoring/alerts.yml
(cd docs/monitoring && promtool test rules alerts.test.yml)

python3 tests/monitoring/check_queries.py docs/metrics.md \
  docs/monitoring/grafana-dashboard.json docs/monitoring/alerts.yml

# The check must be able to fail: a dashboard with a misspelt metric is refused.
bad=$(mktemp)
trap 'rm -f "$bad"' EXIT
sed 's/eeaturn_relayed_bytes_total/eeaturn_relayed_byte_total/' \
  docs/monitoring/grafana-dashboard.json >"$bad"
if python3 tests/monitoring/check_queries.py docs/metrics.md "$bad" >/dev/null 2>&1; then
  log "check_queries.py accepted a dashboard with an undocumented metric" >&2
  exit 1
fi
log "ok"
