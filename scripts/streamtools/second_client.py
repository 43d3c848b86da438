"""A second, independent Kafka client for the end-to-end checks: aiokafka, whose protocol and
record-batch code is its own pure Python (its C extensions are turned off), reads a topic as
confluent-kafka (librdkafka) does, and the two must agree byte for byte: every record's
partition, offset, key, value and headers in order, a null header value told apart from an empty
one. A defect in how the runtime or librdkafka frames records, or in what the broker hands out
to `read_committed` readers, shows up as a disagreement between two clients that share no code.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid

# Before aiokafka is imported: its record parsing then runs in Python, not in its C extension.
os.environ["AIOKAFKA_NO_EXTENSIONS"] = "1"

from aiokafka import AIOKafkaConsumer, TopicPartition as AioPartition  # noqa: E402
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition  # noqa: E402

from .kafka import partitions_of  # noqa: E402

# (partition, offset, key, value, headers): headers as (name, value or None), in order.
Raw = tuple[int, int, "bytes | None", "bytes | None", tuple[tuple[str, "bytes | None"], ...]]


def _isolation(committed_only: bool) -> str:
    return "read_committed" if committed_only else "read_uncommitted"


def read_with_librdkafka(brokers: str, topic: str, committed_only: bool, idle: float = 2.0,
                         timeout: float = 120.0) -> list[Raw]:
    """Every record of ``topic`` as confluent-kafka reads it, until none arrives for ``idle`` s."""
    consumer = Consumer({
        "bootstrap.servers": brokers,
        "group.id": f"first-client-{uuid.uuid4().hex}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "isolation.level": _isolation(committed_only),
    })
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions_of(brokers, topic)])
        out: list[Raw] = []
        deadline = time.monotonic() + timeout
        quiet_since = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - quiet_since < idle:
            batch = consumer.consume(num_messages=500, timeout=0.2)
            for msg in batch:
                if msg.error():
                    raise KafkaException(msg.error())
                headers = tuple((k, v) for k, v in (msg.headers() or []))
                out.append((msg.partition(), msg.offset(), msg.key(), msg.value(), headers))
            if batch:
                quiet_since = time.monotonic()
        return out
    finally:
        consumer.close()


async def _read_with_aiokafka(brokers: str, topic: str, partitions: list[int], committed_only: bool,
                              idle: float, timeout: float) -> list[Raw]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=brokers,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level=_isolation(committed_only),
    )
    await consumer.start()
    try:
        assigned = [AioPartition(topic, p) for p in partitions]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        out: list[Raw] = []
        deadline = time.monotonic() + timeout
        quiet_since = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - quiet_since < idle:
            batches = await consumer.getmany(timeout_ms=200, max_records=500)
            for records in batches.values():
                for r in records:
                    headers = tuple((k, v) for k, v in r.headers)
                    out.append((r.partition, r.offset, r.key, r.value, headers))
            if batches:
                quiet_since = time.monotonic()
        return out
    finally:
        await consumer.stop()


def read_with_aiokafka(brokers: str, topic: str, committed_only: bool, idle: float = 2.0,
                       timeout: float = 120.0) -> list[Raw]:
    """Every record of ``topic`` as aiokafka reads it, until none arrives for ``idle`` s."""
    partitions = partitions_of(brokers, topic)
    return asyncio.run(_read_with_aiokafka(brokers, topic, partitions, committed_only, idle, timeout))


def _place(record: Raw) -> tuple[int, int]:
    return record[0], record[1]


def assert_clients_agree(brokers: str, topic: str, committed_only: bool = False) -> int:
    """Reads ``topic`` with both clients and fails, naming the first difference, unless they saw
    the same records byte for byte; returns how many records each saw."""
    first = sorted(read_with_librdkafka(brokers, topic, committed_only), key=_place)
    second = sorted(read_with_aiokafka(brokers, topic, committed_only), key=_place)
    if first != second:
        mine = set(first)
        theirs = set(second)
        only_first = sorted(mine - theirs, key=_place)[:3]
        only_second = sorted(theirs - mine, key=_place)[:3]
        raise AssertionError(
            f"{topic}: confluent-kafka read {len(first)} records, aiokafka {len(second)}; "
            f"only confluent-kafka: {only_first}; only aiokafka: {only_second}"
        )
    return len(first)
