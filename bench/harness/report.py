"""The report: machine facts, the table (with ratios between variants), the targets.

Absolute figures depend on the machine and on whatever else runs on it; the ratios between
variants measured in the same run, on the same broker and the same input, are the point.
"""

from __future__ import annotations

import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path

from streamtools import paths

from .result import Result


def _command(args: list[str]) -> str:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=30, cwd=paths.REPO)
        return (done.stdout or done.stderr).strip().splitlines()[0] if done.returncode == 0 else "unknown"
    except (OSError, subprocess.TimeoutExpired, IndexError):
        return "unknown"


def _proc_field(path: str, name: str) -> str:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(name):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def machine() -> dict[str, str]:
    mem_kib = _proc_field("/proc/meminfo", "MemTotal").split()[0]
    try:
        memory = f"{int(mem_kib) / 1024 / 1024:.1f} GiB"
    except ValueError:
        memory = "unknown"
    commit = _command(["git", "rev-parse", "--short", "HEAD"])
    dirty = _command(["git", "status", "--porcelain", "--untracked-files=no"])
    return {
        "cores (nproc)": _command(["nproc"]),
        "CPU": _proc_field("/proc/cpuinfo", "model name"),
        "memory": memory,
        "kernel": platform.release(),
        "rustc": _command(["rustc", "--version"]),
        "Python": platform.python_version(),
        "tansu": _command([str(paths.TANSU), "--version"]),
        "git": commit + (" (with uncommitted changes)" if dirty not in ("", "unknown") else ""),
    }


def client_versions() -> str:
    parts = []
    try:
        import confluent_kafka

        version = confluent_kafka.version()
        version = version[0] if isinstance(version, tuple) else version
        parts.append(f"confluent-kafka {version} (librdkafka {confluent_kafka.libversion()[0]})")
    except ImportError:
        pass
    for name in ("onnxruntime", "quixstreams"):
        try:
            module = __import__(name)
            parts.append(f"{name} {module.__version__}")
        except ImportError:
            pass
    return ", ".join(parts)


def by_key(results: list[Result]) -> dict[str, Result]:
    return {r.key: r for r in results}


def _rate(results: dict[str, Result], key: str) -> float | None:
    r = results.get(key)
    return r.rate if r is not None and r.ok and r.rate else None


def fill_ratios(results: list[Result]) -> None:
    """Writes each row's ratio against the row it is compared with."""
    rs = by_key(results)

    def ratio(key: str, num: str, den: str, label: str) -> None:
        a, b = _rate(rs, num), _rate(rs, den)
        if key in rs and a and b:
            rs[key].ratio = f"{a / b:.2f} ({label})"

    if _rate(rs, "B1"):
        rs["B1"].ratio = "1.00 (ceiling)"
    ratio("B2", "B2", "B1", "B2/B1")
    if "B3" in rs and "wasm_over_native" in rs["B3"].figures:
        rs["B3"].ratio = f"{rs['B3'].figures['wasm_over_native']:.2f} (wasm/native)"
    ratio("B4-batched", "B4-batched", "B4-per-record", "batched/per-record")
    for other, label in (("B4-ideal", "batched/ideal"), ("B2", "batched/B2 embedded")):
        a, b = _rate(rs, "B4-batched"), _rate(rs, other)
        if a and b:
            rs["B4-batched"].ratio += ("; " if rs["B4-batched"].ratio else "") + f"{a / b:.2f} ({label})"
    ratio("B5-python", "B2", "B5-python", "B2/Python")
    ratio("B5-quix", "B2", "B5-quix", "B2/Quix")
    ratio("B7", "B7", "B2", "B7/B2")
    for key, floor in (("B6", "B6-broker"), ("B6-tuned", "B6-broker-tuned")):
        floor = floor if floor in rs else "B6-broker"
        if key in rs and floor in rs and rs[key].ok and rs[floor].ok and rs[floor].figures["p99_ms"] > 0:
            rs[key].ratio = f"{rs[key].figures['p99_ms'] / rs[floor].figures['p99_ms']:.2f} (p99/{floor} p99)"


@dataclass
class Target:
    name: str
    verdict: str  # PASS, MISS, or "not assessed"
    detail: str


def _judge(measured: float, goal: float, higher_better: bool = True) -> tuple[str, str]:
    """PASS or MISS, and by how much, in words a reader can check against the figures."""
    if higher_better:
        if measured >= goal:
            return "PASS", f"{(measured / goal - 1.0) * 100.0:.0f}% above the target"
        return "MISS", f"reaches {measured / goal * 100.0:.0f}% of the target"
    if measured <= goal:
        return "PASS", f"{(1.0 - measured / goal) * 100.0:.0f}% under the limit"
    return "MISS", f"{measured / goal:.1f}x the limit"


def targets(results: list[Result]) -> list[Target]:
    rs = by_key(results)
    out: list[Target] = []

    def ratio_target(name: str, num: str, den: str, goal: float, unit: str = "x") -> None:
        a, b = _rate(rs, num), _rate(rs, den)
        if not (a and b):
            out.append(Target(name, "not assessed", f"needs {num} and {den} to pass their checks"))
            return
        verdict, by = _judge(a / b, goal)
        detail = f"{num}/{den} = {a:,.0f}/{b:,.0f} = {a / b:.2f}{unit} (target {goal:g}{unit}): {by}"
        out.append(Target(name, verdict, detail))

    pythons = [k for k in ("B5-python", "B5-quix") if _rate(rs, k)]
    best = max(pythons, key=lambda k: _rate(rs, k)) if pythons else "B5-python"
    ratio_target("B5: full pipeline >= 3x the best Python pipeline", "B2", best, 3.0)
    ratio_target("B5: full pipeline >= 4x Quix Streams", "B2", "B5-quix", 4.0)
    ratio_target("B2/B1 >= 0.6 (model and plugin cost at most 40% of the ceiling)", "B2", "B1", 0.6, "")
    b3 = rs.get("B3")
    if b3 is not None and b3.ok and "wasm_over_native" in b3.figures:
        verdict, by = _judge(b3.figures["wasm_over_native"], 0.9)
        out.append(Target("B3: Wasm within 10% of native", verdict,
                          f"wasm/native = {b3.figures['wasm_over_native']:.3f} (target >= 0.90): {by}"))
    else:
        out.append(Target("B3: Wasm within 10% of native", "not assessed",
                          "plugin-bench did not run or printed no native and wasm rates"))
    ratio_target("B4: batching >= 20x one call per record", "B4-batched", "B4-per-record", 20.0)
    ratio_target("B4: batching >= 70% of the ideal client", "B4-batched", "B4-ideal", 0.7, "")
    for key in ("B6", "B6-tuned"):
        b6 = rs.get(key)
        name = f"{key}: p99 latency <= linger + 2 x model p99"
        if b6 is None:
            continue
        if not b6.ok:
            out.append(Target(name, "not assessed", "the variant did not pass its checks"))
            continue
        f = b6.figures
        verdict, by = _judge(f["p99_ms"], f["bound_ms"], higher_better=False)
        floor = rs.get(f"{key.replace('B6', 'B6-broker')}") or rs.get("B6-broker")
        context = ""
        if floor is not None and floor.ok:
            context = f"; the broker alone ({floor.key}) had p99 {floor.figures['p99_ms']:.1f} ms at the same load"
        out.append(Target(name, verdict, (
            f"p99 {f['p99_ms']:.1f} ms vs bound {f['bound_ms']:.1f} ms = "
            f"pipeline.linger {f['pipeline_linger_ms']:g} ms "
            f"+ producer linger.ms {f['producer_linger_ms']:g} ms + 2 x {f['model_p99_ms']:.3f} ms: {by}{context}"
        )))
        if "runtime_produce_p99_ms" in f:
            own = f["runtime_produce_p99_ms"]
            verdict, by = _judge(own, f["bound_ms"], higher_better=False)
            out.append(Target(f"{key}: the runtime's own p99 (consumer to producer) <= the same bound", verdict, (
                f"p99 {own:.1f} ms inside the runtime (its histogram, buckets within 19%) vs bound "
                f"{f['bound_ms']:.1f} ms: {by}"
            )))
    b7 = rs.get("B7")
    if b7 is not None and b7.ok:
        verdict, by = _judge(b7.figures["peak_rss_mib"], 128.0, higher_better=False)
        out.append(Target("B7: peak RSS <= 128 MiB", verdict,
                          f"VmHWM {b7.figures['peak_rss_mib']:.1f} MiB on {b7.records:,} records: {by}"))
    elif b7 is not None:
        out.append(Target("B7: peak RSS <= 128 MiB", "not assessed", "the variant did not pass its checks"))
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table(results: list[Result]) -> str:
    lines = ["| variant | records | rate | ratio | check | notes |", "| --- | ---: | ---: | --- | --- | --- |"]
    for r in results:
        rate = f"{r.rate:,.0f} {r.unit}" if r.rate and not r.failed else "—"  # a failed check: no figure
        records = f"{r.records:,}" if r.records else "—"
        lines.append(
            f"| {r.key}: {_cell(r.title)} | {records} | {rate} | {_cell(r.ratio) or '—'} | "
            f"{_cell(r.check_text())} | {_cell('; '.join(r.notes))} |"
        )
    return "\n".join(lines)


def markdown(
    results: list[Result], command: str, started: str, smoke: bool, facts: dict[str, str], setup: list[str],
    log_dir: Path,
) -> str:
    out = ["# Benchmarks", ""]
    if smoke:
        out += ["**Smoke run: correctness only. The figures below are not speed claims.**", ""]
    out += [f"Date: {started}", "", "Command:", "", "```sh", command, "```", "", "## Machine", ""]
    out += [f"- {k}: {v}" for k, v in facts.items()]
    out += [f"- Python clients: {client_versions()}"]
    out += ["", "## Set-up", ""] + [f"- {line}" for line in setup] + [""]
    out += ["## Results", "", table(results), ""]
    b3 = by_key(results).get("B3")
    if b3 is not None and b3.figures:
        out += ["## B3: what plugin-bench printed", "", "| figure | value |", "| --- | ---: |"]
        out += [f"| {name} | {value:,.6g} |" for name, value in b3.figures.items()]
        out += [""]
    out += ["## Targets", ""]
    if smoke:
        out += ["Not assessed in a smoke run (too few records for a rate to mean anything).", ""]
    else:
        out += ["| target | result | how far |", "| --- | --- | --- |"]
        out += [f"| {_cell(t.name)} | {t.verdict} | {_cell(t.detail)} |" for t in targets(results)]
        out += [""]
    out += [
        "## How to read this", "",
        "Every variant read the same input topic with a consumer group of its own and wrote its own output "
        "topic; one variant ran at a time. A rate is the number of output records over the time from the first "
        "to the last output record's timestamp (tansu keeps the producing client's CreateTime; it ignores "
        "LogAppendTime), so start-up and group join do not count. A variant is marked ok only if its "
        "output was complete: every input id exactly once, verdicts equal to the model's own scores, committed "
        "offsets at the end of the input; otherwise it is marked FAILED with what was wrong. The figures are noisy on a shared 2-core machine; ratios from the "
        "same run mean more than absolute rates.", "",
        "B6 latency is an output record's timestamp minus its input record's timestamp. B6-broker offers the same "
        "load to a minimal forwarder (poll one record, produce it at once), measured the same way: the part of the "
        "latency that belongs to the broker and the clients, not to the runtime. B3 and the model p99 in the B6 "
        "bound are taken outside the stream (plugin-bench; onnxruntime unless --model-p99-ms is given).", "",
        f"Logs of this run: `{log_dir}`", "",
    ]
    # Where the time goes: a profile read by hand, kept beside the harness (bench/profile.md) with
    # the commands that made it; each report carries the current one.
    analysis = Path(__file__).resolve().parent.parent / "profile.md"
    if analysis.is_file() and not smoke:
        out += [analysis.read_text().rstrip(), ""]
    return "\n".join(out)

