"""The fraud plugin written in Python (plugins/fraud-python, componentize-py) and in JavaScript
(plugins/fraud-js, componentize-qjs), each built from wit/ alone, run by the real runtime between
a real broker's topics with the embedded ONNX model: every output matches the model's offline
score and is the very value the Rust plugin gives for the same record (from `runtime replay`),
so the plugin contract does not depend on the guest's language. Each run prints a `PLUGIN` line:
the component's size and the records per second from its first output to its last."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import struct
import subprocess
import time
from collections import Counter

import pytest

from streamtools import fraud, kafka, paths

from flow import OUTPUT_TIMEOUT, STOP_TIMEOUT, TOLERANCE, embedded, read_while_running, some
from test_fraud_pipeline import OUTPUT_FIELDS

SEED = 20251206
COUNT = 2_000
# Compiling a ~18 MB Python component takes seconds in a release runtime and minutes in a debug one
# on a busy machine; records flow only after that.
STARTUP_TIMEOUT = 900.0
RUNNING = re.compile(r": running( |$)", re.M)  # the runtime's log line once records can flow
# language -> (the component's path, how it is built, the variable that overrides the path)
GUESTS = {
    "python": (paths.python_plugin, "plugins/fraud-python/build.sh", "PYTHON_PLUGIN"),
    "javascript": (paths.js_plugin, "plugins/fraud-js/build.sh", "JS_PLUGIN"),
}


@pytest.fixture(params=list(GUESTS))
def guest_plugin(request):
    where, build, variable = GUESTS[request.param]
    plugin = where()
    if not plugin.is_file():
        pytest.fail(f"the {request.param} plugin {plugin} is missing: build it with {build} ({variable} overrides the path)", pytrace=False)
    return request.param, plugin


def wait_until_running(runtime, timeout: float) -> None:
    """Waits for the runtime's `running` log line: plugin compiled and checked, model loaded."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if RUNNING.search(runtime.log()):
            return
        if not runtime.running():
            pytest.fail(f"the runtime exited with status {runtime.process.returncode}:\n{runtime.tail()}", pytrace=False)
        time.sleep(1.0)
    pytest.fail(f"the runtime did not start within {timeout:.0f}s:\n{runtime.tail()}", pytrace=False)


def f32(x: float) -> float:
    return struct.unpack("<f", struct.pack("<f", x))[0]


def at_f32(verdict: dict) -> dict:
    """The verdict with its probability at the model's precision (f32). Both plugins emit an f32
    widened to f64; `runtime replay` prints values after reading them back with serde_json, whose
    default float parsing can land one f64 ulp away, never a whole f32 step."""
    return {**verdict, "fraud_probability": f32(verdict["fraud_probability"])}


def rust_verdicts(artifacts, values: list[bytes], tmp_path) -> dict[int, dict]:
    """The Rust fraud plugin's output values for these record values, by id: `runtime replay`
    with config/fraud.toml's embedded model, no broker."""
    records, out = tmp_path / "records.jsonl", tmp_path / "rust-verdicts.jsonl"
    records.write_bytes(b"".join(value + b"\n" for value in values))
    args = [artifacts.binary, "replay", "--plugin", artifacts.plugin, paths.FRAUD_CONFIG, "--input", records, "--output", out]
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMINFER__")}
    done = subprocess.run([str(a) for a in args], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"runtime replay with the Rust plugin failed:\n{done.stderr[-3000:]}"
    verdicts = [json.loads(line)["value"] for line in out.read_text().splitlines()]
    return {verdict["id"]: verdict for verdict in verdicts}


def test_a_plugin_in_another_language_end_to_end(guest_plugin, runtime_artifacts, broker, topics, overrides, start_runtime, tmp_path):
    language, plugin = guest_plugin
    inputs = fraud.input_records(SEED, COUNT, poison=1)
    produced = kafka.produce(broker.bootstrap, topics.input, [(r.key, r.value) for r in inputs])
    landed = {d.key: d for d in produced.delivered}
    assert len(landed) == len(inputs), "input keys must be unique"
    transactions = {r.transaction["id"]: r for r in inputs if not r.poison}
    (poison,) = [r for r in inputs if r.poison]

    # config/fraud.toml's embedded ONNX model, not the model server.
    runtime = start_runtime(embedded(overrides), plugin=plugin)

    with kafka.TopicReader(broker.bootstrap, topics.output) as out_reader, \
            kafka.TopicReader(broker.bootstrap, topics.dead_letter) as dead_reader:
        ids = list(transactions)
        offline = dict(zip(ids, fraud.offline_scores([transactions[i].transaction for i in ids]).tolist()))
        rust = rust_verdicts(runtime_artifacts, [transactions[i].value for i in ids], tmp_path)
        assert len(rust) == COUNT, f"the Rust plugin gave {len(rust)} verdicts for {COUNT} transactions"
        wait_until_running(runtime, STARTUP_TIMEOUT)
        outputs = read_while_running(out_reader, runtime, 1, OUTPUT_TIMEOUT)
        first = time.monotonic()
        outputs += read_while_running(out_reader, runtime, COUNT - len(outputs), OUTPUT_TIMEOUT)
        elapsed = time.monotonic() - first
        print(f"\nPLUGIN language={language} size_bytes={plugin.stat().st_size} records={len(outputs)} "
              f"records_per_s={round((len(outputs) - 1) / max(elapsed, 1e-3))}", flush=True)
        dead = dead_reader.drain(idle=1.0, timeout=30.0)
        assert len(outputs) == COUNT, f"{len(outputs)} of {COUNT} outputs, {len(dead)} dead-lettered:\n{runtime.tail()}"

        runtime.signal(signal.SIGTERM)
        status = runtime.wait(STOP_TIMEOUT)
        assert status == 0, f"runtime exit status {status} after SIGTERM"
        outputs += out_reader.drain(idle=2.0)
        dead += dead_reader.drain(idle=1.0)

    decoded = [(record, json.loads(record.value)) for record in outputs]
    seen = Counter(value.get("id") for _, value in decoded)
    duplicates = sorted(i for i, n in seen.items() if n > 1)
    missing = sorted(set(transactions) - set(seen))
    extra = sorted(set(seen) - set(transactions), key=str)
    assert not (duplicates or missing or extra), (
        f"duplicated ids: {some(duplicates)}; missing ids: {some(missing)}; unexpected ids: {some(extra)}"
    )

    problems = []
    for record, value in decoded:
        tx_id = value["id"]
        source = landed[transactions[tx_id].key]
        p = value.get("fraud_probability")
        if set(value) != OUTPUT_FIELDS:
            problems.append(f"id {tx_id}: fields {sorted(value)}")
        elif not isinstance(p, float) or not math.isfinite(p) or abs(p - offline[tx_id]) > TOLERANCE:
            problems.append(f"id {tx_id}: fraud_probability {p!r}, model says {offline[tx_id]!r}")
        elif value["is_fraud"] is not (p >= fraud.THRESHOLD):
            problems.append(f"id {tx_id}: is_fraud {value['is_fraud']!r} for probability {p}")
        elif (value["model_name"], value["model_version"]) != ("fraud", "1"):
            problems.append(f"id {tx_id}: model {value['model_name']!r} version {value['model_version']!r}")
        elif p != f32(p) or at_f32(value) != at_f32(rust[tx_id]):
            problems.append(f"id {tx_id}: {value}, the Rust plugin gives {rust[tx_id]}")
        if record.key != transactions[tx_id].key:
            problems.append(f"id {tx_id}: key {record.key!r}, input key {transactions[tx_id].key!r}")
        provenance = tuple(record.header_str(h) for h in ("source-topic", "source-partition", "source-offset"))
        if provenance != (topics.input, str(source.partition), str(source.offset)):
            problems.append(f"id {tx_id}: source headers {provenance}")
    assert not problems, f"{len(problems)} wrong output records: " + "; ".join(problems[:10])

    assert len(dead) == 1, f"{len(dead)} dead-letter records, expected 1: {[d.to_json() for d in dead][:5]}"
    (letter,) = dead
    assert (letter.key, letter.value) == (poison.key, poison.value)
    assert letter.header_str("dead-letter-reason") == "invalid-record", letter.to_json()["headers"]
    assert letter.header_str("dead-letter-message"), "dead-letter-message must explain the rejection"

    assert kafka.committed_offsets(broker.bootstrap, topics.group, topics.input) == produced.end_offsets()
