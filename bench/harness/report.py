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


def _cpu(results: dict[str, Result], key: str) -> float | None:
    """CPU-µs per record of the variant's own process, when it passed its checks."""
    r = results.get(key)
    return r.figures.get("cpu_us_per_record") if r is not None and r.ok else None


def fill_ratios(results: list[Result]) -> None:
    """Writes each row's ratio against the row it is compared with."""
    rs = by_key(results)

    def ratio(key: str, num: str, den: str, label: str) -> None:
        a, b = _rate(rs, num), _rate(rs, den)
        if key in rs and a and b:
            rs[key].ratio += ("; " if rs[key].ratio else "") + f"{a / b:.2f} ({label})"

    if _rate(rs, "B1"):
        rs["B1"].ratio = "1.00 (ceiling)"
    ratio("B2", "B2", "B1", "B2/B1")
    if "B3" in rs and "wasm_over_native" in rs["B3"].figures:
        rs["B3"].ratio = f"{rs['B3'].figures['wasm_over_native']:.2f} (wasm/native)"
    ratio("B4-batched", "B4-batched", "B4-per-record", "batched/per-record")
    ratio("B4-batched", "B4-batched", "B4-ideal", "batched/ideal")
    ratio("B4-batched", "B4-batched", "B2", "batched/B2 embedded")
    ratio("B5-python", "B2", "B5-python", "B2/B5-python")
    ratio("B5-passthrough", "B1", "B5-passthrough", "B1/B5-passthrough")
    ratio("B5-python-stdlib", "B2", "B5-python-stdlib", "B2/stdlib")
    ratio("B5-quix", "B2", "B5-quix", "B2/Quix")
    ratio("B1-pinned", "B1-pinned", "B5-passthrough-pinned", "B1/B5-passthrough, pinned")
    ratio("B2-pinned", "B2-pinned", "B1-pinned", "B2/B1, pinned")
    ratio("B2-pinned", "B2-pinned", "B5-python-pinned", "B2/B5-python, pinned")
    ratio("B2-two-workers", "B2-two-workers", "B2", "B2-two-workers/B2")
    ratio("B7", "B7", "B2", "B7/B2")
    ratio("B7-passthrough", "B7-passthrough", "B1", "B7-passthrough/B1")
    for key, floor in (("B6", "B6-broker"), ("B6-python", "B6-broker"), ("B6-tuned", "B6-broker-tuned")):
        floor = floor if floor in rs else "B6-broker"
        if key in rs and floor in rs and rs[key].ok and rs[floor].ok and rs[floor].figures["p99_ms"] > 0:
            rs[key].ratio = f"{rs[key].figures['p99_ms'] / rs[floor].figures['p99_ms']:.2f} (p99/{floor} p99)"


@dataclass
class Target:
    name: str
    verdict: str  # met, missed, or "not assessed"
    detail: str
    group: str = "E"  # "E": this round's targets (E1-E6); "earlier": kept from before


def _judge(measured: float, goal: float, higher_better: bool = True) -> tuple[str, str]:
    """met or missed, and by how much, in words a reader can check against the figures."""
    if higher_better:
        if measured >= goal:
            return "met", f"{(measured / goal - 1.0) * 100.0:.0f}% above the target"
        return "missed", f"reaches {measured / goal * 100.0:.0f}% of the target"
    if measured <= goal:
        return "met", f"{(1.0 - measured / goal) * 100.0:.0f}% under the limit"
    return "missed", f"{measured / goal:.2f}x the limit"


def _both(parts: list[tuple[str, str]]) -> str:
    """One verdict for a target of several conditions: met only if every part is."""
    verdicts = {v for v, _ in parts}
    if "not assessed" in verdicts:
        return "not assessed"
    return "met" if verdicts == {"met"} else "missed"


def _pinned_context(rs: dict[str, Result], num: str, den: str, figure: str) -> str:
    a, b = (rs.get(f"{k}-pinned") for k in (num, den))
    if not (a and b and a.ok and b.ok):
        return ""
    if figure == "cpu":
        x, y, shown = a.figures.get("cpu_us_per_record"), b.figures.get("cpu_us_per_record"), "{:.1f} µs/rec"
    else:
        x, y, shown = a.rate, b.rate, "{:,.0f}/s on 1 core"
    if not (x and y):
        return ""
    return f"; pinned (B8): {num} {shown.format(x)} vs {den} {shown.format(y)} = {x / y:.2f}x"


def e_targets(rs: dict[str, Result]) -> list[Target]:
    """E1-E6 (issue 16), each from this run's figures."""
    out: list[Target] = []

    def cpu_ratio(name: str, num: str, den: str, limit: float) -> None:
        a, b = _cpu(rs, num), _cpu(rs, den)
        if not (a and b):
            out.append(Target(name, "not assessed", f"needs CPU-µs/record of {num} and {den} (both checked ok)"))
            return
        verdict, by = _judge(a / b, limit, higher_better=False)
        out.append(Target(name, verdict, (
            f"{num} {a:.1f} µs/rec vs {den} {b:.1f} µs/rec = {a / b:.2f}x (limit {limit:.2f}x): {by}"
            + _pinned_context(rs, num, den, "cpu")
        )))

    cpu_ratio("E1: runtime pass-through CPU-µs/record <= the Python pass-through's", "B1", "B5-passthrough", 1.0)
    cpu_ratio("E2: full pipeline CPU-µs/record <= 1/3 of the skilled Python pipeline's", "B2", "B5-python", 1 / 3)

    name = "E3: full pipeline records/s >= 2x the skilled Python pipeline and >= 0.8x the runtime's pass-through"
    b1, b2, py = _rate(rs, "B1"), _rate(rs, "B2"), _rate(rs, "B5-python")
    if not (b1 and b2 and py):
        out.append(Target(name, "not assessed", "needs B1, B2 and B5-python to pass their checks"))
    else:
        parts = [_judge(b2 / py, 2.0), _judge(b2 / b1, 0.8)]
        out.append(Target(name, _both(parts), (
            f"B2/B5-python = {b2:,.0f}/{py:,.0f} = {b2 / py:.2f}x (target 2x, {parts[0][0]}: {parts[0][1]}); "
            f"B2/B1 = {b2:,.0f}/{b1:,.0f} = {b2 / b1:.2f}x (target 0.8x, {parts[1][0]}: {parts[1][1]})"
            + _pinned_context(rs, "B2", "B5-python", "rate")
        )))

    name = "E4: the fraud plugin's per-record cost in Wasm <= 1.5x natively (B3)"
    b3 = rs.get("B3")
    f = b3.figures if b3 is not None and b3.ok else {}
    if f.get("wasm_over_native"):
        cost = 1.0 / f["wasm_over_native"]
        verdict, by = _judge(cost, 1.5, higher_better=False)
        stages = ""
        if all(f"{side}_prepare_ns_per_record" in f for side in ("wasm", "native")):
            stages = (f"; prepare alone {f['wasm_prepare_ns_per_record'] / 1000:.2f} µs/rec in Wasm, "
                      f"{f['native_prepare_ns_per_record'] / 1000:.2f} natively")
        out.append(Target(name, verdict, f"wasm/native cost = {cost:.2f}x (limit 1.5x): {by}{stages}"))
    else:
        out.append(Target(name, "not assessed", "plugin-bench did not run or printed no native and wasm rates"))

    name = ("E5: the runtime's own p99 (consumer to producer) <= 10 ms at half its maximum rate, and its "
            "end-to-end p99 below the Python pipeline's at the same offered rate")
    b6, b6py = rs.get("B6"), rs.get("B6-python")
    if not (b6 and b6.ok and b6py and b6py.ok and "runtime_produce_p99_ms" in b6.figures):
        out.append(Target(name, "not assessed", "needs B6 (with the runtime's own p99) and B6-python, both ok"))
    else:
        own, e2e, py_e2e = b6.figures["runtime_produce_p99_ms"], b6.figures["p99_ms"], b6py.figures["p99_ms"]
        parts = [_judge(own, 10.0, higher_better=False),
                 ("met", "below") if e2e < py_e2e else ("missed", "not below")]
        half = f"; half of B2's rate is {b2 / 2:,.0f}/s" if b2 else "; B2 not measured: half its rate unknown"
        out.append(Target(name, _both(parts), (
            f"offered {b6.rate:,.0f}/s to both{half}; inside the runtime p99 {own:.1f} ms (limit 10 ms, "
            f"{parts[0][0]}: {parts[0][1]}); end to end p99 {e2e:.1f} ms vs B6-python {py_e2e:.1f} ms "
            f"({parts[1][0]}: {parts[1][1]})"
        )))

    name = "E6: peak RSS <= 128 MiB on a 1,000,000-record backlog, pass-through included"
    rows = [rs.get(k) for k in ("B7", "B7-passthrough")]
    if not all(r is not None and r.ok for r in rows):
        out.append(Target(name, "not assessed", "needs B7 and B7-passthrough to pass their checks"))
    else:
        parts = [_judge(r.figures["peak_rss_mib"], 128.0, higher_better=False) for r in rows]
        detail = "; ".join(
            f"{r.key} VmHWM {r.figures['peak_rss_mib']:.1f} MiB ({v}: {by})" for r, (v, by) in zip(rows, parts)
        )
        if rows[0].records != 1_000_000:
            detail += f"; backlog of {rows[0].records:,} records, not the target's 1,000,000"
        out.append(Target(name, _both(parts), detail))
    return out


def earlier_targets(rs: dict[str, Result]) -> list[Target]:
    """Targets set before E1-E6, kept so that a change that undoes one shows."""
    out: list[Target] = []

    def ratio_target(name: str, num: str, den: str, goal: float, unit: str = "x") -> None:
        a, b = _rate(rs, num), _rate(rs, den)
        if not (a and b):
            out.append(Target(name, "not assessed", f"needs {num} and {den} to pass their checks", "earlier"))
            return
        verdict, by = _judge(a / b, goal)
        detail = f"{num}/{den} = {a:,.0f}/{b:,.0f} = {a / b:.2f}{unit} (target {goal:g}{unit}): {by}"
        out.append(Target(name, verdict, detail, "earlier"))

    pythons = [k for k in ("B5-python", "B5-python-stdlib", "B5-quix") if _rate(rs, k)]
    best = max(pythons, key=lambda k: _rate(rs, k)) if pythons else "B5-python"
    ratio_target("B5: full pipeline >= 3x the best Python pipeline", "B2", best, 3.0)
    ratio_target("B5: full pipeline >= 4x Quix Streams", "B2", "B5-quix", 4.0)
    ratio_target("B2/B1 >= 0.6 (model and plugin cost at most 40% of the ceiling)", "B2", "B1", 0.6, "")
    b3 = rs.get("B3")
    if b3 is not None and b3.ok and "wasm_over_native" in b3.figures:
        verdict, by = _judge(b3.figures["wasm_over_native"], 0.9)
        out.append(Target("B3: Wasm within 10% of native", verdict,
                          f"wasm/native = {b3.figures['wasm_over_native']:.3f} (target >= 0.90): {by}", "earlier"))
    else:
        out.append(Target("B3: Wasm within 10% of native", "not assessed",
                          "plugin-bench did not run or printed no native and wasm rates", "earlier"))
    ratio_target("B4: batching >= 20x one call per record", "B4-batched", "B4-per-record", 20.0)
    ratio_target("B4: batching >= 70% of the ideal client", "B4-batched", "B4-ideal", 0.7, "")
    for key in ("B6", "B6-tuned"):
        b6 = rs.get(key)
        name = f"{key}: p99 latency <= linger + 2 x model p99"
        if b6 is None:
            continue
        if not b6.ok:
            out.append(Target(name, "not assessed", "the variant did not pass its checks", "earlier"))
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
        ), "earlier"))
        if "runtime_produce_p99_ms" in f:
            own = f["runtime_produce_p99_ms"]
            verdict, by = _judge(own, f["bound_ms"], higher_better=False)
            out.append(Target(f"{key}: the runtime's own p99 (consumer to producer) <= the same bound", verdict, (
                f"p99 {own:.1f} ms inside the runtime (its histogram, buckets within 19%) vs bound "
                f"{f['bound_ms']:.1f} ms: {by}"
            ), "earlier"))
    return out


def targets(results: list[Result]) -> list[Target]:
    rs = by_key(results)
    return e_targets(rs) + earlier_targets(rs)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _others(r: Result) -> str:
    """CPU-µs per record of the processes beside the one under test: broker first."""
    prefix = "cpu_us_per_record."
    found = {k[len(prefix):]: v for k, v in r.figures.items() if k.startswith(prefix)}
    order = sorted(found, key=lambda role: (role != "broker", role))
    return ", ".join(f"{role} {found[role]:.1f}" for role in order)


def table(results: list[Result]) -> str:
    lines = [
        "| variant | records | rate | CPU-µs/rec | beside it, CPU-µs/rec | ratio | check | notes |",
        "| --- | ---: | ---: | ---: | --- | --- | --- | --- |",
    ]
    for r in results:
        shown = not r.failed  # a failed check: no figure
        rate = f"{r.rate:,.0f} {r.unit}" if r.rate and shown else "—"
        records = f"{r.records:,}" if r.records else "—"
        spent = r.figures.get("cpu_us_per_record")
        spent = f"{spent:.1f}" if spent is not None and shown else "—"
        others = _others(r) if shown else ""
        lines.append(
            f"| {r.key}: {_cell(r.title)} | {records} | {rate} | {spent} | {_cell(others) or '—'} | "
            f"{_cell(r.ratio) or '—'} | {_cell(r.check_text())} | {_cell('; '.join(r.notes))} |"
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
        every = targets(results)
        for group, heading in (("E", []), ("earlier", ["Targets set before E1-E6, kept so that a regression shows:", ""])):
            out += heading + ["| target | result | how far |", "| --- | --- | --- |"]
            out += [f"| {_cell(t.name)} | {t.verdict} | {_cell(t.detail)} |" for t in every if t.group == group]
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
        "CPU-µs/rec is the user+sys CPU time of the process under test (utime + stime from /proc/PID/stat, with "
        "its process group's), sampled every 100 ms and interpolated at the first and the last output record's "
        "timestamp, divided by the records between them: the window the rate is measured over, so start-up "
        "(plugin compilation, model load, group join) and shutdown do not count. The next column gives the same "
        "figure over the same window for the tansu broker, the load generator where there is one (B6: the harness "
        "offers the records) and the model server (B4). B3's figure is plugin-bench's own timing of the plugin's "
        "calls in Wasm, on one thread. B5-python is the pipeline a skilled user writes (confluent-kafka, orjson, "
        "onnxruntime on one thread, one model call per poll batch, flush then commit per batch) and the figure the "
        "targets use; B5-passthrough moves records with the same delivery and no parsing (the floor); "
        "B5-python-stdlib and B5-quix are context. The -pinned rows (B8) run with the broker and the harness on "
        "CPU 0 and the process under test alone on CPU 1 (taskset), so their rate is records/s on one core; "
        "other work on the machine still shares both cores.", "",
        "B6 latency is an output record's timestamp minus its input record's timestamp. B6-python offers the same "
        "rate as B6 to the skilled Python pipeline, in the same run, after B6. B6-broker offers the same "
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

