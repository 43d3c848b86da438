#!/usr/bin/env python3
"""The benchmark: every variant side by side, on one tansu broker and the same input, checked.

N synthetic fraud transactions are produced once to a 4-partition topic; each variant consumes
that topic with a consumer group of its own and writes its own output topic, one variant at a
time. A variant counts only if its output is complete and right (every id once, verdicts equal
to the model's scores, committed offsets at the end of the input); a failed check makes the run
exit 1 and names the variant and what was wrong. Rates come from the output records' timestamps
(first to last), so start-up does not count, and so does CPU-µs per record: the user+sys CPU
(/proc/PID/stat) of the process, and of the broker beside it, over that same window, divided by
the records in it. The report gives ratios between variants and marks the targets E1-E6.

    B1  runtime + pass-through plugin (no model call): the ceiling
    B2  runtime + fraud plugin + embedded ONNX model: the full pipeline (plugin.workers as
        shipped: one per core but one), and B2-two-workers beside it with two plugin instances
    B3  plugin-bench: the fraud plugin's logic native vs as a Wasm component
    B4  runtime + TF Serving-compatible server, one row per call vs batched; ideal client
    B5  the same job in Python: B5-python as a skilled user writes it (confluent-kafka, orjson,
        onnxruntime on one thread), B5-passthrough (consume -> produce, no parsing: the floor),
        B5-python-stdlib (json from the standard library) and B5-quix (Quix Streams), as context
    B6  latency at half of B2's rate: the runtime and (B6-python) the skilled Python pipeline at
        the same offered rate, as shipped and (--latency-overrides) tuned
    B7  peak memory (VmHWM) and rate on a backlog of 1,000,000 records, fraud and pass-through plugin
    B8  B1, B2, B5-python and B5-passthrough again, the broker and the harness on CPU 0 and the
        process under test on CPU 1 (taskset): records/s on one core (smoke: B2 and B5-python)

Run it with bench/run.sh (set-up, builds, then this), or directly in .venv-bench:

    .venv-bench/bin/python bench/run.py --smoke
    .venv-bench/bin/python bench/run.py --only B1,B2 --records 50000
    .venv-bench/bin/python bench/run.py --only B6 --latency-rate 10000 \\
        --latency-overrides kafka.consumer.fetch.wait.max.ms=10 pipeline.linger=1ms

The report goes to BENCHMARKS.md (not in a smoke run; --output PATH chooses another file) and
the table to stdout. Every process is stopped on the way out; logs stay in a temporary folder
whose path is printed at the end.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import os
import shlex
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(BENCH))

from streamtools import kafka, paths, services  # noqa: E402

from harness import data, effective, external, latency, pinned, procs, report, variants  # noqa: E402
from harness.result import Result  # noqa: E402

VARIANTS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8")
SEED = 20260101
RUNTIME_VARIANTS = {"B1", "B2", "B4", "B6", "B7", "B8"}


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true",
                   help="few records, correctness only, no speed claims; does not write BENCHMARKS.md")
    p.add_argument("--records", type=int, help="input records (default 200000; smoke 3000)")
    p.add_argument("--only", help="comma-separated variants, e.g. B1,B2 (default: all)")
    p.add_argument("--runtime", type=Path, help="runtime binary (default: target/release/runtime or $RUNTIME_BIN)")
    p.add_argument("--fraud-plugin", type=Path, default=None)
    p.add_argument("--passthrough-plugin", type=Path, default=None)
    p.add_argument("--plugin-bench", type=Path, default=None, help="default: plugin-bench next to the runtime")
    p.add_argument("--output", type=Path, help="report file (default BENCHMARKS.md; none in a smoke run)")
    p.add_argument("--require-b3", action="store_true", help="a missing plugin-bench fails the run")
    p.add_argument("--skip-build", action="store_true", help="accepted for bench/run.sh; this script never builds")
    p.add_argument("--override", action="append", default=[], metavar="VARIANT:KEY=VALUE",
                   help="runtime override for one variant (B1, B2, B4, B4-per-record, B4-batched, B6, B7); repeatable")
    p.add_argument("--latency-overrides", nargs="+", default=[], metavar="KEY=VALUE",
                   help="run B6 a second time with these runtime overrides")
    p.add_argument("--latency-rate", type=float, help="B6 offered records/s (default: half of B2's rate)")
    p.add_argument("--latency-seconds", type=float, help="B6 duration (default 20; smoke 5)")
    p.add_argument("--no-broker-floor", action="store_true",
                   help="skip B6-broker (the same load through a minimal forwarder: the broker's share)")
    p.add_argument("--model-p99-ms", type=float, help="model p99 for the B6 bound (default: measured with onnxruntime)")
    p.add_argument("--backlog", type=int, help="B7 backlog records (default 1000000; smoke 5000)")
    p.add_argument("--per-record-records", type=int, help="B4 one-row-per-call records (default min(N, 20000))")
    p.add_argument("--ideal-seconds", type=float, help="B4 ideal client duration (default 10; smoke 2)")
    p.add_argument("--ideal-concurrency", type=int, default=4)
    p.add_argument("--python-batch", type=int, default=500, help="B5, B6-python and B8 Python consume() batch")
    p.add_argument("--b3-records", type=int, help="records for plugin-bench (default: --records)")
    p.add_argument("--timeout", type=float, help="seconds per variant (default 120 + records/1000)")
    p.add_argument("--seed", type=int, default=SEED)
    args = p.parse_args(argv)
    smoke = args.smoke
    args.records = args.records or (3_000 if smoke else 200_000)
    args.backlog = args.backlog or (5_000 if smoke else 1_000_000)
    args.latency_seconds = args.latency_seconds or (5.0 if smoke else 20.0)
    args.ideal_seconds = args.ideal_seconds or (2.0 if smoke else 10.0)
    args.per_record_records = min(args.per_record_records or 20_000, args.records)
    args.b3_records = args.b3_records or args.records
    selected = [v.strip().upper() for v in (args.only or ",".join(VARIANTS)).split(",") if v.strip()]
    unknown = sorted(set(selected) - set(VARIANTS))
    if unknown:
        p.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    args.selected = [v for v in VARIANTS if v in selected]
    per_variant: dict[str, dict[str, str]] = {}
    for item in args.override:
        variant, sep, rest = item.partition(":")
        if not sep:
            p.error(f"--override {item!r}: expected VARIANT:KEY=VALUE")
        try:
            per_variant.setdefault(variant.strip().upper(), {}).update(procs.parse_overrides([rest]))
        except ValueError as error:
            p.error(str(error))
    args.per_variant = per_variant
    try:
        args.latency_overrides = procs.parse_overrides(args.latency_overrides)
    except ValueError as error:
        p.error(str(error))
    return args


class Interrupted(BaseException):
    """SIGTERM or SIGHUP: like Ctrl-C, not caught by a variant's error handling."""


def on_signal(signum, frame):
    raise Interrupted(f"signal {signum}")


def optional_artifact(path: Path, folder: Path) -> Path | None:
    return procs.snapshot(path, folder, wait=30.0).copy if path.is_file() else None


def run(args, log_dir: Path, stack: list[services.Service], setup: list[str], results: list[Result]) -> None:
    """Runs the selected variants, appending to ``results`` as they finish (so an interrupted
    run still reports what it measured)."""
    selected = set(args.selected)
    bin_dir = log_dir / "bin"
    runtime_path = args.runtime or paths.runtime_binary()
    fraud_path = args.fraud_plugin or paths.fraud_plugin()
    passthrough_path = args.passthrough_plugin or fraud_path.with_name("passthrough_plugin.wasm")
    bench_path = args.plugin_bench or runtime_path.with_name("plugin-bench")

    runtime = fraud = passthrough = None
    if selected & RUNTIME_VARIANTS:
        runtime = procs.snapshot(runtime_path, bin_dir)
        setup.append(f"runtime: {runtime_path} (sha256 {runtime.sha256[:16]}…), run from a copy")
    if selected & (RUNTIME_VARIANTS | {"B3"}):
        fraud = procs.snapshot(fraud_path, bin_dir)
        setup.append(f"fraud plugin: {fraud_path} (sha256 {fraud.sha256[:16]}…)")
    if selected & {"B1", "B7", "B8"}:
        passthrough = optional_artifact(passthrough_path, bin_dir)
        setup.append(f"pass-through plugin: {passthrough_path}" + ("" if passthrough else " (missing)"))

    broker = services.start_broker(log_dir)
    stack.append(broker)
    setup.append(f"tansu broker on {broker.bootstrap}, in-memory storage (log {broker.log_path})")
    env = variants.Env(
        brokers=broker.bootstrap, log_dir=log_dir, runtime=runtime.copy if runtime else Path("runtime"),
        fraud_plugin=fraud.copy if fraud else Path("fraud_plugin.wasm"), passthrough_plugin=passthrough,
        overrides=args.per_variant, timeout=args.timeout, others={"broker": broker.pid},
    )

    dataset = None
    suffix = uuid.uuid4().hex[:8]
    if selected & {"B1", "B2", "B4", "B5", "B8"}:
        topic = f"bench-input-{suffix}"
        kafka.create_topics(broker.bootstrap, {topic: 4})
        print(f"--- producing {args.records:,} transactions to {topic} (4 partitions)", flush=True)
        dataset = data.produce_dataset(broker.bootstrap, topic, args.seed, args.records)
        setup.append(
            f"input: {args.records:,} synthetic transactions (seed {args.seed}) in `{topic}`, 4 partitions, "
            f"end offsets {dict(sorted(dataset.end_offsets.items()))}; produced in {dataset.produce_seconds:.1f}s"
        )

    if "B1" in selected:
        results.append(variants.b1_ceiling(env, dataset))
    if "B2" in selected:
        results.append(variants.b2_full(env, dataset))
        if not args.smoke:
            results.append(variants.b2_two_workers(env, dataset))
    if "B3" in selected:
        results.append(external.b3_plugin_bench(bench_path, fraud.copy, args.b3_records, log_dir,
                                                timeout=env.timeout_for(args.b3_records)))
        if results[-1].status == "not-run" and args.require_b3:
            results[-1].fail(f"required (--require-b3), but {bench_path} is missing")
    if "B4" in selected:
        results += run_b4(args, env, dataset, stack, setup, suffix)
    if "B5" in selected:
        results.append(variants.b5_python(env, dataset, args.python_batch))
        results.append(variants.b5_passthrough(env, dataset, args.python_batch))
        results.append(variants.b5_stdlib(env, dataset, args.python_batch))
        results.append(variants.b5_quix(env, dataset))
    if "B8" in selected:  # before B6 and B7 fill the broker's memory with more topics
        results += pinned.run(env, dataset, args.python_batch, pinned.SMOKE_KEYS if args.smoke else pinned.KEYS)
    if "B6" in selected:
        results += run_b6(args, env, results)
    if "B7" in selected:
        topic = f"bench-backlog-{suffix}"
        kafka.create_topics(broker.bootstrap, {topic: 4})
        print(f"--- B7: producing a backlog of {args.backlog:,} transactions to {topic}", flush=True)
        try:
            backlog = data.produce_dataset(broker.bootstrap, topic, args.seed + 7, args.backlog)
        except Exception as error:
            results.append(Result("B7", "memory on a backlog").fail_by(error))
        else:
            results.append(variants.b7_memory(env, backlog))
            results.append(variants.b7_memory(env, backlog, passthrough=True))


def run_b4(args, env: variants.Env, dataset, stack, setup: list[str], suffix: str) -> list[Result]:
    try:
        print("--- B4: starting the TF Serving-compatible model server (.venv)", flush=True)
        server = variants.start_model_server(env.log_dir)
    except Exception as error:
        return [Result("B4", "model server path").fail_by(error)]
    stack.append(server)
    setup.append(f"model server: scripts/model_server.py on {server.address}, models/fraud/saved_model")
    try:
        prefix = dataset
        if args.per_record_records < dataset.count:
            topic = f"bench-input-prefix-{suffix}"
            kafka.create_topics(env.brokers, {topic: 4})
            prefix = data.produce_dataset(env.brokers, topic, args.seed, args.per_record_records, layout=dataset.count)
        per_record, batched = variants.b4_model_server(env, dataset, prefix, server)
        # Rows per call as the batched variant's runtime sends them, like for like.
        rows = effective.model_rows(env.extra("B4-batched"))
        ideal = external.b4_ideal(server.address, args.ideal_seconds, args.ideal_concurrency, rows, env.log_dir)
        return [per_record, batched, ideal]
    finally:
        server.stop()
        stack.remove(server)


def run_b6(args, env: variants.Env, results: list[Result]) -> list[Result]:
    b2 = next((r for r in results if r.key == "B2" and r.ok and r.rate), None)
    if args.latency_rate:
        rate, why = args.latency_rate, "given"
    elif b2 is not None:
        rate, why = b2.rate / 2.0, "half of B2's rate"
    else:
        rate, why = 1_000.0, "B2 not measured in this run: fallback, give --latency-rate"
    if args.smoke and not args.latency_rate and rate > 1_000.0:
        rate, why = 1_000.0, "smoke run: capped at 1,000/s"
    out = []
    runs = [("B6", "latency at a fixed rate, config as shipped", env.extra("B6"))]
    if args.latency_overrides:
        runs.append(("B6-tuned", "latency at a fixed rate, with --latency-overrides",
                     {**env.extra("B6"), **args.latency_overrides}))
    floors = [("B6-broker", env.extra("B6"))]
    tuned_consumer = effective.consumer_properties(runs[-1][2])
    if tuned_consumer != effective.consumer_properties(env.extra("B6")):
        floors.append(("B6-broker-tuned", runs[-1][2]))
    for key, title, overrides in runs:
        result = latency.runtime_latency(env, key, title, overrides, rate, args.latency_seconds, args.seed + 3,
                                         args.model_p99_ms)
        result.notes.insert(0, f"rate {rate:,.0f}/s ({why})")
        out.append(result)
        if key == "B6":  # the same offered rate through the skilled Python pipeline, for E5
            python = latency.python_latency(env, "B6-python", rate, args.latency_seconds, args.seed + 3,
                                            args.python_batch)
            python.notes.insert(0, f"rate {rate:,.0f}/s ({why}; the same as B6)")
            out.append(python)
    if not args.no_broker_floor:
        for key, overrides in floors:
            result = latency.broker_floor(env, key, overrides, rate, args.latency_seconds, args.seed + 3)
            result.notes.insert(0, f"rate {rate:,.0f}/s ({why})")
            out.append(result)
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if importlib.util.find_spec("onnxruntime") is None:
        print("onnxruntime is missing: run bench/run.sh, or use .venv-bench/bin/python", file=sys.stderr)
        return 2
    try:  # the runtime's defaults, read from its source: a moved constant fails here, not at B4
        effective.check_source()
    except RuntimeError as failure:
        print(f"benchmark cannot start: {failure}", file=sys.stderr)
        return 2
    command = os.environ.get("BENCH_COMMAND") or shlex.join([sys.executable, *sys.argv])
    log_dir = Path(tempfile.mkdtemp(prefix="streaminfer-bench-"))
    started_at = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    facts = report.machine()
    facts["load average at start"] = report.load_average()
    setup: list[str] = [f"variants: {', '.join(args.selected)}; N = {args.records:,}"]
    stack: list[services.Service] = []
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    results: list[Result] = []
    error = None
    began = time.monotonic()
    try:
        run(args, log_dir, stack, setup, results)
    except (Interrupted, KeyboardInterrupt) as stop:
        error = f"interrupted ({stop or 'Ctrl-C'})"
    except Exception as failure:  # broker, inputs, build outputs: nothing to compare without them
        error = f"{type(failure).__name__}: {failure}"
    finally:
        for service in reversed(stack):
            service.stop()
    facts["load average at end"] = report.load_average()
    setup.append(f"whole run: {time.monotonic() - began:.0f}s")

    report.fill_ratios(results)
    if args.smoke:
        print("\nSmoke run: correctness only; the rates below are not speed claims.")
    print("\n" + report.table(results) + "\n")
    if not args.smoke:
        for target in report.targets(results):
            print(f"{target.verdict:>12}  {target.name}: {target.detail}")
    text = report.markdown(results, command, started_at, args.smoke, facts, setup, log_dir)
    output = args.output or (None if args.smoke else paths.REPO / "BENCHMARKS.md")
    if output is not None and error is None:
        output.write_text(text)
        print(f"\nreport written to {output}")
    failed = [r for r in results if r.failed and not r.optional]
    for r in failed:
        print(f"FAILED {r.key}: {'; '.join(r.problems)}", file=sys.stderr)
    if error:
        print(f"benchmark stopped: {error}", file=sys.stderr)
    print(f"logs: {log_dir}")
    return 1 if failed or error else 0


if __name__ == "__main__":
    sys.exit(main())
