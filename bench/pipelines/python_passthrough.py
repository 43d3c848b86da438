"""The floor (benchmark variant B5-passthrough): confluent-kafka moving records, nothing else.

Per ``consume(500, 10 ms)``: each record's key and value produced unchanged to the output topic,
no parsing, then flush and a synchronous commit, the same at-least-once delivery as
B5-python. What librdkafka and the Python binding cost per record; the runtime's pass-through
plugin (B1) does the same job. SIGTERM: finish the batch in hand, commit, close, exit 0.

    python_passthrough.py --brokers HOST:PORT --input T --output T --group G
"""

import argparse
import signal
import sys

from confluent_kafka import Consumer, Producer


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("--brokers", "--input", "--output", "--group"):
        p.add_argument(name, required=True)
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--poll-timeout", type=float, default=0.01)
    args = p.parse_args()
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    consumer = Consumer({"bootstrap.servers": args.brokers, "group.id": args.group, "enable.auto.commit": False,
                         "auto.offset.reset": "earliest", "session.timeout.ms": 6000})
    producer = Producer({"bootstrap.servers": args.brokers, "enable.idempotence": True, "linger.ms": 5})
    failed = []

    def on_delivery(err, msg) -> None:
        if err is not None:
            failed.append(err)

    consumer.subscribe([args.input])
    while not stop:
        batch = consumer.consume(args.batch, args.poll_timeout)
        for msg in batch:
            if msg.error():
                raise RuntimeError(msg.error())
            producer.produce(args.output, msg.value(), msg.key(), on_delivery=on_delivery)
        if batch:
            if producer.flush(30) or failed:
                print(f"delivery failed: {failed[:5]}", file=sys.stderr)
                return 1
            consumer.commit(asynchronous=False)
    consumer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
