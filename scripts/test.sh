#!/usr/bin/env bash
# Runs Drover's tests: unit tests of the pure decisions and integration tests against a real
# RabbitMQ (and, for the supervisor, a real systemd user manager; for failover, a 3-node cluster), started by
# scripts/services.sh when they are not running.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/services.sh env)"
# The cluster tests' three extra RabbitMQ nodes (rmq1..3@localhost on 5673-5675).
scripts/services.sh cluster-up
cargo build --quiet --workspace --all-targets  # benches too, so that they keep compiling
# The drift bench's oracle has tests of its own; the bench runs without the test harness.
oracle_tests="$(mktemp)"
rustc --edition 2021 --test -O benches/support/oracle.rs -o "$oracle_tests"
"$oracle_tests" -q
rm -f "$oracle_tests"
exec cargo test --workspace --lib --bins --tests -- --test-threads "${DROVER_TEST_THREADS:-4}" "$@"
