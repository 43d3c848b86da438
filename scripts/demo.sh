#!/usr/bin/env bash
# The fraud-scoring demo in one command, on a fresh machine:
#   scripts/demo.sh [--count N] [--seed S] [--backend onnx|tf-serving]
# Sets up only what the demo needs (scripts/setup.sh --demo; the full set-up with
# --backend tf-serving, which needs TensorFlow), builds the runtime (profile `demo`: unoptimised,
# no debug information; a cold build takes a third of `release`'s) and the fraud plugin, then hands over
# to scripts/demo.py, which starts a tansu broker on 127.0.0.1 (and, with --backend tf-serving,
# the model server; by default the model runs inside the runtime), streams synthetic
# transactions through the runtime, prints the scores, and stops every process it started on
# the way out (also on an error, Ctrl-C or SIGTERM). Each step says how long it took.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

STARTED=$SECONDS
TIMES=()
section() { printf '\n==== %s ====\n' "$*"; }
# Runs a step and remembers how long it took.
timed() {
    local name="$1" began=$SECONDS
    shift
    section "$name"
    "$@"
    TIMES+=("$name: $((SECONDS - began)) s")
    printf '[%s: %d s]\n' "$name" "$((SECONDS - began))"
}

setup=(scripts/setup.sh --demo)
python="$ROOT/.venv-demo/bin/python"
for arg in "$@"; do
    if [[ "$arg" == "tf-serving" || "$arg" == "--backend=tf-serving" ]]; then
        setup=(scripts/setup.sh)
        python="$ROOT/.venv/bin/python"
    fi
done

timed "Set-up" "${setup[@]}"
timed "Build: runtime (profile demo)" cargo build --profile demo -p streaminfer-runtime
timed "Build: fraud plugin (wasm32-wasip2)" cargo build -p fraud-plugin --target wasm32-wasip2 --profile plugin

status=0
timed "Demo" "$python" scripts/demo.py \
    --runtime "$ROOT/target/demo/runtime" \
    --plugin "$ROOT/target/wasm32-wasip2/plugin/fraud_plugin.wasm" \
    "$@" || status=$?

section "Time taken"
printf '  %s\n' "${TIMES[@]}"
printf '  from the start to the end: %d s\n' "$((SECONDS - STARTED))"
exit "$status"
