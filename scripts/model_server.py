"""A TensorFlow Serving-compatible gRPC model server, for tests and the demo.

The real `tensorflow_model_server` binary cannot be installed here, so this serves SavedModels
with real TensorFlow behind the official TF Serving API stubs (`tensorflow-serving-api`), and
answers the way TF Serving does:

* PredictionService/Predict: runs a signature (default `serving_default`) of a model version
  (default: the latest), applies `output_filter`, and fills `model_spec` (name, version,
  signature_name) in the response. Outputs come back in the typed fields (`float_val`, ...) as
  TF Serving's Predict does; `--tensor-content` sends packed `tensor_content` instead.
* PredictionService/GetModelMetadata with `metadata_field: ["signature_def"]`: the
  SignatureDefMap of the version's meta graph, packed in an `Any`.
* ModelService/GetModelStatus: every loaded version is AVAILABLE.
* grpc.health.v1.Health: SERVING while up, NOT_SERVING while stopping.
* Errors, with TF Serving's codes: NOT_FOUND for an unknown model or version,
  FAILED_PRECONDITION for an unknown signature, INVALID_ARGUMENT for missing, extra, mistyped or
  misshapen inputs and unknown output names. Classify, Regress and MultiInference are
  UNIMPLEMENTED.

    model_server.py --port 8500 --model-name fraud --model-base-path models/fraud/saved_model

`--model-base-path` holds numeric version directories (1/, 2/, ...), each a SavedModel; all are
loaded at start. The server binds 127.0.0.1 only. `--port 0` picks a free port. `--tls-cert` and
`--tls-key` serve TLS; `--tls-client-ca` also requires a client certificate from that authority. Once serving it
prints `READY <port>` on stdout. SIGTERM or SIGINT stops it cleanly (exit status 0).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import grpc  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from grpc_health.v1 import health, health_pb2, health_pb2_grpc  # noqa: E402
from tensorflow.core.framework import tensor_pb2  # noqa: E402
from tensorflow.core.protobuf import saved_model_pb2  # noqa: E402
from tensorflow_serving.apis import (  # noqa: E402
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

log = logging.getLogger("model_server")

DEFAULT_SIGNATURE = "serving_default"
SIGNATURE_DEF_FIELD = "signature_def"


class RequestError(Exception):
    """A request that cannot be served; carries the gRPC status code to answer with."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class ModelVersion:
    version: int
    path: Path
    signatures: dict  # signature key -> ConcreteFunction
    signature_def_map: get_model_metadata_pb2.SignatureDefMap
    _module: object  # keeps the loaded SavedModel (and its variables) alive


def load_version(path: Path, version: int) -> ModelVersion:
    """Loads one SavedModel version directory with TensorFlow."""
    module = tf.saved_model.load(str(path))
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((path / "saved_model.pb").read_bytes())
    meta_graph = next(
        (mg for mg in saved_model.meta_graphs if "serve" in mg.meta_info_def.tags),
        saved_model.meta_graphs[0],
    )
    signature_def_map = get_model_metadata_pb2.SignatureDefMap()
    for key, signature_def in meta_graph.signature_def.items():
        signature_def_map.signature_def[key].CopyFrom(signature_def)
    return ModelVersion(version, path, dict(module.signatures), signature_def_map, module)


def load_model(base_path: Path) -> dict[int, ModelVersion]:
    """Loads every numeric version directory under ``base_path``."""
    versions = {}
    for entry in sorted(base_path.iterdir()):
        if entry.is_dir() and entry.name.isdigit() and (entry / "saved_model.pb").is_file():
            versions[int(entry.name)] = load_version(entry, int(entry.name))
            log.info("loaded version %s from %s", entry.name, entry)
    if not versions:
        raise SystemExit(f"no SavedModel version directories (1/, 2/, ...) under {base_path}")
    return versions


# TensorProto field that carries each dtype's values when not packed in tensor_content.
_VALUE_FIELDS = {
    tf.float32: "float_val",
    tf.float64: "double_val",
    tf.int8: "int_val",
    tf.int16: "int_val",
    tf.int32: "int_val",
    tf.uint8: "int_val",
    tf.uint16: "int_val",
    tf.int64: "int64_val",
    tf.uint32: "uint32_val",
    tf.uint64: "uint64_val",
    tf.bool: "bool_val",
    tf.string: "string_val",
    tf.float16: "half_val",
    tf.bfloat16: "half_val",
}


def to_tensor_proto(value: tf.Tensor, packed: bool) -> tensor_pb2.TensorProto:
    """An output tensor as a TensorProto: typed value fields, or packed tensor_content."""
    array = value.numpy()
    field = _VALUE_FIELDS.get(value.dtype)
    if packed or field is None:
        return tf.make_tensor_proto(array, dtype=value.dtype)
    proto = tensor_pb2.TensorProto(
        dtype=value.dtype.as_datatype_enum,
        tensor_shape=tf.TensorShape(array.shape).as_proto(),
    )
    flat = array.reshape(-1)
    if value.dtype in (tf.float16, tf.bfloat16):
        flat = flat.view(np.uint16)
    getattr(proto, field).extend(flat.tolist())
    return proto


class ModelRepository:
    """The loaded models by name and version."""

    def __init__(self, models: dict[str, dict[int, ModelVersion]]) -> None:
        self.models = models

    def resolve(self, model_spec) -> tuple[str, ModelVersion]:
        name = model_spec.name
        versions = self.models.get(name)
        if model_spec.HasField("version"):
            wanted = model_spec.version.value
            if versions is None or wanted not in versions:
                raise RequestError(
                    grpc.StatusCode.NOT_FOUND,
                    f"Servable not found for request: Specific({name}, {wanted})",
                )
            return name, versions[wanted]
        if model_spec.version_label:
            raise RequestError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Unrecognized servable version label: {model_spec.version_label}",
            )
        if versions is None:
            raise RequestError(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Latest({name})")
        return name, versions[max(versions)]


def convert_inputs(request, function, signature_name: str) -> dict[str, tf.Tensor]:
    """Request inputs as tensors, checked against the signature's names, dtypes and shapes."""
    specs = function.structured_input_signature[1]
    sent, expected = set(request.inputs), set(specs)
    if sent != expected:
        raise RequestError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"input size does not match signature {signature_name!r}: {len(sent)}!={len(expected)} "
            f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(expected))}}}). "
            f"Sent extra: {{{','.join(sorted(sent - expected))}}}. "
            f"Missing but required: {{{','.join(sorted(expected - sent))}}}.",
        )
    tensors = {}
    for key, spec in specs.items():
        proto = request.inputs[key]
        dtype = tf.dtypes.as_dtype(proto.dtype) if proto.dtype else None
        if dtype != spec.dtype:
            got = dtype.name if dtype is not None else "DT_INVALID"
            raise RequestError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"input {key!r} has dtype {got}, signature {signature_name!r} expects {spec.dtype.name}",
            )
        try:
            array = tf.make_ndarray(proto)
        except Exception as e:  # malformed proto: value count and shape disagree, ...
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"input {key!r} is not a valid tensor: {e}")
        if not spec.shape.is_compatible_with(array.shape):
            raise RequestError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"input {key!r} has shape {list(array.shape)}, signature {signature_name!r} "
                f"expects {spec.shape.as_list()}",
            )
        tensors[key] = tf.constant(array, dtype=spec.dtype)
    return tensors


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, repository: ModelRepository, packed_outputs: bool) -> None:
        self.repository = repository
        self.packed_outputs = packed_outputs

    def Predict(self, request, context):
        return _answer(context, self._predict, request)

    def GetModelMetadata(self, request, context):
        return _answer(context, self._metadata, request)

    def _predict(self, request):
        name, model = self.repository.resolve(request.model_spec)
        signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
        function = model.signatures.get(signature_name)
        if function is None:
            raise RequestError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f'Serving signature key "{signature_name}" not found.',
            )
        output_names = list(function.structured_outputs)
        wanted = list(request.output_filter) or output_names
        for alias in wanted:
            if alias not in output_names:
                raise RequestError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"output tensor alias not found in signature: {alias} "
                    f"Outputs expected to be in the set {{{','.join(sorted(output_names))}}}.",
                )
        if len(set(wanted)) != len(wanted):
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "duplicate output tensor alias in output_filter")

        inputs = convert_inputs(request, function, signature_name)
        try:
            outputs = function(**inputs)
        except (tf.errors.InvalidArgumentError, ValueError, TypeError) as e:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"running {signature_name!r}: {e}")

        response = predict_pb2.PredictResponse()
        response.model_spec.name = name
        response.model_spec.version.value = model.version
        response.model_spec.signature_name = signature_name
        for alias in wanted:
            response.outputs[alias].CopyFrom(to_tensor_proto(outputs[alias], self.packed_outputs))
        return response

    def _metadata(self, request):
        if not request.HasField("model_spec"):
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")
        if not request.metadata_field:
            raise RequestError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "GetModelMetadataRequest must specify at least one metadata_field",
            )
        for field in request.metadata_field:
            if field != SIGNATURE_DEF_FIELD:
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"Metadata field {field} is not supported")
        name, model = self.repository.resolve(request.model_spec)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = name
        response.model_spec.version.value = model.version
        response.metadata[SIGNATURE_DEF_FIELD].Pack(model.signature_def_map)
        return response


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, repository: ModelRepository) -> None:
        self.repository = repository

    def GetModelStatus(self, request, context):
        def status(request):
            name = request.model_spec.name
            versions = self.repository.models.get(name)
            if request.model_spec.HasField("version"):
                _, model = self.repository.resolve(request.model_spec)
                chosen = [model.version]
            elif versions is None:
                raise RequestError(grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {name}")
            else:
                chosen = sorted(versions)
            response = get_model_status_pb2.GetModelStatusResponse()
            for version in chosen:
                entry = response.model_version_status.add()
                entry.version = version
                entry.state = get_model_status_pb2.ModelVersionStatus.State.AVAILABLE
            return response

        return _answer(context, status, request)


def _answer(context, handler, request):
    """Runs a handler; a RequestError (or a bug) becomes a gRPC status with its message."""
    try:
        return handler(request)
    except RequestError as e:
        log.debug("request refused: %s: %s", e.code.name, e)
        context.abort(e.code, str(e))
    except Exception as e:  # a bug here, or TensorFlow failing: never take the server down
        log.exception("internal error")
        context.abort(grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}")


def main() -> int:
    parser = argparse.ArgumentParser(description="TensorFlow Serving-compatible gRPC model server")
    parser.add_argument("--port", type=int, default=8500, help="gRPC port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--model-name", required=True)
    parser.add_argument("--model-base-path", type=Path, required=True, help="directory of numeric versions")
    parser.add_argument("--workers", type=int, default=8, help="request handler threads")
    parser.add_argument(
        "--tensor-content",
        action="store_true",
        help="send outputs packed in tensor_content instead of typed value fields",
    )
    parser.add_argument("--tls-cert", type=Path, help="serve TLS with this PEM certificate chain (with --tls-key)")
    parser.add_argument("--tls-key", type=Path, help="the PEM private key of --tls-cert")
    parser.add_argument(
        "--tls-client-ca", type=Path, help="require a client certificate issued by this PEM authority (mutual TLS)"
    )
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args()
    if bool(args.tls_cert) != bool(args.tls_key) or (args.tls_client_ca and not args.tls_cert):
        parser.error("--tls-cert and --tls-key go together, and --tls-client-ca needs them")
    logging.basicConfig(
        level=args.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    repository = ModelRepository({args.model_name: load_model(args.model_base_path.resolve())})

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=args.workers, thread_name_prefix="rpc"))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(repository, packed_outputs=args.tensor_content), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(repository), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if args.tls_cert:
        credentials = grpc.ssl_server_credentials(
            [(args.tls_key.read_bytes(), args.tls_cert.read_bytes())],
            root_certificates=args.tls_client_ca.read_bytes() if args.tls_client_ca else None,
            require_client_auth=bool(args.tls_client_ca),
        )
        port = server.add_secure_port(f"127.0.0.1:{args.port}", credentials)
    else:
        port = server.add_insecure_port(f"127.0.0.1:{args.port}")
    if port == 0:
        raise SystemExit(f"cannot bind 127.0.0.1:{args.port}")

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())

    server.start()
    for service in ("", "tensorflow.serving.PredictionService", "tensorflow.serving.ModelService"):
        health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    versions = sorted(repository.models[args.model_name])
    log.info("serving model %r versions %s on 127.0.0.1:%d", args.model_name, versions, port)
    print(f"READY {port}", flush=True)

    while not stop.wait(0.5):
        pass
    log.info("stopping")
    health_servicer.enter_graceful_shutdown()
    server.stop(grace=5).wait()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
