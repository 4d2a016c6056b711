#!/usr/bin/env bash
# Drover's main job on one machine, end to end: a RabbitMQ broker, a systemd manager (a private
# user manager when the machine has none), `drover supervise` with three workers of the demo
# class running the example persistent handler, a stream of demo jobs (10% fail transiently and
# are retried with jittered backoff), two workers of the train class running the ML example
# (examples/ml_handler.py: progress and checkpoints), one of them drained halfway through so that
# its job resumes from its checkpoint on the other, and `drover status` showing the units, their
# jobs and their progress.
#   scripts/demo.sh [SECONDS]      (default 60; Ctrl-C stops earlier)
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-60}
eval "$(scripts/services.sh env)"
cargo build --quiet --release
bin=$PWD/target/release/drover

# Not under /tmp: the worker units run with PrivateTmp=yes.
run=$PWD/target/demo/run-$$
mkdir -p "$run"
id=$$
sed -e "s|@EXAMPLES@|$PWD/examples|g" -e "s|@ID@|$id|g" config/demo.toml >"$run/drover.toml"
if [[ $PWD == /tmp/* ]]; then
    # Units run with PrivateTmp=yes and would not see a checkout under /tmp.
    sed -i 's/"ProcSubset"\]/"ProcSubset", "PrivateTmp"]/' "$run/drover.toml"
fi
$bin check-config "$run/drover.toml" >/dev/null
$bin install-units --user --config "$run/drover.toml" >/dev/null 2>&1

supervisor=
cleanup() {
    [[ -n $supervisor ]] && kill -TERM "$supervisor" 2>/dev/null && wait "$supervisor" 2>/dev/null
    systemctl --user stop "demo$id@*" 2>/dev/null || true
    systemctl --user reset-failed "demo$id@*" 2>/dev/null || true
    rm -f "${XDG_CONFIG_HOME:-$HOME/.config}/systemd/user/demo$id@.service"
    echo "logs: $run"
}
trap cleanup EXIT

$bin supervise --config "$run/drover.toml" 2>"$run/supervisor.log" &
supervisor=$!

end=$((SECONDS + duration))
half=$((SECONDS + duration / 2))
submitted=0 trains=0 drained=false
while ((SECONDS < end)); do
    $bin submit --config "$run/drover.toml" --class demo --payload '{"seconds": 2, "fail_rate": 0.1}' --count 2 >>"$run/ids"
    submitted=$((submitted + 2))
    if ((trains * 12 < SECONDS - end + duration)); then
        $bin submit --config "$run/drover.toml" --class train \
            --payload '{"steps": 20, "step_seconds": 0.5, "checkpoint_every": 2}' >>"$run/ids"
        trains=$((trains + 1))
    fi
    if ! $drained && ((SECONDS >= half)); then
        # Its job goes back with its checkpoint at the deadline and resumes on train-2.
        $bin drain --config "$run/drover.toml" --unit train-1 --deadline 3s --reason "demo: drain mid-job" \
            >>"$run/drain.log" 2>&1 || true
        drained=true
    fi
    clear 2>/dev/null || true
    printf 'Drover demo: %d jobs submitted, %ds left (Ctrl-C to stop)\n\n' "$submitted" $((end - SECONDS))
    $bin status --config "$run/drover.toml" 2>&1 || true
    sleep 2
done
printf '\nmetrics (from http://127.0.0.1:19464/metrics):\n'
curl -s http://127.0.0.1:19464/metrics 2>/dev/null | grep -E '^drover_(jobs_total|units\{.*healthy)' || true
