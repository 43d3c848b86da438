#!/usr/bin/env bash
# Builds the JavaScript fraud plugin into a WebAssembly component from wit/ alone, with
# componentize-qjs (QuickJS inside; scripts/setup.sh installs the tool). --sync: the runtime's
# wasmtime runs components without component-model async.
#
#   plugins/fraud-js/build.sh [OUTPUT.wasm]   (default target/wasm32-wasip2/plugin/fraud_js.wasm)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

QJS="$ROOT/.tools/js/node_modules/.bin/componentize-qjs"
OUTPUT="${1:-target/wasm32-wasip2/plugin/fraud_js.wasm}"

if [[ ! -x "$QJS" ]]; then
    echo "componentize-qjs is not in .tools/js: run scripts/setup.sh first" >&2
    exit 1
fi
mkdir -p "$(dirname "$OUTPUT")"
"$QJS" --wit wit --world plugin --js plugins/fraud-js/fraud.js --sync -o "$OUTPUT.partial" >/dev/null
mv "$OUTPUT.partial" "$OUTPUT"
echo "built $OUTPUT ($(du -h "$OUTPUT" | cut -f1))"
