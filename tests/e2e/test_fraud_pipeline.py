"""The fraud example end to end: Kafka in, WebAssembly plugin, model server, Kafka out.

Real processes on 127.0.0.1: tansu (Kafka protocol), scripts/model_server.py (TF Serving API,
real TensorFlow), and the runtime built from this repository with the fraud plugin. The data is
synthetic (models/fraud/data.py).
"""

from __future__ import annotations

import json
import math
import signal
from collections import Counter

import pytest

from streamtools import fraud, kafka, paths, second_client, services

from flow import OUTPUT_TIMEOUT, START_FAILURE_TIMEOUT, STOP_TIMEOUT, TOLERANCE, embedded, read_while_running, some

SEED = 20251128
COUNT = 10_000
OUTPUT_FIELDS = {"id", "fraud_probability", "is_fraud", "model_name", "model_version"}


@pytest.mark.parametrize("backend", ["tf-serving", "onnx", "kserve-raw", "kserve-typed"])
def test_fraud_end_to_end(backend, broker, model_server, mlserver, topics, overrides, start_runtime):
    """The same input and the same checks against the TensorFlow model's own scores, whether
    the runtime calls the TF Serving-compatible server, runs the ONNX export in process, or calls
    MLServer over KServe v2 with raw or typed tensors. The in-process run has two plugin workers,
    so batches are split between instances by partition and merged back."""
    # Input: 10,000 transactions with one poison record (not JSON) in the middle.
    inputs = fraud.input_records(SEED, COUNT, poison=1)
    produced = kafka.produce(broker.bootstrap, topics.input, [(r.key, r.value) for r in inputs])
    landed = {d.key: d for d in produced.delivered}
    assert len(landed) == len(inputs), "input keys must be unique"
    transactions = {r.transaction["id"]: r for r in inputs if not r.poison}
    (poison,) = [r for r in inputs if r.poison]

    chosen = {
        "tf-serving": overrides,
        "onnx": {**embedded(overrides), "plugin.workers": 2},
        "kserve-raw": {**overrides, "model.backend": "kserve", "model.endpoint": mlserver.endpoint},
        "kserve-typed": {
            **overrides,
            "model.backend": "kserve",
            "model.endpoint": mlserver.endpoint,
            "model.tensor-encoding": "typed",
        },
    }[backend]
    runtime = start_runtime(chosen)

    with kafka.TopicReader(broker.bootstrap, topics.output) as out_reader, \
            kafka.TopicReader(broker.bootstrap, topics.dead_letter) as dead_reader:
        # The model's own scores, from the SavedModel run directly (while the runtime works).
        ids = list(transactions)
        offline = dict(zip(ids, fraud.offline_scores([transactions[i].transaction for i in ids]).tolist()))
        flagged = sum(p >= fraud.THRESHOLD for p in offline.values())
        assert 0 < flagged < COUNT, "the test data should hold transactions on both sides of the threshold"

        outputs = read_while_running(out_reader, runtime, COUNT, OUTPUT_TIMEOUT)
        dead = dead_reader.drain(idle=1.0, timeout=30.0)
        if len(outputs) < COUNT:
            state = "still running" if runtime.running() else f"exited with status {runtime.process.returncode}"
            pytest.fail(
                f"{len(outputs)} of {COUNT} output records within {OUTPUT_TIMEOUT:.0f}s, "
                f"{len(dead)} dead-lettered; the runtime is {state}",
                pytrace=False,
            )

        runtime.signal(signal.SIGTERM)
        status = runtime.wait(STOP_TIMEOUT)
        assert status is not None, f"runtime still running {STOP_TIMEOUT:.0f}s after SIGTERM"
        assert status == 0, f"runtime exited with status {status} after SIGTERM"

        # Anything produced late (duplicates, extras) shows up here.
        outputs += out_reader.drain(idle=2.0)
        dead += dead_reader.drain(idle=1.0)

    # Every input id exactly once; nothing else.
    decoded = []
    undecodable = []
    for record in outputs:
        try:
            decoded.append((record, json.loads(record.value)))
        except (TypeError, ValueError):
            undecodable.append((record.partition, record.offset, record.value[:80] if record.value else None))
    assert not undecodable, f"output values that are not JSON: {some(undecodable)}"
    seen = Counter(value.get("id") for _, value in decoded)
    duplicates = sorted(i for i, n in seen.items() if n > 1)
    missing = sorted(set(transactions) - set(seen))
    extra = sorted(set(seen) - set(transactions), key=str)
    assert not (duplicates or missing or extra), (
        f"{len(outputs)} outputs for {COUNT} inputs: duplicated ids: {some(duplicates)}; "
        f"missing ids: {some(missing)}; unexpected ids: {some(extra)}"
    )

    # Each output: the model's score, the verdict, the key and where its input came from.
    problems = []
    for record, value in decoded:
        tx_id = value["id"]
        source = landed[transactions[tx_id].key]
        p = value.get("fraud_probability")
        if set(value) != OUTPUT_FIELDS:
            problems.append(f"id {tx_id}: fields {sorted(value)}, expected {sorted(OUTPUT_FIELDS)}")
            continue
        if not isinstance(p, (int, float)) or not math.isfinite(p) or abs(p - offline[tx_id]) > TOLERANCE:
            problems.append(f"id {tx_id}: fraud_probability {p!r}, model says {offline[tx_id]!r}")
        elif value["is_fraud"] is not (p >= fraud.THRESHOLD):
            problems.append(f"id {tx_id}: is_fraud {value['is_fraud']!r} for probability {p}")
        if value["model_name"] != "fraud" or value["model_version"] != "1":
            problems.append(f"id {tx_id}: model {value['model_name']!r} version {value['model_version']!r}")
        if record.key != transactions[tx_id].key:
            problems.append(f"id {tx_id}: key {record.key!r}, input key {transactions[tx_id].key!r}")
        provenance = (
            record.header_str("source-topic"),
            record.header_str("source-partition"),
            record.header_str("source-offset"),
        )
        if provenance != (topics.input, str(source.partition), str(source.offset)):
            problems.append(
                f"id {tx_id}: source headers {provenance}, input was at "
                f"{(topics.input, str(source.partition), str(source.offset))}"
            )
    assert not problems, f"{len(problems)} wrong output records: " + "; ".join(problems[:10])

    # Order: within an output partition, the outputs of one input partition come in its order.
    last: dict[tuple[int, str], int] = {}
    for record, _ in decoded:
        lane = (record.partition, record.header_str("source-partition"))
        offset = int(record.header_str("source-offset"))
        assert offset > last.get(lane, -1), f"output partition {lane[0]}: input offset {offset} after {last[lane]}"
        last[lane] = offset

    # The poison record: dead-lettered once, bytes intact, with the reason and its origin.
    assert len(dead) == 1, f"{len(dead)} dead-letter records, expected 1: {[d.to_json() for d in dead][:5]}"
    (letter,) = dead
    source = landed[poison.key]
    assert letter.key == poison.key
    assert letter.value == poison.value, "the dead-letter record must carry the input's bytes unchanged"
    assert letter.header_str("dead-letter-reason") == "invalid-record", letter.to_json()["headers"]
    assert letter.header_str("dead-letter-fault") == "record", letter.to_json()["headers"]
    assert letter.header_str("dead-letter-message"), "dead-letter-message must explain the rejection"
    assert (
        letter.header_str("source-topic"),
        letter.header_str("source-partition"),
        letter.header_str("source-offset"),
    ) == (topics.input, str(source.partition), str(source.offset))

    # Offsets: the group committed everything it consumed, per partition.
    assert kafka.committed_offsets(broker.bootstrap, topics.group, topics.input) == produced.end_offsets()

    # A second client with its own protocol code reads the same records, byte for byte (once:
    # the framing is the runtime's whatever the backend).
    if backend == "onnx":
        assert second_client.assert_clients_agree(broker.bootstrap, topics.output) == COUNT
        assert second_client.assert_clients_agree(broker.bootstrap, topics.dead_letter) == 1


def test_refuses_to_start_without_model_server(broker, topics, overrides, start_runtime):
    port = services.free_port()  # nothing listens here
    runtime = start_runtime({**overrides, "model.endpoint": f"http://127.0.0.1:{port}"})
    status = runtime.wait(START_FAILURE_TIMEOUT)
    assert status is not None, f"runtime still running {START_FAILURE_TIMEOUT:.0f}s after start with no model server"
    assert status != 0
    log = runtime.log()
    assert f"127.0.0.1:{port}" in log, f"the error should name the unreachable endpoint; log:\n{runtime.tail()}"


def test_refuses_to_start_listing_every_problem(overrides, start_runtime, tmp_path):
    """A bad plugin file, an unreachable broker and an unreachable model server, all at once:
    one start-up attempt names each of them."""
    broker_port, model_port = services.free_port(), services.free_port()
    not_a_plugin = tmp_path / "not-a-plugin.wasm"
    not_a_plugin.write_bytes(b"definitely not WebAssembly")
    runtime = start_runtime(
        {
            **overrides,
            "kafka.brokers": f"127.0.0.1:{broker_port}",
            "kafka.startup-timeout": "2s",
            "model.endpoint": f"http://127.0.0.1:{model_port}",
        },
        plugin=not_a_plugin,
    )
    status = runtime.wait(START_FAILURE_TIMEOUT)
    assert status is not None, "runtime still running with nothing valid to run on"
    assert status != 0
    log = runtime.log()
    for expected in ("not-a-plugin.wasm", f"127.0.0.1:{broker_port}", f"127.0.0.1:{model_port}"):
        assert expected in log, f"the start-up error should name {expected}; log:\n{runtime.tail()}"


@pytest.mark.parametrize("where", ["config-file", "command-line"])
def test_refuses_unknown_config_key(where, overrides, start_runtime, tmp_path):
    key = "pipeline.batch-sise"  # a typo of batch-size
    config = paths.FRAUD_CONFIG
    if where == "config-file":
        text = paths.FRAUD_CONFIG.read_text()
        assert "\n[pipeline]\n" in text, "config/fraud.toml should have a [pipeline] table"
        config = tmp_path / "fraud-typo.toml"
        config.write_text(text.replace("\n[pipeline]\n", "\n[pipeline]\nbatch-sise = 64\n", 1))
        runtime = start_runtime(overrides, config=config)
    else:
        runtime = start_runtime({**overrides, key: 64})
    status = runtime.wait(START_FAILURE_TIMEOUT)
    assert status is not None, "runtime started despite an unknown config key"
    assert status != 0
    assert "batch-sise" in runtime.log(), f"the error should name the unknown key; log:\n{runtime.tail()}"


def test_sigterm_mid_stream_then_restart_loses_nothing(broker, topics, overrides, start_runtime):
    """SIGTERM while records are in flight: the runtime drains, commits and exits 0, and a second
    runtime in the same group picks up exactly where the first stopped. A clean stop finishes
    every record it consumed, so no id is scored twice and none is missed."""
    count = 6_000
    inputs = fraud.input_records(SEED + 1, count)
    produced = kafka.produce(broker.bootstrap, topics.input, [(r.key, r.value) for r in inputs])
    ids = {r.transaction["id"] for r in inputs}
    # Small batches and a slow-ish pace keep records in flight when the signal lands.
    settings = {**overrides, "pipeline.batch-size": 16, "model.max-in-flight": 4}

    with kafka.TopicReader(broker.bootstrap, topics.output) as reader:
        first = start_runtime(settings)
        outputs = read_while_running(reader, first, count // 4, OUTPUT_TIMEOUT)
        assert len(outputs) >= count // 4, f"only {len(outputs)} outputs before the stop"
        first.signal(signal.SIGTERM)
        status = first.wait(STOP_TIMEOUT)
        assert status == 0, f"first runtime: status {status} after SIGTERM"
        outputs += reader.drain(idle=2.0)
        stopped_at = len(outputs)
        assert stopped_at < count, "the first runtime should have been stopped before the end"

        committed = kafka.committed_offsets(broker.bootstrap, topics.group, topics.input)
        assert sum(v or 0 for v in committed.values()) == stopped_at, (
            f"committed offsets {committed} should cover exactly the {stopped_at} records scored "
            "before the stop (no dead letters in this input)"
        )

        second = start_runtime(settings)
        outputs += read_while_running(reader, second, count - stopped_at, OUTPUT_TIMEOUT)
        second.signal(signal.SIGTERM)
        assert second.wait(STOP_TIMEOUT) == 0
        outputs += reader.drain(idle=2.0)

    seen = Counter(json.loads(r.value)["id"] for r in outputs)
    duplicates = sorted(i for i, n in seen.items() if n > 1)
    missing = sorted(ids - set(seen))
    assert not missing, f"ids never scored: {some(missing)}"
    assert not duplicates, f"ids scored twice across a clean stop: {some(duplicates)}"
    assert kafka.committed_offsets(broker.bootstrap, topics.group, topics.input) == produced.end_offsets()


def test_refuses_a_model_that_does_not_fit_the_plugin(overrides, start_runtime, tmp_path):
    """An ONNX model that takes 20 features where the fraud plugin sends 30: the runtime refuses
    to start, showing what the plugin sends and what the model expects."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper, save

    weights = numpy_helper.from_array(np.full((20, 1), 0.01, np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["features", "w"], ["logits"]), helper.make_node("Sigmoid", ["logits"], ["fraud_probability"])],
        "narrow",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 20])],
        [helper.make_tensor_value_info("fraud_probability", TensorProto.FLOAT, ["N", 1])],
        [weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / "narrow.onnx"
    save(model, str(path))

    runtime = start_runtime({**embedded(overrides), "model.path": str(path)})
    status = runtime.wait(START_FAILURE_TIMEOUT)
    assert status is not None and status != 0, f"runtime started with a model that does not fit: {status}"
    expected = 'input "features": the plugin sends f32 [?, 30], the model expects f32 [?, 20]'
    assert expected in runtime.log(), f"the error should show both sides; log:\n{runtime.tail()}"
