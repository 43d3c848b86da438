"""A KServe v2 gRPC client for tests/e2e/test_mlserver.py, run with .venv-mlserver's Python.

It uses MLServer's own generated stubs (`mlserver.grpc.dataplane_pb2`), which .venv lacks, so
the tests call it as a subprocess:

    mlserver_grpc_client.py HOST:PORT MODEL < rows.json > answers.json

stdin: {"rows": [[30 floats], ...]}. stdout: the readiness and metadata answers, then one
ModelInfer answer for the rows sent as typed `fp32_contents` and one for the rows sent as
`raw_input_contents`, each with the field the scores came back in. Errors: {"code", "details"}.
"""

from __future__ import annotations

import json
import sys

import grpc
import numpy as np
from mlserver.grpc import dataplane_pb2 as pb
from mlserver.grpc import dataplane_pb2_grpc as pb_grpc


def error(err: grpc.RpcError) -> dict:
    return {"code": err.code().name, "details": err.details()}


def infer(stub, request) -> dict:
    try:
        response = stub.ModelInfer(request, timeout=10)
    except grpc.RpcError as err:
        return error(err)
    output = response.outputs[0]
    if response.raw_output_contents:
        field, scores = "raw_output_contents", np.frombuffer(response.raw_output_contents[0], "<f4")
    else:
        field, scores = "contents", np.asarray(output.contents.fp32_contents, np.float32)
    return {
        "model_name": response.model_name,
        "model_version": response.model_version,
        "output": {"name": output.name, "datatype": output.datatype, "shape": list(output.shape)},
        "field": field,
        "scores": scores.tolist(),
    }


def main() -> None:
    address, model = sys.argv[1], sys.argv[2]
    rows = np.asarray(json.load(sys.stdin)["rows"], np.float32)
    answers: dict = {}
    with grpc.insecure_channel(address, options=[("grpc.enable_http_proxy", 0)]) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        answers["server_ready"] = stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready
        answers["model_ready"] = stub.ModelReady(pb.ModelReadyRequest(name=model, version="1"), timeout=10).ready
        try:
            stub.ModelReady(pb.ModelReadyRequest(name=model, version="2"), timeout=10)
            answers["unknown_version_ready"] = "answered"
        except grpc.RpcError as err:
            answers["unknown_version_ready"] = error(err)

        metadata = stub.ModelMetadata(pb.ModelMetadataRequest(name=model), timeout=10)
        answers["metadata"] = {
            "name": metadata.name,
            "versions": list(metadata.versions),
            "inputs": [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in metadata.inputs],
            "outputs": [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in metadata.outputs],
        }

        typed = pb.ModelInferRequest(model_name=model)
        tensor = typed.inputs.add(name="features", datatype="FP32", shape=list(rows.shape))
        tensor.contents.fp32_contents.extend(rows.ravel().tolist())
        answers["typed"] = infer(stub, typed)

        raw = pb.ModelInferRequest(model_name=model, model_version="1")
        raw.inputs.add(name="features", datatype="FP32", shape=list(rows.shape))
        raw.raw_input_contents.append(rows.astype("<f4").tobytes())
        answers["raw"] = infer(stub, raw)

        bad = pb.ModelInferRequest(model_name=model)
        tensor = bad.inputs.add(name="features", datatype="FP32", shape=[1, 29])
        tensor.contents.fp32_contents.extend([0.0] * 29)
        answers["wrong_width"] = infer(stub, bad)
        answers["unknown_model"] = infer(stub, pb.ModelInferRequest(model_name="no-such-model"))
    json.dump(answers, sys.stdout)


if __name__ == "__main__":
    main()
