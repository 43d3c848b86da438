"""B6: latency at a fixed offered rate.

The runtime (fraud plugin, embedded model) runs on a topic of its own; then, at the same offered
rate, the skilled Python pipeline (B6-python, pipelines/python_orjson.py), so that the two
end-to-end figures compare like for like. A warm-up of
``WARMUP`` records must come out first (the group has joined, the plugin and model are warm);
then the harness offers records at ``rate`` per second for ``seconds``. Afterwards both topics
are read back: each output names its input by the fraud plugin's ``source-partition`` and
``source-offset`` headers, and its latency is the output record's timestamp minus the input
record's timestamp, both as stored by the broker (with tansu: the producers' CreateTime, so the
input's is when the harness offered it). Warm-up records are left out of the figures.

The bound of the target is ``linger + 2 x model p99``, where linger is the configured waits on
the path (``pipeline.linger`` plus the output producer's ``linger.ms``) and the model p99 is one
call of the ONNX model at ``min(pipeline.batch-size, model.max-batch-size)`` rows measured here with
onnxruntime on one thread (a stand-in for the runtime's own engine, which this harness cannot
time from outside) unless a figure is given.

Against this broker a large share of the latency is the broker's own: ``broker_floor`` offers the
same load to a minimal forwarder (poll one record, produce it at once), measured the same way,
so the runtime's share can be told apart from the broker's.

CPU per record is measured as in the throughput variants (harness.cpu), over the offered
records' outputs, for the process, the broker and the load generator (the harness, which offers
the records itself).
"""

from __future__ import annotations

import os
import re
import sys
import time
import tomllib
import uuid
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from streamtools import kafka, paths, services

from . import cpu, data, effective, procs, verify
from .result import Result, VariantFailure
from .variants import PIPELINES, SKILLED, Env, base_overrides, describe, python_command, runtime_counters

WARMUP = 200
POOL = 50_000  # distinct record values offered in turn


def duration_ms(text: object) -> float:
    """"5ms" -> 5.0, "1s" -> 1000.0, "250us" -> 0.25, 5 -> 5.0 (plain numbers: milliseconds)."""
    s = str(text).strip().strip('"')
    match = re.fullmatch(r"([0-9.]+)\s*(ms|s|us|µs|m|ns)?", s)
    if not match:
        raise ValueError(f"cannot read {text!r} as a duration")
    factor = {"ms": 1.0, "s": 1000.0, "us": 0.001, "µs": 0.001, "ns": 1e-6, "m": 60_000.0, None: 1.0}
    return float(match.group(1)) * factor[match.group(2)]


def effective_lingers(overrides: Mapping[str, object]) -> tuple[float, float, int]:
    """(pipeline.linger ms, producer linger.ms, pipeline.batch-size) after ``overrides``."""
    config = tomllib.loads(paths.FRAUD_CONFIG.read_text())
    pipeline = config.get("pipeline", {})
    producer = config.get("kafka", {}).get("producer", {})
    linger = overrides.get("pipeline.linger", pipeline.get("linger", "5ms"))
    producer_linger = overrides.get('kafka.producer."linger.ms"', producer.get("linger.ms", 5))
    batch = int(overrides.get("pipeline.batch-size", pipeline.get("batch-size", 256)))
    return duration_ms(linger), duration_ms(producer_linger), batch


def percentile(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


Launch = Callable[[str, procs.Names, Path], services.Service]  # (input topic, names, log) -> process


def runtime_latency(
    env: Env, key: str, title: str, overrides: Mapping[str, str], rate: float, seconds: float, seed: int,
    model_p99_ms: float | None,
) -> Result:
    """B6 with the runtime (fraud plugin, embedded model), and the target's bound."""
    result = Result(key, title, unit="records/s offered")
    result.notes.append(f"overrides: {describe(overrides)}" if overrides else "config as shipped")

    def launch(input_topic: str, names: procs.Names, log: Path) -> services.Service:
        return procs.start_runtime(
            env.runtime, env.fraud_plugin, {**base_overrides(env, input_topic, names), **overrides}, log
        )

    run_latency(env, result, launch, rate, seconds, seed)
    if result.ok:
        linger, producer_linger, batch = effective_lingers(overrides)
        rows = min(batch, effective.model_rows(overrides))
        model_p99 = model_p99_ms if model_p99_ms is not None else data.model_p99_ms(rows)
        bound = linger + producer_linger + 2.0 * model_p99
        result.figures.update({
            "pipeline_linger_ms": linger, "producer_linger_ms": producer_linger, "model_p99_ms": model_p99,
            "model_rows": float(rows), "bound_ms": bound,
        })
        source = "given" if model_p99_ms is not None else f"onnxruntime, {rows} rows, 1 thread"
        result.notes.append(
            f"bound: pipeline.linger {linger:g} ms + producer linger.ms {producer_linger:g} ms + "
            f"2 x model p99 {model_p99:.3f} ms ({source}) = {bound:.1f} ms"
        )
    return result


def python_latency(env: Env, key: str, rate: float, seconds: float, seed: int, batch: int) -> Result:
    """The same offered load through the skilled Python pipeline (the one B5-python runs), with
    the runtime's consumer properties: a fetch wait that only one side had tuned would decide
    the comparison (librdkafka waits up to 500 ms by default, the runtime 50 ms)."""
    props = effective.consumer_properties(env.extra("B6"))
    result = Result(key, "latency at the same rate: skilled Python pipeline (orjson, onnxruntime)",
                    unit="records/s offered")
    result.notes.append(SKILLED.replace("BATCH", str(batch)))
    result.notes.append("the runtime's consumer properties: " + " ".join(f"{k}={v}" for k, v in props.items()))

    def launch(input_topic: str, names: procs.Names, log: Path) -> services.Service:
        args = python_command(env, "python_orjson.py", input_topic, names, batch)
        return procs.start("python-orjson", [*args, "--consumer", *(f"{k}={v}" for k, v in props.items())], log)

    return run_latency(env, result, launch, rate, seconds, seed)


def broker_floor(
    env: Env, key: str, overrides: Mapping[str, str], rate: float, seconds: float, seed: int
) -> Result:
    """The same offered load through a minimal forwarder: the broker's share of B6's latency."""
    props = effective.consumer_properties(overrides)
    result = Result(key, "broker floor: same load through a minimal Python forwarder (poll, produce)",
                    unit="records/s offered")
    result.notes.append("consumer: " + " ".join(f"{k}={v}" for k, v in props.items()))

    def launch(input_topic: str, names: procs.Names, log: Path) -> services.Service:
        args = [
            sys.executable, "-u", PIPELINES / "forwarder.py", "--brokers", env.brokers, "--input", input_topic,
            "--output", names.output, "--group", names.group, "--consumer", *(f"{k}={v}" for k, v in props.items()),
        ]
        return procs.start("forwarder", args, log)

    run_latency(env, result, launch, rate, seconds, seed)
    return result


def run_latency(env: Env, result: Result, launch: Launch, rate: float, seconds: float, seed: int) -> Result:
    """Offers records at ``rate`` for ``seconds`` to a process started by ``launch`` on a fresh
    topic; checks that every offered record came out once and fills in the latency figures."""
    key = result.key
    suffix = uuid.uuid4().hex[:8]
    input_topic = f"bench-{key.lower()}-in-{suffix}"
    names = procs.fresh_names(key)
    kafka.create_topics(env.brokers, {input_topic: 4})
    procs.create_outputs(env.brokers, names)
    log = env.log_dir / f"{key}.log"
    print(f"--- {key}: {result.title} ({rate:,.0f} records/s for {seconds:.0f}s, log {log})", flush=True)

    pool = [r for chunk in data.chunks(seed, min(POOL, max(1, int(rate * seconds)))) for r in chunk]
    producer = data.StreamProducer(env.brokers, {"linger.ms": 0})
    start = lambda: launch(input_topic, names, log)  # noqa: E731
    around = {**env.others, "load generator": os.getpid()}
    with result.reporting(), procs.watching(start, env.brokers, names.group, input_topic, around) as watch:
        service = watch.service
        for i in range(WARMUP):
            producer.send(input_topic, b"warmup-%d" % i, pool[i % len(pool)].value)
        producer.producer.flush(30)
        with kafka.TopicReader(env.brokers, names.output) as reader:
            got = reader.read(WARMUP, timeout=env.timeout_for(WARMUP))
        if len(got) < WARMUP:
            raise VariantFailure(f"only {len(got)} of {WARMUP} warm-up records came out; log {log}")

        offered, behind = offer(producer, input_topic, pool, rate, seconds)
        ends = producer.finish()
        result.records = offered
        result.rate = offered / seconds
        if behind:
            result.notes.append(f"the offering loop fell more than 10 ms behind schedule {behind} times")
        watch.until_committed(ends, env.timeout_for(offered))
        status = watch.stop()
        problems = [] if status == 0 else [f"exit status {status} after SIGTERM (log {log})"]

        inputs: dict[tuple[int, int], int] = {}
        verify.scan(env.brokers, input_topic, offered + WARMUP,
                    lambda m: inputs.__setitem__((m.partition(), m.offset()), m.timestamp()[1]),
                    timeout=max(120.0, offered / 5000.0))
        latencies, matched, unmatched = [], set(), 0
        window: list[int] = []  # first and last timestamp of the offered records' outputs

        def visit(msg) -> None:
            nonlocal unmatched
            headers = dict(msg.headers() or [])
            try:
                where = (int(headers["source-partition"]), int(headers["source-offset"]))
            except (KeyError, ValueError, TypeError):
                unmatched += 1
                return
            if where in matched or where not in inputs:
                unmatched += 1
                return
            matched.add(where)
            if not (msg.key() or b"").startswith(b"warmup-"):
                stamp = msg.timestamp()[1]
                latencies.append(stamp - inputs[where])
                window[:] = [min(window[0], stamp), max(window[1], stamp)] if window else [stamp, stamp]

        outputs = verify.scan(env.brokers, names.output, offered + WARMUP, visit, timeout=max(120.0, offered / 5000.0))
        if outputs != offered + WARMUP or len(matched) != len(inputs) or unmatched:
            problems.append(
                f"{outputs} outputs for {offered + WARMUP} inputs ({len(matched)} matched to an input, "
                f"{unmatched} unmatched or repeated)"
            )
        problems += verify.offsets_findings(watch.read_committed(), ends)
        lat = np.asarray(latencies, dtype=np.float64)
        result.figures.update({
            "p50_ms": percentile(lat, 50), "p99_ms": percentile(lat, 99),
            "max_ms": float(lat.max()) if len(lat) else float("nan"),
            "mean_ms": float(lat.mean()) if len(lat) else float("nan"), "samples": float(len(lat)),
            "peak_rss_mib": watch.peak_mib,
        })
        cpu.fill(result, watch.tracks, *(window or [None, None]), len(latencies) - 1)
        if service.name == "runtime":
            result.notes += runtime_counters(service.log(), result.figures)
        result.notes.append(
            f"latency p50 {result.figures['p50_ms']:.1f} ms, p99 {result.figures['p99_ms']:.1f} ms, "
            f"max {result.figures['max_ms']:.0f} ms over {len(lat):,} records (ms timestamps)"
        )
        result.conclude(problems)
    print(f"    {key}: {result.check_text()}", flush=True)
    return result


def offer(producer: data.StreamProducer, topic: str, pool: list, rate: float, seconds: float) -> tuple[int, int]:
    """Produces ``pool`` records in turn at ``rate`` per second for ``seconds``; (records sent,
    ticks on which the loop was more than 10 ms behind schedule)."""
    start = time.monotonic()
    sent = behind = 0
    while True:
        elapsed = time.monotonic() - start
        if elapsed >= seconds:
            break
        due = int(elapsed * rate)
        if due - sent > rate / 100.0:
            behind += 1
        while sent < due:
            record = pool[sent % len(pool)]
            producer.send(topic, record.key, record.value)
            sent += 1
        producer.poll()
        time.sleep(0.0005)
    return sent, behind
