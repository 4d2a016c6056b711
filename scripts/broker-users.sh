#!/usr/bin/env bash
# Least privilege on the broker: one RabbitMQ user per kind of Drover process, each with the
# configure / write / read patterns it needs on the queues and exchanges of one prefix.
#
#   scripts/broker-users.sh create PREFIX [--users NAME] [--vhost V] [--credentials DIR]
#   scripts/broker-users.sh delete PREFIX [--users NAME] [--vhost V]
#
# Users are NAME-worker, NAME-supervisor and NAME-operator (NAME defaults to PREFIX); their
# random passwords are written to DIR/worker, DIR/supervisor, DIR/operator (root-only, 0600;
# default /etc/drover/credentials), the files `[credentials.*] password_file` names.
#
#   worker      consumes jobs, publishes retries, dead letters and job events, reads verdicts;
#               may NOT publish on PREFIX.control (no drain orders, no forged verdicts)
#   supervisor  everything under PREFIX (control exchange, its own queue, verdicts)
#   operator    publishes jobs and orders (PREFIX.control), reads events and answers
set -euo pipefail
[[ $# -ge 2 ]] || { sed -n '2,16p' "$0" >&2; exit 2; }
action=$1 prefix=$2; shift 2
users=$prefix vhost=/ dir=/etc/drover/credentials
while [[ $# -gt 0 ]]; do
    case $1 in
        --users) users=$2; shift 2 ;;
        --vhost) vhost=$2; shift 2 ;;
        --credentials) dir=$2; shift 2 ;;
        *) echo "broker-users.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
p=$(printf '%s' "$prefix" | sed 's/[.[\*^$()+?{|]/\\&/g')
gen='amq\.gen-.*'

# role configure write read
perms() {
    case $1 in
        worker) echo "^($gen|$p\\.(jobs|dead|delay|lease|events|control)(\\..*)?)\$" \
                     "^(amq\\.default|$gen|$p\\.(jobs|dead|delay|lease|events)(\\..*)?)\$" \
                     "^($gen|$p\\..*)\$" ;;
        supervisor) echo "^($gen|$p\\..*)\$" "^(amq\\.default|$gen|$p\\..*)\$" "^($gen|$p\\..*)\$" ;;
        operator) echo "^($gen|$p\\..*)\$" "^(amq\\.default|$gen|$p\\.(control|events))\$" "^($gen|$p\\..*)\$" ;;
    esac
}

for role in worker supervisor operator; do
    user=$users-$role
    case $action in
        create)
            install -d -m 0700 "$dir"
            password=$(head -c 24 /dev/urandom | base64 | tr -d '/+=' | head -c 32)
            (umask 077 && printf '%s\n' "$password" >"$dir/$role")
            if rabbitmqctl -q list_users | awk '{print $1}' | grep -qx -- "$user"; then
                rabbitmqctl -q change_password "$user" "$password" >/dev/null
            else
                rabbitmqctl -q add_user "$user" "$password" >/dev/null
            fi
            read -r configure write read < <(perms "$role")
            rabbitmqctl -q set_permissions -p "$vhost" "$user" "$configure" "$write" "$read" >/dev/null
            echo "$user: configure '$configure' write '$write' read '$read'; password in $dir/$role"
            ;;
        delete) rabbitmqctl -q delete_user "$user" >/dev/null 2>&1 || true ;;
        *) echo "broker-users.sh: create or delete" >&2; exit 2 ;;
    esac
done
