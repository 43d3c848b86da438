"""What the end-to-end tests share about driving a runtime: how long to wait, reading a topic
while the runtime works, and the overrides that pick the embedded model."""

from __future__ import annotations

import time

from streamtools import kafka, services

OUTPUT_TIMEOUT = 180.0  # seconds for all outputs to appear
STOP_TIMEOUT = 60.0  # seconds from SIGTERM to exit
START_FAILURE_TIMEOUT = 60.0  # seconds for a runtime that cannot start to give up
TOLERANCE = 1e-6  # largest difference from the model's own offline score


def read_while_running(reader: kafka.TopicReader, runtime: services.Service, count: int, timeout: float):
    """Reads up to ``count`` records, giving up at ``timeout`` or soon after the runtime exits."""
    records: list[kafka.Record] = []
    deadline = time.monotonic() + timeout
    while len(records) < count and time.monotonic() < deadline:
        records += reader.read(count - len(records), timeout=min(2.0, max(0.0, deadline - time.monotonic())))
        if not runtime.running():
            records += reader.drain(idle=1.0, timeout=10.0)
            break
    return records


def some(items, n: int = 5) -> str:
    """The first ``n`` items and how many there are, for assertion messages."""
    items = list(items)
    return ", ".join(map(str, items[:n])) + (f" ... ({len(items)} in all)" if len(items) > n else "")


def embedded(overrides: dict[str, object]) -> dict[str, object]:
    """The overrides without the model server: the config file's embedded ONNX model."""
    return {k: v for k, v in overrides.items() if k not in ("model.backend", "model.endpoint")}
