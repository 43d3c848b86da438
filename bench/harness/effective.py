"""What the runtime runs a variant with, for the figures that compare it to something else:
its built-in defaults (read from ``runtime/src/config/defaults.rs``, the one place they are written, so
the harness cannot drift from them), then ``config/fraud.toml``, then the variant's overrides.

The B6 broker floor takes the runtime's consumer properties from here, and B4's ideal client and
B6's bound its rows per model call: otherwise the comparison is not like for like."""

from __future__ import annotations

import re
import tomllib
from functools import cache
from typing import Mapping

from streamtools import paths

DEFAULTS = paths.REPO / "runtime" / "src" / "config" / "defaults.rs"


@cache
def _source() -> str:
    return DEFAULTS.read_text()


def consumer_defaults() -> dict[str, str]:
    """``config::defaults::CONSUMER``: the librdkafka properties the runtime sets unless told."""
    table = re.search(r"pub const CONSUMER: &\[\(&str, &str\)\] = &\[(.*?)\];", _source(), re.S)
    if table is None:
        raise RuntimeError(f"config::defaults::CONSUMER not found in {DEFAULTS}")
    return dict(re.findall(r'\("([^"]+)",\s*"([^"]*)"\)', table.group(1)))


def _config() -> dict:
    return tomllib.loads(paths.FRAUD_CONFIG.read_text())


def consumer_properties(overrides: Mapping[str, object]) -> dict[str, str]:
    """The consumer's librdkafka properties: defaults, config file, overrides (normalised keys)."""
    props = consumer_defaults()
    props.update({k: str(v) for k, v in _config().get("kafka", {}).get("consumer", {}).items()})
    prefix = 'kafka.consumer."'
    for key, value in overrides.items():
        if key.startswith(prefix):
            props[key[len(prefix):].rstrip('"')] = str(value).strip('"')
    return props


def model_rows(overrides: Mapping[str, object]) -> int:
    """``model.max-batch-size``: the most rows the runtime stacks into one model call."""
    if "model.max-batch-size" in overrides:
        return int(overrides["model.max-batch-size"])
    configured = _config().get("model", {}).get("max-batch-size")
    if configured is not None:
        return int(configured)
    return default_model_rows()


def default_model_rows() -> int:
    """``config::defaults::MODEL_MAX_BATCH_SIZE``."""
    found = re.search(r"pub const MODEL_MAX_BATCH_SIZE: usize = ([0-9_]+);", _source())
    if found is None:
        raise RuntimeError(f"config::defaults::MODEL_MAX_BATCH_SIZE not found in {DEFAULTS}")
    return int(found.group(1).replace("_", ""))


def check_source() -> None:
    """Read every default the harness takes from the runtime's source, so that a moved constant
    stops a run before it starts rather than after its first variants."""
    consumer_defaults()
    default_model_rows()
