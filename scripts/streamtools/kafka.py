"""Kafka client helpers (confluent-kafka): topics, producing, reading, committed offsets.

Reads use `assign()` from the beginning of every partition with a throw-away group id, so they
join no consumer group and commit nothing. End offsets of produced data come from the delivery
reports (last offset + 1), not from the broker's high watermarks: tansu reports those too low.
"""

from __future__ import annotations

import base64
import time
import uuid
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True)
class Record:
    """One record read from a topic."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers
    timestamp: int | None

    def header(self, name: str) -> bytes | None:
        """The last value of header ``name``, or None."""
        values = [v for k, v in self.headers if k == name]
        return values[-1] if values else None

    def header_str(self, name: str) -> str | None:
        value = self.header(name)
        return None if value is None else value.decode("utf-8", errors="replace")

    def to_json(self) -> dict:
        """A JSON-ready view; bytes that are not UTF-8 appear as {"base64": ...}."""
        return {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "timestamp": self.timestamp,
            "key": _text(self.key),
            "value": _text(self.value),
            "headers": [[k, _text(v)] for k, v in self.headers],
        }


def _text(data: bytes | None):
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode("ascii")}


def wait_for_broker(brokers: str, timeout: float = 30.0) -> None:
    """Returns once the broker answers a metadata request."""
    admin = AdminClient({"bootstrap.servers": brokers})
    deadline = time.monotonic() + timeout
    while True:
        try:
            admin.list_topics(timeout=2)
            return
        except KafkaException:
            if time.monotonic() > deadline:
                raise


def create_topics(brokers: str, topics: dict[str, int], timeout: float = 30.0) -> None:
    """Creates topics (name -> partitions) and waits until metadata shows every partition."""
    admin = AdminClient({"bootstrap.servers": brokers})
    new = [NewTopic(name, num_partitions=n, replication_factor=1) for name, n in topics.items()]
    for name, future in admin.create_topics(new, operation_timeout=timeout, request_timeout=timeout).items():
        future.result()  # raises KafkaException with the broker's reason
    deadline = time.monotonic() + timeout
    while True:
        metadata = admin.list_topics(timeout=timeout)
        seen = {name: len(metadata.topics[name].partitions) for name in topics if name in metadata.topics}
        if seen == topics:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"topics not visible after {timeout}s: wanted {topics}, see {seen}")
        time.sleep(0.1)


def partitions_of(brokers: str, topic: str, timeout: float = 10.0) -> list[int]:
    metadata = AdminClient({"bootstrap.servers": brokers}).list_topics(topic, timeout=timeout)
    described = metadata.topics.get(topic)
    if described is None or described.error is not None:
        raise KafkaException(described.error if described else f"unknown topic {topic}")
    return sorted(described.partitions)


@dataclass
class Delivered:
    """Where a produced record landed."""

    key: bytes | None
    value: bytes | None
    partition: int
    offset: int


@dataclass
class ProduceReport:
    topic: str
    delivered: list[Delivered] = field(default_factory=list)  # in the order given

    def end_offsets(self) -> dict[int, int]:
        """Per partition written to: the offset after the last record (what a consumer commits)."""
        ends: dict[int, int] = {}
        for d in self.delivered:
            ends[d.partition] = max(ends.get(d.partition, 0), d.offset + 1)
        return ends


def produce(
    brokers: str,
    topic: str,
    records: Iterable[tuple[bytes | None, bytes | None]],
    timeout: float = 60.0,
    config: dict | None = None,
) -> ProduceReport:
    """Produces (key, value) records with an idempotent producer; fails on any delivery error."""
    producer = Producer({
        "bootstrap.servers": brokers,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        **(config or {}),
    })
    pending: list[tuple[bytes | None, bytes | None]] = list(records)
    slots: list[Delivered | None] = [None] * len(pending)
    errors: list[str] = []

    def on_delivery(index: int):
        def callback(err, msg):
            if err is not None:
                errors.append(f"record {index}: {err}")
            else:
                slots[index] = Delivered(msg.key(), msg.value(), msg.partition(), msg.offset())
        return callback

    for index, (key, value) in enumerate(pending):
        while True:
            try:
                producer.produce(topic, key=key, value=value, on_delivery=on_delivery(index))
                break
            except BufferError:  # local queue full: let deliveries drain
                producer.poll(0.1)
        producer.poll(0)
    remaining = producer.flush(timeout)
    if remaining or errors or any(s is None for s in slots):
        raise RuntimeError(f"produce to {topic} failed: {remaining} undelivered, errors: {errors[:5]}")
    return ProduceReport(topic, [s for s in slots if s is not None])


class TopicReader:
    """Reads every partition of a topic from the beginning, without joining a group."""

    def __init__(self, brokers: str, topic: str, partitions: Sequence[int] | None = None) -> None:
        self.topic = topic
        self.consumer = Consumer({
            "bootstrap.servers": brokers,
            "group.id": f"reader-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
        })
        parts = partitions if partitions is not None else partitions_of(brokers, topic)
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])

    def read(self, count: int, timeout: float) -> list[Record]:
        """Up to ``count`` records; returns early with fewer when ``timeout`` seconds pass."""
        out: list[Record] = []
        deadline = time.monotonic() + timeout
        while len(out) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for msg in self.consumer.consume(num_messages=min(500, count - len(out)), timeout=min(left, 0.5)):
                if msg.error():
                    raise KafkaException(msg.error())
                out.append(_record(msg))
        return out

    def drain(self, idle: float, timeout: float = 60.0) -> list[Record]:
        """Everything that arrives until nothing has for ``idle`` seconds (or ``timeout`` passes)."""
        out: list[Record] = []
        deadline = time.monotonic() + timeout
        quiet_since = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - quiet_since < idle:
            batch = self.consumer.consume(num_messages=500, timeout=0.2)
            for msg in batch:
                if msg.error():
                    raise KafkaException(msg.error())
                out.append(_record(msg))
            if batch:
                quiet_since = time.monotonic()
        return out

    def close(self) -> None:
        self.consumer.close()

    def __enter__(self) -> "TopicReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _record(msg) -> Record:
    ts_type, ts = msg.timestamp()
    return Record(
        topic=msg.topic(),
        partition=msg.partition(),
        offset=msg.offset(),
        key=msg.key(),
        value=msg.value(),
        headers=[(k, v if v is not None else b"") for k, v in (msg.headers() or [])],
        timestamp=ts if ts_type else None,
    )


def committed_offsets(brokers: str, group: str, topic: str, timeout: float = 10.0) -> dict[int, int | None]:
    """The group's committed offset per partition of ``topic`` (None: nothing committed)."""
    partitions = partitions_of(brokers, topic)
    consumer = Consumer({"bootstrap.servers": brokers, "group.id": group, "enable.auto.commit": False})
    try:
        return read_committed(consumer, topic, partitions, timeout)
    finally:
        consumer.close()


def read_committed(consumer: Consumer, topic: str, partitions: Sequence[int], timeout: float = 10.0) -> dict[int, int | None]:
    """What ``consumer``'s group has committed per partition of ``topic`` (None: nothing)."""
    answer = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=timeout)
    result = {tp.partition: (tp.offset if tp.offset >= 0 else None) for tp in answer}
    # Drop the partition list before the consumer closes: a live list can make close() hang.
    del answer
    return result
