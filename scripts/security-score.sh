#!/usr/bin/env bash
# The exposure score (`systemd-analyze security`, 0 best, 10 worst) of the units a system
# install writes for the example configuration, as the README records them:
#
#   scripts/security-score.sh [BINARY]     one line per unit: `<unit> <score>`
#
# Offline (the unit files alone): no running manager is needed.
set -euo pipefail
cd "$(dirname "$0")/.."
binary=${1:-${CARGO_TARGET_DIR:-target}/debug/drover}
[[ -x $binary ]] || { cargo build --quiet --bin drover >&2; }
dir=$(mktemp -d "${TMPDIR:-/tmp}/drover-units.XXXXXX")
trap 'rm -rf "$dir"' EXIT
"$binary" install-units --system --config config/drover.example.toml --dir "$dir" >/dev/null 2>&1
# A template is analysed through one of its instances.
cp "$dir/drover-worker@.service" "$dir/drover-worker@inference-1.service"
for unit in drover-worker@inference-1.service drover-supervisor.service; do
    score=$(systemd-analyze security --offline=true --no-pager "$dir/$unit" 2>/dev/null |
        sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
    [[ -n $score ]] || { echo "security-score.sh: no score for $unit" >&2; exit 1; }
    echo "${unit/@inference-1/@} $score"
done
