"""The fraud pipeline written with Quix Streams (benchmark variant B5).

What the library's documentation leads a user to: an ``Application`` on the broker, a streaming
dataframe over the input topic with JSON values, ``apply`` scoring each transaction with the
ONNX model (onnxruntime, one row per call: the dataframe hands over one record at a time), and
``to_topic`` with the same verdict as the fraud plugin under the same key. Quix gives an output
record its input's timestamp; ``set_timestamp`` stamps it with the time it was scored instead, as
every other variant's producer does (the benchmark measures rates from output timestamps).
At-least-once
(Quix commits a checkpoint every ``--commit-interval`` seconds, after the producer has flushed).
SIGTERM or SIGINT: Quix's own handler stops the application, which commits and exits.

    quix_pipeline.py --brokers HOST:PORT --input T --output T --group G --state-dir DIR
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from quixstreams import Application

FEATURES = ("Time", *(f"V{i}" for i in range(1, 29)), "Amount")
MODEL = Path(__file__).resolve().parents[2] / "models" / "fraud" / "fraud.onnx"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--brokers", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--commit-interval", type=float, default=5.0)
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--model", type=Path, default=MODEL)
    args = parser.parse_args()

    session = ort.InferenceSession(str(args.model), providers=["CPUExecutionProvider"])
    threshold = float(np.float32(args.threshold))

    def score(tx: dict) -> dict:
        features = np.array([[float(tx[name]) for name in FEATURES]], dtype=np.float32)
        p = session.run(["fraud_probability"], {"features": features})[0][0, 0].item()
        return {"id": tx["id"], "fraud_probability": p, "is_fraud": p >= threshold,
                "model_name": "fraud", "model_version": "1"}

    app = Application(
        broker_address=args.brokers,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        commit_interval=args.commit_interval,
        processing_guarantee="at-least-once",
        state_dir=args.state_dir,
        consumer_extra_config={"session.timeout.ms": 6000},
        producer_extra_config={"enable.idempotence": True, "acks": "all", "linger.ms": 5},
        loglevel=logging.INFO,
        use_changelog_topics=False,
    )
    source = app.topic(args.input, key_deserializer="bytes", value_deserializer="json")
    sink = app.topic(args.output, key_serializer="bytes", value_serializer="json")
    now_ms = lambda value, key, timestamp, headers: time.time_ns() // 1_000_000  # noqa: E731
    app.dataframe(source).apply(score).set_timestamp(now_ms).to_topic(sink)
    app.run()


if __name__ == "__main__":
    main()
