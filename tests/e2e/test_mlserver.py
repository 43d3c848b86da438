"""Seldon MLServer serves the fraud model (models/fraud/mlserver/fraud) like TensorFlow does.

REST (`/v2/...`, JSON) is checked from this Python with urllib; gRPC
(`inference.GRPCInferenceService`) through mlserver_grpc_client.py, run with .venv-mlserver's
Python and MLServer's own stubs. Scores must match the SavedModel run with TensorFlow.
"""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from models.fraud import data
from streamtools import fraud, paths, services

FEATURES = {"name": "features", "datatype": "FP32", "shape": [-1, 30]}
PROBABILITY = {"name": "fraud_probability", "datatype": "FP32", "shape": [-1, 1]}


@pytest.fixture(scope="module")
def transactions():
    return list(data.transactions(seed=11, count=64))


@pytest.fixture(scope="module")
def expected(transactions):
    return fraud.offline_scores(transactions)


def rest(server, path: str, body: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(
        server.http_url + path,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with services.loopback_opener().open(request, timeout=10) as response:
            status, text = response.status, response.read()
    except urllib.error.HTTPError as err:
        status, text = err.code, err.read()
    return status, json.loads(text) if text else {}  # readiness answers have no body


def test_rest_metadata_and_readiness(mlserver):
    assert rest(mlserver, "/v2/health/ready")[0] == 200
    assert rest(mlserver, "/v2/models/fraud/versions/1/ready")[0] == 200
    status, metadata = rest(mlserver, "/v2/models/fraud")
    assert status == 200
    assert metadata["name"] == "fraud" and metadata["versions"] == ["1"]
    assert metadata["inputs"] == [FEATURES] and metadata["outputs"] == [PROBABILITY]


def test_rest_infer_matches_the_saved_model(mlserver, transactions, expected):
    rows = fraud.feature_rows(transactions)
    body = {"inputs": [{"name": "features", "datatype": "FP32", "shape": list(rows.shape), "data": rows.ravel().tolist()}]}
    status, answer = rest(mlserver, "/v2/models/fraud/infer", body)
    assert status == 200, answer
    assert answer["model_name"] == "fraud" and answer["model_version"] == "1"
    (output,) = answer["outputs"]
    assert output["name"] == "fraud_probability" and output["datatype"] == "FP32"
    assert output["shape"] == [len(rows), 1]
    np.testing.assert_allclose(np.asarray(output["data"], np.float32), expected, rtol=0, atol=1e-6)


def test_rest_rejects_a_wrong_shape(mlserver):
    body = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 29], "data": [0.0] * 29}]}
    status, answer = rest(mlserver, "/v2/models/fraud/infer", body)
    assert status == 400 and "[N, 30]" in answer["error"]


def test_grpc_typed_and_raw_requests(mlserver, transactions, expected):
    rows = fraud.feature_rows(transactions)
    client = Path(__file__).with_name("mlserver_grpc_client.py")
    done = subprocess.run(
        [paths.MLSERVER_PYTHON, client, mlserver.address, "fraud"],
        input=json.dumps({"rows": rows.tolist()}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    answers = json.loads(done.stdout)

    assert answers["server_ready"] is True and answers["model_ready"] is True
    # MLServer reports an unknown model or version by an error, not by ready=false.
    assert answers["unknown_version_ready"]["code"] in ("UNKNOWN", "NOT_FOUND")
    assert answers["metadata"] == {"name": "fraud", "versions": ["1"], "inputs": [FEATURES], "outputs": [PROBABILITY]}

    # The answer comes in the same form as the request: typed contents or raw bytes.
    for mode, field in (("typed", "contents"), ("raw", "raw_output_contents")):
        answer = answers[mode]
        assert answer["field"] == field, answer
        assert answer["model_name"] == "fraud" and answer["model_version"] == "1"
        assert answer["output"] == {"name": "fraud_probability", "datatype": "FP32", "shape": [len(rows), 1]}
        np.testing.assert_allclose(np.asarray(answer["scores"], np.float32), expected, rtol=0, atol=1e-6)

    assert answers["wrong_width"]["code"] == "INVALID_ARGUMENT"
    assert answers["unknown_model"]["code"] == "NOT_FOUND"
