"""The fraud-scoring demo, after scripts/demo.sh has set up and built everything.

Starts a tansu broker (and, with --backend tf-serving, the model server) on 127.0.0.1, creates the topics named in
config/fraud.toml, produces synthetic transactions plus one poison record, runs the runtime
with the fraud plugin until every transaction is scored, prints what it found, stops the runtime
with SIGTERM and reports its exit status. Whatever happens (an error, Ctrl-C, SIGTERM), every
process it started is stopped before it exits. Logs go to .cache/demo/.
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
import time
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from streamtools import fraud, kafka, paths, services  # noqa: E402

DEFAULT_BROKER_PORT = 9092
DEFAULT_MODEL_PORT = 8500


def step(text: str) -> None:
    print(f"\n--- {text}", flush=True)


def choose_port(preferred: int) -> int:
    """The configured port when it is free, otherwise any free one (passed as an override)."""
    if services.port_is_free(preferred):
        return preferred
    port = services.free_port()
    print(f"    port {preferred} is taken; using {port}")
    return port


def table(rows: list[dict]) -> str:
    header = f"{'id':>6}  {'time':>9}  {'amount':>9}  {'probability':>11}  {'verdict':<7}  {'truth':<5}"
    lines = [header, "-" * len(header)]
    for r in rows:
        hours = r["Time"] / 3600.0
        lines.append(
            f"{r['id']:>6}  {hours:>8.2f}h  {r['Amount']:>9.2f}  {r['p']:>11.6f}  "
            f"{'FRAUD' if r['is_fraud'] else 'ok':<7}  {'fraud' if r['label'] else 'legit':<5}"
        )
    return "\n".join(lines)


def run(args, started: list[services.Service]) -> int:
    config = tomllib.loads(args.config.read_text())
    topic_in = config["kafka"]["input-topic"]
    topic_out = config["kafka"]["output-topic"]
    topic_dead = config["kafka"]["dead-letter-topic"]
    group = config["kafka"]["group-id"]
    log_dir = args.work_dir
    log_dir.mkdir(parents=True, exist_ok=True)

    serving = args.backend == "tf-serving"
    step("Starting the tansu broker" + (" and the model server" if serving else "") + " (127.0.0.1)")
    broker = services.start_broker(log_dir, port=choose_port(DEFAULT_BROKER_PORT))
    started.append(broker)
    print(f"    broker       {broker.bootstrap}  (log {broker.log_path})")
    model = None
    if serving:
        model = services.start_model_server(log_dir, port=choose_port(DEFAULT_MODEL_PORT))
        started.append(model)
        print(f"    model server {model.endpoint}  serving 'fraud' from {paths.FRAUD_MODEL_BASE}  (log {model.log_path})")
    else:
        print(f"    model        {config['model']['path']} (ONNX, run inside the runtime: no model server)")

    step("Creating topics")
    kafka.create_topics(broker.bootstrap, {topic_in: 4, topic_out: 4, topic_dead: 1})
    print(f"    {topic_in} (4 partitions), {topic_out} (4), {topic_dead} (1)")

    step(f"Producing {args.count:,} synthetic transactions and 1 poison record to {topic_in}")
    inputs = fraud.input_records(args.seed, args.count, poison=1)
    produced = kafka.produce(broker.bootstrap, topic_in, [(r.key, r.value) for r in inputs])
    frauds = sum(1 for r in inputs if r.label == 1)
    print(f"    {frauds} of the transactions are fraud (the generator knows; the model does not)")
    example = next(r for r in inputs if not r.poison)
    print(f"    a record: key {example.key.decode()!r}, value {example.value[:90].decode()}...")

    step("Running the runtime")
    overrides = {}
    if broker.port != DEFAULT_BROKER_PORT:
        overrides["kafka.brokers"] = broker.bootstrap
    if model is not None:
        overrides["model.backend"] = "tf-serving"
        overrides["model.endpoint"] = model.endpoint
    runtime = services.start_runtime(args.runtime, args.plugin, args.config, overrides, log_dir / "runtime.log")
    started.append(runtime)
    print("    " + shlex.join(runtime.args))
    print(f"    (log {runtime.log_path})")

    by_id = {r.transaction["id"]: r for r in inputs if not r.poison}
    with kafka.TopicReader(broker.bootstrap, topic_out) as out_reader, \
            kafka.TopicReader(broker.bootstrap, topic_dead) as dead_reader:
        scored: list[kafka.Record] = []
        began = time.monotonic()
        deadline = began + args.timeout
        shown_at = 0.0
        first_at = None
        while len(scored) < args.count and time.monotonic() < deadline and runtime.running():
            scored += out_reader.read(args.count - len(scored), timeout=1.0)
            if scored and first_at is None:
                first_at = time.monotonic()
                print(f"    first scored record {first_at - began:.1f}s after the runtime started", flush=True)
            if sys.stdout.isatty():
                print(f"\r    scored {len(scored):,} of {args.count:,}", end="", flush=True)
            elif time.monotonic() - shown_at > 5 or len(scored) == args.count:
                print(f"    scored {len(scored):,} of {args.count:,}", flush=True)
                shown_at = time.monotonic()
        if sys.stdout.isatty():
            print()
        dead = dead_reader.drain(idle=1.0, timeout=10.0)
        if len(scored) < args.count:
            state = "still running" if runtime.running() else f"exited with status {runtime.process.returncode}"
            print(f"\n!!! only {len(scored)} of {args.count} transactions scored; the runtime is {state}")
            print(f"--- {runtime.log_path} (last lines)\n{runtime.tail(30)}")
            return 1
        print(f"    all scored in {time.monotonic() - began:.1f}s (including the runtime's start-up)")

    results = []
    for record in scored:
        value = json.loads(record.value)
        tx = by_id[value["id"]]
        results.append({**tx.transaction, "p": value["fraud_probability"], "is_fraud": value["is_fraud"], "label": tx.label})
    results.sort(key=lambda r: (not r["is_fraud"], -r["p"]))
    flagged = [r for r in results if r["is_fraud"]]
    caught = sum(1 for r in flagged if r["label"] == 1)
    shown = flagged[: args.show] + [r for r in results if not r["is_fraud"]][: max(3, args.show - len(flagged))]

    step("Scored transactions: flagged first, then the highest-scored of the rest")
    print(table(shown))

    step("Counts")
    print(f"    scored          {len(results):>6,}")
    print(f"    flagged fraud   {len(flagged):>6,}  ({caught} of them really fraud; {frauds} frauds in the sample)")
    reasons = ", ".join(f"{d.header_str('dead-letter-reason')}: {d.header_str('dead-letter-message')}" for d in dead)
    print(f"    dead-lettered   {len(dead):>6,}  {reasons}")

    step("Stopping the runtime (SIGTERM)")
    runtime.signal(signal.SIGTERM)
    status = runtime.wait(60)
    if status is None:
        print("    still running after 60s; killing it")
        return 1
    print(f"    exit status {status}")
    committed = kafka.committed_offsets(broker.bootstrap, group, topic_in)
    ends = dict(sorted(produced.end_offsets().items()))
    verdict = "match" if committed == ends else "DO NOT match"
    print(f"    committed offsets {committed} {verdict} the produced end offsets {ends}")
    return 0 if status == 0 and committed == ends else 1


def interrupt(signum, frame) -> None:
    """SIGTERM ends the demo the way Ctrl-C does: through the clean-up in main()."""
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=2000, help="transactions to produce")
    parser.add_argument("--seed", type=int, default=10)
    parser.add_argument("--show", type=int, default=12, help="rows of the table")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the scores")
    parser.add_argument("--runtime", type=Path, default=paths.runtime_binary())
    parser.add_argument("--plugin", type=Path, default=paths.fraud_plugin())
    parser.add_argument("--config", type=Path, default=paths.FRAUD_CONFIG)
    parser.add_argument(
        "--backend",
        choices=["onnx", "tf-serving"],
        default="onnx",
        help="run the model in process (the config's default) or call the TF Serving-compatible server",
    )
    parser.add_argument("--work-dir", type=Path, default=paths.REPO / ".cache" / "demo")
    args = parser.parse_args()
    for what, path in (("runtime", args.runtime), ("plugin", args.plugin)):
        if not path.is_file():
            print(f"the {what} is missing at {path}: run scripts/demo.sh, which builds it", file=sys.stderr)
            return 1

    signal.signal(signal.SIGTERM, interrupt)
    started: list[services.Service] = []
    try:
        return run(args, started)
    except KeyboardInterrupt:
        print("\ninterrupted")
        return 130
    finally:
        for service in reversed(started):
            if service.running():
                service.stop()
        if started:
            print("(everything started here is stopped)")


if __name__ == "__main__":
    sys.exit(main())
