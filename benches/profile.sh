#!/usr/bin/env bash
# Where a job's cost goes (BENCHMARKS.md, "Where a job's cost goes"): instruction counts per job
# under callgrind, attributed to parts of the job's path, and the broker's CPU per job read
# from /proc. Needs RabbitMQ (scripts/services.sh up; DROVER_AMQP_URL overrides the loopback
# default), valgrind, python3 and jq. Prints the tables; the raw profiles stay in $OUT.
#
#   benches/profile.sh                 everything (about 3 minutes on 2 vCPUs)
#   benches/profile.sh callgrind       the instruction profiles only
#   benches/profile.sh broker          the broker CPU and worker memory rounds only
#   benches/profile.sh worker          the worker's own CPU per job (exec outside systemd, exec on
#                                      the systemd path, persistent), from /proc, no valgrind
#
# Knobs: DROVER_PROFILE_JOBS (2000, callgrind, persistent and plain), DROVER_PROFILE_EXEC_JOBS
# (1000, callgrind, exec), DROVER_PROFILE_BROKER_JOBS (20000), DROVER_PROFILE_ROUNDS (3),
# DROVER_PROFILE_OUT (a fresh temporary directory), DROVER_PROFILE_WORKER_JOBS (3000 exec jobs,
# 4x as many persistent), DROVER_PROFILE_BASELINE (worker: another drover binary, same rounds).
#
# Valgrind 3.19 does not know pidfd_open: under callgrind the worker's probe fails and it starts
# exec-mode handlers through std's fork (its fallback), so the callgrind exec case measures that
# path; `worker` measures the one used outside valgrind.
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
JOBS=${DROVER_PROFILE_JOBS:-2000}
EXEC_JOBS=${DROVER_PROFILE_EXEC_JOBS:-1000}
BROKER_JOBS=${DROVER_PROFILE_BROKER_JOBS:-20000}
ROUNDS=${DROVER_PROFILE_ROUNDS:-3}
OUT=${DROVER_PROFILE_OUT:-$(mktemp -d -t drover-profile.XXXXXX)}
URL=${DROVER_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
mkdir -p "$OUT"

# The bench build also builds the drover binary (as benches/throughput.rs uses it).
# DROVER_PROFILE_HELPER: an already built profile_jobs (then nothing is built).
helper=${DROVER_PROFILE_HELPER:-$(cargo build --quiet --release --bench profile_jobs --message-format=json |
    jq -r 'select(.reason == "compiler-artifact" and .target.name == "profile_jobs" and .executable != null) | .executable')}
drover="${CARGO_TARGET_DIR:-target}/release/drover"
[ -x "$helper" ] && [ -x "$drover" ] || { echo "build failed" >&2; exit 1; }
handler="$PWD/benches/noop_handler.py"

# new_case NAME CLASS_BODY: sets $cfg and $queue for a fresh prefix.
new_case() {
    local prefix="prof-$1-$(head -c4 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    cfg="$OUT/$prefix.toml"
    queue="$prefix.jobs.noop"
    printf '[broker]\nurl = "%s"\nprefix = "%s"\nqueue_expires = "10m"\n\n[classes.noop]\n%s\n' \
        "$URL" "$prefix" "$2" >"$cfg"
}
persistent_body="mode = \"persistent\"
command = [\"python3\", \"$handler\"]
prefetch = 1
timeout = \"1m\"
deadline = \"1h\"
wait_ready = true
ready_timeout = \"5m\""
exec_body='mode = "exec"
command = ["/bin/true"]
prefetch = 1
timeout = "1m"
deadline = "1h"'

load() { "$drover" submit --config "$cfg" --class noop --count "$1" >/dev/null; }

# Runs `drover work` on the case under callgrind: counters zeroed once it has subscribed,
# dumped once the queue is drained. Prints "jobs dumpfile".
callgrind_worker() {
    local name=$1 jobs=$2
    load "$jobs"
    valgrind --tool=callgrind --callgrind-out-file="$OUT/$name.cg" \
        "$drover" work --config "$cfg" --class noop --instance "prof-$name" 2>"$OUT/$name.log" &
    local pid=$!
    "$helper" wait "$queue" subscribed >/dev/null
    callgrind_control -z "$pid" >/dev/null
    local c0
    c0=$("$helper" ready "$queue")
    "$helper" wait "$queue" drained >/dev/null
    sleep 3 # the job in flight
    callgrind_control -d "$pid" >/dev/null
    kill -TERM "$pid"
    wait "$pid" || true
    echo "$c0 $(ls "$OUT/$name.cg".* | head -1)"
}

callgrind_plain() {
    local jobs=$1
    new_case plain "$persistent_body"
    load "$jobs"
    valgrind --tool=callgrind --callgrind-out-file="$OUT/plain.cg" "$helper" plain "$queue" "$jobs" \
        >/dev/null 2>"$OUT/plain.log" &
    local pid=$!
    "$helper" wait "$queue" subscribed >/dev/null
    callgrind_control -z "$pid" >/dev/null
    local c0
    c0=$("$helper" ready "$queue")
    wait "$pid"
    echo "$c0 $OUT/plain.cg"
}

run_callgrind() {
    echo "## callgrind ($(date -u +%FT%TZ), load average $(cut -d' ' -f1-3 /proc/loadavg))"
    local p e x
    p=$(callgrind_plain "$JOBS")
    new_case persistent "$persistent_body"
    e=$(callgrind_worker persistent "$JOBS")
    new_case exec "$exec_body"
    x=$(callgrind_worker exec "$EXEC_JOBS")
    echo "(load average after: $(cut -d' ' -f1-3 /proc/loadavg))"
    python3 benches/profile_table.py "plain:${p/ /:}" "persistent:${e/ /:}" "exec:${x/ /:}"
}

# --------------------------------------------------------------------- broker CPU, RSS --
broker_pid() {
    local port
    port=$(python3 -c 'import sys,urllib.parse as u; print(u.urlparse(sys.argv[1]).port or 5672)' "$URL")
    ss -ltnpH "sport = :$port" | grep -o 'beam.smp",pid=[0-9]*' | head -1 | cut -d= -f2
}
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# broker_round KIND: prints "kind jobs broker_ticks idle_ticks_per_s window_s hwm_kb load1"
broker_round() {
    local kind=$1 bpid=$2 pid t0 t1 s0 s1 i0 hwm=-
    new_case "broker-$kind" "$persistent_body"
    load "$BROKER_JOBS"
    # The broker's background CPU (other users of the machine) over 3 s, to subtract.
    i0=$(ticks "$bpid")
    sleep 3
    local idle=$(( $(ticks "$bpid") - i0 ))
    if [ "$kind" = plain ]; then
        "$helper" plain "$queue" "$BROKER_JOBS" >/dev/null &
    else
        "$drover" work --config "$cfg" --class noop --instance "prof-broker" 2>"$OUT/broker-$kind.log" &
    fi
    pid=$!
    "$helper" wait "$queue" subscribed >/dev/null
    t0=$(ticks "$bpid"); s0=$(date +%s.%N)
    local c0
    c0=$("$helper" ready "$queue")
    "$helper" wait "$queue" drained >/dev/null
    t1=$(ticks "$bpid"); s1=$(date +%s.%N)
    if [ "$kind" = drover ]; then
        sleep 0.2
        hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
        kill -TERM "$pid"
    fi
    wait "$pid" || true
    echo "$kind $c0 $((t1 - t0)) $(echo "$idle / 3" | bc -l) $(echo "$s1 - $s0" | bc -l) $hwm $(cut -d' ' -f1 /proc/loadavg)"
}

run_broker() {
    local bpid
    bpid=$(broker_pid)
    echo "## broker CPU per job (beam.smp pid $bpid, $(getconf CLK_TCK) ticks/s, $BROKER_JOBS jobs per run, $(date -u +%FT%TZ))"
    for r in $(seq "$ROUNDS"); do
        broker_round plain "$bpid"
        broker_round drover "$bpid"
    done | tee "$OUT/broker.txt" | python3 benches/profile_table.py --broker "$(getconf CLK_TCK)"
}

# ------------------------------------------------------------------- worker CPU per job --
WORKER_JOBS=${DROVER_PROFILE_WORKER_JOBS:-3000} # exec; persistent runs 4x as many

# worker_round LABEL BINARY BODY SYSTEMD_PATH JOBS: prints "label jobs worker_ticks window_s load1"
# (the worker's own utime + stime over the window; its handlers' time is theirs).
worker_round() {
    local label=$1 bin=$2 body=$3 sd=$4 n=$5 pid t0 t1 s0 s1 c0
    new_case "worker-$label" "$body"
    load "$n"
    if [ "$sd" = 1 ]; then
        INVOCATION_ID=profile "$bin" work --config "$cfg" --class noop --instance "prof-$label" 2>"$OUT/worker-$label.log" &
    else
        "$bin" work --config "$cfg" --class noop --instance "prof-$label" 2>"$OUT/worker-$label.log" &
    fi
    pid=$!
    "$helper" wait "$queue" subscribed >/dev/null
    t0=$(ticks "$pid"); s0=$(date +%s.%N)
    c0=$("$helper" ready "$queue")
    "$helper" wait "$queue" drained >/dev/null
    t1=$(ticks "$pid"); s1=$(date +%s.%N)
    kill -TERM "$pid"
    wait "$pid" || true
    echo "$label $c0 $((t1 - t0)) $(echo "$s1 - $s0" | bc -l) $(cut -d' ' -f1 /proc/loadavg)"
}

run_worker() {
    local base=${DROVER_PROFILE_BASELINE:-}
    echo "## worker CPU per job ($(getconf CLK_TCK) ticks/s, $WORKER_JOBS jobs per run, $(date -u +%FT%TZ))"
    echo "| round | case | binary | jobs | worker CPU µs/job | jobs/s | load (1 min) |"
    echo "|---|---|---|---|---|---|---|"
    local tck
    tck=$(getconf CLK_TCK)
    for r in $(seq "$ROUNDS"); do
        for c in exec exec-sd persistent; do
            # Persistent jobs are 5x faster: 4x as many, for the same clock-tick resolution.
            local body=$exec_body sd=0 n=$WORKER_JOBS
            [ "$c" = persistent ] && body=$persistent_body && n=$((WORKER_JOBS * 4))
            [ "$c" = exec-sd ] && sd=1
            for b in this ${base:+baseline}; do
                local bin=$drover
                [ "$b" = baseline ] && bin=$base
                worker_round "$c" "$bin" "$body" "$sd" "$n" | while read -r label jobs t secs load; do
                    printf '| %s | %s | %s | %s | %.0f | %.0f | %s |\n' "$r" "$label" "$b" "$jobs" \
                        "$(echo "$t / $tck / $jobs * 1000000" | bc -l)" "$(echo "$jobs / $secs" | bc -l)" "$load"
                done
            done
        done
    done
}

case $what in
callgrind) run_callgrind ;;
broker) run_broker ;;
worker) run_worker ;;
all) run_callgrind; run_broker ;;
*) echo "usage: $0 [all|callgrind|broker|worker]" >&2; exit 2 ;;
esac
echo "(raw profiles: $OUT)"
