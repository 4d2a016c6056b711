#!/usr/bin/env bash
# Drover's main job on one machine: a broker, workers of the example class running the example
# persistent handler, a stream of demo jobs (10% fail transiently and are retried with jittered
# backoff), and the queue draining while the workers report what they do.
#   scripts/demo.sh [SECONDS]      (default 60; Ctrl-C stops earlier)
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-60}
eval "$(scripts/services.sh env)"
cargo build --quiet --release
bin=target/release/drover
run=$(mktemp -d /tmp/drover-demo.XXXXXX)
sed -e "s|@EXAMPLES@|$PWD/examples|g" -e "s|@PREFIX@|demo-$$|g" config/demo.toml >"$run/drover.toml"
$bin check-config "$run/drover.toml" >/dev/null

pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    echo "worker logs: $run"
}
trap cleanup EXIT
for i in 1 2 3; do
    $bin work --config "$run/drover.toml" --class demo --instance "demo-$i" 2>"$run/demo-$i.log" &
    pids+=($!)
done

submitted=0
end=$((SECONDS + duration))
while ((SECONDS < end)); do
    $bin submit --config "$run/drover.toml" --class demo --payload '{"seconds": 0.5, "fail_rate": 0.1}' --count 3 >>"$run/ids"
    submitted=$((submitted + 3))
    depth=$(rabbitmqctl -q list_queues name messages 2>/dev/null | awk -v q="demo-$$.jobs.demo" '$1 == q {print $2}')
    printf '%(%H:%M:%S)T  submitted %4d  queued %4s  retries so far %3d\n' -1 "$submitted" "${depth:-?}" \
        "$(cat "$run"/demo-*.log | grep -c 'transient' || true)"
    sleep 2
done
