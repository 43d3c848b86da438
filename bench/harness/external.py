"""Variants that are a single command printing JSON: B3 (plugin-bench) and B4's ideal client.

B3 runs ``plugin-bench --json --records N --wasm fraud_plugin.wasm``, which times the fraud
plugin's logic compiled natively and as a WebAssembly component; every number it prints is kept,
and wasm/native is the ratio. B4's ideal client (pipelines/ideal_client.py, in the project's
.venv for the TF Serving stubs) sends pre-built Predict requests of 128 rows (the runtime's
model.max-batch-size) with a few calls in
flight for a fixed time: what the model server can do at best.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from streamtools import paths

from . import procs
from .result import Result
from .variants import PIPELINES, PROJECT_PYTHON


def run_json(args: list, log: Path, timeout: float) -> dict:
    """Runs a command in the repository root (plugin-bench reads config/fraud.toml from there);
    its stdout's last JSON object. Raises RuntimeError with the reason."""
    with open(log, "wb") as err:
        try:
            done = subprocess.run([str(a) for a in args], stdout=subprocess.PIPE, stderr=err, timeout=timeout,
                                  stdin=subprocess.DEVNULL, cwd=paths.REPO)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"no answer within {timeout:.0f}s (log {log})") from None
    stdout = done.stdout.decode(errors="replace")
    stderr = Path(log).read_text(errors="replace")
    with open(log, "a") as out:
        out.write("\n--- stdout ---\n" + stdout)
    if done.returncode != 0:
        lines = [line.strip() for line in (stderr + "\n" + stdout).splitlines() if line.strip()]
        said = next((line for line in lines if "error" in line.lower()), lines[-1] if lines else "")
        raise RuntimeError(f"exit status {done.returncode}: {said[:300]} (log {log})")
    for line in reversed(stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    try:
        return json.loads(stdout)
    except ValueError:
        raise RuntimeError(f"no JSON object on stdout (log {log})") from None


def numbers(answer: dict, prefix: str = "") -> dict[str, float]:
    """The numeric values of a JSON object, nested keys joined with dots."""
    out: dict[str, float] = {}
    for key, value in answer.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            out[prefix + key] = float(value)
        elif isinstance(value, dict):
            out.update(numbers(value, f"{prefix}{key}."))
    return out


def b3_plugin_bench(binary: Path, wasm: Path, records: int, log_dir: Path, timeout: float) -> Result:
    result = Result("B3", "Wasm cost: fraud plugin logic, native vs component (plugin-bench)")
    if not binary.is_file():
        result.notes.append(f"{binary} not built")
        return result
    print(f"--- B3: {binary.name} --json --records {records} ({timeout:.0f}s limit)", flush=True)
    try:
        copy = procs.snapshot(binary, log_dir / "bin")
        answer = run_json([copy.copy, "--json", "--records", records, "--wasm", wasm], log_dir / "B3.log", timeout)
    except Exception as error:
        return result.fail(f"plugin-bench: {error}")
    figures = numbers(answer)
    result.figures.update(figures)
    result.records = records
    result.rate = figures.get("wasm_records_per_s")
    shown = [k for k in ("native_records_per_s", "wasm_records_per_s") if k in figures]
    shown_text = ", ".join(f"{k} {figures[k]:,.0f}" for k in shown)
    result.notes.append(f"{shown_text}; every figure it printed is listed below")
    wasm_ns = [figures.get(f"wasm_{stage}_ns_per_record") for stage in ("prepare", "complete")]
    if None not in wasm_ns:
        # Its own timing of the plugin's calls on one thread (no Kafka): CPU time, near enough.
        result.figures["cpu_us_per_record"] = sum(wasm_ns) / 1000.0
        result.notes.append("CPU-µs/rec: plugin-bench's own timing of prepare + complete in Wasm, one thread")
    if not figures:
        return result.fail("plugin-bench printed no numbers")
    result.status = "ok"
    return result


def b4_ideal(address: str, seconds: float, concurrency: int, batch: int, log_dir: Path) -> Result:
    result = Result("B4-ideal", f"ideal client: pre-built Predict of {batch} rows, {concurrency} calls in flight",
                    unit="rows/s")
    print(f"--- B4-ideal: {seconds:.0f}s against {address}", flush=True)
    args = [PROJECT_PYTHON, "-u", PIPELINES / "ideal_client.py", "--address", address, "--seconds", seconds,
            "--concurrency", concurrency, "--batch", batch]
    try:
        answer = run_json(args, log_dir / "B4-ideal.log", timeout=seconds + 180.0)
    except Exception as error:
        return result.fail(f"ideal client: {error}")
    result.figures.update(numbers(answer))
    result.rate = answer.get("rows_per_s")
    result.records = int(answer.get("rows", 0))
    if answer.get("errors"):
        return result.fail(f"{answer['errors']} calls failed")
    if answer.get("bad_responses"):
        return result.fail(f"{answer['bad_responses']} responses without {batch} finite scores")
    result.notes.append(
        f"{answer.get('calls', 0):,} calls, latency p50 {answer.get('p50_ms', 0):.2f} ms, "
        f"p99 {answer.get('p99_ms', 0):.2f} ms; Python gRPC client in .venv"
    )
    result.status = "ok"
    return result
