"""Reading a trained SavedModel's weights, for the exports to other backends (ONNX, MLServer)."""

from __future__ import annotations

import io
import os
import zipfile
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


# Entry date written into .npz archives, so that an export's bytes depend on the weights alone.
FIXED_DATE = (1980, 1, 1, 0, 0, 0)


def write_npz(path: Path, arrays: dict[str, np.ndarray], names: tuple[str, ...]) -> None:
    """Like numpy.savez, but with fixed entry dates and order (reproducible bytes)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for name in names:
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=FIXED_DATE)
            info.external_attr = 0o644 << 16
            archive.writestr(info, buffer.getvalue())
