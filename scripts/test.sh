#!/usr/bin/env bash
# The one test command: set-up, builds, Rust tests, then the end-to-end suite against real
# processes (tansu broker, model server, runtime) on 127.0.0.1. Exits non-zero on any failure.
#   scripts/test.sh [extra pytest arguments]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

section() { printf '\n==== %s ====\n' "$*"; }

section "Set-up"
scripts/setup.sh

section "Build: plugins (wasm32-wasip2, profile plugin)"
cargo build -p fraud-plugin -p credit-scoring-plugin -p hostile-plugin -p plugin-template \
    -p passthrough-plugin --target wasm32-wasip2 --profile plugin

section "Build: Python plugin (componentize-py, from wit/ alone)"
plugins/fraud-python/build.sh

section "Build: JavaScript plugin (componentize-qjs, from wit/ alone)"
plugins/fraud-js/build.sh

# One debug build serves both the Rust tests and the end-to-end runtime: a second (release)
# build would double the cold CI time for no extra coverage.
section "Build: workspace (debug)"
cargo build --workspace --all-targets

export FRAUD_PLUGIN="$ROOT/target/wasm32-wasip2/plugin/fraud_plugin.wasm"
export CREDIT_PLUGIN="$ROOT/target/wasm32-wasip2/plugin/credit_scoring_plugin.wasm"
export PYTHON_PLUGIN="$ROOT/target/wasm32-wasip2/plugin/fraud_python.wasm"
export HOSTILE_PLUGIN="$ROOT/target/wasm32-wasip2/plugin/hostile_plugin.wasm"
export RUNTIME_BIN="$ROOT/target/debug/runtime"

section "Rust tests: cargo test --workspace"
cargo test --workspace

section "End-to-end tests: pytest tests/e2e"
"$ROOT/.venv/bin/python" -m pytest tests/e2e -q "$@"

# The benchmark harness on a few thousand records with the debug build: every variant runs and
# its output is checked (counts, ids, scores, committed offsets); no speed is claimed.
section "Benchmark smoke: bench/run.sh --smoke"
bench/run.sh --smoke --skip-build --runtime "$RUNTIME_BIN" --require-b3

section "All tests passed"
