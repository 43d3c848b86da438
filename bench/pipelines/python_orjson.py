"""The fraud pipeline as a skilled Python user writes it (benchmark variant B5-python).

Per ``consume(500, 10 ms)``: ``orjson.loads`` each value, one onnxruntime call (one thread) on
the batch's float32 [n, 30] features, the fraud plugin's verdict (same key, fields and
``source-*`` headers) serialised with ``orjson.dumps``, then flush and a synchronous commit:
at-least-once. A value that is not JSON or lacks a field goes to the dead-letter topic. SIGTERM: finish
the batch in hand, commit, close, exit 0.

    python_orjson.py --brokers HOST:PORT --input T --output T --dead-letter T --group G
        [--batch 500] [--poll-timeout 0.01] [--consumer KEY=VALUE ...]
"""

import argparse
import signal
import sys
from operator import itemgetter
from pathlib import Path

import numpy as np
import onnxruntime as ort
import orjson
from confluent_kafka import Consumer, Producer

FEATURES = itemgetter("Time", *(f"V{i}" for i in range(1, 29)), "Amount")  # a row of 30 from a dict
MODEL = Path(__file__).resolve().parents[2] / "models" / "fraud" / "fraud.onnx"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("--brokers", "--input", "--output", "--dead-letter", "--group"):
        p.add_argument(name, required=True)
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--poll-timeout", type=float, default=0.01)
    p.add_argument("--consumer", nargs="*", default=[], metavar="KEY=VALUE", help="more consumer properties")
    args = p.parse_args()
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(MODEL), options, providers=["CPUExecutionProvider"])
    consumer = Consumer({"bootstrap.servers": args.brokers, "group.id": args.group, "enable.auto.commit": False,
                         "auto.offset.reset": "earliest", "session.timeout.ms": 6000,
                         **dict(item.split("=", 1) for item in args.consumer)})
    producer = Producer({"bootstrap.servers": args.brokers, "enable.idempotence": True, "linger.ms": 5})
    failed = []

    def on_delivery(err, msg) -> None:
        if err is not None:
            failed.append(err)

    consumer.subscribe([args.input])
    while not stop:
        batch = consumer.consume(args.batch, args.poll_timeout)
        good, rows = [], []
        for msg in batch:
            if msg.error():
                raise RuntimeError(msg.error())
            source = [("source-topic", msg.topic().encode()), ("source-partition", b"%d" % msg.partition()),
                      ("source-offset", b"%d" % msg.offset())]
            try:
                tx = orjson.loads(msg.value())
                rows.append(FEATURES(tx))
                good.append((msg.key(), tx["id"], source))
            except (orjson.JSONDecodeError, KeyError, TypeError) as error:
                producer.produce(args.dead_letter, msg.value(), msg.key(), on_delivery=on_delivery,
                                 headers=[("dead-letter-reason", b"invalid-record"),
                                          ("dead-letter-message", str(error).encode()), *source])
        if rows:
            scores = session.run(["fraud_probability"], {"features": np.array(rows, np.float32)})[0][:, 0].tolist()
            for (key, tx_id, source), score in zip(good, scores):
                verdict = {"id": tx_id, "fraud_probability": score, "is_fraud": score >= 0.5,
                           "model_name": "fraud", "model_version": "1"}
                producer.produce(args.output, orjson.dumps(verdict), key, headers=source, on_delivery=on_delivery)
        if batch:
            if producer.flush(30) or failed:
                print(f"delivery failed: {failed[:5]}", file=sys.stderr)
                return 1
            consumer.commit(asynchronous=False)
    consumer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
