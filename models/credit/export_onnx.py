"""Writes the credit model as ONNX, for the runtime's embedded backend.

The graph is built by hand from the trained SavedModel's own weights (saved_model/<latest>/), so
that every backend serves the same model: ``bad_probability = Sigmoid(MatMul(features, w) + b)``.
Input ``features`` float32 [N, D] (the encoded application, see features.json), output
``bad_probability`` float32 [N, 1].

    .venv/bin/python models/credit/export_onnx.py
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from models.saved_model import latest_version, variables  # noqa: E402

OPSET = 13


def weights(saved_model: Path) -> dict[str, np.ndarray]:
    return variables(saved_model, ("w", "b"))


def build(w: dict[str, np.ndarray]):
    from onnx import TensorProto, helper, numpy_helper

    width = w["w"].shape[0]
    node = helper.make_node
    graph = helper.make_graph(
        [
            node("MatMul", ["features", "w"], ["weighted"]),
            node("Add", ["weighted", "b"], ["logits"]),
            node("Sigmoid", ["logits"], ["bad_probability"]),
        ],
        "credit",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", width])],
        [helper.make_tensor_value_info("bad_probability", TensorProto.FLOAT, ["N", 1])],
        [numpy_helper.from_array(w[name], name) for name in ("w", "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="streaminfer")
    model.ir_version = 8
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--saved-model-base", type=Path, default=HERE / "saved_model")
    parser.add_argument("--output", type=Path, default=HERE / "credit.onnx")
    args = parser.parse_args()

    import onnx

    source = latest_version(args.saved_model_base)
    model = build(weights(source))
    onnx.checker.check_model(model)
    args.output.write_bytes(model.SerializeToString())
    print(f"wrote {args.output} ({args.output.stat().st_size} bytes) from {source}")


if __name__ == "__main__":
    main()
