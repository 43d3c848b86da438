"""The fraud pipeline in Python with the standard library's json (benchmark variant B5-python-stdlib).

confluent-kafka consumer without auto-commit; per ``consume()`` of up to ``--batch`` records (waiting
at most ``--poll-timeout`` for a batch to fill): decode the
JSON, build one float32 [n, 30] feature matrix, run the ONNX model once with onnxruntime, produce
the same verdict as the fraud plugin (same key, same fields, same ``source-*`` headers), wait
for every delivery, then commit synchronously. A record that is not a valid transaction goes to
the dead-letter topic. At-least-once: nothing is committed before its outputs are acknowledged.
SIGTERM or SIGINT: finish the batch in hand, commit, close, exit 0.

Kept as context beside python_orjson.py (B5-python), the figure the targets use: this loop
spends most of its time in ``json.loads`` and ``float()``, which no careful user would ship.

    python_stdlib.py --brokers HOST:PORT --input T --output T --dead-letter T --group G
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer

FEATURES = ("Time", *(f"V{i}" for i in range(1, 29)), "Amount")
MODEL = Path(__file__).resolve().parents[2] / "models" / "fraud" / "fraud.onnx"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--brokers", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--dead-letter", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--batch", type=int, default=500)
    # consume() waits until the batch is full or the timeout passes: a partial batch (the last
    # one) waits this long, comparable to the runtime's pipeline.linger (5 ms).
    parser.add_argument("--poll-timeout", type=float, default=0.01)
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--model", type=Path, default=MODEL)
    args = parser.parse_args()

    stopping = False

    def stop(signum, frame) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    session = ort.InferenceSession(str(args.model), providers=["CPUExecutionProvider"])
    threshold = float(np.float32(args.threshold))
    consumer = Consumer({
        "bootstrap.servers": args.brokers,
        "group.id": args.group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000,
    })
    producer = Producer({
        "bootstrap.servers": args.brokers,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
    })
    failures: list[str] = []

    def delivered(err, msg) -> None:
        if err is not None:
            failures.append(str(err))

    def send(topic: str, key, value: bytes, headers: list) -> None:
        while True:
            try:
                producer.produce(topic, key=key, value=value, headers=headers, on_delivery=delivered)
                return
            except BufferError:
                producer.poll(0.05)

    consumer.subscribe([args.input])
    try:
        while not stopping:
            messages = consumer.consume(num_messages=args.batch, timeout=args.poll_timeout)
            if not messages:
                continue
            good, rows = [], []
            for msg in messages:
                if msg.error():
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        continue
                    raise KafkaException(msg.error())
                source = [
                    ("source-topic", msg.topic().encode()),
                    ("source-partition", str(msg.partition()).encode()),
                    ("source-offset", str(msg.offset()).encode()),
                ]
                try:
                    tx = json.loads(msg.value())
                    tx_id = tx["id"]
                    if not isinstance(tx_id, int):
                        raise TypeError("id must be an integer")
                    rows.append([float(tx[name]) for name in FEATURES])
                except (ValueError, KeyError, TypeError) as error:
                    reason = [("dead-letter-reason", b"invalid-record"), ("dead-letter-message", str(error).encode())]
                    send(args.dead_letter, msg.key(), msg.value() or b"", reason + source)
                    continue
                good.append((msg.key(), tx_id, source))
            if rows:
                features = np.array(rows, dtype=np.float32)
                scores = session.run(["fraud_probability"], {"features": features})[0][:, 0].tolist()
                for (key, tx_id, source), p in zip(good, scores):
                    verdict = {
                        "id": tx_id,
                        "fraud_probability": p,
                        "is_fraud": p >= threshold,
                        "model_name": "fraud",
                        "model_version": "1",
                    }
                    send(args.output, key, json.dumps(verdict, separators=(",", ":")).encode(), source)
            remaining = producer.flush(30)
            if remaining or failures:
                print(f"delivery failed: {remaining} undelivered, errors {failures[:5]}", file=sys.stderr)
                return 1
            consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
