"""The runtime when the model server fails under it: killed and restarted mid-stream, or
restarted without the model the runtime calls. Each test has its own model server on its own
port, so that it can kill and restart it."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter

import pytest

from streamtools import fraud, kafka, services

from flow import OUTPUT_TIMEOUT, STOP_TIMEOUT, read_while_running, some
from test_fraud_pipeline import SEED

COUNT = 4_000


@pytest.fixture
def own_model_server(tmp_path):
    """Starts model servers for one test and stops every one of them at the end."""
    started: list[services.ModelServer] = []

    def start(name: str, port: int = 0, model_name: str = "fraud") -> services.ModelServer:
        server = services.start_model_server(tmp_path / name, model_name=model_name, port=port)
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


def kill(server: services.ModelServer) -> None:
    server.signal(signal.SIGKILL)
    assert server.wait(10) is not None, "model server survived SIGKILL"


def test_model_server_killed_and_restarted_mid_stream_loses_nothing(
    broker, topics, overrides, start_runtime, own_model_server, tmp_path
):
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    inputs = fraud.input_records(SEED + 2, COUNT)
    kafka.produce(broker.bootstrap, topics.input, [(r.key, r.value) for r in inputs])
    ids = {r.transaction["id"] for r in inputs}

    first = own_model_server("first")
    settings = {
        **overrides,
        "model.endpoint": first.endpoint,
        "pipeline.batch-size": 32,
        "model.max-batch-size": 8,
        "model.max-in-flight": 4,
        "model.breaker-cooldown": "200ms",
    }
    runtime = start_runtime(settings)
    with kafka.TopicReader(broker.bootstrap, topics.output) as reader, \
            kafka.TopicReader(broker.bootstrap, topics.dead_letter) as dead_reader:
        outputs = read_while_running(reader, runtime, COUNT // 4, OUTPUT_TIMEOUT)
        assert len(outputs) >= COUNT // 4, f"only {len(outputs)} outputs before the kill"
        kill(first)
        outputs += reader.drain(idle=0.5, timeout=5.0)
        down_at = len(outputs)
        time.sleep(3.0)  # the server stays down: calls fail, the breaker opens, records wait
        assert runtime.running(), f"runtime stopped while the model server was down:\n{runtime.tail()}"
        assert down_at < COUNT, "everything was scored before the kill; the test proves nothing"

        own_model_server("second", port=first.port)
        outputs += read_while_running(reader, runtime, COUNT - len(outputs), OUTPUT_TIMEOUT)
        runtime.signal(signal.SIGTERM)
        assert runtime.wait(STOP_TIMEOUT) == 0, runtime.tail()
        outputs += reader.drain(idle=2.0)
        dead = dead_reader.drain(idle=1.0)

    assert not dead, f"{len(dead)} records dead-lettered while the server was down: {[d.to_json() for d in dead][:3]}"
    seen = Counter(json.loads(r.value)["id"] for r in outputs)
    missing = sorted(ids - set(seen))
    assert not missing, f"ids never scored: {some(missing)}"
    duplicates = sorted(i for i, n in seen.items() if n > 1)
    assert not duplicates, f"ids scored twice: {some(duplicates)}"


def test_a_model_the_server_no_longer_serves_is_dead_lettered_with_the_reason(
    broker, topics, overrides, start_runtime, own_model_server, tmp_path
):
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    first = own_model_server("first")
    runtime = start_runtime({**overrides, "model.endpoint": first.endpoint})
    # Wait until the runtime is consuming (it scores a first record), then swap the server for
    # one that serves the same model under another name.
    warmup = fraud.input_records(SEED + 3, 5)
    kafka.produce(broker.bootstrap, topics.input, [(r.key, r.value) for r in warmup])
    with kafka.TopicReader(broker.bootstrap, topics.output) as reader:
        assert len(read_while_running(reader, runtime, len(warmup), OUTPUT_TIMEOUT)) == len(warmup)
    kill(first)
    own_model_server("second", port=first.port, model_name="renamed")

    inputs = fraud.input_records(SEED + 4, 20, first_id=1_000)
    kafka.produce(broker.bootstrap, topics.input, [(r.key, r.value) for r in inputs])
    with kafka.TopicReader(broker.bootstrap, topics.dead_letter) as dead_reader:
        dead = dead_reader.read(len(inputs), timeout=OUTPUT_TIMEOUT)
        dead += dead_reader.drain(idle=1.0)
    runtime.signal(signal.SIGTERM)
    assert runtime.wait(STOP_TIMEOUT) == 0, runtime.tail()

    assert sorted(d.key for d in dead) == sorted(r.key for r in inputs), "each record dead-lettered once"
    for letter in dead:
        assert letter.header_str("dead-letter-reason") == "model-not-found", letter.to_json()["headers"]
        assert letter.header_str("dead-letter-fault") == "model"
        assert "fraud" in (letter.header_str("dead-letter-message") or ""), letter.to_json()["headers"]
