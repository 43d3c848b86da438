"""The credit model as a Seldon MLServer runtime (KServe v2 / Open Inference Protocol).

MLServer imports this module from the folder of model-settings.json
(``"implementation": "credit_runtime.CreditModel"``). It computes, in numpy float32, the same
logistic regression as the TensorFlow SavedModel in models/credit/saved_model/ (and as
credit.onnx), from the SavedModel's own weights exported to weights.npz by
models/credit/export_mlserver.py:

    bad_probability = sigmoid(features @ w + b)

Input ``features`` FP32 [N, D], the application as the plugin encodes it (D is w's length, 61
for the shipped model); output ``bad_probability`` FP32 [N, 1]. MLServer decodes the input from
typed contents, JSON data or raw_input_contents alike, and answers a gRPC request in
raw_output_contents when the request used raw_input_contents.
"""

from __future__ import annotations

import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.errors import InferenceError
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri

INPUT = "features"
OUTPUT = "bad_probability"
WEIGHTS_FILE = "weights.npz"


class CreditModel(MLModel):
    async def load(self) -> bool:
        path = await get_model_uri(self.settings, wellknown_filenames=[WEIGHTS_FILE])
        with np.load(path, allow_pickle=False) as archive:
            w = np.asarray(archive["w"], dtype=np.float32)
            b = np.asarray(archive["b"], dtype=np.float32)
        if w.ndim != 2 or w.shape[1] != 1 or b.shape != (1,):
            raise ValueError(f"{path}: w {w.shape} and b {b.shape}, expected [D, 1] and [1]")
        self._w, self._b = w, b
        return True

    @property
    def width(self) -> int:
        return self._w.shape[0]

    def score(self, features: np.ndarray) -> np.ndarray:
        """bad_probability [N, 1] float32 for features [N, D] float32."""
        logits = features.astype(np.float32, copy=False) @ self._w + self._b
        # sigmoid without overflow warnings for large negative logits
        e = np.exp(-np.abs(logits))
        return np.where(logits >= 0, np.float32(1) / (np.float32(1) + e), e / (np.float32(1) + e)).astype(np.float32)

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        inputs = {request_input.name: request_input for request_input in payload.inputs}
        if INPUT not in inputs:
            raise InferenceError(f"missing input {INPUT!r} (got {sorted(inputs)})")
        request_input = inputs[INPUT]
        if request_input.datatype != "FP32":
            raise InferenceError(f"input {INPUT!r} must be FP32, got {request_input.datatype}")
        shape = list(request_input.shape)
        if len(shape) != 2 or shape[1] != self.width:
            raise InferenceError(f"input {INPUT!r} must have shape [N, {self.width}], got {shape}")
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
