"""Reading an output topic back and checking it against the dataset.

Every output record is read (no group, ``assign`` from the beginning) and checked:

* ``verdict`` outputs (the fraud plugin, the Python pipelines): JSON with exactly the fields
  id, fraud_probability, is_fraud, model_name, model_version; the id is one of the dataset's;
  the key is the input's key (str(id)); the probability is within ``TOLERANCE`` of the score
  computed here with onnxruntime, and is_fraud agrees with it;
* ``copy`` outputs (the pass-through plugin): key and value byte for byte the input's (CRC-32).

Then the counts: as many outputs as inputs, every id exactly once. Throughput is taken from the
output records' own timestamps (first to last), so start-up and group join do not count. With
tansu these are the producer's CreateTime (tansu ignores ``message.timestamp.type=LogAppendTime``),
set when the producing process handed the record to librdkafka.
"""

from __future__ import annotations

import json
import math
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from confluent_kafka import KafkaException

from streamtools import fraud, kafka

from .data import Dataset

TOLERANCE = 1e-5  # largest difference from the onnxruntime score (tract, TF and ORT differ ~1e-7)
VERDICT_FIELDS = {"id", "fraud_probability", "is_fraud", "model_name", "model_version"}
THRESHOLD = np.float32(fraud.THRESHOLD)


def scan(brokers: str, topic: str, expected: int, visit: Callable, timeout: float, idle: float = 2.0) -> int:
    """Calls ``visit(msg)`` for every record of ``topic``; reads until ``expected`` records and
    then ``idle`` seconds without any (late extras show up), or until ``timeout``. The count."""
    with kafka.TopicReader(brokers, topic) as reader:
        count = 0
        deadline = time.monotonic() + timeout
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            batch = reader.consumer.consume(num_messages=1000, timeout=0.2)
            for msg in batch:
                if msg.error():
                    raise KafkaException(msg.error())
                visit(msg)
            count += len(batch)
            if batch:
                quiet_since = time.monotonic()
            elif count >= expected and time.monotonic() - quiet_since >= idle:
                break
        return count


@dataclass
class OutputCheck:
    """Accumulates what one output topic holds, record by record."""

    dataset: Dataset
    kind: str  # "verdict" or "copy"
    count: int = 0
    first_ts: int | None = None
    last_ts: int | None = None
    max_score_diff: float = 0.0
    flagged: int = 0
    problems: Counter = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.seen = np.zeros(self.dataset.count, np.uint16)

    def _problem(self, what: str, example: str) -> None:
        self.problems[what] += 1
        self.examples.setdefault(what, example)

    def visit(self, msg) -> None:
        self.count += 1
        ts_type, ts = msg.timestamp()
        if ts_type and ts > 0:
            self.first_ts = ts if self.first_ts is None else min(self.first_ts, ts)
            self.last_ts = ts if self.last_ts is None else max(self.last_ts, ts)
        value, key = msg.value(), msg.key()
        where = f"partition {msg.partition()} offset {msg.offset()}"
        try:
            decoded = json.loads(value)
            tx_id = decoded["id"]
            index = self.dataset.index_of(tx_id) if isinstance(tx_id, int) else None
        except (TypeError, ValueError, KeyError):
            self._problem("value without a JSON id", f"{where}: {value[:60] if value else value!r}")
            return
        if index is None:
            self._problem("id not in the input", f"{where}: id {tx_id!r}")
            return
        self.seen[index] = min(int(self.seen[index]) + 1, 65535)
        if key != str(tx_id).encode():
            self._problem("key differs from the input's", f"id {tx_id}: key {key!r}")
        if self.kind == "copy":
            if zlib.crc32(value) != int(self.dataset.crc[index]):
                self._problem("value differs from the input's", f"id {tx_id}")
            return
        if set(decoded) != VERDICT_FIELDS:
            self._problem("verdict fields", f"id {tx_id}: {sorted(decoded)}")
            return
        p = decoded["fraud_probability"]
        if not isinstance(p, (int, float)) or not math.isfinite(p):
            self._problem("fraud_probability not a number", f"id {tx_id}: {p!r}")
            return
        if decoded["is_fraud"] is not bool(np.float32(p) >= THRESHOLD):
            self._problem("is_fraud disagrees with the probability", f"id {tx_id}: {p} {decoded['is_fraud']!r}")
        self.flagged += bool(decoded["is_fraud"])
        if (decoded["model_name"], decoded["model_version"]) != ("fraud", "1"):
            self._problem("model name/version", f"id {tx_id}: {decoded['model_name']!r} {decoded['model_version']!r}")
        diff = abs(p - float(self.dataset.scores[index]))
        self.max_score_diff = max(self.max_score_diff, diff)
        if diff > TOLERANCE:
            self._problem(
                f"fraud_probability off by more than {TOLERANCE:g}",
                f"id {tx_id}: {p} vs {float(self.dataset.scores[index])}",
            )

    @property
    def distinct(self) -> int:
        return int(np.count_nonzero(self.seen))

    @property
    def duplicated(self) -> int:
        return int(np.count_nonzero(self.seen > 1))

    def rate(self) -> float | None:
        """Records per second between the first and the last output timestamp (ms resolution)."""
        if self.first_ts is None or self.last_ts is None or self.last_ts <= self.first_ts or self.count < 2:
            return None
        return (self.count - 1) / ((self.last_ts - self.first_ts) / 1000.0)

    def findings(self) -> list[str]:
        """Every way the output differs from the input; empty when it is right."""
        out = []
        n = self.dataset.count
        if self.count != n:
            out.append(f"{self.count} output records for {n} inputs")
        if self.distinct != n:
            out.append(f"{self.distinct} distinct ids of {n} ({n - self.distinct} missing)")
        if self.duplicated:
            out.append(f"{self.duplicated} ids output more than once")
        for what, times in self.problems.most_common():
            out.append(f"{what}: {times} records, e.g. {self.examples[what]}")
        return out


def offsets_findings(committed: dict[int, int | None], ends: dict[int, int]) -> list[str]:
    want = {p: ends.get(p, 0) for p in committed}
    got = {p: (o or 0) for p, o in committed.items()}
    if got != want:
        return [f"committed offsets {committed} differ from the input's end offsets {want}"]
    return []


def count_records(brokers: str, topic: str, timeout: float = 30.0, idle: float = 1.0) -> int:
    return scan(brokers, topic, 0, lambda msg: None, timeout, idle=idle)
