#!/usr/bin/env bash
# Builds the Python fraud plugin (app.py) into a WebAssembly component implementing the `plugin`
# world of wit/, with componentize-py from .venv (scripts/setup.sh installs it, pinned in
# requirements.txt). The bindings are generated inside the build; nothing is written to the tree.
#
#   plugins/fraud-python/build.sh [OUTPUT.wasm]   (default: target/wasm32-wasip2/plugin/fraud_python.wasm)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

COMPONENTIZE="$ROOT/.venv/bin/componentize-py"
OUTPUT="${1:-target/wasm32-wasip2/plugin/fraud_python.wasm}"

if [[ ! -x "$COMPONENTIZE" ]]; then
    echo "componentize-py is not in .venv: run scripts/setup.sh first" >&2
    exit 1
fi
mkdir -p "$(dirname "$OUTPUT")"
# Only app.py's folder is on the component's Python path: the standard library comes with
# componentize-py, and nothing from .venv's site-packages gets in.
"$COMPONENTIZE" -q -d wit -w plugin componentize -p plugins/fraud-python app -o "$OUTPUT.partial"
mv "$OUTPUT.partial" "$OUTPUT"
echo "built $OUTPUT ($(du -h "$OUTPUT" | cut -f1))"
