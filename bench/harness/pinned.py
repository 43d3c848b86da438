"""B8: each system under test on a core of its own, so that its figures stop depending on who
shares the machine with it.

The broker and the harness (the load side: it polls the group's commits and samples /proc) are
moved to CPU 0 with ``taskset -a -p -c 0`` (every thread; threads they start later inherit it),
and the process under test is started with ``taskset -c 1``. The pipelines read the same input
topic as B1, B2 and B5, with their configuration. A rate is then records/s on one core, beside
CPU-µs per record and the share of its core the process kept busy. The affinities are put back
afterwards. Work outside the benchmark (another user's build) is not moved: it still shares
both cores, so the figures are steadier than the unpinned ones, not free of it.

    B1-pinned              runtime + pass-through plugin
    B2-pinned              runtime + fraud plugin + embedded model
    B5-python-pinned       the skilled Python pipeline (pipelines/python_orjson.py)
    B5-passthrough-pinned  the Python pass-through (pipelines/python_passthrough.py)
"""

from __future__ import annotations

import os
import shutil
import subprocess
from contextlib import contextmanager
from typing import Iterator, Mapping, Sequence

from .data import Dataset
from .result import Result
from .variants import Env, Launch, python_launch, run_pipeline, runtime_launch

SUT_CPUS = "1"
AROUND_CPUS = "0"
KEYS = ("B1-pinned", "B2-pinned", "B5-python-pinned", "B5-passthrough-pinned")
SMOKE_KEYS = ("B2-pinned", "B5-python-pinned")  # one runtime, one Python: both ways of pinning


def unavailable() -> str | None:
    """Why the variant cannot run here, or None."""
    if shutil.which("taskset") is None:
        return "taskset not found (util-linux)"
    allowed = os.sched_getaffinity(0)
    if not {0, 1} <= allowed:
        return f"needs CPUs 0 and 1; this process may use {sorted(allowed)}"
    return None


def set_affinity(pid: int, cpus: str) -> None:
    """Every thread of ``pid`` on ``cpus`` (taskset's list syntax)."""
    subprocess.run(["taskset", "-a", "-p", "-c", cpus, str(pid)], check=True, capture_output=True)


@contextmanager
def moved(pids: Mapping[str, int], cpus: str) -> Iterator[None]:
    """``pids`` on ``cpus`` for the block, then back on the CPUs they had."""
    before = {pid: ",".join(str(c) for c in sorted(os.sched_getaffinity(pid))) for pid in pids.values()}
    try:
        for pid in pids.values():
            set_affinity(pid, cpus)
        yield
    finally:
        for pid, cpus_before in before.items():
            try:
                set_affinity(pid, cpus_before)
            except subprocess.CalledProcessError:  # the process is gone
                pass


TITLES = {
    "B1-pinned": "pinned: runtime + pass-through plugin",
    "B2-pinned": "pinned: runtime + fraud plugin + embedded ONNX model",
    "B5-python-pinned": "pinned: skilled Python pipeline (orjson, onnxruntime on one thread)",
    "B5-passthrough-pinned": "pinned: Python pass-through (no parsing)",
}
UNIT = "records/s on 1 core"


def launch_for(env: Env, key: str, topic: str, batch: int) -> tuple[str, Launch]:
    """(output kind, launch) of one pinned variant: the unpinned one's, under taskset."""
    if key == "B1-pinned":
        return "copy", runtime_launch(env, env.passthrough_plugin, topic, env.extra(key), cpus=SUT_CPUS)
    if key == "B2-pinned":
        return "verdict", runtime_launch(env, env.fraud_plugin, topic, env.extra(key), cpus=SUT_CPUS)
    if key == "B5-python-pinned":
        return "verdict", python_launch(env, "python-orjson", "python_orjson.py", topic, batch, cpus=SUT_CPUS)
    if key == "B5-passthrough-pinned":
        return "copy", python_launch(env, "python-passthrough", "python_passthrough.py", topic, batch,
                                     dead_letter=False, cpus=SUT_CPUS)
    raise ValueError(f"no pinned variant {key!r}")


def run(env: Env, dataset: Dataset, batch: int, keys: Sequence[str] = KEYS) -> list[Result]:
    """The pinned variants named in ``keys``, one after the other."""
    results = [Result(key, TITLES[key], unit=UNIT) for key in keys]
    reason = unavailable()
    if reason is not None:
        for result in results:
            result.notes.append(reason)
        return results
    with moved({"broker": env.others["broker"], "harness": os.getpid()}, AROUND_CPUS):
        for result in results:
            if result.key == "B1-pinned" and env.passthrough_plugin is None:
                result.notes.append("passthrough_plugin.wasm not built")
                continue
            result.notes.append(f"broker and harness on CPU {AROUND_CPUS}, the process on CPU {SUT_CPUS} (taskset)")
            kind, launch = launch_for(env, result.key, dataset.topic, batch)
            run_pipeline(env, result, dataset, kind, launch, cpus=SUT_CPUS)
            if result.ok and result.rate:
                result.figures["records_per_s_per_core"] = result.rate
    return results
