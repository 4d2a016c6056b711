#!/usr/bin/env bash
# Checks the monitoring configuration: the Prometheus rules with `promtool check rules` and
# `promtool test rules` (config/prometheus/drover.rules_test.yml), that every alert links a
# runbook page in docs/runbooks/, and the Grafana dashboard's JSON. promtool comes with Debian's
# `prometheus` package; when it is missing and this runs as root, the package is installed once
# (quietly, without its Recommends). Under CI a missing promtool fails; elsewhere the rules
# checks are skipped and said so.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v promtool >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    # Only promtool is wanted: no Recommends (node-exporter and friends), and the server the
    # package may start is stopped again.
    echo "check-prometheus: installing promtool (apt-get install --no-install-recommends prometheus)"
    { apt-get update -qq \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; } \
        >/dev/null 2>&1 || true
    systemctl disable --now prometheus.service >/dev/null 2>&1 || true
    [ -x /etc/init.d/prometheus ] && /etc/init.d/prometheus stop >/dev/null 2>&1 || true
fi

if command -v promtool >/dev/null 2>&1; then
    promtool check rules config/prometheus/drover.rules.yml
    # Unit tests of the rules with synthetic series (burn rates, runbook links, texts).
    (cd config/prometheus && promtool test rules drover.rules_test.yml)
    # Every alert links a runbook page that exists.
    for url in $(grep -o 'runbook_url: "docs/runbooks/[^"]*"' config/prometheus/drover.rules.yml | cut -d'"' -f2); do
        [ -f "$url" ] || { echo "check-prometheus: $url (a runbook_url) does not exist" >&2; exit 1; }
    done
    alerts=$(grep -c -- '- alert:' config/prometheus/drover.rules.yml)
    links=$(grep -c 'runbook_url:' config/prometheus/drover.rules.yml)
    [ "$alerts" = "$links" ] || { echo "check-prometheus: $alerts alerts but $links runbook links" >&2; exit 1; }
elif [ -n "${CI:-}" ]; then
    echo "check-prometheus: promtool missing and could not be installed" >&2
    exit 1
else
    echo "check-prometheus: promtool not found, rules check skipped (apt-get install --no-install-recommends prometheus)"
fi

python3 -m json.tool config/grafana/drover.json >/dev/null
echo "check-prometheus: config/grafana/drover.json is valid JSON"
