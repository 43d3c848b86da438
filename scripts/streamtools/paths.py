"""Where things are in the repository. Environment variables override the build outputs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TANSU = REPO / ".tools" / "bin" / "tansu"
MODEL_SERVER = REPO / "scripts" / "model_server.py"
FRAUD_MODEL_BASE = REPO / "models" / "fraud" / "saved_model"
FRAUD_CONFIG = REPO / "config" / "fraud.toml"
CREDIT_MODEL_BASE = REPO / "models" / "credit" / "saved_model"
CREDIT_CONFIG = REPO / "config" / "credit.toml"
# Seldon MLServer lives in a virtual environment of its own (its pins differ from .venv's).
MLSERVER = REPO / ".venv-mlserver" / "bin" / "mlserver"
MLSERVER_PYTHON = REPO / ".venv-mlserver" / "bin" / "python"
# MLServer model folders, one per model: model-settings.json, the runtime module and the weights.
FRAUD_MLSERVER_MODEL = REPO / "models" / "fraud" / "mlserver" / "fraud"
CREDIT_MLSERVER_MODEL = REPO / "models" / "credit" / "mlserver" / "credit"
PYTHON = Path(sys.executable)

# The repository root must be importable for `models.fraud.data` and `models.credit`.
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def runtime_binary() -> Path:
    """The runtime executable: $RUNTIME_BIN, else the release build."""
    return Path(os.environ.get("RUNTIME_BIN") or REPO / "target" / "release" / "runtime")


def fraud_plugin() -> Path:
    """The fraud plugin component: $FRAUD_PLUGIN, else the `plugin` profile build."""
    return Path(os.environ.get("FRAUD_PLUGIN") or REPO / "target" / "wasm32-wasip2" / "plugin" / "fraud_plugin.wasm")


def credit_plugin() -> Path:
    """The credit-scoring plugin component: $CREDIT_PLUGIN, else the `plugin` profile build."""
    return Path(
        os.environ.get("CREDIT_PLUGIN") or REPO / "target" / "wasm32-wasip2" / "plugin" / "credit_scoring_plugin.wasm"
    )


def hostile_plugin() -> Path:
    """The misbehaving test plugin: $HOSTILE_PLUGIN, else the `plugin` profile build."""
    return Path(os.environ.get("HOSTILE_PLUGIN") or REPO / "target" / "wasm32-wasip2" / "plugin" / "hostile_plugin.wasm")


def js_plugin() -> Path:
    """The fraud plugin written in JavaScript: $JS_PLUGIN, else plugins/fraud-js/build.sh's output."""
    return Path(os.environ.get("JS_PLUGIN") or REPO / "target" / "wasm32-wasip2" / "plugin" / "fraud_js.wasm")


def python_plugin() -> Path:
    """The fraud plugin written in Python: $PYTHON_PLUGIN, else plugins/fraud-python/build.sh's output."""
    return Path(os.environ.get("PYTHON_PLUGIN") or REPO / "target" / "wasm32-wasip2" / "plugin" / "fraud_python.wasm")
