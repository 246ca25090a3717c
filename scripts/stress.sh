#!/usr/bin/env bash
# Runs the whole test suite several times in a row (default 3) while stress-ng keeps every
# core busy: the check that no test depends on timing a loaded machine breaks. Installs
# stress-ng if missing (Debian/Ubuntu). Usage: scripts/stress.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."

runs="${1:-3}"
if ! command -v stress-ng >/dev/null 2>&1; then
    echo "stress-ng not found: installing it"
    sudo=""
    if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then sudo="sudo"; fi
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends stress-ng
fi

# Build first, unloaded, so that the runs measure the tests, not the compiler.
cargo nextest run --locked --workspace --all-targets --no-run

cores=$(nproc)
stress-ng --cpu "$cores" --timeout 0 --quiet &
load=$!
trap 'kill "$load" 2>/dev/null || true' EXIT

for run in $(seq 1 "$runs"); do
    echo "==> run $run of $runs with $cores cores loaded"
    cargo nextest run --locked --workspace --all-targets --no-fail-fast --config-file scripts/nextest.toml
done
echo "==> $runs runs passed under load"
