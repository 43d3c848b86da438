"""Reading a trained SavedModel's weights, for the exports to other backends (ONNX, MLServer)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def latest_version(base: Path) -> Path:
    """The highest numeric version directory under ``base``, as TF Serving would serve it."""
    versions = sorted((p for p in base.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    if not versions:
        raise SystemExit(f"no numeric version directory under {base}")
    return versions[-1]


def variables(saved_model: Path, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The named variables of a `tf.Module` saved at ``saved_model``, as float32 arrays."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    loaded = tf.saved_model.load(str(saved_model))
    return {name: getattr(loaded, name).numpy().astype(np.float32) for name in names}
