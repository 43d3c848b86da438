"""What the model server can do at best (benchmark variant B4, "ideal client").

Sends one pre-built TF Serving PredictRequest of ``--batch`` rows (packed ``tensor_content``,
built and serialised once) with ``--concurrency`` calls in flight on one channel for
``--seconds``, after a short warm-up, and prints one JSON object: rows/s, calls, errors,
per-call latency percentiles. Every answer is checked for ``--batch`` finite scores. Runs in the
project's .venv (official TF Serving API stubs, grpcio).

    ideal_client.py --address 127.0.0.1:PORT [--seconds 10] [--concurrency 4] [--batch 256]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import deque
from pathlib import Path

import grpc
import numpy as np
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from models.fraud import data  # noqa: E402

DT_FLOAT = 1  # tensorflow.DataType.DT_FLOAT


def request(batch: int, model: str) -> predict_pb2.PredictRequest:
    rows = np.asarray(data.generate(seed=11, count=batch).features, dtype=np.float32)
    req = predict_pb2.PredictRequest()
    req.model_spec.name = model
    req.model_spec.signature_name = "serving_default"
    tensor = req.inputs["features"]
    tensor.dtype = DT_FLOAT
    tensor.tensor_shape.dim.add(size=batch)
    tensor.tensor_shape.dim.add(size=rows.shape[1])
    tensor.tensor_content = rows.tobytes()
    req.output_filter.append("fraud_probability")
    return req


def good(response, batch: int) -> bool:
    out = response.outputs["fraud_probability"]
    values = list(out.float_val) if out.float_val else np.frombuffer(out.tensor_content, np.float32).tolist()
    return len(values) == batch and all(math.isfinite(v) for v in values)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", required=True)
    parser.add_argument("--model", default="fraud")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()

    req = request(args.batch, args.model)
    with grpc.insecure_channel(args.address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for _ in range(20):
            if not good(stub.Predict(req, timeout=30), args.batch):
                print("warm-up answer without the expected scores", file=sys.stderr)
                return 1
        calls = errors = bad = 0
        latencies: list[float] = []
        in_flight: deque = deque()
        start = time.monotonic()
        end = start + args.seconds
        while True:
            now = time.monotonic()
            while now < end and len(in_flight) < args.concurrency:
                in_flight.append((time.perf_counter(), stub.Predict.future(req, timeout=30)))
            if not in_flight:
                break
            sent, future = in_flight.popleft()
            try:
                response = future.result()
                latencies.append(time.perf_counter() - sent)
                calls += 1
                bad += not good(response, args.batch)
            except grpc.RpcError as error:
                errors += 1
                if errors <= 3:
                    print(f"call failed: {error.code()} {error.details()}", file=sys.stderr)
        elapsed = time.monotonic() - start
    lat = np.asarray(latencies) * 1000.0
    print(json.dumps({
        "rows_per_s": calls * args.batch / elapsed,
        "calls": calls,
        "rows": calls * args.batch,
        "seconds": elapsed,
        "errors": errors,
        "bad_responses": bad,
        "p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
        "p99_ms": float(np.percentile(lat, 99)) if len(lat) else None,
        "batch": args.batch,
        "concurrency": args.concurrency,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
