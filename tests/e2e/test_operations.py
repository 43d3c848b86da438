"""What an operator sees: /metrics scraped during a run and read with Prometheus's own
OpenMetrics parser, /healthz and /readyz through a model-server outage, and JSON logs.

Real processes on 127.0.0.1: tansu, the TF Serving-compatible model server, the runtime.
"""

from __future__ import annotations

import hashlib
import json
import socket

from prometheus_client.openmetrics.parser import text_string_to_metric_families

from streamtools import fraud, kafka, paths, services

from flow import OUTPUT_TIMEOUT, get, read_while_running, wait_for

SEED = 20261202
COUNT = 2_000
POISON = 3
DEFAULT_LISTEN = ("127.0.0.1", 9898)  # metrics.listen's default (config reference)


def scrape(base: str) -> dict[str, list]:
    """Every sample of /metrics by sample name, parsed as Prometheus parses OpenMetrics."""
    status, content_type, body = get(f"{base}/metrics")
    assert status == 200, body
    assert content_type.startswith("application/openmetrics-text"), content_type
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def value(samples: dict[str, list], name: str, **labels: str) -> float:
    """The one sample of ``name`` whose labels include ``labels``."""
    matching = [s for s in samples.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(matching) == 1, f"{name}{labels}: {matching or 'no sample'}"
    return matching[0].value


def test_metrics_describe_the_run_and_logs_are_json(broker, topics, overrides, start_runtime):
    """After a run with poison records, /metrics counts what happened, by reason, status and
    partition; the plugin's digest and the model's version are info metrics; every log line is
    one JSON object."""
    inputs = fraud.input_records(SEED, COUNT, poison=POISON)  # COUNT transactions and the poison
    kafka.produce(broker.bootstrap, topics.input, [(r.key, r.value) for r in inputs])
    runtime = start_runtime({**overrides, "log.format": "json", "model.version": 1})
    base = services.metrics_url(runtime)

    with kafka.TopicReader(broker.bootstrap, topics.output) as out:
        outputs = read_while_running(out, runtime, COUNT, OUTPUT_TIMEOUT)
    assert len(outputs) == COUNT, runtime.tail()

    def settled():
        samples = scrape(base)
        dead = sum(s.value for s in samples.get("streaminfer_records_dead_lettered_total", []))
        lags = samples.get("streaminfer_kafka_committed_offset", [])
        committed = sum(s.value for s in lags)
        behind = [s.value for s in samples.get("streaminfer_kafka_consumer_lag", [])]
        in_flight = value(samples, "streaminfer_records_in_flight")
        if dead == POISON and len(lags) == 4 and committed == len(inputs) and behind == [0] * 4 and in_flight == 0:
            return samples
        settled.last = (dead, [(s.labels, s.value) for s in lags])
        return None

    # Dead letters are counted once produced; committed offsets and lag come from librdkafka's
    # statistics (every 5 s) after the commit (every 5 s); records in flight are counted at
    # each progress line (every 10 s).
    settled.last = None
    try:
        samples = wait_for("dead letters counted and every offset committed", settled, timeout=40)
    except AssertionError as e:
        raise AssertionError(f"{e}; dead letters and committed offsets seen: {settled.last}") from None

    assert value(samples, "streaminfer_records_consumed_total") == len(inputs)
    assert value(samples, "streaminfer_records_produced_total") == COUNT
    assert value(samples, "streaminfer_records_dead_lettered_total", reason="invalid-record", fault="record") == POISON
    assert value(samples, "streaminfer_kafka_assigned_partitions") == 4

    # Model calls: at least one try answered, none failed; each try timed.
    ok = value(samples, "streaminfer_model_calls_total", backend="tf-serving", status="ok")
    assert ok >= 1
    failed = [s for s in samples["streaminfer_model_calls_total"] if s.labels["status"] != "ok"]
    assert len(failed) > 10 and all(s.value == 0 for s in failed), "every status is a series, none counted"
    assert value(samples, "streaminfer_model_call_duration_seconds_count", backend="tf-serving") == ok
    rows = value(samples, "streaminfer_model_call_rows_sum", backend="tf-serving")
    assert rows == COUNT, "every scored record is one row of one call"
    assert value(samples, "streaminfer_batch_records_sum") == len(inputs)
    assert value(samples, "streaminfer_model_breaker_state", backend="tf-serving", state="closed") == 1
    assert value(samples, "streaminfer_model_reachable", backend="tf-serving") == 1

    # The plugin: every prepare and complete call timed, nothing trapped.
    assert value(samples, "streaminfer_plugin_call_duration_seconds_count", export="prepare") >= 1
    assert value(samples, "streaminfer_plugin_call_duration_seconds_count", export="complete") >= 1
    faults = samples["streaminfer_plugin_faults_total"]
    assert {s.labels["scope"] for s in faults} == {"batch", "record"}
    assert all(s.value == 0 for s in faults), faults
    digest = "sha256:" + hashlib.sha256(paths.fraud_plugin().read_bytes()).hexdigest()
    assert value(samples, "streaminfer_plugin_info", digest=digest) == 1
    assert value(samples, "streaminfer_model_info", backend="tf-serving", model="fraud", version="1") == 1
    assert value(samples, "streaminfer_build_info") == 1
    assert value(samples, "streaminfer_ready") == 1

    assert get(f"{base}/healthz")[0] == 200
    assert get(f"{base}/readyz")[:1] == (200,)
    assert get(f"{base}/nothing")[0] == 404

    runtime.stop(grace=30)
    lines = [line for line in runtime.log().splitlines() if line.strip()]
    assert lines, "the runtime logged nothing"
    for line in lines:
        event = json.loads(line)  # every line is one JSON object
        assert {"timestamp", "level", "message"} <= event.keys(), line
    messages = [json.loads(line)["message"] for line in lines]
    assert "running" in messages and "stopped" in messages
    # The endpoint holds no part of the pipeline past its end: the consumer closes at shutdown.
    assert not [m for m in messages if "still referenced" in m], messages


def test_readiness_follows_the_model_server(broker, topics, overrides, start_runtime, tmp_path):
    """With the model server stopped, /readyz says so within seconds and /healthz stays live;
    once the server is back on the same port, the runtime is ready again and scores records."""
    server = services.start_model_server(tmp_path, model_name="fraud", model_base_path=paths.FRAUD_MODEL_BASE)
    try:
        runtime = start_runtime({**overrides, "model.endpoint": server.endpoint})
        base = services.metrics_url(runtime)
        wait_for("ready at first", lambda: get(f"{base}/readyz")[0] == 200, timeout=60)

        port = server.port
        server.stop()
        status, _, why = wait_for(
            "not ready without the model server",
            lambda: (lambda r: r if r[0] == 503 else None)(get(f"{base}/readyz")),
            timeout=30,
        )
        assert "model server" in why, why
        assert get(f"{base}/healthz")[0] == 200, "an unreachable model server is no reason to restart"
        assert value(scrape(base), "streaminfer_model_reachable", backend="tf-serving") == 0

        server = services.start_model_server(
            tmp_path, model_name="fraud", model_base_path=paths.FRAUD_MODEL_BASE, port=port
        )
        wait_for("ready again with the model server back", lambda: get(f"{base}/readyz")[0] == 200, timeout=60)

        inputs = fraud.input_records(SEED, 50)
        kafka.produce(broker.bootstrap, topics.input, [(r.key, r.value) for r in inputs])
        with kafka.TopicReader(broker.bootstrap, topics.output) as out:
            assert len(read_while_running(out, runtime, 50, OUTPUT_TIMEOUT)) == 50
    finally:
        server.stop()


def test_a_taken_default_address_is_only_a_warning(broker, topics, overrides, start_runtime):
    """With metrics.listen unset and its default address taken (a second runtime on one host),
    the runtime warns and scores records without the endpoint; the same address set explicitly
    stops start-up, naming the address and the setting."""
    with socket.socket() as taken:
        try:
            taken.bind(DEFAULT_LISTEN)
            taken.listen()
        except OSError:
            pass  # another process holds it: the case under test all the same
        runtime = start_runtime({**overrides, "metrics.listen": None})
        inputs = fraud.input_records(SEED, 20)
        kafka.produce(broker.bootstrap, topics.input, [(r.key, r.value) for r in inputs])
        with kafka.TopicReader(broker.bootstrap, topics.output) as out:
            assert len(read_while_running(out, runtime, 20, OUTPUT_TIMEOUT)) == 20, runtime.tail()
        assert "running without /metrics and health" in runtime.log(), runtime.tail()
        assert "serving /metrics" not in runtime.log()

        address = "%s:%d" % DEFAULT_LISTEN
        refused = start_runtime({**overrides, "metrics.listen": address})
        status = refused.wait(60)
        assert status not in (None, 0), f"status {status}\n{refused.tail()}"
        assert f"cannot serve /metrics on {address} (metrics.listen)" in refused.log(), refused.tail()
