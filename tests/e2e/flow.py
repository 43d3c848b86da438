"""What the end-to-end tests share about driving a runtime: how long to wait, reading a topic
while the runtime works, the overrides that pick the embedded model, and asking its HTTP
endpoint."""

from __future__ import annotations

import time
import urllib.error

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


def get(url: str, timeout: float = 5.0) -> tuple[int, str, str]:
    """(status, content type, body) of a GET, 4xx and 5xx included."""
    try:
        with services.loopback_opener().open(url, timeout=timeout) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read().decode()


def wait_for(what: str, check, timeout: float, every: float = 0.5):
    """Polls ``check`` until it returns something true; returns it, or fails naming ``what``."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout:.0f}s (last: {last!r})")
