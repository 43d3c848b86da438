"""The credit example end to end: Kafka in, WebAssembly plugin, model, Kafka out.

Real processes on 127.0.0.1: tansu (Kafka protocol), the runtime built from this repository with
the credit-scoring plugin, and per backend a model: scripts/model_server.py serving
models/credit/saved_model as "credit" (TF Serving API, real TensorFlow), the embedded ONNX export,
or MLServer over KServe v2. All 1,000 applications of the UCI German credit data go through, and
each decision is checked against the SavedModel's own score and against reason codes recomputed
from the model's weights.
"""

from __future__ import annotations

import json
import math
import signal
from collections import Counter

import numpy as np
import pytest

from streamtools import credit, kafka, paths, services

from flow import OUTPUT_TIMEOUT, STOP_TIMEOUT, TOLERANCE, read_while_running, some

OUTPUT_FIELDS = {"application_id", "bad_probability", "decision", "reasons", "model_name", "model_version"}
# The embedded-model run also sets the plugin's settings on the command line.
ONNX_SETTINGS = {"cutoff": 1 / 6, "reasons": 5}


@pytest.fixture(scope="module")
def credit_plugin():
    plugin = paths.credit_plugin()
    if not plugin.is_file():
        pytest.fail(
            f"credit plugin missing: {plugin} (cargo build -p credit-scoring-plugin --target wasm32-wasip2 "
            "--profile plugin; CREDIT_PLUGIN overrides the path)",
            pytrace=False,
        )
    return plugin


@pytest.fixture(scope="module")
def credit_model_server(tmp_path_factory) -> services.ModelServer:
    """The TF Serving-compatible server with models/credit/saved_model as model "credit"."""
    started = services.start_model_server(
        tmp_path_factory.mktemp("credit-model-server"), model_name="credit", model_base_path=paths.CREDIT_MODEL_BASE
    )
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def offline():
    """The SavedModel's score of every application, by application_id."""
    applications = [r.application for r in credit.input_records() if r.scored]
    scores = credit.offline_scores(applications)
    return {app["application_id"]: float(p) for app, p in zip(applications, scores)}


def model_overrides(backend: str, request) -> dict[str, object]:
    """Only what the backend needs on top of config/credit.toml (embedded ONNX by default).
    Servers are started on first use, so `-k onnx` starts none."""
    if backend == "onnx":
        # Quoted: plugin settings are strings.
        return {f"plugin.settings.{key}": f'"{value}"' for key, value in ONNX_SETTINGS.items()}
    if backend == "tf-serving":
        server = request.getfixturevalue("credit_model_server")
        return {"model.backend": "tf-serving", "model.endpoint": server.endpoint}
    mlserver = request.getfixturevalue("mlserver")
    encoding = "typed" if backend == "kserve-typed" else "raw"
    return {"model.backend": "kserve", "model.endpoint": mlserver.endpoint, "model.tensor-encoding": encoding}


def reason_problems(app: dict, reasons, count: int, encoding) -> list[str]:
    """Why ``reasons`` are not the top ``count`` attributes by the model's own contributions
    (positive only, largest first); near-ties (1e-9) may come in either order."""
    if not isinstance(reasons, list):
        return [f"reasons {reasons!r} is not a list"]
    shares = encoding.contributions(app)
    positive = sorted((c for c in shares.values() if c > 0.0), reverse=True)
    problems = []
    if len(reasons) != min(count, len(positive)):
        problems.append(f"{len(reasons)} reasons, expected {min(count, len(positive))}")
    named = []
    for reason in reasons:
        feature = reason.get("feature")
        if feature not in shares:
            problems.append(f"reason {reason!r} names no attribute")
            continue
        named.append(feature)
        if reason.get("value") != app[feature]:
            problems.append(f"{feature}: value {reason.get('value')!r}, input has {app[feature]!r}")
        c = reason.get("contribution")
        if not isinstance(c, (int, float)) or abs(c - shares[feature]) > 1e-9 or c <= 0.0:
            problems.append(f"{feature}: contribution {c!r}, the model's is {shares[feature]!r}")
    given = [shares[f] for f in named]
    if len(set(named)) != len(named) or any(a < b - 1e-9 for a, b in zip(given, given[1:])):
        problems.append(f"reasons {named} are not distinct and largest first")
    left_out = [c for f, c in shares.items() if f not in named and c > 0.0]
    if given and left_out and max(left_out) > min(given) + 1e-9:
        problems.append(f"reasons {named} leave out a larger contribution ({max(left_out)})")
    return problems


@pytest.mark.parametrize("backend", ["tf-serving", "onnx", "kserve-raw", "kserve-typed"])
def test_credit_end_to_end(backend, request, broker, topics, offline, credit_plugin, start_runtime):
    """Every application scored exactly once, like the SavedModel scores it, with the decision
    its cut-off gives and the model's own reason codes; bad records dead-lettered; every offset
    committed. The same checks over each backend."""
    inputs = credit.input_records(poison=1, unknown_category=1)
    produced = kafka.produce(broker.bootstrap, topics.input, [(r.key, r.value) for r in inputs])
    landed = {d.key: d for d in produced.delivered}
    assert len(landed) == len(inputs), "input keys must be unique"
    applications = {r.application["application_id"]: r for r in inputs if r.scored}
    bad_records = {r.key: r for r in inputs if not r.scored}
    count = len(applications)

    cutoff, reasons_wanted = credit.CUTOFF, credit.REASONS
    if backend == "onnx":
        cutoff, reasons_wanted = ONNX_SETTINGS["cutoff"], ONNX_SETTINGS["reasons"]
    overrides = {
        "kafka.brokers": broker.bootstrap,
        "kafka.group-id": topics.group,
        "kafka.input-topic": topics.input,
        "kafka.output-topic": topics.output,
        "kafka.dead-letter-topic": topics.dead_letter,
        **model_overrides(backend, request),
    }
    runtime = start_runtime(overrides, config=paths.CREDIT_CONFIG, plugin=credit_plugin)

    with kafka.TopicReader(broker.bootstrap, topics.output) as out_reader, \
            kafka.TopicReader(broker.bootstrap, topics.dead_letter) as dead_reader:
        outputs = read_while_running(out_reader, runtime, count, OUTPUT_TIMEOUT)
        dead = dead_reader.drain(idle=1.0, timeout=30.0)
        if len(outputs) < count:
            state = "still running" if runtime.running() else f"exited with status {runtime.process.returncode}"
            pytest.fail(
                f"{len(outputs)} of {count} decisions within {OUTPUT_TIMEOUT:.0f}s, {len(dead)} dead-lettered; "
                f"the runtime is {state}",
                pytrace=False,
            )
        runtime.signal(signal.SIGTERM)
        status = runtime.wait(STOP_TIMEOUT)
        assert status == 0, f"runtime: status {status} after SIGTERM"
        # Anything produced late (duplicates, extras) shows up here.
        outputs += out_reader.drain(idle=2.0)
        dead += dead_reader.drain(idle=1.0)

    # Every application exactly once; nothing else.
    decoded = [(record, json.loads(record.value)) for record in outputs]
    seen = Counter(value.get("application_id") for _, value in decoded)
    duplicates = sorted(i for i, n in seen.items() if n > 1)
    missing = sorted(set(applications) - set(seen))
    extra = sorted(set(seen) - set(applications), key=str)
    assert not (duplicates or missing or extra), (
        f"{len(outputs)} decisions for {count} applications: duplicated: {some(duplicates)}; "
        f"missing: {some(missing)}; unexpected: {some(extra)}"
    )

    encoding = credit.encoding()
    problems = []
    decisions = Counter()
    for record, value in decoded:
        app_id = value["application_id"]
        source = applications[app_id]
        where = landed[source.key]
        if set(value) != OUTPUT_FIELDS:
            problems.append(f"application {app_id}: fields {sorted(value)}, expected {sorted(OUTPUT_FIELDS)}")
            continue
        p = value["bad_probability"]
        if not isinstance(p, float) or not math.isfinite(p) or abs(p - offline[app_id]) > TOLERANCE:
            problems.append(f"application {app_id}: bad_probability {p!r}, the model says {offline[app_id]!r}")
        else:
            expected = "decline" if np.float32(p) >= np.float32(cutoff) else "approve"
            decisions[value["decision"]] += 1
            if value["decision"] != expected:
                problems.append(f"application {app_id}: {value['decision']!r} at p={p}, cut-off {cutoff}")
        problems += [
            f"application {app_id}: {problem}"
            for problem in reason_problems(source.application, value["reasons"], reasons_wanted, encoding)
        ]
        if (value["model_name"], value["model_version"]) != ("credit", "1"):
            problems.append(f"application {app_id}: model {value['model_name']!r} {value['model_version']!r}")
        if record.key != source.key:
            problems.append(f"application {app_id}: key {record.key!r}, input key {source.key!r}")
        provenance = tuple(record.header_str(h) for h in ("source-topic", "source-partition", "source-offset"))
        if provenance != (topics.input, str(where.partition), str(where.offset)):
            problems.append(f"application {app_id}: source headers {provenance}, input at {where.partition}/{where.offset}")
    assert not problems, f"{len(problems)} wrong decisions: " + "; ".join(problems[:10])
    assert decisions["decline"] and decisions["approve"], f"both decisions should occur: {dict(decisions)}"

    # The bad records: each dead-lettered once, bytes intact, with the reason and its origin.
    assert sorted(d.key for d in dead) == sorted(bad_records), [d.to_json() for d in dead][:5]
    for letter in dead:
        original = bad_records[letter.key]
        where = landed[letter.key]
        assert letter.value == original.value, "a dead letter must carry the input's bytes unchanged"
        assert letter.header_str("dead-letter-reason") == "invalid-record", letter.to_json()["headers"]
        assert letter.header_str("dead-letter-fault") == "record", letter.to_json()["headers"]
        provenance = tuple(letter.header_str(h) for h in ("source-topic", "source-partition", "source-offset"))
        assert provenance == (topics.input, str(where.partition), str(where.offset))
        message = letter.header_str("dead-letter-message") or ""
        if original.bad_record == "unknown-category":
            assert "`purpose`" in message and credit.UNKNOWN_PURPOSE in message and "car_new" in message, message
        else:
            assert "not valid JSON" in message, message

    # Offsets: the group committed everything it consumed, per partition.
    assert kafka.committed_offsets(broker.bootstrap, topics.group, topics.input) == produced.end_offsets()
