#!/usr/bin/env bash
# Checks the monitoring configuration: the Prometheus rules with `promtool check rules` and the
# Grafana dashboard's JSON. promtool comes with Debian's `prometheus` package; when it is missing
# and this runs as root under CI, the package is installed once (quietly). Without promtool the
# rules check is skipped (exit 0) and said so.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v promtool >/dev/null 2>&1 && [ -n "${CI:-}" ] && [ "$(id -u)" = 0 ]; then
    # One attempt. Only promtool is wanted: the server the package may start is stopped again.
    { apt-get update -qq \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; } \
        >/dev/null 2>&1 || true
    systemctl disable --now prometheus.service >/dev/null 2>&1 || true
    [ -x /etc/init.d/prometheus ] && /etc/init.d/prometheus stop >/dev/null 2>&1 || true
fi

if command -v promtool >/dev/null 2>&1; then
    promtool check rules config/prometheus/*.yml
else
    echo "check-prometheus: promtool not found, rules check skipped (apt-get install prometheus)"
fi

python3 -m json.tool config/grafana/drover.json >/dev/null
echo "check-prometheus: config/grafana/drover.json is valid JSON"
