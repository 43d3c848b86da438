"""The test tooling itself: the synthetic data generator and the Kafka helpers against tansu.

If these fail, a failing end-to-end test says nothing about the runtime.
"""

from __future__ import annotations

import json
import uuid

import numpy as np
from confluent_kafka import Consumer, TopicPartition

from models.fraud import data
from streamtools import fraud, kafka, paths


def test_generator_is_seeded_and_has_the_schema():
    first = list(data.labelled_transactions(seed=3, count=500))
    assert first == list(data.labelled_transactions(seed=3, count=500))
    assert first != list(data.labelled_transactions(seed=4, count=500))
    tx, _ = first[0]
    assert list(tx) == ["id", *data.FEATURES]
    assert [t["id"] for t, _ in first] == list(range(1, 501))
    times = [t["Time"] for t, _ in first]
    assert times == sorted(times)
    for t, _ in first:  # survives JSON unchanged, so the runtime sees exactly these values
        assert json.loads(fraud.encode(t)) == t


def test_generator_class_balance_and_signal():
    table = data.generate(seed=11, count=200_000)
    rate = table.labels.mean()
    assert 0.0012 < rate < 0.0023, rate  # 0.17 % expected
    v14 = table.features[:, data.FEATURES.index("V14")]
    fraud_rows, legit_rows = table.labels == 1, table.labels == 0
    assert v14[fraud_rows].mean() < v14[legit_rows].mean() - 1.0
    assert np.median(table.features[fraud_rows, -1]) < np.median(table.features[legit_rows, -1])


def test_poison_records_sit_among_the_transactions():
    records = fraud.input_records(seed=1, count=10, poison=1)
    assert [r.poison for r in records] == [False] * 5 + [True] + [False] * 5
    with np.testing.assert_raises(ValueError):
        json.loads(records[5].value)
    assert len({r.key for r in records}) == 11


def test_produce_read_and_committed_offsets(broker):
    topic = f"tools-{uuid.uuid4().hex[:10]}"
    kafka.create_topics(broker.bootstrap, {topic: 3})
    records = [(f"k{i}".encode(), f"v{i}".encode()) for i in range(300)] + [(None, b"\xff\x00")]
    report = kafka.produce(broker.bootstrap, topic, records)

    per_partition = {}
    for d in report.delivered:
        per_partition[d.partition] = per_partition.get(d.partition, 0) + 1
    assert report.end_offsets() == per_partition  # offsets start at 0 and have no gaps

    with kafka.TopicReader(broker.bootstrap, topic) as reader:
        read = reader.read(len(records), timeout=30)
        read += reader.drain(idle=1.0)
    assert sorted((r.key or b"", r.value) for r in read) == sorted((k or b"", v) for k, v in records)
    assert {(r.partition, r.offset) for r in read} == {(d.partition, d.offset) for d in report.delivered}

    group = f"group-{uuid.uuid4().hex[:10]}"
    assert kafka.committed_offsets(broker.bootstrap, group, topic) == {0: None, 1: None, 2: None}
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        consumer.commit(offsets=[TopicPartition(topic, 1, 7)], asynchronous=False)
    finally:
        consumer.close()
    assert kafka.committed_offsets(broker.bootstrap, group, topic) == {0: None, 1: 7, 2: None}


def test_the_demo_environment_pins_what_the_test_environment_pins():
    """`scripts/setup.sh --demo` installs requirements-demo.txt alone; its versions are those the
    tests run with, so the demo runs what was tested."""
    def pins(name: str) -> dict[str, str]:
        lines = (paths.REPO / name).read_text().splitlines()
        return dict(line.split("==") for line in lines if line.strip() and not line.startswith("#"))

    demo, full = pins("requirements-demo.txt"), pins("requirements.txt")
    assert demo, "the demo needs the Kafka client at least"
    assert {name: full.get(name) for name in demo} == demo
