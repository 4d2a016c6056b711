#!/usr/bin/env bash
# Make sure the services Drover's tests need are up: a RabbitMQ broker, a
# systemd *user* manager reachable over a session bus, and the Alertmanager
# binary (each alert test runs its own on a free port).
#
#   scripts/services.sh up            ensure both services; prints nothing
#   scripts/services.sh env           ensure, then print `export` lines:
#                                       eval "$(scripts/services.sh env)"
#   scripts/services.sh status        one line per service
#   scripts/services.sh down-systemd  stop the private user manager we started
#   scripts/services.sh cluster-up    also a 3-node RabbitMQ cluster (rmq1..3@localhost,
#                                       AMQP on 5673-5675; `env` prints DROVER_CLUSTER_URLS)
#   scripts/services.sh cluster-down  stop those three nodes and remove their data
#
# Written for a Debian 12 machine where we are root and PID 1 is usually not
# systemd. Idempotent; stdout carries only what a subcommand is meant to
# print; progress notes and errors go to stderr; every wait has a deadline.
set -euo pipefail

readonly DEFAULT_AMQP_URL='amqp://guest:guest@127.0.0.1:5672/%2f'
readonly AMQP_HOST=127.0.0.1 AMQP_PORT=5672
readonly RABBIT_DEADLINE=${DROVER_RABBIT_DEADLINE:-90} SYSTEMD_DEADLINE=${DROVER_SYSTEMD_DEADLINE:-30}
readonly RABBIT_LOG_DIR=/var/log/rabbitmq
readonly SYSTEMD_BIN=/lib/systemd/systemd
# sd_booted() checks this directory; `systemd --user` exits 1 without a word
# when it is missing.
readonly BOOTED_MARKER=/run/systemd/system
# Not under /tmp: units with PrivateTmp=yes would not see the notify socket and the bus there.
readonly PRIVATE_RUNTIME_DIR=${DROVER_RUNTIME_DIR:-/run/drover-user}
readonly PID_FILE=$PRIVATE_RUNTIME_DIR/systemd-user.pid
readonly MANAGER_LOG=$PRIVATE_RUNTIME_DIR/systemd-user.log
readonly LOCK_FILE=/tmp/drover-services.lock LOCK_DEADLINE=300
# The optional 3-node cluster (cluster-up): numbers of its nodes, and where their data lives.
readonly CLUSTER_NODES="1 2 3" CLUSTER_DIR=${DROVER_CLUSTER_DIR:-/var/lib/drover-cluster}
readonly CLUSTER_CLI_DEADLINE=${DROVER_CLUSTER_CLI_DEADLINE:-180} CLUSTER_DEADLINE=${DROVER_CLUSTER_DEADLINE:-300}

APT_UPDATED=false

# ---------------------------------------------------------------- helpers --

note() { printf 'services.sh: %s\n' "$*" >&2; }
die() { printf 'services.sh: ERROR: %s\n' "$*" >&2; exit 1; }

have() { command -v "$1" >/dev/null 2>&1; }

pid1_is_systemd() { [[ "$(cat /proc/1/comm 2>/dev/null)" == systemd ]]; }

port_open() {  # host port -> true if a TCP connect succeeds within 2 s
    # shellcheck disable=SC2016  # $1/$2 are expanded by the inner bash
    timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null
}

# host port -> true if an AMQP 0-9-1 broker answers there: the protocol header gets a
# Connection.Start back (a method frame: its first byte is 1). A broker whose app is stopped
# has closed its listeners, so this is "the app is running", without booting an Erlang VM
# for the CLI (which takes over 15 s on a loaded 2-core machine).
amqp_answers() {
    # shellcheck disable=SC2016  # $1/$2 are expanded by the inner bash
    timeout 5 bash -c 'exec 3<>"/dev/tcp/$1/$2" && printf "AMQP\0\0\11\1" >&3 &&
        [[ $(head -c 1 <&3 | od -An -tu1 | tr -d " ") == 1 ]]' _ "$1" "$2" 2>/dev/null
}

# Our own booted-marker confuses Debian maintainer scripts: invoke-rc.d then
# takes the systemd path and `systemctl start` fails (no system bus), which
# breaks e.g. rabbitmq-server's postinst. So hide it while apt runs, if it is
# one we (or a previous run) created: empty, and PID 1 is not systemd.
apt_install() {
    [[ $EUID -eq 0 ]] || die "need root to install: $*"
    local log hid_marker=false rc=0
    log=$(mktemp /tmp/drover-apt.XXXXXX.log)
    if ! pid1_is_systemd && [[ -d $BOOTED_MARKER ]] && rmdir "$BOOTED_MARKER" 2>/dev/null; then
        hid_marker=true
    fi
    note "installing $* (apt log: $log)"
    if ! $APT_UPDATED; then
        timeout 600 apt-get -q update >>"$log" 2>&1 9>&- || rc=$?
        APT_UPDATED=true
    fi
    if [[ $rc -eq 0 ]]; then
        DEBIAN_FRONTEND=noninteractive timeout 900 \
            apt-get install -y -q -o DPkg::Lock::Timeout=120 "$@" >>"$log" 2>&1 9>&- || rc=$?
    fi
    if $hid_marker; then mkdir -p "$BOOTED_MARKER"; fi
    if [[ $rc -ne 0 ]]; then
        tail -n 30 "$log" >&2
        die "apt-get failed (exit $rc) installing: $*; full log in $log"
    fi
    rm -f "$log"
}

ensure_python() {
    have python3 || apt_install python3
    # The Python package's tests make a fresh venv and pip install into it.
    python3 -c 'import venv, ensurepip' 2>/dev/null || apt_install python3-venv python3-pip
}

# --------------------------------------------------------------- RabbitMQ --

rabbit_ping() { timeout 60 rabbitmq-diagnostics -q ping >/dev/null 2>&1; }
# Fails when the node is down *or* when its app was stopped (stop_app).
rabbit_app_running() { timeout 60 rabbitmq-diagnostics -q check_running >/dev/null 2>&1; }

rabbit_fail() {
    local f node_log
    printf 'services.sh: ERROR: %s\n' "$1" >&2
    # The node log is named after the node (rabbit@<host>.log): take the most
    # recently written one. startup_* hold what the launcher printed.
    node_log=$(find "$RABBIT_LOG_DIR" -maxdepth 1 -name '*.log' -printf '%T@ %p\n' 2>/dev/null |
        sort -n | tail -n 1 | cut -d' ' -f2-) || true
    for f in "$node_log" "$RABBIT_LOG_DIR/startup_err" "$RABBIT_LOG_DIR/startup_log"; do
        [[ -s $f ]] || continue
        printf -- '--- tail of %s ---\n' "$f" >&2
        tail -n 20 "$f" >&2
    done
    printf 'services.sh: broker logs are in %s/\n' "$RABBIT_LOG_DIR" >&2
    exit 1
}

rabbit_start_node() {
    note "RabbitMQ node is down; starting it"
    if pid1_is_systemd; then
        timeout 120 systemctl start rabbitmq-server >&2 9>&- || rabbit_fail "systemctl start rabbitmq-server failed"
    else
        # Debian's wrapper drops to the rabbitmq user and writes startup_log/err.
        timeout 120 rabbitmq-server -detached >&2 9>&- || rabbit_fail "rabbitmq-server -detached failed"
    fi
}

ensure_rabbitmq() {
    have rabbitmq-server || apt_install rabbitmq-server
    # Fast path: the broker answers AMQP (no CLI call: each boots an Erlang VM).
    if amqp_answers "$AMQP_HOST" "$AMQP_PORT"; then
        return 0
    fi
    if ! rabbit_ping; then
        rabbit_start_node
    elif ! rabbit_app_running; then
        note "RabbitMQ node is up but its app is stopped; running start_app"
        # Not fatal by itself: the node may be booting already; the wait decides.
        timeout 60 rabbitmqctl -q start_app >&2 9>&- || note "start_app failed; waiting anyway"
    fi
    local end=$((SECONDS + RABBIT_DEADLINE))
    until amqp_answers "$AMQP_HOST" "$AMQP_PORT"; do
        ((SECONDS < end)) || rabbit_fail "RabbitMQ not answering ping and AMQP on $AMQP_HOST:$AMQP_PORT after ${RABBIT_DEADLINE}s"
        sleep 1
    done
}

rabbit_status() {
    local state
    if ! have rabbitmq-server; then state="not installed"
    elif amqp_answers "$AMQP_HOST" "$AMQP_PORT"; then state="running (amqp on $AMQP_HOST:$AMQP_PORT)"
    elif rabbit_ping; then state="node up, app not running"
    else state="down"
    fi
    printf 'rabbitmq: %s\n' "$state"
}

# ----------------------------------------------------------- Alertmanager --

# The alert tests run their own Alertmanager (own port, own storage, no clustering); only the
# binary is needed. Debian's package does not start a service here (policy-rc.d), and where it
# would, the packaged service is stopped: the tests never share one.
ensure_alertmanager() {
    have prometheus-alertmanager && return 0
    apt_install prometheus-alertmanager
    if pid1_is_systemd; then
        timeout 30 systemctl disable --now prometheus-alertmanager >&2 9>&- || true
    fi
    have prometheus-alertmanager || die "prometheus-alertmanager not found after installing it"
}

# ---------------------------------------------------- a 3-node RabbitMQ cluster --
# Three extra nodes rmq1..3@localhost beside the default node (which is never
# touched): AMQP on 5673-5675, management API on 15673-15675, Erlang
# distribution on 25673-25675, data under $CLUSTER_DIR. They share the default
# node's Erlang cookie (/var/lib/rabbitmq/.erlang.cookie), which is what lets
# them cluster: leave it alone.

cluster_node() { echo "rmq$1@localhost"; }
cluster_dir() { echo "$CLUSTER_DIR/rmq$1"; }
cluster_amqp_port() { echo $((5672 + $1)); }

cluster_urls() {
    local n urls=()
    for n in $CLUSTER_NODES; do
        urls+=("amqp://guest:guest@127.0.0.1:$(cluster_amqp_port "$n")/%2f")
    done
    local IFS=,
    echo "${urls[*]}"
}

# Each CLI call boots an Erlang VM: about 0.3 s on an idle machine, half a minute
# on a loaded one. So the checks below look at ports and pid files, and the CLI
# gets a generous deadline.
cluster_ctl() {  # n args... : rabbitmqctl against node n, with a deadline
    local n=$1
    shift
    timeout "$CLUSTER_CLI_DEADLINE" rabbitmqctl -q -n "$(cluster_node "$n")" "$@" 9>&-
}

# Its AMQP listener answers: the node is up and its app runs (stop_app closes it).
cluster_node_running() { port_open 127.0.0.1 "$(cluster_amqp_port "$1")"; }

# The node's Erlang VM, from its pid file, if it still runs.
cluster_node_pid() {
    local pid
    pid=$(cat "$(cluster_dir "$1")/rmq$1.pid" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] && [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == beam.smp ]] || return 1
    echo "$pid"
}

cluster_fail() {  # message [n]: print the node's logs, then die
    printf 'services.sh: ERROR: %s\n' "$1" >&2
    local f d
    d=$(cluster_dir "${2:-1}")
    for f in "$d"/log/*.log "$d"/log/startup_err "$d"/log/startup_log; do
        [[ -s $f ]] || continue
        printf -- '--- tail of %s ---\n' "$f" >&2
        tail -n 20 "$f" >&2
    done
    exit 1
}

cluster_start_node() {  # n: start node n detached (its own ports, files and config)
    local n=$1 d
    d=$(cluster_dir "$n")
    install -d -o rabbitmq -g rabbitmq "$d" "$d/mnesia" "$d/log"
    # Without its own config file the node would read /etc/rabbitmq/rabbitmq.conf
    # and try to listen on 5672; without its own dist port it would take 25672.
    cat >"$d/rabbitmq.conf" <<CONF
listeners.tcp.default = 127.0.0.1:$(cluster_amqp_port "$n")
management.tcp.ip = 127.0.0.1
management.tcp.port = $((15672 + n))
CONF
    echo '[rabbitmq_management].' >"$d/enabled_plugins"
    [[ -e $d/advanced.config ]] || echo '[].' >"$d/advanced.config"
    chown rabbitmq:rabbitmq "$d/rabbitmq.conf" "$d/enabled_plugins" "$d/advanced.config"
    note "starting RabbitMQ node $(cluster_node "$n") (amqp on 127.0.0.1:$(cluster_amqp_port "$n"), data in $d)"
    (
        export RABBITMQ_NODENAME="$(cluster_node "$n")" RABBITMQ_DIST_PORT=$((25672 + n)) \
            RABBITMQ_MNESIA_BASE="$d/mnesia" RABBITMQ_LOG_BASE="$d/log" RABBITMQ_PID_FILE="$d/rmq$n.pid" \
            RABBITMQ_CONFIG_FILE="$d/rabbitmq.conf" RABBITMQ_ADVANCED_CONFIG_FILE="$d/advanced.config" \
            RABBITMQ_ENABLED_PLUGINS_FILE="$d/enabled_plugins"
        timeout 120 rabbitmq-server -detached >&2 9>&-
    ) || cluster_fail "rabbitmq-server -detached failed for $(cluster_node "$n")" "$n"
}

# How long a node's VM may take to write its pid file before a missing VM counts as a failed boot.
readonly CLUSTER_BOOT_GRACE=60

cluster_wait_node() {  # n: until its app runs and its AMQP port answers; 1 if it cannot
    local n=$1 start=$SECONDS end=$((SECONDS + CLUSTER_DEADLINE))
    until cluster_node_running "$n"; do
        if ((SECONDS >= end)); then
            note "$(cluster_node "$n") not running after ${CLUSTER_DEADLINE}s"
            return 1
        fi
        # A node whose boot failed (its app exited) halts its VM: no use waiting out the deadline.
        if ((SECONDS - start > CLUSTER_BOOT_GRACE)) && ! cluster_node_pid "$n" >/dev/null; then
            note "$(cluster_node "$n")'s VM is gone: its boot failed"
            return 1
        fi
        sleep 1
    done
}

# Start every node from empty data and wait for each; 1 if one does not come up.
cluster_start_afresh() {
    local n
    cluster_down
    for n in $CLUSTER_NODES; do cluster_start_node "$n"; done
    for n in $CLUSTER_NODES; do cluster_wait_node "$n" || return 1; done
}

# `<member nodes> <running nodes>` as node n sees them (comma-separated lists):
# from its management API (a CLI call can take half a minute on a busy machine),
# else from rabbitmqctl.
cluster_view() {
    local n=$1
    timeout 20 python3 - "$((15672 + n))" 2>/dev/null <<'PY' && return 0
import base64, json, sys, urllib.request
req = urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}/api/nodes",
                             headers={"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()})
nodes = json.load(urllib.request.urlopen(req, timeout=15))
print(",".join(x["name"] for x in nodes), ",".join(x["name"] for x in nodes if x.get("running")))
PY
    cluster_ctl "$n" cluster_status --formatter json 2>/dev/null | python3 -c '
import json, sys
s = json.load(sys.stdin)
print(",".join(s.get("disk_nodes", [])), ",".join(s.get("running_nodes", [])))'
}

cluster_up() {
    have rabbitmq-server || apt_install rabbitmq-server
    ensure_python
    local n dead=()
    for n in $CLUSTER_NODES; do
        if cluster_node_running "$n"; then continue; fi
        if cluster_node_pid "$n" >/dev/null; then
            note "$(cluster_node "$n") is up but its app is stopped; running start_app"
            cluster_ctl "$n" start_app >&2 || note "start_app failed on $(cluster_node "$n"); waiting anyway"
        else
            dead+=("$n")
        fi
    done
    if ((${#dead[@]})); then
        # A node whose VM is gone (a stopped machine, a killed test) left data that names its old
        # peers; nodes restarted together from such data race each other's feature-flag sync and
        # can fail to boot. The tests need a cluster, not its old data: all three start afresh.
        note "node(s) ${dead[*]} not running: starting the cluster afresh"
        cluster_start_afresh || { note "retrying once"; cluster_start_afresh; } \
            || cluster_fail "the cluster's nodes did not come up twice over" "${dead[0]}"
    else
        for n in $CLUSTER_NODES; do
            cluster_wait_node "$n" || cluster_fail "$(cluster_node "$n") did not come up" "$n"
        done
    fi
    local first=${CLUSTER_NODES%% *} view members running want end
    want=$(wc -w <<<"$CLUSTER_NODES")
    end=$((SECONDS + CLUSTER_DEADLINE))
    while :; do
        view=$(cluster_view "$first") || cluster_fail "cluster_status failed on $(cluster_node "$first")" "$first"
        members=",${view% *},"
        running=",${view#* },"
        for n in $CLUSTER_NODES; do
            [[ $members == *",$(cluster_node "$n"),"* ]] && continue
            note "joining $(cluster_node "$n") to $(cluster_node "$first")'s cluster"
            cluster_ctl "$n" stop_app >&2 || cluster_fail "stop_app failed on $(cluster_node "$n")" "$n"
            # A node with data of another cluster cannot join: it starts afresh.
            cluster_ctl "$n" reset >&2 || cluster_fail "reset failed on $(cluster_node "$n")" "$n"
            cluster_ctl "$n" join_cluster "$(cluster_node "$first")" >&2 \
                || cluster_fail "join_cluster $(cluster_node "$first") failed on $(cluster_node "$n")" "$n"
            cluster_ctl "$n" start_app >&2 || cluster_fail "start_app failed on $(cluster_node "$n")" "$n"
            cluster_wait_node "$n" || cluster_fail "$(cluster_node "$n") did not come up after joining" "$n"
            continue 2
        done
        # Every member running, as the first node sees it.
        [[ $(tr ',' '\n' <<<"${running//,,/,}" | grep -c .) -ge $want ]] && break
        ((SECONDS < end)) || cluster_fail "cluster of $want nodes not formed after ${CLUSTER_DEADLINE}s (running: ${view#* })" "$first"
        sleep 1
    done
}

cluster_down() {
    local n pid
    for n in $(tr ' ' '\n' <<<"$CLUSTER_NODES" | sort -rn); do
        if pid=$(cluster_node_pid "$n"); then
            note "stopping $(cluster_node "$n")"
            cluster_ctl "$n" stop >&2 || note "stop failed on $(cluster_node "$n")"
            # A node that did not stop is killed (by its own pid, nothing else).
            if cluster_node_pid "$n" >/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
        fi
        rm -rf "$(cluster_dir "$n")"
    done
}

cluster_status() {
    local n state
    for n in $CLUSTER_NODES; do
        if cluster_node_running "$n"; then state="running (amqp on 127.0.0.1:$(cluster_amqp_port "$n"))"
        elif cluster_node_pid "$n" >/dev/null; then state="node up, app not running"
        else state="down"
        fi
        printf 'rabbitmq %s: %s\n' "$(cluster_node "$n")" "$state"
    done
}

# ---------------------------------------------------------------- systemd --

is_user_manager() {  # PID -> true if that process is a `systemd --user`
    [[ "$(cat "/proc/$1/comm" 2>/dev/null)" == systemd ]] || return 1
    tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -q -- '--user'
}

# PID from the pid file, if it is still a `systemd --user` (guards against the
# PID having been reused by something else).
manager_pid() {
    local pid
    pid=$(cat "$PID_FILE" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] && is_user_manager "$pid" || return 1
    echo "$pid"
}

# Without systemd as PID 1 every user manager takes the root cgroup as its
# own, so two of them share slices: stopping one kills the other's dbus and
# units. Refuse to start a second one (e.g. under another DROVER_RUNTIME_DIR).
refuse_if_other_manager() {
    local p pid
    for p in /proc/[0-9]*; do
        pid=${p#/proc/}
        is_user_manager "$pid" || continue
        die "another systemd --user (pid $pid) is running; two private managers would share the root cgroup.
  Stop it first (scripts/services.sh down-systemd with its DROVER_RUNTIME_DIR), or use it."
    done
}

# One probe of the user manager over the bus. systemctl only says "offline"
# when the booted-marker is missing, so that counts as not ready.
manager_answers() {
    [[ -S $XDG_RUNTIME_DIR/bus ]] || return 1
    timeout 5 busctl --user status org.freedesktop.systemd1 >/dev/null 2>&1 || return 1
    local state
    state=$(timeout 5 systemctl --user is-system-running 2>/dev/null) || true
    case $state in
        running | degraded | starting | initializing) return 0 ;;
        *) return 1 ;;
    esac
}

# Wait (with deadline) for the manager to answer; if $1 is a PID, give up
# early when that process dies.
wait_manager() {
    local pid=${1:-} end=$((SECONDS + SYSTEMD_DEADLINE))
    until manager_answers; do
        if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
            return 1
        fi
        ((SECONDS < end)) || return 1
        sleep 0.5
    done
}

manager_fail() {
    printf 'services.sh: ERROR: %s\n' "$1" >&2
    if [[ -s $MANAGER_LOG ]]; then
        printf -- '--- tail of %s ---\n' "$MANAGER_LOG" >&2
        tail -n 20 "$MANAGER_LOG" >&2
    fi
    exit 1
}

stop_private_manager() {  # PID; SIGTERM lets it stop its units first
    local pid=$1 end=$((SECONDS + 15))
    kill -TERM "$pid" 2>/dev/null || return 0
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= end)); then
            note "user manager $pid ignored SIGTERM for 15s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.2
    done
}

# A SIGKILLed manager leaves its services (and its dbus-daemon) running in
# the slices it created; a leftover worker would keep consuming from the test
# queues. No other user manager runs (checked before), so whatever is still in
# these slices is a stale child of ours. Our own ancestors are spared.
kill_stale_unit_processes() {
    local pid ancestors=" " p=$$ stale=()
    while [[ $p -gt 1 ]]; do
        ancestors+="$p "
        p=$(awk '/^PPid:/ {print $2}' "/proc/$p/status" 2>/dev/null) || break
    done
    while read -r pid; do
        [[ -n $pid && $ancestors != *" $pid "* ]] && stale+=("$pid")
    done < <(find /sys/fs/cgroup -regextype posix-extended \
                -regex '.*/(app|session|background)\.slice/(.*/)?cgroup\.procs' \
                -exec cat {} + 2>/dev/null | sort -un)
    [[ ${#stale[@]} -gt 0 ]] || return 0
    note "stopping ${#stale[@]} process(es) left behind by a dead user manager: ${stale[*]}"
    kill -TERM "${stale[@]}" 2>/dev/null || true
    local end=$((SECONDS + 5))
    while any_alive "${stale[@]}" && ((SECONDS < end)); do sleep 0.2; done
    kill -KILL "${stale[@]}" 2>/dev/null || true
}

any_alive() {
    local pid
    for pid; do kill -0 "$pid" 2>/dev/null && return 0; done
    return 1
}

start_private_manager() {
    [[ -x $SYSTEMD_BIN ]] || apt_install systemd dbus dbus-user-session
    have busctl || apt_install systemd
    have dbus-daemon || apt_install dbus dbus-user-session
    pid1_is_systemd || { refuse_if_other_manager; kill_stale_unit_processes; }
    mkdir -p "$BOOTED_MARKER"
    # A stale socket from a killed manager would make the wait below pass early.
    rm -f "$XDG_RUNTIME_DIR/bus"
    note "starting a private systemd user manager (XDG_RUNTIME_DIR=$XDG_RUNTIME_DIR)"
    # The manager's environment becomes every unit's environment, so give it a
    # small, fixed one instead of whatever the first caller's shell had.
    env -i HOME="${HOME:-/root}" USER="$(id -un)" LOGNAME="$(id -un)" SHELL=/bin/bash \
        LANG="${LANG:-C.UTF-8}" PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        XDG_RUNTIME_DIR="$XDG_RUNTIME_DIR" \
        setsid "$SYSTEMD_BIN" --user </dev/null >"$MANAGER_LOG" 2>&1 9>&- &
    local pid=$!
    echo "$pid" >"$PID_FILE"
    if ! wait_manager "$pid"; then
        if ! kill -0 "$pid" 2>/dev/null; then
            manager_fail "systemd user manager (pid $pid) exited during startup"
        fi
        stop_private_manager "$pid"  # don't leave a half-started one behind
        manager_fail "systemd user manager (pid $pid) did not answer on $DBUS_SESSION_BUS_ADDRESS within ${SYSTEMD_DEADLINE}s; stopped it"
    fi
    record_bus_pid  # in case setsid had to fork
}

# Write the PID of whoever owns org.freedesktop.systemd1 on our bus.
record_bus_pid() {
    local pid
    pid=$(timeout 5 busctl --user status org.freedesktop.systemd1 2>/dev/null | sed -n 's/^PID=//p') || true
    if [[ $pid =~ ^[0-9]+$ ]]; then echo "$pid" >"$PID_FILE"; fi
}

# Create the runtime dir 0700, or insist an existing one already is ours and
# 0700: never chmod a directory someone pointed us at (think DROVER_RUNTIME_DIR=/tmp).
ensure_private_dir() {
    local dir=$1
    if [[ ! -d $dir ]]; then
        (umask 077 && mkdir -p "$dir") || die "cannot create $dir"
    fi
    local owner_mode
    owner_mode=$(stat -c '%u %a' "$dir")
    [[ $owner_mode == "$(id -u) 700" ]] \
        || die "$dir must be owned by uid $(id -u) with mode 0700 (is: uid/mode $owner_mode)"
}

ensure_systemd() {
    # A real systemd box with a user bus already: just use it.
    local uid_dir
    uid_dir=/run/user/$(id -u)
    if pid1_is_systemd && [[ -S ${XDG_RUNTIME_DIR:-$uid_dir}/bus ]]; then
        export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-$uid_dir}
        export DBUS_SESSION_BUS_ADDRESS=unix:path=$XDG_RUNTIME_DIR/bus
        wait_manager || die "user bus $XDG_RUNTIME_DIR/bus exists but the user manager does not answer"
        return 0
    fi

    export XDG_RUNTIME_DIR=$PRIVATE_RUNTIME_DIR
    export DBUS_SESSION_BUS_ADDRESS=unix:path=$XDG_RUNTIME_DIR/bus
    ensure_private_dir "$XDG_RUNTIME_DIR"
    mkdir -p "$BOOTED_MARKER"      # may have been removed since last run

    local pid
    if pid=$(manager_pid); then
        # Reuse it; it may still be starting, so wait before judging it.
        wait_manager "$pid" && return 0
        note "user manager $pid does not answer; replacing it"
        stop_private_manager "$pid"
    elif manager_answers; then
        # Pid file lost but a manager serves our bus: adopt it rather than
        # start a second one on the same runtime dir.
        record_bus_pid
        return 0
    fi
    start_private_manager
    timeout 30 systemctl --user daemon-reload >&2 \
        || manager_fail "systemctl --user daemon-reload failed"
}

systemd_status() {
    local pid state
    if pid1_is_systemd && [[ -S ${XDG_RUNTIME_DIR:-/run/user/$(id -u)}/bus ]]; then
        export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/run/user/$(id -u)}
        pid="(session manager)"
    else
        export XDG_RUNTIME_DIR=$PRIVATE_RUNTIME_DIR
        pid=$(manager_pid) || { printf 'systemd-user: not running (no manager for %s)\n' "$XDG_RUNTIME_DIR"; return 0; }
    fi
    export DBUS_SESSION_BUS_ADDRESS=unix:path=$XDG_RUNTIME_DIR/bus
    state=$(timeout 5 systemctl --user is-system-running 2>/dev/null) || true
    printf 'systemd-user: %s (pid %s, bus %s)\n' "${state:-not answering}" "$pid" "$DBUS_SESSION_BUS_ADDRESS"
}

down_systemd() {
    local pid
    if pid=$(manager_pid); then
        stop_private_manager "$pid"
    fi
    rm -f "$PID_FILE" "$PRIVATE_RUNTIME_DIR/bus"
}

# ------------------------------------------------------------------- main --

# Tests may call us in parallel; without a lock two callers could each start
# a user manager or race apt. Held until the script exits; whatever may spawn
# a daemon (apt postinst, rabbitmq, systemd) gets `9>&-` so that daemon does
# not inherit the fd and hold the lock forever.
take_lock() {
    exec 9>"$LOCK_FILE"
    flock -w "$LOCK_DEADLINE" 9 \
        || die "another services.sh still holds $LOCK_FILE after ${LOCK_DEADLINE}s"
}

# Tools some tests drive: openssl (a CA and a certificate for the TLS alert tests), htpasswd
# (the bcrypt hash of Alertmanager's web config), tmux (a terminal for the live drain view),
# polkitd.
ensure_test_tools() {
    have openssl || apt_install openssl
    have htpasswd || apt_install apache2-utils
    have tmux || apt_install tmux
    # polkitd and a bus of its own: the test of the package's polkit rule.
    [[ -x /usr/lib/polkit-1/polkitd ]] && have pkcheck || apt_install polkitd
    have dbus-daemon || apt_install dbus-daemon
}

# The page's browser tests (tests/web.rs) drive headless Chromium over WebDriver.
ensure_chromium() {
    { have chromium && have chromedriver; } || apt_install chromium chromium-driver
}

ensure_all() {
    take_lock
    ensure_python
    ensure_chromium
    ensure_rabbitmq
    ensure_alertmanager
    ensure_test_tools
    ensure_systemd
}

print_env() {
    # %q quoting keeps eval safe whatever the values contain.
    printf 'export DROVER_AMQP_URL=%q\n' "${DROVER_AMQP_URL:-$DEFAULT_AMQP_URL}"
    printf 'export DROVER_SYSTEMD_BUS=user\n'
    printf 'export XDG_RUNTIME_DIR=%q\n' "$XDG_RUNTIME_DIR"
    printf 'export DBUS_SESSION_BUS_ADDRESS=%q\n' "$DBUS_SESSION_BUS_ADDRESS"
    printf 'export DROVER_CLUSTER_URLS=%q\n' "${DROVER_CLUSTER_URLS:-$(cluster_urls)}"
}

usage() {
    echo "usage: $0 {up|env|status|down-systemd|cluster-up|cluster-down}" >&2
    exit 2
}

main() {
    [[ $# -eq 1 ]] || usage
    case $1 in
        up) ensure_all ;;
        env) ensure_all; print_env ;;
        status) rabbit_status; cluster_status; systemd_status ;;
        down-systemd) take_lock; down_systemd ;;
        cluster-up) take_lock; cluster_up ;;
        cluster-down) take_lock; cluster_down ;;
        *) usage ;;
    esac
}

main "$@"
