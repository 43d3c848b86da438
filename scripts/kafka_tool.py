"""Small Kafka command-line tool for the fraud example, independent of the runtime.

    kafka_tool.py [--brokers HOST:PORT] create-topics transactions:4 fraud-scores:4 fraud-dead-letters
    kafka_tool.py produce-transactions --topic transactions --count 2000 --seed 7 [--poison 1]
    kafka_tool.py consume --topic fraud-scores --count 10 --timeout 10
    kafka_tool.py committed --group fraud-scorer --topic transactions

`produce-transactions` writes synthetic transactions (models/fraud/data.py) as JSON with
key = str(id), plus K poison records whose value is not JSON, and prints the end offset of each
partition (from the delivery reports) as JSON. `consume` prints records as JSON lines;
`committed` prints the group's committed offset per partition as JSON.
The helpers live in scripts/streamtools/ so the tests use the same code.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from streamtools import fraud, kafka  # noqa: E402


def create_topics(args) -> None:
    topics = {}
    for spec in args.topics:
        name, _, partitions = spec.partition(":")
        topics[name] = int(partitions) if partitions else args.partitions
    kafka.create_topics(args.brokers, topics)
    print(json.dumps({"created": topics}))


def produce_transactions(args) -> None:
    records = fraud.input_records(args.seed, args.count, poison=args.poison, first_id=args.first_id)
    report = kafka.produce(args.brokers, args.topic, [(r.key, r.value) for r in records])
    ends = report.end_offsets()
    print(json.dumps({
        "topic": args.topic,
        "transactions": args.count,
        "frauds": sum(1 for r in records if r.label == 1),
        "poison": args.poison,
        "end_offsets": {str(p): ends[p] for p in sorted(ends)},
    }))


def consume(args) -> None:
    with kafka.TopicReader(args.brokers, args.topic) as reader:
        records = reader.read(args.count, args.timeout)
    for record in records:
        print(json.dumps(record.to_json()))
    if len(records) < args.count:
        print(f"consume: {len(records)} of {args.count} records within {args.timeout}s", file=sys.stderr)
        sys.exit(1)


def committed(args) -> None:
    offsets = kafka.committed_offsets(args.brokers, args.group, args.topic)
    print(json.dumps({str(p): offsets[p] for p in sorted(offsets)}))


def main() -> None:
    parser = argparse.ArgumentParser(description="Kafka helper for the fraud example")
    parser.add_argument("--brokers", default=os.environ.get("KAFKA_BROKERS", "127.0.0.1:9092"))
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("create-topics", help="create topics NAME[:PARTITIONS] ...")
    p.add_argument("topics", nargs="+")
    p.add_argument("--partitions", type=int, default=1, help="for names given without :PARTITIONS")
    p.set_defaults(run=create_topics)

    p = sub.add_parser("produce-transactions", help="produce synthetic transactions as JSON")
    p.add_argument("--topic", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--poison", type=int, default=0, help="also produce this many records that are not JSON")
    p.add_argument("--first-id", type=int, default=1)
    p.set_defaults(run=produce_transactions)

    p = sub.add_parser("consume", help="print records as JSON lines (from the beginning)")
    p.add_argument("--topic", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--timeout", type=float, default=30.0, help="seconds")
    p.set_defaults(run=consume)

    p = sub.add_parser("committed", help="print a group's committed offsets")
    p.add_argument("--group", required=True)
    p.add_argument("--topic", required=True)
    p.set_defaults(run=committed)

    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
