"""Writes the fraud model as ONNX, for the runtime's embedded backend.

The graph is built from the trained SavedModel's own weights (saved_model/<latest>/), so that
every backend serves the same model: the same preparation (log1p of a non-negative Amount,
standardisation), the same two dense layers, the same sigmoid. Input `features` float32
[N, 30] (Time, V1..V28, Amount), output `fraud_probability` float32 [N, 1].

    .venv/bin/python models/fraud/export_onnx.py
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from models.saved_model import latest_version, variables  # noqa: E402

from models.fraud import data  # noqa: E402

OPSET = 13


def weights(saved_model: Path) -> dict[str, np.ndarray]:
    return variables(saved_model, ("mean", "std", "w1", "b1", "w2", "b2"))


def build(w: dict[str, np.ndarray]):
    from onnx import TensorProto, helper, numpy_helper

    n = len(data.FEATURES)
    amount = data.FEATURES.index("Amount")
    amount_mask = np.zeros((1, n), np.float32)
    amount_mask[0, amount] = 1.0
    constants = {
        "zero": np.zeros((1,), np.float32),
        "one": np.ones((1,), np.float32),
        "amount_mask": amount_mask,
        "keep_mask": 1.0 - amount_mask,
        **w,
    }
    initializers = [numpy_helper.from_array(v, name) for name, v in constants.items()]
    node = helper.make_node
    nodes = [
        # log1p(max(x, 0)) on every column, then keep it for Amount only: no op needs slicing.
        node("Max", ["features", "zero"], ["clipped"]),
        node("Add", ["clipped", "one"], ["shifted"]),
        node("Log", ["shifted"], ["logged"]),
        node("Mul", ["features", "keep_mask"], ["kept"]),
        node("Mul", ["logged", "amount_mask"], ["amount_only"]),
        node("Add", ["kept", "amount_only"], ["prepared"]),
        node("Sub", ["prepared", "mean"], ["centred"]),
        node("Div", ["centred", "std"], ["scaled"]),
        node("MatMul", ["scaled", "w1"], ["hidden_in"]),
        node("Add", ["hidden_in", "b1"], ["hidden_pre"]),
        node("Relu", ["hidden_pre"], ["hidden"]),
        node("MatMul", ["hidden", "w2"], ["logit_in"]),
        node("Add", ["logit_in", "b2"], ["logits"]),
        node("Sigmoid", ["logits"], ["fraud_probability"]),
    ]
    graph = helper.make_graph(
        nodes,
        "fraud",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", n])],
        [helper.make_tensor_value_info("fraud_probability", TensorProto.FLOAT, ["N", 1])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="streaminfer")
    model.ir_version = 8
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--saved-model-base", type=Path, default=HERE / "saved_model")
    parser.add_argument("--output", type=Path, default=HERE / "fraud.onnx")
    args = parser.parse_args()

    import onnx

    source = latest_version(args.saved_model_base)
    model = build(weights(source))
    onnx.checker.check_model(model)
    args.output.write_bytes(model.SerializeToString())
    print(f"wrote {args.output} ({args.output.stat().st_size} bytes) from {source}")


if __name__ == "__main__":
    main()
