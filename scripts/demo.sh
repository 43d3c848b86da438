#!/usr/bin/env bash
# The fraud-scoring demo in one command, on a fresh machine:
#   scripts/demo.sh [--count N] [--seed S] [--backend onnx|tf-serving]
# Sets up (scripts/setup.sh), builds the runtime and the fraud plugin, then hands over to
# scripts/demo.py, which starts a tansu broker on 127.0.0.1 (and, with --backend tf-serving, the
# model server; by default the model runs inside the runtime), streams
# synthetic transactions through the runtime, prints the scores, and stops every process it
# started on the way out (also on an error, Ctrl-C or SIGTERM).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

section() { printf '\n==== %s ====\n' "$*"; }

section "Set-up"
scripts/setup.sh

section "Build: runtime (release) and fraud plugin (wasm32-wasip2)"
cargo build --release -p streaminfer-runtime
cargo build -p fraud-plugin --target wasm32-wasip2 --profile plugin

section "Demo"
exec "$ROOT/.venv/bin/python" scripts/demo.py \
    --runtime "$ROOT/target/release/runtime" \
    --plugin "$ROOT/target/wasm32-wasip2/plugin/fraud_plugin.wasm" \
    "$@"
