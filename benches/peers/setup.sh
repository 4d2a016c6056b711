#!/usr/bin/env bash
# Installs the peers of benches/throughput.rs (Dramatiq, pinned in requirements.lock) into a
# virtual environment: benches/peers/setup.sh DIR (the bench passes one under its target dir).
# Prints the environment's bin directory.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv=${1:?usage: setup.sh VENV_DIR}
if [ ! -x "$venv/bin/dramatiq" ] || ! cmp -s "$here/requirements.lock" "$venv/requirements.lock"; then
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --no-deps --require-hashes -r "$here/requirements.lock" >&2
    cp "$here/requirements.lock" "$venv/requirements.lock"
fi
echo "$venv/bin"
