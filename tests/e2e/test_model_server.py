"""The model server (scripts/model_server.py) answers like TensorFlow Serving.

A client built on the official TF Serving API stubs talks to the session's server over gRPC;
a few cases (several versions, tensor encodings) drive the server's classes in-process.
"""

from __future__ import annotations

import shutil

import grpc
import numpy as np
import pytest
import tensorflow as tf
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

import model_server
from models.fraud import data
from streamtools import fraud, paths


@pytest.fixture(scope="module")
def channel(model_server):
    with grpc.insecure_channel(model_server.address) as ch:
        yield ch


@pytest.fixture(scope="module")
def stub(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def transactions():
    return list(data.transactions(seed=5, count=64))


def predict_request(rows: np.ndarray, name: str = "fraud", **spec) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    for field, value in spec.items():
        if field == "version":
            request.model_spec.version.value = value
        else:
            setattr(request.model_spec, field, value)
    request.inputs["features"].CopyFrom(tf.make_tensor_proto(rows))
    return request


def error_of(call, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=10)
    return caught.value


def test_predict_matches_the_saved_model(stub, transactions):
    rows = fraud.feature_rows(transactions)
    response = stub.Predict(predict_request(rows), timeout=10)

    assert response.model_spec.name == "fraud"
    assert response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"
    assert list(response.outputs) == ["fraud_probability"]
    served = tf.make_ndarray(response.outputs["fraud_probability"])
    assert served.dtype == np.float32 and served.shape == (len(rows), 1)
    expected = fraud.offline_scores(transactions)
    np.testing.assert_allclose(served[:, 0], expected, rtol=0, atol=1e-6)


def test_explicit_version_and_output_filter(stub, transactions):
    request = predict_request(fraud.feature_rows(transactions[:3]), version=1, signature_name="serving_default")
    request.output_filter.append("fraud_probability")
    response = stub.Predict(request, timeout=10)
    assert response.model_spec.version.value == 1
    assert tf.make_ndarray(response.outputs["fraud_probability"]).shape == (3, 1)


@pytest.mark.parametrize(
    "change, code, words",
    [
        (lambda r: setattr(r.model_spec, "name", "no-such-model"), grpc.StatusCode.NOT_FOUND, ["no-such-model"]),
        (lambda r: r.model_spec.version.__setattr__("value", 99), grpc.StatusCode.NOT_FOUND, ["99"]),
        (lambda r: setattr(r.model_spec, "signature_name", "nope"), grpc.StatusCode.FAILED_PRECONDITION, ["nope"]),
        (lambda r: r.inputs.pop("features"), grpc.StatusCode.INVALID_ARGUMENT, ["features"]),
        (
            lambda r: r.inputs["extra"].CopyFrom(tf.make_tensor_proto(np.zeros(1, np.float32))),
            grpc.StatusCode.INVALID_ARGUMENT,
            ["extra"],
        ),
        (
            lambda r: r.inputs["features"].CopyFrom(tf.make_tensor_proto(np.zeros((2, 30), np.float64))),
            grpc.StatusCode.INVALID_ARGUMENT,
            ["features", "float64"],
        ),
        (
            lambda r: r.inputs["features"].CopyFrom(tf.make_tensor_proto(np.zeros((2, 29), np.float32))),
            grpc.StatusCode.INVALID_ARGUMENT,
            ["features", "29"],
        ),
        (lambda r: r.output_filter.append("score"), grpc.StatusCode.INVALID_ARGUMENT, ["score"]),
    ],
    ids=["unknown-model", "unknown-version", "unknown-signature", "missing-input", "extra-input",
         "wrong-dtype", "wrong-shape", "unknown-output"],
)
def test_predict_errors(stub, change, code, words):
    request = predict_request(np.zeros((2, 30), np.float32))
    change(request)
    error = error_of(stub.Predict, request)
    assert error.code() == code, error.details()
    for word in words:
        assert word in error.details()


def test_metadata_returns_the_signature_def_map(stub):
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "fraud"
    request.metadata_field.append("signature_def")
    response = stub.GetModelMetadata(request, timeout=10)

    assert response.model_spec.name == "fraud" and response.model_spec.version.value == 1
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signatures)
    serving = signatures.signature_def["serving_default"]
    assert serving.method_name == "tensorflow/serving/predict"
    features = serving.inputs["features"]
    assert features.dtype == tf.float32.as_datatype_enum
    assert [d.size for d in features.tensor_shape.dim] == [-1, len(data.FEATURES)]
    output = serving.outputs["fraud_probability"]
    assert output.dtype == tf.float32.as_datatype_enum
    assert [d.size for d in output.tensor_shape.dim] == [-1, 1]


def test_metadata_errors(stub):
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "fraud"
    assert error_of(stub.GetModelMetadata, request).code() == grpc.StatusCode.INVALID_ARGUMENT
    request.metadata_field.append("signature_def")
    request.model_spec.name = "other"
    assert error_of(stub.GetModelMetadata, request).code() == grpc.StatusCode.NOT_FOUND


def test_health_and_model_status(channel):
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "fraud"
    status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request, timeout=10)
    assert [(s.version, s.state) for s in status.model_version_status] == [
        (1, get_model_status_pb2.ModelVersionStatus.State.AVAILABLE)
    ]


def test_latest_version_is_the_default(tmp_path):
    base = tmp_path / "fraud"
    shutil.copytree(paths.FRAUD_MODEL_BASE / "1", base / "1")
    shutil.copytree(paths.FRAUD_MODEL_BASE / "1", base / "3")
    (base / "not-a-version").mkdir()
    service = model_server.PredictionService(
        model_server.ModelRepository({"fraud": model_server.load_model(base)}), packed_outputs=False
    )
    rows = np.zeros((1, 30), np.float32)
    assert service._predict(predict_request(rows)).model_spec.version.value == 3
    assert service._predict(predict_request(rows, version=1)).model_spec.version.value == 1
    with pytest.raises(model_server.RequestError) as missing:
        service._predict(predict_request(rows, version=2))
    assert missing.value.code == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64, tf.int32, tf.int64, tf.bool, tf.string, tf.float16])
@pytest.mark.parametrize("packed", [False, True])
def test_output_encodings_round_trip(dtype, packed):
    values = np.arange(6).reshape(2, 3)
    tensor = tf.constant([[b"a", b"bc", b""], [b"d", b"e", b"f"]]) if dtype == tf.string else tf.cast(values, dtype)
    proto = model_server.to_tensor_proto(tensor, packed=packed)
    if not packed:
        assert not proto.tensor_content, "typed fields expected, as TF Serving's Predict sends"
    assert proto.dtype == dtype.as_datatype_enum
    np.testing.assert_array_equal(tf.make_ndarray(proto), tensor.numpy())
