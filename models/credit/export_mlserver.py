"""Writes the credit model's weights for the MLServer runtime (mlserver/credit/).

The weights are the trained SavedModel's own (saved_model/<latest>/): ``w`` float32 [D, 1] and
``b`` float32 [1]. The runtime (mlserver/credit/credit_runtime.py) computes the same logistic
regression in numpy.

The file is a plain ``.npz`` (numpy.load reads it) written with fixed entry dates, so two runs
give byte-identical files.

    .venv/bin/python models/credit/export_mlserver.py
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from models.credit.export_onnx import latest_version, weights  # noqa: E402
from models.saved_model import write_npz  # noqa: E402

NAMES = ("w", "b")

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--saved-model-base", type=Path, default=HERE / "saved_model")
    parser.add_argument("--output", type=Path, default=HERE / "mlserver" / "credit" / "weights.npz")
    args = parser.parse_args()

    source = latest_version(args.saved_model_base)
    arrays = weights(source)
    settings = json.loads((args.output.parent / "model-settings.json").read_text())
    declared = settings["inputs"][0]["shape"]
    if declared != [-1, arrays["w"].shape[0]]:
        raise SystemExit(f"model-settings.json declares features {declared}, the model takes [-1, {arrays['w'].shape[0]}]")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_npz(args.output, arrays, NAMES)
    shapes = ", ".join(f"{n} {list(arrays[n].shape)}" for n in NAMES)
    print(f"wrote {args.output} ({args.output.stat().st_size} bytes) from {source}: {shapes}")


if __name__ == "__main__":
    main()
