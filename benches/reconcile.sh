#!/usr/bin/env bash
# Supervisor benchmark: reconcile N worker units from nothing under the start-rate limit.
# Prints wall time and D-Bus calls to converge, the spread of the starts, the supervisor's RSS and
# its idle CPU with N units. Real systemd user manager, real broker; workers run `/bin/true` as an
# exec-mode handler, so the units themselves are cheap.
#   benches/reconcile.sh [UNITS] [START_RATE] [IDLE_SECONDS]     (default 200 10 30)
set -euo pipefail
cd "$(dirname "$0")/.."
units=${1:-200} rate=${2:-10} idle=${3:-30}
eval "$(scripts/services.sh env)"
cargo build --quiet --release
bin=$PWD/target/release/drover
id=$$
run=$PWD/target/bench/reconcile-$id
mkdir -p "$run"
cat >"$run/drover.toml" <<TOML
[broker]
prefix = "bench$id"
queue_expires = "10m"
[systemd]
bus = "user"
unit_prefix = "bench$id"
relax_sandbox = ["ProtectKernelTunables", "ProtectKernelLogs", "ProtectControlGroups"]
[metrics]
listen = "127.0.0.1:0"
[supervisor]
start_rate = $rate
[classes.b]
mode = "exec"
command = ["/bin/true"]
workers = $units
TOML
$bin install-units --user --config "$run/drover.toml" >/dev/null 2>&1

cleanup() {
    [[ -n ${sup:-} ]] && kill -TERM "$sup" 2>/dev/null && wait "$sup" 2>/dev/null
    systemctl --user stop "bench$id@*" >/dev/null 2>&1 || true
    systemctl --user reset-failed "bench$id@*" >/dev/null 2>&1 || true
    rm -f "${XDG_CONFIG_HOME:-$HOME/.config}/systemd/user/bench$id@.service"
}
trap cleanup EXIT

t0=$(date +%s.%N)
$bin supervise --config "$run/drover.toml" 2>"$run/supervisor.log" &
sup=$!
healthy=0
deadline=$((SECONDS + units / rate * 4 + 120))
while ((SECONDS < deadline)); do
    healthy=$($bin status --json --config "$run/drover.toml" 2>/dev/null |
        python3 -c 'import json,sys; print(sum(u["health"]=="healthy" for u in json.load(sys.stdin)["units"]))' 2>/dev/null || echo 0)
    ((healthy >= units)) && break
    sleep 0.2
done
t1=$(date +%s.%N)
((healthy >= units)) || { echo "only $healthy of $units units became healthy" >&2; exit 1; }

addr=$(grep -o 'metrics on http://[^/]*' "$run/supervisor.log" | tail -1 | sed 's|metrics on http://||')
scrape() { curl -s "http://$addr/metrics"; }
dbus_calls=$(scrape | awk '/^drover_dbus_call_duration_seconds_count/ {s += $2} END {print s}')
passes=$(scrape | awk '/^drover_reconcile_passes_total/ {print $2}')

# Start spread: each unit's ExecMainStartTimestampMonotonic, in microseconds.
for i in $(seq 1 "$units"); do echo "bench$id@b-$i.service"; done |
    xargs systemctl --user show -p ExecMainStartTimestampMonotonic --value >"$run/starts"
read -r spread max_per_s <<<"$(python3 - "$run/starts" <<'PY'
import sys
t = sorted(int(l) for l in open(sys.argv[1]) if l.strip() and l.strip() != "0")
window = max(sum(1 for u in t[i:] if u < s + 1_000_000) for i, s in enumerate(t))
print(f"{(t[-1] - t[0]) / 1e6:.1f} {window}")
PY
)"

rss_kb=$(awk '/^VmRSS/ {print $2}' "/proc/$sup/status")
hwm_kb=$(awk '/^VmHWM/ {print $2}' "/proc/$sup/status")
ticks() { awk '{print $14 + $15}' "/proc/$sup/stat"; }
c0=$(ticks); sleep "$idle"; c1=$(ticks)
hz=$(getconf CLK_TCK)
idle_cpu=$(python3 -c "print(f'{($c1 - $c0) / $hz / $idle * 100:.2f}')")
calls_after_idle=$(scrape | awk '/^drover_dbus_call_duration_seconds_count/ {s += $2} END {print s}')

cat <<TABLE
machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), systemd $(systemctl --version | head -1 | awk '{print $2}') (user manager), $(date -u +%F)
command: benches/reconcile.sh $units $rate $idle

| measure | value | target |
|---|---|---|
| units reconciled from nothing | $units | |
| wall time to converge (all healthy) | $(python3 -c "print(f'{$t1 - $t0:.1f} s')") | about $((units / rate)) s at $rate starts/s |
| D-Bus calls to converge | $dbus_calls ($passes reconcile passes) | |
| spread of the starts (first to last) | ${spread} s | |
| most starts within any one second | $max_per_s | at most $rate (+1 at a slot boundary) |
| supervisor RSS with $units units (VmRSS / VmHWM) | $((rss_kb / 1024)) MB / $((hwm_kb / 1024)) MB | at most 30 MB |
| supervisor idle CPU with $units units, over ${idle} s | ${idle_cpu}% of a core | under 1% |
| D-Bus calls while idle (${idle} s; resyncs every 30 s) | $((calls_after_idle - dbus_calls)) | |
TABLE
