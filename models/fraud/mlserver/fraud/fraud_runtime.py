"""The fraud model as a Seldon MLServer runtime (KServe v2 / Open Inference Protocol).

MLServer imports this module from the folder of model-settings.json
(`"implementation": "fraud_runtime.FraudModel"`). The model computes, in numpy float32, the same
function as the TensorFlow SavedModel in models/fraud/saved_model/ (and as fraud.onnx), from the
SavedModel's own weights exported to weights.npz by models/fraud/export_mlserver.py:

    x = features;  x[:, Amount] = log1p(max(x[:, Amount], 0))
    x = (x - mean) / std
    fraud_probability = sigmoid(relu(x @ w1 + b1) @ w2 + b2)

Input `features` FP32 [N, 30] (Time, V1..V28, Amount); output `fraud_probability` FP32 [N, 1].
MLServer decodes the input from typed contents, JSON data or raw_input_contents alike, and
answers a gRPC request in raw_output_contents when the request used raw_input_contents.
"""

from __future__ import annotations

import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.errors import InferenceError
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri

INPUT = "features"
OUTPUT = "fraud_probability"
WIDTH = 30
AMOUNT_COLUMN = WIDTH - 1  # the last column, as in models/fraud/data.py FEATURES
WEIGHTS = ("mean", "std", "w1", "b1", "w2", "b2")
WEIGHTS_FILE = "weights.npz"


class FraudModel(MLModel):
    async def load(self) -> bool:
        path = await get_model_uri(self.settings, wellknown_filenames=[WEIGHTS_FILE])
        with np.load(path, allow_pickle=False) as archive:
            w = {name: np.asarray(archive[name], dtype=np.float32) for name in WEIGHTS}
        hidden = w["w1"].shape[1]
        expected = {
            "mean": (WIDTH,),
            "std": (WIDTH,),
            "w1": (WIDTH, hidden),
            "b1": (hidden,),
            "w2": (hidden, 1),
            "b2": (1,),
        }
        for name, shape in expected.items():
            if w[name].shape != shape:
                raise ValueError(f"{path}: {name} has shape {w[name].shape}, expected {shape}")
        self._w = w
        return True

    def score(self, features: np.ndarray) -> np.ndarray:
        """fraud_probability [N, 1] float32 for features [N, 30] float32."""
        w = self._w
        x = features.astype(np.float32, copy=True)
        x[:, AMOUNT_COLUMN] = np.log1p(np.maximum(x[:, AMOUNT_COLUMN], np.float32(0)))
        x = (x - w["mean"]) / w["std"]
        hidden = np.maximum(x @ w["w1"] + w["b1"], np.float32(0))
        logits = hidden @ w["w2"] + w["b2"]
        # sigmoid without overflow warnings for large negative logits
        return np.where(
            logits >= 0,
            np.float32(1) / (np.float32(1) + np.exp(-np.abs(logits))),
            np.exp(-np.abs(logits)) / (np.float32(1) + np.exp(-np.abs(logits))),
        ).astype(np.float32)

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        inputs = {request_input.name: request_input for request_input in payload.inputs}
        if INPUT not in inputs:
            raise InferenceError(f"missing input {INPUT!r} (got {sorted(inputs)})")
        request_input = inputs[INPUT]
        if request_input.datatype != "FP32":
            raise InferenceError(f"input {INPUT!r} must be FP32, got {request_input.datatype}")
        shape = list(request_input.shape)
        if len(shape) != 2 or shape[1] != WIDTH:
            raise InferenceError(f"input {INPUT!r} must have shape [N, {WIDTH}], got {shape}")
        try:
            features = self.decode(request_input, default_codec=NumpyCodec)
        except ValueError as err:  # data does not fill the declared shape
            raise InferenceError(f"input {INPUT!r}: {err}") from err

        for requested in payload.outputs or []:
            if requested.name != OUTPUT:
                raise InferenceError(f"unknown output {requested.name!r} (the model has {OUTPUT!r})")

        scores = self.score(np.asarray(features, dtype=np.float32).reshape(shape))
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            outputs=[NumpyCodec.encode_output(OUTPUT, scores)],
        )
