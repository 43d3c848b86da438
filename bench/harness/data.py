"""The benchmark's input: synthetic fraud transactions (streamtools.fraud), produced once.

Records are made in chunks of ``CHUNK`` (chunk ``i`` from seed ``seed + i``), so a backlog of a
million records never sits in memory as Python objects. Ids run from ``first_id`` upwards in
production order. For every record the dataset keeps only what the checks need: the CRC-32 of
its value (a pass-through copy must match it) and the model's score, computed here with
onnxruntime from the same JSON values the pipelines parse (a verdict must match it).

End offsets come from the delivery reports (last offset + 1 per partition): tansu reports high
watermarks too low, so they are not used.
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass
from typing import Iterator

import numpy as np
from confluent_kafka import Producer

from streamtools import fraud, paths

CHUNK = 50_000
MODEL = paths.REPO / "models" / "fraud" / "fraud.onnx"


@dataclass
class Dataset:
    topic: str
    first_id: int
    count: int
    crc: np.ndarray  # uint32 per record: zlib.crc32 of its value
    scores: np.ndarray  # float32 per record: fraud_probability (onnxruntime)
    end_offsets: dict[int, int]
    produce_seconds: float

    def index_of(self, tx_id: int) -> int | None:
        i = tx_id - self.first_id
        return i if 0 <= i < self.count else None


def chunks(seed: int, count: int, first_id: int = 1, layout: int | None = None) -> Iterator[list[fraud.InputRecord]]:
    """The records, ``CHUNK`` at a time; the same arguments always give the same records. With
    ``layout`` (>= count), the first ``count`` records of the ``layout`` records: a prefix."""
    layout = max(layout or count, count)
    done = 0
    while done < count:
        n = min(CHUNK, layout - done)
        chunk = fraud.input_records(seed + done // CHUNK, n, first_id=first_id + done)
        yield chunk[: count - done]
        done += min(n, count - done)


class StreamProducer:
    """An idempotent producer that keeps only per-partition end offsets and the first errors."""

    def __init__(self, brokers: str, config: dict | None = None) -> None:
        self.producer = Producer({
            "bootstrap.servers": brokers,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "queue.buffering.max.messages": 500_000,
            **(config or {}),
        })
        self.ends: dict[int, int] = {}
        self.errors: list[str] = []
        self.sent = 0
        self.delivered = 0

    def _delivered(self, err, msg) -> None:
        if err is not None:
            if len(self.errors) < 5:
                self.errors.append(str(err))
            return
        self.delivered += 1
        p = msg.partition()
        self.ends[p] = max(self.ends.get(p, 0), msg.offset() + 1)

    def send(self, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None) -> None:
        extra = {} if partition is None else {"partition": partition}
        while True:
            try:
                self.producer.produce(topic, key=key, value=value, on_delivery=self._delivered, **extra)
                break
            except BufferError:  # local queue full: let deliveries drain
                self.producer.poll(0.05)
        self.sent += 1
        if self.sent % 1000 == 0:
            self.producer.poll(0)

    def poll(self) -> None:
        self.producer.poll(0)

    def finish(self, timeout: float = 120.0) -> dict[int, int]:
        """Waits for every delivery; the end offsets, or an error naming what went wrong."""
        remaining = self.producer.flush(timeout)
        if remaining or self.errors or self.delivered != self.sent:
            raise RuntimeError(
                f"produce failed: {self.sent} sent, {self.delivered} delivered, {remaining} still queued "
                f"after {timeout:.0f}s, errors: {self.errors}"
            )
        return dict(self.ends)


def reference_scores(rows: np.ndarray, session) -> np.ndarray:
    return session.run(["fraud_probability"], {"features": rows})[0][:, 0].astype(np.float32)


def model_session(threads: int = 0):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(MODEL), options, providers=["CPUExecutionProvider"])


def produce_dataset(
    brokers: str, topic: str, seed: int, count: int, layout: int | None = None
) -> Dataset:
    """Generates ``count`` transactions and produces them (key: id, value: JSON) to ``topic``;
    with ``layout``, the first ``count`` of the ``layout`` records the same seed gives."""
    crc = np.zeros(count, np.uint32)
    score_array = np.zeros(count, np.float32)
    session = model_session()
    producer = StreamProducer(brokers)
    started = time.monotonic()
    done = 0
    for chunk in chunks(seed, count, layout=layout):
        for i, record in enumerate(chunk):
            crc[done + i] = zlib.crc32(record.value)
            producer.send(topic, record.key, record.value)
        rows = fraud.feature_rows([r.transaction for r in chunk])
        score_array[done : done + len(chunk)] = reference_scores(rows, session)
        done += len(chunk)
    ends = producer.finish()
    return Dataset(topic, 1, count, crc, score_array, ends, time.monotonic() - started)


def model_p99_ms(rows: int, calls: int = 500) -> float:
    """p99 of one call of the fraud ONNX model at ``rows`` rows, onnxruntime on one thread."""
    session = model_session(threads=1)
    batch = fraud.feature_rows(list(fraud.data.transactions(7, rows)))
    for _ in range(20):
        reference_scores(batch, session)
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        reference_scores(batch, session)
        times.append(time.perf_counter() - t)
    return float(np.percentile(times, 99) * 1000.0)
