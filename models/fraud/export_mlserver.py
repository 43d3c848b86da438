"""Writes the fraud model's weights for the MLServer runtime (mlserver/fraud/).

The weights are the trained SavedModel's own (saved_model/<latest>/): the preparation constants
`mean` and `std` and the two dense layers `w1, b1, w2, b2`, all float32. The runtime
(mlserver/fraud/fraud_runtime.py) computes the same preparation, layers and sigmoid in numpy.

The file is a plain `.npz` (numpy.load reads it) written with fixed entry dates, so two runs
give byte-identical files.

    .venv/bin/python models/fraud/export_mlserver.py
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from models.fraud.export_onnx import latest_version, weights  # noqa: E402
from models.saved_model import write_npz  # noqa: E402

NAMES = ("mean", "std", "w1", "b1", "w2", "b2")

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--saved-model-base", type=Path, default=HERE / "saved_model")
    parser.add_argument("--output", type=Path, default=HERE / "mlserver" / "fraud" / "weights.npz")
    args = parser.parse_args()

    source = latest_version(args.saved_model_base)
    arrays = weights(source)
    for name in NAMES:
        if arrays[name].dtype != np.float32:
            raise SystemExit(f"{name}: expected float32, got {arrays[name].dtype}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_npz(args.output, arrays, NAMES)
    shapes = ", ".join(f"{n} {list(arrays[n].shape)}" for n in NAMES)
    print(f"wrote {args.output} ({args.output.stat().st_size} bytes) from {source}: {shapes}")


if __name__ == "__main__":
    main()
