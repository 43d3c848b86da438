"""The broker's share of latency (benchmark variant B6-broker): a minimal forwarder.

Reads the input topic one record at a time (``poll``, which returns as soon as a record is
there) and produces it at once, unchanged, to the output topic with the ``source-partition`` and
``source-offset`` headers the fraud plugin sets. The output's timestamp is taken when it is
handed to the producer, so output minus input timestamp is the time a record needs from the
offering producer through the broker to a consumer: the floor under any pipeline's latency on
this broker. Offsets are committed by librdkafka (auto-commit); SIGTERM: flush, close, exit 0.

    forwarder.py --brokers HOST:PORT --input T --output T --group G [--consumer KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import signal
import sys

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--brokers", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--consumer", nargs="*", default=[], metavar="KEY=VALUE", help="librdkafka consumer properties")
    args = parser.parse_args()

    stopping = False

    def stop(signum, frame) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    extra = dict(item.split("=", 1) for item in args.consumer)
    consumer = Consumer({
        "bootstrap.servers": args.brokers,
        "group.id": args.group,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000,
        **extra,
    })
    producer = Producer({"bootstrap.servers": args.brokers, "linger.ms": 0})
    failures: list[str] = []

    def delivered(err, msg) -> None:
        if err is not None:
            failures.append(str(err))

    consumer.subscribe([args.input])
    try:
        while not stopping:
            msg = consumer.poll(0.1)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaException(msg.error())
            headers = [
                ("source-partition", str(msg.partition()).encode()),
                ("source-offset", str(msg.offset()).encode()),
            ]
            while True:
                try:
                    producer.produce(
                        args.output, key=msg.key(), value=msg.value(), headers=headers, on_delivery=delivered
                    )
                    break
                except BufferError:
                    producer.poll(0.05)
            producer.poll(0)
        remaining = producer.flush(30)
        if remaining or failures:
            print(f"delivery failed: {remaining} undelivered, errors {failures[:5]}", file=sys.stderr)
            return 1
    finally:
        consumer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
