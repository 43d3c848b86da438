#!/usr/bin/env bash
# The benchmark in one command, on a fresh machine: set-up, builds, then bench/run.py.
#
#   bench/run.sh [--skip-build] [--smoke] [--runtime PATH] [other bench/run.py options]
#
#   1. scripts/setup.sh (Debian packages, wasm32-wasip2, .venv with TensorFlow for the model
#      server, tansu), a no-op when done before.
#   2. .venv-bench, pinned by bench/requirements.txt and bench/requirements-nodeps.txt; pip runs
#      again only when those files change (a stamp holds their SHA-256).
#   3. Unless --skip-build: the release runtime and plugin-bench, and the fraud and pass-through
#      plugins (wasm32-wasip2, profile plugin).
#   4. bench/run.py with the remaining arguments. --smoke: a few thousand records, correctness
#      only, no BENCHMARKS.md. --runtime PATH: another runtime binary (CI: target/debug/runtime).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PYTHON="${PYTHON:-python3}"
VENV="$ROOT/.venv-bench"
say() { printf '[bench] %s\n' "$*"; }

skip_build=0
for arg in "$@"; do
    if [[ "$arg" == "--skip-build" ]]; then skip_build=1; fi
done

scripts/setup.sh

# shellcheck source=scripts/venv.sh
source "$ROOT/scripts/venv.sh"
ensure_venv "$VENV" bench/requirements.txt bench/requirements-nodeps.txt

if ((skip_build)); then
    say "skipping builds (--skip-build)"
else
    say "building the release runtime and plugin-bench"
    cargo build --release -p streaminfer-runtime -p streaminfer-bench
    say "building the fraud and pass-through plugins (wasm32-wasip2, profile plugin)"
    cargo build -p fraud-plugin -p passthrough-plugin --target wasm32-wasip2 --profile plugin
fi

command="bench/run.sh"
if (($#)); then command+="$(printf ' %q' "$@")"; fi
BENCH_COMMAND="$command" exec "$VENV/bin/python" bench/run.py "$@"
