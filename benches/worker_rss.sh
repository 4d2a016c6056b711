#!/usr/bin/env bash
# Peak and final RSS of one `drover work` in persistent mode after a load of no-op jobs.
#
#   benches/worker_rss.sh [DROVER_BINARY] [JOBS]     (default: target/release/drover, 3000)
#
# Needs RabbitMQ (DROVER_AMQP_URL, default the local node) and python3. Prints one line:
# VmHWM and VmRSS of the worker (kB) once its queue is empty, before it is stopped.
set -euo pipefail
bin=${1:-target/release/drover}
jobs=${2:-3000}
here=$(cd "$(dirname "$0")" && pwd)
url=${DROVER_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
dir=$(mktemp -d)
prefix="rss-$$-$RANDOM"
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
cat > "$dir/drover.toml" <<EOF
[broker]
url = "$url"
prefix = "$prefix"
queue_expires = "10m"
[supervisor]
socket = "$dir/none.sock"
[classes.noop]
mode = "persistent"
command = ["python3", "$here/noop_handler.py"]
prefetch = 1
timeout = "1m"
deadline = "1h"
EOF
"$bin" submit --config "$dir/drover.toml" --class noop --payload '{}' --count "$jobs" > /dev/null
"$bin" work --config "$dir/drover.toml" --class noop > "$dir/worker.log" 2>&1 &
pid=$!
# Done when the worker has logged nothing new for 3 s after the queue had time to drain
# (each job is logged at debug level only, so watch the queue through the worker's own CPU
# time: it stops growing once the queue is empty).
deadline=$((SECONDS + 300))
last=-1
while (( SECONDS < deadline )); do
    sleep 3
    now=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    if [[ $now == "$last" ]]; then break; fi
    last=$now
done
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
echo "VmHWM ${hwm} kB, VmRSS ${rss} kB ($bin, $jobs jobs)"
