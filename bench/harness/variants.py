"""The throughput variants: one pipeline process at a time over the shared input topic.

Each variant gets fresh output and dead-letter topics and a fresh consumer group, runs until its
group has committed the input's end offsets, is stopped with SIGTERM (exit 0 expected), and is
then checked record by record (verify.OutputCheck) and on its committed offsets. Its CPU, and
the broker's, is measured over the window its rate is measured over (harness.cpu).

    B1  runtime + pass-through plugin (no model call): the ceiling of Kafka + Wasm + runtime
    B2  runtime + fraud plugin + embedded ONNX model: the full pipeline
    B4  runtime + fraud plugin + TF Serving-compatible server, one row per call and batched
    B5  the same job in Python: as a skilled user writes it (orjson, onnxruntime on one thread),
        with the stdlib's json, and with Quix Streams; and a Python pass-through (the floor)
    B7  B2 and B1 on a large backlog, for peak memory
    B8  B1, B2 and the two fast Python pipelines pinned to one core (harness.pinned)
"""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from streamtools import paths, services

from . import cpu, procs, verify
from .data import Dataset
from .result import Result

BENCH = Path(__file__).resolve().parents[1]
PIPELINES = BENCH / "pipelines"
PROJECT_PYTHON = paths.REPO / ".venv" / "bin" / "python"


@dataclass
class Env:
    """What every variant needs: the broker, the build outputs, options, where logs go."""

    brokers: str
    log_dir: Path
    runtime: Path
    fraud_plugin: Path
    passthrough_plugin: Path | None
    overrides: Mapping[str, Mapping[str, str]]  # upper-case variant key (or its group, "B4") -> overrides
    timeout: float | None  # per variant; None: from the record count
    others: Mapping[str, int] = field(default_factory=dict)  # role -> pid, CPU measured beside the variant's

    def timeout_for(self, records: int) -> float:
        return self.timeout if self.timeout else 120.0 + records / 1000.0

    def extra(self, key: str) -> dict[str, str]:
        """Overrides given for this variant: those for its group ("B4") then its own ("B4-batched")."""
        out: dict[str, str] = {}
        key = key.upper()
        group = key.split("-", 1)[0]
        out.update(self.overrides.get(group, {}))
        if key != group:
            out.update(self.overrides.get(key, {}))
        return out


def base_overrides(env: Env, input_topic: str, names: procs.Names) -> dict[str, object]:
    return {
        "kafka.brokers": env.brokers,
        "kafka.group-id": names.group,
        "kafka.input-topic": input_topic,
        "kafka.output-topic": names.output,
        "kafka.dead-letter-topic": names.dead_letter,
    }


Launch = Callable[[procs.Names, Path], services.Service]


def run_pipeline(
    env: Env,
    result: Result,
    dataset: Dataset,
    kind: str,
    launch: Launch,
    others: Mapping[str, int] | None = None,
    cpus: str | None = None,
) -> Result:
    """Runs one pipeline process over ``dataset`` and checks what it wrote. ``others``: more
    processes whose CPU is measured (beside ``env.others``); ``cpus``: the CPUs the process was
    started on, checked while it runs."""
    around = {**env.others, **(others or {})}
    names = procs.fresh_names(result.key)
    procs.create_outputs(env.brokers, names)
    log = env.log_dir / f"{result.key}.log"
    timeout = env.timeout_for(dataset.count)
    result.records = dataset.count
    print(f"--- {result.key}: {result.title} ({dataset.count:,} records, log {log})", flush=True)
    launched_ms = time.time() * 1000.0
    start = lambda: launch(names, log)  # noqa: E731
    with result.reporting(), procs.watching(start, env.brokers, names.group, dataset.topic, around) as watch:
        service = watch.service
        wall = watch.until_committed(dataset.end_offsets, timeout)
        problems = pin_findings(service.pid, cpus)
        status = watch.stop()
        if status != 0:
            problems.append(f"exit status {status} after SIGTERM (log {log})")
        check = verify.OutputCheck(dataset, kind)
        verify.scan(env.brokers, names.output, dataset.count, check.visit, timeout=max(60.0, dataset.count / 5000.0))
        dead = verify.count_records(env.brokers, names.dead_letter)
        problems += check.findings()
        problems += verify.offsets_findings(watch.read_committed(), dataset.end_offsets)
        if dead:
            problems.append(f"{dead} dead letters (expected none)")
        result.rate = check.rate()
        result.figures.update({"peak_rss_mib": watch.peak_mib, "wall_seconds": wall})
        cpu.fill(result, watch.tracks, check.first_ts, check.last_ts, check.count - 1)
        result.notes.append(f"peak RSS {watch.peak_mib:.0f} MiB")
        if "cpu_cores_busy" in result.figures:
            result.notes.append(f"{result.figures['cpu_cores_busy']:.2f} cores busy in the rate's window")
        if service.name == "runtime":
            result.notes += runtime_counters(service.log(), result.figures)
        if kind == "verdict":
            result.figures["max_score_diff"] = check.max_score_diff
            result.notes.append(f"scores within {check.max_score_diff:.1e} of onnxruntime")
        if result.rate is None:
            problems.append("too few outputs or timestamps to measure a rate")
        elif check.first_ts is not None and check.first_ts < launched_ms - 1000.0:
            problems.append("output timestamps older than the process: copied from the input? no rate")
        result.conclude(problems)
    rate = f", {result.rate:,.0f} records/s" if result.rate else ""
    spent = result.figures.get("cpu_us_per_record")
    spent = f", {spent:.1f} CPU-µs/record" if spent is not None and result.ok else ""
    print(f"    {result.key}: {result.check_text()}{rate}{spent}", flush=True)
    return result


def pin_findings(pid: int, cpus: str | None) -> list[str]:
    """A process started on ``cpus`` must still be allowed only those CPUs (taskset worked)."""
    if cpus is None:
        return []
    allowed = procs.allowed_cpus(pid)
    return [] if allowed == cpus else [f"pinned to CPUs {cpus}, but /proc says Cpus_allowed_list {allowed}"]


def runtime_counters(log: str, figures: dict[str, float]) -> list[str]:
    """What the runtime's own counters say (its final ``stopped`` line, the last ``progress``
    line's adaptive model concurrency): rows per model call, the concurrency it settled on."""
    notes = []
    stopped = [line for line in log.splitlines() if " stopped " in line and "model_calls=" in line]
    if stopped:
        counters = {k: float(v) for k, v in re.findall(r"(\w+)=(-?\d+(?:\.\d+)?)", stopped[-1])}
        calls, consumed = int(counters.get("model_calls", 0)), int(counters.get("consumed", 0))
        if calls:
            figures["rows_per_model_call"] = consumed / calls
            notes.append(f"{calls:,} model calls ({consumed / calls:.1f} records per call)")
        # The runtime's own latency: consumer to producer, and to the broker's acknowledgement.
        own = {k: counters[k] for k in ("produce_p50_ms", "produce_p99_ms", "ack_p99_ms") if counters.get(k, -1) >= 0}
        for key, value in own.items():
            figures[f"runtime_{key}"] = value
        if "produce_p99_ms" in own:
            notes.append(
                f"inside the runtime (consumer to producer): p50 {own.get('produce_p50_ms', -1):.1f} ms, "
                f"p99 {own['produce_p99_ms']:.1f} ms; to the broker's ack p99 {own.get('ack_p99_ms', -1):.1f} ms"
            )
    workers = re.findall(r" running .*\bworkers=(\d+)", log)
    if workers:
        figures["plugin_workers"] = float(workers[-1])
        notes.append(f"{workers[-1]} plugin worker(s)")
    concurrency = re.findall(r"model_concurrency=(\d+)", log)
    if concurrency:
        figures["model_concurrency_last"] = float(concurrency[-1])
        notes.append(f"model_concurrency {concurrency[-1]} at the last progress line")
    return notes


def runtime_launch(
    env: Env, plugin: Path, input_topic: str, overrides: Mapping[str, object], cpus: str | None = None
) -> Launch:
    def launch(names: procs.Names, log: Path) -> services.Service:
        overrides_now = {**base_overrides(env, input_topic, names), **overrides}
        return procs.start_runtime(env.runtime, plugin, overrides_now, log, cpus=cpus)

    return launch


def python_command(
    env: Env, script: str, input_topic: str, names: procs.Names, batch: int, dead_letter: bool = True
) -> list[object]:
    """The command line of one of the Python pipelines in bench/pipelines (in this interpreter)."""
    args = [
        sys.executable, "-u", PIPELINES / script, "--brokers", env.brokers, "--input", input_topic,
        "--output", names.output, "--group", names.group, "--batch", str(batch),
    ]
    return args + (["--dead-letter", names.dead_letter] if dead_letter else [])


def python_launch(
    env: Env, name: str, script: str, input_topic: str, batch: int, dead_letter: bool = True, cpus: str | None = None
) -> Launch:
    def launch(names: procs.Names, log: Path) -> services.Service:
        args = python_command(env, script, input_topic, names, batch, dead_letter)
        return procs.start(name, args, log, cpus=cpus)

    return launch


def describe(overrides: Mapping[str, object]) -> str:
    return " ".join(f"{k}={v}" for k, v in overrides.items())


def b1_ceiling(env: Env, dataset: Dataset) -> Result:
    result = Result("B1", "ceiling: runtime + pass-through plugin, no model call")
    if env.passthrough_plugin is None:
        result.notes.append("passthrough_plugin.wasm not built")
        return result
    extra = env.extra("B1")
    if extra:
        result.notes.append(f"overrides: {describe(extra)}")
    return run_pipeline(env, result, dataset, "copy", runtime_launch(env, env.passthrough_plugin, dataset.topic, extra))


def b2_full(env: Env, dataset: Dataset) -> Result:
    result = Result("B2", "full pipeline: runtime + fraud plugin + embedded ONNX model")
    extra = env.extra("B2")
    if extra:
        result.notes.append(f"overrides: {describe(extra)}")
    return run_pipeline(env, result, dataset, "verdict", runtime_launch(env, env.fraud_plugin, dataset.topic, extra))


def b2_two_workers(env: Env, dataset: Dataset) -> Result:
    """B2 with two plugin instances, whatever the default chose: what a second worker gives."""
    result = Result("B2-two-workers", "full pipeline as B2, two plugin workers")
    extra = {"plugin.workers": 2, **env.extra("B2-two-workers")}
    result.notes.append(f"overrides: {describe(extra)}")
    return run_pipeline(env, result, dataset, "verdict", runtime_launch(env, env.fraud_plugin, dataset.topic, extra))


def start_model_server(log_dir: Path) -> services.ModelServer:
    """The TF Serving-compatible server needs TensorFlow: it runs in the project's .venv."""
    saved = paths.PYTHON
    paths.PYTHON = PROJECT_PYTHON
    try:
        return services.start_model_server(log_dir, model_name="fraud", model_base_path=paths.FRAUD_MODEL_BASE)
    finally:
        paths.PYTHON = saved


def b4_model_server(
    env: Env, dataset: Dataset, prefix: Dataset, server: services.ModelServer
) -> tuple[Result, Result]:
    serving = {"model.backend": "tf-serving", "model.endpoint": server.endpoint}

    per_record = Result("B4-per-record", "runtime + fraud plugin + model server, one row per call")
    extra = {**serving, "model.max-batch-size": 1, **env.extra("B4-per-record")}
    per_record.notes.append(f"overrides: {describe(extra)}")
    if prefix.count < dataset.count:
        per_record.notes.append(f"first {prefix.count:,} of the {dataset.count:,} records (own topic): slow variant")
    around = {"model server": server.pid}
    run_pipeline(env, per_record, prefix, "verdict", runtime_launch(env, env.fraud_plugin, prefix.topic, extra), around)

    batched = Result("B4-batched", "runtime + fraud plugin + model server, micro-batching (defaults)")
    extra = {**serving, **env.extra("B4-batched")}
    batched.notes.append(f"overrides: {describe(extra)}")
    run_pipeline(env, batched, dataset, "verdict", runtime_launch(env, env.fraud_plugin, dataset.topic, extra), around)
    return per_record, batched


SKILLED = ("consume(BATCH, timeout 10 ms), orjson.loads, one onnxruntime call per batch (1 intra-op and 1 "
           "inter-op thread), orjson.dumps, flush + sync commit per batch")


def b5_python(env: Env, dataset: Dataset, batch: int) -> Result:
    """The Python figure the targets use: the pipeline a skilled user writes (~60 lines)."""
    result = Result("B5-python", "Python as a skilled user writes it: confluent-kafka + orjson + onnxruntime")
    result.notes.append(SKILLED.replace("BATCH", str(batch)))
    launch = python_launch(env, "python-orjson", "python_orjson.py", dataset.topic, batch)
    return run_pipeline(env, result, dataset, "verdict", launch)


def b5_stdlib(env: Env, dataset: Dataset, batch: int) -> Result:
    result = Result("B5-python-stdlib", "Python with the stdlib's json: confluent-kafka + json + onnxruntime")
    result.notes.append(f"context, not a target's figure: consume({batch}, timeout 10 ms), json.loads and float() "
                        "per field, one ORT call per batch (ORT's default threads), flush + sync commit per batch")
    launch = python_launch(env, "python-stdlib", "python_stdlib.py", dataset.topic, batch)
    return run_pipeline(env, result, dataset, "verdict", launch)


def b5_passthrough(env: Env, dataset: Dataset, batch: int) -> Result:
    result = Result("B5-passthrough", "Python pass-through: confluent-kafka consume -> produce, no parsing (the floor)")
    result.notes.append(f"consume({batch}, timeout 10 ms), produce key and value unchanged, flush + sync commit per batch")
    launch = python_launch(env, "python-passthrough", "python_passthrough.py", dataset.topic, batch, dead_letter=False)
    return run_pipeline(env, result, dataset, "copy", launch)


def b5_quix(env: Env, dataset: Dataset) -> Result:
    result = Result("B5-quix", "Quix Streams: Application + apply(onnxruntime per record)", optional=True)
    result.notes.append("quixstreams 3.28.1 on confluent-kafka 2.16.1 (declares < 2.13)")

    def launch(names: procs.Names, log: Path) -> services.Service:
        args = [
            sys.executable, "-u", PIPELINES / "quix_pipeline.py",
            "--brokers", env.brokers, "--input", dataset.topic, "--output", names.output, "--group", names.group,
            "--state-dir", env.log_dir / "quix-state",
        ]
        return procs.start("quix-pipeline", args, log)

    return run_pipeline(env, result, dataset, "verdict", launch)


def b7_memory(env: Env, backlog: Dataset, passthrough: bool = False) -> Result:
    """The backlog read by the runtime with the fraud plugin (B7), or the pass-through plugin."""
    if passthrough:
        result = Result("B7-passthrough", "memory: runtime + pass-through plugin on a backlog")
        plugin, kind = env.passthrough_plugin, "copy"
    else:
        result = Result("B7", "memory: runtime + fraud plugin + embedded model on a backlog")
        plugin, kind = env.fraud_plugin, "verdict"
    if plugin is None:
        result.notes.append("passthrough_plugin.wasm not built")
        return result
    extra = env.extra(result.key)
    if extra:
        result.notes.append(f"overrides: {describe(extra)}")
    result.notes.append(f"backlog produced before start ({backlog.produce_seconds:.0f}s to produce)")
    return run_pipeline(env, result, backlog, kind, runtime_launch(env, plugin, backlog.topic, extra))
